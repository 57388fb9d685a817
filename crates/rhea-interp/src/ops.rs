//! The semantics of every op, on `ndarray`. Each function here is the
//! definition other backends are measured against.
//!
//! Ops are type-checked by `rhea_graph::infer` before they get here, so
//! dtypes and ranks are known to fit; what can still fail is what depends on
//! values (an index out of range).

use ndarray::{Array2, ArrayD, Axis, IxDyn, Slice, Zip};
use rhea_graph::{
    ArgReduceOp, BinaryOp, DType, Dim, Normal, Op, ReduceOp, Shape, SliceSpec, TensorType, UnaryOp, Uniform, Value, rng,
};

use crate::{Bindings, window};
use rhea_kernel::num::{Num, Prim};
use rhea_kernel::scalar::{arith, unary_f64};

type R<T> = Result<T, String>;

/// Evaluates `op` on `inputs` after resolving its symbolic dims and checking
/// its type rule.
pub(crate) fn eval(op: &Op, inputs: &[&Value], bindings: &Bindings) -> R<Value> {
    if matches!(op, Op::Scan(_) | Op::ScanResult { .. }) {
        return Err(format!("{} has several values: run_scan evaluates a loop", op.name()));
    }
    let op = resolve(op, bindings)?;
    let types: Vec<TensorType> = inputs.iter().map(|v| TensorType::new(v.dtype(), Shape::known(v.shape()))).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out = rhea_graph::infer(&op, &refs)?;
    let out_shape = out.shape.to_known().expect("inputs and resolved attributes are concrete");
    // The interpreter works in f64 where it computes: refuse what it cannot allocate.
    let elements = out_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if elements.and_then(|n| n.checked_mul(8)).is_none_or(|b| b > isize::MAX as usize) {
        return Err(format!("the output {out} is too large to evaluate"));
    }
    match &op {
        Op::Input { .. } | Op::Shared { .. } => Err(format!("{} nodes are fed, not evaluated", op.name())),
        Op::Const { value } => Ok(value.value().clone()),
        Op::Unary { fun } => unary(*fun, inputs[0]),
        Op::Binary { fun } => binary(*fun, inputs[0], inputs[1]),
        Op::Where => select(inputs[0], inputs[1], inputs[2]),
        Op::Cast { to } => Ok(cast(inputs[0], *to)),
        Op::Reduce { fun, axes, keepdims } => reduce(*fun, inputs[0], axes, &out_shape, *keepdims),
        Op::ArgReduce { fun, axis, .. } => arg_reduce(*fun, inputs[0], *axis, &out_shape),
        Op::Dot => dot(inputs[0], inputs[1], &out_shape),
        Op::Gemm { alpha, beta, trans_a, trans_b } => gemm(inputs, alpha.0, beta.0, *trans_a, *trans_b, &out_shape),
        Op::Reshape { .. } => Ok(reshape(inputs[0], &out_shape)),
        Op::DimShuffle { pattern } => Ok(dimshuffle(inputs[0], pattern)),
        Op::BroadcastTo { .. } => Ok(
            rhea_graph::with_array!(inputs[0], a => a.broadcast(IxDyn(&out_shape)).expect("checked by infer").to_owned().into()),
        ),
        Op::Concat { axis } => concat(inputs, *axis),
        Op::Slice { specs } => slice(inputs[0], specs),
        Op::Gather { axis } => gather(inputs[0], inputs[1], *axis, &out_shape),
        Op::OneHot { depth, dtype } => Ok(one_hot(inputs[0], *depth, *dtype, &out_shape)),
        Op::Pad { widths, value } => Ok(pad(inputs[0], widths, value.0, &out_shape)),
        Op::Softmax { axis } => Ok(float_lanes(inputs[0], *axis, softmax_lane)),
        Op::LogSoftmax { axis } => Ok(float_lanes(inputs[0], *axis, log_softmax_lane)),
        Op::Conv2d(c) => Ok(window::conv2d(inputs[0], inputs[1], c, &out_shape)),
        Op::Conv2dInputGrad(g) => Ok(window::conv2d_input_grad(inputs[0], inputs[1], &g.conv, &out_shape)),
        Op::Conv2dWeightGrad(g) => Ok(window::conv2d_weight_grad(inputs[0], inputs[1], &g.conv, &out_shape)),
        Op::MaxPool2d(p) => Ok(window::pool2d(inputs[0], p, &out_shape, true)),
        Op::AvgPool2d(p) => Ok(window::pool2d(inputs[0], p, &out_shape, false)),
        Op::MaxPool2dGrad(p) => Ok(window::max_pool2d_grad(inputs[0], inputs[1], p)),
        Op::AvgPool2dGrad(g) => Ok(window::avg_pool2d_grad(inputs[0], &g.pool, &out_shape)),
        Op::MaxPool2dGather(p) => Ok(window::max_pool2d_gather(inputs[0], inputs[1], p, &out_shape)),
        Op::StopGradient => Ok(inputs[0].clone()),
        Op::Dropout { rate, seed, training } => Ok(dropout(inputs[0], rate.0, *seed, *training, key(inputs.get(1)))),
        Op::RandomUniform(u) => Ok(random_uniform(u, &out_shape, key(inputs.first()))),
        Op::RandomNormal(n) => Ok(random_normal(n, &out_shape, key(inputs.first()))),
        Op::Scan(_) | Op::ScanResult { .. } => Err(format!("{} is evaluated as a step", op.name())),
    }
}

