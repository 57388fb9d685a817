//! Automatic differentiation as graph-to-graph transforms: reverse mode
//! ([`grad`], with Theano's `consider_constant` and `known_grads` in
//! [`grad_opts`]; [`lop`]), forward mode ([`jvp`], Theano's `Rop`),
//! [`hessian_vector_product`], and whole [`jacobian`]s and [`hessian`]s as
//! one loop.
//!
//! [`vjp::vjp`] states each op's vector-Jacobian product as more graph ops,
//! so a gradient graph dumps, optimizes and compiles like any other graph;
//! it is the one place an op's derivative lives. Every rule is linear in the
//! output gradient, so differentiating a gradient graph again gives second
//! derivatives, and differentiating a VJP with respect to its cotangent
//! gives the JVP (forward mode as PyTensor's `Rop` does it by default).

mod emit;
mod forward;
mod jacobian;
mod scan;
mod vjp;

use std::collections::{HashMap, HashSet};

pub use forward::{hessian_vector_product, jvp, jvp_nodes, lop};
pub use jacobian::{hessian, jacobian, jacobian_nodes};

use crate::{BinaryOp, Graph, GraphError, NodeId, Op, Value, Var};
use emit::Emit;

type Result<T> = std::result::Result<T, GraphError>;

/// What to do with a `wrt` variable the cost does not depend on (Theano's
/// `disconnected_inputs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Disconnected {
    /// An error naming the variable.
    #[default]
    Raise,
    /// A zero gradient.
    Zero,
}

/// The keyword arguments of Theano's `grad`, for [`grad_opts`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GradOptions<'a> {
    /// What to do with a `wrt` variable the cost does not depend on.
    pub disconnected: Disconnected,
    /// Variables treated as constants: each still gets its gradient, but
    /// nothing flows through it to what it was computed from (Theano's
    /// `consider_constant`; [`Var::stop_gradient`] does the same inside the
    /// graph).
    pub consider_constant: &'a [&'a Var],
    /// Gradients the caller already knows, of the cost (or, with no cost, of
    /// some objective) with respect to intermediate variables, as
    /// `(variable, its gradient)`: they are added to what flows back there
    /// (Theano's `known_grads`). Each gradient has its variable's type.
    pub known_grads: &'a [(&'a Var, &'a Var)],
}

/// Gradients of the scalar `cost` with respect to each of `wrt`.
///
/// ```
/// use rhea_graph::{Builder, DType, grad};
/// let g = Builder::new();
/// let x = g.input("x", DType::F64, [3])?;
/// let cost = x.square()?.sum_all()?;
/// let dx = grad(&cost, &[&x])?;
/// assert_eq!(dx[0].ty().to_string(), "f64[3]");
/// # Ok::<(), rhea_graph::GraphError>(())
/// ```
pub fn grad(cost: &Var, wrt: &[&Var]) -> Result<Vec<Var>> {
    grad_with(cost, wrt, Disconnected::Raise)
}

/// [`grad`] with a policy for variables the cost does not depend on.
pub fn grad_with(cost: &Var, wrt: &[&Var], disconnected: Disconnected) -> Result<Vec<Var>> {
    grad_opts(Some(cost), wrt, &GradOptions { disconnected, ..GradOptions::default() })
}

/// [`grad`] with Theano's options: constants to stop at, and known
/// gradients of intermediate variables (with which `cost` may be `None`,
/// as in Theano).
///
/// ```
/// use rhea_graph::{Builder, DType, GradOptions, grad_opts};
/// let g = Builder::new();
/// let x = g.input("x", DType::F64, [3])?;
/// let h = x.exp()?;
/// // The gradient of some loss with respect to `h` is known: back-propagate it to `x`.
/// let gh = g.input("gh", DType::F64, [3])?;
/// let dx = grad_opts(None, &[&x], &GradOptions { known_grads: &[(&h, &gh)], ..Default::default() })?;
/// assert_eq!(dx[0].ty().to_string(), "f64[3]");
/// # Ok::<(), rhea_graph::GraphError>(())
/// ```
pub fn grad_opts(cost: Option<&Var>, wrt: &[&Var], opts: &GradOptions) -> Result<Vec<Var>> {
    let Some(b) = cost.or(opts.known_grads.first().map(|(v, _)| *v)).map(Var::builder) else {
        return Err(GraphError::Mismatch("grad needs a cost or known_grads".into()));
    };
    let known: Vec<&Var> = opts.known_grads.iter().flat_map(|(v, gv)| [*v, *gv]).collect();
    ids_in(b, &known)?;
    let ids = ids_in(b, wrt)?;
    let constant = ids_in(b, opts.consider_constant)?;
    let mut g = b.graph_mut();
    let mut seeds = Vec::new();
    if let Some(cost) = cost {
        seeds.push(cost_seed(&mut g, cost.id())?);
    }
    for (v, gv) in opts.known_grads {
        let (vt, gt) = (g.ty(v.id()), g.ty(gv.id()));
        if vt != gt || !vt.dtype.is_float() {
            return Err(GraphError::Mismatch(format!(
                "known_grads: the gradient of {} is {gt}, but it must have the variable's type {vt} (a float)",
                describe(&g, v.id())
            )));
        }
        seeds.push((v.id(), gv.id()));
    }
    let grads = backprop(&mut g, &seeds, &ids, &constant, opts.disconnected)?;
    drop(g);
    Ok(grads.into_iter().map(|id| b.var(id)).collect())
}

