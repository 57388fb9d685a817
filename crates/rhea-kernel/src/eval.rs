//! A plain evaluator of kernel IR: the meaning every code generator's output
//! is tested against. It walks the domain point by point in row-major
//! order, for clarity rather than speed.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use rhea_graph::{DType, Dim, Shape, Symbol, Value};

use crate::ir::{Combine, Const, Inst, Kernel};
use crate::scalar::{Scalar, binary, unary};

/// Sizes of symbolic dims.
pub type Bindings = HashMap<Symbol, usize>;

/// Resolves a shape's symbolic dims.
pub fn resolve(shape: &Shape, bindings: &Bindings) -> Result<Vec<usize>, String> {
    shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => Ok(*n),
            Dim::Sym(s) => bindings.get(s).copied().ok_or_else(|| format!("symbolic dim {} is not bound", s.name())),
        })
        .collect()
}

fn flat(v: &Value) -> Vec<Scalar> {
    match v {
        Value::F32(a) => a.iter().map(|&x| Scalar::F32(x)).collect(),
        Value::F64(a) => a.iter().map(|&x| Scalar::F64(x)).collect(),
        Value::I32(a) => a.iter().map(|&x| Scalar::I32(x)).collect(),
        Value::I64(a) => a.iter().map(|&x| Scalar::I64(x)).collect(),
        Value::Bool(a) => a.iter().map(|&x| Scalar::Bool(x)).collect(),
    }
}

fn to_value(data: Vec<Scalar>, dtype: DType, shape: &[usize]) -> Value {
    fn arr<T>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(shape), v).expect("one element per point")
    }
    let cast = data.into_iter().map(move |s| s.cast(dtype));
    match dtype {
        DType::F32 => Value::F32(arr(shape, cast.map(|s| if let Scalar::F32(x) = s { x } else { 0.0 }).collect())),
        DType::F64 => Value::F64(arr(shape, cast.map(|s| if let Scalar::F64(x) = s { x } else { 0.0 }).collect())),
        DType::I32 => Value::I32(arr(shape, cast.map(|s| if let Scalar::I32(x) = s { x } else { 0 }).collect())),
        DType::I64 => Value::I64(arr(shape, cast.map(|s| if let Scalar::I64(x) = s { x } else { 0 }).collect())),
        DType::Bool => Value::Bool(arr(shape, cast.map(|s| matches!(s, Scalar::Bool(true))).collect())),
    }
}

fn constant(c: Const, dtype: DType) -> Scalar {
    c.value(dtype)
}

/// One reduced output's running value.
#[derive(Clone, Copy)]
enum Acc {
    Empty,
    /// Neumaier-compensated float sum and the count.
    Sum(f64, f64, usize),
    Value(Scalar, usize),
}

fn combine(acc: Acc, v: Scalar, how: Combine) -> Acc {
    match (acc, how) {
        (Acc::Empty, Combine::Sum | Combine::Mean) if v.dtype().is_float() => combine(Acc::Sum(0.0, 0.0, 0), v, how),
        (Acc::Sum(sum, comp, n), _) => {
            let x = v.to_f64();
            let t = sum + x;
            let c = if sum.abs() >= x.abs() { (sum - t) + x } else { (x - t) + sum };
            Acc::Sum(t, comp + c, n + 1)
        }
        (Acc::Empty, _) => Acc::Value(v, 1),
        (Acc::Value(a, n), _) => {
            let op = match how {
                Combine::Sum | Combine::Mean => rhea_graph::BinaryOp::Add,
                Combine::Prod => rhea_graph::BinaryOp::Mul,
                Combine::Max => rhea_graph::BinaryOp::Maximum,
                Combine::Min => rhea_graph::BinaryOp::Minimum,
            };
            Acc::Value(binary(op, a, v), n + 1)
        }
    }
}

