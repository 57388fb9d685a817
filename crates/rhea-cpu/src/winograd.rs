//! Winograd F(2x2, 3x3) convolution (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2015) for 3x3, stride-1, undilated,
//! ungrouped convolutions: every 2x2 block of output is 16 products in a
//! transformed domain instead of 36, so the 16 GEMMs that replace im2col's
//! one do 2.25 times fewer multiply-adds.
//!
//! With `d` a 4x4 tile of input, `g` a 3x3 filter and
//! `B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]`,
//! `G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]]`, `A^T = [[1,1,1,0],[0,1,-1,-1]]`,
//! the 2x2 output is `A^T [(G g G^T) ⊙ (B^T d B)] A`. Over channels the
//! elementwise product becomes, for each of the 16 positions `ξ`, the
//! product `M[ξ] = U[ξ] @ V[ξ]` of the filters `U[ξ]` (`out x in`) and the
//! tiles `V[ξ]` (`in x tiles`).
//!
//! Tiles are taken in blocks of whole tile rows (of every image of the
//! batch in turn), each block transformed, multiplied and transformed back
//! while its `V` and `M` are still in cache.
//!
//! The filters' transform `U` depends on the weights alone. For weights a
//! call only reads (a shared variable the function does not update) it is
//! kept in a [`FilterCache`] and made again only when their version
//! changes, as ONNX Runtime pre-packs constant weights: at batch 1 VGG16's
//! filter transforms cost about a third of its forward pass.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rhea_graph::{Conv2d, NodeId};

use crate::blas::{Float, SendPtr, raw_gemm};
use crate::conv::{Geometry, with_scratch};

/// Whether `forward` computes this convolution: 3x3, stride 1, no
/// dilation, one group, and enough channels on both sides for the 16
/// products to be worth their transforms (measured: below 16 input
/// channels im2col's one longer product wins).
pub(crate) fn applies(g: &Geometry, c: &Conv2d) -> bool {
    g.kh == 3
        && g.kw == 3
        && c.stride == [1, 1]
        && c.dilation == [1, 1]
        && g.groups == 1
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
        && g.oh > 0
        && g.ow > 0
}

/// Fewest input and output channels for the Winograd path.
const MIN_CHANNELS: usize = 16;
/// Elements of `V` and `M` per block (about 4 MiB of f32), and the fewest
/// tiles per block, below which the products' packing of `U` dominates.
const BLOCK_ELEMS: usize = 1 << 20;
const MIN_TILES: usize = 192;

/// The convolution of `x` (`[n, c, h, w]`) with `w` (`[o, c, 3, 3]`) into
/// `out` (`[n, o, oh, ow]`), for a geometry [`applies`] accepts.
pub(crate) fn forward<T: Float>(g: &Geometry, c: &Conv2d, x: &[T], w: &[T], out: &mut [T], stable: Option<&Stable>) {
    convolve(g, c, x, w, Filters::AsGiven, out, stable)
}

/// Whether `input_grad` computes the input gradient of this convolution:
/// one [`applies`] accepts, padded by at most 2.
pub(crate) fn applies_to_input_grad(g: &Geometry, c: &Conv2d) -> bool {
    applies(g, c) && c.padding[0] <= 2 && c.padding[1] <= 2
}

/// The gradient with respect to the input (`[n, c, h, w]`) of the
/// convolution `g` describes, from the output's gradient `gy`: itself a
/// 3x3 convolution of `gy`, padded by `2 - padding`, with the filters
/// transposed (`in` and `out` swapped) and turned by 180 degrees.
pub(crate) fn input_grad<T: Float>(g: &Geometry, c: &Conv2d, gy: &[T], w: &[T], gx: &mut [T], stable: Option<&Stable>) {
    let back = Geometry { n: g.n, c: g.o, h: g.oh, w: g.ow, o: g.c, oh: g.h, ow: g.w, kh: 3, kw: 3, groups: 1 };
    let conv = Conv2d { padding: [2 - c.padding[0], 2 - c.padding[1]], ..*c };
    convolve(&back, &conv, gy, w, Filters::Turned, gx, stable)
}

/// Weights that stay the same while their `version` does (a shared
/// variable the call only reads, the executor's node `node`): their
/// transform may be taken from, and is kept in, `cache`.
pub(crate) struct Stable<'a> {
    pub cache: &'a FilterCache,
    pub node: NodeId,
    pub version: u64,
}

