//! Canonical forms: constants to one side, subtraction and division by
//! constants as addition and multiplication, constant chains folded, and
//! scalar broadcasts left implicit where the elementwise op broadcasts.

use rhea_graph::{BinaryOp, NodeId, Op, UnaryOp};

use crate::rule::{Ctx, Rule};

/// The rules of this family.
pub const RULES: &[Rule] = &[
    Rule { name: "const_right", identity: "c op x -> x op c for commutative op", apply: const_right },
    Rule { name: "sub_const", identity: "x - c -> x + (-c)", apply: sub_const },
    Rule { name: "div_pow2", identity: "x / 2^k -> x * 2^-k (exact)", apply: div_pow2 },
    Rule { name: "neg_mul_const", identity: "(-x) * c -> x * (-c)", apply: neg_mul_const },
    Rule { name: "const_chain", identity: "(x + c1) + c2 -> x + (c1 + c2), likewise *", apply: const_chain },
    Rule {
        name: "implicit_broadcast",
        identity: "x op broadcast_to(y) -> x op y when the result is the same",
        apply: implicit_broadcast,
    },
];

fn commutative(fun: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(fun, Add | Mul | Maximum | Minimum | Eq | Ne | And | Or)
}

fn is_const(cx: &Ctx, id: NodeId) -> bool {
    matches!(cx.op_of(id), Op::Const { .. })
}

// c op x -> x op c  (commutative op, c a constant, x not)
fn const_right(cx: &mut Ctx) -> Option<NodeId> {
    let Op::Binary { fun } = *cx.op() else { return None };
    let (a, b) = (cx.input(0), cx.input(1));
    if commutative(fun) && is_const(cx, a) && !is_const(cx, b) { cx.bin(fun, b, a) } else { None }
}

// x - c -> x + (-c)  (c a scalar constant)
fn sub_const(cx: &mut Ctx) -> Option<NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Sub)?;
    let c = cx.scalar(b)?;
    if !is_const(cx, b) || cx.ty(b).shape.rank() != 0 {
        return None;
    }
    let neg = cx.constant(-c, cx.ty(b).dtype);
    cx.bin(BinaryOp::Add, a, neg)
}

// x / 2^k -> x * 2^-k  (exact in binary floating point)
fn div_pow2(cx: &mut Ctx) -> Option<NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Div)?;
    let c = cx.scalar(b)?;
    let inv = 1.0 / c;
    let exact = c != 0.0 && c.is_finite() && inv.is_finite() && c.abs().log2().fract() == 0.0;
    if !exact || !is_const(cx, b) || cx.ty(b).shape.rank() != 0 {
        return None;
    }
    let k = cx.constant(inv, cx.ty(b).dtype);
    cx.bin(BinaryOp::Mul, a, k)
}

// (-x) * c -> x * (-c)
fn neg_mul_const(cx: &mut Ctx) -> Option<NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Mul)?;
    let x = cx.unary_arg(a, UnaryOp::Neg)?;
    let c = cx.scalar(b)?;
    if !is_const(cx, b) || cx.ty(b).shape.rank() != 0 {
        return None;
    }
    let neg = cx.constant(-c, cx.ty(b).dtype);
    cx.bin(BinaryOp::Mul, x, neg)
}

// (x + c1) + c2 -> x + (c1 + c2); (x * c1) * c2 -> x * (c1 * c2)
fn const_chain(cx: &mut Ctx) -> Option<NodeId> {
    let Op::Binary { fun } = *cx.op() else { return None };
    if !matches!(fun, BinaryOp::Add | BinaryOp::Mul) {
        return None;
    }
    let (inner, c2) = (cx.input(0), cx.input(1));
    let (x, c1) = cx.binary_args(inner, fun)?;
    let (v1, v2) = (cx.scalar(c1)?, cx.scalar(c2)?);
    let scalars = [c1, c2].iter().all(|&c| is_const(cx, c) && cx.ty(c).shape.rank() == 0);
    if !scalars || cx.g.consumers(inner).len() != 1 {
        return None;
    }
    let v = if fun == BinaryOp::Add { v1 + v2 } else { v1 * v2 };
    let c = cx.constant(v, cx.ty(c2).dtype);
    cx.bin(fun, x, c)
}

// x op broadcast_to(y) -> x op y, when the op's own broadcasting gives the same result type
fn implicit_broadcast(cx: &mut Ctx) -> Option<NodeId> {
    let Op::Binary { fun } = *cx.op() else { return None };
    let (a, b) = (cx.input(0), cx.input(1));
    for (i, other) in [(a, b), (b, a)] {
        if let Op::BroadcastTo { .. } = cx.op_of(i) {
            let y = cx.inputs_of(i)[0];
            let (l, r) = if i == a { (y, other) } else { (other, y) };
            let want = cx.node().ty.clone();
            if let Some(n) = cx.bin(fun, l, r)
                && cx.ty(n) == want
            {
                return Some(n);
            }
        }
    }
    None
}
