//! One kernel-IR kernel as one PTX entry, specialized to concrete sizes:
//! every size and stride is a constant, so `ptxas` strength-reduces the
//! index arithmetic.
//!
//! - Elementwise kernels run a grid-stride loop over the domain; when every
//!   tensor is contiguous (or a single element) and 4 bytes wide, each
//!   thread moves 16 bytes at a time (`ld.global.v4`).
//! - Reductions give each output a thread when few elements combine into
//!   it, else a block of 256 threads that combine with warp shuffles and
//!   shared memory. Float sums and means accumulate in `f64`.

use rhea_graph::DType;
use rhea_kernel::{Combine, Inst, Kernel, row_major};

use super::emit::{Emitter, Kind, R, ty};

/// Threads per block.
pub const BLOCK: u32 = 256;
/// The most blocks a grid-stride loop is launched with.
const MAX_GRID: usize = 8192;
/// Reductions over more elements than this get a block per output...
const SERIAL_LIMIT: usize = 64;
/// ...unless they keep the innermost axis and have this many outputs.
const COALESCED_OUTPUTS: usize = 1024;
/// A block-per-output reduction with fewer outputs than this would leave
/// most of a GPU idle: each output is split into parts, a block each, and
/// a second kernel combines the parts...
const TWO_STAGE_OUTPUTS: usize = 256;
/// ...aiming at this many blocks in all...
const TWO_STAGE_BLOCKS: usize = 1024;
/// ...with at least this many elements in a part.
const MIN_PART: usize = 8192;

/// A lowered kernel: its PTX entry and how to launch it.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// The entry's name.
    pub name: String,
    /// The `.entry` text.
    pub text: String,
    /// Blocks to launch.
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
    /// How the kernel is organized (for dumps and tests).
    pub shape: &'static str,
    /// A second entry in `text` to launch after this one, with the same
    /// parameters (a two-stage reduction's combining stage).
    pub finish: Option<Stage>,
    /// Bytes of scratch the kernel needs, passed as one more parameter
    /// after its outputs (0: no such parameter).
    pub scratch: usize,
}

/// A further entry of a lowered kernel.
#[derive(Clone, Debug)]
pub struct Stage {
    /// The entry's name.
    pub name: String,
    /// Blocks to launch.
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
}

/// The index arithmetic's width: `u32` unless some index can pass 2^31.
#[derive(Clone, Copy)]
pub(super) struct Ix {
    pub kind: Kind,
    pub t: &'static str,
}

impl Ix {
    /// 32-bit indices.
    pub const U32: Ix = Ix { kind: Kind::B32, t: "u32" };

    pub fn for_size(n: usize) -> Ix {
        if n < (1 << 31) { Ix::U32 } else { Ix { kind: Kind::B64, t: "u64" } }
    }
}

/// One axis of a linear index space: `coord = (idx / pitch) % dim`, and
/// the tensor's stride in elements along it.
#[derive(Clone, Copy)]
struct Axis {
    dim: usize,
    pitch: usize,
    stride: usize,
}

/// The axes `axes` of `dims` as a row-major space, with `strides` per axis.
fn space(dims: &[usize], axes: &[usize], strides: &[usize]) -> Vec<Axis> {
    let sub: Vec<usize> = axes.iter().map(|&d| dims[d]).collect();
    let pitch = row_major(&sub);
    axes.iter().enumerate().map(|(i, &d)| Axis { dim: dims[d], pitch: pitch[i], stride: strides[d] }).collect()
}

/// `Σ coord * stride` over a space, as a register of the index width.
fn offset(e: &mut Emitter, ix: Ix, idx: R, axes: &[Axis]) -> R {
    let t = ix.t;
    let live: Vec<&Axis> = axes.iter().filter(|a| a.stride != 0 && a.dim > 1).collect();
    if live.iter().all(|a| a.stride == a.pitch) && live.len() == axes.iter().filter(|a| a.dim > 1).count() {
        // The tensor is laid out as the space itself.
        return idx;
    }
    let mut total: Option<R> = None;
    for (i, a) in axes.iter().enumerate() {
        if a.stride == 0 || a.dim == 1 {
            continue;
        }
        let mut c = idx;
        if a.pitch != 1 {
            c = e.op2(&format!("div.{t}"), ix.kind, c, a.pitch);
        }
        // The outermost axis needs no remainder: idx is in range.
        if i != 0 {
            c = e.op2(&format!("rem.{t}"), ix.kind, c, a.dim);
        }
        total = Some(match total {
            None if a.stride == 1 => c,
            None => e.op2(&format!("mul.lo.{t}"), ix.kind, c, a.stride),
            Some(acc) => {
                let r = e.reg(ix.kind);
                e.ins(format!("mad.lo.{t} {r}, {c}, {}, {acc}", a.stride));
                r
            }
        });
    }
    total.unwrap_or_else(|| int_reg(e, ix, 0))
}

