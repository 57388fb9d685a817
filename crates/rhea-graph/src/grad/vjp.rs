//! Each op's vector-Jacobian product, stated as more graph ops.

use super::emit::Emit;
use crate::shape::dim_product;
use crate::{
    BinaryOp, ConvGrad, Dim, GraphError, Node, NodeId, Op, PoolGrad, ReduceOp, Shape, SliceSpec, TensorType, UnaryOp,
    Value,
};

type Result<T> = std::result::Result<T, GraphError>;

/// Gradients with respect to each input of `node` (whose id is `y`) given
/// the gradient `gy` of its output; `None` where the op is not
/// differentiable in that input or `need` says it is not wanted.
pub(super) fn vjp(e: &mut Emit, y: NodeId, node: &Node, gy: NodeId, need: &[bool]) -> Result<Vec<Option<NodeId>>> {
    let x = &node.inputs;
    let xt: Vec<TensorType> = x.iter().map(|&i| e.ty(i)).collect();
    let known = |t: &TensorType, i: usize| t.shape[i].known().expect("convolution's spatial dims are known");
    let not_supported =
        |what: &str| GraphError::Mismatch(format!("gradient of {} is not supported ({what})", node.op.name()));
    Ok(match &node.op {
        Op::Input { .. } | Op::Shared { .. } | Op::Const { .. } => vec![],
        Op::Unary { fun } => {
            use UnaryOp::*;
            let a = x[0];
            let g = match fun {
                Neg => Some(e.un(Neg, gy)?),
                Abs => {
                    let s = e.un(Sign, a)?;
                    Some(e.mul(gy, s)?)
                }
                Exp => Some(e.mul(gy, y)?),
                Log => Some(e.bin(BinaryOp::Div, gy, a)?),
                Log1p => {
                    let one = e.scalar(1.0, a);
                    let d = e.bin(BinaryOp::Add, a, one)?;
                    Some(e.bin(BinaryOp::Div, gy, d)?)
                }
                Expm1 => {
                    let one = e.scalar(1.0, a);
                    let d = e.bin(BinaryOp::Add, y, one)?;
                    Some(e.mul(gy, d)?)
                }
                Sqrt => {
                    let half = e.scale(gy, 0.5)?;
                    Some(e.bin(BinaryOp::Div, half, y)?)
                }
                Rsqrt => {
                    let q = e.bin(BinaryOp::Div, y, a)?;
                    let d = e.scale(q, -0.5)?;
                    Some(e.mul(gy, d)?)
                }
                Reciprocal => {
                    let sq = e.un(Square, y)?;
                    let p = e.mul(gy, sq)?;
                    Some(e.un(Neg, p)?)
                }
                Square => {
                    let two_a = e.scale(a, 2.0)?;
                    Some(e.mul(gy, two_a)?)
                }
                Tanh => {
                    let sq = e.un(Square, y)?;
                    let one = e.scalar(1.0, y);
                    let d = e.bin(BinaryOp::Sub, one, sq)?;
                    Some(e.mul(gy, d)?)
                }
                Sigmoid => {
                    let one = e.scalar(1.0, y);
                    let c = e.bin(BinaryOp::Sub, one, y)?;
                    let d = e.mul(y, c)?;
                    Some(e.mul(gy, d)?)
                }
                Softplus => {
                    let s = e.un(Sigmoid, a)?;
                    Some(e.mul(gy, s)?)
                }
                Relu => {
                    let zero = e.scalar(0.0, a);
                    let pos = e.bin(BinaryOp::Gt, a, zero)?;
                    let z = e.scalar(0.0, gy);
                    Some(e.select(pos, gy, z)?)
                }
                Sin => {
                    let c = e.un(Cos, a)?;
                    Some(e.mul(gy, c)?)
                }
                Cos => {
                    let s = e.un(Sin, a)?;
                    let p = e.mul(gy, s)?;
                    Some(e.un(Neg, p)?)
                }
                Sign | Floor | Ceil | Round | Not | IsNan | IsInf => None,
            };
            vec![g]
        }
        Op::Binary { fun } => {
            use BinaryOp::*;
            let (a, b) = (x[0], x[1]);
            let (ga, gb) = match fun {
                Add => (Some(gy), Some(gy)),
                Sub => (Some(gy), if need[1] { Some(e.un(UnaryOp::Neg, gy)?) } else { None }),
                Mul => {
                    (if need[0] { Some(e.mul(gy, b)?) } else { None }, if need[1] { Some(e.mul(gy, a)?) } else { None })
                }
                Div => {
                    let ga = if need[0] { Some(e.bin(Div, gy, b)?) } else { None };
                    let gb = if need[1] {
                        let q = e.bin(Div, y, b)?;
                        let p = e.mul(gy, q)?;
                        Some(e.un(UnaryOp::Neg, p)?)
                    } else {
                        None
                    };
                    (ga, gb)
                }
                Pow => {
                    let ga = if need[0] {
                        let one = e.scalar(1.0, b);
                        let bm1 = e.bin(Sub, b, one)?;
                        let p = e.bin(Pow, a, bm1)?;
                        let d = e.mul(b, p)?;
                        Some(e.mul(gy, d)?)
                    } else {
                        None
                    };
                    let gb = if need[1] {
                        // d/db a^b = a^b log a, taken as 0 at a = 0 (as JAX and PyTorch do).
                        let zero = e.scalar(0.0, a);
                        let one = e.scalar(1.0, a);
                        let at_zero = e.bin(Eq, a, zero)?;
                        let safe = e.select(at_zero, one, a)?;
                        let l = e.un(UnaryOp::Log, safe)?;
                        let d = e.mul(y, l)?;
                        Some(e.mul(gy, d)?)
                    } else {
                        None
                    };
                    (ga, gb)
                }
                Maximum | Minimum => {
                    // The larger (smaller) side takes the gradient; ties split it, as in JAX and PyTorch.
                    let (win_a, win_b) = if *fun == Maximum { (Gt, Lt) } else { (Lt, Gt) };
                    let tie = e.bin(Eq, a, b)?;
                    let half = e.scale(gy, 0.5)?;
                    let zero = e.scalar(0.0, gy);
                    let split = e.select(tie, half, zero)?;
                    let wa = e.bin(win_a, a, b)?;
                    let wb = e.bin(win_b, a, b)?;
                    (Some(e.select(wa, gy, split)?), Some(e.select(wb, gy, split)?))
                }
                Eq | Ne | Lt | Le | Gt | Ge | And | Or => (None, None),
            };
            let ga = match ga {
                Some(g) if need[0] => Some(e.unbroadcast(g, &xt[0].shape)?),
                _ => None,
            };
            let gb = match gb {
                Some(g) if need[1] => Some(e.unbroadcast(g, &xt[1].shape)?),
                _ => None,
            };
            vec![ga, gb]
        }
        Op::Where => {
            let zero = e.scalar(0.0, gy);
            let ga = if need[1] {
                let s = e.select(x[0], gy, zero)?;
                Some(e.unbroadcast(s, &xt[1].shape)?)
            } else {
                None
            };
            let gb = if need[2] {
                let s = e.select(x[0], zero, gy)?;
                Some(e.unbroadcast(s, &xt[2].shape)?)
            } else {
                None
            };
            vec![None, ga, gb]
        }
        Op::Cast { to } => {
            let back = xt[0].dtype.is_float() && to.is_float();
            vec![if back { Some(e.op(Op::Cast { to: xt[0].dtype }, &[gy])?) } else { None }]
        }
        Op::Reduce { fun, axes, keepdims } => {
            let (a, shape) = (x[0], &xt[0].shape);
            let g = e.keep(gy, shape, axes, *keepdims)?;
            let gx = match fun {
                ReduceOp::Sum => e.broadcast_to(g, shape)?,
                ReduceOp::Mean => {
                    let spread = e.broadcast_to(g, shape)?;
                    let count = reduced_count(e, a, axes)?;
                    e.bin(BinaryOp::Div, spread, count)?
                }
                ReduceOp::Prod => {
                    // Theano's zero-aware rule: with no zero in a group, y / x;
                    // with exactly one, the product of the others at the zero
                    // and 0 elsewhere; with more, 0 everywhere.
                    let zero = e.scalar(0.0, a);
                    let one = e.scalar(1.0, a);
                    let is_zero = e.bin(BinaryOp::Eq, a, zero)?;
                    let zeros = e.op(Op::Cast { to: xt[0].dtype }, &[is_zero])?;
                    let n_zeros = e.sum(zeros, axes.to_vec(), true)?;
                    let nonzero = e.select(is_zero, one, a)?;
                    let others =
                        e.op(Op::Reduce { fun: ReduceOp::Prod, axes: axes.clone(), keepdims: true }, &[nonzero])?;
                    let yk = e.keep(y, shape, axes, *keepdims)?;
                    let quotient = e.bin(BinaryOp::Div, yk, nonzero)?;
                    let none = e.bin(BinaryOp::Eq, n_zeros, zero)?;
                    let single = e.bin(BinaryOp::Eq, n_zeros, one)?;
                    let at_zero = e.select(is_zero, others, zero)?;
                    let with_one = e.select(single, at_zero, zero)?;
                    let d = e.select(none, quotient, with_one)?;
                    e.mul(d, g)?
                }
                ReduceOp::Max | ReduceOp::Min => {
                    // The extremes share the gradient equally.
                    let yk = e.keep(y, shape, axes, *keepdims)?;
                    let hit = e.bin(BinaryOp::Eq, a, yk)?;
                    let mask = e.op(Op::Cast { to: xt[0].dtype }, &[hit])?;
                    let count = e.sum(mask, axes.to_vec(), true)?;
                    let share = e.bin(BinaryOp::Div, g, count)?;
                    e.mul(mask, share)?
                }
                ReduceOp::LogSumExp => {
                    let yk = e.keep(y, shape, axes, *keepdims)?;
                    let d = e.bin(BinaryOp::Sub, a, yk)?;
                    let p = e.un(UnaryOp::Exp, d)?;
                    e.mul(g, p)?
                }
            };
            vec![Some(gx)]
        }
        Op::ArgReduce { .. } | Op::OneHot { .. } => vec![None],
        Op::Dot => dot_vjp(e, x[0], x[1], gy, need)?,
        Op::Reshape { .. } => vec![Some(e.reshape(gy, &xt[0].shape)?)],
        Op::DimShuffle { pattern } => {
            let inverse: Vec<Option<usize>> =
                (0..xt[0].shape.rank()).map(|a| pattern.iter().position(|p| *p == Some(a))).collect();
            vec![Some(e.dimshuffle(gy, inverse)?)]
        }
        Op::BroadcastTo { .. } => vec![Some(e.unbroadcast(gy, &xt[0].shape)?)],
        Op::Concat { axis } => {
            let mut offset = 0usize;
            let mut out = Vec::with_capacity(x.len());
            for (t, &needed) in xt.iter().zip(need) {
                let len = t.shape[*axis].known().ok_or_else(|| not_supported("symbolic concat axis"))?;
                let mut specs = vec![SliceSpec::FULL; axis + 1];
                specs[*axis] = SliceSpec::range(offset as i64, (offset + len) as i64);
                out.push(if needed { Some(e.slice(gy, specs)?) } else { None });
                offset += len;
            }
            out
        }
        Op::Slice { specs } => vec![Some(slice_vjp(e, gy, &xt[0], specs)?)],
        Op::Gather { axis } => {
            vec![
                if need[0] {
                    Some(gather_vjp(e, gy, &xt[0], x[1], *axis).map_err(|m| not_supported(&m))?)
                } else {
                    None
                },
                None,
            ]
        }
        Op::Pad { widths, .. } => {
            let specs = widths
                .iter()
                .zip(xt[0].shape.iter())
                .map(|(&(lo, _), d)| match d {
                    Dim::Known(n) => SliceSpec::range(lo as i64, (lo + n) as i64),
                    Dim::Sym(_) => SliceSpec::FULL,
                })
                .collect();
            vec![Some(e.slice(gy, specs)?)]
        }
        Op::Softmax { axis } => {
            let gyy = e.mul(gy, y)?;
            let s = e.sum(gyy, vec![*axis], true)?;
            let d = e.bin(BinaryOp::Sub, gy, s)?;
            vec![Some(e.mul(y, d)?)]
        }
        Op::LogSoftmax { axis } => {
            let p = e.un(UnaryOp::Exp, y)?;
            let s = e.sum(gy, vec![*axis], true)?;
            let ps = e.mul(p, s)?;
            vec![Some(e.bin(BinaryOp::Sub, gy, ps)?)]
        }
        Op::Conv2d(c) => {
            let gx = if need[0] {
                let size = [known(&xt[0], 2), known(&xt[0], 3)];
                Some(e.op(Op::Conv2dInputGrad(Box::new(ConvGrad { conv: (**c).clone(), size })), &[gy, x[1]])?)
            } else {
                None
            };
            let gw = if need[1] {
                let size = [known(&xt[1], 2), known(&xt[1], 3)];
                Some(e.op(Op::Conv2dWeightGrad(Box::new(ConvGrad { conv: (**c).clone(), size })), &[x[0], gy])?)
            } else {
                None
            };
            vec![gx, gw]
        }
        Op::MaxPool2d(p) => vec![Some(e.op(Op::MaxPool2dGrad(p.clone()), &[x[0], gy])?)],
        Op::AvgPool2d(p) => {
            let known = |i: usize| xt[0].shape[i].known().expect("pooling spatial dims are known");
            let size = [known(2), known(3)];
            vec![Some(e.op(Op::AvgPool2dGrad(Box::new(PoolGrad { pool: (**p).clone(), size })), &[gy])?)]
        }
        Op::Dropout { .. } => {
            // The mask depends only on the seed, the key and the index: apply it again.
            let mut inputs = vec![gy];
            inputs.extend(x.get(1));
            let mut out = vec![Some(e.op(node.op.clone(), &inputs)?)];
            out.extend(x.get(1).map(|_| None));
            out
        }
        Op::RandomUniform(_) | Op::RandomNormal(_) => x.iter().map(|_| None).collect(),
        Op::Gemm { .. } => return Err(not_supported("gemm is made by the optimizer; differentiate before optimizing")),
        // The gradients of convolution and pooling are linear in each input:
        // each one's gradient is its forward op or the other gradient, with
        // the roles of the tensors exchanged (the second derivatives).
        Op::Conv2dInputGrad(cg) => {
            // dx = conv2d_input_grad(gy, w): <g, dx> = <conv2d(g, w), gy>.
            let (gyn, w) = (x[0], x[1]);
            let size = [known(&xt[1], 2), known(&xt[1], 3)];
            vec![
                if need[0] { Some(e.op(Op::Conv2d(Box::new(cg.conv.clone())), &[gy, w])?) } else { None },
                if need[1] {
                    Some(e.op(Op::Conv2dWeightGrad(Box::new(ConvGrad { conv: cg.conv.clone(), size })), &[gy, gyn])?)
                } else {
                    None
                },
            ]
        }
        Op::Conv2dWeightGrad(cg) => {
            // dw = conv2d_weight_grad(x, gy): <g, dw> = <conv2d(x, g), gy>.
            let (xn, gyn) = (x[0], x[1]);
            let size = [known(&xt[0], 2), known(&xt[0], 3)];
            vec![
                if need[0] {
                    Some(e.op(Op::Conv2dInputGrad(Box::new(ConvGrad { conv: cg.conv.clone(), size })), &[gyn, gy])?)
                } else {
                    None
                },
                if need[1] { Some(e.op(Op::Conv2d(Box::new(cg.conv.clone())), &[xn, gy])?) } else { None },
            ]
        }
        // Where the maxima are does not move under a small change of x.
        Op::MaxPool2dGrad(p) => vec![None, Some(e.op(Op::MaxPool2dGather(p.clone()), &[x[0], gy])?)],
        Op::MaxPool2dGather(p) => vec![None, Some(e.op(Op::MaxPool2dGrad(p.clone()), &[x[0], gy])?)],
        Op::AvgPool2dGrad(pg) => vec![Some(e.op(Op::AvgPool2d(Box::new(pg.pool.clone())), &[gy])?)],
        Op::StopGradient => vec![None],
        Op::Scan(_) | Op::ScanResult { .. } => return Err(not_supported("a loop is differentiated as a whole")),
    })
}