/// Replaces symbolic dims in an op's attributes by their bound sizes.
fn resolve(op: &Op, bindings: &Bindings) -> R<Op> {
    let shape = |s: &Shape| -> R<Shape> {
        s.iter()
            .map(|d| match d {
                Dim::Known(n) => Ok(Dim::Known(*n)),
                Dim::Sym(sym) => bindings
                    .get(sym)
                    .map(|&n| Dim::Known(n))
                    .ok_or_else(|| format!("symbolic dim {} is not bound by any input", sym.name())),
            })
            .collect()
    };
    Ok(match op {
        Op::Reshape { shape: s } => Op::Reshape { shape: shape(s)? },
        Op::BroadcastTo { shape: s } => Op::BroadcastTo { shape: shape(s)? },
        Op::RandomUniform(u) => Op::RandomUniform(Box::new(Uniform { shape: shape(&u.shape)?, ..(**u).clone() })),
        Op::RandomNormal(n) => Op::RandomNormal(Box::new(Normal { shape: shape(&n.shape)?, ..(**n).clone() })),
        other => other.clone(),
    })
}

fn key(v: Option<&&Value>) -> i64 {
    match v {
        Some(Value::I64(a)) => a.iter().next().copied().unwrap_or(0),
        _ => 0,
    }
}

/// Applies `$f` (generic over [`Num`]) to a numeric value's array, giving a
/// value of the same dtype.
macro_rules! numeric {
    ($v:expr, $a:ident => $body:expr) => {
        match $v {
            Value::F32($a) => Value::F32($body),
            Value::F64($a) => Value::F64($body),
            Value::I32($a) => Value::I32($body),
            Value::I64($a) => Value::I64($body),
            Value::Bool(_) => return Err("bool has no arithmetic".into()),
        }
    };
}

/// Elementwise unary functions: floats through the shared scalar definition
/// (`rhea_kernel::scalar`), integers with wrapping arithmetic.
fn unary(fun: UnaryOp, x: &Value) -> R<Value> {
    use UnaryOp::*;
    Ok(match fun {
        Not => match x {
            Value::Bool(a) => Value::Bool(a.mapv(|b| !b)),
            other => return Err(format!("not of {}", other.dtype())),
        },
        IsNan => Value::Bool(predicate(x, f64::is_nan)),
        IsInf => Value::Bool(predicate(x, f64::is_infinite)),
        _ => match x {
            Value::F32(a) => Value::F32(a.mapv(|v| unary_f64(fun, v as f64) as f32)),
            Value::F64(a) => Value::F64(a.mapv(|v| unary_f64(fun, v))),
            Value::I32(a) => Value::I32(a.mapv(|v| rhea_kernel::scalar::unary_int(fun, v))),
            Value::I64(a) => Value::I64(a.mapv(|v| rhea_kernel::scalar::unary_int(fun, v))),
            Value::Bool(_) => return Err(format!("{} of bool", fun.name())),
        },
    })
}

fn predicate(x: &Value, f: impl Fn(f64) -> bool) -> ArrayD<bool> {
    match x {
        Value::F32(a) => a.mapv(|v| f(v as f64)),
        Value::F64(a) => a.mapv(f),
        other => ArrayD::from_elem(IxDyn(other.shape()), false),
    }
}