/// The address of element `off` of a buffer at `base`.
pub(super) fn address(e: &mut Emitter, ix: Ix, base: R, off: R, dtype: DType) -> R {
    let size = dtype.size_bytes();
    let bytes = if ix.kind == Kind::B32 {
        e.op2("mul.wide.u32", Kind::B64, off, size)
    } else {
        e.op2("mul.lo.u64", Kind::B64, off, size)
    };
    e.op2("add.s64", Kind::B64, base, bytes)
}

pub(super) fn load(e: &mut Emitter, addr: R, dtype: DType) -> R {
    match dtype {
        DType::Bool => {
            let byte = e.reg(Kind::B32);
            e.ins(format!("ld.global.u8 {byte}, [{addr}]"));
            e.setp("ne", "u32", byte, 0)
        }
        d => {
            let r = e.reg(Kind::of(d));
            e.ins(format!("ld.global.{} {r}, [{addr}]", ty(d)));
            r
        }
    }
}

pub(super) fn store(e: &mut Emitter, addr: R, value: R, dtype: DType) {
    match dtype {
        DType::Bool => {
            let byte = e.reg(Kind::B32);
            e.ins(format!("selp.u32 {byte}, 1, 0, {value}"));
            e.ins(format!("st.global.u8 [{addr}], {byte}"));
        }
        d => e.ins(format!("st.global.{} [{addr}], {value}", ty(d))),
    }
}

/// The registers of the body's instructions, given each input's value.
fn body(e: &mut Emitter, k: &Kernel, loaded: &[R]) -> Result<Vec<R>, String> {
    let mut regs: Vec<R> = Vec::with_capacity(k.body.len());
    for (inst, dtype) in &k.body {
        let dtype = *dtype;
        let r = match inst {
            Inst::Load { input } => loaded[*input as usize],
            Inst::Const { value } => e.constant(*value, dtype),
            Inst::Unary { op, x } => {
                let arg = k.body[*x as usize].1;
                e.unary(*op, regs[*x as usize], arg)?
            }
            Inst::Binary { op, a, b } => {
                let arg = k.body[*a as usize].1;
                e.binary(*op, regs[*a as usize], regs[*b as usize], arg)?
            }
            Inst::Select { cond, a, b } => e.select(dtype, regs[*cond as usize], regs[*a as usize], regs[*b as usize]),
            Inst::Cast { x } => {
                let from = k.body[*x as usize].1;
                e.cast(regs[*x as usize], from, dtype)
            }
        };
        regs.push(r);
    }
    Ok(regs)
}

/// The parameters and base pointers of a kernel: inputs, then outputs.
pub(super) fn prologue(e: &mut Emitter, name: &str, count: usize) -> (String, Vec<R>) {
    let params: Vec<String> = (0..count).map(|i| format!("\t.param .u64 {name}_p{i}")).collect();
    let bases = (0..count)
        .map(|i| {
            let raw = e.reg(Kind::B64);
            e.ins(format!("ld.param.u64 {raw}, [{name}_p{i}]"));
            e.op1("cvta.to.global.u64", Kind::B64, raw)
        })
        .collect();
    (params.join(",\n"), bases)
}

/// `ctaid * ntid + tid` and `nctaid * ntid` (a grid-stride loop's start
/// and step), or `tid`/`ntid` and `ctaid`/`nctaid` themselves.
fn special(e: &mut Emitter, name: &str) -> R {
    let r = e.reg(Kind::B32);
    e.ins(format!("mov.u32 {r}, %{name}"));
    r
}

fn widen(e: &mut Emitter, ix: Ix, r: R) -> R {
    if ix.kind == Kind::B32 { r } else { e.op1("cvt.u64.u32", Kind::B64, r) }
}

/// A grid-stride loop over `items`: each thread starts at its global
/// index and steps by the grid's thread count.
pub(super) struct GridLoop {
    /// The item this iteration handles.
    pub idx: R,
    step: R,
    top: String,
    done: String,
    ix: Ix,
}

