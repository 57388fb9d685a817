//! VGG16 on cats and dogs, the tutorial's second model, as a rhea graph.
//!
//! With `--weights FILE` (torchvision's pretrained VGG16 as safetensors),
//! the last layer is replaced by a 2-way layer and only that layer trains,
//! as the tutorial's `vgg.finetune` does. Without weights, a width-reduced
//! VGG16 (`--width-div`, `--image-size`) trains from scratch on the shipped
//! photos. Either way it prints per-epoch loss and accuracy, validation
//! accuracy, and can write Kaggle-style predictions and checkpoints.
//!
//! `cargo run --release --example vgg16_dogscats`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ndarray::Array2;
use rhea::nn::images::{Batches, ImageFolder, Transform};
use rhea::nn::models::{VggOptions, load_vgg16_weights, vgg16};
use rhea::nn::{Adam, Optimizer, categorical_accuracy, categorical_crossentropy_with_logits};
use rhea::{Backend, DType, Function, Value, function};

/// Train VGG16 on an image folder of cats and dogs.
#[derive(Parser)]
struct Args {
    /// A folder with `train/` and `valid/` (and optionally `test/`), each with
    /// one folder per class.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/dogscats"))]
    data: PathBuf,
    /// torchvision's pretrained VGG16 as safetensors: fine-tune its last layer.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Passes over the training images.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Images per training step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// Seed of the weights, the shuffles, the flips and dropout.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Divide every channel count by this [default: 16, or 1 with --weights].
    #[arg(long)]
    width_div: Option<usize>,
    /// Height and width of the network's input, a multiple of 32 [default: 64,
    /// or 224 with --weights, which torchvision's classifier needs].
    #[arg(long)]
    image_size: Option<usize>,
    /// Write the probability of "dogs" for each image of this folder (Kaggle's
    /// `id,label`) to --predictions.
    #[arg(long, value_name = "DIR")]
    predict: Option<PathBuf>,
    /// Where --predict writes.
    #[arg(long, default_value = "predictions.csv")]
    predictions: PathBuf,
    /// Save every parameter (and Adam's state) here after training.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Start from a checkpoint written by --checkpoint.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// Where to run: cpu, interp or cuda (an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
}

/// One-hot rows of `labels` over `classes`.
fn one_hot(labels: &[usize], classes: usize) -> Value {
    Value::from(Array2::from_shape_fn((labels.len(), classes), |(i, j)| f32::from(labels[i] == j)))
}

/// Mean loss and accuracy of `f` (inputs x, y) over a folder's images.
fn evaluate(
    f: &mut Function,
    items: &[(PathBuf, usize)],
    t: &Transform,
    batch: usize,
    skipped: &mut Vec<String>,
) -> Result<(f64, usize, usize)> {
    let (mut loss, mut correct, mut seen) = (0.0, 0.0, 0);
    for b in Batches::new(items, t, batch, None, None)? {
        let b = b?;
        skipped.extend(b.skipped.iter().map(|(p, e)| format!("{}: {e}", p.display())));
        let n = b.labels.len();
        if n == 0 {
            continue;
        }
        let out = f.call(&[Value::from(b.images), one_hot(&b.labels, 2)])?;
        loss += out[0].to_f64_vec()[0] * n as f64;
        correct += out[1].to_f64_vec()[0] * n as f64;
        seen += n;
    }
    Ok((loss / seen.max(1) as f64, correct.round() as usize, seen))
}

/// Flags that cannot make a run: exit status 2, before any work.
fn check_flags(args: &Args) -> Result<()> {
    let usage = |msg: String| Err(rhea::cli::usage(msg));
    if args.epochs == 0 {
        return usage("--epochs must be at least 1".into());
    }
    if args.batch_size == 0 {
        return usage("--batch-size must be at least 1".into());
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return usage(format!("--lr must be a positive finite number, got {}", args.lr));
    }
    match args.width_div {
        Some(0) => return usage("--width-div must be at least 1".into()),
        // VGG16's narrowest layers have 64 channels.
        Some(d) if d > 64 => {
            return usage(format!(
                "--width-div {d} leaves no channels in the first layers (64 / {d} rounds to 0); at most 64"
            ));
        }
        _ => {}
    }
    if let Some(size) = args.image_size
        && (size == 0 || !size.is_multiple_of(32))
    {
        return usage(format!("--image-size must be a positive multiple of 32 (VGG16 halves it 5 times), got {size}"));
    }
    Ok(())
}