/// numpy broadcasting of two arrays, then `f` elementwise.
fn zip2<A: Clone, B: Clone, C>(a: &ArrayD<A>, b: &ArrayD<B>, f: impl Fn(A, B) -> C) -> R<ArrayD<C>> {
    let shape = broadcast_dims(a.shape(), b.shape())?;
    let av = a.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?;
    let bv = b.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?;
    Ok(Zip::from(&av).and(&bv).map_collect(|x, y| f(x.clone(), y.clone())))
}

fn broadcast_dims(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let s = rhea_graph::broadcast_shapes(&Shape::known(a), &Shape::known(b))?;
    Ok(s.to_known().expect("known shapes broadcast to known shapes"))
}

// The comparison closures serve every dtype, bool included.
#[allow(clippy::bool_comparison)]
fn binary(fun: BinaryOp, a: &Value, b: &Value) -> R<Value> {
    use BinaryOp::*;
    macro_rules! same {
        ($x:ident, $y:ident => $body:expr) => {
            match (a, b) {
                (Value::F32($x), Value::F32($y)) => Value::F32($body),
                (Value::F64($x), Value::F64($y)) => Value::F64($body),
                (Value::I32($x), Value::I32($y)) => Value::I32($body),
                (Value::I64($x), Value::I64($y)) => Value::I64($body),
                _ => return Err(format!("{} of {} and {}", fun.name(), a.dtype(), b.dtype())),
            }
        };
    }
    macro_rules! compare {
        ($f:expr) => {
            Value::Bool(match (a, b) {
                (Value::F32(x), Value::F32(y)) => zip2(x, y, $f)?,
                (Value::F64(x), Value::F64(y)) => zip2(x, y, $f)?,
                (Value::I32(x), Value::I32(y)) => zip2(x, y, $f)?,
                (Value::I64(x), Value::I64(y)) => zip2(x, y, $f)?,
                (Value::Bool(x), Value::Bool(y)) => zip2(x, y, $f)?,
                _ => return Err(format!("{} of {} and {}", fun.name(), a.dtype(), b.dtype())),
            })
        };
    }
    macro_rules! float2 {
        ($f:expr) => {
            match (a, b) {
                (Value::F32(x), Value::F32(y)) => Value::F32(zip2(x, y, |p, q| $f(p as f64, q as f64) as f32)?),
                (Value::F64(x), Value::F64(y)) => Value::F64(zip2(x, y, $f)?),
                _ => return Err(format!("{} of {} and {}", fun.name(), a.dtype(), b.dtype())),
            }
        };
    }
    macro_rules! logical {
        ($f:expr) => {
            match (a, b) {
                (Value::Bool(x), Value::Bool(y)) => Value::Bool(zip2(x, y, $f)?),
                _ => return Err(format!("{} of {} and {}", fun.name(), a.dtype(), b.dtype())),
            }
        };
    }
    Ok(match fun {
        Add | Sub | Mul | Maximum | Minimum => same!(x, y => zip2(x, y, |p, q| arith(fun, p, q))?),
        Div | Pow => float2!(|p: f64, q: f64| arith(fun, p, q)),
        Eq => compare!(|p, q| p == q),
        Ne => compare!(|p, q| p != q),
        Lt => compare!(|p, q| p < q),
        Le => compare!(|p, q| p <= q),
        Gt => compare!(|p, q| p > q),
        Ge => compare!(|p, q| p >= q),
        And => logical!(|p, q| p && q),
        Or => logical!(|p, q| p || q),
    })
}

fn select(cond: &Value, a: &Value, b: &Value) -> R<Value> {
    let Value::Bool(c) = cond else { return Err("where needs a bool condition".into()) };
    macro_rules! pick {
        ($x:ident, $y:ident) => {{
            let shape = broadcast_dims(&broadcast_dims(c.shape(), $x.shape())?, $y.shape())?;
            let sh = IxDyn(&shape);
            let (cv, xv, yv) = (c.broadcast(sh.clone()), $x.broadcast(sh.clone()), $y.broadcast(sh));
            let (cv, xv, yv) = (cv.ok_or("broadcast")?, xv.ok_or("broadcast")?, yv.ok_or("broadcast")?);
            Zip::from(&cv).and(&xv).and(&yv).map_collect(|&c, x, y| if c { x.clone() } else { y.clone() })
        }};
    }
    Ok(match (a, b) {
        (Value::F32(x), Value::F32(y)) => Value::F32(pick!(x, y)),
        (Value::F64(x), Value::F64(y)) => Value::F64(pick!(x, y)),
        (Value::I32(x), Value::I32(y)) => Value::I32(pick!(x, y)),
        (Value::I64(x), Value::I64(y)) => Value::I64(pick!(x, y)),
        (Value::Bool(x), Value::Bool(y)) => Value::Bool(pick!(x, y)),
        _ => return Err(format!("where of {} and {}", a.dtype(), b.dtype())),
    })
}

