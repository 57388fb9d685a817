//! A kernel's scalar (or vector) body in Cranelift IR: each instruction,
//! constant, cast and reduction combine.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use rhea_graph::{BinaryOp, DType, F64, UnaryOp};
use rhea_kernel::{Combine, Const, Inst, Kernel};

use super::*;
use crate::poly;

/// `acc (+) v` for a reduction's combine.
pub(super) fn combine(b: &mut FunctionBuilder, how: Combine, float: bool, acc: Value, v: Value) -> Value {
    match (how, float) {
        (Combine::Sum | Combine::Mean, true) => b.ins().fadd(acc, v),
        (Combine::Sum | Combine::Mean, false) => b.ins().iadd(acc, v),
        (Combine::Prod, true) => b.ins().fmul(acc, v),
        (Combine::Prod, false) => b.ins().imul(acc, v),
        (Combine::Max, true) => b.ins().fmax(acc, v),
        (Combine::Max, false) => b.ins().smax(acc, v),
        (Combine::Min, true) => b.ins().fmin(acc, v),
        (Combine::Min, false) => b.ins().smin(acc, v),
    }
}

/// The float a reduction starts from.
pub(super) fn identity_of(how: Combine) -> f64 {
    match how {
        Combine::Sum | Combine::Mean => 0.0,
        Combine::Prod => 1.0,
        Combine::Max => f64::NEG_INFINITY,
        Combine::Min => f64::INFINITY,
    }
}

/// Emits the kernel body at `width`, reading inputs through `load`.
pub(super) fn body(
    b: &mut FunctionBuilder,
    ctx: &Ctx,
    k: &Kernel,
    width: Width,
    load: &mut dyn FnMut(&mut FunctionBuilder, usize) -> Value,
) -> Result<Vec<Value>, String> {
    let mut regs: Vec<Value> = Vec::with_capacity(k.body.len());
    for (inst, dtype) in &k.body {
        let v = match inst {
            Inst::Load { input } => load(b, *input as usize),
            Inst::Const { value } => constant(b, *value, *dtype, width),
            Inst::Unary { op, x } => {
                let xd = k.body[*x as usize].1;
                unary(b, ctx, *op, regs[*x as usize], xd, width)?
            }
            Inst::Binary { op, a, b: y } => {
                let ad = k.body[*a as usize].1;
                binary(b, ctx.pow, *op, regs[*a as usize], regs[*y as usize], ad)?
            }
            Inst::Select { cond, a, b: y } => {
                let (c, x, y) = (regs[*cond as usize], regs[*a as usize], regs[*y as usize]);
                if width.vector() {
                    let mask = if *dtype == DType::Bool { c } else { mask_as(b, c, width.ty(*dtype)) };
                    b.ins().bitselect(mask, x, y)
                } else {
                    b.ins().select(c, x, y)
                }
            }
            Inst::Cast { x } => {
                let from = k.body[*x as usize].1;
                if width.vector() {
                    vector_cast(b, regs[*x as usize], from, *dtype, width)
                } else {
                    cast(b, regs[*x as usize], from, *dtype)
                }
            }
        };
        regs.push(v);
    }
    Ok(regs)
}

/// A comparison mask reinterpreted as lanes of `ty`.
pub(super) fn mask_as(b: &mut FunctionBuilder, mask: Value, ty: Type) -> Value {
    b.ins().bitcast(ty, MemFlagsData::new().with_endianness(Endianness::Little), mask)
}

/// Casts between a vector kernel's float dtype and its bool masks.
pub(super) fn vector_cast(b: &mut FunctionBuilder, x: Value, from: DType, to: DType, width: Width) -> Value {
    match (from, to) {
        (f, t) if f == t => x,
        (DType::Bool, t) => {
            let (one, zero) =
                (constant(b, Const::Float(F64(1.0)), t, width), constant(b, Const::Float(F64(0.0)), t, width));
            let m = mask_as(b, x, width.ty(t));
            b.ins().bitselect(m, one, zero)
        }
        (f, _) => {
            let zero = constant(b, Const::Float(F64(0.0)), f, width);
            b.ins().fcmp(FloatCC::NotEqual, x, zero)
        }
    }
}

