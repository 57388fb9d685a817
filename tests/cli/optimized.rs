//! `--stage optimized` and its flags, with golden dumps of the optimized
//! Sonar training step and of a softmax cross-entropy graph.

use rhea::{Builder, DType, Dim};

use crate::support::*;

/// The dump without its summary line, whose timings vary.
fn stable(text: &str) -> String {
    text.lines().filter(|l| !l.starts_with("# nodes")).map(|l| format!("{l}\n")).collect()
}

/// Keras' categorical cross-entropy on softmax probabilities (clipped).
fn softmax_ce() -> rhea::Graph {
    let g = Builder::new();
    let b = g.dim("batch").unwrap();
    let x = g.input("x", DType::F32, [b, Dim::Known(4)]).unwrap();
    let y = g.input("y", DType::F32, [b, Dim::Known(3)]).unwrap();
    let w = g.shared("w", ndarray::Array2::<f32>::zeros((4, 3))).unwrap();
    let probs = x.dot(&w).unwrap().softmax(-1).unwrap();
    let loss = rhea::nn::categorical_crossentropy(&probs, &y).unwrap();
    g.output("loss", &loss).unwrap();
    g.to_graph()
}

#[test]
fn the_optimized_sonar_training_step_matches_its_golden_dump() {
    let out = rhea(&["dump", "sonar-mlp", "--stage", "optimized"]).ok().to_string();
    golden("sonar-mlp-optimized.txt", &stable(&out));
    let summary = out.lines().last().unwrap();
    assert!(
        summary.starts_with("# nodes ")
            && summary.contains(" kernels, ")
            && summary.contains("peak intermediate memory")
    );
}

#[test]
fn softmax_cross_entropy_is_stabilized_to_log_softmax() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "ce.json", &softmax_ce());
    let out = rhea(&["dump", &graph, "--stage", "optimized", "--trace"]).ok().to_string();
    golden("softmax-ce-optimized.txt", &stable(&out));
    assert!(out.contains("stabilize    log_clip") && out.contains("stabilize    log_softmax"), "{out}");
    // Then expanded into kernels: no softmax op is left, no log of a softmax.
    assert!(out.contains("specialize   log_softmax_expand") && !out.contains("softmax{"), "{out}");
}

#[test]
fn flags_show_passes_fusion_and_modes() {
    let dir = tempdir();
    let graph = &write_graph(dir.path(), "ce.json", &softmax_ce());
    let after = rhea(&["dump", graph, "--stage", "optimized", "--after", "canonicalize"]).ok().to_string();
    assert!(after.contains("= log(") && !after.contains("kernel"), "stabilize has not run yet:\n{after}");
    let why = rhea(&["dump", graph, "--stage", "optimized", "--explain-fusion", "--exclude", "log_softmax_expand"])
        .ok()
        .to_string();
    assert!(why.contains("fused into kernel") && why.contains("not fusible: log_softmax"), "{why}");
    let none = rhea(&["dump", graph, "--stage", "optimized", "--mode", "none"]).ok().to_string();
    assert!(none.contains(" = log %") && !none.contains("log_softmax"), "mode none rewrites nothing:\n{none}");
    let excluded =
        rhea(&["dump", graph, "--stage", "optimized", "--exclude", "log_softmax", "--trace"]).ok().to_string();
    assert!(!excluded.contains("stabilize    log_softmax") && excluded.contains("risk"), "{excluded}");
    let dot = rhea(&["dump", graph, "--stage", "optimized", "--format", "dot"]);
    assert!(dot.ok().contains("subgraph cluster_k0") && dot.stderr.starts_with("nodes "));
    let json = rhea(&["dump", graph, "--stage", "optimized", "--format", "json", "--trace"]);
    assert!(json.stderr.contains("stabilize    log_softmax"), "--trace goes to stderr with --format json");
    let text = json.ok().to_string();
    assert!(rhea::from_json(&text).is_ok(), "the optimized graph's JSON loads back");
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kernels = parsed["kernels"].as_array().unwrap();
    assert!(!kernels.is_empty() && kernels[0]["ir"]["body"].is_array(), "{text}");
    rhea(&["dump", graph, "--stage", "optimized", "--after", "stabilize", "--explain-fusion"])
        .fails_with(&["--explain-fusion"]);
    rhea(&["dump", graph, "--trace"]).fails_with(&["need --stage optimized"]);
    rhea(&["dump", graph, "--stage", "optimized", "--include", "nope"]).fails_with(&["unknown rule \"nope\""]);
    rhea(&["dump", graph, "--stage", "optimized", "--after", "nope"])
        .fails_with(&["unknown pass \"nope\"", "stabilize"]);
}

