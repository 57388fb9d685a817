//! The tutorial's Keras MLP on the UCI Sonar data (mines vs rocks), as a
//! rhea graph: Dense 60 relu, Dense 8 relu, Dense 1 sigmoid, binary
//! cross-entropy, Adam, batch size 10, differentiated symbolically and
//! trained by a compiled function that updates shared parameters.
//!
//! `cargo run --release --example sonar_mlp` trains on 60% of the shipped
//! data (a split with seed 7) and reports accuracy on the other 40%.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ndarray::{Array2, Axis};
use rhea::nn::data::{LabelEncoder, Standardizer, read_csv, stratified_kfold, take_rows, train_test_split};
use rhea::nn::models::sonar_mlp;
use rhea::nn::{FitOptions, evaluate, fit};
use rhea::{Backend, function};

/// Train the Sonar MLP and report its test accuracy.
#[derive(Parser)]
struct Args {
    /// The Sonar CSV (60 features and an R/M label per row).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sonar/sonar.all-data"))]
    data: PathBuf,
    /// Passes over the training data.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Seed of the weights and of the shuffles between epochs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed of the train/test split (and of the folds with --cv).
    #[arg(long, default_value_t = 7)]
    split_seed: u64,
    /// Examples per training step.
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Standardize features with statistics of the training part only.
    #[arg(long)]
    standardize: bool,
    /// Stratified k-fold cross-validation instead of one split; prints mean ± std.
    #[arg(long, value_name = "K")]
    cv: Option<usize>,
    /// Where to run: cpu (compiled), interp (the reference interpreter) or cuda (an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Write the training graph (forward, loss, gradients, Adam updates) as JSON.
    #[arg(long, value_name = "FILE.json")]
    dump_graph: Option<PathBuf>,
    /// Print only the summary, not one line per epoch.
    #[arg(long)]
    quiet: bool,
}

/// Trains a fresh model on `train` rows and scores it on `test` rows:
/// (test loss, correct, total).
fn train_and_test(
    args: &Args,
    backend: Backend,
    x: &Array2<f32>,
    y: &Array2<f32>,
    train: &[usize],
    test: &[usize],
) -> Result<(f64, usize, usize)> {
    let (mut xtr, ytr, mut xte, yte) =
        (take_rows(x, train), take_rows(y, train), take_rows(x, test), take_rows(y, test));
    if args.standardize {
        let s = Standardizer::fit(&xtr);
        xtr = s.transform(&xtr);
        xte = s.transform(&xte);
    }
    let m = sonar_mlp(args.seed)?;
    if let Some(path) = &args.dump_graph {
        rhea::io::write_atomic(path, rhea::to_json(&m.graph.graph()).as_bytes())
            .with_context(|| format!("cannot write {} (the previous file, if any, is unchanged)", path.display()))?;
        rhea::outln!("wrote the training graph to {}", path.display())?;
    }
    let mut step =
        function(&[&m.x, &m.y], &[&m.loss, &m.accuracy]).updates(m.updates.clone()).backend(backend).compile()?;
    let mut eval = function(&[&m.x, &m.y], &[&m.loss, &m.accuracy]).backend(backend).compile()?;
    let opts = FitOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        shuffle: true,
        seed: args.seed,
        verbose: !args.quiet,
    };
    fit(&mut step, &mut eval, &xtr, &ytr, Some((&xte, &yte)), &opts)?;
    let (loss, acc) = evaluate(&mut eval, &xte, &yte, args.batch_size)?;
    Ok((loss, (acc * test.len() as f64).round() as usize, test.len()))
}

fn main() -> std::process::ExitCode {
    rhea::cli::exit_code(run(Args::parse()))
}

/// Flags that cannot make a run: exit status 2, before any work.
fn check_flags(args: &Args) -> Result<()> {
    let usage = |msg: &str| Err(rhea::cli::usage(msg));
    if args.epochs == 0 {
        return usage("--epochs must be at least 1");
    }
    if args.batch_size == 0 {
        return usage("--batch-size must be at least 1");
    }
    if args.cv.is_some_and(|k| k < 2) {
        return usage("--cv needs at least 2 folds");
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    check_flags(&args)?;
    let backend: Backend = args.backend.parse().map_err(|e: String| rhea::cli::usage(format!("--backend: {e}")))?;
    let table = read_csv(&args.data)?;
    let encoder = LabelEncoder::fit(&table.labels);
    if encoder.classes.len() != 2 {
        bail!("{}: expected two classes, found {:?}", args.data.display(), encoder.classes);
    }
    let codes = encoder.transform(&table.labels)?;
    let y = Array2::from_shape_fn((codes.len(), 1), |(i, _)| codes[i] as f32);
    let x = table.features;
    rhea::outln!(
        "sonar: {} rows, {} features, classes {:?} -> [0, 1], backend {backend}",
        x.len_of(Axis(0)),
        x.ncols(),
        encoder.classes
    )?;
    match args.cv {
        Some(k) => {
            let folds = stratified_kfold(&codes, k, args.split_seed)?;
            let mut accs = Vec::with_capacity(k);
            for (i, (train, test)) in folds.iter().enumerate() {
                let (_, correct, total) = train_and_test(&args, backend, &x, &y, train, test)?;
                let acc = correct as f64 / total as f64;
                rhea::outln!("fold {}/{k}: test accuracy {acc:.4} ({correct}/{total})", i + 1)?;
                accs.push(acc);
            }
            let mean = accs.iter().sum::<f64>() / k as f64;
            let std = (accs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / k as f64).sqrt();
            rhea::outln!("{k}-fold cross-validation accuracy: {mean:.4} ± {std:.4}")?;
        }
        None => {
            let (train, test) = train_test_split(x.nrows(), 0.4, args.split_seed)?;
            let (loss, correct, total) = train_and_test(&args, backend, &x, &y, &train, &test)?;
            rhea::outln!("test loss: {loss:.4}")?;
            rhea::outln!("test accuracy: {:.4} ({correct}/{total})", correct as f64 / total as f64)?;
        }
    }
    Ok(())
}
