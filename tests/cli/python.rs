//! The end-to-end check against numpy: Rust writes a graph file,
//! `tests/python/make_case.py` writes its inputs with `safetensors.numpy`
//! and numpy's expected outputs, `rhea run -o` computes the outputs, and the
//! two are compared.
//!
//! Without python3, numpy or safetensors these tests print "not run: ..."
//! and pass, unless `RHEA_REQUIRE_PYTHON=1` (as in CI), when they fail.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use ndarray::{Array1, Array2, array};
use rhea::{Builder, DType, Value};

use crate::support::{path_in, rhea, tempdir};

const PYTHON: &str = "python3";

/// Whether python3 with numpy and safetensors is here; `Err` says what is missing.
fn python_ready() -> Result<(), String> {
    let out = Command::new(PYTHON)
        .args(["-c", "import numpy, safetensors.numpy"])
        .output()
        .map_err(|e| format!("cannot start {PYTHON}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "{PYTHON} lacks numpy or safetensors ({}); install them with `python3 -m pip install numpy safetensors`",
        stderr.trim().lines().last().unwrap_or("the import failed")
    ))
}

/// True if the test may go on; otherwise prints why not, or fails when
/// `RHEA_REQUIRE_PYTHON=1`.
fn need_python(test: &str) -> bool {
    match python_ready() {
        Ok(()) => true,
        Err(why) if std::env::var("RHEA_REQUIRE_PYTHON").is_ok_and(|v| v == "1") => {
            panic!("{test}: RHEA_REQUIRE_PYTHON=1 but {why}")
        }
        Err(why) => {
            // Straight to stderr: the test harness would hide a println!.
            let _ = writeln!(std::io::stderr(), "not run: {test}: {why}");
            false
        }
    }
}

/// The graph of case `mlp` (see make_case.py). Its weights are left out of
/// the file, so they must come from the inputs file.
fn mlp_graph() -> String {
    let g = Builder::new();
    let batch = g.dim("batch").unwrap();
    let x = g.input("x", DType::F32, [batch, 4.into()]).unwrap();
    let w1 = g.shared("w1", Array2::<f32>::zeros((4, 8))).unwrap();
    let b1 = g.shared("b1", Array1::<f32>::zeros(8)).unwrap();
    let w2 = g.shared("w2", Array2::<f32>::zeros((8, 3))).unwrap();
    let b2 = g.shared("b2", Array1::<f32>::zeros(3)).unwrap();
    let hidden = x.dot(&w1).unwrap().add(&b1).unwrap().relu().unwrap();
    let probs = hidden.dot(&w2).unwrap().add(&b2).unwrap().tanh().unwrap().softmax(-1).unwrap();
    g.output("probs", &probs).unwrap();
    rhea::to_json_with(&g.graph(), 0)
}

/// The graph of case `mixed`.
fn mixed_graph() -> String {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [6, 3]).unwrap();
    let total = x.exp().unwrap().mul(2.0).unwrap().sub(1.0).unwrap().sum(&[1], false).unwrap();
    let positive = x.greater(0.0).unwrap();
    g.output("total", &total).unwrap();
    g.output("best", &x.argmax(1, false).unwrap()).unwrap();
    g.output("positive", &positive).unwrap();
    g.output("logp", &x.log_softmax(1).unwrap()).unwrap();
    g.output("count", &positive.cast(DType::I32).unwrap().sum_all().unwrap()).unwrap();
    rhea::to_json(&g.graph())
}

/// Compares two values: floats to a tolerance suited to their dtype,
/// integers and bools exactly.
fn assert_close(name: &str, got: &Value, want: &Value) {
    assert_eq!(got.dtype(), want.dtype(), "{name}: dtype");
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    let (atol, rtol) = match want.dtype() {
        DType::F32 => (1e-6, 1e-5),
        DType::F64 => (1e-12, 1e-10),
        _ => (0.0, 0.0),
    };
    for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{name}: element {i} is {g}, numpy says {w}");
    }
}

