//! Sliding-window kernels over NCHW tensors, specialized to concrete sizes
//! like every other kernel: im2col and its adjoint col2im (a convolution is
//! those and cuBLAS products), max and average pooling, and the pooling
//! gradients.
//!
//! Each is a grid-stride loop with a thread per element written. Gradients
//! gather (an input element sums the windows that read it) instead of
//! scattering, so no atomics are needed and every sum has a fixed order.
//! The semantics are the interpreter's: padding reads as zero in a
//! convolution and is skipped by pooling, a max pool's gradient flows to
//! the first maximum of its window (a NaN counting as the maximum), and
//! sums accumulate in `f64`. A window's taps are written out one by one,
//! so window sizes are bounded ([`MAX_TAPS`]); larger ones run on the host.

use rhea_graph::DType;

use super::emit::{Emitter, Kind, R, float_literal, ty};
use super::kernel::{BLOCK, GridLoop, Ix, Lowered, address, assign, blocks, entry, load, prologue, store};

/// The most taps a kernel writes out: a window's for im2col, col2im,
/// pooling and the average pool's gradient; a window's squared for the max
/// pool's gradient (each window it may belong to is searched for its
/// maximum).
pub const MAX_TAPS: usize = 256;

/// A sliding window over the last two axes of an NCHW tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The input's `[H, W]`.
    pub input: [usize; 2],
    /// The output's `[OH, OW]`.
    pub output: [usize; 2],
    /// The window's `[KH, KW]`.
    pub kernel: [usize; 2],
    /// The step between windows.
    pub stride: [usize; 2],
    /// Positions before the input's start (and after its end).
    pub padding: [usize; 2],
    /// The step between a window's taps (1 for pooling).
    pub dilation: [usize; 2],
}

impl Window {
    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    fn input_len(&self) -> usize {
        self.input[0] * self.input[1]
    }
    fn output_len(&self) -> usize {
        self.output[0] * self.output[1]
    }
}

/// Max or average pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The window's first maximum.
    Max,
    /// The window's mean.
    Average {
        /// Divide by the whole window, or by its taps inside the input.
        count_include_pad: bool,
    },
}

/// Whether a window kernel can be written: a float dtype, few enough taps,
/// and every index space below 2^31 (so the kernels index in `u32`).
fn check(dtype: DType, taps: usize, sizes: &[usize]) -> Result<(), String> {
    if !dtype.is_float() {
        return Err(format!("window kernels on {dtype} have no PTX lowering"));
    }
    if taps > MAX_TAPS {
        return Err(format!("a window of {taps} taps is past the {MAX_TAPS} the GPU kernels write out"));
    }
    if sizes.iter().any(|&n| n >= 1 << 31) {
        return Err("a window kernel over 2^31 elements has no PTX lowering".into());
    }
    Ok(())
}

/// The row-major coordinates of `idx` in `dims`.
fn coords(e: &mut Emitter, idx: R, dims: &[usize]) -> Vec<R> {
    let mut out = vec![idx; dims.len()];
    let mut rest = idx;
    for d in (1..dims.len()).rev() {
        out[d] = e.op2("rem.u32", Kind::B32, rest, dims[d]);
        rest = e.op2("div.u32", Kind::B32, rest, dims[d]);
    }
    out[0] = rest;
    out
}

/// `a and b`, where `None` is always true.
fn both(e: &mut Emitter, a: Option<R>, b: Option<R>) -> Option<R> {
    match (a, b) {
        (Some(a), Some(b)) => Some(e.op2("and.pred", Kind::Pred, a, b)),
        (a, b) => a.or(b),
    }
}

/// A predicate `lo <= x < hi` on a signed register, skipping what the range
/// `[min, max]` of `x` already proves.
fn in_range(e: &mut Emitter, x: R, (min, max): (i64, i64), hi: i64) -> Option<R> {
    let lower = (min < 0).then(|| e.setp("ge", "s32", x, 0));
    let upper = (max >= hi).then(|| e.setp("lt", "s32", x, hi));
    both(e, lower, upper)
}

/// The input position read by tap `k` (a constant) of output position `o`
/// along `axis`, and whether it is inside the input.
fn tap(e: &mut Emitter, w: &Window, axis: usize, o: R, k: usize) -> (R, Option<R>) {
    let shift = (k * w.dilation[axis]) as i64 - w.padding[axis] as i64;
    let pos = e.reg(Kind::B32);
    e.ins(format!("mad.lo.s32 {pos}, {o}, {}, {shift}", w.stride[axis]));
    let max = (w.output[axis] as i64 - 1) * w.stride[axis] as i64 + shift;
    let valid = in_range(e, pos, (shift, max), w.input[axis] as i64);
    (pos, valid)
}

