//! Products with Jacobians and Hessians, built on reverse mode: [`lop`]
//! (Theano's `Lop`), [`jvp`] (JAX's `jvp`, Theano's `Rop`) and
//! [`hessian_vector_product`] (Pearlmutter's reverse-over-reverse).
//!
//! Forward mode is reverse mode transposed: a VJP `u -> J^T u` is linear in
//! the cotangent `u`, so the gradient of `<J^T u, v>` with respect to `u` is
//! `J v`, and no node of the result depends on `u` (every rule in
//! [`super::vjp`] is linear in its output gradient). `u` is a scratch input,
//! removed again before [`jvp`] returns.

use super::emit::Emit;
use super::{Disconnected, GradOptions, backprop, cost_seed, describe, grad_opts, ids_in};
use crate::{BinaryOp, Graph, GraphError, NodeId, Op, ReduceOp, Var};

type Result<T> = std::result::Result<T, GraphError>;

/// Theano's `Lop`: for outputs `f` and cotangents `v` of their types, the
/// vector-Jacobian products `sum_k v_k . df_k/dw` for each `w` of `wrt`
/// (zero where no `f` depends on `w`).
///
/// ```
/// use rhea_graph::{Builder, DType, lop};
/// let g = Builder::new();
/// let x = g.input("x", DType::F64, [3])?;
/// let v = g.input("v", DType::F64, [3])?;
/// let vjp = lop(&[&x.exp()?], &[&x], &[&v])?; // v * exp(x)
/// assert_eq!(vjp[0].ty().to_string(), "f64[3]");
/// # Ok::<(), rhea_graph::GraphError>(())
/// ```
pub fn lop(f: &[&Var], wrt: &[&Var], v: &[&Var]) -> Result<Vec<Var>> {
    if f.len() != v.len() {
        return Err(GraphError::Mismatch(format!("lop: {} outputs but {} cotangents", f.len(), v.len())));
    }
    if f.is_empty() {
        return Err(GraphError::Mismatch("lop needs at least one output".into()));
    }
    let known: Vec<(&Var, &Var)> = f.iter().copied().zip(v.iter().copied()).collect();
    grad_opts(None, wrt, &GradOptions { disconnected: Disconnected::Zero, known_grads: &known, ..Default::default() })
}

/// Forward mode (JAX's `jvp`, Theano's `Rop`): for each of the outputs
/// `f`, its derivative along the tangents `v` of `wrt`,
/// `sum_i df/dw_i . v_i`, with `f`'s type.
///
/// ```
/// use rhea_graph::{Builder, DType, jvp};
/// let g = Builder::new();
/// let x = g.input("x", DType::F64, [3])?;
/// let v = g.input("v", DType::F64, [3])?;
/// let tangent = jvp(&[&x.sin()?], &[&x], &[&v])?; // cos(x) * v
/// assert_eq!(tangent[0].ty().to_string(), "f64[3]");
/// # Ok::<(), rhea_graph::GraphError>(())
/// ```
pub fn jvp(f: &[&Var], wrt: &[&Var], v: &[&Var]) -> Result<Vec<Var>> {
    let Some(b) = f.first().map(|x| x.builder()) else {
        return Err(GraphError::Mismatch("jvp needs at least one output".into()));
    };
    let (f, wrt, v) = (ids_in(b, f)?, ids_in(b, wrt)?, ids_in(b, v)?);
    let out = jvp_nodes(&mut b.graph_mut(), &f, &wrt, &v)?;
    Ok(out.into_iter().map(|id| b.var(id)).collect())
}

/// [`jvp`] on a [`Graph`] by node ids.
pub fn jvp_nodes(g: &mut Graph, f: &[NodeId], wrt: &[NodeId], v: &[NodeId]) -> Result<Vec<NodeId>> {
    check_tangents("jvp", g, wrt, v)?;
    for &y in f {
        if !g.ty(y).dtype.is_float() {
            return Err(GraphError::Mismatch(format!(
                "jvp: output {} is {}: only float outputs have derivatives",
                describe(g, y),
                g.ty(y)
            )));
        }
    }
    let mut cotangents = Vec::with_capacity(f.len());
    for &y in f {
        let ty = g.ty(y).clone();
        let mut n = g.len();
        let name = loop {
            let name = format!("jvp cotangent {n}");
            if g.find(&name).is_none() {
                break name;
            }
            n += 1;
        };
        cotangents.push(g.add_input(&name, ty, None)?);
    }
    let result = transpose_vjp(g, f, wrt, v, &cotangents);
    g.remove_inputs(&cotangents)?;
    result
}

