//! `--stage grad`, `--grad-of`/`--wrt`, and the built-in `sonar-mlp` model.

use ndarray::array;
use rhea::{Builder, DType, Value};

use crate::support::*;

#[test]
fn the_sonar_training_step_dumps_in_every_format_and_matches_the_model_builder() {
    let text = rhea(&["dump", "sonar-mlp", "--stage", "grad"]).ok().to_string();
    golden("sonar-mlp-grad.txt", &text);
    assert!(text.contains("update \"adam.dense_1.weight.m\" <- %"));
    let dot = rhea(&["dump", "sonar-mlp", "--stage", "grad", "--format", "dot"]).ok().to_string();
    assert!(dot.starts_with("digraph rhea {") && dot.contains("label=\"update\""));
    let json = rhea(&["dump", "sonar-mlp", "--stage", "grad", "--format", "json"]).ok().to_string();
    let model = rhea::nn::models::sonar_mlp(1).unwrap();
    assert_eq!(json, rhea::to_json(&model.graph.graph()));
    let back = rhea::from_json(&json).unwrap();
    assert_eq!(back.updates().len(), 19);
    // The raw stage of the built-in model is the forward graph and loss only.
    let raw = rhea(&["dump", "sonar-mlp"]).ok().to_string();
    assert!(!raw.contains("update ") && raw.contains("output \"loss\""));
}

fn linear_graph() -> rhea::Graph {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [3]).unwrap();
    let w = g.shared("w", array![1.0f64, 2.0, 3.0]).unwrap();
    let y = x.mul(&w).unwrap().sum_all().unwrap().square().unwrap();
    g.output("y", &y).unwrap();
    g.to_graph()
}

#[test]
fn run_writes_gradients_as_outputs() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "g.json", &linear_graph());
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", Value::from(array![1.0f64, 0.0, 2.0]))]);
    let out = path_in(dir.path(), "out.safetensors");
    let stdout =
        rhea(&["run", &graph, "--inputs", &inputs, "--grad-of", "y", "--wrt", "w,x", "-o", &out]).ok().to_string();
    assert!(stdout.contains("grad/w") && stdout.contains("grad/x"), "{stdout}");
    let got: std::collections::HashMap<String, Value> = rhea::io::load_safetensors(&out).unwrap().into_iter().collect();
    // y = (x.w)^2 with x.w = 7: dy/dw = 14 x, dy/dx = 14 w.
    assert_eq!(got["y"], Value::from(49.0f64));
    assert_eq!(got["grad/w"], Value::from(array![14.0f64, 0.0, 28.0]));
    assert_eq!(got["grad/x"], Value::from(array![14.0f64, 28.0, 42.0]));
}

#[test]
fn dump_grad_defaults_to_every_shared_variable() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "g.json", &linear_graph());
    let text = rhea(&["dump", &graph, "--stage", "grad"]).ok().to_string();
    assert!(text.contains("output \"grad/w\" = %") && !text.contains("grad/x"), "{text}");
}

#[test]
fn bad_gradient_requests_are_clear_errors() {
    let dir = tempdir();
    let graph = &write_graph(dir.path(), "g.json", &linear_graph());
    rhea(&["dump", graph, "--grad-of", "y"]).fails_with(&["need --stage grad"]);
    rhea(&["dump", graph, "--stage", "grad", "--grad-of", "z"]).fails_with(&["\"z\" is not an output", "\"y\""]);
    rhea(&["dump", graph, "--stage", "grad", "--wrt", "q"]).fails_with(&["\"q\" is neither an input nor a shared"]);
    rhea(&["dump", "sonar-mlp", "--stage", "grad", "--grad-of", "probs"]).fails_with(&["float scalar cost"]);
    rhea(&["dump", "no-such-model"]).fails_with(&["no-such-model", "built-in models: sonar-mlp"]);
}
