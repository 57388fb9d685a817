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

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{AbiParam, Endianness, Function, InstBuilder, MemFlagsData, Signature, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Module};
use rhea_graph::{BinaryOp, DType, F64, UnaryOp};
use rhea_kernel::{Combine, Const, Inst, Kernel};

use crate::poly;

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

/// A kernel whose tensors are each either contiguous over the whole domain
/// or a single element runs as one flat loop over `0..elements`, offset `i`
/// (or 0 for the single elements); it is split across threads by ranges of
/// that index. Other kernels are a loop nest, split along axis 0 when that
/// axis is not reduced.
pub fn is_flat(k: &Kernel) -> bool {
    k.reduce.is_none() && (0..k.inputs.len()).all(|i| scalar_input(k, i) || k.inputs[i].is_pointwise(&k.domain))
}

fn scalar_input(k: &Kernel, i: usize) -> bool {
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
fn inner_vector_body(k: &Kernel) -> Option<DType> {
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
fn inner_fits_a_vector(k: &Kernel, dtype: DType) -> bool {
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

fn body_vector_dtype(k: &Kernel) -> Option<DType> {
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
enum Width {
    Scalar,
    Vector(DType),
}

impl Width {
    /// The Cranelift type of a body value of `dtype`.
    fn ty(self, dtype: DType) -> Type {
        match (self, dtype) {
            (Width::Scalar, d) => cl_type(d),
            (Width::Vector(DType::F32), DType::Bool) => types::I32X4,
            (Width::Vector(_), DType::Bool) => types::I64X2,
            (Width::Vector(DType::F32), _) => types::F32X4,
            (Width::Vector(_), _) => types::F64X2,
        }
    }
    fn lanes(self) -> i64 {
        match self {
            Width::Scalar => 1,
            Width::Vector(DType::F32) => 4,
            Width::Vector(_) => 2,
        }
    }
    fn vector(self) -> bool {
        self != Width::Scalar
    }
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

/// `acc (+) v` for a reduction's combine.
fn combine(b: &mut FunctionBuilder, how: Combine, float: bool, acc: Value, v: Value) -> Value {
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
fn identity_of(how: Combine) -> f64 {
    match how {
        Combine::Sum | Combine::Mean => 0.0,
        Combine::Prod => 1.0,
        Combine::Max => f64::NEG_INFINITY,
        Combine::Min => f64::INFINITY,
    }
}

/// Emits the kernel body at `width`, reading inputs through `load`.
fn body(
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
fn mask_as(b: &mut FunctionBuilder, mask: Value, ty: Type) -> Value {
    b.ins().bitcast(ty, MemFlagsData::new().with_endianness(Endianness::Little), mask)
}

/// Casts between a vector kernel's float dtype and its bool masks.
fn vector_cast(b: &mut FunctionBuilder, x: Value, from: DType, to: DType, width: Width) -> Value {
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

fn constant(b: &mut FunctionBuilder, c: Const, dtype: DType, width: Width) -> Value {
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
fn call_f64(b: &mut FunctionBuilder, f: cranelift_codegen::ir::FuncRef, args: &[Value], dtype: DType) -> Value {
    let args: Vec<Value> =
        args.iter().map(|&a| if dtype == DType::F32 { b.ins().fpromote(types::F64, a) } else { a }).collect();
    let call = b.ins().call(f, &args);
    let r = b.inst_results(call)[0];
    if dtype == DType::F32 { b.ins().fdemote(types::F32, r) } else { r }
}

fn float_const(b: &mut FunctionBuilder, x: f64, dtype: DType, width: Width) -> Value {
    constant(b, Const::Float(F64(x)), dtype, width)
}

/// `a` where the comparison `cond` holds, else `y` (values of `dtype`).
fn pick(b: &mut FunctionBuilder, width: Width, dtype: DType, cond: Value, a: Value, y: Value) -> Value {
    if width.vector() {
        let m = mask_as(b, cond, width.ty(dtype));
        b.ins().bitselect(m, a, y)
    } else {
        b.ins().select(cond, a, y)
    }
}

fn unary(
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
