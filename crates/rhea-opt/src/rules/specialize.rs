//! Specialization: general ops replaced by cheaper special cases, and
//! matrix products by GEMM with transposes, scaling and bias folded in.

use rhea_graph::{BinaryOp, Dim, F64, NodeId, Op, ReduceOp, UnaryOp};

use crate::rule::{Ctx, Rule};

/// The rules of this family.
pub const RULES: &[Rule] = &[
    Rule { name: "mul_self", identity: "x * x -> square(x)", apply: mul_self },
    Rule {
        name: "pow_const",
        identity: "pow(x, 2|-1|0.5) -> square(x)|reciprocal(x)|sqrt(x + 0) at x > -inf",
        apply: pow_const,
    },
    Rule { name: "dot_gemm", identity: "dot(A, B) of matrices -> gemm(1, A, B)", apply: dot_gemm },
    Rule { name: "gemm_transpose", identity: "gemm(A^T, ...) -> gemm(A, ..., trans_a)", apply: gemm_transpose },
    Rule { name: "gemm_bias", identity: "gemm(a, A, B) + C -> gemm(a, A, B, 1, C)", apply: gemm_bias },
    Rule { name: "gemm_scale", identity: "gemm(a, A, B, b, C) * s -> gemm(a s, A, B, b s, C)", apply: gemm_scale },
    Rule {
        name: "softmax_expand",
        identity: "softmax(x) -> e / sum(e) with e = exp(x - max(x)), all along the axis",
        apply: softmax_expand,
    },
    Rule {
        name: "log_softmax_expand",
        identity: "log_softmax(x) -> (x - m) - log(sum(exp(x - m))) with m = max(x), all along the axis",
        apply: log_softmax_expand,
    },
];

/// `max(x)` along `axis` (kept, to broadcast back), for a float `x` whose
/// axis is known and not empty: the shift both softmaxes start from, as
/// the interpreter's lanes do. Expanded, softmax fuses into kernels every
/// backend compiles, instead of running as a library op.
fn lane_max(cx: &mut Ctx, x: NodeId, axis: usize) -> Option<NodeId> {
    let ty = cx.ty(x);
    if !ty.dtype.is_float() || !matches!(ty.shape.dims().get(axis), Some(Dim::Known(n)) if *n > 0) {
        return None;
    }
    cx.make(Op::Reduce { fun: ReduceOp::Max, axes: Box::new([axis]), keepdims: true }, &[x])
}

/// `(x - m, e, sum(e))` with `m = max(x)` and `e = exp(x - m)` along `axis`.
fn shifted_exp_sum(cx: &mut Ctx, x: NodeId, axis: usize) -> Option<(NodeId, NodeId, NodeId)> {
    let m = lane_max(cx, x, axis)?;
    let shifted = cx.bin(BinaryOp::Sub, x, m)?;
    let e = cx.un(UnaryOp::Exp, shifted)?;
    let total = cx.make(Op::Reduce { fun: ReduceOp::Sum, axes: Box::new([axis]), keepdims: true }, &[e])?;
    Some((shifted, e, total))
}

// softmax(x) -> exp(x - max(x)) / sum(exp(x - max(x)))
fn softmax_expand(cx: &mut Ctx) -> Option<NodeId> {
    let Op::Softmax { axis } = *cx.op() else { return None };
    let (_, e, total) = shifted_exp_sum(cx, cx.input(0), axis)?;
    cx.bin(BinaryOp::Div, e, total)
}

// log_softmax(x) -> (x - max(x)) - log(sum(exp(x - max(x)))). The shift
// comes first: `x - (max + log(sum))` rounds `max + log(sum)` to the
// spacing of `max`, losing the answer for large logits ([2^24, 2^24] gave
// [0, 0] in f32, not -0.693). `x - max` is exact near the maximum, so the
// result keeps its precision at any offset. The final shift is written
// `x + (-max)`, the same value bit for bit, so that it is not merged with
// the one inside the sum: the sum's kernel and whatever reads the result
// each recompute it, and the shifted values are never stored.
fn log_softmax_expand(cx: &mut Ctx) -> Option<NodeId> {
    let Op::LogSoftmax { axis } = *cx.op() else { return None };
    let x = cx.input(0);
    let (_, _, total) = shifted_exp_sum(cx, x, axis)?;
    let m = lane_max(cx, x, axis)?;
    let neg_m = cx.un(UnaryOp::Neg, m)?;
    let shifted = cx.bin(BinaryOp::Add, x, neg_m)?;
    let log_total = cx.un(UnaryOp::Log, total)?;
    cx.bin(BinaryOp::Sub, shifted, log_total)
}

// x * x -> square(x)
fn mul_self(cx: &mut Ctx) -> Option<NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Mul)?;
    if a == b { cx.un(UnaryOp::Square, a) } else { None }
}