impl GridLoop {
    /// Opens the loop: code written next runs once per item.
    pub fn open(e: &mut Emitter, ix: Ix, items: usize) -> GridLoop {
        let (ctaid, ntid, tid, nctaid) =
            (special(e, "ctaid.x"), special(e, "ntid.x"), special(e, "tid.x"), special(e, "nctaid.x"));
        let start = e.reg(Kind::B32);
        e.ins(format!("mad.lo.u32 {start}, {ctaid}, {ntid}, {tid}"));
        let step = e.op2("mul.lo.u32", Kind::B32, nctaid, ntid);
        let (idx, step) = (widen(e, ix, start), widen(e, ix, step));
        let (top, done) = (e.label("loop"), e.label("done"));
        e.place(&top);
        let out_of_range = e.setp("ge", ix.t, idx, items);
        e.ins(format!("@{out_of_range} bra {done}"));
        GridLoop { idx, step, top, done, ix }
    }

    /// Closes the loop and returns from the kernel.
    pub fn close(self, e: &mut Emitter) {
        let (idx, step) = (self.idx, self.step);
        e.ins(format!("add.{} {idx}, {idx}, {step}", self.ix.t));
        e.ins(format!("bra {}", self.top));
        e.place(&self.done);
        e.ins("ret");
    }
}

pub(super) fn blocks(items: usize, per_block: usize) -> u32 {
    items.div_ceil(per_block).clamp(1, MAX_GRID) as u32
}

/// Lowers kernel `k` at domain sizes `dims` and input shapes `shapes` to a
/// PTX entry called `name`. `Err` names what has no PTX lowering; such a
/// kernel runs on the host.
pub fn lower_kernel(k: &Kernel, name: &str, dims: &[usize], shapes: &[Vec<usize>]) -> Result<Lowered, String> {
    k.verify()?;
    let strides = k
        .inputs
        .iter()
        .zip(shapes)
        .enumerate()
        .map(|(i, (spec, shape))| spec.strides(shape, dims).map_err(|m| format!("input {i}: {m}")))
        .collect::<Result<Vec<_>, String>>()?;
    match &k.reduce {
        None => elementwise(k, name, dims, &strides),
        Some(_) => reduction(k, name, dims, &strides),
    }
}

pub(super) fn entry(name: &str, params: &str, body: String) -> String {
    format!(".visible .entry {name}(\n{params}\n)\n{{\n{body}}}\n")
}

fn elementwise(k: &Kernel, name: &str, dims: &[usize], strides: &[Vec<usize>]) -> Result<Lowered, String> {
    let n: usize = dims.iter().product();
    let all: Vec<usize> = (0..dims.len()).collect();
    let is_scalar = |s: &Vec<usize>| s.iter().zip(dims).all(|(&st, &d)| st == 0 || d == 1);
    // Size-1 axes have stride 0 in a view: only the others must match.
    let rm = row_major(dims);
    let is_pointwise = |s: &Vec<usize>| s.iter().zip(&rm).zip(dims).all(|((a, b), &d)| d == 1 || a == b);
    let four_bytes = |d: DType| matches!(d, DType::F32 | DType::I32);
    let vector = n >= 4
        && n.is_multiple_of(4)
        && k.inputs.iter().zip(strides).all(|(spec, s)| is_scalar(s) || (is_pointwise(s) && four_bytes(spec.dtype)))
        && (0..k.outputs.len()).all(|o| four_bytes(k.output_dtype(o)));
    let lanes = if vector { 4 } else { 1 };
    let items = n / lanes;
    let ix = Ix::for_size(n);
    let t = ix.t;
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, k.inputs.len() + k.outputs.len());
    // Single elements are loaded once, before the loop.
    let mut hoisted: Vec<Option<R>> = vec![None; k.inputs.len()];
    for (i, s) in strides.iter().enumerate() {
        if is_scalar(s) {
            hoisted[i] = Some(load(&mut e, bases[i], k.inputs[i].dtype));
        }
    }
    let lp = GridLoop::open(&mut e, ix, items);
    let idx = lp.idx;
    let mut per_lane: Vec<Vec<R>> = vec![Vec::new(); lanes];
    for (i, (spec, s)) in k.inputs.iter().zip(strides).enumerate() {
        if let Some(r) = hoisted[i] {
            per_lane.iter_mut().for_each(|l| l.push(r));
        } else if vector {
            // 16 bytes per item: lane 0 is element 4 * idx.
            let lane0 = e.op2(&format!("mul.lo.{t}"), ix.kind, idx, 4);
            let addr = address(&mut e, ix, bases[i], lane0, spec.dtype);
            let regs: Vec<R> = (0..4).map(|_| e.reg(Kind::of(spec.dtype))).collect();
            e.ins(format!(
                "ld.global.v4.{} {{{}, {}, {}, {}}}, [{addr}]",
                ty(spec.dtype),
                regs[0],
                regs[1],
                regs[2],
                regs[3]
            ));
            for (l, r) in per_lane.iter_mut().zip(regs) {
                l.push(r);
            }
        } else {
            let axes = space(dims, &all, s);
            let off = offset(&mut e, ix, idx, &axes);
            let addr = address(&mut e, ix, bases[i], off, spec.dtype);
            per_lane[0].push(load(&mut e, addr, spec.dtype));
        }
    }
    let mut results = Vec::with_capacity(lanes);
    for loaded in &per_lane {
        results.push(body(&mut e, k, loaded)?);
    }
    for (o, out) in k.outputs.iter().enumerate() {
        let base = bases[k.inputs.len() + o];
        let dtype = k.output_dtype(o);
        if vector {
            let lane0 = e.op2(&format!("mul.lo.{t}"), ix.kind, idx, 4);
            let addr = address(&mut e, ix, base, lane0, dtype);
            let v: Vec<R> = results.iter().map(|regs| regs[out.value as usize]).collect();
            e.ins(format!("st.global.v4.{} [{addr}], {{{}, {}, {}, {}}}", ty(dtype), v[0], v[1], v[2], v[3]));
        } else {
            let addr = address(&mut e, ix, base, idx, dtype);
            store(&mut e, addr, results[0][out.value as usize], dtype);
        }
    }
    lp.close(&mut e);
    Ok(Lowered {
        name: name.to_string(),
        text: entry(name, &params, e.finish()),
        grid: blocks(items, BLOCK as usize),
        block: BLOCK,
        shape: if vector { "elementwise, 16-byte vectors" } else { "elementwise" },
        finish: None,
        scratch: 0,
    })
}

