//! Library ops the CPU backend runs natively: matrix products, convolution
//! and pooling with their gradients, for `f32` and `f64`. Everything else
//! falls back to the interpreter.

use ndarray::{ArrayD, IxDyn};
use rhea_graph::{Op, Shape, TensorType, Value};

use crate::blas::{Float, matmul};
use crate::conv::{self, Geometry};
use crate::pool::{self, Planes};

/// Runs `op` natively if the CPU backend implements it (`None`: the caller
/// falls back to the interpreter).
pub fn library_op(op: &Op, inputs: &[&Value]) -> Option<Result<Value, String>> {
    let matrices = inputs.len() >= 2 && inputs[0].shape().len() == 2 && inputs[1].shape().len() == 2;
    let float = inputs.first().is_some_and(|v| v.dtype().is_float());
    match op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => Some(matmul(inputs, alpha.0, beta.0, *trans_a, *trans_b)),
        Op::Dot if matrices && float => Some(matmul(inputs, 1.0, 0.0, false, false)),
        Op::Conv2d(_)
        | Op::Conv2dInputGrad(_)
        | Op::Conv2dWeightGrad(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::MaxPool2dGrad(_)
        | Op::AvgPool2dGrad(_)
            if float =>
        {
            Some(match inputs.first() {
                Some(Value::F32(_)) => spatial::<f32>(op, inputs).map(Value::F32),
                _ => spatial::<f64>(op, inputs).map(Value::F64),
            })
        }
        _ => None,
    }
}

/// A float tensor's data as one contiguous slice.
trait Elements: Float {
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

/// Convolutions and pooling: the shape rule checks the inputs and gives the
/// output shape, then the kernels run on contiguous data.
fn spatial<T: Elements>(op: &Op, inputs: &[&Value]) -> Result<ArrayD<T>, String> {
    let types: Vec<TensorType> = inputs.iter().map(|v| TensorType::new(v.dtype(), Shape::known(v.shape()))).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out_type = rhea_graph::infer(op, &refs)?;
    let out = out_type.shape.to_known().ok_or("the output shape is not concrete")?;
    let arrays = inputs
        .iter()
        .map(|v| T::array(v).map(|a| a.as_standard_layout()))
        .collect::<Option<Vec<_>>>()
        .ok_or("inputs of mixed dtypes")?;
    let data = |i: usize| arrays[i].as_slice().expect("standard layout");
    let shape = |i: usize| inputs[i].shape();
    let planes = |x: &[usize], y: &[usize]| Planes { planes: x[0] * x[1], h: x[2], w: x[3], oh: y[2], ow: y[3] };
    let result = match op {
        Op::Conv2d(c) => conv::forward(&Geometry::new(shape(0), shape(1), &out, c.groups), c, data(0), data(1)),
        Op::Conv2dInputGrad(g) => {
            let geometry = Geometry::new(&out, shape(1), shape(0), g.conv.groups);
            conv::input_grad(&geometry, &g.conv, data(0), data(1))
        }
        Op::Conv2dWeightGrad(g) => {
            let geometry = Geometry::new(shape(0), &out, shape(1), g.conv.groups);
            conv::weight_grad(&geometry, &g.conv, data(0), data(1))
        }
        Op::MaxPool2d(p) => pool::forward(p, &planes(shape(0), &out), data(0), true),
        Op::AvgPool2d(p) => pool::forward(p, &planes(shape(0), &out), data(0), false),
        Op::MaxPool2dGrad(p) => pool::max_grad(p, &planes(shape(0), shape(1)), data(0), data(1)),
        Op::AvgPool2dGrad(g) => pool::avg_grad(&g.pool, &planes(&out, shape(0)), data(0)),
        other => return Err(format!("{} is not a spatial op", other.name())),
    };
    ArrayD::from_shape_vec(IxDyn(&out), result).map_err(|e| e.to_string())
}
