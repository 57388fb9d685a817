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
    + std::ops::Sub<Output = Self>
    + std::ops::Neg<Output = Self>
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

/// What a `gemm` node (or a 2-d `dot`) computes:
/// `alpha * op(a) @ op(b) + beta * c`, `op` transposing where asked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    pub alpha: f64,
    pub beta: f64,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Product {
    /// The product `op` computes, if it is a matrix product.
    pub fn of(op: &rhea_graph::Op) -> Option<Product> {
        match op {
            rhea_graph::Op::Gemm { alpha, beta, trans_a, trans_b } => {
                Some(Product { alpha: alpha.0, beta: beta.0, trans_a: *trans_a, trans_b: *trans_b })
            }
            rhea_graph::Op::Dot => Some(Product { alpha: 1.0, beta: 0.0, trans_a: false, trans_b: false }),
            _ => None,
        }
    }
}

/// `out = alpha * op(a) @ op(b) + beta * c` (with `c` broadcast to the
/// output), on contiguous row-major data; shapes are checked here.
pub(crate) fn gemm_into<T: Float>(
    out: &mut [T],
    a: (&[T], &[usize]),
    b: (&[T], &[usize]),
    c: Option<(&[T], &[usize])>,
    p: Product,
) -> Result<(), String> {
    let (alpha, beta, ta, tb) = (p.alpha, p.beta, p.trans_a, p.trans_b);
    let [m, k, n] = product_dims(out.len(), a, b, ta, tb)?;
    if let Some((c, shape)) = c {
        broadcast_into(out, m, n, c, shape)?;
    }
    let a = Mat { data: a.0, rows: m, cols: k, trans: ta };
    let b = Mat { data: b.0, rows: k, cols: n, trans: tb };
    multiply(out, a, b, T::of(alpha), c.map(|_| T::of(beta)));
    Ok(())
}

/// `[m, k, n]` of `op(a) @ op(b)` into `out_len` elements, checked: both
/// matrices, matching inner sizes, and data as long as the shapes say.
fn product_dims<T>(
    out_len: usize,
    a: (&[T], &[usize]),
    b: (&[T], &[usize]),
    ta: bool,
    tb: bool,
) -> Result<[usize; 3], String> {
    let (a_shape, b_shape) = (a.1, b.1);
    if a_shape.len() != 2 || b_shape.len() != 2 {
        return Err(format!("gemm needs matrices, got {a_shape:?} and {b_shape:?}"));
    }
    let (m, k) = if ta { (a_shape[1], a_shape[0]) } else { (a_shape[0], a_shape[1]) };
    let (kb, n) = if tb { (b_shape[1], b_shape[0]) } else { (b_shape[0], b_shape[1]) };
    if k != kb {
        return Err(format!("gemm: inner dims {k} and {kb} differ"));
    }
    if out_len != m * n || a.0.len() < m * k || b.0.len() < k * n {
        return Err(format!("gemm: {m}x{k} @ {kb}x{n} into {out_len} elements"));
    }
    Ok([m, k, n])
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
    // SAFETY: the asserts above check that `dst`, `a` and `b` hold the
    // matrices the strides describe; all three are borrowed for the call.
    unsafe {
        raw_gemm(
            [m, n, k],
            (dst.as_mut_ptr(), n as isize),
            (a.data.as_ptr(), a_rs, a_cs),
            (b.data.as_ptr(), b_rs, b_cs),
            alpha,
            beta,
            m * n * k >= PARALLEL_PRODUCT,
        )
    }
}

/// Multiply-adds above which a product is split over the cores: waking
/// rayon's threads costs about 20 us, the time of 2^21 multiply-adds here.
const PARALLEL_PRODUCT: usize = 1 << 21;