fn sorted(mut v: Vec<(String, Value)>) -> Vec<(String, Value)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn check_case(case: &str, graph_json: String) {
    if !need_python(&format!("python end-to-end case {case}")) {
        return;
    }
    let dir = tempdir();
    let graph = path_in(dir.path(), &format!("{case}.json"));
    std::fs::write(&graph, graph_json).unwrap();
    let inputs = path_in(dir.path(), "inputs.safetensors");
    let expected = path_in(dir.path(), "expected.safetensors");
    let outputs = path_in(dir.path(), "outputs.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_case.py");
    let made = Command::new(PYTHON).arg(&script).args([case, &inputs, &expected]).output().unwrap();
    assert!(made.status.success(), "make_case.py {case} failed:\n{}", String::from_utf8_lossy(&made.stderr));

    rhea(&["run", &graph, "--inputs", &inputs, "-o", &outputs]).ok();
    let got = sorted(rhea::io::load_safetensors(&outputs).unwrap());
    let want = sorted(rhea::io::load_safetensors(&expected).unwrap());
    let names = |v: &[(String, Value)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{case}: output names");
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        assert_close(&format!("{case}/{name}"), g, w);
    }
}

#[test]
fn numpy_agrees_on_an_mlp_whose_weights_come_from_safetensors() {
    check_case("mlp", mlp_graph());
}

#[test]
fn numpy_agrees_on_f64_i64_i32_and_bool_outputs() {
    check_case("mixed", mixed_graph());
}

#[test]
fn files_numpy_writes_load_with_every_dtype() {
    if !need_python("reading a numpy-written file") {
        return;
    }
    let dir = tempdir();
    let path = path_in(dir.path(), "np.safetensors");
    let code = format!(
        "import numpy as np; from safetensors.numpy import save_file; \
         save_file({{'a': np.arange(6, dtype=np.int64).reshape(2, 3), 'b': np.array([True, False]), \
         'c': np.array(1.5, dtype=np.float32), 'd': np.array([-7], dtype=np.int32), \
         'e': np.zeros((0, 2), dtype=np.float64)}}, {path:?})"
    );
    let out = Command::new(PYTHON).args(["-c", &code]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = sorted(rhea::io::load_safetensors(&path).unwrap());
    assert_eq!(t[0], ("a".to_string(), Value::from(array![[0i64, 1, 2], [3, 4, 5]])));
    assert_eq!(t[1], ("b".to_string(), Value::from(array![true, false])));
    assert_eq!(t[2], ("c".to_string(), Value::from(1.5f32)));
    assert_eq!(t[3], ("d".to_string(), Value::from(array![-7i32])));
    assert_eq!((t[4].0.as_str(), t[4].1.dtype(), t[4].1.shape()), ("e", DType::F64, &[0usize, 2][..]));
}

/// `benches/torch_side.py --join` sets a `rhea bench --json` report beside
/// PyTorch's (saved by the same script where PyTorch is installed): only
/// rows of the same model, batch and device meet, with rhea's rate over
/// PyTorch's. Needs no PyTorch.
#[test]
fn torch_side_joins_rheas_report_with_pytorchs() {
    if !need_python("torch_side_joins_rheas_report_with_pytorchs") {
        return;
    }
    let dir = tempdir();
    let ours = path_in(dir.path(), "rhea.json");
    rhea(&["bench", "--model", "sonar-mlp", "--backend", "cpu", "--rounds", "1", "--json", &ours]).ok();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ours).unwrap()).unwrap();
    let rate = report["rows"][0]["examples_per_s"].as_f64().unwrap();
    let theirs = path_in(dir.path(), "torch.json");
    let row = |backend: &str, batch: u32| serde_json::json!({"model": "sonar-mlp", "backend": backend, "batch": batch, "examples_per_s": 1000.0});
    let torch = serde_json::json!({"torch": "2.x", "device": "cpu, 2 threads", "rows": [row("cpu", 10), row("cuda", 10), row("cpu", 20)]});
    std::fs::write(&theirs, torch.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_side.py");
    let out = Command::new(PYTHON).args([script, "--join", &ours, &theirs]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("sonar-mlp")).collect();
    assert_eq!(lines.len(), 1, "one row meets (cpu, batch 10):\n{text}");
    assert!(lines[0].ends_with(&format!("{:.2}x", rate / 1000.0)), "{text}");
}
