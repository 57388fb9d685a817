//! The shape and dtype rule of every op, in one place. A rule sees the op
//! and its input types and gives the output type, or says which rule the
//! inputs break.

use crate::op::{BinaryKind, UnaryKind};
use crate::op::{Normal, Uniform};
use crate::shape::{broadcast_shapes, check_size, dim_product};
use crate::{Conv2d, DType, Dim, Op, Pool2d, ReduceOp, Shape, SliceSpec, TensorType};

type Rule = Result<TensorType, String>;

/// The output type of `op` applied to inputs of types `inputs`.
///
/// Inputs and shared variables declare their own types; asking for theirs
/// here is an error.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Rule {
    let out = infer_unchecked(op, inputs)?;
    check_size(&out.shape, out.dtype)?;
    Ok(out)
}

fn arity(op: &Op, inputs: &[&TensorType], n: usize) -> Result<(), String> {
    if inputs.len() != n {
        return Err(format!("{} takes {n} input(s), got {}", op.name(), inputs.len()));
    }
    Ok(())
}

fn same_dtype(op: &Op, a: &TensorType, b: &TensorType) -> Result<(), String> {
    if a.dtype != b.dtype {
        return Err(format!(
            "{} needs inputs of one dtype, got {} and {} (cast one of them)",
            op.name(),
            a.dtype,
            b.dtype
        ));
    }
    Ok(())
}

