//! `rhea bench`: the table, the JSON report and bad arguments.

use crate::support::*;

#[test]
fn bench_times_the_sonar_step_and_writes_json_and_a_plot() {
    let dir = tempdir();
    let json = path_in(dir.path(), "bench.json");
    let svg = path_in(dir.path(), "bench.svg");
    let args = ["bench", "--model", "sonar-mlp", "--backend", "interp,cpu", "--rounds", "1", "--json", &json];
    let out = rhea(&[&args[..], &["--plot", &svg]].concat()).ok().to_string();
    assert!(out.starts_with("machine: ") && out.contains("GFLOP/s"), "{out}");
    assert!(out.contains("sonar-mlp   interp") && out.contains("sonar-mlp   cpu"), "{out}");
    assert!(out.contains("sonar-mlp: cpu is "), "{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["batch"], 10);
        assert!(row["step_us"].as_f64().unwrap() > 0.0 && row["examples_per_s"].as_f64().unwrap() > 0.0);
        assert!(row["epoch_ms"].as_f64().unwrap() > 0.0 && row["gflops"].as_f64().unwrap() > 0.0);
    }
    assert!(report["gemm_peak_gflops"].as_f64().unwrap() > 0.0);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"), "{plot}");
    assert_eq!(plot.matches(r#"class="bar""#).count(), 2, "{plot}");
    assert!(plot.contains("sonar-mlp (batch 10)") && plot.contains(">interp<") && plot.contains(">cpu<"), "{plot}");
    assert!(plot.contains("machine: "), "the subtitle names the machine: {plot}");
}

#[test]
fn bench_times_the_recurrent_steps_with_the_loop_products_counted() {
    let dir = tempdir();
    let json = path_in(dir.path(), "bench.json");
    let args = ["bench", "--model", "elman,lstm", "--backend", "interp,cpu", "--seq-len", "4", "--rounds", "1"];
    let out = rhea(&[&args[..], &["--json", &json]].concat()).ok().to_string();
    assert!(out.contains("elman") && out.contains("lstm"), "{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        // The products inside the loop count, once per step: GFLOP/s is not zero.
        assert!(row["step_us"].as_f64().unwrap() > 0.0 && row["gflops"].as_f64().unwrap() > 0.0, "{row}");
    }
    rhea(&["bench", "--model", "lstm", "--seq-len", "0"]).fails_with(&["--seq-len"]);
}

#[test]
fn bench_rejects_unknown_models_and_backends() {
    rhea(&["bench", "--model", "resnet"]).fails_with(&["unknown model \"resnet\"", "sonar-mlp", "theano-mlp"]);
    rhea(&["bench", "--backend", "tpu"]).fails_with(&["unknown backend \"tpu\""]);
    rhea(&["bench", "--batch", "0"]).fails_with(&["--batch"]);
}

/// `--cuda-graph` times the step both ways on the (emulated) GPU and says
/// how the captured graph compares; the JSON rows are named apart.
#[test]
fn bench_times_the_step_as_a_cuda_graph_beside_step_by_step() {
    let dir = tempdir();
    let json = path_in(dir.path(), "bench.json");
    let args = ["bench", "--model", "sonar-mlp", "--backend", "cuda-emu", "--cuda-graph", "--rounds", "1"];
    let out = rhea(&[&args[..], &["--json", &json]].concat()).ok().to_string();
    assert!(out.contains("sonar-mlp   cuda-emu ") && out.contains("sonar-mlp   cuda-emu+graph "), "{out}");
    assert!(out.contains("sonar-mlp: as a CUDA graph the cuda-emu step takes "), "{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let names: Vec<&str> = report["rows"].as_array().unwrap().iter().map(|r| r["backend"].as_str().unwrap()).collect();
    assert_eq!(names, ["cuda-emu", "cuda-emu+graph"]);
}