/// Opens a data folder's class folders, each of which must hold an image.
fn open_folder(dir: &Path, what: &str) -> Result<ImageFolder> {
    let folder = ImageFolder::open(dir).with_context(|| format!("the {what} images"))?;
    for (label, class) in folder.classes.iter().enumerate() {
        if !folder.items.iter().any(|(_, l)| *l == label) {
            bail!("the {what} images: {} has no .jpg, .jpeg or .png file", dir.join(class).display());
        }
    }
    Ok(folder)
}

fn run(args: Args) -> Result<()> {
    check_flags(&args)?;
    let backend: Backend = args.backend.parse().map_err(|e: String| rhea::cli::usage(format!("--backend: {e}")))?;
    let train = open_folder(&args.data.join("train"), "training")?;
    let valid = open_folder(&args.data.join("valid"), "validation")?;
    if train.classes != valid.classes || train.classes.len() != 2 {
        bail!("expected the same two classes in train/ and valid/, got {:?} and {:?}", train.classes, valid.classes);
    }
    let pretrained = args.weights.is_some();
    let (width_div, image_size) = match pretrained {
        true => (args.width_div.unwrap_or(1), args.image_size.unwrap_or(224)),
        false => (args.width_div.unwrap_or(16), args.image_size.unwrap_or(64)),
    };
    let opts =
        VggOptions { num_classes: 2, width_div, image_size, seed: args.seed, training: true, ..VggOptions::default() };
    let model = vgg16(&opts)?;
    let last = ["classifier.6.weight", "classifier.6.bias"];
    let trainable: Vec<rhea::Var> = match &args.weights {
        Some(path) => {
            let n = load_vgg16_weights(&model, path, &last)?;
            rhea::outln!("loaded {n} tensors from {}; training only the new last layer", path.display())?;
            last.iter().map(|n| model.graph.find(n).expect("the model has its last layer")).collect()
        }
        None => model.params(),
    };
    let (x, step) = (&model.x, model.step.as_ref().expect("a training graph has a step input"));
    let g = &model.graph;
    let y = g.input("y", DType::F32, [g.dim("batch")?, 2.into()])?;
    let loss = categorical_crossentropy_with_logits(&model.logits, &y)?;
    let accuracy = categorical_accuracy(&model.logits, &y)?;
    let eval_logits = model.forward(x, None)?;
    let eval_loss = categorical_crossentropy_with_logits(&eval_logits, &y)?;
    let eval_accuracy = categorical_accuracy(&eval_logits, &y)?;
    let probs = eval_logits.softmax(-1)?;
    let adam = Adam { lr: args.lr, ..Adam::default() };
    let updates = adam.updates(&loss, &trainable)?;
    if let Some(path) = &args.resume {
        let n = rhea::io::load_shared(&mut g.graph_mut(), path)?;
        rhea::outln!("resumed {n} tensors from {}", path.display())?;
    }
    let started = Instant::now();
    let mut step_fn = function(&[x, &y, step], &[&loss, &accuracy]).updates(updates).backend(backend).compile()?;
    let mut eval_fn = function(&[x, &y], &[&eval_loss, &eval_accuracy]).backend(backend).compile()?;
    let mut predict_fn = function(&[x], &[&probs]).backend(backend).compile()?;
    rhea::outln!(
        "vgg16 (width / {width_div}, {image_size}x{image_size}), {} training and {} validation images, classes {:?}, backend {backend}; compiled in {:.0} ms",
        train.items.len(),
        valid.items.len(),
        train.classes,
        started.elapsed().as_secs_f64() * 1e3
    )?;
    let t = Transform::imagenet(image_size);
    let mut skipped: Vec<String> = Vec::new();
    let mut steps = 0i64;
    for epoch in 0..args.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0.0, 0);
        let seed = args.seed.wrapping_add(epoch as u64);
        for b in Batches::new(&train.items, &t, args.batch_size, Some(seed), Some((args.seed, epoch as u64)))? {
            let b = b?;
            if epoch == 0 {
                skipped.extend(b.skipped.iter().map(|(p, e)| format!("{}: {e}", p.display())));
            }
            let n = b.labels.len();
            if n == 0 {
                continue;
            }
            let out = step_fn.call(&[
                Value::from(b.images),
                one_hot(&b.labels, 2),
                Value::scalar(steps as f64, DType::I64),
            ])?;
            steps += 1;
            loss_sum += out[0].to_f64_vec()[0] * n as f64;
            correct += out[1].to_f64_vec()[0] * n as f64;
            seen += n;
        }
        if seen == 0 {
            for s in &skipped {
                eprintln!("skipped {s}");
            }
            bail!(
                "none of the {} training images in {} could be read: nothing to train on",
                train.items.len(),
                args.data.join("train").display()
            );
        }
        let mut ignored = Vec::new();
        let (val_loss, val_correct, val_seen) = evaluate(
            &mut eval_fn,
            &valid.items,
            &t,
            args.batch_size,
            if epoch == 0 { &mut skipped } else { &mut ignored },
        )?;
        if val_seen == 0 {
            bail!(
                "none of the {} validation images in {} could be read",
                valid.items.len(),
                args.data.join("valid").display()
            );
        }
        if !args.quiet {
            rhea::outln!(
                "Epoch {}/{} - loss: {:.4} - acc: {:.4} - val_loss: {:.4} - val_acc: {:.4} - {:.1} s",
                epoch + 1,
                args.epochs,
                loss_sum / seen.max(1) as f64,
                correct / seen.max(1) as f64,
                val_loss,
                val_correct as f64 / val_seen.max(1) as f64,
                started.elapsed().as_secs_f64()
            )?;
        }
    }
    let (val_loss, val_correct, val_seen) = evaluate(&mut eval_fn, &valid.items, &t, args.batch_size, &mut Vec::new())?;
    rhea::outln!("validation loss: {val_loss:.4}")?;
    rhea::outln!("validation accuracy: {:.4} ({val_correct}/{val_seen})", val_correct as f64 / val_seen.max(1) as f64)?;
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    rhea::outln!("{} file(s) skipped", skipped.len())?;
    if let Some(path) = &args.checkpoint {
        let n = rhea::io::save_shared(&g.graph(), path)?;
        rhea::outln!("wrote {n} tensors to {}", path.display())?;
    }
    if let Some(dir) = &args.predict {
        let dog = train.classes.iter().position(|c| c == "dogs").unwrap_or(1);
        let written = predict(&mut predict_fn, dir, &t, args.batch_size, dog, &args.predictions)?;
        rhea::outln!("wrote {written} predictions to {}", args.predictions.display())?;
    }
    Ok(())
}