/// `dst = alpha * a @ b (+ beta * dst)` on raw strided matrices, `[m, n, k]`;
/// `dst` is row-major with row stride `dst.1`, `a` and `b` are given with
/// their row and column strides. A `parallel` product is cut into one
/// block of output per thread, each multiplied on one thread: the `gemm`
/// crate's own threading measured slower here for the models' shapes
/// (60x784 @ 784x500: 180 GFLOP/s threaded, 295 cut in two).
///
/// # Safety
/// Every pointer must address the whole matrix its strides describe, and
/// `dst` must not overlap `a` or `b`.
pub(crate) unsafe fn raw_gemm<T: Float>(
    [m, n, k]: [usize; 3],
    dst: (*mut T, isize),
    a: (*const T, isize, isize),
    b: (*const T, isize, isize),
    alpha: T,
    beta: Option<T>,
    parallel: bool,
) {
    use rayon::prelude::*;
    let parts = if parallel { rayon::current_num_threads() } else { 1 };
    // Cut the longer side of the output, in multiples of 16.
    let long = m.max(n);
    let block = long.div_ceil(parts).div_ceil(16) * 16;
    if parts <= 1 || block >= long {
        // SAFETY: as the caller promises.
        unsafe { gemm_on_one_thread([m, n, k], dst.0, dst.1, a, b, alpha, beta) };
        return;
    }
    let (dst_ptr, a_ptr, b_ptr) = (SendPtr(dst.0), SendPtr(a.0 as *mut T), SendPtr(b.0 as *mut T));
    (0..long.div_ceil(block)).into_par_iter().for_each(|i| {
        let (start, end) = (i * block, ((i + 1) * block).min(long));
        let (d, a0, b0) = (&dst_ptr, &a_ptr, &b_ptr);
        // SAFETY: block i writes rows (or columns) start..end of `dst`
        // alone, and reads the matching rows of `a` (or columns of `b`),
        // which lie inside the matrices the caller vouched for.
        unsafe {
            if m >= n {
                let a_rows = (a0.0.offset(start as isize * a.1) as *const T, a.1, a.2);
                gemm_on_one_thread(
                    [end - start, n, k],
                    d.0.offset(start as isize * dst.1),
                    dst.1,
                    a_rows,
                    (b0.0, b.1, b.2),
                    alpha,
                    beta,
                );
            } else {
                let b_cols = (b0.0.offset(start as isize * b.2) as *const T, b.1, b.2);
                gemm_on_one_thread([m, end - start, k], d.0.add(start), dst.1, (a0.0, a.1, a.2), b_cols, alpha, beta);
            }
        }
    });
}

/// One `gemm` crate call on the calling thread.
///
/// # Safety
/// As for [`raw_gemm`].
unsafe fn gemm_on_one_thread<T: Float>(
    [m, n, k]: [usize; 3],
    dst: *mut T,
    dst_rs: isize,
    a: (*const T, isize, isize),
    b: (*const T, isize, isize),
    alpha: T,
    beta: Option<T>,
) {
    // SAFETY: as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            beta.is_some(),
            a.0,
            a.2,
            a.1,
            b.0,
            b.2,
            b.1,
            beta.unwrap_or_default(),
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Columns of output per block of a product with an epilogue: a block of
/// `m` rows stays within about 128 KiB, so the epilogue reads it from cache.
fn block_columns(m: usize, n: usize, elem: usize) -> usize {
    let cols = (128 * 1024 / elem / m.max(1)).max(16) / 16 * 16;
    cols.clamp(1, n.max(1))
}

/// [`gemm_into`] followed by `epilogue(rows, columns)` over each block of
/// output columns while the block is still in cache. Blocks run in
/// parallel, each product on one thread.
pub(crate) fn gemm_with_epilogue<T: Float>(
    out: &mut [T],
    a: (&[T], &[usize]),
    b: (&[T], &[usize]),
    c: Option<(&[T], &[usize])>,
    p: Product,
    epilogue: &(dyn Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync),
) -> Result<(), String> {
    use rayon::prelude::*;
    let (alpha, beta, ta, tb) = (p.alpha, p.beta, p.trans_a, p.trans_b);
    let [m, k, n] = product_dims(out.len(), a, b, ta, tb)?;
    let mut nb = block_columns(m, n, std::mem::size_of::<T>());
    if m * n * k >= PARALLEL_PRODUCT {
        // At least a block per thread.
        nb = nb.min(n.div_ceil(rayon::current_num_threads()).div_ceil(16) * 16);
    }
    if m == 0 || n == 0 || k == 0 || nb >= n {
        gemm_into(out, a, b, c, p)?;
        epilogue(0..m, 0..n);
        return Ok(());
    }
    if let Some((c, shape)) = c {
        broadcast_into(out, m, n, c, shape)?;
    }
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let (alpha, beta) = (T::of(alpha), c.map(|_| T::of(beta)));
    let dst = SendPtr(out.as_mut_ptr());
    let blocks = n.div_ceil(nb);
    (0..blocks).into_par_iter().for_each(|blk| {
        let (c0, c1) = (blk * nb, ((blk + 1) * nb).min(n));
        let dst = &dst;
        // SAFETY: the block's columns c0..c1 of `out` (row stride n) are
        // written by this task alone; `a` and `b` were checked to hold
        // their matrices, and column c0 of op(b) starts c0 * b_cs in.
        unsafe {
            raw_gemm(
                [m, c1 - c0, k],
                (dst.0.add(c0), n as isize),
                (a.0.as_ptr(), a_rs, a_cs),
                (b.0.as_ptr().offset(c0 as isize * b_cs), b_rs, b_cs),
                alpha,
                beta,
                false,
            );
        }
        epilogue(0..m, c0..c1);
    });
    Ok(())
}

/// A pointer shared by tasks that write disjoint parts of its buffer.
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: only used for disjoint writes, as at the use site.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole `SendPtr`).
    pub fn get(&self) -> *mut T {
        self.0
    }
}
