//! `rhea run`: graph files evaluated on safetensors inputs.

use std::collections::HashMap;

use ndarray::array;
use rhea::{Graph, Value};

use crate::support::{branches, mlp, path_in, rhea, symbolic, tempdir, write_graph, write_tensors};

/// The interpreter run in-process, for comparison with the tool.
fn expected(graph: &Graph, feeds: &[(&str, Value)]) -> Vec<(String, Value)> {
    let feeds: HashMap<String, Value> = feeds.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    let ids: Vec<_> = graph.outputs().iter().map(|(_, id)| *id).collect();
    let values = rhea::interp::run(graph, &feeds, &ids).expect("the in-process run succeeds");
    graph.outputs().iter().map(|(n, _)| n.to_string()).zip(values).collect()
}

/// Same names, same dtypes and shapes, values within a few f32 ulps: the
/// CPU backend's kernels (an expanded softmax, inline `exp`) round
/// differently from the interpreter.
#[track_caller]
fn assert_close(got: &[(String, Value)], want: &[(String, Value)]) {
    assert_eq!(got.len(), want.len());
    for ((gn, gv), (wn, wv)) in got.iter().zip(want) {
        assert_eq!(gn, wn);
        assert_eq!((gv.dtype(), gv.shape()), (wv.dtype(), wv.shape()), "{gn}");
        for (a, b) in gv.to_f64_vec().iter().zip(wv.to_f64_vec()) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{gn}: {a} vs {b}");
        }
    }
}

fn sorted(mut v: Vec<(String, Value)>) -> Vec<(String, Value)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn runs_a_graph_file_on_an_inputs_file_and_writes_the_outputs() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let x = Value::from(array![[1.0f32, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 2.0, -3.0]]);
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x.clone())]);
    let out = path_in(dir.path(), "out.safetensors");
    let stdout = rhea(&["run", &graph, "--inputs", &inputs, "-o", &out]).ok().to_string();
    assert!(stdout.starts_with("probs  f32[3, 2] "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let written = rhea::io::load_safetensors(&out).unwrap();
    assert_close(&written, &expected(&mlp(), &[("x", x)]));
}

#[test]
fn the_backend_can_be_named() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", Value::from(array![[1.0f32, 2.0, 3.0, 4.0]]))]);
    let a = rhea(&["run", &graph, "--inputs", &inputs]).ok().to_string();
    let b = rhea(&["run", &graph, "--inputs", &inputs, "--backend", "interp"]).ok().to_string();
    let c = rhea(&["run", &graph, "--inputs", &inputs, "--backend", "cpu"]).ok().to_string();
    let d = rhea(&["run", &graph, "--inputs", &inputs, "--backend", "cuda-emu"]).ok().to_string();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a, d);
    rhea(&["run", &graph, "--inputs", &inputs, "--backend", "tpu"]).fails_with(&["tpu", "interp", "cpu", "cuda"]);
}

#[test]
fn tensors_named_like_shared_variables_set_their_values() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let x = Value::from(array![[1.0f32, 2.0, 3.0, 4.0], [0.5, -0.5, 0.25, 1.0]]);
    let b2 = Value::from(array![3.0f32, -3.0]);
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x.clone()), ("b2", b2.clone())]);
    let out = path_in(dir.path(), "out.safetensors");
    rhea(&["run", &graph, "--inputs", &inputs, "-o", &out]).ok();

    let mut changed = mlp();
    let id = changed.find("b2").unwrap();
    changed.set_shared_value(id, b2).unwrap();
    let want = expected(&changed, &[("x", x.clone())]);
    assert_close(&rhea::io::load_safetensors(&out).unwrap(), &want);
    assert_ne!(want, expected(&mlp(), &[("x", x)]), "the new bias changes the result");
}

#[test]
fn shared_values_left_out_of_the_graph_file_come_from_the_inputs_file() {
    let dir = tempdir();
    let full = mlp();
    let graph = path_in(dir.path(), "bare.json");
    std::fs::write(&graph, rhea::to_json_with(&full, 0)).unwrap();
    assert!(std::fs::read_to_string(&graph).unwrap().contains(r#"{"name":"w1","value":null}"#));
    let x = Value::from(array![[1.0f32, -2.0, 3.0, 0.5]]);
    let mut tensors = vec![("x", x.clone())];
    for name in ["w1", "b1", "w2", "b2"] {
        tensors.push((name, full.shared_value(full.find(name).unwrap()).unwrap().clone()));
    }
    let inputs = write_tensors(dir.path(), "weights_and_x.safetensors", &tensors);
    let out = path_in(dir.path(), "out.safetensors");
    rhea(&["run", &graph, "--inputs", &inputs, "-o", &out]).ok();
    assert_close(&rhea::io::load_safetensors(&out).unwrap(), &expected(&full, &[("x", x)]));
}

#[test]
fn every_output_is_printed_and_written_with_its_dtype() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "branches.json", &branches());
    let x = Value::from(array![[1.5f64, -2.0, 0.0], [-1.0, 4.0, 2.5]]);
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x.clone())]);
    let out = path_in(dir.path(), "out.safetensors");
    let stdout = rhea(&["run", &graph, "--inputs", &inputs, "-o", &out]).ok().to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("joined    f64[2, 4] "), "{stdout}");
    assert_eq!(lines[1], "best      i64[2] [0, 1]");
    assert_eq!(lines[2], "positive  bool[2, 3] [true, false, false, false, true, true]");
    assert_eq!(lines[3], "count     i32[] [3]");
    let written = sorted(rhea::io::load_safetensors(&out).unwrap());
    assert_close(&written, &sorted(expected(&branches(), &[("x", x)])));
}

#[test]
fn a_graph_without_inputs_needs_no_inputs_file() {
    let g = rhea::Builder::new();
    let c = g.constant(array![1.0f32, 2.0, 3.0]);
    g.output("doubled", &c.mul(2.0).unwrap()).unwrap();
    let dir = tempdir();
    let graph = write_graph(dir.path(), "const.json", &g.to_graph());
    assert_eq!(rhea(&["run", &graph]).ok(), "doubled  f32[3] [2, 4, 6]\n");
}

#[test]
fn symbolic_dims_bind_to_the_fed_shapes_and_updates_are_reported_not_applied() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "symbolic.json", &symbolic());
    let x = Value::F32(ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[2, 5, 3]), |i| (i[0] + i[1] * i[2]) as f32));
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x.clone())]);
    let out = rhea(&["run", &graph, "--inputs", &inputs]);
    let stdout = out.ok();
    assert!(stdout.contains("clipped  f32[2, 3] [NaN, inf, "), "{stdout}");
    assert!(stdout.contains("bad      bool[2, 3] [true, false, false, true, false, false]"), "{stdout}");
    assert!(out.stderr.contains("1 update(s) are not applied"), "{}", out.stderr);
}
