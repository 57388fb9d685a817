//! rhea's kernel IR: one backend-neutral description of a loop kernel that
//! every code generator lowers (Cranelift on the CPU, PTX on NVIDIA GPUs),
//! the scalar semantics of every elementwise function ([`scalar`]), and an
//! evaluator ([`eval_kernel`]) that is the reference for both.
#![warn(missing_docs)]

mod eval;
mod ir;
pub mod math;
pub mod num;
mod parse;
pub mod scalar;

pub use eval::{Bindings, eval_kernel, resolve};
pub use ir::{Combine, Const, Inst, Kernel, KernelInput, KernelOutput, Reduction, Reg, row_major};