/// How one reduced output accumulates.
#[derive(Clone, Copy)]
struct Acc {
    combine: Combine,
    /// The output's dtype.
    dtype: DType,
    /// The accumulator's dtype (`f64` for float sums and means).
    acc: DType,
}

impl Acc {
    fn new(combine: Combine, dtype: DType) -> Result<Acc, String> {
        if dtype == DType::Bool {
            return Err("reductions of bool have no PTX lowering".into());
        }
        let acc = match combine {
            Combine::Sum | Combine::Mean if dtype.is_float() => DType::F64,
            _ => dtype,
        };
        Ok(Acc { combine, dtype, acc })
    }

    fn identity(&self, e: &mut Emitter) -> R {
        let d = self.acc;
        let value = match (self.combine, d.is_float()) {
            (Combine::Sum | Combine::Mean, _) => 0.0,
            (Combine::Prod, _) => 1.0,
            (Combine::Max, true) => f64::NEG_INFINITY,
            (Combine::Min, true) => f64::INFINITY,
            (Combine::Max, false) => return int(e, d, if d == DType::I32 { i32::MIN as i64 } else { i64::MIN }),
            (Combine::Min, false) => return int(e, d, if d == DType::I32 { i32::MAX as i64 } else { i64::MAX }),
        };
        if d.is_float() { e.float(value, d) } else { int(e, d, value as i64) }
    }

    /// `acc ⊕ v` for `v` already of the accumulator's dtype.
    fn combine(&self, e: &mut Emitter, acc: R, v: R) -> R {
        let (d, t) = (self.acc, ty(self.acc));
        match self.combine {
            Combine::Sum | Combine::Mean if d.is_float() => e.op2(&format!("add.rn.{t}"), Kind::of(d), acc, v),
            Combine::Sum | Combine::Mean => e.op2(&format!("add.{t}"), Kind::of(d), acc, v),
            Combine::Prod if d.is_float() => e.op2(&format!("mul.rn.{t}"), Kind::of(d), acc, v),
            Combine::Prod => e.op2(&format!("mul.lo.{t}"), Kind::of(d), acc, v),
            Combine::Max => e.max_min(d, true, acc, v),
            Combine::Min => e.max_min(d, false, acc, v),
        }
    }

    /// The output value from the accumulator over `count` elements.
    fn finish(&self, e: &mut Emitter, acc: R, count: usize) -> R {
        let mut v = acc;
        if self.combine == Combine::Mean {
            let f = if self.acc.is_float() { v } else { e.op1(&format!("cvt.rn.f64.{}", ty(self.acc)), Kind::F64, v) };
            let n = e.float(count as f64, DType::F64);
            let q = e.op2("div.rn.f64", Kind::F64, f, n);
            return e.cast(q, DType::F64, self.dtype);
        }
        if self.acc != self.dtype {
            v = e.cast(v, self.acc, self.dtype);
        }
        v
    }
}

fn int(e: &mut Emitter, d: DType, v: i64) -> R {
    e.constant(rhea_kernel::Const::Int(v), d)
}

