//! The numpy golden cases of every op, run on the CPU backend: each case
//! becomes a graph whose inputs are fed, compiled in mode none (each
//! fusible op its own kernel compiled by Cranelift, library ops on the
//! backend's native kernels or the interpreter) and compared with numpy's
//! values within the interpreter's tolerances.

use rhea::Value;
use rhea::opt::{Mode, Options};

use crate::kit::*;

fn tolerance(v: &Value) -> f64 {
    if v.dtype() == rhea::DType::F32 { 1e-5 } else { 1e-12 }
}

#[test]
fn every_golden_case_matches_numpy_on_the_cpu_backend() {
    let (mut ran, mut failures) = (0, Vec::new());
    for case in golden_cases() {
        let Some(expected) = case.expected else { continue };
        let p = program(&case.graph, &Options { mode: Mode::None, ..options(Mode::None, &[]) });
        ran += 1;
        match run_cpu(&p, &case.feeds) {
            Err(e) => failures.push(format!("{}: {e}", case.name)),
            Ok(got) => {
                if let Err(e) = close(&expected, &got[0], tolerance(&expected)) {
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