/// The output position whose tap `k` (a constant) reads input position
/// `i` along `axis`, and whether there is one.
fn window_of(e: &mut Emitter, w: &Window, axis: usize, i: R, k: usize) -> (R, Option<R>) {
    let shift = w.padding[axis] as i64 - (k * w.dilation[axis]) as i64;
    let t = e.op2("add.s32", Kind::B32, i, shift);
    let (min, max) = (shift, w.input[axis] as i64 - 1 + shift);
    let s = w.stride[axis];
    if s == 1 {
        let valid = in_range(e, t, (min, max), w.output[axis] as i64);
        return (t, valid);
    }
    let lower = (min < 0).then(|| e.setp("ge", "s32", t, 0));
    let r = e.op2("rem.s32", Kind::B32, t, s);
    let on_grid = e.setp("eq", "s32", r, 0);
    let o = e.op2("div.s32", Kind::B32, t, s);
    let upper = (max / s as i64 >= w.output[axis] as i64).then(|| e.setp("lt", "s32", o, w.output[axis]));
    let valid = both(e, lower, Some(on_grid));
    (o, both(e, valid, upper))
}

/// Element `off` of `base` where `valid`, else `default` (the address is
/// not formed from an offset outside the tensor).
fn load_where(e: &mut Emitter, valid: Option<R>, base: R, off: R, dtype: DType, default: f64) -> R {
    let ix = Ix::U32;
    let Some(p) = valid else {
        let addr = address(e, ix, base, off, dtype);
        return load(e, addr, dtype);
    };
    let safe = e.reg(Kind::B32);
    e.ins(format!("selp.b32 {safe}, {off}, 0, {p}"));
    let addr = address(e, ix, base, safe, dtype);
    let v = e.reg(Kind::of(dtype));
    e.ins(format!("mov.{} {v}, {}", ty(dtype), float_literal(default, dtype)));
    e.ins(format!("@{p} ld.global.{} {v}, [{addr}]", ty(dtype)));
    v
}

/// A 32-bit register holding `v`.
fn int32(e: &mut Emitter, v: i64) -> R {
    let r = e.reg(Kind::B32);
    e.ins(format!("mov.s32 {r}, {v}"));
    r
}

/// `a * b + c` on 32-bit registers or constants.
fn mad(e: &mut Emitter, a: impl std::fmt::Display, b: impl std::fmt::Display, c: impl std::fmt::Display) -> R {
    let r = e.reg(Kind::B32);
    e.ins(format!("mad.lo.s32 {r}, {a}, {b}, {c}"));
    r
}

fn finish(name: &str, params: String, e: Emitter, items: usize, shape: &'static str) -> Lowered {
    Lowered {
        name: name.to_string(),
        text: entry(name, &params, e.finish()),
        grid: blocks(items, BLOCK as usize),
        block: BLOCK,
        shape,
        finish: None,
        scratch: 0,
    }
}

/// im2col: `images` images of `channels` channels (`image_stride`
/// elements apart, starting at parameter 0) as columns at parameter 1,
/// laid out `[images][channels][KH][KW][OH][OW]`; padding reads as zero.
pub fn im2col(
    name: &str,
    dtype: DType,
    w: &Window,
    channels: usize,
    images: usize,
    image_stride: usize,
) -> Result<Lowered, String> {
    let dims = [images, channels, w.kernel[0], w.kernel[1], w.output[0], w.output[1]];
    let items: usize = dims.iter().product();
    check(dtype, w.taps(), &[items, images * image_stride])?;
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, 2);
    let lp = GridLoop::open(&mut e, Ix::U32, items);
    let c = coords(&mut e, lp.idx, &dims);
    let (img, ci, ki, kj, oy, ox) = (c[0], c[1], c[2], c[3], c[4], c[5]);
    let mut pos = [oy; 2];
    let mut valid = None;
    for (axis, (o, k)) in [(oy, ki), (ox, kj)].into_iter().enumerate() {
        let d = e.op2("mul.lo.s32", Kind::B32, k, w.dilation[axis]);
        let p = mad(&mut e, o, w.stride[axis], d);
        pos[axis] = e.op2("sub.s32", Kind::B32, p, w.padding[axis]);
        let max = ((w.output[axis] - 1) * w.stride[axis] + (w.kernel[axis] - 1) * w.dilation[axis]) as i64;
        let v = in_range(&mut e, pos[axis], (-(w.padding[axis] as i64), max), w.input[axis] as i64);
        valid = both(&mut e, valid, v);
    }
    let image = e.op2("mul.lo.s32", Kind::B32, img, image_stride);
    let channel = mad(&mut e, ci, w.input_len(), image);
    let pixel = mad(&mut e, pos[0], w.input[1], pos[1]);
    let off = e.op2("add.s32", Kind::B32, channel, pixel);
    let v = load_where(&mut e, valid, bases[0], off, dtype, 0.0);
    let addr = address(&mut e, Ix::U32, bases[1], lp.idx, dtype);
    store(&mut e, addr, v, dtype);
    lp.close(&mut e);
    Ok(finish(name, params, e, items, "im2col"))
}

