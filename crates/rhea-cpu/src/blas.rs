//! Matrix products through the `gemm` crate (blocked, vectorized for the
//! host CPU, threaded with rayon for large products).

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

/// `out = alpha * op(a) @ op(b) + beta * c` (with `c` broadcast to the
/// output), on contiguous row-major data; shapes are checked here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Float>(
    out: &mut [T],
    a: (&[T], &[usize]),
    b: (&[T], &[usize]),
    c: Option<(&[T], &[usize])>,
    alpha: f64,
    beta: f64,
    ta: bool,
    tb: bool,
) -> Result<(), String> {
    let (a_shape, b_shape) = (a.1, b.1);
    if a_shape.len() != 2 || b_shape.len() != 2 {
        return Err(format!("gemm needs matrices, got {a_shape:?} and {b_shape:?}"));
    }
    let (m, k) = if ta { (a_shape[1], a_shape[0]) } else { (a_shape[0], a_shape[1]) };
    let (kb, n) = if tb { (b_shape[1], b_shape[0]) } else { (b_shape[0], b_shape[1]) };
    if k != kb {
        return Err(format!("gemm: inner dims {k} and {kb} differ"));
    }
    if out.len() != m * n {
        return Err(format!("gemm: output of {} elements for {m}x{n}", out.len()));
    }
    if let Some((c, shape)) = c {
        broadcast_into(out, m, n, c, shape)?;
    }
    let a = Mat { data: a.0, rows: m, cols: k, trans: ta };
    let b = Mat { data: b.0, rows: k, cols: n, trans: tb };
    multiply(out, a, b, T::of(alpha), c.map(|_| T::of(beta)));
    Ok(())
}

/// Writes `c` (of rank at most 2, numpy-broadcastable to `m x n`) into
/// every row and column of `out`.
fn broadcast_into<T: Float>(out: &mut [T], m: usize, n: usize, c: &[T], shape: &[usize]) -> Result<(), String> {
    let fits = |d: usize, want: usize| d == want || d == 1;
    let (rows, cols) = match *shape {
        [] => (1, 1),
        [cn] => (1, cn),
        [cm, cn] => (cm, cn),
        _ => return Err(format!("gemm: C of shape {shape:?} does not broadcast to {m}x{n}")),
    };
    if !fits(rows, m) || !fits(cols, n) || c.len() != rows * cols {
        return Err(format!("gemm: C of shape {shape:?} does not broadcast to {m}x{n}"));
    }
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        let src = &c[(i % rows) * cols..(i % rows + 1) * cols];
        if cols == n {
            row.copy_from_slice(src);
        } else {
            row.fill(src[0]);
        }
    }
    Ok(())
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
