//! Whole Jacobians and Hessians as one loop, not a Rust loop of `grad`s:
//! a scan over the rows of an identity matrix whose body is the function's
//! graph copied and differentiated once, along that row (Theano's
//! `jacobian` and `hessian`). Reverse mode (one VJP per output element)
//! when the function has fewer elements than its argument, forward mode
//! (one JVP per argument element) otherwise.

use std::collections::HashMap;

use super::{Disconnected, backprop, forward::jvp_nodes};
use crate::scan::{Body, nonseq_name, out_name, seq_name};
use crate::{Dim, Graph, GraphError, NodeId, Op, Scan, ScanPart, Shape, TensorType, Value, Var};

type Result<T> = std::result::Result<T, GraphError>;

fn known(what: &str, t: &TensorType) -> Result<Vec<usize>> {
    t.shape.to_known().ok_or_else(|| {
        GraphError::Mismatch(format!(
            "jacobian: the {what} has the symbolic shape {}; its shape must be known",
            t.shape
        ))
    })
}

/// The Jacobian of `f` with respect to `x`: shape `f.shape ++ x.shape`,
/// element `[i..., j...]` the derivative of `f[i...]` by `x[j...]`.
///
/// ```
/// use rhea_graph::{Builder, DType, jacobian};
/// let g = Builder::new();
/// let x = g.input("x", DType::F64, [3])?;
/// let j = jacobian(&x.square()?, &x)?; // diag(2 x)
/// assert_eq!(j.ty().to_string(), "f64[3,3]");
/// # Ok::<(), rhea_graph::GraphError>(())
/// ```
pub fn jacobian(f: &Var, x: &Var) -> Result<Var> {
    let b = f.builder();
    if !b.same_graph(x.builder()) {
        return Err(GraphError::ForeignVar);
    }
    let id = jacobian_nodes(&mut b.graph_mut(), f.id(), x.id())?;
    Ok(b.var(id))
}

/// The Hessian of the scalar `cost` with respect to `x`: the Jacobian of
/// its gradient, shape `x.shape ++ x.shape`.
pub fn hessian(cost: &Var, x: &Var) -> Result<Var> {
    let g = super::grad(cost, &[x])?;
    jacobian(&g[0], x)
}

/// [`jacobian`] on a [`Graph`] by node ids.
pub fn jacobian_nodes(g: &mut Graph, f: NodeId, x: NodeId) -> Result<NodeId> {
    let (ft, xt) = (g.ty(f).clone(), g.ty(x).clone());
    if !ft.dtype.is_float() || !xt.dtype.is_float() {
        return Err(GraphError::Mismatch(format!("jacobian needs float tensors, got {ft} and {xt}")));
    }
    let (fs, xs) = (known("function", &ft)?, known("argument", &xt)?);
    let (nf, nx): (usize, usize) = (fs.iter().product(), xs.iter().product());
    let reverse = nf <= nx;
    // A row is a cotangent of f (reverse mode) or a tangent of x (forward).
    let (rows, row_shape, dtype) = if reverse { (nf, &fs, ft.dtype) } else { (nx, &xs, xt.dtype) };
    let loc = g.node(f).loc.clone();
    // The leaves f depends on become the body's non-sequences.
    let leaves: Vec<NodeId> = g
        .ancestors(&[f])
        .into_iter()
        .filter(|&id| matches!(g.node(id).op, Op::Input { .. } | Op::Shared { .. }))
        .collect();
    let mut bg = Graph::new();
    let dir = bg.add_input(&seq_name(0), TensorType::new(dtype, Shape::from(row_shape.as_slice())), loc.clone())?;
    let mut subst = HashMap::new();
    for (j, &leaf) in leaves.iter().enumerate() {
        subst.insert(leaf, bg.add_input(&nonseq_name(j), g.ty(leaf).clone(), g.node(leaf).loc.clone())?);
    }
    let map = bg.import(g, &subst, &[f])?;
    let (bf, bx) = (map[&f], map.get(&x).copied());
    let out = match bx {
        // f does not depend on x: a zero Jacobian.
        None => {
            let zero = bg.add_const(Value::scalar(0.0, ft.dtype), loc.clone());
            let shape = if reverse { &xt.shape } else { &ft.shape };
            bg.add(Op::BroadcastTo { shape: shape.clone() }, &[zero], loc.clone())?
        }
        Some(bx) if reverse => backprop(&mut bg, &[(bf, dir)], &[bx], &[], Disconnected::Zero)?[0],
        Some(bx) => jvp_nodes(&mut bg, &[bf], &[bx], &[dir])?[0],
    };
    bg.set_output(&out_name(0), out);
    bg.remove_dead();
    let eye = Value::try_from_fn(dtype, &[rows, rows], |i| if i / rows == i % rows { 1.0 } else { 0.0 })
        .map_err(GraphError::Mismatch)?;
    let eye = g.add_const(eye, loc.clone());
    let eye =
        g.add(Op::Reshape { shape: Shape::from([&[rows][..], row_shape].concat().as_slice()) }, &[eye], loc.clone())?;
    let scan = Scan {
        body: Body::new(bg),
        n_steps: Dim::Known(rows),
        sequences: 1,
        taps: Box::new([]),
        outputs: 1,
        non_sequences: leaves.len(),
        go_backwards: false,
        truncate_gradient: None,
        until: false,
    };
    let index = scan.index(ScanPart::Outputs(0));
    let mut inputs = vec![eye];
    inputs.extend(&leaves);
    let node = g.add(Op::Scan(Box::new(scan)), &inputs, loc.clone())?;
    let stacked = g.add(Op::ScanResult { index }, &[node], loc.clone())?;
    let full = |a: &[usize], b: &[usize]| Shape::from([a, b].concat().as_slice());
    if reverse {
        // Rows are the outputs' elements: [nf, x...] is f.shape ++ x.shape.
        return g.add(Op::Reshape { shape: full(&fs, &xs) }, &[stacked], loc);
    }
    // Rows are the argument's elements: [nx, f...] -> [f..., nx] -> f.shape ++ x.shape.
    let rank = fs.len();
    let pattern: Vec<Option<usize>> = (1..=rank).map(Some).chain([Some(0)]).collect();
    let moved = g.add(Op::DimShuffle { pattern: pattern.into() }, &[stacked], loc.clone())?;
    g.add(Op::Reshape { shape: full(&fs, &xs) }, &[moved], loc)
}