// pow(x, 2) -> square(x); pow(x, -1) -> reciprocal(x);
// pow(x, 0.5) -> where(x == -inf, inf, sqrt(x + 0))  (pow gives +0 at -0 and +inf at -inf)
fn pow_const(cx: &mut Ctx) -> Option<NodeId> {
    let (x, e) = cx.binary_args(cx.id, BinaryOp::Pow)?;
    let dtype = cx.ty(x).dtype;
    let out = match cx.scalar(e)? {
        2.0 => cx.un(UnaryOp::Square, x)?,
        -1.0 => cx.un(UnaryOp::Reciprocal, x)?,
        0.5 => {
            let zero = cx.constant(0.0, dtype);
            let positive_zero = cx.bin(BinaryOp::Add, x, zero)?;
            let root = cx.un(UnaryOp::Sqrt, positive_zero)?;
            let ninf = cx.constant(f64::NEG_INFINITY, dtype);
            let inf = cx.constant(f64::INFINITY, dtype);
            let at_ninf = cx.bin(BinaryOp::Eq, x, ninf)?;
            cx.make(Op::Where, &[at_ninf, inf, root])?
        }
        _ => return None,
    };
    (cx.ty(out) == cx.node().ty).then_some(out)
}

// dot(A, B) -> gemm(alpha=1, A, B, beta=0) for float matrices
fn dot_gemm(cx: &mut Ctx) -> Option<NodeId> {
    let Op::Dot = cx.op() else { return None };
    let (a, b) = (cx.input(0), cx.input(1));
    if cx.ty(a).shape.rank() != 2 || cx.ty(b).shape.rank() != 2 || !cx.ty(a).dtype.is_float() {
        return None;
    }
    cx.make(Op::Gemm { alpha: F64(1.0), beta: F64(0.0), trans_a: false, trans_b: false }, &[a, b])
}

/// If `id` transposes a matrix, the matrix.
fn transposed(cx: &Ctx, id: NodeId) -> Option<NodeId> {
    match cx.op_of(id) {
        Op::DimShuffle { pattern } if **pattern == [Some(1), Some(0)] => Some(cx.inputs_of(id)[0]),
        _ => None,
    }
}

// gemm(A^T, B) -> gemm(A, B, trans_a), likewise for B
fn gemm_transpose(cx: &mut Ctx) -> Option<NodeId> {
    let Op::Gemm { alpha, beta, trans_a, trans_b } = *cx.op() else { return None };
    let mut inputs = cx.node().inputs.to_vec();
    let (ta, tb) = (transposed(cx, inputs[0]), transposed(cx, inputs[1]));
    if ta.is_none() && tb.is_none() {
        return None;
    }
    let (mut na, mut nb) = (trans_a, trans_b);
    if let Some(a) = ta {
        inputs[0] = a;
        na = !na;
    }
    if let Some(b) = tb {
        inputs[1] = b;
        nb = !nb;
    }
    cx.make(Op::Gemm { alpha, beta, trans_a: na, trans_b: nb }, &inputs)
}

// gemm(a, A, B) + C -> gemm(a, A, B, 1, C)  (C broadcasts to the product)
fn gemm_bias(cx: &mut Ctx) -> Option<NodeId> {
    let (x, y) = cx.binary_args(cx.id, BinaryOp::Add)?;
    for (g, c) in [(x, y), (y, x)] {
        if let Op::Gemm { alpha, trans_a, trans_b, .. } = *cx.op_of(g)
            && cx.inputs_of(g).len() == 2
            && cx.g.consumers(g).len() == 1
        {
            let mut inputs = cx.inputs_of(g);
            inputs.push(c);
            let out = cx.make(Op::Gemm { alpha, beta: F64(1.0), trans_a, trans_b }, &inputs)?;
            if cx.ty(out) == cx.node().ty {
                return Some(out);
            }
        }
    }
    None
}

// gemm(a, A, B, b, C) * s -> gemm(a s, A, B, b s, C)  (s a scalar constant)
fn gemm_scale(cx: &mut Ctx) -> Option<NodeId> {
    let (g, s) = cx.binary_args(cx.id, BinaryOp::Mul)?;
    let Op::Gemm { alpha, beta, trans_a, trans_b } = *cx.op_of(g) else { return None };
    let s = cx.scalar(s)?;
    if cx.g.consumers(g).len() != 1 || cx.ty(cx.input(1)).shape.rank() != 0 {
        return None;
    }
    let inputs = cx.inputs_of(g);
    cx.make(Op::Gemm { alpha: F64(alpha.0 * s), beta: F64(beta.0 * s), trans_a, trans_b }, &inputs)
}