/// Converts every element like Rust's `as` (see [`Prim`]).
pub(crate) fn cast(v: &Value, to: DType) -> Value {
    rhea_graph::with_array!(v, a => match to {
        DType::F32 => Value::F32(a.mapv(Prim::as_f32)),
        DType::F64 => Value::F64(a.mapv(Prim::as_f64)),
        DType::I32 => Value::I32(a.mapv(Prim::as_i32)),
        DType::I64 => Value::I64(a.mapv(Prim::as_i64)),
        DType::Bool => Value::Bool(a.mapv(Prim::as_bool)),
    })
}

/// Rows of `a` with the `axes` moved last and flattened: `[kept, reduced]`.
fn rows<T: Clone>(a: &ArrayD<T>, axes: &[usize]) -> Array2<T> {
    let kept: Vec<usize> = (0..a.ndim()).filter(|i| !axes.contains(i)).collect();
    let outer: usize = kept.iter().map(|&i| a.shape()[i]).product();
    let inner: usize = axes.iter().map(|&i| a.shape()[i]).product();
    let order: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let moved = a.view().permuted_axes(IxDyn(&order));
    let flat: Vec<T> = moved.iter().cloned().collect();
    Array2::from_shape_vec((outer, inner), flat).expect("row-major data of the permuted shape")
}

fn from_rows<T>(data: Vec<T>, shape: &[usize]) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("one value per output element")
}

/// Neumaier-compensated sum: the float sums here are the reference.
fn exact_sum(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for x in xs {
        let t = sum + x;
        if sum.abs() >= x.abs() {
            comp += (sum - t) + x;
        } else {
            comp += (x - t) + sum;
        }
        sum = t;
    }
    let total = sum + comp;
    // Infinities and NaN make the compensation meaningless.
    if total.is_finite() { total } else { sum }
}

fn reduce_row<T: Num>(fun: ReduceOp, row: ndarray::ArrayView1<T>) -> R<T> {
    let floats = || row.iter().map(|x| x.to_f64());
    Ok(match fun {
        ReduceOp::Sum if T::IS_FLOAT => T::from_f64(exact_sum(floats())),
        ReduceOp::Sum => row.iter().fold(T::ZERO, |acc, &x| acc.add(x)),
        ReduceOp::Prod if T::IS_FLOAT => T::from_f64(floats().product()),
        ReduceOp::Prod => row.iter().fold(T::ONE, |acc, &x| acc.mul(x)),
        ReduceOp::Mean => T::from_f64(exact_sum(floats()) / row.len() as f64),
        ReduceOp::Max | ReduceOp::Min => {
            let mut it = row.iter().copied();
            let first = it.next().ok_or("reduction over an empty axis has no identity")?;
            if fun == ReduceOp::Max { it.fold(first, Num::max_nan) } else { it.fold(first, Num::min_nan) }
        }
        ReduceOp::LogSumExp => T::from_f64(logsumexp(&floats().collect::<Vec<_>>())),
    })
}

fn logsumexp(xs: &[f64]) -> f64 {
    let m =
        xs.iter().copied().fold(f64::NEG_INFINITY, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) });
    if !m.is_finite() {
        return m;
    }
    m + exact_sum(xs.iter().map(|x| (x - m).exp())).ln()
}

fn reduce(fun: ReduceOp, x: &Value, axes: &[usize], out_shape: &[usize], _keepdims: bool) -> R<Value> {
    fn go<T: Num>(fun: ReduceOp, a: &ArrayD<T>, axes: &[usize], out: &[usize]) -> R<ArrayD<T>> {
        let r = rows(a, axes);
        let data = r.outer_iter().map(|row| reduce_row(fun, row)).collect::<R<Vec<T>>>()?;
        Ok(from_rows(data, out))
    }
    Ok(numeric!(x, a => go(fun, a, axes, out_shape)?))
}

