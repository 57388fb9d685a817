//! Checks the interpreter against golden values computed independently with
//! numpy by `tests/golden/gen_op_golden.py` (regenerate `tests/golden/ops.json`
//! with `python3 crates/rhea-interp/tests/golden/gen_op_golden.py`).
//!
//! Each case is `{"name", "op", "inputs", "expected"}` or, for run-time
//! errors, `{"name", "op", "inputs", "error"}` where `error` is a substring
//! of the expected message. Every failure is collected and reported in one
//! panic, so a single run shows everything that disagrees.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rhea_graph::{ArgReduceOp, BinaryOp, Literal, Op, ReduceOp, Shape, TensorType, UnaryOp, Value};
use serde::Deserialize;

/// Every op variant that needs a golden case, by [`Op::name`], apart from
/// the elementwise and reduction families (listed through their `ALL`
/// tables). Exempt: the leaves (input, shared, const) and the random ops
/// (dropout, random_uniform, random_normal), defined by rhea's own generator.
const STRUCTURAL: [&str; 16] = [
    "where",
    "cast",
    "dot",
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
];

#[derive(Deserialize)]
struct Case {
    name: String,
    op: Op,
    inputs: Vec<Literal>,
    #[serde(default)]
    expected: Option<Literal>,
    #[serde(default)]
    error: Option<String>,
}

fn golden_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ops.json")
}

/// Parses the file case by case, so that one malformed case is reported
/// rather than hiding all the others.
fn load() -> (Vec<Case>, Vec<String>) {
    let path = golden_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let raw: Vec<serde_json::Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not a JSON list: {e}", path.display()));
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let name = v.get("name").and_then(|n| n.as_str()).map_or_else(|| format!("#{i}"), str::to_string);
        match serde_json::from_value::<Case>(v) {
            Ok(c) if c.expected.is_some() == c.error.is_some() => {
                problems.push(format!("{name}: a case needs exactly one of \"expected\" and \"error\""))
            }
            Ok(c) => cases.push(c),
            Err(e) => problems.push(format!("{name}: cannot deserialize the case: {e}")),
        }
    }
    (cases, problems)
}

fn type_of(v: &Value) -> TensorType {
    TensorType::new(v.dtype(), Shape::known(v.shape()))
}

/// `Ok` if `got` matches `want` within the dtype's tolerance: f32
/// `|a-b| <= 1e-5 + 1e-5|b|`, f64 `1e-12 + 1e-12|b|`, integers and bools
/// exactly; NaN matches only NaN, an infinity only the same infinity.
fn compare(got: &Value, want: &Value) -> Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("got {}{:?}, expected {}{:?}", got.dtype(), got.shape(), want.dtype(), want.shape()));
    }
    let tol = match want {
        Value::F32(_) => Some(1e-5),
        Value::F64(_) => Some(1e-12),
        _ => None,
    };
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut bad = Vec::new();
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = match tol {
            None => a == b,
            Some(_) if b.is_nan() => a.is_nan(),
            Some(_) if b.is_infinite() => a == b,
            Some(t) => a.is_finite() && (a - b).abs() <= t + t * b.abs(),
        };
        if !ok {
            bad.push(i);
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = bad.iter().take(6).map(|&i| format!("[{i}] got {} expected {}", g[i], w[i])).collect();
    Err(format!(
        "{} of {} elements differ: {}{}\n      got:      {}\n      expected: {}",
        bad.len(),
        w.len(),
        shown.join(", "),
        if bad.len() > shown.len() { ", ..." } else { "" },
        got.summary(),
        want.summary()
    ))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs one case and says what is wrong with it, if anything.
fn check(case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let values: Vec<&Value> = case.inputs.iter().map(Literal::value).collect();
    if let Some(expected) = &case.expected {
        let types: Vec<TensorType> = values.iter().map(|v| type_of(v)).collect();
        let type_refs: Vec<&TensorType> = types.iter().collect();
        let want = type_of(expected.value());
        match rhea_graph::infer(&case.op, &type_refs) {
            Ok(t) if t == want => {}
            Ok(t) => problems.push(format!("infer gives {t}, expected {want}")),
            Err(e) => problems.push(format!("infer fails: {e}")),
        }
    }
    let result =
        catch_unwind(AssertUnwindSafe(|| rhea_interp::eval_op(&case.op, &values, &rhea_interp::Bindings::new())));
    match (result, &case.expected, &case.error) {
        (Err(p), _, _) => problems.push(format!("eval_op panicked: {}", panic_message(&*p))),
        (Ok(Ok(got)), Some(want), _) => {
            if let Err(e) = compare(&got, want.value()) {
                problems.push(e);
            }
        }
        (Ok(Err(e)), Some(_), _) => problems.push(format!("eval_op failed: {e}")),
        (Ok(Ok(got)), None, Some(sub)) => {
            problems.push(format!("expected an error containing {sub:?}, got {}", got.summary()))
        }
        (Ok(Err(e)), None, Some(sub)) => {
            if !e.contains(sub.as_str()) {
                problems.push(format!("expected an error containing {sub:?}, got error {e:?}"));
            }
        }
        (Ok(_), None, None) => unreachable!("load() rejects cases without expected or error"),
    }
    problems
}

#[test]
fn interpreter_matches_numpy_golden_values() {
    let (cases, mut failures) = load();
    assert!(!cases.is_empty(), "no golden cases in {}", golden_path().display());
    let mut names = BTreeSet::new();
    for case in &cases {
        if !names.insert(case.name.as_str()) {
            failures.push(format!("{}: duplicate case name", case.name));
        }
        for p in check(case) {
            failures.push(format!("{} ({}): {p}", case.name, case.op));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in {} golden cases:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn golden_cases_cover_every_op() {
    let (cases, _) = load();
    let covered: BTreeSet<&str> = cases.iter().filter(|c| c.expected.is_some()).map(|c| c.op.name()).collect();
    let mut required: Vec<&str> = Vec::new();
    required.extend(UnaryOp::ALL.iter().map(|u| u.name()));
    required.extend(BinaryOp::ALL.iter().map(|b| b.name()));
    required.extend(ReduceOp::ALL.iter().map(|r| r.name()));
    required.extend([ArgReduceOp::Argmax.name(), ArgReduceOp::Argmin.name()]);
    required.extend(STRUCTURAL);
    let missing: Vec<&str> = required.iter().copied().filter(|n| !covered.contains(n)).collect();
    assert!(missing.is_empty(), "ops with no golden case: {missing:?}");
}