/// col2im, the adjoint of [`im2col`]: each input element (parameter 1,
/// `image_stride` elements between images) is the sum of the columns
/// (parameter 0) that read it.
pub fn col2im(
    name: &str,
    dtype: DType,
    w: &Window,
    channels: usize,
    images: usize,
    image_stride: usize,
) -> Result<Lowered, String> {
    let dims = [images * channels, w.input[0], w.input[1]];
    let items: usize = dims.iter().product();
    check(dtype, w.taps(), &[items, images * image_stride, items / w.input_len().max(1) * w.taps() * w.output_len()])?;
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, 2);
    let lp = GridLoop::open(&mut e, Ix::U32, items);
    let c = coords(&mut e, lp.idx, &dims);
    let (plane, iy, ix) = (c[0], c[1], c[2]);
    let rows: Vec<_> = (0..w.kernel[0]).map(|k| window_of(&mut e, w, 0, iy, k)).collect();
    let cols: Vec<_> = (0..w.kernel[1]).map(|k| window_of(&mut e, w, 1, ix, k)).collect();
    let plane_off = e.op2("mul.lo.s32", Kind::B32, plane, w.taps() * w.output_len());
    let mut acc = e.float(0.0, DType::F64);
    for (ki, &(oy, vy)) in rows.iter().enumerate() {
        for (kj, &(ox, vx)) in cols.iter().enumerate() {
            let valid = both(&mut e, vy, vx);
            let pixel = mad(&mut e, oy, w.output[1], ox);
            let row = e.op2("add.s32", Kind::B32, plane_off, (ki * w.kernel[1] + kj) * w.output_len());
            let off = e.op2("add.s32", Kind::B32, row, pixel);
            let v = load_where(&mut e, valid, bases[0], off, dtype, 0.0);
            let v = e.cast(v, dtype, DType::F64);
            acc = e.op2("add.rn.f64", Kind::F64, acc, v);
        }
    }
    let out = e.cast(acc, DType::F64, dtype);
    let dst = if image_stride == channels * w.input_len() {
        lp.idx
    } else {
        let img = e.op2("div.u32", Kind::B32, plane, channels);
        let ci = e.op2("rem.u32", Kind::B32, plane, channels);
        let at = e.op2("mul.lo.s32", Kind::B32, img, image_stride);
        let pixel = mad(&mut e, iy, w.input[1], ix);
        let ch = mad(&mut e, ci, w.input_len(), pixel);
        e.op2("add.s32", Kind::B32, at, ch)
    };
    let addr = address(&mut e, Ix::U32, bases[1], dst, dtype);
    store(&mut e, addr, out, dtype);
    lp.close(&mut e);
    Ok(finish(name, params, e, items, "col2im"))
}