/// The number of elements a reduction over `axes` of `x` combines, as a
/// node of `x`'s dtype (a constant when the sizes are known).
fn reduced_count(e: &mut Emit, x: NodeId, axes: &[usize]) -> Result<NodeId> {
    let shape = e.ty(x).shape;
    let dims: Vec<Dim> = axes.iter().map(|&a| shape[a]).collect();
    match dim_product(&dims) {
        Some((n, syms)) if syms.is_empty() => Ok(e.scalar(n as f64, x)),
        _ => {
            let one = e.scalar(1.0, x);
            let ones = e.broadcast_to(one, &shape)?;
            e.sum(ones, axes.to_vec(), true)
        }
    }
}

/// matmul's gradients, promoting vectors to matrices as matmul does.
fn dot_vjp(e: &mut Emit, a: NodeId, b: NodeId, gy: NodeId, need: &[bool]) -> Result<Vec<Option<NodeId>>> {
    let (ta, tb) = (e.ty(a), e.ty(b));
    let a2 = if ta.shape.rank() == 1 { e.dimshuffle(a, vec![None, Some(0)])? } else { a };
    let b2 = if tb.shape.rank() == 1 { e.dimshuffle(b, vec![Some(0), None])? } else { b };
    let r = e.ty(gy).shape.rank();
    let mut pattern: Vec<Option<usize>> = (0..r).map(Some).collect();
    if ta.shape.rank() == 1 {
        pattern.insert(r - usize::from(tb.shape.rank() >= 2), None);
    }
    if tb.shape.rank() == 1 {
        pattern.push(None);
    }
    let g2 = if pattern.len() == r { gy } else { e.dimshuffle(gy, pattern)? };
    let ga = if need[0] {
        let bt = e.transpose_last2(b2)?;
        let p = e.op(Op::Dot, &[g2, bt])?;
        let a2_shape = e.ty(a2).shape;
        let s = e.unbroadcast(p, &a2_shape)?;
        Some(if ta.shape.rank() == 1 { e.dimshuffle(s, vec![Some(1)])? } else { s })
    } else {
        None
    };
    // A batch of rows times a matrix: the rows of every batch are the rows
    // of one matrix, so the gradient is one product, not a batch of
    // products summed.
    let lead: Option<usize> = ta.shape[..ta.shape.rank().saturating_sub(1)].iter().map(|d| d.known()).product();
    let (a_rows, g_rows) = match lead {
        Some(rows) if ta.shape.rank() > 2 && tb.shape.rank() == 2 => {
            let (k, n) = (ta.shape[ta.shape.rank() - 1], tb.shape[1]);
            (
                e.reshape(a, &Shape::from(vec![Dim::Known(rows), k]))?,
                e.reshape(gy, &Shape::from(vec![Dim::Known(rows), n]))?,
            )
        }
        _ => (a2, g2),
    };
    let gb = if need[1] {
        let at = e.transpose_last2(a_rows)?;
        let p = e.op(Op::Dot, &[at, g_rows])?;
        let b2_shape = e.ty(b2).shape;
        let s = e.unbroadcast(p, &b2_shape)?;
        Some(if tb.shape.rank() == 1 { e.dimshuffle(s, vec![Some(0)])? } else { s })
    } else {
        None
    };
    Ok(vec![ga, gb])
}

