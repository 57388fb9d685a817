//! Which kernels run on vectors, and how wide: the decisions the loop
//! emitter reads.

use cranelift_codegen::ir::{Type, types};
use rhea_graph::{BinaryOp, DType, UnaryOp};
use rhea_kernel::{Inst, Kernel};

use super::cl_type;
use crate::poly;

/// A kernel whose tensors are each either contiguous over the whole domain
/// or a single element runs as one flat loop over `0..elements`, offset `i`
/// (or 0 for the single elements); it is split across threads by ranges of
/// that index. Other kernels are a loop nest, split along axis 0 when that
/// axis is not reduced.
pub fn is_flat(k: &Kernel) -> bool {
    k.reduce.is_none() && (0..k.inputs.len()).all(|i| scalar_input(k, i) || k.inputs[i].is_pointwise(&k.domain))
}

pub(super) fn scalar_input(k: &Kernel, i: usize) -> bool {
    k.inputs[i].shape.iter().all(|d| *d == rhea_graph::Dim::Known(1))
}

/// The float dtype a flat kernel computes in, if its loop can run on vectors
/// of that dtype: float loads and stores only, bools only as comparison
/// results, and every instruction one with a vector lowering.
pub fn vector_dtype(k: &Kernel) -> Option<DType> {
    if !is_flat(k) || k.domain.rank() == 0 {
        return None;
    }
    body_vector_dtype(k)
}

/// The float dtype a loop nest's innermost loop can run on vectors of: the
/// body qualifies (as for [`vector_dtype`]), the innermost axis is not
/// reduced, and every input either does not vary along it (it is splat) or
/// is read along its own last axis, contiguously if its size there is not 1
/// (checked when the kernel runs; otherwise the scalar loop runs).
pub fn inner_vector_dtype(k: &Kernel) -> Option<DType> {
    let rank = k.domain.rank();
    if is_flat(k) || rank < 2 || k.reduce.as_ref().is_some_and(|r| r.axes.contains(&(rank - 1))) {
        return None;
    }
    inner_vector_body(k)
}

/// The body's vector dtype if every input is splat along the innermost
/// axis or read along its own last axis, and that axis fits a vector.
pub(super) fn inner_vector_body(k: &Kernel) -> Option<DType> {
    let rank = k.domain.rank();
    let inner_ok = k.inputs.iter().all(|i| match i.axes[rank - 1] {
        None => true,
        Some(a) => a + 1 == i.shape.rank(),
    });
    if !inner_ok {
        return None;
    }
    body_vector_dtype(k).filter(|&d| inner_fits_a_vector(k, d))
}

/// False when the innermost axis is known to be shorter than one vector
/// (a `[batch, 1]` column): vector code there would never run, only cost
/// compile time.
pub(super) fn inner_fits_a_vector(k: &Kernel, dtype: DType) -> bool {
    let lanes = if dtype == DType::F32 { 4 } else { 2 };
    !matches!(k.domain.dims().last(), Some(rhea_graph::Dim::Known(n)) if *n < lanes)
}

/// The float dtype a loop nest whose innermost axis is reduced can run that
/// axis on vectors of: the body and inputs qualify as for
/// [`inner_vector_dtype`]. Each row then combines into vector accumulators
/// held in registers, and into memory once per row.
pub fn inner_reduce_vector_dtype(k: &Kernel) -> Option<DType> {
    let rank = k.domain.rank();
    if rank == 0 || !k.reduce.as_ref().is_some_and(|r| r.axes.contains(&(rank - 1))) {
        return None;
    }
    inner_vector_body(k)
}

pub(super) fn body_vector_dtype(k: &Kernel) -> Option<DType> {
    let float = k.inputs.first().map(|i| i.dtype).or_else(|| k.body.first().map(|(_, d)| *d))?;
    if !float.is_float() || k.inputs.iter().any(|i| i.dtype != float) {
        return None;
    }
    if (0..k.outputs.len()).any(|o| k.output_dtype(o) != float) {
        return None;
    }
    let bool_compare = |a: u32| k.body[a as usize].1 == DType::Bool;
    k.body
        .iter()
        .all(|(inst, dtype)| {
            (*dtype == float || *dtype == DType::Bool)
                && match inst {
                    Inst::Unary { op, .. } => match op {
                        UnaryOp::Sin | UnaryOp::Cos => false,
                        op if crate::math::calls_helper(*op) => float == DType::F32 && poly::inline(*op),
                        UnaryOp::Sign | UnaryOp::Not | UnaryOp::IsNan | UnaryOp::IsInf => true,
                        _ => *dtype == float,
                    },
                    Inst::Binary { op, a, .. } => match op {
                        BinaryOp::Pow => false,
                        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => !bool_compare(*a),
                        _ => true,
                    },
                    _ => true,
                }
        })
        .then_some(float)
}

/// How body values are laid out: one element each, or a vector of `lanes`
/// elements of the kernel's float dtype (bools as all-ones/zero masks of
/// the same width).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    Scalar,
    Vector(DType),
}

impl Width {
    /// The Cranelift type of a body value of `dtype`.
    pub(super) fn ty(self, dtype: DType) -> Type {
        match (self, dtype) {
            (Width::Scalar, d) => cl_type(d),
            (Width::Vector(DType::F32), DType::Bool) => types::I32X4,
            (Width::Vector(_), DType::Bool) => types::I64X2,
            (Width::Vector(DType::F32), _) => types::F32X4,
            (Width::Vector(_), _) => types::F64X2,
        }
    }
    pub(super) fn lanes(self) -> i64 {
        match self {
            Width::Scalar => 1,
            Width::Vector(DType::F32) => 4,
            Width::Vector(_) => 2,
        }
    }
    pub(super) fn vector(self) -> bool {
        self != Width::Scalar
    }
}
