//! Convolution and pooling, the windowed ops: im2col for convolutions and
//! their two gradients, one window walker for every pooling op. Like
//! [`crate::ops`], these are the reference other backends are measured
//! against; they compute in `f64` and round once.

use ndarray::{Array2, ArrayD, Axis, IxDyn, Slice};
use rhea_graph::{Conv2d, Pool2d, Value};

use crate::ops::{as_f64, back};

/// One image's receptive fields as columns: row `(c, ki, kj)` of channel
/// group `gi`, column `(y, x)` of the output. Padding reads as zero.
fn im2col(
    xa: &ArrayD<f64>,
    b: usize,
    gi: usize,
    c: &Conv2d,
    kernel: [usize; 2],
    cg: usize,
    out_hw: [usize; 2],
) -> Array2<f64> {
    let (h, w) = (xa.shape()[2], xa.shape()[3]);
    let mut cols = Array2::<f64>::zeros((cg * kernel[0] * kernel[1], out_hw[0] * out_hw[1]));
    for_each_tap(c, kernel, cg, out_hw, [h, w], |row, col, ci, iy, ix| {
        cols[[row, col]] = xa[[b, gi * cg + ci, iy, ix]];
    });
    cols
}

/// Calls `f(row, col, channel, iy, ix)` for every (kernel tap, output pixel)
/// pair that reads a real input pixel, in im2col's row/column numbering.
fn for_each_tap(
    c: &Conv2d,
    kernel: [usize; 2],
    cg: usize,
    out_hw: [usize; 2],
    in_hw: [usize; 2],
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let at = |o: usize, k: usize, d: usize| (o * c.stride[d] + k * c.dilation[d]) as isize - c.padding[d] as isize;
    for ci in 0..cg {
        for ki in 0..kernel[0] {
            for kj in 0..kernel[1] {
                let row = (ci * kernel[0] + ki) * kernel[1] + kj;
                for y in 0..out_hw[0] {
                    let iy = at(y, ki, 0);
                    if iy < 0 || iy >= in_hw[0] as isize {
                        continue;
                    }
                    for x in 0..out_hw[1] {
                        let ix = at(x, kj, 1);
                        if ix >= 0 && ix < in_hw[1] as isize {
                            f(row, y * out_hw[1] + x, ci, iy as usize, ix as usize);
                        }
                    }
                }
            }
        }
    }
}

/// The filters of group `gi` as rows `[O/groups, C/groups * KH * KW]`.
fn group_filters(wa: &ArrayD<f64>, gi: usize, og: usize) -> Array2<f64> {
    let cols: usize = wa.shape()[1..].iter().product();
    wa.slice_axis(Axis(0), Slice::from(gi * og..(gi + 1) * og))
        .to_shape((og, cols))
        .expect("OIHW weights flatten to rows")
        .to_owned()
}

/// The output gradient of image `b`, group `gi`, as `[O/groups, OH * OW]`.
fn group_rows(ga: &ArrayD<f64>, b: usize, gi: usize, og: usize) -> Array2<f64> {
    let (oh, ow) = (ga.shape()[2], ga.shape()[3]);
    ga.index_axis(Axis(0), b)
        .slice_axis(Axis(0), Slice::from(gi * og..(gi + 1) * og))
        .to_shape((og, oh * ow))
        .expect("a channel block flattens to rows")
        .to_owned()
}

/// Convolution by im2col: each output pixel's receptive field becomes a
/// column, and each group's filters multiply those columns (in `f64`).
pub(crate) fn conv2d(x: &Value, w: &Value, c: &Conv2d, out_shape: &[usize]) -> Value {
    let (xa, wa) = (as_f64(x), as_f64(w));
    let (o, cg) = (wa.shape()[0], wa.shape()[1]);
    let kernel = [wa.shape()[2], wa.shape()[3]];
    let out_hw = [out_shape[2], out_shape[3]];
    let og = o / c.groups;
    let mut out = ArrayD::<f64>::zeros(IxDyn(out_shape));
    for b in 0..out_shape[0] {
        for gi in 0..c.groups {
            let res = group_filters(&wa, gi, og).dot(&im2col(&xa, b, gi, c, kernel, cg, out_hw));
            for oi in 0..og {
                for p in 0..out_hw[0] * out_hw[1] {
                    out[[b, gi * og + oi, p / out_hw[1], p % out_hw[1]]] = res[[oi, p]];
                }
            }
        }
    }
    back(out, x.dtype())
}

/// col2im of the filters' transpose times the output gradient.
pub(crate) fn conv2d_input_grad(gy: &Value, w: &Value, c: &Conv2d, out_shape: &[usize]) -> Value {
    let (ga, wa) = (as_f64(gy), as_f64(w));
    let (o, cg) = (wa.shape()[0], wa.shape()[1]);
    let kernel = [wa.shape()[2], wa.shape()[3]];
    let out_hw = [ga.shape()[2], ga.shape()[3]];
    let og = o / c.groups;
    let mut gx = ArrayD::<f64>::zeros(IxDyn(out_shape));
    for b in 0..out_shape[0] {
        for gi in 0..c.groups {
            let cols = group_filters(&wa, gi, og).t().dot(&group_rows(&ga, b, gi, og));
            for_each_tap(c, kernel, cg, out_hw, [out_shape[2], out_shape[3]], |row, col, ci, iy, ix| {
                gx[[b, gi * cg + ci, iy, ix]] += cols[[row, col]];
            });
        }
    }
    back(gx, gy.dtype())
}

