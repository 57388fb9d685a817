//! rhea's CPU backend: kernel IR compiled to machine code with Cranelift.
//!
//! - [`CpuKernels`] compiles a program's kernels: flat loops on `f32x4` /
//!   `f64x2` vectors with inline `f32` transcendentals, loop nests for
//!   strided and reducing kernels, both split across cores when large.
//! - [`library_op`] runs matrix products (the `gemm` crate), convolution and
//!   pooling with their gradients natively.
//! - [`CpuEngine`] is the backend as a device of the one executor
//!   (`rhea-exec`): a program prepared once per set of input shapes, then
//!   called on raw buffers.
//! - [`FilterCache`] keeps 3x3 convolutions' Winograd-transformed filters
//!   between calls, for weights that did not change.
#![warn(missing_docs)]

mod blas;
mod conv;
mod denormals;
mod exec;
mod jit;
mod library;
mod lower;
mod math;
mod movement;
mod poly;
mod pool;
pub mod threads;
mod winograd;

pub use exec::{CpuEngine, CpuKernel, CpuLibrary, target};
pub use jit::{CpuError, CpuKernels, Launch, LaunchOutput};
pub use library::{is_native, library_op};
pub use lower::{inner_reduce_vector_dtype, inner_vector_dtype, vector_dtype};
pub use rhea_graph::nan_report;
pub use winograd::FilterCache;