pub(super) fn constant(b: &mut FunctionBuilder, c: Const, dtype: DType, width: Width) -> Value {
    let as_f64 = match c {
        Const::Float(x) => x.0,
        Const::Int(x) => x as f64,
        Const::Bool(x) => x as u8 as f64,
    };
    let as_i64 = match c {
        Const::Float(x) => x.0 as i64,
        Const::Int(x) => x,
        Const::Bool(x) => x as i64,
    };
    let v = match (dtype, width) {
        (DType::F32, _) => b.ins().f32const(as_f64 as f32),
        (DType::F64, _) => b.ins().f64const(as_f64),
        (DType::I32, _) => b.ins().iconst(types::I32, as_i64 as i32 as i64),
        (DType::I64, _) => b.ins().iconst(types::I64, as_i64),
        (DType::Bool, Width::Scalar) => b.ins().iconst(types::I8, (as_i64 != 0) as i64),
        // A vector bool is a mask: all ones or all zeros.
        (DType::Bool, _) => {
            let lane = width.ty(DType::Bool).lane_type();
            b.ins().iconst(lane, -((as_i64 != 0) as i64))
        }
    };
    if width.vector() { b.ins().splat(width.ty(dtype), v) } else { v }
}

/// A float function through its f64 reference definition, rounded once.
pub(super) fn call_f64(
    b: &mut FunctionBuilder,
    f: cranelift_codegen::ir::FuncRef,
    args: &[Value],
    dtype: DType,
) -> Value {
    let args: Vec<Value> =
        args.iter().map(|&a| if dtype == DType::F32 { b.ins().fpromote(types::F64, a) } else { a }).collect();
    let call = b.ins().call(f, &args);
    let r = b.inst_results(call)[0];
    if dtype == DType::F32 { b.ins().fdemote(types::F32, r) } else { r }
}

pub(super) fn float_const(b: &mut FunctionBuilder, x: f64, dtype: DType, width: Width) -> Value {
    constant(b, Const::Float(F64(x)), dtype, width)
}

/// `a` where the comparison `cond` holds, else `y` (values of `dtype`).
pub(super) fn pick(b: &mut FunctionBuilder, width: Width, dtype: DType, cond: Value, a: Value, y: Value) -> Value {
    if width.vector() {
        let m = mask_as(b, cond, width.ty(dtype));
        b.ins().bitselect(m, a, y)
    } else {
        b.ins().select(cond, a, y)
    }
}

pub(super) fn unary(
    b: &mut FunctionBuilder,
    ctx: &Ctx,
    op: UnaryOp,
    x: Value,
    dtype: DType,
    width: Width,
) -> Result<Value, String> {
    use UnaryOp::*;
    let t = width.ty(dtype);
    let float = dtype.is_float();
    Ok(match op {
        Neg if float => b.ins().fneg(x),
        Neg => b.ins().ineg(x),
        Abs if float => b.ins().fabs(x),
        Abs => b.ins().iabs(x),
        Square if float => b.ins().fmul(x, x),
        Square => b.ins().imul(x, x),
        Relu if float => {
            let zero = float_const(b, 0.0, dtype, width);
            b.ins().fmax(x, zero)
        }
        Relu => {
            let zero = b.ins().iconst(t, 0);
            b.ins().smax(x, zero)
        }
        Sign if float => {
            let (one, minus, zero) = (
                float_const(b, 1.0, dtype, width),
                float_const(b, -1.0, dtype, width),
                float_const(b, 0.0, dtype, width),
            );
            let pos = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
            let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
            let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
            let inner = pick(b, width, dtype, neg, minus, zero);
            let s = pick(b, width, dtype, pos, one, inner);
            pick(b, width, dtype, nan, x, s)
        }
        Sign => {
            let zero = b.ins().iconst(t, 0);
            let pos = b.ins().icmp(IntCC::SignedGreaterThan, x, zero);
            let neg = b.ins().icmp(IntCC::SignedLessThan, x, zero);
            let p = b.ins().uextend(t, pos);
            let n = b.ins().uextend(t, neg);
            b.ins().isub(p, n)
        }
        Sqrt => b.ins().sqrt(x),
        Reciprocal => {
            let one = float_const(b, 1.0, dtype, width);
            b.ins().fdiv(one, x)
        }
        Floor => b.ins().floor(x),
        Ceil => b.ins().ceil(x),
        Round => b.ins().nearest(x),
        Not if width.vector() => b.ins().bnot(x),
        Not => {
            let one = b.ins().iconst(types::I8, 1);
            b.ins().bxor(x, one)
        }
        IsNan if float => b.ins().fcmp(FloatCC::Unordered, x, x),
        IsInf if float => {
            let a = b.ins().fabs(x);
            let inf = float_const(b, f64::INFINITY, dtype, width);
            b.ins().fcmp(FloatCC::Equal, a, inf)
        }
        IsNan | IsInf => b.ins().iconst(types::I8, 0),
        op if dtype == DType::F32 && poly::inline(op) => poly::unary(b, width.ty(dtype), op, x),
        Exp | Log | Log1p | Expm1 | Tanh | Sigmoid | Softplus | Sin | Cos | Rsqrt => {
            let f = *ctx.imports.get(&op).ok_or_else(|| format!("no helper for {}", op.name()))?;
            call_f64(b, f, &[x], dtype)
        }
    })
}

