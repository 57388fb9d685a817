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
    Rule { name: "mul_neg_one", identity: "x * -1 -> -x", apply: mul_neg_one },
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

/// `-c` exactly in `c`'s dtype (integers wrap, as the graph's arithmetic does).
fn negated(cx: &mut Ctx, c: NodeId) -> Option<NodeId> {
    let s = cx.scalar_exact(c)?;
    if s.dtype() == rhea_graph::DType::Bool {
        return None;
    }
    let n = rhea_kernel::scalar::unary(UnaryOp::Neg, s);
    Some(cx.constant_exact(n))
}

// x - c -> x + (-c)  (c a scalar constant; exact, also for wrapping integers)
fn sub_const(cx: &mut Ctx) -> Option<NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Sub)?;
    let neg = negated(cx, b)?;
    cx.bin(BinaryOp::Add, a, neg)
}

// x / 2^k -> x * 2^-k  (exact when both are normal numbers of the dtype)
fn div_pow2(cx: &mut Ctx) -> Option<NodeId> {
    use rhea_kernel::scalar::Scalar;
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Div)?;
    let inv = match cx.scalar_exact(b)? {
        Scalar::F32(c) if c.is_normal() && (1.0 / c).is_normal() && c.to_bits() & 0x7f_ffff == 0 => {
            Scalar::F32(1.0 / c)
        }
        Scalar::F64(c) if c.is_normal() && (1.0 / c).is_normal() && c.to_bits() & 0xf_ffff_ffff_ffff == 0 => {
            Scalar::F64(1.0 / c)
        }
        _ => return None,
    };
    let k = cx.constant_exact(inv);
    cx.bin(BinaryOp::Mul, a, k)
}

// (-x) * c -> x * (-c)  (exact; integers wrap alike)
fn neg_mul_const(cx: &mut Ctx) -> Option<NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Mul)?;
    let x = cx.unary_arg(a, UnaryOp::Neg)?;
    let neg = negated(cx, b)?;
    cx.bin(BinaryOp::Mul, x, neg)
}

// x * -1 -> -x
fn mul_neg_one(cx: &mut Ctx) -> Option<NodeId> {
    let (a, b) = cx.binary_args(cx.id, BinaryOp::Mul)?;
    if cx.scalar_exact(b).is_some_and(|s| s.to_f64() == -1.0) && cx.ty(a) == cx.node().ty {
        cx.un(UnaryOp::Neg, a)
    } else {
        None
    }
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