/// The node ids of `vars`, which must all be of `b`'s graph.
fn ids_in(b: &crate::Builder, vars: &[&Var]) -> Result<Vec<NodeId>> {
    vars.iter().map(|v| if v.builder().same_graph(b) { Ok(v.id()) } else { Err(GraphError::ForeignVar) }).collect()
}

/// [`grad`] on a [`Graph`] by node ids.
pub fn grad_nodes(g: &mut Graph, cost: NodeId, wrt: &[NodeId], disconnected: Disconnected) -> Result<Vec<NodeId>> {
    let seed = cost_seed(g, cost)?;
    backprop(g, &[seed], wrt, &[], disconnected)
}

/// The cost with its own gradient, one; the cost must be a float scalar.
fn cost_seed(g: &mut Graph, cost: NodeId) -> Result<(NodeId, NodeId)> {
    let cty = g.ty(cost).clone();
    if !cty.dtype.is_float() || cty.shape.rank() != 0 {
        return Err(GraphError::Mismatch(format!("grad needs a float scalar cost, got {cty} (reduce it first)")));
    }
    let loc = g.node(cost).loc.clone();
    Ok((cost, g.add_const(Value::scalar(1.0, cty.dtype), loc)))
}

/// Reverse mode: back-propagates each seed `(node, its gradient)` and
/// returns the gradient of each of `wrt`; nothing flows through the nodes
/// in `constant`.
pub(crate) fn backprop(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
    constant: &[NodeId],
    disconnected: Disconnected,
) -> Result<Vec<NodeId>> {
    for &w in wrt {
        let ty = g.ty(w);
        if !ty.dtype.is_float() {
            return Err(GraphError::Mismatch(format!(
                "cannot differentiate with respect to {} ({ty}): only float tensors have gradients",
                describe(g, w)
            )));
        }
    }
    let roots: Vec<NodeId> = seeds.iter().map(|&(s, _)| s).collect();
    let order = g.ancestors(&roots);
    let constant: HashSet<NodeId> = constant.iter().copied().collect();
    let mut reaches: HashSet<NodeId> = wrt.iter().copied().collect();
    for &id in &order {
        if !constant.contains(&id) && g.node(id).inputs.iter().any(|i| reaches.contains(i)) {
            reaches.insert(id);
        }
    }
    let mut adjoint: HashMap<NodeId, NodeId> = HashMap::new();
    for &(node, seed) in seeds {
        let total = match adjoint.get(&node) {
            Some(&prev) => Emit { g, loc: None }.bin(BinaryOp::Add, prev, seed)?,
            None => seed,
        };
        adjoint.insert(node, total);
    }
    // The cotangents of each scan's results, gathered until the scan itself.
    let mut scan_cots: HashMap<NodeId, Vec<Option<NodeId>>> = HashMap::new();
    for &id in order.iter().rev() {
        let node = g.node(id).clone();
        if node.op.is_leaf() || !reaches.contains(&id) || constant.contains(&id) {
            continue;
        }
        let need: Vec<bool> = node.inputs.iter().map(|i| reaches.contains(i)).collect();
        let mut e = Emit { g, loc: node.loc.clone() };
        let grads = match &node.op {
            Op::ScanResult { index } => {
                let Some(&gy) = adjoint.get(&id) else { continue };
                let Op::Scan(scan) = &e.g.node(node.inputs[0]).op else { continue };
                let n = scan.results();
                scan_cots.entry(node.inputs[0]).or_insert_with(|| vec![None; n])[*index] = Some(gy);
                continue;
            }
            Op::Scan(scan) => {
                let Some(cots) = scan_cots.remove(&id) else { continue };
                scan::scan_vjp(&mut e, id, &node, scan, &cots, &need)?
            }
            _ => {
                let Some(&gy) = adjoint.get(&id) else { continue };
                vjp::vjp(&mut e, id, &node, gy, &need)?
            }
        };
        for ((&input, gx), needed) in node.inputs.iter().zip(grads).zip(need) {
            let (Some(gx), true) = (gx, needed) else { continue };
            let total = match adjoint.get(&input) {
                Some(&prev) => e.bin(BinaryOp::Add, prev, gx)?,
                None => gx,
            };
            adjoint.insert(input, total);
        }
    }
    let in_graph: HashSet<NodeId> = order.iter().copied().collect();
    wrt.iter()
        .map(|&w| match adjoint.get(&w) {
            Some(&gw) => Ok(gw),
            None if in_graph.contains(&w) || disconnected == Disconnected::Zero => {
                let ty = g.ty(w).clone();
                Emit { g, loc: None }.zeros(&ty)
            }
            None => Err(GraphError::Mismatch(format!(
                "the cost does not depend on {}; pass Disconnected::Zero to get a zero gradient",
                describe(g, w)
            ))),
        })
        .collect()
}

