//! Every way a user's files can be wrong gives exit code 1 and an `error:`
//! message naming the problem, never a panic.

use ndarray::array;
use rhea::Value;

use crate::support::{mlp, path_in, rhea, tempdir, write_graph, write_tensors, write_text};

fn x(rows: usize) -> Value {
    Value::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[rows, 4])))
}

#[test]
fn a_missing_input_is_named_with_its_type() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("b1", Value::from(array![0.0f32, 0.0, 0.0]))]);
    rhea(&["run", &graph, "--inputs", &inputs])
        .fails_with(&["error: missing input \"x\" (f32[batch,4])", "in.safetensors does not have it"]);
    rhea(&["run", &graph]).fails_with(&["missing input \"x\" (f32[batch,4])", "no inputs file was given"]);
}

#[test]
fn a_wrong_dtype_names_the_input_what_was_expected_and_what_was_given() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", Value::from(array![[1.0f64, 2.0, 3.0, 4.0]]))]);
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&["input \"x\"", "expected f32[batch,4]", "got f64[1, 4]"]);
}

#[test]
fn a_wrong_shape_names_the_input_what_was_expected_and_what_was_given() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let bad = Value::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[2, 5])));
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", bad)]);
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&["input \"x\"", "expected f32[batch,4]", "got f32[2, 5]"]);
    let rank = Value::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[4])));
    let inputs = write_tensors(dir.path(), "rank.safetensors", &[("x", rank)]);
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&["input \"x\"", "expected f32[batch,4]", "got f32[4]"]);
}

#[test]
fn a_bad_shared_value_names_the_variable() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x(1)), ("w2", Value::from(array![1.0f32, 2.0]))]);
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&[
        "shared variable \"w2\"",
        "expected f32[3,2]",
        "got f32[2]",
    ]);
}

#[test]
fn a_shared_value_missing_from_graph_and_inputs_is_named() {
    let dir = tempdir();
    let graph = path_in(dir.path(), "bare.json");
    std::fs::write(&graph, rhea::to_json_with(&mlp(), 0)).unwrap();
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x(2))]);
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&["shared variable \"w1\" has no value"]);
}

#[test]
fn unknown_tensor_names_are_listed() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let inputs = write_tensors(
        dir.path(),
        "in.safetensors",
        &[("x", x(1)), ("bogus", Value::from(1.0f32)), ("W1", Value::from(1.0f32))],
    );
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&[
        "in.safetensors has tensors that are neither inputs nor shared variables of the graph",
        "\"bogus\"",
        "\"W1\"",
        "inputs: [\"x\"]",
        "shared variables: [\"w1\", \"b1\", \"w2\", \"b2\"]",
    ]);
}

#[test]
fn symbolic_dims_must_agree_between_inputs() {
    let g = rhea::Builder::new();
    let n = g.dim("n").unwrap();
    let a = g.input("a", rhea::DType::F32, [n]).unwrap();
    let b = g.input("b", rhea::DType::F32, [n]).unwrap();
    g.output("sum", &a.add(&b).unwrap()).unwrap();
    let dir = tempdir();
    let graph = write_graph(dir.path(), "g.json", &g.to_graph());
    let inputs = write_tensors(
        dir.path(),
        "in.safetensors",
        &[("a", Value::from(array![1.0f32, 2.0])), ("b", Value::from(array![1.0f32, 2.0, 3.0]))],
    );
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&["symbolic dim n", "\"a\"", "\"b\""]);
}

/// A valid inputs file for the MLP, as bytes.
fn good_inputs() -> Vec<u8> {
    let dir = tempdir();
    let path = write_tensors(dir.path(), "in.safetensors", &[("x", x(2))]);
    std::fs::read(path).unwrap()
}

