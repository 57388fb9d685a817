//! Matrix products through the `gemm` crate (blocked, vectorized for the
//! host CPU, threaded with rayon for large products).

use ndarray::{ArrayD, IxDyn};
use rhea_graph::Value;

/// The float element types the library ops run on.
pub(crate) trait Float:
    Copy
    + Default
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::AddAssign
    + std::ops::Mul<Output = Self>
    + 'static
{
    fn of(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn is_nan(self) -> bool;
    const NEG_INFINITY: Self;
}
impl Float for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
}
impl Float for f64 {
    fn of(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
}

pub(crate) fn matmul(inputs: &[&Value], alpha: f64, beta: f64, ta: bool, tb: bool) -> Result<Value, String> {
    Ok(match (inputs[0], inputs[1], inputs.get(2)) {
        (Value::F32(a), Value::F32(b), None) => Value::F32(product(a, b, None, alpha, beta, ta, tb)?),
        (Value::F32(a), Value::F32(b), Some(Value::F32(c))) => Value::F32(product(a, b, Some(c), alpha, beta, ta, tb)?),
        (Value::F64(a), Value::F64(b), None) => Value::F64(product(a, b, None, alpha, beta, ta, tb)?),
        (Value::F64(a), Value::F64(b), Some(Value::F64(c))) => Value::F64(product(a, b, Some(c), alpha, beta, ta, tb)?),
        _ => return Err("gemm needs float matrices of one dtype".into()),
    })
}

/// `alpha * op(a) @ op(b) + beta * c`.
fn product<T: Float>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    c: Option<&ArrayD<T>>,
    alpha: f64,
    beta: f64,
    ta: bool,
    tb: bool,
) -> Result<ArrayD<T>, String> {
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let (m, k) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (kb, n) = if tb { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    if k != kb {
        return Err(format!("gemm: inner dims {k} and {kb} differ"));
    }
    let mut out = match c {
        Some(c) => c.broadcast(IxDyn(&[m, n])).ok_or("gemm: C does not broadcast")?.as_standard_layout().into_owned(),
        None => ArrayD::from_elem(IxDyn(&[m, n]), T::default()),
    };
    let a = Mat { data: a.as_slice().expect("standard layout"), rows: m, cols: k, trans: ta };
    let b = Mat { data: b.as_slice().expect("standard layout"), rows: k, cols: n, trans: tb };
    let dst = out.as_slice_mut().expect("owned standard layout");
    multiply(dst, a, b, T::of(alpha), c.map(|_| T::of(beta)));
    Ok(out)
}

/// A row-major matrix, or the transpose of one (`trans`: the stored data is
/// `cols x rows`). `rows x cols` is the shape after the transpose.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub trans: bool,
}

impl<T> Mat<'_, T> {
    /// Row and column strides in elements.
    fn strides(&self) -> (isize, isize) {
        if self.trans { (1, self.rows as isize) } else { (self.cols as isize, 1) }
    }
}

/// `dst = alpha * a @ b + beta * dst`, or `alpha * a @ b` when `beta` is
/// `None` (whatever `dst` held is ignored); `dst` is row-major
/// `a.rows x b.cols`. Large products use every core.
pub(crate) fn multiply<T: Float>(dst: &mut [T], a: Mat<T>, b: Mat<T>, alpha: T, beta: Option<T>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && dst.len() == m * n, "multiply: {m}x{k} @ {}x{n} into {}", b.rows, dst.len());
    assert!(a.data.len() >= m * k && b.data.len() >= k * n, "multiply: operands shorter than their shapes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        match beta {
            Some(beta) => dst.iter_mut().for_each(|d| *d = *d * beta),
            None => dst.fill(T::default()),
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let threads = if m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above check that `dst`, `a` and `b` hold the
    // matrices the strides describe; all three are borrowed for the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            beta.is_some(),
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            beta.unwrap_or_default(),
            alpha,
            false,
            false,
            false,
            threads,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library_op;
    use ndarray::array;
    use rhea_graph::{F64, Op};

    #[test]
    fn gemm_matches_the_definition_with_transposes_scaling_and_bias() {
        let a = Value::from(array![[1.0f32, 2.0], [3.0, 4.0]]);
        let b = Value::from(array![[1.0f32, 0.0], [1.0, 1.0]]);
        let c = Value::from(array![10.0f32, 20.0]);
        let op = |ta, tb| Op::Gemm { alpha: F64(2.0), beta: F64(0.5), trans_a: ta, trans_b: tb };
        let out = library_op(&op(false, false), &[&a, &b, &c]).unwrap().unwrap();
        assert_eq!(out, Value::from(array![[11.0f32, 14.0], [19.0, 18.0]]));
        let t = Op::Gemm { alpha: F64(1.0), beta: F64(0.0), trans_a: true, trans_b: true };
        assert_eq!(library_op(&t, &[&a, &b]).unwrap().unwrap(), Value::from(array![[1.0f32, 4.0], [2.0, 6.0]]));
        let big = Value::from(ndarray::Array2::<f64>::from_shape_fn((70, 80), |(i, j)| ((i * 7 + j) % 5) as f64));
        let id = Value::from(ndarray::Array2::<f64>::eye(80));
        assert_eq!(library_op(&Op::Dot, &[&big, &id]).unwrap().unwrap(), big);
        assert!(library_op(&Op::Softmax { axis: 0 }, &[&a]).is_none());
    }
}
