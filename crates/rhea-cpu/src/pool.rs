//! Max and average pooling over NCHW planes and their gradients, one plane
//! per task. Semantics follow the interpreter: the first maximum of a
//! window wins and a NaN counts as the maximum; averages sum in `f64`.

use rayon::prelude::*;
use rhea_graph::Pool2d;

use crate::blas::Float;

/// Input and output plane sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes {
    /// Batch times channels.
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Calls `f(out_index, taps)` for each window of one plane, `taps` being the
/// in-bounds input offsets of the window in row-major order.
fn for_each_window(p: &Pool2d, s: &Planes, mut f: impl FnMut(usize, &[usize])) {
    let mut taps = Vec::with_capacity(p.kernel[0] * p.kernel[1]);
    for y in 0..s.oh {
        for x in 0..s.ow {
            taps.clear();
            for ki in 0..p.kernel[0] {
                let iy = (y * p.stride[0] + ki) as isize - p.padding[0] as isize;
                if iy < 0 || iy >= s.h as isize {
                    continue;
                }
                for kj in 0..p.kernel[1] {
                    let ix = (x * p.stride[1] + kj) as isize - p.padding[1] as isize;
                    if ix >= 0 && ix < s.w as isize {
                        taps.push(iy as usize * s.w + ix as usize);
                    }
                }
            }
            f(y * s.ow + x, &taps);
        }
    }
}

/// The pooling rule: `v`, met after `best` in a window, replaces it if it
/// is greater or NaN, unless `best` is already NaN (the first maximum wins).
fn takes_over<T: Float>(best: T, v: T) -> bool {
    !best.is_nan() && (v > best || v.is_nan())
}

fn argmax<T: Float>(plane: &[T], taps: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for &t in taps {
        let v = plane[t];
        match best {
            Some((_, b)) if !takes_over(b, v) => {}
            _ => best = Some((t, v)),
        }
    }
    best.map(|(t, _)| t)
}

fn divisor(p: &Pool2d, valid: usize) -> f64 {
    if p.count_include_pad { (p.kernel[0] * p.kernel[1]) as f64 } else { valid as f64 }
}

/// Pools each plane of `x` (`[planes, h, w]`) to `[planes, oh, ow]`.
pub(crate) fn forward<T: Float>(p: &Pool2d, s: &Planes, x: &[T], max: bool, out: &mut [T]) {
    assert_eq!(out.len(), s.planes * s.oh * s.ow, "pooling output size");
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(s.oh * s.ow).enumerate().for_each(|(i, out)| {
        let plane = &x[i * s.h * s.w..(i + 1) * s.h * s.w];
        if max && p.padding == [0, 0] {
            max_unpadded(p, s, plane, out);
            return;
        }
        for_each_window(p, s, |o, taps| {
            out[o] = if max {
                argmax(plane, taps).map_or(T::NEG_INFINITY, |t| plane[t])
            } else {
                T::of(taps.iter().map(|&t| plane[t].to_f64()).sum::<f64>() / divisor(p, taps.len()))
            };
        });
    });
}

/// Max pooling of one plane whose windows all lie inside it (no padding):
/// the same first-maximum rule as [`argmax`], without listing taps.
fn max_unpadded<T: Float>(p: &Pool2d, s: &Planes, plane: &[T], out: &mut [T]) {
    if p.kernel == [2, 2] && p.stride == [2, 2] {
        return max_2x2(s, plane, out);
    }
    for y in 0..s.oh {
        for x in 0..s.ow {
            let (y0, x0) = (y * p.stride[0], x * p.stride[1]);
            let mut best = plane[y0 * s.w + x0];
            for ki in 0..p.kernel[0] {
                let row = &plane[(y0 + ki) * s.w + x0..(y0 + ki) * s.w + x0 + p.kernel[1]];
                for &v in row {
                    if takes_over(best, v) {
                        best = v;
                    }
                }
            }
            out[y * s.ow + x] = best;
        }
    }
}

/// [`max_unpadded`] for VGG's 2x2 windows at stride 2, written as
/// selects over whole rows so that it compiles to vector code.
fn max_2x2<T: Float>(s: &Planes, plane: &[T], out: &mut [T]) {
    let pick = |best: T, v: T| if takes_over(best, v) { v } else { best };
    for (y, out) in out.chunks_exact_mut(s.ow).enumerate() {
        let top = &plane[2 * y * s.w..2 * y * s.w + 2 * s.ow];
        let bottom = &plane[(2 * y + 1) * s.w..(2 * y + 1) * s.w + 2 * s.ow];
        for ((o, t), b) in out.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
            *o = pick(pick(pick(t[0], t[1]), b[0]), b[1]);
        }
    }
}

/// The gradient of max pooling: each window's output gradient goes to its
/// first maximum.
pub(crate) fn max_grad<T: Float>(p: &Pool2d, s: &Planes, x: &[T], gy: &[T], gx: &mut [T]) {
    assert_eq!(gx.len(), s.planes * s.h * s.w, "max pooling gradient size");
    gx.fill(T::default());
    if gx.is_empty() {
        return;
    }
    gx.par_chunks_mut(s.h * s.w).enumerate().for_each(|(i, gx)| {
        let plane = &x[i * s.h * s.w..(i + 1) * s.h * s.w];
        let g = &gy[i * s.oh * s.ow..(i + 1) * s.oh * s.ow];
        for_each_window(p, s, |o, taps| {
            if let Some(t) = argmax(plane, taps) {
                gx[t] += g[o];
            }
        });
    });
}

/// The gradient of average pooling: each window's output gradient spread
/// evenly over the window.
pub(crate) fn avg_grad<T: Float>(p: &Pool2d, s: &Planes, gy: &[T], gx: &mut [T]) {
    assert_eq!(gx.len(), s.planes * s.h * s.w, "average pooling gradient size");
    if gx.is_empty() {
        return;
    }
    gx.par_chunks_mut(s.h * s.w).enumerate().for_each(|(i, gx)| {
        let g = &gy[i * s.oh * s.ow..(i + 1) * s.oh * s.ow];
        let mut sums = vec![0.0f64; gx.len()];
        for_each_window(p, s, |o, taps| {
            let share = g[o].to_f64() / divisor(p, taps.len());
            for &t in taps {
                sums[t] += share;
            }
        });
        for (d, v) in gx.iter_mut().zip(sums) {
            *d = T::of(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_2x2_path_keeps_the_first_maximum_and_nan_rules() {
        // A 4x6 plane (one odd column left out by the 2x2 windows when
        // cut to 5 wide) holding NaNs, ties and -inf.
        let nan = f32::NAN;
        let plane = [
            1.0,
            3.0,
            nan,
            0.0,
            -1.0,
            9.0, //
            2.0,
            3.0,
            5.0,
            nan,
            -2.0,
            9.0, //
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            7.0,
            7.0, //
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            nan,
            8.0,
        ];
        for w in [6, 5] {
            let plane: Vec<f32> = plane.chunks(6).flat_map(|row| row[..w].to_vec()).collect();
            let s = Planes { planes: 1, h: 4, w, oh: 2, ow: w / 2 };
            let p = Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0, 0], count_include_pad: true };
            let (mut fast, mut general) = (vec![0.0; 2 * s.ow], vec![0.0; 2 * s.ow]);
            max_2x2(&s, &plane, &mut fast);
            for_each_window(&p, &s, |o, taps| general[o] = plane[argmax(&plane, taps).unwrap()]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&general), "width {w}: {fast:?} vs {general:?}");
            assert!(fast[1].is_nan() && fast[0] == 3.0 && fast[s.ow] == f32::NEG_INFINITY);
        }
    }
}