impl Var {
    /// The same value, with a zero gradient: nothing flows back through it
    /// (JAX's `stop_gradient`; Theano's `consider_constant` and
    /// `disconnected_grad` are this too). The optimizer removes it.
    ///
    /// ```
    /// use rhea_graph::{Builder, DType, grad};
    /// let g = Builder::new();
    /// let x = g.input("x", DType::F64, [3])?;
    /// // d/dx of x * stop_gradient(x) is stop_gradient(x): the second factor is a constant.
    /// let cost = (&x * &x.stop_gradient()?).sum_all()?;
    /// let dx = grad(&cost, &[&x])?;
    /// # Ok::<(), rhea_graph::GraphError>(())
    /// ```
    #[track_caller]
    pub fn stop_gradient(&self) -> Result<Var> {
        let loc = crate::Loc::from_caller(std::panic::Location::caller());
        self.builder().apply(crate::Op::StopGradient, &[self], loc)
    }
}

fn describe(g: &Graph, id: NodeId) -> String {
    match g.leaf_name(id) {
        Some(name) => format!("{name:?}"),
        None => format!("node {id} ({})", g.node(id).op.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, DType, Dim};

    #[test]
    fn gradients_are_ordinary_typed_nodes() {
        let g = Builder::new();
        let b = g.dim("batch").unwrap();
        let x = g.input("x", DType::F32, [b, Dim::Known(3)]).unwrap();
        let w = g.shared("w", ndarray::Array2::<f32>::zeros((3, 2))).unwrap();
        let bias = g.shared("b", ndarray::Array1::<f32>::zeros(2)).unwrap();
        let cost = (&x.dot(&w).unwrap() + &bias).sigmoid().unwrap().mean_all().unwrap();
        let grads = grad(&cost, &[&w, &bias]).unwrap();
        assert_eq!(grads[0].ty().to_string(), "f32[3,2]");
        assert_eq!(grads[1].ty().to_string(), "f32[2]");
    }

    #[test]
    fn bad_requests_are_clear_errors() {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [3]).unwrap();
        let z = g.input("z", DType::F32, [3]).unwrap();
        let i = g.input("i", DType::I32, [3]).unwrap();
        let cost = x.sum_all().unwrap();
        let e = grad(&x, &[&x]).unwrap_err().to_string();
        assert_eq!(e, "grad needs a float scalar cost, got f32[3] (reduce it first)");
        let e = grad(&cost, &[&i]).unwrap_err().to_string();
        assert!(e.contains("cannot differentiate with respect to \"i\" (i32[3])"), "{e}");
        let e = grad(&cost, &[&z]).unwrap_err().to_string();
        assert!(e.contains("the cost does not depend on \"z\""), "{e}");
        let zero = grad_with(&cost, &[&z], Disconnected::Zero).unwrap();
        assert_eq!(zero[0].ty().to_string(), "f32[3]");
        // Connected only through a non-differentiable op: a zero gradient, no error.
        let c2 = x.floor().unwrap().sum_all().unwrap();
        assert!(grad(&c2, &[&x]).is_ok());
    }
}