/// A safetensors file with a hand-written header.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn corrupt_truncated_and_unsupported_safetensors_files_are_errors() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let good = good_inputs();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty", vec![], vec!["empty.safetensors: not a valid safetensors file", "too short"]),
        ("garbage", b"this is not a tensor file at all".to_vec(), vec!["garbage.safetensors", "header length"]),
        ("cut-header", good[..20].to_vec(), vec!["cut-header.safetensors", "truncated"]),
        ("cut-data", good[..good.len() - 4].to_vec(), vec!["cut-data.safetensors", "tensor \"x\"", "truncated"]),
        ("bad-json", raw_safetensors("{\"x\": [", &[]), vec!["bad-json.safetensors", "not valid JSON"]),
        (
            "f16",
            raw_safetensors(r#"{"x":{"dtype":"F16","shape":[1,4],"data_offsets":[0,8]}}"#, &[0; 8]),
            vec!["f16.safetensors", "tensor \"x\" has dtype F16", "not support"],
        ),
        (
            "liar",
            raw_safetensors(r#"{"x":{"dtype":"F32","shape":[2,4],"data_offsets":[0,16]}}"#, &[0; 16]),
            vec!["liar.safetensors", "tensor \"x\"", "F32 [2, 4], which is 32 bytes", "span 16"],
        ),
        (
            "overflow",
            raw_safetensors(r#"{"x":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,16]}}"#, &[0; 16]),
            vec!["overflow.safetensors", "tensor \"x\"", "too large"],
        ),
        (
            "malformed-entry",
            raw_safetensors(r#"{"x":{"dtype":"F32","shape":"wide"}}"#, &[]),
            vec!["malformed-entry.safetensors", "tensor \"x\"", "malformed header entry"],
        ),
    ];
    for (name, bytes, parts) in cases {
        let path = path_in(dir.path(), &format!("{name}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        rhea(&["run", &graph, "--inputs", &path]).fails_with(&parts);
    }
    rhea(&["run", &graph, "--inputs", &path_in(dir.path(), "absent.safetensors")])
        .fails_with(&["absent.safetensors", "No such file"]);
}

#[test]
fn malformed_graph_files_are_errors() {
    let dir = tempdir();
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x(1))]);
    let head = r#"{"format":"rhea-graph","version":1,"#;
    let x_node = r#"{"id":0,"op":"input","name":"x","type":"f32[2]"}"#;
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("not-json", "{\"format\": ".into(), vec!["cannot load graph", "not-json.json", "EOF"]),
        ("not-a-graph", "[1, 2, 3]".into(), vec!["not-a-graph.json", "graph file"]),
        (
            "wrong-format",
            r#"{"format":"onnx","version":1,"nodes":[]}"#.into(),
            vec!["wrong-format.json", "format is \"onnx\""],
        ),
        ("wrong-version", r#"{"format":"rhea-graph","version":9,"nodes":[]}"#.into(), vec!["version 9"]),
        (
            "unknown-op",
            format!(r#"{head}"nodes":[{x_node},{{"id":1,"op":"frobnicate","inputs":[0],"type":"f32[2]"}}]}}"#),
            vec!["unknown-op.json", "frobnicate"],
        ),
        (
            "cycle",
            format!(
                r#"{head}"nodes":[{x_node},{{"id":1,"op":"unary","fun":"exp","inputs":[2],"type":"f32[2]"}},{{"id":2,"op":"unary","fun":"exp","inputs":[1],"type":"f32[2]"}}]}}"#
            ),
            vec!["node 1 (exp)", "input 2 is not defined before it (a cycle or a dangling reference)"],
        ),
        (
            "self-loop",
            format!(r#"{head}"nodes":[{x_node},{{"id":1,"op":"unary","fun":"exp","inputs":[1],"type":"f32[2]"}}]}}"#),
            vec!["node 1 (exp)", "input 1 is not defined before it"],
        ),
        (
            "dangling",
            format!(r#"{head}"nodes":[{x_node},{{"id":1,"op":"unary","fun":"exp","inputs":[7],"type":"f32[2]"}}]}}"#),
            vec!["node 1 (exp)", "input 7 is not defined before it"],
        ),
        (
            "dangling-output",
            format!(r#"{head}"nodes":[{x_node}],"outputs":[{{"name":"y","node":3}}]}}"#),
            vec!["output \"y\" refers to node 3, which does not exist"],
        ),
        (
            "wrong-type",
            format!(r#"{head}"nodes":[{x_node},{{"id":1,"op":"unary","fun":"exp","inputs":[0],"type":"f64[2]"}}]}}"#),
            vec!["node 1 (exp)", "the file says f64[2], but its inputs give f32[2]"],
        ),
        (
            "bad-shapes",
            format!(
                r#"{head}"nodes":[{x_node},{{"id":1,"op":"input","name":"y","type":"f32[3]"}},{{"id":2,"op":"binary","fun":"add","inputs":[0,1],"type":"f32[2]"}}]}}"#
            ),
            vec!["node 2 (add)", "do not broadcast"],
        ),
        (
            "bad-id",
            format!(r#"{head}"nodes":[{{"id":5,"op":"input","name":"x","type":"f32[2]"}}]}}"#),
            vec!["node 0 (input)", "has id 5"],
        ),
    ];
    for (name, text, parts) in cases {
        let graph = write_text(dir.path(), &format!("{name}.json"), &text);
        rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&parts);
        rhea(&["dump", &graph]).fails_with(&parts);
    }
    rhea(&["dump", &path_in(dir.path(), "absent.json")]).fails_with(&["cannot read graph", "absent.json"]);
}

#[test]
fn a_graph_without_outputs_has_nothing_to_run() {
    let dir = tempdir();
    let graph = write_text(
        dir.path(),
        "no-outputs.json",
        r#"{"format":"rhea-graph","version":1,"nodes":[{"id":0,"op":"input","name":"x","type":"f32[2]"}]}"#,
    );
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", Value::from(array![1.0f32, 2.0]))]);
    rhea(&["run", &graph, "--inputs", &inputs]).fails_with(&["no-outputs.json declares no outputs"]);
}

#[test]
fn unwritable_outputs_are_errors() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x(1))]);
    let nowhere = path_in(dir.path(), "no/such/dir/out.safetensors");
    rhea(&["run", &graph, "--inputs", &inputs, "-o", &nowhere]).fails_with(&["no/such/dir/out.safetensors"]);
    rhea(&["dump", &graph, "-o", &path_in(dir.path(), "no/such/dir/g.txt")]).fails_with(&["no/such/dir/g.txt"]);
}

/// A graph file with one input and one op record, written by hand.
fn hostile(input: &str, op: &str) -> String {
    format!(
        "{{\"format\":\"rhea-graph\",\"version\":1,\"nodes\":[{{\"id\":0,\"op\":\"input\",\"name\":\"x\",\"type\":\"{input}\"}},{op}],\
         \"outputs\":[{{\"name\":\"y\",\"node\":1}}]}}"
    )
}

#[test]
fn hostile_attributes_are_clear_errors_not_panics() {
    let dir = tempdir();
    // A slice step of i64::MAX takes one element; nothing overflows.
    let slice = hostile(
        "f32[5]",
        r#"{"id":1,"op":"slice","specs":[{"start":1,"stop":null,"step":9223372036854775807}],"inputs":[0],"type":"f32[1]"}"#,
    );
    let g = write_text(dir.path(), "slice.json", &slice);
    let x =
        write_tensors(dir.path(), "x.safetensors", &[("x", Value::from(ndarray::array![0.0f32, 1.5, 2.0, 3.0, 4.0]))]);
    assert!(rhea(&["run", &g, "--inputs", &x]).ok().contains("[1.5]"));
    // A one-hot too large to hold is refused by name.
    let onehot = hostile(
        "i64[1]",
        r#"{"id":1,"op":"one_hot","depth":1152921504606846976,"dtype":"bool","inputs":[0],"type":"bool[1,1152921504606846976]"}"#,
    );
    let g = write_text(dir.path(), "onehot.json", &onehot);
    let i = write_tensors(dir.path(), "i.safetensors", &[("x", Value::from(ndarray::array![0i64]))]);
    rhea(&["run", &g, "--inputs", &i]).fails_with(&["out of memory", "one_hot", "bool[1,1152921504606846976]"]);
    rhea(&["run", &g, "--inputs", &i, "--backend", "interp"]).fails_with(&["one_hot", "too large to evaluate"]);
    // Window arithmetic that overflows is a load error naming the node.
    let pool = hostile(
        "f32[1,1,4,4]",
        r#"{"id":1,"op":"max_pool2d","kernel":[18446744073709551615,2],"stride":[1,1],"padding":[9223372036854775807,0],"inputs":[0],"type":"f32[1,1,1,1]"}"#,
    );
    let g = write_text(dir.path(), "pool.json", &pool);
    rhea(&["dump", &g]).fails_with(&["node 1 (max_pool2d)", "overflow"]);
    let random = hostile(
        "f32[1]",
        r#"{"id":1,"op":"random_uniform","shape":[1152921504606846976],"dtype":"f32","low":0.0,"high":1.0,"seed":1,"type":"f32[1152921504606846976]"}"#,
    );
    let g = write_text(dir.path(), "random.json", &random);
    let one = write_tensors(dir.path(), "one.safetensors", &[("x", Value::from(ndarray::array![0.0f32]))]);
    rhea(&["run", &g, "--inputs", &one]).fails_with(&["out of memory", "random_uniform"]);
    rhea(&["run", &g, "--inputs", &one, "--backend", "interp"])
        .fails_with(&["random_uniform", "too large to evaluate"]);
}

#[test]
fn the_cuda_backend_without_a_gpu_says_so_and_exits_non_zero() {
    if rhea_cuda::driver_present() {
        println!("NOT RUN: a CUDA driver is present here (scripts/gpu-check covers the GPU)");
        return;
    }
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", x(2))]);
    rhea(&["run", &graph, "--inputs", &inputs, "--backend", "cuda"]).fails_with(&[
        "error:",
        "backend cuda: no CUDA driver found",
        "no NVIDIA GPU",
    ]);
    rhea(&["check", &graph, "--inputs", &inputs, "--backends", "interp,cuda"]).fails_with(&["no CUDA driver found"]);
    let listing = rhea(&["devices"]).ok().to_string();
    assert!(listing.contains("cpu") && listing.contains("cuda    not available: no CUDA driver found"), "{listing}");
    // The PTX can still be read.
    let ptx = rhea(&["dump", &graph, "--stage", "optimized", "--kernels", "--backend", "cuda", "--dim", "batch=3"])
        .ok()
        .to_string();
    assert!(ptx.contains("# PTX specialized to batch=3") && ptx.contains(".target sm_80"), "{ptx}");
    assert!(ptx.contains(".visible .entry k0("), "{ptx}");
}

#[test]
fn overflowing_negative_and_zero_sizes_are_named_not_panics() {
    let dir = tempdir();
    let one = write_tensors(dir.path(), "one.safetensors", &[("x", Value::from(ndarray::array![0.0f32]))]);
    // An element count past usize: refused when loaded, by node.
    let huge = hostile(
        "f32[1]",
        r#"{"id":1,"op":"random_uniform","shape":[4611686018427387904,8],"dtype":"f32","low":0.0,"high":1.0,"seed":1,"type":"f32[4611686018427387904,8]"}"#,
    );
    let g = write_text(dir.path(), "huge.json", &huge);
    rhea(&["run", &g, "--inputs", &one]).fails_with(&["node 1 (random_uniform)", "overflows the address space"]);
    // A negative size is not a size.
    let negative = hostile("f32[-3]", r#"{"id":1,"op":"unary","fun":"exp","inputs":[0],"type":"f32[-3]"}"#);
    let g = write_text(dir.path(), "negative.json", &negative);
    rhea(&["dump", &g]).fails_with(&["cannot load graph", "node 0 (input)", "a size cannot be negative: -3"]);
    // A zero stride would loop forever: refused by name.
    let conv = r#"{"format":"rhea-graph","version":1,"nodes":[{"id":0,"op":"input","name":"x","type":"f32[1,1,4,4]"},{"id":1,"op":"input","name":"w","type":"f32[1,1,3,3]"},{"id":2,"op":"conv2d","stride":[0,1],"padding":[0,0],"dilation":[1,1],"groups":1,"inputs":[0,1],"type":"f32[1,1,2,2]"}],"outputs":[{"name":"y","node":2}]}"#;
    let g = write_text(dir.path(), "conv.json", conv);
    rhea(&["dump", &g]).fails_with(&["node 2 (conv2d)", "stride, dilation and groups must be positive"]);
}

#[test]
fn nan_and_infinite_inputs_flow_through_without_a_crash() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "mlp.json", &mlp());
    let bad = Value::from(ndarray::array![[f32::NAN, 1.0, 2.0, 3.0], [f32::INFINITY, 0.0, 0.0, 0.0]]);
    let inputs = write_tensors(dir.path(), "bad.safetensors", &[("x", bad)]);
    for backend in ["cpu", "interp"] {
        let out = path_in(dir.path(), &format!("out-{backend}.safetensors"));
        rhea(&["run", &graph, "--inputs", &inputs, "--backend", backend, "-o", &out]).ok();
        let probs = rhea::io::load_safetensors(&out).unwrap().remove(0).1.to_f64_vec();
        assert!(probs[0].is_nan() && probs[1].is_nan(), "{backend}: a NaN row stays NaN: {probs:?}");
    }
}