/// `mov` into an existing register (loop-carried values).
pub(super) fn assign(e: &mut Emitter, dst: R, src: R, dtype: DType) {
    e.ins(format!("mov.{} {dst}, {src}", mov_ty(dtype)));
}

fn mov_ty(d: DType) -> &'static str {
    match d {
        DType::I32 => "b32",
        DType::I64 => "b64",
        other => ty(other),
    }
}

/// Combines each lane's accumulators down to lane 0 of its warp.
fn warp_reduce(e: &mut Emitter, accs: &[Acc], regs: &[R]) {
    for shift in [16, 8, 4, 2, 1] {
        for (a, &r) in accs.iter().zip(regs) {
            let other = if a.acc.size_bytes() == 8 {
                let (lo, hi) = (e.reg(Kind::B32), e.reg(Kind::B32));
                e.ins(format!("mov.b64 {{{lo}, {hi}}}, {r}"));
                let (lo2, hi2) = (e.reg(Kind::B32), e.reg(Kind::B32));
                e.ins(format!("shfl.sync.down.b32 {lo2}, {lo}, {shift}, 31, -1"));
                e.ins(format!("shfl.sync.down.b32 {hi2}, {hi}, {shift}, 31, -1"));
                let x = e.reg(Kind::of(a.acc));
                e.ins(format!("mov.b64 {x}, {{{lo2}, {hi2}}}"));
                x
            } else {
                let x = e.reg(Kind::of(a.acc));
                e.ins(format!("shfl.sync.down.b32 {x}, {r}, {shift}, 31, -1"));
                x
            };
            let c = a.combine(e, r, other);
            assign(e, r, c, a.acc);
        }
    }
}

