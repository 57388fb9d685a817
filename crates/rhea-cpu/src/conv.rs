//! Convolution and its two gradients for NCHW tensors with OIHW weights, by
//! im2col/col2im around the GEMM of [`crate::blas`]. Images run in parallel;
//! a 1x1 stride-1 unpadded convolution multiplies the image directly.

use rayon::prelude::*;
use rhea_graph::Conv2d;

use crate::blas::{Float, Mat, SendPtr, multiply, raw_gemm};
use crate::winograd::{self, Stable};

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Batch.
    pub n: usize,
    /// Input channels, height, width.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels, height, width.
    pub o: usize,
    pub oh: usize,
    pub ow: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Geometry {
    /// From the input, weight and output shapes (checked by the shape rule).
    pub fn new(x: &[usize], w: &[usize], out: &[usize], groups: usize) -> Geometry {
        Geometry { n: x[0], c: x[1], h: x[2], w: x[3], o: w[0], kh: w[2], kw: w[3], oh: out[2], ow: out[3], groups }
    }
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of a group's im2col matrix: `(channel, ki, kj)`.
    fn taps(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1x1 stride-1 unpadded convolution, whose columns are the image itself.
    fn pointwise(&self, c: &Conv2d) -> bool {
        self.kh == 1 && self.kw == 1 && c.stride == [1, 1] && c.padding == [0, 0]
    }
}

/// For each row `(ci, ki, kj)` of the im2col matrix and output row `y`, the
/// input row read (or `None` in the padding) and the first/last output
/// column whose tap is inside the image.
fn for_each_row(
    g: &Geometry,
    c: &Conv2d,
    mut f: impl FnMut(usize, usize, usize, Option<usize>, std::ops::Range<usize>, isize),
) {
    let at = |o: usize, k: usize, d: usize| (o * c.stride[d] + k * c.dilation[d]) as isize - c.padding[d] as isize;
    // Output columns x whose input column x*s + kj*d - p lies in [0, w).
    let columns = |kj: usize| {
        let first = (0..g.ow).find(|&x| at(x, kj, 1) >= 0).unwrap_or(g.ow);
        let end = (first..g.ow).find(|&x| at(x, kj, 1) >= g.w as isize).unwrap_or(g.ow);
        first..end
    };
    for ci in 0..g.cg() {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (ci * g.kh + ki) * g.kw + kj;
                let cols = columns(kj);
                let x0 = at(0, kj, 1);
                for y in 0..g.oh {
                    let iy = at(y, ki, 0);
                    let inside = (iy >= 0 && iy < g.h as isize).then_some(iy as usize);
                    f(row, ci, y, inside, cols.clone(), x0);
                }
            }
        }
    }
}

/// One group of one image (`[cg, h, w]`) as columns `[taps, oh * ow]`.
fn im2col<T: Float>(g: &Geometry, c: &Conv2d, image: &[T], cols: &mut [T]) {
    let px = g.pixels();
    for (row, out) in cols.chunks_mut(px).enumerate() {
        im2col_row(g, c, image, row, 0..px, out);
    }
}

/// Adds columns `[taps, oh * ow]` back onto one group of one image.
fn col2im<T: Float>(g: &Geometry, c: &Conv2d, cols: &[T], image: &mut [T]) {
    let (px, sx) = (g.pixels(), c.stride[1]);
    for_each_row(g, c, |row, ci, y, iy, range, x0| {
        let Some(iy) = iy else { return };
        if range.is_empty() {
            return;
        }
        let src = &cols[row * px + y * g.ow..row * px + (y + 1) * g.ow];
        let dst = &mut image[(ci * g.h + iy) * g.w..(ci * g.h + iy + 1) * g.w];
        let first = (x0 + (range.start * sx) as isize) as usize;
        for (k, &v) in src[range].iter().enumerate() {
            dst[first + k * sx] += v;
        }
    });
}

