//! The docs stay true: the examples in `docs/graph-format.md` load and
//! match what the writer writes, every op is documented, and the README's
//! Rust example is the quickstart's code.

use std::collections::BTreeSet;
use std::path::Path;

use rhea::{Op, TensorType};

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// The bodies of the fenced code blocks of language `lang`.
fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(String::new()),
            Some(body) if line.trim() == "```" => {
                blocks.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The tag each op has in graph files. The match is exhaustive so that a
/// new op does not compile until it is added here, and then to the docs.
fn tag(op: &Op) -> &'static str {
    match op {
        Op::Input { .. } => "input",
        Op::Shared { .. } => "shared",
        Op::Const { .. } => "const",
        Op::Unary { .. } => "unary",
        Op::Binary { .. } => "binary",
        Op::Where => "where",
        Op::Cast { .. } => "cast",
        Op::Reduce { .. } => "reduce",
        Op::ArgReduce { .. } => "arg_reduce",
        Op::Dot => "dot",
        Op::Gemm { .. } => "gemm",
        Op::Reshape { .. } => "reshape",
        Op::DimShuffle { .. } => "dimshuffle",
        Op::BroadcastTo { .. } => "broadcast_to",
        Op::Concat { .. } => "concat",
        Op::Slice { .. } => "slice",
        Op::Gather { .. } => "gather",
        Op::OneHot { .. } => "one_hot",
        Op::Pad { .. } => "pad",
        Op::Softmax { .. } => "softmax",
        Op::LogSoftmax { .. } => "log_softmax",
        Op::Conv2d(_) => "conv2d",
        Op::MaxPool2d(_) => "max_pool2d",
        Op::AvgPool2d(_) => "avg_pool2d",
        Op::Conv2dInputGrad(_) => "conv2d_input_grad",
        Op::Conv2dWeightGrad(_) => "conv2d_weight_grad",
        Op::MaxPool2dGrad(_) => "max_pool2d_grad",
        Op::AvgPool2dGrad(_) => "avg_pool2d_grad",
        Op::MaxPool2dGather(_) => "max_pool2d_gather",
        Op::StopGradient => "stop_gradient",
        Op::Dropout { .. } => "dropout",
        Op::RandomUniform(_) => "random_uniform",
        Op::RandomNormal(_) => "random_normal",
        Op::Scan(_) => "scan",
        Op::ScanResult { .. } => "scan_result",
    }
}

const ALL_TAGS: [&str; 35] = [
    "input",
    "shared",
    "const",
    "unary",
    "binary",
    "where",
    "cast",
    "reduce",
    "arg_reduce",
    "dot",
    "gemm",
    "reshape",
    "dimshuffle",
    "broadcast_to",
    "concat",
    "slice",
    "gather",
    "one_hot",
    "pad",
    "softmax",
    "log_softmax",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "max_pool2d_grad",
    "avg_pool2d_grad",
    "max_pool2d_gather",
    "stop_gradient",
    "dropout",
    "random_uniform",
    "random_normal",
    "scan",
    "scan_result",
];

#[test]
fn the_full_example_of_the_graph_format_loads_and_dumps_back_byte_for_byte() {
    let doc = read("docs/graph-format.md");
    let files: Vec<String> = code_blocks(&doc, "json").into_iter().filter(|b| b.starts_with("{\n")).collect();
    assert_eq!(files.len(), 1, "docs/graph-format.md has one full example");
    let graph = rhea::from_json(&files[0]).unwrap_or_else(|e| panic!("the example does not load: {e}"));
    assert_eq!(rhea::to_json(&graph), files[0], "the writer writes the example differently");
    let text = code_blocks(&doc, "text").into_iter().next().expect("a text dump of the example");
    assert_eq!(rhea::to_text(&graph, rhea::TextOptions::default()), text);
}

#[test]
fn every_op_has_an_example_record_as_the_writer_writes_it() {
    let doc = read("docs/graph-format.md");
    let mut seen = BTreeSet::new();
    for block in code_blocks(&doc, "json").iter().filter(|b| !b.starts_with("{\n")) {
        for line in block.lines() {
            let record: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let mut op_fields = record.clone();
            for field in ["id", "inputs", "type", "label", "loc"] {
                op_fields.remove(field);
            }
            let op: Op = serde_json::from_value(op_fields.clone().into()).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(serde_json::to_value(&op).unwrap(), serde_json::Value::from(op_fields), "{line}");
            let ty = record["type"].as_str().unwrap_or_else(|| panic!("{line}: no type"));
            ty.parse::<TensorType>().unwrap_or_else(|e| panic!("{line}: {e}"));
            seen.insert(tag(&op));
        }
    }
    let all: BTreeSet<&str> = ALL_TAGS.into_iter().collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    assert!(missing.is_empty(), "docs/graph-format.md has no example of: {missing:?}");
    for t in ALL_TAGS {
        assert!(doc.contains(&format!("| `{t}`")) || doc.contains(&format!(", `{t}` |")), "{t} is not in a table");
    }
}

#[test]
fn unknown_fields_of_node_records_are_ignored_as_documented() {
    let text = r#"{"format":"rhea-graph","version":1,"nodes":[
        {"id":0,"op":"input","name":"x","type":"f32[2]","note":"hi"},
        {"id":1,"op":"dot","inputs":[0,0],"type":"f32[]","colour":"red"}]}"#;
    let g = rhea::from_json(text).unwrap();
    assert_eq!(g.len(), 2);
    let top = r#"{"format":"rhea-graph","version":1,"nodes":[],"extra":1}"#;
    assert!(rhea::from_json(top).unwrap_err().to_string().contains("extra"));
}

#[test]
fn the_readme_example_is_the_quickstart_code() {
    let readme = read("README.md");
    let quickstart: BTreeSet<String> = read("examples/quickstart.rs").lines().map(|l| l.trim().to_string()).collect();
    let example = code_blocks(&readme, "rust").into_iter().next().expect("README.md has a Rust example");
    for line in example.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")) {
        assert!(quickstart.contains(line), "README.md's example line is not in examples/quickstart.rs: {line}");
    }
    for command in ["cargo run --release --example quickstart", "cargo test --workspace --release"] {
        assert!(readme.contains(command), "README.md does not give `{command}`");
    }
    let ci = read(".ci/run");
    assert!(ci.contains("cargo test --workspace --release"), ".ci/run runs the README's test command");
}

/// The ulp table of docs/cpu-backend.md states the bounds the accuracy
/// test of the CPU backend checks.
#[test]
fn the_stated_ulp_bounds_are_the_tested_ones() {
    let doc = read("docs/cpu-backend.md");
    let test = read("crates/rhea-cpu/tests/accuracy.rs");
    let mut stated = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, name, bound, _] = cells.as_slice()
            && let Some(n) = bound.strip_suffix(" ulp")
        {
            stated.push((name.trim_matches('`').to_string(), n.to_string()));
        }
    }
    assert_eq!(stated.len(), 8, "{stated:?}");
    for (name, bound) in stated {
        let variant: String = name[..1].to_uppercase() + &name[1..];
        let tested = format!("(UnaryOp::{variant}, {bound})");
        assert!(test.contains(&tested), "docs say {name} is within {bound} ulp; the test has no {tested}");
    }
}
