//! One kernel-IR kernel as one PTX entry, specialized to concrete sizes:
//! every size and stride is a constant, so `ptxas` strength-reduces the
//! index arithmetic.
//!
//! - Elementwise kernels run a grid-stride loop over the domain; when every
//!   tensor is contiguous (or a single element) and 4 bytes wide, each
//!   thread moves 16 bytes at a time (`ld.global.v4`).
//! - Reductions (`reduce.rs`) give each output a thread when few elements combine into
//!   it, else a block of 256 threads that combine with warp shuffles and
//!   shared memory. Float sums and means accumulate in `f64`.

use rhea_graph::DType;
use rhea_kernel::{Inst, Kernel, row_major};

use super::emit::{Emitter, Kind, R, ty};
use super::reduce::reduction;

/// Threads per block.
pub const BLOCK: u32 = 256;
/// The most blocks a grid-stride loop is launched with.
pub(super) const MAX_GRID: usize = 8192;
/// Reductions over more elements than this get a block per output...
pub(super) const SERIAL_LIMIT: usize = 64;
/// ...unless they keep the innermost axis and have this many outputs.
pub(super) const COALESCED_OUTPUTS: usize = 1024;
/// A block-per-output reduction with fewer outputs than this would leave
/// most of a GPU idle: each output is split into parts, a block each, and
/// a second kernel combines the parts...
pub(super) const TWO_STAGE_OUTPUTS: usize = 256;
/// ...aiming at this many blocks in all...
pub(super) const TWO_STAGE_BLOCKS: usize = 1024;
/// ...with at least this many elements in a part.
pub(super) const MIN_PART: usize = 8192;

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
pub(super) struct Axis {
    dim: usize,
    pitch: usize,
    stride: usize,
}

/// The axes `axes` of `dims` as a row-major space, with `strides` per axis.
pub(super) fn space(dims: &[usize], axes: &[usize], strides: &[usize]) -> Vec<Axis> {
    let sub: Vec<usize> = axes.iter().map(|&d| dims[d]).collect();
    let pitch = row_major(&sub);
    axes.iter().enumerate().map(|(i, &d)| Axis { dim: dims[d], pitch: pitch[i], stride: strides[d] }).collect()
}

/// `Σ coord * stride` over a space, as a register of the index width.
pub(super) fn offset(e: &mut Emitter, ix: Ix, idx: R, axes: &[Axis]) -> R {
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
pub(super) fn body(e: &mut Emitter, k: &Kernel, loaded: &[R]) -> Result<Vec<R>, String> {
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
pub(super) fn special(e: &mut Emitter, name: &str) -> R {
    let r = e.reg(Kind::B32);
    e.ins(format!("mov.u32 {r}, %{name}"));
    r
}

pub(super) fn widen(e: &mut Emitter, ix: Ix, r: R) -> R {
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

pub(super) fn elementwise(k: &Kernel, name: &str, dims: &[usize], strides: &[Vec<usize>]) -> Result<Lowered, String> {
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

/// `mov` into an existing register (loop-carried values).
pub(super) fn assign(e: &mut Emitter, dst: R, src: R, dtype: DType) {
    e.ins(format!("mov.{} {dst}, {src}", mov_ty(dtype)));
}

pub(super) fn mov_ty(d: DType) -> &'static str {
    match d {
        DType::I32 => "b32",
        DType::I64 => "b64",
        other => ty(other),
    }
}

pub(super) fn int(e: &mut Emitter, d: DType, v: i64) -> R {
    e.constant(rhea_kernel::Const::Int(v), d)
}

pub(super) fn int_reg(e: &mut Emitter, ix: Ix, v: usize) -> R {
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