fn arg_reduce(fun: ArgReduceOp, x: &Value, axis: usize, out_shape: &[usize]) -> R<Value> {
    fn go<T: Num>(fun: ArgReduceOp, a: &ArrayD<T>, axis: usize, out: &[usize]) -> ArrayD<i64> {
        let r = rows(a, &[axis]);
        let data = r
            .outer_iter()
            .map(|row| {
                let mut best = 0usize;
                for (i, &v) in row.iter().enumerate() {
                    let b = row[best];
                    if b.is_nan() {
                        break;
                    }
                    let better = match fun {
                        ArgReduceOp::Argmax => v > b,
                        ArgReduceOp::Argmin => v < b,
                    };
                    if v.is_nan() || better {
                        best = i;
                    }
                }
                best as i64
            })
            .collect();
        from_rows(data, out)
    }
    Ok(Value::I64(match x {
        Value::F32(a) => go(fun, a, axis, out_shape),
        Value::F64(a) => go(fun, a, axis, out_shape),
        Value::I32(a) => go(fun, a, axis, out_shape),
        Value::I64(a) => go(fun, a, axis, out_shape),
        Value::Bool(_) => return Err("argmax of bool".into()),
    }))
}

/// matmul's operands as row-major batches: vectors promoted to matrices,
/// batch dims broadcast. Returns (a, b, batches, m, k, n).
fn batched<T: Num>(a: &ArrayD<T>, b: &ArrayD<T>) -> (Vec<T>, Vec<T>, usize, usize, usize, usize) {
    let a2 = if a.ndim() == 1 { a.view().insert_axis(Axis(0)) } else { a.view() };
    let b2 = if b.ndim() == 1 { b.view().insert_axis(Axis(1)) } else { b.view() };
    let (m, k) = (a2.shape()[a2.ndim() - 2], a2.shape()[a2.ndim() - 1]);
    let n = b2.shape()[b2.ndim() - 1];
    let batch =
        broadcast_dims(&a2.shape()[..a2.ndim() - 2], &b2.shape()[..b2.ndim() - 2]).expect("checked by the shape rule");
    let with = |r, c| {
        let mut s = batch.clone();
        s.extend([r, c]);
        IxDyn(&s)
    };
    let av = a2.broadcast(with(m, k)).expect("batch dims broadcast").iter().copied().collect();
    let bv = b2.broadcast(with(k, n)).expect("batch dims broadcast").iter().copied().collect();
    (av, bv, batch.iter().product(), m, k, n)
}

/// numpy `matmul`. Floats accumulate in `f64` and round once; integers
/// wrap, accumulating in their own type.
fn dot(a: &Value, b: &Value, out_shape: &[usize]) -> R<Value> {
    fn go<T: Num>(a: &ArrayD<T>, b: &ArrayD<T>, out: &[usize]) -> ArrayD<T> {
        let (av, bv, nb, m, k, n) = batched(a, b);
        let mut data = Vec::with_capacity(nb * m * n);
        for bi in 0..nb {
            let (ab, bb) = (&av[bi * m * k..(bi + 1) * m * k], &bv[bi * k * n..(bi + 1) * k * n]);
            if T::IS_FLOAT {
                let am = Array2::from_shape_fn((m, k), |(i, p)| ab[i * k + p].to_f64());
                let bm = Array2::from_shape_fn((k, n), |(p, j)| bb[p * n + j].to_f64());
                data.extend(am.dot(&bm).iter().map(|&x| T::from_f64(x)));
            } else {
                for i in 0..m {
                    for j in 0..n {
                        data.push((0..k).fold(T::ZERO, |acc, p| acc.add(ab[i * k + p].mul(bb[p * n + j]))));
                    }
                }
            }
        }
        from_rows(data, out)
    }
    Ok(match (a, b) {
        (Value::F32(x), Value::F32(y)) => Value::F32(go(x, y, out_shape)),
        (Value::F64(x), Value::F64(y)) => Value::F64(go(x, y, out_shape)),
        (Value::I32(x), Value::I32(y)) => Value::I32(go(x, y, out_shape)),
        (Value::I64(x), Value::I64(y)) => Value::I64(go(x, y, out_shape)),
        _ => return Err(format!("dot of {} and {}", a.dtype(), b.dtype())),
    })
}