pub(super) fn binary(
    b: &mut FunctionBuilder,
    pow: Option<cranelift_codegen::ir::FuncRef>,
    op: BinaryOp,
    x: Value,
    y: Value,
    dtype: DType,
) -> Result<Value, String> {
    use BinaryOp::*;
    let float = dtype.is_float();
    let fcc = |op| match op {
        Eq => FloatCC::Equal,
        Ne => FloatCC::NotEqual,
        Lt => FloatCC::LessThan,
        Le => FloatCC::LessThanOrEqual,
        Gt => FloatCC::GreaterThan,
        _ => FloatCC::GreaterThanOrEqual,
    };
    // bool compares as unsigned 0/1; integers as signed.
    let icc = |op| match (op, dtype == DType::Bool) {
        (Eq, _) => IntCC::Equal,
        (Ne, _) => IntCC::NotEqual,
        (Lt, false) => IntCC::SignedLessThan,
        (Le, false) => IntCC::SignedLessThanOrEqual,
        (Gt, false) => IntCC::SignedGreaterThan,
        (_, false) => IntCC::SignedGreaterThanOrEqual,
        (Lt, true) => IntCC::UnsignedLessThan,
        (Le, true) => IntCC::UnsignedLessThanOrEqual,
        (Gt, true) => IntCC::UnsignedGreaterThan,
        (_, true) => IntCC::UnsignedGreaterThanOrEqual,
    };
    Ok(match op {
        Add if float => b.ins().fadd(x, y),
        Add => b.ins().iadd(x, y),
        Sub if float => b.ins().fsub(x, y),
        Sub => b.ins().isub(x, y),
        Mul if float => b.ins().fmul(x, y),
        Mul => b.ins().imul(x, y),
        Div => b.ins().fdiv(x, y),
        Pow => call_f64(b, pow.ok_or("pow was not imported")?, &[x, y], dtype),
        Maximum if float => b.ins().fmax(x, y),
        Maximum => b.ins().smax(x, y),
        Minimum if float => b.ins().fmin(x, y),
        Minimum => b.ins().smin(x, y),
        Eq | Ne | Lt | Le | Gt | Ge if float => b.ins().fcmp(fcc(op), x, y),
        Eq | Ne | Lt | Le | Gt | Ge => b.ins().icmp(icc(op), x, y),
        And => b.ins().band(x, y),
        Or => b.ins().bor(x, y),
    })
}

/// Conversions with Rust's `as` semantics (saturating, NaN to 0, wrapping).
pub(super) fn cast(b: &mut FunctionBuilder, x: Value, from: DType, to: DType) -> Value {
    use DType::*;
    let t = cl_type(to);
    match (from, to) {
        (a, c) if a == c => x,
        (F32, F64) => b.ins().fpromote(types::F64, x),
        (F64, F32) => b.ins().fdemote(types::F32, x),
        (F32 | F64, I32 | I64) => b.ins().fcvt_to_sint_sat(t, x),
        (F32 | F64, Bool) => {
            let zero = float_const(b, 0.0, from, Width::Scalar);
            b.ins().fcmp(FloatCC::NotEqual, x, zero)
        }
        (I32 | I64, F32 | F64) => b.ins().fcvt_from_sint(t, x),
        (I32, I64) => b.ins().sextend(types::I64, x),
        (I64, I32) => b.ins().ireduce(types::I32, x),
        (I32 | I64, Bool) => b.ins().icmp_imm_s(IntCC::NotEqual, x, 0),
        (Bool, F32 | F64) => {
            let w = b.ins().uextend(types::I32, x);
            b.ins().fcvt_from_uint(t, w)
        }
        (Bool, I32 | I64) => b.ins().uextend(t, x),
        _ => x,
    }
}