/// Pooling of `planes` planes (parameter 0) into parameter 1.
pub fn pool(name: &str, dtype: DType, w: &Window, planes: usize, how: Pooling) -> Result<Lowered, String> {
    let dims = [planes, w.output[0], w.output[1]];
    let items: usize = dims.iter().product();
    check(dtype, w.taps(), &[items, planes * w.input_len()])?;
    let t = ty(dtype);
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, 2);
    let lp = GridLoop::open(&mut e, Ix::U32, items);
    let c = coords(&mut e, lp.idx, &dims);
    let (plane, oy, ox) = (c[0], c[1], c[2]);
    let rows: Vec<_> = (0..w.kernel[0]).map(|k| tap(&mut e, w, 0, oy, k)).collect();
    let cols: Vec<_> = (0..w.kernel[1]).map(|k| tap(&mut e, w, 1, ox, k)).collect();
    let plane_off = e.op2("mul.lo.s32", Kind::B32, plane, w.input_len());
    let mut values = Vec::with_capacity(w.taps());
    for &(iy, vy) in &rows {
        for &(ix, vx) in &cols {
            let valid = both(&mut e, vy, vx);
            let row = mad(&mut e, iy, w.input[1], ix);
            let off = e.op2("add.s32", Kind::B32, plane_off, row);
            let default = if how == Pooling::Max { f64::NEG_INFINITY } else { 0.0 };
            values.push(load_where(&mut e, valid, bases[0], off, dtype, default));
        }
    }
    let out = match how {
        Pooling::Max => {
            // The first maximum; a NaN is the maximum. Taps outside read as
            // minus infinity, which never replaces anything.
            let mut best = e.float(f64::NEG_INFINITY, dtype);
            for v in values {
                let better = e.setp("gt", t, v, best);
                let nan = e.setp("nan", t, v, v);
                let number = e.setp("num", t, best, best);
                let nan_over_number = e.op2("and.pred", Kind::Pred, nan, number);
                let take = e.op2("or.pred", Kind::Pred, better, nan_over_number);
                best = e.select(dtype, take, v, best);
            }
            best
        }
        Pooling::Average { count_include_pad } => {
            let mut acc = e.float(0.0, DType::F64);
            for v in values {
                let v = e.cast(v, dtype, DType::F64);
                acc = e.op2("add.rn.f64", Kind::F64, acc, v);
            }
            let count = if count_include_pad {
                e.float(w.taps() as f64, DType::F64)
            } else {
                let count = |e: &mut Emitter, taps: &[(R, Option<R>)]| {
                    let mut n = int32(e, 0);
                    for &(_, valid) in taps {
                        n = match valid {
                            Some(p) => {
                                let one = e.reg(Kind::B32);
                                e.ins(format!("selp.u32 {one}, 1, 0, {p}"));
                                e.op2("add.u32", Kind::B32, n, one)
                            }
                            None => e.op2("add.u32", Kind::B32, n, 1),
                        };
                    }
                    n
                };
                let (r, c) = (count(&mut e, &rows), count(&mut e, &cols));
                let n = e.op2("mul.lo.u32", Kind::B32, r, c);
                e.op1("cvt.rn.f64.u32", Kind::F64, n)
            };
            let mean = e.op2("div.rn.f64", Kind::F64, acc, count);
            e.cast(mean, DType::F64, dtype)
        }
    };
    let addr = address(&mut e, Ix::U32, bases[1], lp.idx, dtype);
    store(&mut e, addr, out, dtype);
    lp.close(&mut e);
    let shape = if how == Pooling::Max { "max pool" } else { "average pool" };
    Ok(finish(name, params, e, items, shape))
}