/// `J v` as the gradient, with respect to the cotangents `u`, of
/// `<J^T u, v>`.
fn transpose_vjp(g: &mut Graph, f: &[NodeId], wrt: &[NodeId], v: &[NodeId], u: &[NodeId]) -> Result<Vec<NodeId>> {
    let seeds: Vec<(NodeId, NodeId)> = f.iter().copied().zip(u.iter().copied()).collect();
    let out = grad_of_inner(g, &seeds, wrt, v, u)?;
    let needed = g.ancestors(&out);
    if let Some(&bad) = needed.iter().find(|n| g.node(**n).inputs.iter().any(|i| u.contains(i))) {
        return Err(GraphError::Mismatch(format!(
            "jvp: the gradient rule of {} is not linear in the output gradient, so it has no forward mode",
            g.node(bad).op.name()
        )));
    }
    Ok(out)
}

/// The Hessian of the scalar `cost` times the vectors `v` (one per `wrt`,
/// of its type): for each `w`, `sum_i d2 cost / dw dw_i . v_i`, computed
/// as the gradient of `<grad(cost), v>` (a gradient's cost, not the
/// Hessian's).
///
/// ```
/// use rhea_graph::{Builder, DType, hessian_vector_product};
/// let g = Builder::new();
/// let x = g.input("x", DType::F64, [3])?;
/// let v = g.input("v", DType::F64, [3])?;
/// let cost = x.square()?.sum_all()?;
/// let hv = hessian_vector_product(&cost, &[&x], &[&v])?; // 2 v
/// assert_eq!(hv[0].ty().to_string(), "f64[3]");
/// # Ok::<(), rhea_graph::GraphError>(())
/// ```
pub fn hessian_vector_product(cost: &Var, wrt: &[&Var], v: &[&Var]) -> Result<Vec<Var>> {
    let b = cost.builder();
    let (wrt, v) = (ids_in(b, wrt)?, ids_in(b, v)?);
    let mut g = b.graph_mut();
    check_tangents("hessian_vector_product", &g, &wrt, &v)?;
    let seed = cost_seed(&mut g, cost.id())?;
    let out = grad_of_inner(&mut g, &[seed], &wrt, &v, &wrt)?;
    drop(g);
    Ok(out.into_iter().map(|id| b.var(id)).collect())
}

/// The gradient with respect to `by` of `<backprop(seeds) at wrt, v>`:
/// reverse mode over reverse mode, which both [`jvp`] and
/// [`hessian_vector_product`] are.
fn grad_of_inner(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
    v: &[NodeId],
    by: &[NodeId],
) -> Result<Vec<NodeId>> {
    let grads = backprop(g, seeds, wrt, &[], Disconnected::Zero)?;
    let s = inner(g, &grads, v)?;
    let seed = cost_seed(g, s)?;
    backprop(g, &[seed], by, &[], Disconnected::Zero)
}

/// One vector per variable, each of its variable's type.
fn check_tangents(what: &str, g: &Graph, wrt: &[NodeId], v: &[NodeId]) -> Result<()> {
    if wrt.len() != v.len() {
        return Err(GraphError::Mismatch(format!("{what}: {} variables but {} vectors", wrt.len(), v.len())));
    }
    for (&w, &t) in wrt.iter().zip(v) {
        if g.ty(w) != g.ty(t) {
            return Err(GraphError::Mismatch(format!(
                "{what}: the vector for {} is {}, but it must have the variable's type {}",
                describe(g, w),
                g.ty(t),
                g.ty(w)
            )));
        }
    }
    Ok(())
}

/// `sum_i sum(a_i * b_i)`, a scalar of `a[0]`'s dtype (zero if empty).
fn inner(g: &mut Graph, a: &[NodeId], b: &[NodeId]) -> Result<NodeId> {
    let mut e = Emit { g, loc: None };
    let dtype = a.first().map_or(crate::DType::F64, |&x| e.ty(x).dtype);
    let mut total: Option<NodeId> = None;
    for (&x, &y) in a.iter().zip(b) {
        let p = e.mul(x, y)?;
        let axes: Vec<usize> = (0..e.ty(p).shape.rank()).collect();
        let mut s = e.op(Op::Reduce { fun: ReduceOp::Sum, axes: axes.into(), keepdims: false }, &[p])?;
        if e.ty(s).dtype != dtype {
            s = e.op(Op::Cast { to: dtype }, &[s])?;
        }
        total = Some(match total {
            Some(t) => e.bin(BinaryOp::Add, t, s)?,
            None => s,
        });
    }
    Ok(match total {
        Some(t) => t,
        None => e.g.add_const(crate::Value::scalar(0.0, dtype), None),
    })
}
