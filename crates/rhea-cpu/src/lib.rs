//! rhea's CPU backend: kernel IR compiled to machine code with Cranelift.
//!
//! Today each kernel becomes a scalar loop nest over its domain, with float
//! transcendentals calling the reference `f64` definitions so that results
//! round exactly as the interpreter's, and matrix products run through the
//! `gemm` crate; SIMD loops, inline polynomial transcendentals and threaded
//! kernels are the next steps.
#![warn(missing_docs)]

mod blas;
mod conv;
mod jit;
mod library;
mod lower;
mod math;
mod poly;
mod pool;

pub use jit::{CpuError, CpuKernels};
pub use library::library_op;
