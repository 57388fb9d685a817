//! Numerical stabilization: forms that overflow, underflow or cancel are
//! rewritten to equivalent stable ones. [`risks`] lists the risky patterns
//! that remain.

use rhea_graph::{BinaryOp, Graph, NodeId, Op, ReduceOp, UnaryOp};

use crate::rule::{Ctx, Rule};

/// The rules of this family.
pub const RULES: &[Rule] = &[
    Rule { name: "log_sigmoid", identity: "log(sigmoid(x)) -> -softplus(-x)", apply: log_sigmoid },
    Rule { name: "one_minus_sigmoid", identity: "1 - sigmoid(x) -> sigmoid(-x)", apply: one_minus_sigmoid },
    Rule { name: "log_softmax", identity: "log(softmax(x)) -> log_softmax(x)", apply: log_softmax },
    Rule { name: "log_clip", identity: "log(clip(p, lo, hi)) -> clip(log(p), log lo, log hi)", apply: log_clip },
    Rule {
        name: "one_minus_clip",
        identity: "1 - clip(p, lo, hi) -> clip(1 - p, 1 - hi, 1 - lo)",
        apply: one_minus_clip,
    },
    Rule { name: "log1p", identity: "log(1 + x) -> log1p(x)", apply: log1p },
    Rule { name: "expm1", identity: "exp(x) - 1 -> expm1(x)", apply: expm1 },
    Rule { name: "softplus", identity: "log1p(exp(x)) -> softplus(x)", apply: softplus },
    Rule { name: "logsumexp", identity: "log(sum(exp(x))) -> logsumexp(x)", apply: logsumexp },
    Rule { name: "softmax", identity: "exp(x) / sum(exp(x), axis, keepdims) -> softmax(x, axis)", apply: softmax },
];

// log(sigmoid(x)) -> -softplus(-x)
fn log_sigmoid(cx: &mut Ctx) -> Option<NodeId> {
    let s = cx.unary_arg(cx.id, UnaryOp::Log)?;
    let x = cx.unary_arg(s, UnaryOp::Sigmoid)?;
    let nx = cx.un(UnaryOp::Neg, x)?;
    let sp = cx.un(UnaryOp::Softplus, nx)?;
    cx.un(UnaryOp::Neg, sp)
}

/// If `id` is `1 - a` or `(-a) + 1`, gives `a`.
fn one_minus(cx: &Ctx, id: NodeId) -> Option<NodeId> {
    if let Some((one, a)) = cx.binary_args(id, BinaryOp::Sub)
        && cx.is(one, 1.0)
    {
        return Some(a);
    }
    let (n, one) = cx.binary_args(id, BinaryOp::Add)?;
    if cx.is(one, 1.0) { cx.unary_arg(n, UnaryOp::Neg) } else { None }
}

// 1 - sigmoid(x) -> sigmoid(-x)
fn one_minus_sigmoid(cx: &mut Ctx) -> Option<NodeId> {
    let s = one_minus(cx, cx.id)?;
    let x = cx.unary_arg(s, UnaryOp::Sigmoid)?;
    let nx = cx.un(UnaryOp::Neg, x)?;
    let out = cx.un(UnaryOp::Sigmoid, nx)?;
    (cx.ty(out) == cx.node().ty).then_some(out)
}

// log(softmax(x)) -> log_softmax(x)
fn log_softmax(cx: &mut Ctx) -> Option<NodeId> {
    let s = cx.unary_arg(cx.id, UnaryOp::Log)?;
    let Op::Softmax { axis } = *cx.op_of(s) else { return None };
    let x = cx.inputs_of(s)[0];
    cx.make(Op::LogSoftmax { axis }, &[x])
}

/// If `id` is `minimum(maximum(p, lo), hi)` with constant bounds, gives
/// `(p, lo, hi)`.
fn clip(cx: &Ctx, id: NodeId) -> Option<(NodeId, f64, f64)> {
    let (inner, hi) = cx.binary_args(id, BinaryOp::Minimum)?;
    let (p, lo) = cx.binary_args(inner, BinaryOp::Maximum)?;
    Some((p, cx.scalar(lo)?, cx.scalar(hi)?))
}

fn make_clip(cx: &mut Ctx, p: NodeId, lo: f64, hi: f64) -> Option<NodeId> {
    let dtype = cx.ty(p).dtype;
    let lo = cx.constant(lo, dtype);
    let hi = cx.constant(hi, dtype);
    let inner = cx.bin(BinaryOp::Maximum, p, lo)?;
    cx.bin(BinaryOp::Minimum, inner, hi)
}

/// True if `id` is a probability made by sigmoid or softmax (or an exp):
/// never negative, so clipping commutes with log.
fn nonnegative(cx: &Ctx, id: NodeId) -> bool {
    matches!(cx.op_of(id), Op::Unary { fun: UnaryOp::Sigmoid | UnaryOp::Exp } | Op::Softmax { .. })
}

// log(clip(p, lo, hi)) -> clip(log(p), log lo, log hi)  (log is monotone; p >= 0 and lo > 0)
fn log_clip(cx: &mut Ctx) -> Option<NodeId> {
    let c = cx.unary_arg(cx.id, UnaryOp::Log)?;
    let (p, lo, hi) = clip(cx, c)?;
    if lo <= 0.0 || !nonnegative(cx, p) {
        return None;
    }
    let lp = cx.un(UnaryOp::Log, p)?;
    let out = make_clip(cx, lp, lo.ln(), hi.ln())?;
    (cx.ty(out) == cx.node().ty).then_some(out)
}