fn reduction(k: &Kernel, name: &str, dims: &[usize], strides: &[Vec<usize>]) -> Result<Lowered, String> {
    let r = k.reduce.as_ref().expect("a reduction kernel");
    let rank = dims.len();
    let kept: Vec<usize> = (0..rank).filter(|d| !r.axes.contains(d)).collect();
    let outs: usize = kept.iter().map(|&d| dims[d]).product();
    let count: usize = r.axes.iter().map(|&d| dims[d]).product();
    if count == 0 && matches!(r.combine, Combine::Max | Combine::Min) {
        return Err("reduction over an empty axis has no identity".into());
    }
    let total: usize = dims.iter().product();
    let ix = Ix::for_size(total.max(outs).max(count));
    let t = ix.t;
    let reduced: Vec<(usize, Acc)> = k
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.reduced)
        .map(|(i, _)| Ok((i, Acc::new(r.combine, k.output_dtype(i))?)))
        .collect::<Result<_, String>>()?;
    let accs: Vec<Acc> = reduced.iter().map(|(_, a)| *a).collect();
    // A thread per output reads coalesced when the innermost axis is kept
    // (a sum over the batch: neighbouring threads, neighbouring columns),
    // and there are outputs enough to fill the GPU.
    let innermost_kept = kept.last() == Some(&(rank - 1)) && rank > 0;
    let per_block = count > SERIAL_LIMIT && !(innermost_kept && outs >= COALESCED_OUTPUTS);
    // Few outputs of many elements each: several blocks per output.
    let parts = if per_block && outs < TWO_STAGE_OUTPUTS {
        TWO_STAGE_BLOCKS.div_ceil(outs.max(1)).min(count / MIN_PART).max(1)
    } else {
        1
    };
    let chunk = count.div_ceil(parts);
    let items = outs * parts;
    let params_count = k.inputs.len() + k.outputs.len() + usize::from(parts > 1);
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, params_count);
    let smem = format!("{name}_smem");
    if per_block {
        let bytes = (BLOCK as usize / 32) * accs.len().max(1) * 8;
        e.raw(format!(".shared .align 8 .b8 {smem}[{bytes}];"));
    }
    let (ctaid, ntid, tid, nctaid) =
        (special(&mut e, "ctaid.x"), special(&mut e, "ntid.x"), special(&mut e, "tid.x"), special(&mut e, "nctaid.x"));
    let (o, o_step) = if per_block {
        (widen(&mut e, ix, ctaid), widen(&mut e, ix, nctaid))
    } else {
        let start = e.reg(Kind::B32);
        e.ins(format!("mad.lo.u32 {start}, {ctaid}, {ntid}, {tid}"));
        let step = e.op2("mul.lo.u32", Kind::B32, nctaid, ntid);
        (widen(&mut e, ix, start), widen(&mut e, ix, step))
    };
    // A fresh register for o: the loop advances it in place.
    let o_reg = e.reg(ix.kind);
    e.ins(format!("mov.{t} {o_reg}, {o}"));
    let o = o_reg;
    let domain_strides = row_major(dims);
    let (top, done) = (e.label("outputs"), e.label("done"));
    e.place(&top);
    let finished = e.setp("ge", t, o, items);
    e.ins(format!("@{finished} bra {done}"));
    // Work item o_reg is part `part` of output `o`.
    let (o, part) = if parts > 1 {
        (e.op2(&format!("div.{t}"), ix.kind, o_reg, parts), Some(e.op2(&format!("rem.{t}"), ix.kind, o_reg, parts)))
    } else {
        (o_reg, None)
    };
    let kept_off: Vec<R> = strides.iter().map(|s| offset(&mut e, ix, o, &space(dims, &kept, s))).collect();
    let kept_dom = offset(&mut e, ix, o, &space(dims, &kept, &domain_strides));
    let acc_regs: Vec<R> = accs
        .iter()
        .map(|a| {
            let id = a.identity(&mut e);
            let reg = e.reg(Kind::of(a.acc));
            assign(&mut e, reg, id, a.acc);
            reg
        })
        .collect();
    let i = e.reg(ix.kind);
    let mut end = None;
    if per_block {
        let first = widen(&mut e, ix, tid);
        match part {
            Some(part) => {
                e.ins(format!("mad.lo.{t} {i}, {part}, {chunk}, {first}"));
                let stop = e.reg(ix.kind);
                e.ins(format!("mad.lo.{t} {stop}, {part}, {chunk}, {chunk}"));
                end = Some(e.op2(&format!("min.{t}"), ix.kind, stop, count));
            }
            None => e.ins(format!("mov.{t} {i}, {first}")),
        }
    } else {
        e.ins(format!("mov.{t} {i}, 0"));
    }
    let i_step = if per_block { widen(&mut e, ix, ntid) } else { int_reg(&mut e, ix, 1) };
    let (inner, inner_done) = (e.label("combine"), e.label("combined"));
    e.place(&inner);
    let end = match end {
        Some(stop) => e.setp("ge", t, i, stop),
        None => e.setp("ge", t, i, count),
    };
    e.ins(format!("@{end} bra {inner_done}"));
    let mut loaded = Vec::with_capacity(k.inputs.len());
    for (n, (spec, s)) in k.inputs.iter().zip(strides).enumerate() {
        let red = offset(&mut e, ix, i, &space(dims, &r.axes, s));
        let off = e.op2(&format!("add.{t}"), ix.kind, kept_off[n], red);
        let addr = address(&mut e, ix, bases[n], off, spec.dtype);
        loaded.push(load(&mut e, addr, spec.dtype));
    }
    let regs = body(&mut e, k, &loaded)?;
    let mut point: Option<R> = None;
    for (n, out) in k.outputs.iter().enumerate() {
        if out.reduced {
            continue;
        }
        let p = *point.get_or_insert_with(|| {
            let red = offset(&mut e, ix, i, &space(dims, &r.axes, &domain_strides));
            e.op2(&format!("add.{t}"), ix.kind, kept_dom, red)
        });
        let dtype = k.output_dtype(n);
        let addr = address(&mut e, ix, bases[k.inputs.len() + n], p, dtype);
        store(&mut e, addr, regs[out.value as usize], dtype);
    }
    for ((n, a), &acc) in reduced.iter().zip(&acc_regs) {
        let v = regs[k.outputs[*n].value as usize];
        let v = e.cast(v, a.dtype, a.acc);
        let c = a.combine(&mut e, acc, v);
        assign(&mut e, acc, c, a.acc);
    }
    e.ins(format!("add.{t} {i}, {i}, {i_step}"));
    e.ins(format!("bra {inner}"));
    e.place(&inner_done);
    let write = |e: &mut Emitter, acc_regs: &[R]| {
        for ((n, a), &acc) in reduced.iter().zip(acc_regs) {
            let v = a.finish(e, acc, count);
            let addr = address(e, ix, bases[k.inputs.len() + n], o, a.dtype);
            store(e, addr, v, a.dtype);
        }
    };
    if per_block {
        warp_reduce(&mut e, &accs, &acc_regs);
        let lane = e.op2("and.b32", Kind::B32, tid, 31);
        let warp = e.op2("shr.u32", Kind::B32, tid, 5);
        let not_lane0 = e.setp("ne", "u32", lane, 0);
        let skip = e.label("skip_share");
        e.ins(format!("@{not_lane0} bra {skip}"));
        let slots = accs.len() as u32;
        for (j, (a, &acc)) in accs.iter().zip(&acc_regs).enumerate() {
            let addr = shared_slot(&mut e, &smem, warp, slots, j);
            e.ins(format!("st.shared.{} [{addr}], {acc}", mov_ty(a.acc)));
        }
        e.place(&skip);
        e.ins("bar.sync 0");
        let not_warp0 = e.setp("ne", "u32", warp, 0);
        let after = e.label("after_block");
        e.ins(format!("@{not_warp0} bra {after}"));
        let warps = BLOCK / 32;
        let in_range = e.setp("lt", "u32", lane, warps);
        for (j, (a, &acc)) in accs.iter().zip(&acc_regs).enumerate() {
            let id = a.identity(&mut e);
            assign(&mut e, acc, id, a.acc);
            let addr = shared_slot(&mut e, &smem, lane, slots, j);
            e.ins(format!("@{in_range} ld.shared.{} {acc}, [{addr}]", mov_ty(a.acc)));
        }
        warp_reduce(&mut e, &accs, &acc_regs);
        let not_lane0 = e.setp("ne", "u32", lane, 0);
        e.ins(format!("@{not_lane0} bra {after}"));
        if parts > 1 {
            // The part's accumulators, raw, into 8-byte slots of the scratch.
            for (j, (a, &acc)) in accs.iter().zip(&acc_regs).enumerate() {
                let slot = e.op2(&format!("add.{t}"), ix.kind, o_reg, j * items);
                let addr = address(&mut e, ix, bases[params_count - 1], slot, DType::F64);
                e.ins(format!("st.global.{} [{addr}], {acc}", mov_ty(a.acc)));
            }
        } else {
            write(&mut e, &acc_regs);
        }
        e.place(&after);
        e.ins("bar.sync 0");
    } else {
        write(&mut e, &acc_regs);
    }
    e.ins(format!("add.{t} {o_reg}, {o_reg}, {o_step}"));
    e.ins(format!("bra {top}"));
    e.place(&done);
    e.ins("ret");
    let grid = if per_block { items.clamp(1, MAX_GRID) as u32 } else { blocks(outs, BLOCK as usize) };
    let mut text = entry(name, &params, e.finish());
    let (shape, finish, scratch) = if parts > 1 {
        let stage = format!("{name}_parts");
        text.push('\n');
        text.push_str(&combine_parts(&stage, params_count, k.inputs.len(), &reduced, outs, parts, count));
        let finish = Stage { name: stage, grid: blocks(outs, BLOCK as usize), block: BLOCK };
        ("reduction, several blocks per output", Some(finish), accs.len() * items * 8)
    } else if per_block {
        ("reduction, a block per output", None, 0)
    } else {
        ("reduction, a thread per output", None, 0)
    };
    Ok(Lowered { name: name.to_string(), text, grid, block: BLOCK, shape, finish, scratch })
}