fn need(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

fn need_float(op: &Op, t: &TensorType) -> Result<(), String> {
    need(t.dtype.is_float(), || format!("{} needs a float input (f32 or f64), got {}", op.name(), t.dtype))
}

fn need_numeric(op: &Op, t: &TensorType) -> Result<(), String> {
    need(t.dtype.is_numeric(), || format!("{} needs a numeric input, got bool (cast it first)", op.name()))
}

fn need_axis(op: &Op, axis: usize, rank: usize) -> Result<(), String> {
    need(axis < rank, || format!("{}: axis {axis} is out of range for rank {rank}", op.name()))
}

/// An optional `i64` scalar key input (random ops, dropout).
fn need_key(op: &Op, key: Option<&&TensorType>) -> Result<(), String> {
    match key {
        Some(k) if k.dtype != DType::I64 || k.shape.rank() != 0 => {
            Err(format!("{}: the key input must be an i64 scalar, got {k}", op.name()))
        }
        _ => Ok(()),
    }
}

fn dims_equal(a: Dim, b: Dim) -> bool {
    a == b
}

fn infer_unchecked(op: &Op, inputs: &[&TensorType]) -> Rule {
    match op {
        Op::Input { .. } | Op::Shared { .. } => Err(format!("{} nodes declare their type", op.name())),
        Op::Const { value } => {
            arity(op, inputs, 0)?;
            let v = value.value();
            Ok(TensorType::new(v.dtype(), Shape::known(v.shape())))
        }
        Op::Unary { fun } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            let dtype = match fun.kind() {
                UnaryKind::Numeric => {
                    need_numeric(op, x)?;
                    x.dtype
                }
                UnaryKind::Float => {
                    need_float(op, x)?;
                    x.dtype
                }
                UnaryKind::Logical => {
                    need(x.dtype == DType::Bool, || format!("not needs a bool input, got {}", x.dtype))?;
                    DType::Bool
                }
                UnaryKind::Predicate => {
                    need_numeric(op, x)?;
                    DType::Bool
                }
            };
            Ok(TensorType::new(dtype, x.shape.clone()))
        }
        Op::Binary { fun } => {
            arity(op, inputs, 2)?;
            let (a, b) = (inputs[0], inputs[1]);
            same_dtype(op, a, b)?;
            let dtype = match fun.kind() {
                BinaryKind::Numeric => {
                    need_numeric(op, a)?;
                    a.dtype
                }
                BinaryKind::Float => {
                    need_float(op, a)?;
                    a.dtype
                }
                BinaryKind::Compare => DType::Bool,
                BinaryKind::Logical => {
                    need(a.dtype == DType::Bool, || format!("{} needs bool inputs, got {}", op.name(), a.dtype))?;
                    DType::Bool
                }
            };
            Ok(TensorType::new(dtype, broadcast_shapes(&a.shape, &b.shape)?))
        }
        Op::Where => {
            arity(op, inputs, 3)?;
            let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
            need(c.dtype == DType::Bool, || format!("where needs a bool condition, got {}", c.dtype))?;
            same_dtype(op, a, b)?;
            let shape = broadcast_shapes(&broadcast_shapes(&c.shape, &a.shape)?, &b.shape)?;
            Ok(TensorType::new(a.dtype, shape))
        }
        Op::Cast { to } => {
            arity(op, inputs, 1)?;
            Ok(TensorType::new(*to, inputs[0].shape.clone()))
        }
        Op::Reduce { fun, axes, keepdims } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            match fun {
                ReduceOp::Mean | ReduceOp::LogSumExp => need_float(op, x)?,
                _ => need_numeric(op, x)?,
            }
            need(axes.windows(2).all(|w| w[0] < w[1]), || {
                format!("{}: axes {axes:?} must be ascending and distinct", op.name())
            })?;
            for &a in axes.iter() {
                need_axis(op, a, x.shape.rank())?;
                if matches!(fun, ReduceOp::Max | ReduceOp::Min) && x.shape[a] == Dim::Known(0) {
                    return Err(format!("{} over axis {a} of size 0: the reduction has no identity", op.name()));
                }
            }
            Ok(TensorType::new(x.dtype, reduced_shape(&x.shape, axes, *keepdims)))
        }
        Op::ArgReduce { axis, keepdims, .. } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            need_numeric(op, x)?;
            need_axis(op, *axis, x.shape.rank())?;
            need(x.shape[*axis] != Dim::Known(0), || format!("{} over an axis of size 0", op.name()))?;
            Ok(TensorType::new(DType::I64, reduced_shape(&x.shape, &[*axis], *keepdims)))
        }
        Op::Dot => {
            arity(op, inputs, 2)?;
            let (a, b) = (inputs[0], inputs[1]);
            same_dtype(op, a, b)?;
            need_numeric(op, a)?;
            Ok(TensorType::new(a.dtype, matmul_shape(&a.shape, &b.shape)?))
        }
        Op::Gemm { trans_a, trans_b, .. } => {
            need(inputs.len() == 2 || inputs.len() == 3, || format!("gemm takes 2 or 3 inputs, got {}", inputs.len()))?;
            let (a, b) = (inputs[0], inputs[1]);
            same_dtype(op, a, b)?;
            need(a.dtype.is_float(), || format!("gemm needs float matrices, got {}", a.dtype))?;
            need(a.shape.rank() == 2 && b.shape.rank() == 2, || {
                format!("gemm needs matrices, got {} and {}", a.shape, b.shape)
            })?;
            let (m, ka) = if *trans_a { (a.shape[1], a.shape[0]) } else { (a.shape[0], a.shape[1]) };
            let (kb, n) = if *trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
            need(ka == kb, || format!("gemm of {} and {}: inner dims {ka} and {kb} differ", a.shape, b.shape))?;
            let out = Shape::from([m, n]);
            if let Some(c) = inputs.get(2) {
                same_dtype(op, a, c)?;
                let b = broadcast_shapes(&c.shape, &out)?;
                need(b == out, || format!("gemm: C of shape {} does not broadcast to {out}", c.shape))?;
            }
            Ok(TensorType::new(a.dtype, out))
        }
        Op::Reshape { shape } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            let from = dim_product(&x.shape).ok_or("reshape: input size overflows")?;
            let to = dim_product(shape).ok_or("reshape: target size overflows")?;
            need(from == to, || format!("reshape cannot turn {} into {shape}: the element counts differ", x.shape))?;
            Ok(TensorType::new(x.dtype, shape.clone()))
        }
        Op::DimShuffle { pattern } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            let rank = x.shape.rank();
            let mut used = vec![false; rank];
            let mut out = Vec::with_capacity(pattern.len());
            for p in pattern.iter() {
                match *p {
                    Some(a) => {
                        need_axis(op, a, rank)?;
                        need(!used[a], || format!("dimshuffle: input axis {a} appears twice in {pattern:?}"))?;
                        used[a] = true;
                        out.push(x.shape[a]);
                    }
                    None => out.push(Dim::Known(1)),
                }
            }
            for (a, u) in used.iter().enumerate() {
                need(*u || x.shape[a] == Dim::Known(1), || {
                    format!("dimshuffle drops axis {a} of {}, which is not of size 1", x.shape)
                })?;
            }
            Ok(TensorType::new(x.dtype, out))
        }
        Op::BroadcastTo { shape } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            let b = broadcast_shapes(&x.shape, shape)?;
            need(&b == shape, || format!("cannot broadcast {} to {shape}", x.shape))?;
            Ok(TensorType::new(x.dtype, shape.clone()))
        }
        Op::Concat { axis } => {
            need(!inputs.is_empty(), || "concat needs at least one input".into())?;
            let first = inputs[0];
            need_axis(op, *axis, first.shape.rank())?;
            let mut total = 0usize;
            for (i, t) in inputs.iter().enumerate() {
                same_dtype(op, first, t)?;
                need(t.shape.rank() == first.shape.rank(), || {
                    format!("concat: input {i} has shape {} but input 0 has {}", t.shape, first.shape)
                })?;
                for d in 0..first.shape.rank() {
                    if d == *axis {
                        let n = t.shape[d].known().ok_or_else(|| {
                            format!("concat along axis {axis}, which is symbolic ({}) in input {i}", t.shape[d])
                        })?;
                        total = total.checked_add(n).ok_or("concat: size overflows")?;
                    } else {
                        need(dims_equal(t.shape[d], first.shape[d]), || {
                            format!(
                                "concat: input {i} has shape {} but input 0 has {} (only axis {axis} may differ)",
                                t.shape, first.shape
                            )
                        })?;
                    }
                }
            }
            let mut out = first.shape.to_vec();
            out[*axis] = Dim::Known(total);
            Ok(TensorType::new(first.dtype, out))
        }
        Op::Slice { specs } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            need(specs.len() <= x.shape.rank(), || {
                format!("slice has {} axis specs for an input of rank {}", specs.len(), x.shape.rank())
            })?;
            let mut out = x.shape.to_vec();
            for (a, spec) in specs.iter().enumerate() {
                out[a] = match x.shape[a] {
                    Dim::Known(n) => Dim::Known(spec.count(n)?),
                    sym if spec.is_full() || *spec == SliceSpec::REVERSE => sym,
                    sym => {
                        return Err(format!(
                            "slice {spec} of symbolic axis {a} ({sym}): only ':' and '::-1' are allowed there"
                        ));
                    }
                };
            }
            Ok(TensorType::new(x.dtype, out))
        }
        Op::Gather { axis } => {
            arity(op, inputs, 2)?;
            let (x, idx) = (inputs[0], inputs[1]);
            need_axis(op, *axis, x.shape.rank())?;
            need(idx.dtype.is_int(), || format!("gather needs integer indices, got {}", idx.dtype))?;
            let mut out: Vec<Dim> = x.shape[..*axis].to_vec();
            out.extend(idx.shape.iter().copied());
            out.extend(x.shape[axis + 1..].iter().copied());
            Ok(TensorType::new(x.dtype, out))
        }
        Op::OneHot { depth, dtype } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            need(x.dtype.is_int(), || format!("one_hot needs integer indices, got {}", x.dtype))?;
            let mut out = x.shape.to_vec();
            out.push(Dim::Known(*depth));
            Ok(TensorType::new(*dtype, out))
        }
        Op::Pad { widths, .. } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            need(widths.len() == x.shape.rank(), || {
                format!("pad has {} widths for an input of rank {}", widths.len(), x.shape.rank())
            })?;
            let mut out = x.shape.to_vec();
            for (a, &(lo, hi)) in widths.iter().enumerate() {
                out[a] = match x.shape[a] {
                    Dim::Known(n) => {
                        Dim::Known(n.checked_add(lo).and_then(|v| v.checked_add(hi)).ok_or("pad: size overflows")?)
                    }
                    sym if lo == 0 && hi == 0 => sym,
                    sym => return Err(format!("pad of symbolic axis {a} ({sym})")),
                };
            }
            Ok(TensorType::new(x.dtype, out))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            arity(op, inputs, 1)?;
            need_float(op, inputs[0])?;
            need_axis(op, *axis, inputs[0].shape.rank())?;
            Ok(inputs[0].clone())
        }
        Op::Conv2d(c) => {
            arity(op, inputs, 2)?;
            conv_shape(op, c, inputs[0], inputs[1])
        }
        Op::Conv2dInputGrad(g) => {
            arity(op, inputs, 2)?;
            let (gy, w) = (inputs[0], inputs[1]);
            need(gy.shape.rank() == 4 && w.shape.rank() == 4, || format!("{} needs rank-4 inputs", op.name()))?;
            let chans = w.shape[1]
                .known()
                .ok_or("conv2d: weight channels must be known")?
                .checked_mul(g.conv.groups)
                .ok_or("conv2d: channels times groups overflows")?;
            let x = TensorType::new(
                gy.dtype,
                [gy.shape[0], Dim::Known(chans), Dim::Known(g.size[0]), Dim::Known(g.size[1])],
            );
            let y = conv_shape(op, &g.conv, &x, w)?;
            need(y == *gy, || format!("{}: the output gradient is {gy}, but the forward output is {y}", op.name()))?;
            Ok(x)
        }
        Op::Conv2dWeightGrad(g) => {
            arity(op, inputs, 2)?;
            let (x, gy) = (inputs[0], inputs[1]);
            need(x.shape.rank() == 4 && gy.shape.rank() == 4, || format!("{} needs rank-4 inputs", op.name()))?;
            let chans = x.shape[1].known().ok_or("conv2d: input channels must be known")?;
            need(g.conv.groups > 0 && chans % g.conv.groups == 0, || format!("{}: bad groups", op.name()))?;
            let w = TensorType::new(
                x.dtype,
                [gy.shape[1], Dim::Known(chans / g.conv.groups), Dim::Known(g.size[0]), Dim::Known(g.size[1])],
            );
            let y = conv_shape(op, &g.conv, x, &w)?;
            need(y == *gy, || format!("{}: the output gradient is {gy}, but the forward output is {y}", op.name()))?;
            Ok(w)
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            arity(op, inputs, 1)?;
            pool_shape(op, p, inputs[0])
        }
        Op::MaxPool2dGrad(p) => {
            arity(op, inputs, 2)?;
            let (x, gy) = (inputs[0], inputs[1]);
            let y = pool_shape(op, p, x)?;
            need(y == *gy, || format!("{}: the output gradient is {gy}, but the forward output is {y}", op.name()))?;
            Ok(x.clone())
        }
        Op::MaxPool2dGather(p) => {
            arity(op, inputs, 2)?;
            let (x, g) = (inputs[0], inputs[1]);
            need(x == g, || format!("{}: the gathered tensor is {g}, but the forward input is {x}", op.name()))?;
            pool_shape(op, p, x)
        }
        Op::StopGradient => {
            arity(op, inputs, 1)?;
            Ok(inputs[0].clone())
        }
        Op::AvgPool2dGrad(g) => {
            arity(op, inputs, 1)?;
            let gy = inputs[0];
            need(gy.shape.rank() == 4, || format!("{} needs a rank-4 gradient, got {}", op.name(), gy.shape))?;
            let x = TensorType::new(gy.dtype, [gy.shape[0], gy.shape[1], Dim::Known(g.size[0]), Dim::Known(g.size[1])]);
            let y = pool_shape(op, &g.pool, &x)?;
            need(y == *gy, || format!("{}: the output gradient is {gy}, but the forward output is {y}", op.name()))?;
            Ok(x)
        }
        Op::Dropout { rate, .. } => {
            need(inputs.len() == 1 || inputs.len() == 2, || {
                format!("dropout takes 1 or 2 inputs, got {}", inputs.len())
            })?;
            need_float(op, inputs[0])?;
            need_key(op, inputs.get(1))?;
            need((0.0..1.0).contains(&rate.0), || format!("dropout rate {rate} is not in [0, 1)"))?;
            Ok(inputs[0].clone())
        }
        Op::RandomUniform(u) => {
            let Uniform { shape, dtype, low, high, .. } = &**u;
            need(inputs.len() <= 1, || format!("random_uniform takes at most a key input, got {}", inputs.len()))?;
            need_key(op, inputs.first())?;
            need(dtype.is_float(), || format!("random_uniform makes floats, not {dtype}"))?;
            need(low.0.is_finite() && high.0.is_finite() && low.0 <= high.0, || {
                format!("random_uniform needs finite low <= high, got [{low}, {high})")
            })?;
            Ok(TensorType::new(*dtype, shape.clone()))
        }
        Op::RandomNormal(n) => {
            let Normal { shape, dtype, mean, std, .. } = &**n;
            need(inputs.len() <= 1, || format!("random_normal takes at most a key input, got {}", inputs.len()))?;
            need_key(op, inputs.first())?;
            need(dtype.is_float(), || format!("random_normal makes floats, not {dtype}"))?;
            need(mean.0.is_finite() && std.0.is_finite() && std.0 >= 0.0, || {
                format!("random_normal needs a finite mean and std >= 0, got mean {mean}, std {std}")
            })?;
            Ok(TensorType::new(*dtype, shape.clone()))
        }
        Op::Scan(s) => s.infer(inputs),
        Op::ScanResult { .. } => Err("a scan result's type is its scan's (Graph::add gives it)".into()),
    }
}

