//! The Sonar MLP example end to end, run as the README runs it.

use std::path::PathBuf;
use std::process::Command;

/// The example binary cargo built next to this test's binary.
fn example() -> PathBuf {
    crate::support::example("sonar_mlp")
}

fn test_accuracy(args: &[&str]) -> f64 {
    let out = Command::new(example()).args(args).output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sonar_mlp {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    let acc = last.strip_prefix("test accuracy: ").and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok());
    acc.unwrap_or_else(|| panic!("the last line is not `test accuracy: ...`:\n{stdout}"))
}

#[test]
fn trains_to_the_tutorials_accuracy_over_five_seeds() {
    let accs: Vec<f64> = (1..=5).map(|s| test_accuracy(&["--quiet", "--seed", &s.to_string()])).collect();
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    assert!(mean >= 0.80, "mean test accuracy {mean:.4} over seeds 1..5: {accs:?}");
}

#[test]
fn prints_keras_style_epoch_lines_and_reports_bad_input() {
    let out = Command::new(example()).args(["--epochs", "2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Epoch 2/2 - loss: "), "{stdout}");
    assert!(stdout.contains(" - val_loss: ") && stdout.contains(" - val_acc: "), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "0.1,0.2,R\n0.3,oops,M\n").unwrap();
    let out = Command::new(example()).arg("--data").arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(":2: field 2 is \"oops\", not a finite number"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cross_validation_standardization_and_graph_dumps_run() {
    let out = Command::new(example()).args(["--quiet", "--epochs", "3", "--cv", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("fold 3/3: test accuracy "), "{stdout}");
    assert!(stdout.contains("3-fold cross-validation accuracy: 0.") && stdout.contains(" ± "), "{stdout}");
    assert!(test_accuracy(&["--quiet", "--epochs", "3", "--standardize"]) > 0.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sonar.json");
    let out = Command::new(example()).args(["--quiet", "--epochs", "1", "--dump-graph"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let written = std::fs::read_to_string(&path).unwrap();
    let builtin = crate::support::rhea(&["dump", "sonar-mlp", "--stage", "grad", "--format", "json"]).ok().to_string();
    assert_eq!(written, builtin, "--dump-graph writes the same training graph as the built-in model");
}