/// The second stage of a two-stage reduction: a thread per output combines
/// its `parts` partial accumulators (in the last parameter, 8-byte slots,
/// accumulator by accumulator) in order and writes the output.
fn combine_parts(
    name: &str,
    params_count: usize,
    inputs: usize,
    reduced: &[(usize, Acc)],
    outs: usize,
    parts: usize,
    count: usize,
) -> String {
    let items = outs * parts;
    let ix = Ix::for_size(items * reduced.len().max(1));
    let t = ix.t;
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, params_count);
    let lp = GridLoop::open(&mut e, ix, outs);
    let o = lp.idx;
    let first = e.op2(&format!("mul.lo.{t}"), ix.kind, o, parts);
    for (j, (n, a)) in reduced.iter().enumerate() {
        let id = a.identity(&mut e);
        let acc = e.reg(Kind::of(a.acc));
        assign(&mut e, acc, id, a.acc);
        let p = e.reg(ix.kind);
        e.ins(format!("mov.{t} {p}, 0"));
        let (top, done) = (e.label("parts"), e.label("parts_done"));
        e.place(&top);
        let end = e.setp("ge", t, p, parts);
        e.ins(format!("@{end} bra {done}"));
        let slot = e.op2(&format!("add.{t}"), ix.kind, first, p);
        let slot = e.op2(&format!("add.{t}"), ix.kind, slot, j * items);
        let addr = address(&mut e, ix, bases[params_count - 1], slot, DType::F64);
        let v = e.reg(Kind::of(a.acc));
        e.ins(format!("ld.global.{} {v}, [{addr}]", mov_ty(a.acc)));
        let c = a.combine(&mut e, acc, v);
        assign(&mut e, acc, c, a.acc);
        e.ins(format!("add.{t} {p}, {p}, 1"));
        e.ins(format!("bra {top}"));
        e.place(&done);
        let v = a.finish(&mut e, acc, count);
        let addr = address(&mut e, ix, bases[inputs + n], o, a.dtype);
        store(&mut e, addr, v, a.dtype);
    }
    lp.close(&mut e);
    entry(name, &params, e.finish())
}

