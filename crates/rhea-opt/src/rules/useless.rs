//! Useless operations: identities that compute nothing.

use rhea_graph::{BinaryOp, Op, ReduceOp, UnaryOp};

use crate::rule::{Ctx, Rule};

/// The rules of this family.
pub const RULES: &[Rule] = &[
    // As in Theano: exact except that -0.0 + 0.0 is +0.0, which this keeps as -0.0.
    Rule { name: "add_zero", identity: "x + 0 -> x", apply: add_zero },
    Rule { name: "sub_zero", identity: "x - 0 -> x", apply: sub_zero },
    Rule { name: "mul_one", identity: "x * 1 -> x", apply: mul_one },
    Rule { name: "div_one", identity: "x / 1 -> x", apply: div_one },
    Rule { name: "neg_neg", identity: "-(-x) -> x", apply: neg_neg },
    Rule { name: "same_shape", identity: "reshape/broadcast_to/dimshuffle to the same shape -> x", apply: same_shape },
    Rule { name: "dimshuffle_chain", identity: "dimshuffle(dimshuffle(x)) -> dimshuffle(x)", apply: dimshuffle_chain },
    Rule { name: "reshape_chain", identity: "reshape(reshape(x)) -> reshape(x)", apply: reshape_chain },
    Rule { name: "reduce_size1", identity: "sum over size-1 axes -> reshape", apply: reduce_size1 },
    Rule { name: "cast_same", identity: "cast to the same dtype -> x", apply: cast_same },
    // Graphs are differentiated before they are optimized, so the marker has done its work.
    Rule { name: "stop_gradient", identity: "stop_gradient(x) -> x", apply: stop_gradient },
];

/// `x` if it has the node's type (a broadcast does not stretch it).
fn keep(cx: &Ctx, x: rhea_graph::NodeId) -> Option<rhea_graph::NodeId> {
    (cx.ty(x) == cx.node().ty).then_some(x)
}

fn commutative_identity(cx: &mut Ctx, fun: BinaryOp, unit: f64) -> Option<rhea_graph::NodeId> {
    let (a, b) = cx.binary_args(cx.id, fun)?;
    if cx.is(b, unit) {
        keep(cx, a)
    } else if cx.is(a, unit) {
        keep(cx, b)
    } else {
        None
    }
}

// x + 0 -> x, 0 + x -> x
fn add_zero(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    commutative_identity(cx, BinaryOp::Add, 0.0)
}

// x - 0 -> x
fn sub_zero(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Sub)?;
    if cx.is(b, 0.0) { keep(cx, a) } else { None }
}

// x * 1 -> x, 1 * x -> x
fn mul_one(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    commutative_identity(cx, BinaryOp::Mul, 1.0)
}

// x / 1 -> x
fn div_one(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Div)?;
    if cx.is(b, 1.0) { keep(cx, a) } else { None }
}

// -(-x) -> x
fn neg_neg(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    let inner = cx.unary_arg(cx.id, UnaryOp::Neg)?;
    cx.unary_arg(inner, UnaryOp::Neg)
}

// reshape/broadcast_to/dimshuffle that leaves the type unchanged -> x
fn same_shape(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    match cx.op() {
        Op::Reshape { .. } | Op::BroadcastTo { .. } => keep(cx, cx.input(0)),
        Op::DimShuffle { pattern } if pattern.iter().enumerate().all(|(i, p)| *p == Some(i)) => keep(cx, cx.input(0)),
        _ => None,
    }
}

// dimshuffle(dimshuffle(x, p), q) -> dimshuffle(x, p . q)
fn dimshuffle_chain(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    let Op::DimShuffle { pattern: outer } = cx.op().clone() else { return None };
    let inner_id = cx.input(0);
    let Op::DimShuffle { pattern: inner } = cx.op_of(inner_id).clone() else { return None };
    let composed: Vec<Option<usize>> = outer.iter().map(|p| p.and_then(|a| inner[a])).collect();
    let x = cx.inputs_of(inner_id)[0];
    cx.make(Op::DimShuffle { pattern: composed.into() }, &[x])
}

// reshape(reshape(x)) -> reshape(x)
fn reshape_chain(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    let Op::Reshape { shape } = cx.op().clone() else { return None };
    let inner = cx.input(0);
    let Op::Reshape { .. } = cx.op_of(inner) else { return None };
    let x = cx.inputs_of(inner)[0];
    cx.make(Op::Reshape { shape }, &[x])
}

// sum/mean/max/min/prod/logsumexp over size-1 axes -> reshape (the element is the result)
fn reduce_size1(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    let Op::Reduce { fun, axes, .. } = cx.op().clone() else { return None };
    let x = cx.input(0);
    let shape = cx.ty(x).shape;
    if axes.is_empty() || !axes.iter().all(|&a| shape[a] == rhea_graph::Dim::Known(1)) {
        return None;
    }
    if !matches!(
        fun,
        ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::Min | ReduceOp::Prod | ReduceOp::LogSumExp
    ) {
        return None;
    }
    let target = cx.node().ty.shape.clone();
    if shape == target { Some(x) } else { cx.make(Op::Reshape { shape: target }, &[x]) }
}

// cast(x: t) to t -> x
fn cast_same(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    match cx.op() {
        Op::Cast { to } if *to == cx.ty(cx.input(0)).dtype => Some(cx.input(0)),
        _ => None,
    }
}

// stop_gradient(x) -> x
fn stop_gradient(cx: &mut Ctx) -> Option<rhea_graph::NodeId> {
    matches!(cx.op(), Op::StopGradient).then(|| cx.input(0))
}