/// Scatters a slice's gradient back into zeros of the input's shape, one
/// axis at a time: reverse a negative step, interleave zeros for a step
/// above one, then pad to the slice's position.
fn slice_vjp(e: &mut Emit, gy: NodeId, xt: &TensorType, specs: &[SliceSpec]) -> Result<NodeId> {
    let mut g = gy;
    for (axis, spec) in specs.iter().enumerate() {
        if spec.is_full() {
            continue;
        }
        let len = xt.shape[axis].known().expect("only ':' slices symbolic axes");
        let idx = spec.indices(len).map_err(GraphError::Mismatch)?;
        if idx.is_empty() {
            return e.zeros(xt);
        }
        let n = idx.len();
        let (mut first, mut step) = (idx[0], spec.step);
        if step < 0 {
            let mut rev = vec![SliceSpec::FULL; axis + 1];
            rev[axis] = SliceSpec::new(None, None, -1);
            g = e.slice(g, rev)?;
            first = idx[n - 1];
            step = -step;
        }
        let step = step as usize;
        if step > 1 && n > 1 {
            let shape = e.ty(g).shape;
            let rank = shape.rank();
            let mut pattern: Vec<Option<usize>> = (0..rank).map(Some).collect();
            pattern.insert(axis + 1, None);
            let spread = e.dimshuffle(g, pattern)?;
            let padded = e.pad_axis(spread, axis + 1, 0, step - 1)?;
            let mut merged = shape.to_vec();
            merged[axis] = Dim::Known(n * step);
            let flat = e.reshape(padded, &merged.into())?;
            let mut trim = vec![SliceSpec::FULL; axis + 1];
            trim[axis] = SliceSpec::range(0, ((n - 1) * step + 1) as i64);
            g = e.slice(flat, trim)?;
        }
        let span = (n - 1) * step + 1;
        g = e.pad_axis(g, axis, first, len - first - span)?;
    }
    Ok(g)
}