/// `alpha * op(A) @ op(B) + beta * C`, in `f64`, rounded once.
fn gemm(inputs: &[&Value], alpha: f64, beta: f64, ta: bool, tb: bool, out_shape: &[usize]) -> R<Value> {
    let mat = |v: &Value, t: bool| -> Array2<f64> {
        let a = as_f64(v).into_dimensionality::<ndarray::Ix2>().expect("gemm inputs are matrices");
        if t { a.reversed_axes() } else { a }
    };
    let mut out = (mat(inputs[0], ta).dot(&mat(inputs[1], tb)) * alpha).into_dyn();
    if let Some(c) = inputs.get(2) {
        let c = as_f64(c);
        let c = c.broadcast(IxDyn(out_shape)).ok_or("gemm: C does not broadcast")?;
        out.zip_mut_with(&c, |o, &c| *o += beta * c);
    }
    Ok(back(out, inputs[0].dtype()))
}

fn reshape(x: &Value, shape: &[usize]) -> Value {
    rhea_graph::with_array!(x, a => {
        let data: Vec<_> = a.iter().cloned().collect();
        from_rows(data, shape).into()
    })
}

fn dimshuffle(x: &Value, pattern: &[Option<usize>]) -> Value {
    rhea_graph::with_array!(x, a => {
        let kept: Vec<usize> = pattern.iter().flatten().copied().collect();
        let mut v = a.view();
        // Drop the size-1 axes left out, from the back so indices stay valid.
        for ax in (0..a.ndim()).rev() {
            if !kept.contains(&ax) {
                v = v.index_axis_move(Axis(ax), 0);
            }
        }
        let renumber = |ax: usize| ax - (0..ax).filter(|d| !kept.contains(d)).count();
        let order: Vec<usize> = kept.iter().map(|&ax| renumber(ax)).collect();
        let mut v = v.permuted_axes(IxDyn(&order));
        for (i, p) in pattern.iter().enumerate() {
            if p.is_none() {
                v = v.insert_axis(Axis(i));
            }
        }
        v.as_standard_layout().into_owned().into()
    })
}

fn concat(inputs: &[&Value], axis: usize) -> R<Value> {
    macro_rules! join {
        ($variant:ident) => {{
            let views = inputs
                .iter()
                .map(|v| match v {
                    Value::$variant(a) => Ok(a.view()),
                    other => Err(format!("concat of {} and {}", inputs[0].dtype(), other.dtype())),
                })
                .collect::<R<Vec<_>>>()?;
            Value::$variant(ndarray::concatenate(Axis(axis), &views).map_err(|e| e.to_string())?)
        }};
    }
    Ok(match inputs[0] {
        Value::F32(_) => join!(F32),
        Value::F64(_) => join!(F64),
        Value::I32(_) => join!(I32),
        Value::I64(_) => join!(I64),
        Value::Bool(_) => join!(Bool),
    })
}

fn slice(x: &Value, specs: &[SliceSpec]) -> R<Value> {
    let mut picks = Vec::with_capacity(specs.len());
    for (ax, spec) in specs.iter().enumerate() {
        picks.push(spec.indices(x.shape()[ax])?);
    }
    Ok(rhea_graph::with_array!(x, a => {
        let mut out = a.clone();
        for (ax, idx) in picks.iter().enumerate() {
            out = out.select(Axis(ax), idx);
        }
        out.into()
    }))
}

fn index_list(idx: &Value) -> Vec<i64> {
    match idx {
        Value::I32(a) => a.iter().map(|&v| v as i64).collect(),
        Value::I64(a) => a.iter().copied().collect(),
        _ => Vec::new(),
    }
}

fn gather(x: &Value, idx: &Value, axis: usize, out_shape: &[usize]) -> R<Value> {
    let len = x.shape()[axis];
    let picks = index_list(idx)
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + len as i64 } else { i };
            if j < 0 || j >= len as i64 {
                Err(format!("index {i} is out of range for axis {axis} of size {len}"))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<R<Vec<usize>>>()?;
    Ok(rhea_graph::with_array!(x, a => {
        let taken = a.select(Axis(axis), &picks);
        let data: Vec<_> = taken.iter().cloned().collect();
        from_rows(data, out_shape).into()
    }))
}