fn conv_shape(op: &Op, c: &Conv2d, x: &TensorType, w: &TensorType) -> Rule {
    need_float(op, x)?;
    same_dtype(op, x, w)?;
    need(x.shape.rank() == 4, || format!("conv2d needs an NCHW input of rank 4, got {}", x.shape))?;
    need(w.shape.rank() == 4, || format!("conv2d needs OIHW weights of rank 4, got {}", w.shape))?;
    need(c.groups > 0 && c.stride.iter().chain(&c.dilation).all(|&v| v > 0), || {
        "conv2d: stride, dilation and groups must be positive".into()
    })?;
    let known = |d: Dim, what: &str| d.known().ok_or_else(|| format!("conv2d: {what} must be known, got {d}"));
    let chans = known(x.shape[1], "input channels")?;
    let (o, i) = (known(w.shape[0], "output channels")?, known(w.shape[1], "weight input channels")?);
    need(chans % c.groups == 0 && o % c.groups == 0 && i.checked_mul(c.groups) == Some(chans), || {
        format!(
            "conv2d: input has {chans} channels, weights {} take {i} per group and groups is {}; need channels = {i} x {}",
            w.shape, c.groups, c.groups
        )
    })?;
    let mut out = vec![x.shape[0], Dim::Known(o)];
    for k in 0..2 {
        let size = known(x.shape[2 + k], "spatial size")?;
        let kern = known(w.shape[2 + k], "kernel size")?;
        out.push(Dim::Known(window_count("conv2d", size, kern, c.stride[k], c.padding[k], c.dilation[k])?));
    }
    Ok(TensorType::new(x.dtype, out))
}

