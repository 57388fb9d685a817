//! Library ops the CPU backend runs natively: matrix products through the
//! `gemm` crate (blocked, vectorized for the host CPU, threaded with rayon
//! for large products). Everything else falls back to the interpreter.

use ndarray::{ArrayD, IxDyn};
use rhea_graph::{Op, Value};

/// Runs `op` natively if the CPU backend implements it (`None`: the caller
/// falls back to the interpreter).
pub fn library_op(op: &Op, inputs: &[&Value]) -> Option<Result<Value, String>> {
    let matrices = inputs.len() >= 2 && inputs[0].shape().len() == 2 && inputs[1].shape().len() == 2;
    match op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => Some(matmul(inputs, alpha.0, beta.0, *trans_a, *trans_b)),
        Op::Dot if matrices && inputs[0].dtype().is_float() => Some(matmul(inputs, 1.0, 0.0, false, false)),
        _ => None,
    }
}

trait Float: Copy + Default + 'static {
    fn of(x: f64) -> Self;
}
impl Float for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
}
impl Float for f64 {
    fn of(x: f64) -> f64 {
        x
    }
}

fn matmul(inputs: &[&Value], alpha: f64, beta: f64, ta: bool, tb: bool) -> Result<Value, String> {
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
    if m == 0 || n == 0 {
        return Ok(out);
    }
    // Strides (in elements) of op(A) and op(B) as stored row-major.
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let threads = if m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: `out` is m x n row-major and owned; `a` and `b` are contiguous
    // with the shapes the strides above describe, and outlive the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            c.is_some(),
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::of(beta),
            T::of(alpha),
            false,
            false,
            false,
            threads,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rhea_graph::F64;

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