/// `take`'s gradient: one-hot rows of the (normalized) indices times the
/// output gradient, summed over the index positions.
fn gather_vjp(
    e: &mut Emit,
    gy: NodeId,
    xt: &TensorType,
    idx: NodeId,
    axis: usize,
) -> std::result::Result<NodeId, String> {
    let err = |ge: GraphError| ge.to_string();
    let len = xt.shape[axis].known().ok_or("gather along a symbolic axis")?;
    let it = e.ty(idx);
    let count = match dim_product(&it.shape) {
        Some((n, syms)) if syms.is_empty() => Dim::Known(n),
        Some((1, syms)) if syms.len() == 1 => Dim::Sym(syms[0]),
        _ => return Err("index tensors with several symbolic dims".into()),
    };
    // Flatten the index dims to one, in the indices and in the gradient.
    let idx1 = e.reshape(idx, &Shape::from([count])).map_err(err)?;
    let gshape = e.ty(gy).shape;
    let mut flat: Vec<Dim> = gshape[..axis].to_vec();
    flat.push(count);
    flat.extend(gshape[axis + it.shape.rank()..].iter().copied());
    let g1 = e.reshape(gy, &flat.into()).map_err(err)?;
    let zero = e.g.add_const(Value::scalar(0.0, it.dtype), e.loc.clone());
    let size = e.g.add_const(Value::scalar(len as f64, it.dtype), e.loc.clone());
    let neg = e.bin(BinaryOp::Lt, idx1, zero).map_err(err)?;
    let wrapped = e.bin(BinaryOp::Add, idx1, size).map_err(err)?;
    let norm = e.select(neg, wrapped, idx1).map_err(err)?;
    let onehot = e.op(Op::OneHot { depth: len, dtype: xt.dtype }, &[norm]).map_err(err)?;
    // Move the index axis last, contract it with the one-hot rows, move the result back.
    let rank = xt.shape.rank();
    let mut to_last: Vec<Option<usize>> = (0..rank).filter(|&a| a != axis).map(Some).collect();
    to_last.push(Some(axis));
    let moved = e.dimshuffle(g1, to_last).map_err(err)?;
    let summed = e.op(Op::Dot, &[moved, onehot]).map_err(err)?;
    let mut back: Vec<Option<usize>> = (0..axis).map(Some).collect();
    back.push(Some(rank - 1));
    back.extend((axis..rank - 1).map(Some));
    e.dimshuffle(summed, back).map_err(err)
}