#[test]
fn kernels_and_asm_print_what_the_cpu_backend_compiles() {
    let out = rhea(&["dump", "sonar-mlp", "--stage", "optimized", "--kernels", "--asm"]).ok().to_string();
    let kernels = out.matches("# kernel k").count();
    assert!(kernels >= 2 * 18, "{kernels} kernel listings\n{out}");
    // The Adam update of a 60x60 weight is one flat loop on f32x4 vectors.
    assert!(out.contains("load.f32x4") && out.contains("splat.f32x4"), "{out}");
    assert!(out.contains("# kernel k3, x86-64") && out.contains("vmovups") && out.contains("retq"), "{out}");
    rhea(&["dump", "sonar-mlp", "--asm"]).fails_with(&["--asm", "need --stage optimized"]);
}

#[test]
fn vgg16_is_a_built_in_model() {
    let out = rhea(&["dump", "vgg16", "--stage", "optimized"]).ok().to_string();
    assert_eq!(out.matches("= conv2d{stride=1x1, padding=1x1").count(), 13, "{out}");
    assert_eq!(out.matches("= max_pool2d{kernel=2x2, stride=2x2").count(), 5, "{out}");
    assert_eq!(out.matches("= gemm{").count(), 3, "{out}");
    assert!(out.contains("shared \"features.28.weight\" : f32[512,512,3,3]"), "{out}");
    assert!(out.contains("shared \"classifier.0.weight\" : f32[25088,4096]"), "{out}");
    assert!(out.contains("output \"logits\""), "{out}");
}

/// An RNN whose body scales its weight every step: the optimized dump nests
/// the body's own optimized program under its scan, and the trace shows
/// the scaling moved out of the loop and the rewrites inside the body.
fn scaled_rnn() -> rhea::Graph {
    let g = Builder::new();
    let t = g.dim("t").unwrap();
    let xs = g.input("xs", DType::F32, [t, Dim::Known(3)]).unwrap();
    let h0 = g.input("h0", DType::F32, [3]).unwrap();
    let w = g.shared("w", ndarray::Array2::<f32>::eye(3)).unwrap();
    let args = rhea::ScanArgs {
        sequences: vec![xs],
        states: vec![rhea::State::new(&h0)],
        non_sequences: vec![w],
        ..Default::default()
    };
    let out = g
        .scan(args, |s| {
            let w = s.non_seq(0)?.mul(0.5)?;
            let h = s.state(0)?.dot(&w)?.add(&s.seq(0)?)?.mul(1.0)?.tanh()?;
            Ok(rhea::StepOut::states(vec![h]))
        })
        .unwrap();
    g.output("h", &out.finals[0]).unwrap();
    g.to_graph()
}

#[test]
fn a_loop_dumps_with_its_optimized_body_and_its_trace() {
    let dir = tempdir();
    let graph = write_graph(dir.path(), "rnn.json", &scaled_rnn());
    let out = rhea(&["dump", &graph, "--stage", "optimized", "--trace"]).ok().to_string();
    golden("rnn-optimized.txt", &stable(&out));
    assert!(out.contains("loops        scan_push_out"), "{out}");
    assert!(out.contains("in the body of %") && out.contains("    | useless      mul_one"), "{out}");
    assert!(out.contains("    | kernel k0("), "the body's kernels are under the scan:\n{out}");
}