/// The gradient of a pooling of `planes` planes: each input element sums,
/// over the windows that hold it, the output gradient (average: divided
/// by the window's count; max: where it is the window's first maximum).
/// Parameters: the forward input (max only), the output gradient, the
/// input gradient.
pub fn pool_grad(name: &str, dtype: DType, w: &Window, planes: usize, how: Pooling) -> Result<Lowered, String> {
    let dims = [planes, w.input[0], w.input[1]];
    let items: usize = dims.iter().product();
    let taps = if how == Pooling::Max { w.taps() * w.taps() } else { w.taps() };
    check(dtype, taps, &[items, planes * w.output_len()])?;
    let t = ty(dtype);
    let mut e = Emitter::default();
    let count = if how == Pooling::Max { 3 } else { 2 };
    let (params, bases) = prologue(&mut e, name, count);
    let (x, gy, gx) = if how == Pooling::Max { (bases[0], bases[1], bases[2]) } else { (bases[0], bases[0], bases[1]) };
    let lp = GridLoop::open(&mut e, Ix::U32, items);
    let c = coords(&mut e, lp.idx, &dims);
    let (plane, iy, ix) = (c[0], c[1], c[2]);
    // Windows in row-major order (the reference's summation order): the
    // later the tap, the earlier its window.
    let rows: Vec<_> = (0..w.kernel[0]).rev().map(|k| (k, window_of(&mut e, w, 0, iy, k))).collect();
    let cols: Vec<_> = (0..w.kernel[1]).rev().map(|k| (k, window_of(&mut e, w, 1, ix, k))).collect();
    let in_plane = e.op2("mul.lo.s32", Kind::B32, plane, w.input_len());
    let out_plane = e.op2("mul.lo.s32", Kind::B32, plane, w.output_len());
    let acc = e.reg(Kind::F64);
    let zero = e.float(0.0, DType::F64);
    assign(&mut e, acc, zero, DType::F64);
    for &(ki, (oy, vy)) in &rows {
        for &(kj, (ox, vx)) in &cols {
            let skip = e.label("skip");
            if let Some(p) = both(&mut e, vy, vx) {
                e.ins(format!("@!{p} bra {skip}"));
            }
            let pixel = mad(&mut e, oy, w.output[1], ox);
            let off = e.op2("add.s32", Kind::B32, out_plane, pixel);
            let g = load_where(&mut e, None, gy, off, dtype, 0.0);
            let g = e.cast(g, dtype, DType::F64);
            let share = match how {
                Pooling::Max => {
                    // Is this element its window's first maximum?
                    let mut best = e.float(f64::NEG_INFINITY, dtype);
                    let mut arg = int32(&mut e, -1);
                    for ai in 0..w.kernel[0] {
                        let (wy, vwy) = tap(&mut e, w, 0, oy, ai);
                        for aj in 0..w.kernel[1] {
                            let (wx, vwx) = tap(&mut e, w, 1, ox, aj);
                            let valid = both(&mut e, vwy, vwx);
                            let row = mad(&mut e, wy, w.input[1], wx);
                            let off = e.op2("add.s32", Kind::B32, in_plane, row);
                            let v = load_where(&mut e, valid, x, off, dtype, f64::NEG_INFINITY);
                            let first = e.setp("eq", "s32", arg, -1);
                            let better = e.setp("gt", t, v, best);
                            let nan = e.setp("nan", t, v, v);
                            let either = e.op2("or.pred", Kind::Pred, better, nan);
                            let number = e.setp("num", t, best, best);
                            let over = e.op2("and.pred", Kind::Pred, either, number);
                            let take = e.op2("or.pred", Kind::Pred, first, over);
                            let take = both(&mut e, Some(take), valid).expect("a predicate");
                            best = e.select(dtype, take, v, best);
                            let at = e.reg(Kind::B32);
                            e.ins(format!("selp.b32 {at}, {}, {arg}, {take}", ai * w.kernel[1] + aj));
                            arg = at;
                        }
                    }
                    let mine = e.setp("eq", "s32", arg, ki * w.kernel[1] + kj);
                    e.ins(format!("@!{mine} bra {skip}"));
                    g
                }
                Pooling::Average { count_include_pad: true } => {
                    let n = e.float(w.taps() as f64, DType::F64);
                    e.op2("div.rn.f64", Kind::F64, g, n)
                }
                Pooling::Average { count_include_pad: false } => {
                    // The window's taps inside the input, per axis.
                    let mut n = None;
                    for (axis, o) in [(0, oy), (1, ox)] {
                        let start = mad(&mut e, o, w.stride[axis], -(w.padding[axis] as i64));
                        let end = e.op2("add.s32", Kind::B32, start, w.kernel[axis]);
                        let end = e.op2("min.s32", Kind::B32, end, w.input[axis]);
                        let start = e.op2("max.s32", Kind::B32, start, 0);
                        let len = e.op2("sub.s32", Kind::B32, end, start);
                        n = Some(match n {
                            None => len,
                            Some(m) => e.op2("mul.lo.s32", Kind::B32, m, len),
                        });
                    }
                    let n = e.op1("cvt.rn.f64.s32", Kind::F64, n.expect("two axes"));
                    e.op2("div.rn.f64", Kind::F64, g, n)
                }
            };
            let sum = e.op2("add.rn.f64", Kind::F64, acc, share);
            assign(&mut e, acc, sum, DType::F64);
            e.place(&skip);
        }
    }
    let out = e.cast(acc, DType::F64, dtype);
    let addr = address(&mut e, Ix::U32, gx, lp.idx, dtype);
    store(&mut e, addr, out, dtype);
    lp.close(&mut e);
    let shape = if how == Pooling::Max { "max pool gradient" } else { "average pool gradient" };
    Ok(finish(name, params, e, items, shape))
}
