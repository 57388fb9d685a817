//! Kernel IR to Cranelift IR: one function per kernel. Kernels over
//! contiguous data are one flat loop, on `f32x4`/`f64x2` vectors unrolled
//! four times where every instruction has a vector form, then a scalar
//! tail; the others are a loop nest with the scalar body innermost.
//!
//! Signature: `kernel(inputs: *const *const u8, outputs: *const *mut u8,
//! dims: *const i64, in_strides: *const i64, out_strides: *const i64,
//! start: i64, end: i64)`. Strides are in elements, one per (tensor, domain
//! axis): 0 where a tensor does not vary along an axis (broadcast inputs,
//! reduced outputs). `start..end` is the part of the outer loop to run (the
//! flat index of a flat kernel, else axis 0), so threads can share a kernel.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, MemFlagsData, Signature, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Module};
use rhea_graph::{BinaryOp, DType, UnaryOp};
use rhea_kernel::{Inst, Kernel};

use crate::poly;

mod body;
mod vector;

use body::*;
use vector::*;
pub use vector::{inner_reduce_vector_dtype, inner_vector_dtype, is_flat, vector_dtype};

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
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// Imported helper functions, by role.
pub struct Helpers {
    /// Unary float functions by op.
    pub unary: HashMap<UnaryOp, FuncId>,
    /// `pow(f64, f64)`.
    pub pow: FuncId,
}

/// Vector iterations unrolled per loop trip, to keep several in flight.
const UNROLL: i64 = 4;

/// What the body emitter needs besides the builder.
struct Ctx {
    imports: HashMap<UnaryOp, cranelift_codegen::ir::FuncRef>,
    pow: Option<cranelift_codegen::ir::FuncRef>,
}

