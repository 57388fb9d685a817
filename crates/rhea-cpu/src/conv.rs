//! Convolution and its two gradients for NCHW tensors with OIHW weights, by
//! im2col/col2im around the GEMM of [`crate::blas`]. Images run in parallel;
//! a 1x1 stride-1 unpadded convolution multiplies the image directly.

use rayon::prelude::*;
use rhea_graph::Conv2d;

use crate::blas::{Float, Mat, multiply};

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
    let (px, sx) = (g.pixels(), c.stride[1]);
    for_each_row(g, c, |row, ci, y, iy, range, x0| {
        let out = &mut cols[row * px + y * g.ow..row * px + (y + 1) * g.ow];
        let Some(iy) = iy else {
            out.fill(T::default());
            return;
        };
        let src = &image[(ci * g.h + iy) * g.w..(ci * g.h + iy + 1) * g.w];
        out[..range.start].fill(T::default());
        out[range.end..].fill(T::default());
        if range.is_empty() {
            return;
        }
        let first = (x0 + (range.start * sx) as isize) as usize;
        if sx == 1 {
            out[range.clone()].copy_from_slice(&src[first..first + range.len()]);
        } else {
            for (k, o) in out[range].iter_mut().enumerate() {
                *o = src[first + k * sx];
            }
        }
    });
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
pub(crate) fn forward<T: Float>(g: &Geometry, c: &Conv2d, x: &[T], w: &[T], out: &mut [T]) {
    let (cg, og, taps, px) = (g.cg(), g.og(), g.taps(), g.pixels());
    assert_eq!(out.len(), g.n * g.o * px, "conv2d output size");
    if out.is_empty() {
        return;
    }
    let pointwise = g.pointwise(c);
    out.par_chunks_mut(g.o * px).enumerate().for_each(|(n, out)| {
        let mut cols = vec![T::default(); if pointwise { 0 } else { taps * px }];
        for gi in 0..g.groups {
            let image = &x[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
            if !pointwise {
                im2col(g, c, image, &mut cols);
            }
            let b = if pointwise { image } else { &cols };
            let filters = Mat { data: &w[gi * og * taps..(gi + 1) * og * taps], rows: og, cols: taps, trans: false };
            let dst = &mut out[gi * og * px..(gi + 1) * og * px];
            multiply(dst, filters, Mat { data: b, rows: taps, cols: px, trans: false }, T::of(1.0), None);
        }
    });
}

/// The gradient with respect to the input: col2im of `w^T @ gy`.
pub(crate) fn input_grad<T: Float>(g: &Geometry, c: &Conv2d, gy: &[T], w: &[T], gx: &mut [T]) {
    let (cg, og, taps, px) = (g.cg(), g.og(), g.taps(), g.pixels());
    assert_eq!(gx.len(), g.n * g.c * g.h * g.w, "conv2d input gradient size");
    gx.fill(T::default());
    if gx.is_empty() {
        return;
    }
    let pointwise = g.pointwise(c);
    gx.par_chunks_mut(g.c * g.h * g.w).enumerate().for_each(|(n, gx)| {
        let mut cols = vec![T::default(); if pointwise { 0 } else { taps * px }];
        for gi in 0..g.groups {
            let rows = Mat {
                data: &gy[(n * g.o + gi * og) * px..(n * g.o + (gi + 1) * og) * px],
                rows: og,
                cols: px,
                trans: false,
            };
            let filters_t = Mat { data: &w[gi * og * taps..(gi + 1) * og * taps], rows: taps, cols: og, trans: true };
            let image = &mut gx[gi * cg * g.h * g.w..(gi + 1) * cg * g.h * g.w];
            if pointwise {
                multiply(image, filters_t, rows, T::of(1.0), None);
            } else {
                multiply(&mut cols, filters_t, rows, T::of(1.0), None);
                col2im(g, c, &cols, image);
            }
        }
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
    let mut cols = vec![T::default(); if pointwise { 0 } else { taps * px }];
    for n in 0..g.n {
        for gi in 0..g.groups {
            let image = &x[(n * g.c + gi * cg) * g.h * g.w..(n * g.c + (gi + 1) * cg) * g.h * g.w];
            if !pointwise {
                im2col(g, c, image, &mut cols);
            }
            let b = if pointwise { image } else { &cols };
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
}
