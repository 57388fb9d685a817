//! The filetests' data: deterministic inputs made from a hash of each
//! element's index, outputs printed compactly, and the comparison of the CPU
//! backend's results with the evaluator's.

use rhea::kernel::{Combine, Inst, Kernel};
use rhea::{BinaryOp, DType, UnaryOp, Value};

/// A well-mixed hash of element `i` of input `k` (splitmix64's finalizer),
/// so that inputs differ from one another and bools are not periodic.
fn hash(i: usize, k: usize) -> u64 {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64 + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Input `k` of a kernel, of `dtype` and `shape`: for `h` the hash of
/// element `i` (row-major) of input `k`, floats are `h % 1000 / 250 - 2`
/// (multiples of 0.004 in [-2, 2)), integers `h % 19 - 9` (in [-9, 9]),
/// bools `h % 2 == 1`.
pub fn input(k: usize, dtype: DType, shape: &[usize]) -> Value {
    let n: usize = shape.iter().product();
    let h = (0..n).map(|i| hash(i, k));
    fn arr<T>(shape: &[usize], v: Vec<T>) -> ndarray::ArrayD<T> {
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), v).expect("one element per point")
    }
    let float = |h: u64| (h % 1000) as f64 / 250.0 - 2.0;
    let int = |h: u64| (h % 19) as i64 - 9;
    match dtype {
        DType::F32 => Value::F32(arr(shape, h.map(|h| float(h) as f32).collect())),
        DType::F64 => Value::F64(arr(shape, h.map(float).collect())),
        DType::I32 => Value::I32(arr(shape, h.map(|h| int(h) as i32).collect())),
        DType::I64 => Value::I64(arr(shape, h.map(int).collect())),
        DType::Bool => Value::Bool(arr(shape, h.map(|h| h % 2 == 1).collect())),
    }
}

/// The elements as text, row-major: `f32` in its shortest exact form,
/// `f64` rounded to 12 significant digits (so that the files do not depend
/// on the last bit of the platform's libm), integers and bools as they are.
fn elements(v: &Value) -> Vec<String> {
    let f64_text = |x: f64| {
        let rounded = if x.is_finite() { format!("{x:.11e}").parse::<f64>().unwrap_or(x) } else { x };
        rounded.to_string()
    };
    match v {
        Value::F32(a) => a.iter().map(|x| x.to_string()).collect(),
        Value::F64(a) => a.iter().map(|&x| f64_text(x)).collect(),
        Value::I32(a) => a.iter().map(|x| x.to_string()).collect(),
        Value::I64(a) => a.iter().map(|x| x.to_string()).collect(),
        Value::Bool(a) => a.iter().map(|x| x.to_string()).collect(),
    }
}

/// The outputs, one header per output (`out0: f32[2,3] =`), then the
/// elements: on the same line for rank 0 and 1, else a line per innermost
/// row.
pub fn show(outputs: &[Value]) -> String {
    let mut out = String::new();
    for (o, v) in outputs.iter().enumerate() {
        let shape = v.shape();
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let elements = elements(v);
        out += &format!("out{o}: {}[{}] =", v.dtype(), dims.join(","));
        if shape.len() <= 1 {
            for e in &elements {
                out += &format!(" {e}");
            }
            out.push('\n');
        } else {
            out.push('\n');
            let row = shape[shape.len() - 1].max(1);
            for chunk in elements.chunks(row) {
                out += &format!("  {}\n", chunk.join(" "));
            }
        }
    }
    out
}

/// True if the CPU backend may round differently from the evaluator: the
/// kernel has an inline transcendental (within a few ulps of the
/// reference) or a float sum, mean or product (summed in another order).
/// Everything else must agree bit for bit.
fn approximate(k: &Kernel) -> bool {
    use UnaryOp::*;
    let transcendental = k.body.iter().any(|(inst, _)| match inst {
        Inst::Unary { op, .. } => {
            matches!(op, Exp | Log | Log1p | Expm1 | Tanh | Sigmoid | Softplus | Sin | Cos | Rsqrt)
        }
        Inst::Binary { op, .. } => *op == BinaryOp::Pow,
        _ => false,
    });
    let reassociated =
        k.reduce.as_ref().is_some_and(|r| matches!(r.combine, Combine::Sum | Combine::Mean | Combine::Prod));
    transcendental || reassociated
}

/// The relative tolerance of a float dtype where rounding may differ.
fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F32 { 1e-5 } else { 1e-12 }
}

/// Compares the CPU backend's outputs with the evaluator's: exactly, or
/// within [`tolerance`] (relative, with an absolute floor of the same
/// size) where [`approximate`] says rounding may differ. NaN equals NaN.
pub fn compare(k: &Kernel, want: &[Value], got: &[Value]) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(format!("{} outputs from the evaluator, {} from the CPU backend", want.len(), got.len()));
    }
    let loose = approximate(k);
    for (o, (w, g)) in want.iter().zip(got).enumerate() {
        if w.dtype() != g.dtype() || w.shape() != g.shape() {
            return Err(format!(
                "out{o}: the evaluator gives {}{:?}, the CPU backend {}{:?}",
                w.dtype(),
                w.shape(),
                g.dtype(),
                g.shape()
            ));
        }
        let (wv, gv) = (w.to_f64_vec(), g.to_f64_vec());
        let tol = if loose && w.dtype().is_float() { tolerance(w.dtype()) } else { 0.0 };
        for (i, (&a, &b)) in wv.iter().zip(&gv).enumerate() {
            let same = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * (1.0 + a.abs());
            if !same {
                return Err(format!(
                    "out{o} element {i}: the evaluator gives {a:e}, the CPU backend {b:e} (tolerance {tol:e})"
                ));
            }
        }
    }
    Ok(())
}
