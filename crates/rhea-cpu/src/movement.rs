//! Data movement on the host, natively: slices (any start, stop and step
//! per axis) and constant padding, as strided copies with the innermost
//! contiguous run copied whole. The interpreter's `slice` and `pad` are
//! the reference they are tested against.

use rhea_graph::SliceSpec;

/// Per axis: the first index taken, the step, and how many.
fn spans(shape: &[usize], specs: &[SliceSpec]) -> Result<Vec<(usize, isize, usize)>, String> {
    shape
        .iter()
        .enumerate()
        .map(|(a, &len)| {
            let spec = specs.get(a).copied().unwrap_or(SliceSpec::FULL);
            let (first, count) = spec.first_and_count(len)?;
            // Steps between two taken indices lie within the axis.
            let step = if count > 1 { spec.step as isize } else { 1 };
            Ok((first, step, count))
        })
        .collect()
}

/// Steps `index` (over axes of sizes `len(a)`) to the next position in
/// row-major order; false after the last.
fn advance(index: &mut [usize], len: impl Fn(usize) -> usize) -> bool {
    for a in (0..index.len()).rev() {
        index[a] += 1;
        if index[a] < len(a) {
            return true;
        }
        index[a] = 0;
    }
    false
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// `out = x[specs]` for `x` of `shape` (row-major).
pub(crate) fn slice_into<T: Copy>(x: &[T], shape: &[usize], specs: &[SliceSpec], out: &mut [T]) -> Result<(), String> {
    let spans = spans(shape, specs)?;
    let total: usize = spans.iter().map(|s| s.2).product();
    if out.len() != total || x.len() != shape.iter().product::<usize>() {
        return Err(format!("slice: {} elements into {} for shape {shape:?}", x.len(), out.len()));
    }
    if total == 0 {
        return Ok(());
    }
    let st = strides(shape);
    let rank = shape.len();
    if rank == 0 {
        out[0] = x[0];
        return Ok(());
    }
    let (first, step, count) = spans[rank - 1];
    let mut index = vec![0usize; rank - 1];
    let mut o = 0;
    loop {
        let base: usize =
            (0..rank - 1).map(|a| (spans[a].0 as isize + index[a] as isize * spans[a].1) as usize * st[a]).sum();
        let start = base + first;
        if step == 1 {
            out[o..o + count].copy_from_slice(&x[start..start + count]);
        } else {
            for k in 0..count {
                out[o + k] = x[(start as isize + k as isize * step) as usize];
            }
        }
        o += count;
        if !advance(&mut index, |a| spans[a].2) {
            return Ok(());
        }
    }
}

/// `out` = `x` (of `shape`) padded by `widths` (before, after) per axis
/// with `value`.
pub(crate) fn pad_into<T: Copy>(
    x: &[T],
    shape: &[usize],
    widths: &[(usize, usize)],
    value: T,
    out: &mut [T],
) -> Result<(), String> {
    let padded: Vec<usize> = shape.iter().zip(widths).map(|(&n, &(b, a))| n + b + a).collect();
    if widths.len() != shape.len() || out.len() != padded.iter().product::<usize>() {
        return Err(format!("pad: shape {shape:?} with widths {widths:?} into {} elements", out.len()));
    }
    out.fill(value);
    if x.is_empty() {
        return Ok(());
    }
    let rank = shape.len();
    if rank == 0 {
        out[0] = x[0];
        return Ok(());
    }
    let (sx, so) = (strides(shape), strides(&padded));
    let row = shape[rank - 1];
    let mut index = vec![0usize; rank - 1];
    loop {
        let from: usize = (0..rank - 1).map(|a| index[a] * sx[a]).sum();
        let to: usize = (0..rank - 1).map(|a| (index[a] + widths[a].0) * so[a]).sum::<usize>() + widths[rank - 1].0;
        out[to..to + row].copy_from_slice(&x[from..from + row]);
        if !advance(&mut index, |a| shape[a]) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_pads_match_the_definition() {
        let shape = [3usize, 4, 5];
        let x: Vec<i64> = (0..60).collect();
        let at = |i: usize, j: usize, k: usize| x[i * 20 + j * 5 + k];
        let specs =
            [SliceSpec::new(None, None, -1), SliceSpec::new(Some(1), Some(4), 2), SliceSpec::new(Some(-1), None, -2)];
        let mut out = vec![0; 3 * 2 * 3];
        slice_into(&x, &shape, &specs, &mut out).unwrap();
        let mut want = Vec::new();
        for i in [2, 1, 0] {
            for j in [1, 3] {
                for k in [4, 2, 0] {
                    want.push(at(i, j, k));
                }
            }
        }
        assert_eq!(out, want);
        let mut empty: Vec<i64> = vec![];
        slice_into(&x, &shape, &[SliceSpec::range(2, 2)], &mut empty).unwrap();
        let mut padded = vec![0; 4 * 4 * 6];
        pad_into(&x[..20], &[1, 4, 5], &[(1, 2), (0, 0), (1, 0)], -1, &mut padded).unwrap();
        for (p, &v) in padded.iter().enumerate() {
            let (i, j, k) = (p / 24, p / 6 % 4, p % 6);
            let want = if i == 1 && k >= 1 { at(0, j, k - 1) } else { -1 };
            assert_eq!(v, want, "at {i},{j},{k}");
        }
        assert!(slice_into(&x, &shape, &specs, &mut [0; 5]).is_err());
    }
}
