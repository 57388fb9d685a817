//! rhea is a Theano-style tensor expression-graph compiler: build a typed
//! graph of tensor operations in Rust, differentiate it ([`grad`]), inspect
//! it, optimize it ([`opt`]) and run it: on the reference interpreter
//! ([`interp`]) or with kernels compiled to machine code by Cranelift
//! ([`Backend::Cpu`]), or on an NVIDIA GPU ([`Backend::Cuda`]).
//!
//! ```
//! use std::collections::HashMap;
//! use rhea::{Builder, DType, Value};
//! use ndarray::array;
//!
//! // probs = softmax(relu(x . w + b)), for any batch size.
//! let g = Builder::new();
//! let batch = g.dim("batch")?;
//! let x = g.input("x", DType::F32, [batch, 2.into()])?;
//! let w = g.shared("w", array![[1.0f32, -1.0, 0.5], [0.0, 2.0, 0.5]])?;
//! let b = g.shared("b", array![0.0f32, 0.0, 1.0])?;
//! let probs = (&x.dot(&w)? + &b).relu()?.softmax(-1)?.named("probs");
//! g.output("probs", &probs)?;
//!
//! let feeds = HashMap::from([("x".to_string(), Value::from(array![[1.0f32, 1.0], [0.0, 0.0]]))]);
//! let out = rhea::interp::run(&g.graph(), &feeds, &[probs.id()])?;
//! assert_eq!(out[0].shape(), &[2, 3]);
//!
//! // Graphs save as JSON and load back; tensors save as safetensors.
//! let json = rhea::to_json(&g.graph());
//! assert_eq!(rhea::to_json(&rhea::from_json(&json)?), json);
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("probs.safetensors");
//! rhea::io::save_safetensors(&path, &[("probs", &out[0])])?;
//! assert_eq!(rhea::io::load_safetensors(&path)?, vec![("probs".to_string(), out[0].clone())]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything in `rhea_graph` (the graph, the builder, dtypes, shapes, ops,
//! values and the text, DOT and JSON dumps) is re-exported here; the
//! interpreter is [`interp`], tensor files are [`io`]. The `rhea` command
//! line tool dumps and runs graph files.
#![warn(missing_docs)]

pub use rhea_graph::*;
/// The reference interpreter: the meaning of every op, on `ndarray`.
pub use rhea_interp as interp;
/// The kernel IR the optimizer fuses into and the backends compile.
pub use rhea_kernel as kernel;

/// Tensor files: safetensors, read with every header checked; atomic writes.
pub use rhea_nn::io;
pub use rhea_nn::outln;

mod backend;
pub mod cli;
mod function;
mod once;
mod profile;
pub use function::{Backend, Function, FunctionBuilder, FunctionError, default_options, function};
pub use once::{run_on, run_program};
pub use profile::Profile;
/// The one executor: layouts of optimized programs, run on any device.
pub use rhea_exec as exec;
/// Layers, losses, optimizers, data loaders and the training loop.
pub use rhea_nn as nn;
/// The optimizer: rewrite passes, fusion into kernel IR, memory plan.
pub use rhea_opt as opt;
pub use rhea_opt::Mode;
