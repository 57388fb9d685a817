//! The numpy golden cases of every op, run on the CPU backend: each case
//! becomes a graph whose inputs are fed, compiled in mode none (each
//! fusible op its own kernel compiled by Cranelift, library ops on the
//! backend's native kernels or the interpreter) and compared with numpy's
//! values within the interpreter's tolerances.

use std::collections::HashMap;

use rhea::opt::{Mode, Options};
use rhea::{Literal, Op, Shape, Value};

use crate::kit::*;

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    op: Op,
    inputs: Vec<Literal>,
    #[serde(default)]
    expected: Option<Literal>,
}

fn tolerance(v: &Value) -> f64 {
    if v.dtype() == rhea::DType::F32 { 1e-5 } else { 1e-12 }
}

#[test]
fn every_golden_case_matches_numpy_on_the_cpu_backend() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/rhea-interp/tests/golden/ops.json");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (mut ran, mut failures) = (0, Vec::new());
    for case in cases {
        let Some(expected) = case.expected else { continue };
        let mut g = rhea::Graph::new();
        let mut feeds = HashMap::new();
        let mut ids = Vec::new();
        for (i, lit) in case.inputs.iter().enumerate() {
            let v = lit.value().clone();
            let name = format!("in{i}");
            ids.push(g.add_input(&name, rhea::TensorType::new(v.dtype(), Shape::known(v.shape())), None).unwrap());
            feeds.insert(name, v);
        }
        let out = g.add(case.op.clone(), &ids, None).unwrap();
        g.set_output("out", out);
        let p = program(&g, &Options { mode: Mode::None, ..options(Mode::None, &[]) });
        ran += 1;
        match run_cpu(&p, &feeds) {
            Err(e) => failures.push(format!("{}: {e}", case.name)),
            Ok(got) => {
                let want = expected.value();
                if let Err(e) = close(want, &got[0], tolerance(want)) {
                    failures.push(format!("{}: {e}", case.name));
                }
            }
        }
    }
    assert!(ran > 700, "only {ran} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases differ on the cpu backend:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