/// The shared-memory address of accumulator `j` of warp `warp` (8 bytes
/// each, `slots` per warp).
fn shared_slot(e: &mut Emitter, smem: &str, warp: R, slots: u32, j: usize) -> R {
    let slot = e.reg(Kind::B32);
    e.ins(format!("mad.lo.u32 {slot}, {warp}, {}, {}", slots * 8, j * 8));
    let wide = e.op1("cvt.u64.u32", Kind::B64, slot);
    let base = e.reg(Kind::B64);
    e.ins(format!("mov.u64 {base}, {smem}"));
    e.op2("add.s64", Kind::B64, base, wide)
}

fn int_reg(e: &mut Emitter, ix: Ix, v: usize) -> R {
    let r = e.reg(ix.kind);
    e.ins(format!("mov.{} {r}, {v}", ix.t));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums of an f32 tensor of shape `dims` over `axes` (as `[0]`).
    fn sum(dims: &[usize], axes: &str) -> Kernel {
        let shape = rhea_graph::Shape::known(dims);
        let text = format!(
            "kernel {shape} reduce sum axes={axes}\n  in0: f32{shape}\n  %0 = load in0 : f32\n  out0 = reduce(%0)"
        );
        Kernel::parse(&text).unwrap()
    }

    fn shape_of(k: &Kernel, dims: &[usize]) -> &'static str {
        lower_kernel(k, "k", dims, &[dims.to_vec()]).unwrap().shape
    }

    #[test]
    fn reductions_pick_their_organization_by_size_and_layout() {
        // Few elements per output: a thread each.
        assert_eq!(shape_of(&sum(&[10, 60], "[0]"), &[10, 60]), "reduction, a thread per output");
        // Many, along rows: a block each.
        assert_eq!(shape_of(&sum(&[6, 1000], "[1]"), &[6, 1000]), "reduction, a block per output");
        // Many, down columns, with many columns: a thread each reads coalesced.
        assert_eq!(shape_of(&sum(&[500, 2048], "[0]"), &[500, 2048]), "reduction, a thread per output");
        // ...but few columns would leave the GPU idle: a block each.
        assert_eq!(shape_of(&sum(&[500, 16], "[0]"), &[500, 16]), "reduction, a block per output");
        // Few outputs of many elements: several blocks each, then a
        // second stage, with scratch for the parts.
        let k = sum(&[6, 20000], "[1]");
        let l = lower_kernel(&k, "k", &[6, 20000], &[vec![6, 20000]]).unwrap();
        assert_eq!(l.shape, "reduction, several blocks per output");
        assert_eq!((l.grid, l.scratch), (12, 12 * 8));
        assert_eq!(l.finish.as_ref().map(|f| f.name.as_str()), Some("k_parts"));
        assert!(l.text.contains(".entry k_parts("));
    }

    #[test]
    fn size_one_axes_keep_the_vector_path() {
        let k = Kernel::parse(
            "kernel [1,1024]
               in0: f32[1,1024]
               %0 = load in0 : f32
               %1 = neg %0 : f32
               out0 = %1",
        )
        .unwrap();
        let l = lower_kernel(&k, "k", &[1, 1024], &[vec![1, 1024]]).unwrap();
        assert_eq!(l.shape, "elementwise, 16-byte vectors");
        assert_eq!(l.grid, 1);
    }

    #[test]
    fn float_to_integer_casts_map_nan_to_zero_where_cvt_does_not() {
        let cast = |from: DType, to: DType| {
            let k = Kernel::parse(&format!(
                "kernel [4]
                   in0: {from}[4]
                   %0 = load in0 : {from}
                   %1 = cast %0 : {to}
                   out0 = %1"
            ))
            .unwrap();
            lower_kernel(&k, "k", &[4], &[vec![4]]).unwrap().text
        };
        // cvt gives 0 for NaN only from f32 to a 32-bit integer.
        assert!(!cast(DType::F32, DType::I32).contains("setp.nan"));
        for (from, to) in [(DType::F64, DType::I32), (DType::F32, DType::I64), (DType::F64, DType::I64)] {
            let text = cast(from, to);
            assert!(text.contains("cvt.rzi") && text.contains("setp.nan"), "{from} -> {to}:\n{text}");
        }
    }
}
