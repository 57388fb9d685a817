//! Library ops the CPU backend runs natively: matrix products, convolution
//! and pooling with their gradients for `f32` and `f64`, and reshapes.
//! Everything else falls back to the interpreter.
//!
//! [`run_native`] works on contiguous slices (the executor's buffers);
//! [`library_op`] wraps it for `Value`s.

use ndarray::{ArrayD, IxDyn};
use rhea_graph::{DType, Op, Shape, TensorType, Value};

use crate::blas::{Float, Product, gemm_into};
use crate::conv::{self, Geometry};
use crate::pool::{self, Planes};
use crate::winograd::Stable;

/// True if the CPU backend runs `op` natively on inputs of `dtype`.
pub fn is_native(op: &Op, dtype: DType, input_ranks: &[usize]) -> bool {
    let float = dtype.is_float();
    match op {
        Op::Gemm { .. } => float,
        // A matrix, or a batch of rows (`[..., K]`, row-major) times a matrix.
        Op::Dot => float && matches!(input_ranks, [a, 2] if *a >= 2),
        Op::Slice { .. } | Op::Pad { .. } => float && input_ranks.len() == 1,
        Op::Conv2d(_)
        | Op::Conv2dInputGrad(_)
        | Op::Conv2dWeightGrad(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::MaxPool2dGrad(_)
        | Op::AvgPool2dGrad(_) => float,
        _ => false,
    }
}

/// Runs `op` (one [`is_native`] accepts) on contiguous inputs of the given
/// shapes, writing the output of `out_shape` (as the shape rule gives it).
/// `stable`: a convolution's weights are unchanged since an earlier call
/// (see [`Stable`]).
pub(crate) fn run_native<T: Float>(
    op: &Op,
    inputs: &[(&[T], &[usize])],
    out_shape: &[usize],
    out: &mut [T],
    stable: Option<&Stable>,
) -> Result<(), String> {
    let data = |i: usize| inputs[i].0;
    let shape = |i: usize| inputs[i].1;
    let planes = |x: &[usize], y: &[usize]| Planes { planes: x[0] * x[1], h: x[2], w: x[3], oh: y[2], ow: y[3] };
    match op {
        Op::Dot if shape(0).len() > 2 => {
            // The leading axes of a batch of rows are the rows of one matrix.
            let a = shape(0);
            let k = a[a.len() - 1];
            let rows = [a[..a.len() - 1].iter().product(), k];
            let product = Product::of(op).expect("dot is a product");
            gemm_into(out, (data(0), &rows), inputs[1], None, product)?
        }
        Op::Gemm { .. } | Op::Dot => {
            let product = Product::of(op).expect("gemm and dot are products");
            gemm_into(out, inputs[0], inputs[1], inputs.get(2).copied(), product)?
        }
        Op::Slice { specs } => crate::movement::slice_into(data(0), shape(0), specs, out)?,
        Op::Pad { widths, value } => crate::movement::pad_into(data(0), shape(0), widths, T::of(value.0), out)?,
        Op::Conv2d(c) => {
            conv::forward(&Geometry::new(shape(0), shape(1), out_shape, c.groups), c, data(0), data(1), out, stable)
        }
        Op::Conv2dInputGrad(g) => {
            let geometry = Geometry::new(out_shape, shape(1), shape(0), g.conv.groups);
            conv::input_grad(&geometry, &g.conv, data(0), data(1), out, stable)
        }
        Op::Conv2dWeightGrad(g) => {
            let geometry = Geometry::new(shape(0), out_shape, shape(1), g.conv.groups);
            conv::weight_grad(&geometry, &g.conv, data(0), data(1), out)
        }
        Op::MaxPool2d(p) => pool::forward(p, &planes(shape(0), out_shape), data(0), true, out),
        Op::AvgPool2d(p) => pool::forward(p, &planes(shape(0), out_shape), data(0), false, out),
        Op::MaxPool2dGrad(p) => pool::max_grad(p, &planes(shape(0), shape(1)), data(0), data(1), out),
        Op::AvgPool2dGrad(g) => pool::avg_grad(&g.pool, &planes(out_shape, shape(0)), data(0), out),
        other => return Err(format!("{} has no native CPU kernel", other.name())),
    }
    Ok(())
}

/// Runs `op` natively if the CPU backend implements it (`None`: the caller
/// falls back to the interpreter).
pub fn library_op(op: &Op, inputs: &[&Value]) -> Option<Result<Value, String>> {
    let dtype = inputs.first()?.dtype();
    let ranks: Vec<usize> = inputs.iter().map(|v| v.shape().len()).collect();
    if !is_native(op, dtype, &ranks) {
        return None;
    }
    Some(match dtype {
        DType::F32 => typed::<f32>(op, inputs).map(Value::F32),
        _ => typed::<f64>(op, inputs).map(Value::F64),
    })
}

/// A float tensor's array.
pub(crate) trait Elements: Float {
    fn array(v: &Value) -> Option<&ArrayD<Self>>;
}
impl Elements for f32 {
    fn array(v: &Value) -> Option<&ArrayD<f32>> {
        if let Value::F32(a) = v { Some(a) } else { None }
    }
}
impl Elements for f64 {
    fn array(v: &Value) -> Option<&ArrayD<f64>> {
        if let Value::F64(a) = v { Some(a) } else { None }
    }
}

/// The shape rule checks the inputs and gives the output shape, then the
/// native kernel runs on contiguous copies where needed.
fn typed<T: Elements>(op: &Op, inputs: &[&Value]) -> Result<ArrayD<T>, String> {
    let types: Vec<TensorType> = inputs.iter().map(|v| TensorType::new(v.dtype(), Shape::known(v.shape()))).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out_type = rhea_graph::infer(op, &refs)?;
    let out_shape = out_type.shape.to_known().ok_or("the output shape is not concrete")?;
    let arrays = inputs
        .iter()
        .map(|v| T::array(v).map(|a| a.as_standard_layout()))
        .collect::<Option<Vec<_>>>()
        .ok_or("inputs of mixed dtypes")?;
    let slices: Vec<(&[T], &[usize])> =
        arrays.iter().map(|a| (a.as_slice().expect("standard layout"), a.shape())).collect();
    let mut out = ArrayD::from_elem(IxDyn(&out_shape), T::default());
    run_native(op, &slices, &out_shape, out.as_slice_mut().expect("fresh array"), None)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::library_op;
    use ndarray::array;
    use rhea_graph::{F64, Op, Value};

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