fn pool_shape(op: &Op, p: &Pool2d, x: &TensorType) -> Rule {
    need_float(op, x)?;
    need(x.shape.rank() == 4, || format!("{} needs an NCHW input of rank 4, got {}", op.name(), x.shape))?;
    need(p.kernel.iter().chain(&p.stride).all(|&v| v > 0), || {
        format!("{}: kernel and stride must be positive", op.name())
    })?;
    let mut out = vec![x.shape[0], x.shape[1]];
    for k in 0..2 {
        need(p.padding[k] <= p.kernel[k] / 2, || {
            format!("{}: padding {} is more than half the kernel {}", op.name(), p.padding[k], p.kernel[k])
        })?;
        let size = x.shape[2 + k].known().ok_or_else(|| format!("{}: spatial sizes must be known", op.name()))?;
        out.push(Dim::Known(window_count(op.name(), size, p.kernel[k], p.stride[k], p.padding[k], 1)?));
    }
    Ok(TensorType::new(x.dtype, out))
}

/// The shape left after reducing `axes`.
pub fn reduced_shape(shape: &Shape, axes: &[usize], keepdims: bool) -> Shape {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(Dim::Known(1)),
            (true, false) => None,
        })
        .collect()
}

/// Output length of a sliding window (floor mode, as in PyTorch).
pub fn window_count(
    op: &str,
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<usize, String> {
    let overflow = || format!("{op}: kernel {kernel}, dilation {dilation}, padding {padding} overflow");
    let span = dilation.checked_mul(kernel.max(1) - 1).and_then(|v| v.checked_add(1)).ok_or_else(overflow)?;
    let padded = padding.checked_mul(2).and_then(|p| p.checked_add(size)).ok_or_else(overflow)?;
    if padded < span {
        return Err(format!(
            "{op}: window of {span} (kernel {kernel}, dilation {dilation}) is larger than the padded input {padded}"
        ));
    }
    Ok((padded - span) / stride + 1)
}

/// numpy `matmul` shapes.
pub fn matmul_shape(a: &Shape, b: &Shape) -> Result<Shape, String> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err(format!("dot needs inputs of rank >= 1, got {a} and {b}"));
    }
    let (ka, kb) = (a[a.rank() - 1], if b.rank() == 1 { b[0] } else { b[b.rank() - 2] });
    if ka != kb {
        return Err(format!("dot of {a} and {b}: inner dims {ka} and {kb} differ"));
    }
    let batch_a: Shape = if a.rank() > 2 { a[..a.rank() - 2].into() } else { Shape::scalar() };
    let batch_b: Shape = if b.rank() > 2 { b[..b.rank() - 2].into() } else { Shape::scalar() };
    let mut out = broadcast_shapes(&batch_a, &batch_b).map_err(|e| format!("dot batch dims: {e}"))?.to_vec();
    if a.rank() >= 2 {
        out.push(a[a.rank() - 2]);
    }
    if b.rank() >= 2 {
        out.push(b[b.rank() - 1]);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BinaryOp, Conv2d, Literal, Pool2d, SliceSpec, UnaryOp, Value};

    fn t(dtype: DType, dims: &[usize]) -> TensorType {
        TensorType::new(dtype, Shape::known(dims))
    }
    fn f(dims: &[usize]) -> TensorType {
        t(DType::F32, dims)
    }
    fn ok(op: Op, ins: &[TensorType]) -> String {
        let refs: Vec<&TensorType> = ins.iter().collect();
        infer(&op, &refs).unwrap().to_string()
    }
    fn err(op: Op, ins: &[TensorType]) -> String {
        let refs: Vec<&TensorType> = ins.iter().collect();
        infer(&op, &refs).unwrap_err()
    }

    #[test]
    fn elementwise_rules() {
        let exp = Op::Unary { fun: UnaryOp::Exp };
        assert_eq!(ok(exp.clone(), &[f(&[2])]), "f32[2]");
        assert!(err(exp, &[t(DType::I32, &[2])]).contains("float"));
        assert_eq!(ok(Op::Unary { fun: UnaryOp::IsNan }, &[f(&[2])]), "bool[2]");
        assert!(err(Op::Unary { fun: UnaryOp::Not }, &[f(&[2])]).contains("bool"));
        assert!(err(Op::Unary { fun: UnaryOp::Relu }, &[t(DType::Bool, &[1])]).contains("bool"));
        let add = Op::Binary { fun: BinaryOp::Add };
        assert_eq!(ok(add.clone(), &[f(&[3, 1]), f(&[4])]), "f32[3,4]");
        assert!(err(add.clone(), &[f(&[3]), t(DType::F64, &[3])]).contains("f32 and f64"));
        assert!(err(add, &[f(&[3]), f(&[2])]).contains("do not broadcast"));
        assert_eq!(ok(Op::Binary { fun: BinaryOp::Lt }, &[f(&[2]), f(&[])]), "bool[2]");
        assert!(err(Op::Binary { fun: BinaryOp::Div }, &[t(DType::I32, &[]), t(DType::I32, &[])]).contains("float"));
        assert_eq!(ok(Op::Where, &[t(DType::Bool, &[2, 1]), f(&[3]), f(&[])]), "f32[2,3]");
        assert!(err(Op::Where, &[f(&[2]), f(&[2]), f(&[2])]).contains("bool condition"));
        assert_eq!(ok(Op::Cast { to: DType::I64 }, &[f(&[2])]), "i64[2]");
    }

    #[test]
    fn reduction_rules() {
        let sum = |axes: &[usize], keepdims| Op::Reduce { fun: ReduceOp::Sum, axes: axes.into(), keepdims };
        assert_eq!(ok(sum(&[0, 2], false), &[f(&[2, 3, 4])]), "f32[3]");
        assert_eq!(ok(sum(&[0, 2], true), &[f(&[2, 3, 4])]), "f32[1,3,1]");
        assert_eq!(ok(sum(&[], false), &[f(&[2])]), "f32[2]");
        assert!(err(sum(&[3], false), &[f(&[2, 3])]).contains("out of range"));
        assert!(err(sum(&[1, 0], false), &[f(&[2, 3])]).contains("ascending"));
        let max = Op::Reduce { fun: ReduceOp::Max, axes: [0].into(), keepdims: false };
        assert!(err(max, &[f(&[0, 3])]).contains("no identity"));
        let mean = Op::Reduce { fun: ReduceOp::Mean, axes: [0].into(), keepdims: false };
        assert!(err(mean, &[t(DType::I32, &[2])]).contains("float"));
        let am = Op::ArgReduce { fun: crate::ArgReduceOp::Argmax, axis: 1, keepdims: false };
        assert_eq!(ok(am, &[f(&[2, 3])]), "i64[2]");
    }

    #[test]
    fn dot_follows_matmul() {
        assert_eq!(ok(Op::Dot, &[f(&[3]), f(&[3])]), "f32[]");
        assert_eq!(ok(Op::Dot, &[f(&[2, 3]), f(&[3])]), "f32[2]");
        assert_eq!(ok(Op::Dot, &[f(&[3]), f(&[3, 4])]), "f32[4]");
        assert_eq!(ok(Op::Dot, &[f(&[2, 3]), f(&[3, 4])]), "f32[2,4]");
        assert_eq!(ok(Op::Dot, &[f(&[5, 1, 2, 3]), f(&[7, 3, 4])]), "f32[5,7,2,4]");
        assert!(err(Op::Dot, &[f(&[2, 3]), f(&[4, 5])]).contains("inner dims 3 and 4"));
        assert!(err(Op::Dot, &[f(&[]), f(&[3])]).contains("rank >= 1"));
        assert!(err(Op::Dot, &[t(DType::Bool, &[2]), t(DType::Bool, &[2])]).contains("bool"));
    }

    #[test]
    fn movement_rules() {
        let reshape = |s: &[usize]| Op::Reshape { shape: Shape::known(s) };
        assert_eq!(ok(reshape(&[6]), &[f(&[2, 3])]), "f32[6]");
        assert!(err(reshape(&[5]), &[f(&[2, 3])]).contains("element counts"));
        let ds = |p: &[Option<usize>]| Op::DimShuffle { pattern: p.into() };
        assert_eq!(ok(ds(&[Some(1), None, Some(0)]), &[f(&[2, 3])]), "f32[3,1,2]");
        assert_eq!(ok(ds(&[Some(1)]), &[f(&[1, 3])]), "f32[3]");
        assert!(err(ds(&[Some(1)]), &[f(&[2, 3])]).contains("not of size 1"));
        assert!(err(ds(&[Some(0), Some(0)]), &[f(&[2, 3])]).contains("twice"));
        let bt = Op::BroadcastTo { shape: Shape::known(&[4, 3]) };
        assert_eq!(ok(bt.clone(), &[f(&[3])]), "f32[4,3]");
        assert!(err(bt, &[f(&[4, 1, 3])]).contains("cannot broadcast"));
        assert_eq!(ok(Op::Concat { axis: 1 }, &[f(&[2, 3]), f(&[2, 1])]), "f32[2,4]");
        assert!(err(Op::Concat { axis: 0 }, &[f(&[2, 3]), f(&[2, 1])]).contains("only axis 0"));
        let sl = Op::Slice { specs: [SliceSpec::new(None, None, -2)].into() };
        assert_eq!(ok(sl, &[f(&[5, 2])]), "f32[3,2]");
        assert_eq!(ok(Op::Gather { axis: 1 }, &[f(&[2, 5, 3]), t(DType::I64, &[4, 1])]), "f32[2,4,1,3]");
        assert!(err(Op::Gather { axis: 0 }, &[f(&[2]), f(&[1])]).contains("integer"));
        assert_eq!(ok(Op::OneHot { depth: 3, dtype: DType::F32 }, &[t(DType::I32, &[2])]), "f32[2,3]");
        let pad = Op::Pad { widths: [(1, 2)].into(), value: crate::F64(0.0) };
        assert_eq!(ok(pad.clone(), &[f(&[3])]), "f32[6]");
        assert!(err(pad, &[f(&[3, 3])]).contains("1 widths"));
    }

    #[test]
    fn nn_rules() {
        let conv = |stride, padding, groups| Op::Conv2d(Box::new(Conv2d { stride, padding, dilation: [1, 1], groups }));
        assert_eq!(ok(conv([1, 1], [1, 1], 1), &[f(&[8, 3, 32, 32]), f(&[64, 3, 3, 3])]), "f32[8,64,32,32]");
        assert_eq!(ok(conv([2, 2], [0, 0], 1), &[f(&[1, 3, 7, 7]), f(&[4, 3, 3, 3])]), "f32[1,4,3,3]");
        assert_eq!(ok(conv([1, 1], [0, 0], 2), &[f(&[1, 4, 5, 5]), f(&[6, 2, 3, 3])]), "f32[1,6,3,3]");
        assert!(err(conv([1, 1], [0, 0], 1), &[f(&[1, 4, 5, 5]), f(&[6, 3, 3, 3])]).contains("channels"));
        assert!(err(conv([1, 1], [0, 0], 1), &[f(&[1, 3, 2, 2]), f(&[6, 3, 3, 3])]).contains("larger than"));
        let pool = Op::MaxPool2d(Box::new(Pool2d::square(2)));
        assert_eq!(ok(pool.clone(), &[f(&[1, 3, 7, 7])]), "f32[1,3,3,3]");
        assert!(err(pool, &[f(&[3, 7, 7])]).contains("rank 4"));
        let sm = Op::Softmax { axis: 1 };
        assert_eq!(ok(sm.clone(), &[f(&[2, 3])]), "f32[2,3]");
        assert!(err(sm, &[f(&[2])]).contains("out of range"));
        let dropout = |rate| Op::Dropout { rate: crate::F64(rate), seed: 1, training: true };
        assert_eq!(ok(dropout(0.5), &[f(&[2])]), "f32[2]");
        assert!(err(dropout(1.0), &[f(&[2])]).contains("[0, 1)"));
        assert!(err(dropout(0.5), &[f(&[2]), f(&[])]).contains("i64 scalar"));
    }

    #[test]
    fn hostile_attributes_are_errors_not_overflows() {
        let pool = Op::MaxPool2d(Box::new(Pool2d {
            kernel: [usize::MAX, 2],
            stride: [1, 1],
            padding: [usize::MAX / 2, 0],
            count_include_pad: false,
        }));
        assert!(err(pool, &[f(&[1, 1, 4, 4])]).contains("overflow"));
        let conv = Op::Conv2d(Box::new(Conv2d { dilation: [usize::MAX, 1], ..Conv2d::default() }));
        assert!(err(conv, &[f(&[1, 1, 4, 4]), f(&[1, 1, 3, 3])]).contains("overflow"));
        let conv = Op::Conv2d(Box::new(Conv2d { groups: usize::MAX, ..Conv2d::default() }));
        assert!(!err(conv, &[f(&[1, 2, 4, 4]), f(&[2, 2, 3, 3])]).is_empty());
        let sl = Op::Slice { specs: [SliceSpec::new(Some(1), None, i64::MAX)].into() };
        assert_eq!(ok(sl, &[f(&[5])]), "f32[1]");
    }

    #[test]
    fn constants_and_sizes() {
        let c = Op::Const { value: Literal::new(Value::from(ndarray::array![1i32, 2])) };
        assert_eq!(ok(c, &[]), "i32[2]");
        let huge = Op::BroadcastTo { shape: Shape::known(&[usize::MAX / 2, 4]) };
        assert!(err(huge, &[f(&[])]).contains("overflows"));
    }
}