fn one_hot(idx: &Value, depth: usize, dtype: DType, out_shape: &[usize]) -> Value {
    let mut data = vec![0.0f64; out_shape.iter().product()];
    for (p, i) in index_list(idx).into_iter().enumerate() {
        if (0..depth as i64).contains(&i) {
            data[p * depth + i as usize] = 1.0;
        }
    }
    Value::from_f64(dtype, out_shape, &data).expect("data sized to the shape")
}

fn pad(x: &Value, widths: &[(usize, usize)], value: f64, out_shape: &[usize]) -> Value {
    let fill = cast(&Value::scalar(value, DType::F64), x.dtype());
    macro_rules! go {
        ($a:ident, $f:ident) => {{
            let fv = $f.iter().next().cloned().expect("a scalar has one element");
            let mut out = ArrayD::from_elem(IxDyn(out_shape), fv);
            out.slice_each_axis_mut(|ax| {
                let (lo, _) = widths[ax.axis.index()];
                Slice::from(lo..lo + $a.shape()[ax.axis.index()])
            })
            .assign($a);
            out.into()
        }};
    }
    match (x, &fill) {
        (Value::F32(a), Value::F32(f)) => go!(a, f),
        (Value::F64(a), Value::F64(f)) => go!(a, f),
        (Value::I32(a), Value::I32(f)) => go!(a, f),
        (Value::I64(a), Value::I64(f)) => go!(a, f),
        (Value::Bool(a), Value::Bool(f)) => go!(a, f),
        _ => unreachable!("the fill was cast to the input's dtype"),
    }
}

/// Applies `f` to every lane along `axis` of a float value, in `f64`.
fn float_lanes(x: &Value, axis: usize, f: fn(&[f64]) -> Vec<f64>) -> Value {
    let mut a = cast(x, DType::F64);
    if let Value::F64(arr) = &mut a {
        for mut lane in arr.lanes_mut(Axis(axis)) {
            let v: Vec<f64> = lane.iter().copied().collect();
            for (dst, src) in lane.iter_mut().zip(f(&v)) {
                *dst = src;
            }
        }
    }
    cast(&a, x.dtype())
}

fn lane_max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) })
}

fn softmax_lane(v: &[f64]) -> Vec<f64> {
    let m = lane_max(v);
    let e: Vec<f64> = v.iter().map(|x| (x - m).exp()).collect();
    let s = exact_sum(e.iter().copied());
    e.iter().map(|x| x / s).collect()
}

fn log_softmax_lane(v: &[f64]) -> Vec<f64> {
    let m = lane_max(v);
    let lse = exact_sum(v.iter().map(|x| (x - m).exp())).ln();
    v.iter().map(|x| x - m - lse).collect()
}

/// A value's elements as `f64` (exact for every dtype but the widest integers).
pub(crate) fn as_f64(x: &Value) -> ArrayD<f64> {
    match cast(x, DType::F64) {
        Value::F64(a) => a,
        _ => unreachable!("cast to f64 gives f64"),
    }
}

/// An `f64` result rounded once to `dtype`.
pub(crate) fn back(a: ArrayD<f64>, dtype: DType) -> Value {
    cast(&Value::F64(a), dtype)
}

fn dropout(x: &Value, rate: f64, seed: u64, training: bool, key: i64) -> Value {
    if !training {
        return x.clone();
    }
    let stream = rng::stream(seed, key);
    let scale = 1.0 / (1.0 - rate);
    let mut a = as_f64(x);
    for (i, v) in a.iter_mut().enumerate() {
        *v = if rng::uniform01(stream, i as u64) < rate { 0.0 } else { *v * scale };
    }
    back(a, x.dtype())
}

fn random_uniform(u: &Uniform, shape: &[usize], key: i64) -> Value {
    let stream = rng::stream(u.seed, key);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| u.low.0 + (u.high.0 - u.low.0) * rng::uniform01(stream, i as u64)).collect();
    Value::from_f64(u.dtype, shape, &data).expect("data sized to the shape")
}