/// Writes `id,label` (the probability of class `dog`) for every image of
/// `dir` (directly in it, or in class subfolders).
fn predict(f: &mut Function, dir: &Path, t: &Transform, batch: usize, dog: usize, out: &Path) -> Result<usize> {
    let mut files = ImageFolder::files(dir)?;
    if files.is_empty() {
        files = ImageFolder::open(dir)?.items.into_iter().map(|(p, _)| p).collect();
    }
    let items: Vec<(PathBuf, usize)> = files.into_iter().map(|p| (p, 0)).collect();
    let mut csv = String::from("id,label\n");
    let mut written = 0;
    for b in Batches::new(&items, t, batch, None, None)? {
        let b = b?;
        for (p, e) in &b.skipped {
            eprintln!("skipped {}: {e}", p.display());
        }
        if b.labels.is_empty() {
            continue;
        }
        let probs = f.call(&[Value::from(b.images)])?.remove(0).to_f64_vec();
        for (i, path) in b.paths.iter().enumerate() {
            let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            csv.push_str(&format!("{id},{:.6}\n", probs[i * 2 + dog]));
            written += 1;
        }
    }
    rhea::io::write_atomic(out, csv.as_bytes())
        .with_context(|| format!("cannot write {} (the previous file, if any, is unchanged)", out.display()))?;
    Ok(written)
}

fn main() -> std::process::ExitCode {
    rhea::cli::exit_code(run(Args::parse()))
}