/// Transformed filters kept between calls: for each weights node and
/// layout, the version of the weights they were made from and `U`. Clones
/// share the store, so a function's plans for different batch sizes keep
/// one copy (`16/9` of the weights' size) per convolution.
#[derive(Clone, Default)]
pub struct FilterCache(Arc<Mutex<HashMap<(NodeId, bool), Kept>>>);

/// One convolution's transformed filters (a `Vec<T>`) and their weights' version.
type Kept = (u64, Arc<dyn Any + Send + Sync>);

impl FilterCache {
    /// `U` for `stable`'s weights in layout `filters`, made by `make` into
    /// `len` zeroed elements when the kept one is missing or of another
    /// version.
    fn get_or_make<T: Float>(
        &self,
        stable: &Stable,
        filters: Filters,
        len: usize,
        make: impl FnOnce(&mut [T]),
    ) -> Arc<Vec<T>> {
        let key = (stable.node, matches!(filters, Filters::Turned));
        let kept = |store: &HashMap<_, Kept>| {
            let (version, u) = store.get(&key)?;
            let u = u.clone().downcast::<Vec<T>>().ok()?;
            (*version == stable.version && u.len() == len).then_some(u)
        };
        // A poisoned lock only means another call panicked mid-insert; the
        // map itself is always whole.
        {
            let mut store = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(u) = kept(&store) {
                return u;
            }
            // Stale: let it go before making the new one.
            store.remove(&key);
        }
        let mut u = vec![T::default(); len];
        make(&mut u);
        let u = Arc::new(u);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (stable.version, u.clone()));
        u
    }

    /// Elements of transformed filters kept, over all convolutions.
    pub fn kept_elements(&self) -> usize {
        let store = self.0.lock().unwrap_or_else(|e| e.into_inner());
        store
            .values()
            .map(|(_, u)| {
                u.downcast_ref::<Vec<f32>>()
                    .map(Vec::len)
                    .or_else(|| u.downcast_ref::<Vec<f64>>().map(Vec::len))
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// How the filters `w` passed to [`convolve`] are laid out.
#[derive(Clone, Copy)]
enum Filters {
    /// `[o, c, 3, 3]`, used as they are.
    AsGiven,
    /// `[c, o, 3, 3]` (the forward convolution's), used transposed and
    /// turned by 180 degrees.
    Turned,
}

fn convolve<T: Float>(
    g: &Geometry,
    c: &Conv2d,
    x: &[T],
    w: &[T],
    filters: Filters,
    out: &mut [T],
    stable: Option<&Stable>,
) {
    let (ch, k) = (g.c, g.o);
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let tile_rows = g.n * th;
    let per_row = 16 * (ch + k) * tw;
    let rows_per_block = (BLOCK_ELEMS / per_row).max(MIN_TILES.div_ceil(tw)).clamp(1, tile_rows);
    let blocks = tile_rows.div_ceil(rows_per_block);
    // Few blocks: one after another, each product split over the cores.
    // Many: blocks in parallel, each product on one thread.
    let threads = rayon::current_num_threads();
    let parallel_blocks = blocks >= 2 * threads;
    let dst = SendPtr(out.as_mut_ptr());
    let with_filters = |u: &[T]| {
        let block = |b: usize| {
            let rows = b * rows_per_block..((b + 1) * rows_per_block).min(tile_rows);
            let tiles = rows.len() * tw;
            let scratch = 16 * (ch + k) * tiles + temporary(tw);
            with_scratch(scratch, |s: &mut [T]| {
                let (v, rest) = s.split_at_mut(16 * ch * tiles);
                let (m, tmp) = rest.split_at_mut(16 * k * tiles);
                transform_input(g, c, x, rows.clone(), v, tmp);
                for xi in 0..16 {
                    let (mx, ux, vx) = (&mut m[xi * k * tiles..], &u[xi * k * ch..], &v[xi * ch * tiles..]);
                    // SAFETY: `mx` holds `k x tiles`, `ux` `k x ch` and `vx`
                    // `ch x tiles`, row-major, in distinct buffers.
                    unsafe {
                        raw_gemm(
                            [k, tiles, ch],
                            (mx.as_mut_ptr(), tiles as isize),
                            (ux.as_ptr(), ch as isize, 1),
                            (vx.as_ptr(), tiles as isize, 1),
                            T::of(1.0),
                            None,
                            !parallel_blocks,
                        );
                    }
                }
                transform_output(g, m, rows, &dst, tmp);
            })
        };
        if parallel_blocks {
            (0..blocks).into_par_iter().for_each(block);
        } else {
            (0..blocks).for_each(block);
        }
    };
    let len = 16 * k * ch;
    match stable {
        Some(stable) => {
            let u =
                stable.cache.get_or_make(stable, filters, len, |u: &mut [T]| transform_filters(k, ch, w, filters, u));
            with_filters(&u)
        }
        None => with_scratch(len, |u: &mut [T]| {
            transform_filters(k, ch, w, filters, u);
            with_filters(u)
        }),
    }
}

/// `U[ξ][o][c] = (G g G^T)[ξ]` for every filter `g` (`w[o, c]`, or
/// `w[c, o]` turned), output channels in parallel.
fn transform_filters<T: Float>(k: usize, ch: usize, w: &[T], filters: Filters, u: &mut [T]) {
    let half = T::of(0.5);
    let dst = SendPtr(u.as_mut_ptr());
    (0..k).into_par_iter().with_min_len(8).for_each(|o| {
        for c in 0..ch {
            let g: [T; 9] = match filters {
                Filters::AsGiven => std::array::from_fn(|i| w[(o * ch + c) * 9 + i]),
                Filters::Turned => std::array::from_fn(|i| w[(c * k + o) * 9 + 8 - i]),
            };
            // t = G g (4x3), then t G^T (4x4).
            let mut t = [[T::default(); 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                t[0][j] = g0;
                t[1][j] = (g0 + g1 + g2) * half;
                t[2][j] = (g0 - g1 + g2) * half;
                t[3][j] = g2;
            }
            for (i, [t0, t1, t2]) in t.into_iter().enumerate() {
                let row = [t0, (t0 + t1 + t2) * half, (t0 - t1 + t2) * half, t2];
                for (j, value) in row.into_iter().enumerate() {
                    // SAFETY: `u` holds 16 * k * ch elements, and element
                    // (ξ, o, c) is written by the task of `o` alone.
                    unsafe { *dst.get().add(((i * 4 + j) * k + o) * ch + c) = value };
                }
            }
        }
    });
}

/// Elements of temporary space [`transform_input`] and
/// [`transform_output`] need for `tw` tiles a row.
fn temporary(tw: usize) -> usize {
    16 * (tw + 1)
}

/// `V[ξ][c][t] = (B^T d B)[ξ]` for the 4x4 input tile `d` of each tile `t`
/// of the tile rows `rows` (tile row `r` is row `r % th` of image `r / th`).
/// `tmp` holds [`temporary`] elements.
fn transform_input<T: Float>(
    g: &Geometry,
    c: &Conv2d,
    x: &[T],
    rows: std::ops::Range<usize>,
    v: &mut [T],
    tmp: &mut [T],
) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let tiles = rows.len() * tw;
    let ph = c.padding[0] as isize;
    let len = tw + 1;
    // Even and odd columns (of the padded input) of the tile's four rows,
    // then of the four row combinations B^T d.
    let (even, rest) = tmp.split_at_mut(4 * len);
    let (odd, rest) = rest.split_at_mut(4 * len);
    let (e_even, e_odd) = rest.split_at_mut(4 * len);
    for ci in 0..g.c {
        for (local, r) in rows.clone().enumerate() {
            let (n, ty) = (r / th, r % th);
            let plane = &x[(n * g.c + ci) * g.h * g.w..(n * g.c + ci + 1) * g.h * g.w];
            for i in 0..4 {
                let iy = (2 * ty) as isize + i as isize - ph;
                let (ev, od) = (&mut even[i * len..(i + 1) * len], &mut odd[i * len..(i + 1) * len]);
                if iy < 0 || iy >= g.h as isize {
                    ev.fill(T::default());
                    od.fill(T::default());
                } else {
                    let line = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    split_columns(line, c.padding[1], ev, od);
                }
            }
            for (src, dst) in [(&*even, &mut *e_even), (&*odd, &mut *e_odd)] {
                let (d0, d1, d2, d3) = (&src[..len], &src[len..2 * len], &src[2 * len..3 * len], &src[3 * len..]);
                let (e0, rest) = dst.split_at_mut(len);
                let (e1, rest) = rest.split_at_mut(len);
                let (e2, e3) = rest.split_at_mut(len);
                for j in 0..len {
                    e0[j] = d0[j] - d2[j];
                    e1[j] = d1[j] + d2[j];
                    e2[j] = d2[j] - d1[j];
                    e3[j] = d1[j] - d3[j];
                }
            }
            for i in 0..4 {
                let (ev, od) = (&e_even[i * len..(i + 1) * len], &e_odd[i * len..(i + 1) * len]);
                let starts = [0, 1, 2, 3].map(|j| ((i * 4 + j) * g.c + ci) * tiles + local * tw);
                let [v0, v1, v2, v3] = four_rows(v, starts, tw);
                let (e, e1, o, o1) = (&ev[..tw], &ev[1..=tw], &od[..tw], &od[1..=tw]);
                for t in 0..tw {
                    v0[t] = e[t] - e1[t];
                    v1[t] = o[t] + e1[t];
                    v2[t] = e1[t] - o[t];
                    v3[t] = o[t] - o1[t];
                }
            }
        }
    }
}

/// The even (`ev[j]`: column `2j - pad`) and odd (`od[j]`: `2j + 1 - pad`)
/// columns of `line` padded by `pad` zeros on the left and any number on
/// the right.
fn split_columns<T: Float>(line: &[T], pad: usize, ev: &mut [T], od: &mut [T]) {
    let at = |col: isize| if col >= 0 && col < line.len() as isize { line[col as usize] } else { T::default() };
    // j in first..last reads columns 2j - pad and 2j + 1 - pad, both inside.
    let first = pad.div_ceil(2).min(ev.len());
    let last = ((line.len() + pad) / 2).clamp(first, ev.len());
    for j in (0..first).chain(last..ev.len()) {
        let col = 2 * j as isize - pad as isize;
        ev[j] = at(col);
        od[j] = at(col + 1);
    }
    // An empty line (a zero-width input, all padding) has no inside.
    let inside = if last > first { &line[2 * first - pad..2 * last - pad] } else { &[] };
    for ((e, o), pair) in ev[first..last].iter_mut().zip(&mut od[first..last]).zip(inside.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// The four `len`-element slices of `v` at increasing, disjoint `starts`.
fn four_rows<T>(v: &mut [T], starts: [usize; 4], len: usize) -> [&mut [T]; 4] {
    let (_, rest) = v.split_at_mut(starts[0]);
    let (a, rest) = rest.split_at_mut(starts[1] - starts[0]);
    let (b, rest) = rest.split_at_mut(starts[2] - starts[1]);
    let (c, rest) = rest.split_at_mut(starts[3] - starts[2]);
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut rest[..len]]
}

/// `Y = A^T M A` for every output channel and tile of the tile rows `rows`,
/// written into `out` (`[n, o, oh, ow]`), clipped at the last row and
/// column where the output's size is odd. Only the output rows of these
/// tile rows are touched: blocks of other tile rows may write the rest at
/// the same time. `tmp` holds [`temporary`] elements.
fn transform_output<T: Float>(g: &Geometry, m: &[T], rows: std::ops::Range<usize>, out: &SendPtr<T>, tmp: &mut [T]) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let (k, tiles) = (g.o, rows.len() * tw);
    // The rows of A^T M: s_j = m_j + m_4+j + m_8+j, d_j = m_4+j - m_8+j - m_12+j.
    let (s, d) = tmp[..8 * tw].split_at_mut(4 * tw);
    for o in 0..k {
        for (local, r) in rows.clone().enumerate() {
            let (n, ty) = (r / th, r % th);
            let plane = |xi: usize| {
                let start = (xi * k + o) * tiles + local * tw;
                &m[start..start + tw]
            };
            for j in 0..4 {
                let (m0, m1, m2, m3) = (plane(j), plane(4 + j), plane(8 + j), plane(12 + j));
                let (sj, dj) = (&mut s[j * tw..(j + 1) * tw], &mut d[j * tw..(j + 1) * tw]);
                for t in 0..tw {
                    sj[t] = m0[t] + m1[t] + m2[t];
                    dj[t] = m1[t] - m2[t] - m3[t];
                }
            }
            let lines = if 2 * ty + 1 < g.oh { 2 } else { 1 };
            // SAFETY: `out` holds `[n, o, oh, ow]`, and output rows 2ty and
            // 2ty+1 (where inside) of image n belong to tile row r alone.
            let lines = unsafe {
                std::slice::from_raw_parts_mut(out.get().add(((n * k + o) * g.oh + 2 * ty) * g.ow), lines * g.ow)
            };
            for (line, a) in lines.chunks_exact_mut(g.ow).zip([&*s, &*d]) {
                let (a0, a1, a2, a3) = (&a[..tw], &a[tw..2 * tw], &a[2 * tw..3 * tw], &a[3 * tw..]);
                let pairs = line.chunks_exact_mut(2);
                let odd = pairs.len() < tw;
                for (t, pair) in pairs.enumerate() {
                    pair[0] = a0[t] + a1[t] + a2[t];
                    pair[1] = a1[t] - a2[t] - a3[t];
                }
                if odd {
                    let t = tw - 1;
                    line[2 * t] = a0[t] + a1[t] + a2[t];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct convolution, for reference.
    fn direct(g: &Geometry, c: &Conv2d, x: &[f64], w: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; g.n * g.o * g.oh * g.ow];
        for n in 0..g.n {
            for o in 0..g.o {
                for y in 0..g.oh {
                    for xx in 0..g.ow {
                        let mut acc = 0.0;
                        for ci in 0..g.c {
                            for ki in 0..3 {
                                for kj in 0..3 {
                                    let iy = (y + ki) as isize - c.padding[0] as isize;
                                    let ix = (xx + kj) as isize - c.padding[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        acc += x[((n * g.c + ci) * g.h + iy as usize) * g.w + ix as usize]
                                            * w[((o * g.c + ci) * 3 + ki) * 3 + kj];
                                    }
                                }
                            }
                        }
                        out[((n * g.o + o) * g.oh + y) * g.ow + xx] = acc;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect()
    }

    #[test]
    fn input_gradient_is_the_adjoint_of_the_forward_convolution() {
        // <conv(x), gy> = <x, input_grad(gy)> for every x and gy.
        for (n, ch, k, h, w, pad) in [(2, 16, 18, 5, 7, [1, 1]), (1, 17, 16, 6, 6, [0, 2]), (1, 16, 16, 4, 3, [2, 0])] {
            let (oh, ow) = (h + 2 * pad[0] - 2, w + 2 * pad[1] - 2);
            let g = Geometry { n, c: ch, h, w, o: k, oh, ow, kh: 3, kw: 3, groups: 1 };
            let conv = Conv2d { padding: pad, ..Conv2d::default() };
            assert!(applies_to_input_grad(&g, &conv));
            let (x, wt, gy) = (values(n * ch * h * w, 3), values(k * ch * 9, 4), values(n * k * oh * ow, 5));
            let y = direct(&g, &conv, &x, &wt);
            let mut gx = vec![f64::NAN; x.len()];
            input_grad(&g, &conv, &gy, &wt, &mut gx, None);
            let lhs: f64 = y.iter().zip(&gy).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&gx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0), "{pad:?}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn matches_the_direct_convolution_on_odd_sizes_and_paddings() {
        for (n, ch, k, h, w, pad) in [
            (1, 16, 16, 5, 7, [1, 1]),
            (2, 17, 19, 8, 8, [0, 0]),
            (3, 16, 20, 6, 3, [2, 1]),
            (1, 16, 16, 1, 1, [1, 1]),
            (1, 16, 16, 2, 1, [3, 4]),
            (1, 16, 16, 3, 0, [0, 3]),
        ] {
            let (oh, ow) = (h + 2 * pad[0] - 2, w + 2 * pad[1] - 2);
            let g = Geometry { n, c: ch, h, w, o: k, oh, ow, kh: 3, kw: 3, groups: 1 };
            let conv = Conv2d { padding: pad, ..Conv2d::default() };
            assert!(applies(&g, &conv));
            let (x, wt) = (values(n * ch * h * w, 1), values(k * ch * 9, 2));
            let mut out = vec![f64::NAN; n * k * oh * ow];
            forward(&g, &conv, &x, &wt, &mut out, None);
            let want = direct(&g, &conv, &x, &wt);
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-12, "{n}x{ch}x{h}x{w} pad {pad:?}: element {i}: {a} vs {b}");
            }
        }
    }
}
