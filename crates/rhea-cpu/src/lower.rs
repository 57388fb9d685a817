//! Kernel IR to Cranelift IR: one function per kernel, a loop nest over the
//! domain, the scalar body at the innermost level.
//!
//! Signature: `kernel(inputs: *const *const u8, outputs: *const *mut u8,
//! dims: *const i64, in_strides: *const i64, out_strides: *const i64)`.
//! Strides are in elements, one per (tensor, domain axis): 0 where a tensor
//! does not vary along an axis (broadcast inputs, reduced outputs).

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, MemFlagsData, Signature, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Module};
use rhea_graph::{BinaryOp, DType, UnaryOp};
use rhea_kernel::{Combine, Const, Inst, Kernel};

/// The Cranelift type of a dtype's elements (`bool` is a byte, 0 or 1).
pub fn cl_type(d: DType) -> Type {
    match d {
        DType::F32 => types::F32,
        DType::F64 => types::F64,
        DType::I32 => types::I32,
        DType::I64 => types::I64,
        DType::Bool => types::I8,
    }
}

/// The kernel function signature.
pub fn signature(module: &impl Module) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for _ in 0..5 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig
}

/// Imported helper functions, by role.
pub struct Helpers {
    /// Unary float functions by op.
    pub unary: HashMap<UnaryOp, FuncId>,
    /// `pow(f64, f64)`.
    pub pow: FuncId,
}