fn finish(acc: Acc, how: Combine, dtype: DType) -> Result<Scalar, String> {
    Ok(match acc {
        Acc::Sum(sum, comp, n) => {
            let total = if (sum + comp).is_finite() { sum + comp } else { sum };
            let v = if how == Combine::Mean { total / n as f64 } else { total };
            Scalar::F64(v).cast(dtype)
        }
        Acc::Value(v, n) if how == Combine::Mean => Scalar::F64(v.to_f64() / n as f64).cast(dtype),
        Acc::Value(v, _) => v,
        Acc::Empty => match how {
            Combine::Sum => Scalar::I64(0).cast(dtype),
            Combine::Prod => Scalar::I64(1).cast(dtype),
            Combine::Mean => Scalar::F64(f64::NAN).cast(dtype),
            Combine::Max | Combine::Min => return Err("reduction over an empty axis has no identity".into()),
        },
    })
}

/// Runs a kernel on concrete inputs, giving its outputs in order.
pub fn eval_kernel(k: &Kernel, inputs: &[&Value], bindings: &Bindings) -> Result<Vec<Value>, String> {
    k.verify()?;
    if inputs.len() != k.inputs.len() {
        return Err(format!("kernel takes {} inputs, got {}", k.inputs.len(), inputs.len()));
    }
    let dims = resolve(&k.domain, bindings)?;
    let rank = dims.len();
    // Per input: its elements and its stride along each domain axis.
    let mut data = Vec::with_capacity(inputs.len());
    let mut strides = Vec::with_capacity(inputs.len());
    for (i, (spec, v)) in k.inputs.iter().zip(inputs).enumerate() {
        let shape = resolve(&spec.shape, bindings)?;
        if v.dtype() != spec.dtype || v.shape() != shape.as_slice() {
            return Err(format!("input {i}: expected {}{shape:?}, got {}{:?}", spec.dtype, v.dtype(), v.shape()));
        }
        let per_axis = spec.strides(&shape, &dims).map_err(|e| format!("input {i}: {e}"))?;
        data.push(flat(v));
        strides.push(per_axis);
    }
    let reduce = k.reduce.as_ref();
    let reduced_axis = |d: usize| reduce.is_some_and(|r| r.axes.contains(&d));
    let out_dims: Vec<usize> = (0..rank).filter(|&d| !reduced_axis(d)).map(|d| dims[d]).collect();
    let total: usize = dims.iter().product();
    let out_total: usize = out_dims.iter().product();
    let mut stored: Vec<Vec<Scalar>> =
        k.outputs.iter().map(|o| if o.reduced { Vec::new() } else { Vec::with_capacity(total) }).collect();
    let mut accs: Vec<Vec<Acc>> =
        k.outputs.iter().map(|o| if o.reduced { vec![Acc::Empty; out_total] } else { Vec::new() }).collect();
    let mut index = vec![0usize; rank];
    let mut regs: Vec<Scalar> = Vec::with_capacity(k.body.len());
    for _ in 0..total {
        regs.clear();
        for (inst, dtype) in &k.body {
            let r = |x: &u32| regs[*x as usize];
            let v = match inst {
                Inst::Load { input } => {
                    let i = *input as usize;
                    let off: usize = index.iter().zip(&strides[i]).map(|(x, s)| x * s).sum();
                    data[i][off]
                }
                Inst::Const { value } => constant(*value, *dtype),
                Inst::Unary { op, x } => unary(*op, r(x)),
                Inst::Binary { op, a, b } => binary(*op, r(a), r(b)),
                Inst::Select { cond, a, b } => {
                    if matches!(r(cond), Scalar::Bool(true)) {
                        r(a)
                    } else {
                        r(b)
                    }
                }
                Inst::Cast { x } => r(x).cast(*dtype),
            };
            regs.push(v);
        }
        let out_index =
            index.iter().enumerate().filter(|(d, _)| !reduced_axis(*d)).fold(0usize, |acc, (d, &x)| acc * dims[d] + x);
        for (o, out) in k.outputs.iter().enumerate() {
            let v = regs[out.value as usize];
            match (out.reduced, reduce) {
                (true, Some(r)) => accs[o][out_index] = combine(accs[o][out_index], v, r.combine),
                _ => stored[o].push(v),
            }
        }
        // Odometer: the next point in row-major order.
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    let mut outputs = Vec::with_capacity(k.outputs.len());
    for (o, out) in k.outputs.iter().enumerate() {
        let dtype = k.output_dtype(o);
        let shape = resolve(&k.output_shape(o), bindings)?;
        let values = match (out.reduced, reduce) {
            (true, Some(r)) => accs[o].iter().map(|&a| finish(a, r.combine, dtype)).collect::<Result<Vec<_>, _>>()?,
            _ => std::mem::take(&mut stored[o]),
        };
        outputs.push(to_value(values, dtype, &shape));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rhea_graph::BinaryOp;

    /// relu(x + b) for x [2,3] and b [3], with its row sums.
    const BIAS_RELU_SUM: &str = "kernel [2,3] reduce sum axes=[1]
  in0: f32[2,3]
  in1: f32[3] view [_,0]
  %0 = load in0 : f32
  %1 = load in1 : f32
  %2 = add %0, %1 : f32
  %3 = relu %2 : f32
  out0 = %3
  out1 = reduce(%3)
";

    fn bias_relu_sum() -> Kernel {
        Kernel::parse(BIAS_RELU_SUM).unwrap()
    }

    #[test]
    fn broadcast_views_body_and_reduction() {
        let k = bias_relu_sum();
        let x = Value::from(array![[1.0f32, -2.0, 3.0], [-4.0, 5.0, -6.0]]);
        let b = Value::from(array![1.0f32, 1.0, -1.0]);
        let out = eval_kernel(&k, &[&x, &b], &Bindings::new()).unwrap();
        assert_eq!(out[0], Value::from(array![[2.0f32, 0.0, 2.0], [0.0, 6.0, 0.0]]));
        assert_eq!(out[1], Value::from(array![4.0f32, 6.0]));
        assert_eq!(
            k.to_string(),
            "kernel [2,3] reduce sum axes=[1]\n  in0: f32[2,3]\n  in1: f32[3] view [_,0]\n  %0 = load in0 : f32\n  \
             %1 = load in1 : f32\n  %2 = add %0, %1 : f32\n  %3 = relu %2 : f32\n  out0 = %3\n  out1 = reduce(%3)\n"
        );
    }

    #[test]
    fn transposed_views_and_constants() {
        // y[i, j] = x[j, i] * 2 over a [3,2] domain from x [2,3].
        let k = Kernel::parse(
            "kernel [3,2]
               in0: f32[2,3] view [1,0]
               %0 = load in0 : f32
               %1 = const 2 : f32
               %2 = mul %0, %1 : f32
               out0 = %2",
        )
        .unwrap();
        let x = Value::from(array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let out = eval_kernel(&k, &[&x], &Bindings::new()).unwrap();
        assert_eq!(out[0], Value::from(array![[2.0f32, 8.0], [4.0, 10.0], [6.0, 12.0]]));
    }

    #[test]
    fn malformed_kernels_and_inputs_are_errors() {
        let mut k = bias_relu_sum();
        let x = Value::from(array![[1.0f32, 2.0]]);
        let b = Value::from(array![1.0f32, 1.0, 1.0]);
        assert!(eval_kernel(&k, &[&x, &b], &Bindings::new()).unwrap_err().contains("input 0"));
        k.body[2] = (Inst::Binary { op: BinaryOp::Add, a: 0, b: 5 }, DType::F32);
        assert!(k.verify().unwrap_err().contains("before it is defined"));
        let k = Kernel::parse(
            "kernel [2,0] reduce max axes=[1]
               in0: f32[2,0]
               in1: f32[0] view [_,0]
               %0 = load in0 : f32
               %1 = load in1 : f32
               %2 = add %0, %1 : f32
               %3 = relu %2 : f32
               out0 = %3
               out1 = reduce(%3)",
        )
        .unwrap();
        let x = Value::from(ndarray::Array2::<f32>::zeros((2, 0)));
        let b = Value::from(ndarray::Array1::<f32>::zeros(0));
        assert!(eval_kernel(&k, &[&x, &b], &Bindings::new()).unwrap_err().contains("no identity"));
    }
}