// 1 - clip(p, lo, hi) -> clip(1 - p, 1 - hi, 1 - lo)  (p a sigmoid/softmax probability)
fn one_minus_clip(cx: &mut Ctx) -> Option<NodeId> {
    let c = one_minus(cx, cx.id)?;
    let (p, lo, hi) = clip(cx, c)?;
    if !nonnegative(cx, p) {
        return None;
    }
    let one = cx.constant(1.0, cx.ty(p).dtype);
    let q = cx.bin(BinaryOp::Sub, one, p)?;
    let out = make_clip(cx, q, 1.0 - hi, 1.0 - lo)?;
    (cx.ty(out) == cx.node().ty).then_some(out)
}

// log(1 + x) -> log1p(x)
fn log1p(cx: &mut Ctx) -> Option<NodeId> {
    let s = cx.unary_arg(cx.id, UnaryOp::Log)?;
    let (a, b) = cx.binary_args(s, BinaryOp::Add)?;
    let x = if cx.is(b, 1.0) {
        a
    } else if cx.is(a, 1.0) {
        b
    } else {
        return None;
    };
    let out = cx.un(UnaryOp::Log1p, x)?;
    (cx.ty(out) == cx.node().ty).then_some(out)
}

// exp(x) - 1 -> expm1(x), and exp(x) + (-1)
fn expm1(cx: &mut Ctx) -> Option<NodeId> {
    let e = match (cx.binary_args(cx.id, BinaryOp::Sub), cx.binary_args(cx.id, BinaryOp::Add)) {
        (Some((e, one)), _) if cx.is(one, 1.0) => e,
        (_, Some((e, m))) if cx.is(m, -1.0) => e,
        _ => return None,
    };
    let x = cx.unary_arg(e, UnaryOp::Exp)?;
    let out = cx.un(UnaryOp::Expm1, x)?;
    (cx.ty(out) == cx.node().ty).then_some(out)
}

// log1p(exp(x)) -> softplus(x)
fn softplus(cx: &mut Ctx) -> Option<NodeId> {
    let e = cx.unary_arg(cx.id, UnaryOp::Log1p)?;
    let x = cx.unary_arg(e, UnaryOp::Exp)?;
    cx.un(UnaryOp::Softplus, x)
}

// log(sum(exp(x), axes)) -> logsumexp(x, axes)
fn logsumexp(cx: &mut Ctx) -> Option<NodeId> {
    let s = cx.unary_arg(cx.id, UnaryOp::Log)?;
    let Op::Reduce { fun: ReduceOp::Sum, axes, keepdims } = cx.op_of(s).clone() else { return None };
    let x = cx.unary_arg(cx.inputs_of(s)[0], UnaryOp::Exp)?;
    cx.make(Op::Reduce { fun: ReduceOp::LogSumExp, axes, keepdims }, &[x])
}

// exp(x) / sum(exp(x), [axis], keepdims) -> softmax(x, axis)
fn softmax(cx: &mut Ctx) -> Option<NodeId> {
    let (e, s) = cx.binary_args(cx.id, BinaryOp::Div)?;
    let x = cx.unary_arg(e, UnaryOp::Exp)?;
    let Op::Reduce { fun: ReduceOp::Sum, axes, keepdims: true } = cx.op_of(s).clone() else { return None };
    if axes.len() != 1 || cx.inputs_of(s)[0] != e {
        return None;
    }
    let out = cx.make(Op::Softmax { axis: axes[0] }, &[x])?;
    (cx.ty(out) == cx.node().ty).then_some(out)
}

/// Risky patterns left after stabilization: (node, what the risk is).
pub fn risks(g: &Graph) -> Vec<(NodeId, String)> {
    let mut out = Vec::new();
    let op = |id: NodeId| &g.node(id).op;
    let arg = |id: NodeId| g.node(id).inputs[0];
    for id in g.topo_order() {
        match op(id) {
            Op::Unary { fun: UnaryOp::Log } => match op(arg(id)) {
                Op::Binary { fun: BinaryOp::Sub } => {
                    out.push((id, "log of a difference: cancellation can make its argument 0 or negative".into()))
                }
                Op::Unary { fun: UnaryOp::Exp } => {}
                Op::Unary { fun: UnaryOp::Sigmoid } | Op::Softmax { .. } => out.push((
                    id,
                    "log of a sigmoid or softmax output underflows to -inf (the stable forms are -softplus(-x) and log_softmax)"
                        .into(),
                )),
                Op::Binary { fun: BinaryOp::Div } => {
                    out.push((id, "log of a quotient: the quotient can underflow to 0".into()))
                }
                Op::Binary { fun: BinaryOp::Minimum | BinaryOp::Maximum } => {}
                Op::Unary { .. } | Op::Binary { .. } | Op::Reduce { .. } => {
                    out.push((id, "log of a computed value that is not known to be positive".into()))
                }
                _ => {}
            },
            Op::Reduce { fun: ReduceOp::Sum, .. } if matches!(op(arg(id)), Op::Unary { fun: UnaryOp::Exp }) => {
                out.push((id, "sum of exp: overflows for large inputs (use logsumexp or softmax)".into()))
            }
            _ => {}
        }
    }
    out
}
