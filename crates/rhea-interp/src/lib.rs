//! rhea's reference interpreter: the meaning of every op, evaluated on
//! `ndarray`. It is the specification every other backend is tested
//! against, written for clarity and exactness rather than speed.
//!
//! ```
//! use std::collections::HashMap;
//! use rhea_graph::{Builder, DType, Value};
//!
//! let g = Builder::new();
//! let x = g.input("x", DType::F64, [3])?;
//! let y = (&x * 2.0).exp()?.sum(&[0], false)?;
//! let feeds = HashMap::from([("x".to_string(), Value::from(ndarray::array![0.0f64, 0.0, 0.0]))]);
//! let out = rhea_interp::run(&g.graph(), &feeds, &[y.id()])?;
//! assert_eq!(out[0], Value::from(3.0f64));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod error;
mod eval;
mod guard;
mod ops;
mod program;
mod scan;
mod verify;
mod window;

pub use error::InterpError;
pub use eval::{Bindings, RunOptions, bind_inputs, eval_op, run, run_all, run_checked, run_with};
pub use guard::nan_check;
pub use program::fold_constant;
pub use scan::{BodyStep, body_outputs, loop_steps, run_scan, run_scan_with};
pub use verify::{VerifyError, VerifyOptions, verify_grad};
