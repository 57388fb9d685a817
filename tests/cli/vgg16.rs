//! The VGG16 dogs-vs-cats example end to end: training from scratch on the
//! shipped photos, fine-tuning from a torchvision-layout weights file (only
//! the new last layer changes), checkpoints and resuming, predictions, and
//! unreadable images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rhea::Value;
use rhea::nn::models::{VggOptions, vgg16};

fn example() -> PathBuf {
    crate::support::example("vgg16_dogscats")
}

fn run(args: &[&str]) -> (String, String) {
    let out: Output = Command::new(example()).args(args).output().expect("the example runs");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "vgg16_dogscats {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small copy of the shipped photos: 8 per class for training, 4 for validation.
fn small_data(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dogscats");
    let root = dir.join("data");
    for (split, n) in [("train", 8), ("valid", 4)] {
        for class in ["cats", "dogs"] {
            let to = root.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let mut files: Vec<_> =
                std::fs::read_dir(shipped.join(split).join(class)).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files.into_iter().take(n) {
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    root
}

#[test]
fn trains_from_scratch_on_the_shipped_photos() {
    let (out, _) = run(&["--epochs", "2"]);
    assert!(out.contains("240 training and 60 validation images"), "{out}");
    assert!(out.contains("Epoch 2/2 - loss: ") && out.contains(" - val_acc: "), "{out}");
    assert!(out.contains("validation accuracy: ") && out.contains("0 file(s) skipped"), "{out}");
}

#[test]
fn fine_tunes_only_the_last_layer_checkpoints_resumes_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_data(dir.path());
    // Weights as torchvision saves them (1000 classes, linear weights [out, in]).
    let source = vgg16(&VggOptions { width_div: 16, image_size: 32, seed: 4, ..VggOptions::default() }).unwrap();
    let tensors = rhea::nn::models::vgg16_state_dict(&source);
    let weights = dir.path().join("vgg16.safetensors");
    let named: Vec<(&str, &Value)> = tensors.iter().map(|(n, v)| (n.as_str(), v)).collect();
    rhea::io::save_safetensors(&weights, &named).unwrap();
    let ck = dir.path().join("ck.safetensors");
    let csv = dir.path().join("pred.csv");
    let common = ["--width-div", "16", "--image-size", "32", "--batch-size", "4"];
    let mut args = vec!["--data", s(&data), "--weights", s(&weights), "--epochs", "2", "--checkpoint", s(&ck)];
    args.extend(common);
    let valid = data.join("valid");
    args.extend(["--predict", s(&valid), "--predictions", s(&csv)]);
    let (out, _) = run(&args);
    assert!(out.contains("loaded 30 tensors") && out.contains("training only the new last layer"), "{out}");
    assert!(out.contains("16 training and 8 validation images") && out.contains("wrote 8 predictions"), "{out}");
    let saved: std::collections::HashMap<String, Value> =
        rhea::io::load_safetensors(&ck).unwrap().into_iter().collect();
    for (name, v) in &tensors {
        let transposed = name.starts_with("classifier.") && name.ends_with(".weight");
        if name.starts_with("classifier.6") || transposed {
            continue;
        }
        assert_eq!(&saved[name], v, "{name} changed, but only the last layer trains");
    }
    let c3 = rhea::with_array!(&tensors.iter().find(|(n, _)| n == "classifier.3.weight").unwrap().1, a => a.t().as_standard_layout().into_owned().into());
    assert_eq!(saved["classifier.3.weight"], c3, "classifier.3 changed");
    assert_eq!(saved["classifier.6.weight"].shape(), [256, 2]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "id,label");
    assert_eq!(rows.len(), 9, "{text}");
    for row in &rows[1..] {
        let p: f64 = row.split(',').nth(1).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{row}");
    }
    // Resuming from the checkpoint restores every tensor, Adam's state included.
    let mut args = vec!["--data", s(&data), "--epochs", "1", "--resume", s(&ck)];
    args.extend(common);
    let (out, _) = run(&args);
    assert!(out.contains(&format!("resumed {} tensors", saved.len())), "{out}");
}

#[test]
fn unreadable_images_are_named_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_data(dir.path());
    std::fs::write(data.join("train/cats/broken.jpg"), b"\xff\xd8\xff this is not a jpeg").unwrap();
    std::fs::write(data.join("valid/dogs/empty.png"), b"").unwrap();
    let (out, err) = run(&["--data", s(&data), "--epochs", "1", "--width-div", "16", "--image-size", "32"]);
    assert!(out.contains("2 file(s) skipped"), "{out}");
    assert!(err.contains("broken.jpg") && err.contains("empty.png"), "{err}");
    let out = Command::new(example()).args(["--data", s(&dir.path().join("nowhere"))]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_vgg16_graph_file_runs_with_weights_and_images_from_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let m =
        vgg16(&VggOptions { num_classes: 3, width_div: 16, image_size: 32, seed: 6, ..VggOptions::default() }).unwrap();
    let graph = dir.path().join("vgg16.json");
    std::fs::write(&graph, rhea::to_json(&m.graph.graph())).unwrap();
    let x = Value::from_f64(
        rhea::DType::F32,
        &[2, 3, 32, 32],
        &(0..6144).map(|i| (i % 17) as f64 / 8.0 - 1.0).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut tensors: Vec<(String, Value)> = vec![("x".into(), x.clone())];
    for p in m.params() {
        let g = m.graph.graph();
        tensors.push((g.leaf_name(p.id()).unwrap().to_string(), g.shared_value(p.id()).unwrap().clone()));
    }
    let inputs = dir.path().join("inputs.safetensors");
    let named: Vec<(&str, &Value)> = tensors.iter().map(|(n, v)| (n.as_str(), v)).collect();
    rhea::io::save_safetensors(&inputs, &named).unwrap();
    let out = dir.path().join("out.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_rhea"))
        .args(["run", s(&graph), "--inputs", s(&inputs), "-o", s(&out)])
        .status()
        .unwrap();
    assert!(status.success());
    let logits = rhea::io::load_safetensors(&out).unwrap().remove(0).1;
    let mut f = rhea::function(&[&m.x], &[&m.logits]).compile().unwrap();
    let want = f.call(&[x]).unwrap().remove(0);
    assert_eq!(logits.shape(), [2, 3]);
    let (a, b) = (logits.to_f64_vec(), want.to_f64_vec());
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs())), "{a:?} vs {b:?}");
}