/// Lowers `k` into `func`.
pub fn lower(module: &mut impl Module, helpers: &Helpers, k: &Kernel, func: &mut Function) -> Result<(), String> {
    let ptr = module.target_config().pointer_type();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut fctx);
    // Import only the helpers this kernel calls.
    let calls: Vec<UnaryOp> = k
        .body
        .iter()
        .filter_map(|(inst, _)| match inst {
            Inst::Unary { op, x } if helpers.unary.contains_key(op) => {
                let arg = k.body[*x as usize].1;
                (arg != DType::F32 || !poly::inline(*op)).then_some(*op)
            }
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
    let ctx = Ctx { imports, pow };
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (ins_p, outs_p, dims_p) = (params[0], params[1], params[2]);
    let (in_str_p, out_str_p, start, end) = (params[3], params[4], params[5], params[6]);
    let flags = MemFlagsData::trusted();
    let word = ptr.bytes() as i32;
    let base_in: Vec<Value> = (0..k.inputs.len()).map(|i| b.ins().load(ptr, flags, ins_p, i as i32 * word)).collect();
    let base_out: Vec<Value> =
        (0..k.outputs.len()).map(|o| b.ins().load(ptr, flags, outs_p, o as i32 * word)).collect();
    let io = Io { base_in, base_out };
    if is_flat(k) {
        flat(&mut b, &ctx, k, &io, start, end)?;
    } else {
        let rank = k.domain.rank();
        let dims: Vec<Value> = (0..rank).map(|d| b.ins().load(types::I64, flags, dims_p, d as i32 * 8)).collect();
        let stride = |b: &mut FunctionBuilder, p: Value, t: usize, d: usize| {
            b.ins().load(types::I64, flags, p, ((t * rank + d) * 8) as i32)
        };
        let in_strides: Vec<Vec<Value>> =
            (0..k.inputs.len()).map(|i| (0..rank).map(|d| stride(&mut b, in_str_p, i, d)).collect()).collect();
        let out_strides: Vec<Vec<Value>> =
            (0..k.outputs.len()).map(|o| (0..rank).map(|d| stride(&mut b, out_str_p, o, d)).collect()).collect();
        nest(&mut b, &ctx, k, &io, Nest { dims, in_strides, out_strides, start, end })?;
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(module.target_config());
    Ok(())
}

/// The kernel's tensor base addresses.
struct Io {
    base_in: Vec<Value>,
    base_out: Vec<Value>,
}

fn address(b: &mut FunctionBuilder, base: Value, off: Value, dtype: DType) -> Value {
    let bytes = b.ins().imul_imm_s(off, dtype.size_bytes() as i64);
    b.ins().iadd(base, bytes)
}

/// A counted loop `for i in from..to step step` whose body `f` is emitted
/// once; `i` is a variable the body reads.
fn counted(
    b: &mut FunctionBuilder,
    i: Variable,
    to: Value,
    step: i64,
    mut f: impl FnMut(&mut FunctionBuilder) -> Result<(), String>,
) -> Result<(), String> {
    let (header, body, exit) = (b.create_block(), b.create_block(), b.create_block());
    b.ins().jump(header, &[]);
    b.switch_to_block(header);
    let at = b.use_var(i);
    let next = b.ins().iadd_imm_s(at, step);
    // Enter while the whole step fits: at + step <= to.
    let more = b.ins().icmp(IntCC::SignedLessThanOrEqual, next, to);
    b.ins().brif(more, body, &[], exit, &[]);
    b.switch_to_block(body);
    f(b)?;
    let at = b.use_var(i);
    let next = b.ins().iadd_imm_s(at, step);
    b.def_var(i, next);
    b.ins().jump(header, &[]);
    b.switch_to_block(exit);
    Ok(())
}

/// The flat loop over `start..end`: unrolled vectors, single vectors, then
/// single elements.
fn flat(b: &mut FunctionBuilder, ctx: &Ctx, k: &Kernel, io: &Io, start: Value, end: Value) -> Result<(), String> {
    let i = b.declare_var(types::I64);
    b.def_var(i, start);
    let scalars: Vec<bool> = (0..k.inputs.len()).map(|x| scalar_input(k, x)).collect();
    let mut widths = Vec::new();
    if let Some(float) = vector_dtype(k) {
        widths.push((Width::Vector(float), UNROLL));
        widths.push((Width::Vector(float), 1));
    }
    widths.push((Width::Scalar, 1));
    for (width, unroll) in widths {
        let lanes = width.lanes();
        // Single-element inputs are loaded (and splat) once, before the loop.
        let hoisted: Vec<Option<Value>> = (0..k.inputs.len())
            .map(|x| {
                scalars[x].then(|| {
                    let v = b.ins().load(cl_type(k.inputs[x].dtype), MemFlagsData::trusted(), io.base_in[x], 0);
                    if width.vector() { b.ins().splat(width.ty(k.inputs[x].dtype), v) } else { v }
                })
            })
            .collect();
        counted(b, i, end, lanes * unroll, |b| {
            for u in 0..unroll {
                let at = b.use_var(i);
                let at = b.ins().iadd_imm_s(at, u * lanes);
                let mut load = |b: &mut FunctionBuilder, x: usize| {
                    hoisted[x].unwrap_or_else(|| {
                        let dtype = k.inputs[x].dtype;
                        let addr = address(b, io.base_in[x], at, dtype);
                        b.ins().load(width.ty(dtype), MemFlagsData::new().with_notrap(), addr, 0)
                    })
                };
                let regs = body(b, ctx, k, width, &mut load)?;
                for (o, out) in k.outputs.iter().enumerate() {
                    let addr = address(b, io.base_out[o], at, k.output_dtype(o));
                    b.ins().store(MemFlagsData::new().with_notrap(), regs[out.value as usize], addr, 0);
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// A loop nest's sizes and strides (in elements, per tensor and axis).
struct Nest {
    dims: Vec<Value>,
    in_strides: Vec<Vec<Value>>,
    out_strides: Vec<Vec<Value>>,
    /// Axis 0 runs over `start..end`.
    start: Value,
    end: Value,
}

/// The loop nest: one index per axis, the scalar body innermost, reduced
/// outputs combined into their accumulators in memory.
fn nest(b: &mut FunctionBuilder, ctx: &Ctx, k: &Kernel, io: &Io, n: Nest) -> Result<(), String> {
    let rank = n.dims.len();
    let flags = MemFlagsData::trusted();
    let idx: Vec<Variable> = (0..rank).map(|_| b.declare_var(types::I64)).collect();
    // With a vectorizable innermost axis, it gets its own loops below.
    let vector = inner_vector_dtype(k).or_else(|| inner_reduce_vector_dtype(k));
    let inner = rank.saturating_sub(1);
    // A reduced innermost axis combines into registers along each row.
    let inner_reduced = k.reduce.as_ref().is_some_and(|r| r.axes.contains(&inner)) && vector.is_some();
    // Whether the inputs read along the innermost axis really are
    // contiguous there in this call (a size-1 axis broadcasts instead).
    // Inputs that do not vary along the innermost axis are loaded once per
    // vector and splat.
    let splat: Vec<bool> = k
        .inputs
        .iter()
        .map(|i| match i.axes.get(inner).copied().flatten() {
            None => true,
            Some(a) => i.shape[a] == rhea_graph::Dim::Known(1),
        })
        .collect();
    let contiguous_now = vector.map(|_| {
        let mut all = b.ins().iconst(types::I8, 1);
        for (strides, _) in n.in_strides.iter().zip(&splat).filter(|(_, s)| !**s) {
            let unit = b.ins().icmp_imm_s(IntCC::Equal, strides[inner], 1);
            all = b.ins().band(all, unit);
        }
        all
    });
    let loops = if vector.is_some() { rank - 1 } else { rank };
    let mut exits = Vec::new();
    let mut headers = Vec::new();
    for (d, &var) in idx.iter().enumerate().take(loops) {
        let first = if d == 0 { n.start } else { b.ins().iconst(types::I64, 0) };
        let last = if d == 0 { n.end } else { n.dims[d] };
        b.def_var(var, first);
        let (header, body, exit) = (b.create_block(), b.create_block(), b.create_block());
        b.ins().jump(header, &[]);
        b.switch_to_block(header);
        let i = b.use_var(var);
        let more = b.ins().icmp(IntCC::SignedLessThan, i, last);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        headers.push(header);
        exits.push(exit);
    }
    let offset = |b: &mut FunctionBuilder, strides: &[Value]| {
        let mut off = b.ins().iconst(types::I64, 0);
        for d in 0..rank {
            let i = b.use_var(idx[d]);
            let t = b.ins().imul(i, strides[d]);
            off = b.ins().iadd(off, t);
        }
        off
    };
    // One point (scalar) or `lanes` points along the innermost axis;
    // reduced outputs combine into `accs` where given, else into memory.
    let point = |b: &mut FunctionBuilder, width: Width, accs: &[Option<Variable>]| -> Result<(), String> {
        let vector_flags = MemFlagsData::new().with_notrap();
        let mut load = |b: &mut FunctionBuilder, x: usize| {
            let off = offset(b, &n.in_strides[x]);
            let dtype = k.inputs[x].dtype;
            let addr = address(b, io.base_in[x], off, dtype);
            match width {
                Width::Scalar => b.ins().load(cl_type(dtype), flags, addr, 0),
                Width::Vector(_) if splat[x] => {
                    let v = b.ins().load(cl_type(dtype), flags, addr, 0);
                    b.ins().splat(width.ty(dtype), v)
                }
                Width::Vector(_) => b.ins().load(width.ty(dtype), vector_flags, addr, 0),
            }
        };
        let regs = body(b, ctx, k, width, &mut load)?;
        for (o, out) in k.outputs.iter().enumerate() {
            let dtype = k.output_dtype(o);
            let off = offset(b, &n.out_strides[o]);
            let addr = address(b, io.base_out[o], off, dtype);
            let (ty, mem) = match width {
                Width::Scalar => (cl_type(dtype), flags),
                Width::Vector(_) => (width.ty(dtype), vector_flags),
            };
            let v = regs[out.value as usize];
            if let (Some(r), true, Some(Some(var))) = (&k.reduce, out.reduced, accs.get(o)) {
                let acc = b.use_var(*var);
                let next = combine(b, r.combine, dtype.is_float(), acc, v);
                b.def_var(*var, next);
                continue;
            }
            let stored = match (&k.reduce, out.reduced) {
                (Some(r), true) => {
                    let acc = b.ins().load(ty, mem, addr, 0);
                    combine(b, r.combine, dtype.is_float(), acc, v)
                }
                _ => v,
            };
            b.ins().store(mem, stored, addr, 0);
        }
        Ok(())
    };
    match (vector, contiguous_now) {
        (Some(float), Some(contiguous)) => {
            // Vectors while a whole one fits (none unless contiguous), then
            // single points.
            let width = Width::Vector(float);
            let j = idx[inner];
            let zero = b.ins().iconst(types::I64, 0);
            b.def_var(j, zero);
            let vector_end = b.ins().select(contiguous, n.dims[inner], zero);
            let accs: Vec<Option<Variable>> = match (&k.reduce, inner_reduced) {
                (Some(r), true) => k
                    .outputs
                    .iter()
                    .map(|out| {
                        out.reduced.then(|| {
                            let var = b.declare_var(width.ty(float));
                            let identity = float_const(b, identity_of(r.combine), float, width);
                            b.def_var(var, identity);
                            var
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            counted(b, j, vector_end, width.lanes(), |b| point(b, width, &accs))?;
            // Each row's vector accumulators, across their lanes, into memory.
            if let Some(r) = &k.reduce {
                for (o, var) in accs.iter().enumerate() {
                    let Some(var) = var else { continue };
                    let v = b.use_var(*var);
                    let mut h = b.ins().extractlane(v, 0u8);
                    for lane in 1..width.lanes() as u8 {
                        let x = b.ins().extractlane(v, lane);
                        h = combine(b, r.combine, true, h, x);
                    }
                    let off = offset(b, &n.out_strides[o]);
                    let addr = address(b, io.base_out[o], off, float);
                    let acc = b.ins().load(cl_type(float), flags, addr, 0);
                    let stored = combine(b, r.combine, true, acc, h);
                    b.ins().store(flags, stored, addr, 0);
                }
            }
            counted(b, j, n.dims[inner], 1, |b| point(b, Width::Scalar, &[]))?;
        }
        _ => point(b, Width::Scalar, &[])?,
    }
    for d in (0..loops).rev() {
        let i = b.use_var(idx[d]);
        let next = b.ins().iadd_imm_s(i, 1);
        b.def_var(idx[d], next);
        b.ins().jump(headers[d], &[]);
        b.switch_to_block(exits[d]);
    }
    Ok(())
}
