//! rhea's CPU backend: kernel IR compiled to machine code with Cranelift.
//!
//! Today each kernel becomes a scalar loop nest over its domain, with float
//! transcendentals calling the reference `f64` definitions so that results
//! round exactly as the interpreter's; SIMD loops, inline polynomial
//! transcendentals, threads and a tuned GEMM are the next steps.
#![warn(missing_docs)]

mod jit;
mod lower;
mod math;

pub use jit::{CpuError, CpuKernels};