/// `y[n, o] = sum over taps of w[o, ...] * x[n, ...]`.
/// `stable`: the weights are unchanged since an earlier call (see
/// [`winograd::Stable`]).
pub(crate) fn forward<T: Float>(g: &Geometry, c: &Conv2d, x: &[T], w: &[T], out: &mut [T], stable: Option<&Stable>) {
    let (cg, og, taps, px) = (g.cg(), g.og(), g.taps(), g.pixels());
    assert_eq!(out.len(), g.n * g.o * px, "conv2d output size");
    if out.is_empty() {
        return;
    }
    if winograd::applies(g, c) {
        return winograd::forward(g, c, x, w, out, stable);
    }
    if g.pointwise(c) {
        out.par_chunks_mut(g.o * px).enumerate().for_each(|(n, out)| {
            for gi in 0..g.groups {
                let image = &x[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
                let filters =
                    Mat { data: &w[gi * og * taps..(gi + 1) * og * taps], rows: og, cols: taps, trans: false };
                let dst = &mut out[gi * og * px..(gi + 1) * og * px];
                multiply(dst, filters, Mat { data: image, rows: taps, cols: px, trans: false }, T::of(1.0), None);
            }
        });
        return;
    }
    if taps * px * std::mem::size_of::<T>() <= WHOLE_BYTES {
        // The whole im2col matrix of an image, built row by row in
        // parallel, then one product threaded inside the GEMM.
        with_scratch(taps * px, |cols: &mut [T]| {
            for n in 0..g.n {
                for gi in 0..g.groups {
                    let image = &x[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
                    cols.par_chunks_mut(px).enumerate().for_each(|(row, out)| im2col_row(g, c, image, row, 0..px, out));
                    let filters =
                        Mat { data: &w[gi * og * taps..(gi + 1) * og * taps], rows: og, cols: taps, trans: false };
                    let dst = &mut out[(n * g.o + gi * og) * px..(n * g.o + (gi + 1) * og) * px];
                    multiply(dst, filters, Mat { data: cols, rows: taps, cols: px, trans: false }, T::of(1.0), None);
                }
            }
        });
        return;
    }
    // Large images: blocks of output pixels, each task building its block's
    // columns and multiplying them on one thread, writing its columns of the
    // output (row stride: all the image's pixels).
    let block = (BLOCK_BYTES / std::mem::size_of::<T>() / taps).max(BLOCK_MIN).min(px) / 16 * 16;
    let block = block.max(16);
    let blocks = px.div_ceil(block);
    let dst = SendPtr(out.as_mut_ptr());
    (0..g.n * g.groups * blocks).into_par_iter().for_each(|task| {
        with_scratch(taps * block, |cols: &mut [T]| {
            let (n, gi, b) = (task / (g.groups * blocks), task / blocks % g.groups, task % blocks);
            let (p0, p1) = (b * block, ((b + 1) * block).min(px));
            let image = &x[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
            let width = p1 - p0;
            for (row, out) in cols[..taps * width].chunks_mut(width).enumerate() {
                im2col_row(g, c, image, row, p0..p1, out);
            }
            let filters = &w[gi * og * taps..(gi + 1) * og * taps];
            let dst = &dst;
            // SAFETY: rows gi*og.. of image n, columns p0..p1, are written
            // by this task alone; the operands hold the matrices described.
            unsafe {
                raw_gemm(
                    [og, width, taps],
                    (dst.0.add((n * g.o + gi * og) * px + p0), px as isize),
                    (filters.as_ptr(), taps as isize, 1),
                    (cols.as_ptr(), width as isize, 1),
                    T::of(1.0),
                    None,
                    false,
                );
            }
        })
    });
}

thread_local! {
    /// Each thread's scratch buffers (im2col matrices, Winograd's
    /// transforms), kept between calls so that a compiled call does not
    /// allocate (or fault in) them again. A use takes a buffer off the
    /// stack and puts it back, so nested uses (Winograd's blocks inside its
    /// filter transform's buffer, or a rayon task run while another waits
    /// on this thread) each get their own.
    static SCRATCH: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` elements of one of this thread's scratch buffers,
/// whose contents are left over from earlier uses: `f` must write before
/// reading.
pub(crate) fn with_scratch<T: Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut words = SCRATCH.with(|cell| cell.borrow_mut().pop()).unwrap_or_default();
    let need = (len * std::mem::size_of::<T>()).div_ceil(8);
    if words.len() < need {
        words.resize(need, 0);
    }
    // SAFETY: the words are 8-byte aligned and initialized, T is f32 or
    // f64 (alignment at most 8, every bit pattern valid), and `need` words
    // hold `len` elements.
    let slice = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut T, len) };
    let result = f(slice);
    SCRATCH.with(|cell| cell.borrow_mut().push(words));
    result
}

/// Largest im2col matrix built whole, for one product threaded inside.
const WHOLE_BYTES: usize = 32 << 20;
/// Bytes of im2col columns per block of output pixels, and the fewest
/// pixels per block (narrower products waste the GEMM's packing).
const BLOCK_BYTES: usize = 1 << 20;
const BLOCK_MIN: usize = 256;

/// Row `row` = `(ci, ki, kj)` of one group's im2col matrix, over `pixels`.
fn im2col_row<T: Float>(
    g: &Geometry,
    c: &Conv2d,
    image: &[T],
    row: usize,
    pixels: std::ops::Range<usize>,
    out: &mut [T],
) {
    let (ci, ki, kj) = (row / (g.kh * g.kw), row / g.kw % g.kh, row % g.kw);
    let (mut y, mut x) = (pixels.start / g.ow, pixels.start % g.ow);
    for o in out.iter_mut() {
        let iy = (y * c.stride[0] + ki * c.dilation[0]) as isize - c.padding[0] as isize;
        let ix = (x * c.stride[1] + kj * c.dilation[1]) as isize - c.padding[1] as isize;
        *o = if iy >= 0 && (iy as usize) < g.h && ix >= 0 && (ix as usize) < g.w {
            image[(ci * g.h + iy as usize) * g.w + ix as usize]
        } else {
            T::default()
        };
        x += 1;
        if x == g.ow {
            (x, y) = (0, y + 1);
        }
    }
}

/// The gradient with respect to the input: col2im of `w^T @ gy`.
/// `stable` as for [`forward`].
pub(crate) fn input_grad<T: Float>(g: &Geometry, c: &Conv2d, gy: &[T], w: &[T], gx: &mut [T], stable: Option<&Stable>) {
    let (cg, og, taps, px) = (g.cg(), g.og(), g.taps(), g.pixels());
    assert_eq!(gx.len(), g.n * g.c * g.h * g.w, "conv2d input gradient size");
    if winograd::applies_to_input_grad(g, c) && !gx.is_empty() {
        return winograd::input_grad(g, c, gy, w, gx, stable);
    }
    gx.fill(T::default());
    if gx.is_empty() {
        return;
    }
    let pointwise = g.pointwise(c);
    gx.par_chunks_mut(g.c * g.h * g.w).enumerate().for_each(|(n, gx)| {
        with_scratch(if pointwise { 0 } else { taps * px }, |cols: &mut [T]| {
            for gi in 0..g.groups {
                let rows = Mat {
                    data: &gy[(n * g.o + gi * og) * px..(n * g.o + (gi + 1) * og) * px],
                    rows: og,
                    cols: px,
                    trans: false,
                };
                let filters_t =
                    Mat { data: &w[gi * og * taps..(gi + 1) * og * taps], rows: taps, cols: og, trans: true };
                let image = &mut gx[gi * cg * g.h * g.w..(gi + 1) * cg * g.h * g.w];
                if pointwise {
                    multiply(image, filters_t, rows, T::of(1.0), None);
                } else {
                    multiply(cols, filters_t, rows, T::of(1.0), None);
                    col2im(g, c, cols, image);
                }
            }
        })
    });
}

/// The gradient with respect to the weights: `gy @ im2col(x)^T`, summed
/// over the batch.
pub(crate) fn weight_grad<T: Float>(g: &Geometry, c: &Conv2d, x: &[T], gy: &[T], gw: &mut [T]) {
    let (cg, og, taps, px) = (g.cg(), g.og(), g.taps(), g.pixels());
    assert_eq!(gw.len(), g.o * taps, "conv2d weight gradient size");
    gw.fill(T::default());
    if gw.is_empty() {
        return;
    }
    let pointwise = g.pointwise(c);
    with_scratch(if pointwise { 0 } else { taps * px }, |cols: &mut [T]| {
        for n in 0..g.n {
            for gi in 0..g.groups {
                let image = &x[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
                if !pointwise {
                    im2col(g, c, image, cols);
                }
                let b = if pointwise { image } else { &*cols };
                let rows = Mat {
                    data: &gy[(n * g.o + gi * og) * px..(n * g.o + (gi + 1) * og) * px],
                    rows: og,
                    cols: px,
                    trans: false,
                };
                let dst = &mut gw[gi * og * taps..(gi + 1) * og * taps];
                let first = n == 0;
                multiply(
                    dst,
                    rows,
                    Mat { data: b, rows: px, cols: taps, trans: true },
                    T::of(1.0),
                    (!first).then(|| T::of(1.0)),
                );
            }
        }
    });
}