/// Lowers `k` into `func`.
pub fn lower(module: &mut impl Module, helpers: &Helpers, k: &Kernel, func: &mut Function) -> Result<(), String> {
    let ptr = module.target_config().pointer_type();
    let rank = k.domain.rank();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut fctx);
    // Import only the helpers this kernel calls.
    let calls: Vec<UnaryOp> = k
        .body
        .iter()
        .filter_map(|(inst, _)| match inst {
            Inst::Unary { op, .. } if helpers.unary.contains_key(op) => Some(*op),
            _ => None,
        })
        .collect();
    let imports: HashMap<UnaryOp, _> = helpers
        .unary
        .iter()
        .filter(|(op, _)| calls.contains(op))
        .map(|(op, id)| (*op, module.declare_func_in_func(*id, b.func)))
        .collect();
    let uses_pow = k.body.iter().any(|(inst, _)| matches!(inst, Inst::Binary { op: BinaryOp::Pow, .. }));
    let pow = uses_pow.then(|| module.declare_func_in_func(helpers.pow, b.func));
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (ins_p, outs_p, dims_p, in_str_p, out_str_p) = (params[0], params[1], params[2], params[3], params[4]);
    let flags = MemFlagsData::trusted();
    let word = ptr.bytes() as i32;
    let base_in: Vec<Value> = (0..k.inputs.len()).map(|i| b.ins().load(ptr, flags, ins_p, i as i32 * word)).collect();
    let base_out: Vec<Value> =
        (0..k.outputs.len()).map(|o| b.ins().load(ptr, flags, outs_p, o as i32 * word)).collect();
    let dims: Vec<Value> = (0..rank).map(|d| b.ins().load(types::I64, flags, dims_p, d as i32 * 8)).collect();
    let stride = |b: &mut FunctionBuilder, p: Value, t: usize, d: usize| {
        b.ins().load(types::I64, flags, p, ((t * rank + d) * 8) as i32)
    };
    let in_strides: Vec<Vec<Value>> =
        (0..k.inputs.len()).map(|i| (0..rank).map(|d| stride(&mut b, in_str_p, i, d)).collect()).collect();
    let out_strides: Vec<Vec<Value>> =
        (0..k.outputs.len()).map(|o| (0..rank).map(|d| stride(&mut b, out_str_p, o, d)).collect()).collect();
    // A kernel whose tensors are each either contiguous over the whole domain
    // or a scalar runs as one flat loop: offset i, or 0 for the scalars.
    let scalar_input = |i: usize| k.inputs[i].shape.iter().all(|d| *d == rhea_graph::Dim::Known(1));
    let contiguous_input =
        |i: usize| k.inputs[i].shape == k.domain && k.inputs[i].axes.iter().enumerate().all(|(d, a)| *a == Some(d));
    let flat = rank > 1 && k.reduce.is_none() && (0..k.inputs.len()).all(|i| scalar_input(i) || contiguous_input(i));
    let (rank, dims, in_strides, out_strides) = if flat {
        let mut n = dims[0];
        for &d in &dims[1..] {
            n = b.ins().imul(n, d);
        }
        let (zero, one) = (b.ins().iconst(types::I64, 0), b.ins().iconst(types::I64, 1));
        let ins = (0..k.inputs.len()).map(|i| vec![if scalar_input(i) { zero } else { one }]).collect();
        (1, vec![n], ins, vec![vec![one]; k.outputs.len()])
    } else {
        (rank, dims, in_strides, out_strides)
    };
    // The loop nest: one index variable and header/body/exit per axis.
    let idx: Vec<Variable> = (0..rank).map(|_| b.declare_var(types::I64)).collect();
    let mut exits = Vec::new();
    let mut headers = Vec::new();
    for d in 0..rank {
        let zero = b.ins().iconst(types::I64, 0);
        b.def_var(idx[d], zero);
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.ins().jump(header, &[]);
        b.switch_to_block(header);
        let i = b.use_var(idx[d]);
        let more = b.ins().icmp(IntCC::SignedLessThan, i, dims[d]);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        headers.push(header);
        exits.push(exit);
    }
    // Innermost: offsets, body, stores.
    let offset = |b: &mut FunctionBuilder, strides: &[Value]| {
        let mut off = b.ins().iconst(types::I64, 0);
        for d in 0..rank {
            let i = b.use_var(idx[d]);
            let t = b.ins().imul(i, strides[d]);
            off = b.ins().iadd(off, t);
        }
        off
    };
    let address = |b: &mut FunctionBuilder, base: Value, off: Value, dtype: DType| {
        let bytes = b.ins().imul_imm_s(off, dtype.size_bytes() as i64);
        b.ins().iadd(base, bytes)
    };
    let mut regs: Vec<Value> = Vec::with_capacity(k.body.len());
    for (inst, dtype) in &k.body {
        let t = cl_type(*dtype);
        let v = match inst {
            Inst::Load { input } => {
                let i = *input as usize;
                let off = offset(&mut b, &in_strides[i]);
                let addr = address(&mut b, base_in[i], off, k.inputs[i].dtype);
                b.ins().load(t, flags, addr, 0)
            }
            Inst::Const { value } => constant(&mut b, *value, *dtype),
            Inst::Unary { op, x } => {
                let xd = k.body[*x as usize].1;
                unary(&mut b, &imports, *op, regs[*x as usize], xd)?
            }
            Inst::Binary { op, a, b: y } => {
                let ad = k.body[*a as usize].1;
                binary(&mut b, pow, *op, regs[*a as usize], regs[*y as usize], ad)?
            }
            Inst::Select { cond, a, b: y } => {
                b.ins().select(regs[*cond as usize], regs[*a as usize], regs[*y as usize])
            }
            Inst::Cast { x } => cast(&mut b, regs[*x as usize], k.body[*x as usize].1, *dtype),
        };
        regs.push(v);
    }
    for (o, out) in k.outputs.iter().enumerate() {
        let dtype = k.output_dtype(o);
        let off = offset(&mut b, &out_strides[o]);
        let addr = address(&mut b, base_out[o], off, dtype);
        let v = regs[out.value as usize];
        let stored = match (&k.reduce, out.reduced) {
            (Some(r), true) => {
                let acc = b.ins().load(cl_type(dtype), flags, addr, 0);
                let float = dtype.is_float();
                match (r.combine, float) {
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
            _ => v,
        };
        b.ins().store(flags, stored, addr, 0);
    }
    // Close the loops from the innermost out.
    for d in (0..rank).rev() {
        let i = b.use_var(idx[d]);
        let next = b.ins().iadd_imm_s(i, 1);
        b.def_var(idx[d], next);
        b.ins().jump(headers[d], &[]);
        b.switch_to_block(exits[d]);
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(module.target_config());
    Ok(())
}

fn constant(b: &mut FunctionBuilder, c: Const, dtype: DType) -> Value {
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
    match dtype {
        DType::F32 => b.ins().f32const(as_f64 as f32),
        DType::F64 => b.ins().f64const(as_f64),
        DType::I32 => b.ins().iconst(types::I32, as_i64 as i32 as i64),
        DType::I64 => b.ins().iconst(types::I64, as_i64),
        DType::Bool => b.ins().iconst(types::I8, (as_i64 != 0) as i64),
    }
}

/// A float function through its f64 reference definition, rounded once.
fn call_f64(b: &mut FunctionBuilder, f: cranelift_codegen::ir::FuncRef, args: &[Value], dtype: DType) -> Value {
    let args: Vec<Value> =
        args.iter().map(|&a| if dtype == DType::F32 { b.ins().fpromote(types::F64, a) } else { a }).collect();
    let call = b.ins().call(f, &args);
    let r = b.inst_results(call)[0];
    if dtype == DType::F32 { b.ins().fdemote(types::F32, r) } else { r }
}

fn float_const(b: &mut FunctionBuilder, x: f64, dtype: DType) -> Value {
    if dtype == DType::F32 { b.ins().f32const(x as f32) } else { b.ins().f64const(x) }
}

fn unary(
    b: &mut FunctionBuilder,
    imports: &HashMap<UnaryOp, cranelift_codegen::ir::FuncRef>,
    op: UnaryOp,
    x: Value,
    dtype: DType,
) -> Result<Value, String> {
    use UnaryOp::*;
    let t = cl_type(dtype);
    let float = dtype.is_float();
    Ok(match op {
        Neg if float => b.ins().fneg(x),
        Neg => b.ins().ineg(x),
        Abs if float => b.ins().fabs(x),
        Abs => b.ins().iabs(x),
        Square if float => b.ins().fmul(x, x),
        Square => b.ins().imul(x, x),
        Relu if float => {
            let zero = float_const(b, 0.0, dtype);
            b.ins().fmax(x, zero)
        }
        Relu => {
            let zero = b.ins().iconst(t, 0);
            b.ins().smax(x, zero)
        }
        Sign if float => {
            let (one, minus, zero) =
                (float_const(b, 1.0, dtype), float_const(b, -1.0, dtype), float_const(b, 0.0, dtype));
            let pos = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
            let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
            let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
            let inner = b.ins().select(neg, minus, zero);
            let s = b.ins().select(pos, one, inner);
            b.ins().select(nan, x, s)
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
            let one = float_const(b, 1.0, dtype);
            b.ins().fdiv(one, x)
        }
        Floor => b.ins().floor(x),
        Ceil => b.ins().ceil(x),
        Round => b.ins().nearest(x),
        Not => {
            let one = b.ins().iconst(types::I8, 1);
            b.ins().bxor(x, one)
        }
        IsNan if float => b.ins().fcmp(FloatCC::Unordered, x, x),
        IsInf if float => {
            let a = b.ins().fabs(x);
            let inf = float_const(b, f64::INFINITY, dtype);
            b.ins().fcmp(FloatCC::Equal, a, inf)
        }
        IsNan | IsInf => b.ins().iconst(types::I8, 0),
        Exp | Log | Log1p | Expm1 | Tanh | Sigmoid | Softplus | Sin | Cos | Rsqrt => {
            let f = *imports.get(&op).ok_or_else(|| format!("no helper for {}", op.name()))?;
            call_f64(b, f, &[x], dtype)
        }
    })
}

fn binary(
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
fn cast(b: &mut FunctionBuilder, x: Value, from: DType, to: DType) -> Value {
    use DType::*;
    let t = cl_type(to);
    match (from, to) {
        (a, c) if a == c => x,
        (F32, F64) => b.ins().fpromote(types::F64, x),
        (F64, F32) => b.ins().fdemote(types::F32, x),
        (F32 | F64, I32 | I64) => b.ins().fcvt_to_sint_sat(t, x),
        (F32 | F64, Bool) => {
            let zero = float_const(b, 0.0, from);
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