/// The output gradient times the input's columns, summed over the batch.
pub(crate) fn conv2d_weight_grad(x: &Value, gy: &Value, c: &Conv2d, out_shape: &[usize]) -> Value {
    let (xa, ga) = (as_f64(x), as_f64(gy));
    let (o, cg) = (out_shape[0], out_shape[1]);
    let kernel = [out_shape[2], out_shape[3]];
    let out_hw = [ga.shape()[2], ga.shape()[3]];
    let og = o / c.groups;
    let mut gw = ArrayD::<f64>::zeros(IxDyn(out_shape));
    for b in 0..xa.shape()[0] {
        for gi in 0..c.groups {
            let res = group_rows(&ga, b, gi, og).dot(&im2col(&xa, b, gi, c, kernel, cg, out_hw).t());
            for oi in 0..og {
                for (r, v) in res.row(oi).iter().enumerate() {
                    let (ci, k) = (r / (kernel[0] * kernel[1]), r % (kernel[0] * kernel[1]));
                    gw[[gi * og + oi, ci, k / kernel[1], k % kernel[1]]] += v;
                }
            }
        }
    }
    back(gw, x.dtype())
}

/// Calls `f(b, c, y, x, taps)` for each pooling window, where `taps` are the
/// in-bounds input positions `(iy, ix)` of the window in row-major order.
fn for_each_window(
    p: &Pool2d,
    in_shape: &[usize],
    out_shape: &[usize],
    mut f: impl FnMut([usize; 4], &[(usize, usize)]),
) {
    let (h, w) = (in_shape[2] as isize, in_shape[3] as isize);
    let mut taps = Vec::with_capacity(p.kernel[0] * p.kernel[1]);
    for b in 0..out_shape[0] {
        for c in 0..out_shape[1] {
            for y in 0..out_shape[2] {
                for x in 0..out_shape[3] {
                    taps.clear();
                    for ki in 0..p.kernel[0] {
                        for kj in 0..p.kernel[1] {
                            let iy = (y * p.stride[0] + ki) as isize - p.padding[0] as isize;
                            let ix = (x * p.stride[1] + kj) as isize - p.padding[1] as isize;
                            if iy >= 0 && ix >= 0 && iy < h && ix < w {
                                taps.push((iy as usize, ix as usize));
                            }
                        }
                    }
                    f([b, c, y, x], &taps);
                }
            }
        }
    }
}

fn avg_divisor(p: &Pool2d, valid: usize) -> f64 {
    if p.count_include_pad { (p.kernel[0] * p.kernel[1]) as f64 } else { valid as f64 }
}

/// The first maximum of a window (a NaN counts as the maximum).
fn window_argmax(xa: &ArrayD<f64>, b: usize, c: usize, taps: &[(usize, usize)]) -> Option<(usize, usize)> {
    let mut best: Option<((usize, usize), f64)> = None;
    for &(iy, ix) in taps {
        let v = xa[[b, c, iy, ix]];
        match best {
            Some((_, bv)) if bv.is_nan() || !(v > bv || v.is_nan()) => {}
            _ => best = Some(((iy, ix), v)),
        }
    }
    best.map(|(at, _)| at)
}

pub(crate) fn pool2d(x: &Value, p: &Pool2d, out_shape: &[usize], max: bool) -> Value {
    let xa = as_f64(x);
    let mut out = ArrayD::<f64>::zeros(IxDyn(out_shape));
    for_each_window(p, xa.shape(), out_shape, |[b, c, y, xx], taps| {
        out[[b, c, y, xx]] = if max {
            window_argmax(&xa, b, c, taps).map_or(f64::NEG_INFINITY, |(iy, ix)| xa[[b, c, iy, ix]])
        } else {
            taps.iter().map(|&(iy, ix)| xa[[b, c, iy, ix]]).sum::<f64>() / avg_divisor(p, taps.len())
        };
    });
    back(out, x.dtype())
}

pub(crate) fn max_pool2d_grad(x: &Value, gy: &Value, p: &Pool2d) -> Value {
    let (xa, ga) = (as_f64(x), as_f64(gy));
    let mut gx = ArrayD::<f64>::zeros(xa.raw_dim());
    for_each_window(p, xa.shape(), ga.shape(), |[b, c, y, xx], taps| {
        if let Some((iy, ix)) = window_argmax(&xa, b, c, taps) {
            gx[[b, c, iy, ix]] += ga[[b, c, y, xx]];
        }
    });
    back(gx, x.dtype())
}

pub(crate) fn avg_pool2d_grad(gy: &Value, p: &Pool2d, out_shape: &[usize]) -> Value {
    let ga = as_f64(gy);
    let mut gx = ArrayD::<f64>::zeros(IxDyn(out_shape));
    for_each_window(p, out_shape, ga.shape(), |[b, c, y, xx], taps| {
        let share = ga[[b, c, y, xx]] / avg_divisor(p, taps.len());
        for &(iy, ix) in taps {
            gx[[b, c, iy, ix]] += share;
        }
    });
    back(gx, gy.dtype())
}

/// The forward partner of [`max_pool2d_grad`]: `g` (shaped like `x`) read at
/// each window's first maximum of `x`, shaped like the pooled output. It is
/// the derivative of `max_pool2d_grad` with respect to its output gradient.
pub(crate) fn max_pool2d_gather(x: &Value, g: &Value, p: &Pool2d, out_shape: &[usize]) -> Value {
    let (xa, ga) = (as_f64(x), as_f64(g));
    let mut out = ArrayD::<f64>::zeros(IxDyn(out_shape));
    for_each_window(p, xa.shape(), out_shape, |[b, c, y, xx], taps| {
        if let Some((iy, ix)) = window_argmax(&xa, b, c, taps) {
            out[[b, c, y, xx]] = ga[[b, c, iy, ix]];
        }
    });
    back(out, g.dtype())
}