fn random_normal(nrm: &Normal, shape: &[usize], key: i64) -> Value {
    let stream = rng::stream(nrm.seed, key);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| nrm.mean.0 + nrm.std.0 * rng::standard_normal(stream, i as u64)).collect();
    Value::from_f64(nrm.dtype, shape, &data).expect("data sized to the shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rhea_graph::{Conv2d, F64};

    fn eval0(op: Op, inputs: &[&Value]) -> Value {
        eval(&op, inputs, &Bindings::new()).unwrap()
    }

    #[test]
    fn dropout_keeps_expected_share_and_scales() {
        let x = Value::from(ndarray::Array1::<f64>::ones(10_000));
        let y = eval0(Op::Dropout { rate: F64(0.3), seed: 5, training: true }, &[&x]).to_f64_vec();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.7).abs() < 0.02, "{kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
        // Inference is the identity; the same seed gives the same mask; a key changes it.
        assert_eq!(eval0(Op::Dropout { rate: F64(0.3), seed: 5, training: false }, &[&x]), x);
        let again = eval0(Op::Dropout { rate: F64(0.3), seed: 5, training: true }, &[&x]).to_f64_vec();
        assert_eq!(y, again);
        let k = Value::from(1i64);
        let keyed = eval0(Op::Dropout { rate: F64(0.3), seed: 5, training: true }, &[&x, &k]).to_f64_vec();
        assert_ne!(y, keyed);
    }

    #[test]
    fn random_normal_has_requested_moments() {
        let op = Op::RandomNormal(Box::new(Normal {
            shape: Shape::known(&[20_000]),
            dtype: DType::F64,
            mean: F64(2.0),
            std: F64(0.5),
            seed: 1,
        }));
        let v = eval0(op, &[]).to_f64_vec();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((m - 2.0).abs() < 0.02 && (sd - 0.5).abs() < 0.02, "{m} {sd}");
    }

    #[test]
    fn gemm_transposes_scales_and_adds() {
        let a = Value::from(array![[1.0f32, 2.0], [3.0, 4.0]]);
        let b = Value::from(array![[1.0f32, 0.0], [1.0, 1.0]]);
        let c = Value::from(array![10.0f32, 20.0]);
        let op = |ta, tb| Op::Gemm { alpha: F64(2.0), beta: F64(0.5), trans_a: ta, trans_b: tb };
        // 2 * A @ B + 0.5 * C = 2 * [[3, 2], [7, 4]] + [5, 10]
        assert_eq!(eval0(op(false, false), &[&a, &b, &c]), Value::from(array![[11.0f32, 14.0], [19.0, 18.0]]));
        // A^T @ B^T = [[1, 4], [2, 6]]
        let t = Op::Gemm { alpha: F64(1.0), beta: F64(0.0), trans_a: true, trans_b: true };
        assert_eq!(eval0(t, &[&a, &b]), Value::from(array![[1.0f32, 4.0], [2.0, 6.0]]));
    }

    #[test]
    fn hand_worked_values() {
        // 2x2 input, one 2x2 filter, padding 1: each output sums the overlap.
        let x = Value::from(array![[[[1.0f32, 2.0], [3.0, 4.0]]]]);
        let w = Value::from(array![[[[1.0f32, 1.0], [1.0, 1.0]]]]);
        let conv = Op::Conv2d(Box::new(Conv2d { padding: [1, 1], ..Conv2d::default() }));
        assert_eq!(
            eval0(conv, &[&x, &w]),
            Value::from(array![[[[1.0f32, 3.0, 2.0], [4.0, 10.0, 6.0], [3.0, 7.0, 4.0]]]])
        );
        let sm = eval0(Op::Softmax { axis: 0 }, &[&Value::from(array![0.0f64, 2f64.ln()])]);
        assert_eq!(sm, Value::from(array![1.0 / 3.0, 2.0 / 3.0]));
        let lse = Op::Reduce { fun: ReduceOp::LogSumExp, axes: [0].into(), keepdims: false };
        assert_eq!(eval0(lse.clone(), &[&Value::from(array![1000.0f64, 1000.0])]), Value::from(1000.0 + 2f64.ln()));
        let ninf = Value::from(array![f64::NEG_INFINITY, f64::NEG_INFINITY]);
        assert_eq!(eval0(lse, &[&ninf]), Value::from(f64::NEG_INFINITY));
        let sum = Op::Reduce { fun: ReduceOp::Sum, axes: [0].into(), keepdims: false };
        // Compensated: naive left-to-right f64 summation gives 0 here.
        assert_eq!(eval0(sum, &[&Value::from(array![1e100f64, 1.0, -1e100])]), Value::from(1.0f64));
        let wrap = Value::from(array![i32::MAX]);
        assert_eq!(
            eval0(Op::Binary { fun: BinaryOp::Add }, &[&wrap, &Value::from(array![1i32])]),
            Value::from(array![i32::MIN])
        );
    }
}
