//! [`Emit`]: adds gradient nodes to the graph, each tagged with the forward
//! node's source line, with the shape helpers the rules share.

use crate::{
    BinaryOp, Dim, Graph, GraphError, Loc, NodeId, Op, ReduceOp, Shape, SliceSpec, TensorType, UnaryOp, Value,
    reduced_shape,
};

type Result<T> = std::result::Result<T, GraphError>;

/// Adds gradient nodes, each tagged with the forward node's source line.
pub(super) struct Emit<'g> {
    pub(super) g: &'g mut Graph,
    pub(super) loc: Option<Loc>,
}

impl Emit<'_> {
    pub(super) fn op(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        self.g.add(op, inputs, self.loc.clone())
    }
    pub(super) fn ty(&self, id: NodeId) -> TensorType {
        self.g.ty(id).clone()
    }
    pub(super) fn un(&mut self, fun: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.op(Op::Unary { fun }, &[x])
    }
    pub(super) fn bin(&mut self, fun: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Binary { fun }, &[a, b])
    }
    pub(super) fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.bin(BinaryOp::Mul, a, b)
    }
    pub(super) fn scalar(&mut self, x: f64, like: NodeId) -> NodeId {
        let dtype = self.g.ty(like).dtype;
        self.g.add_const(Value::scalar(x, dtype), self.loc.clone())
    }
    /// `x * c` for a Rust scalar `c`.
    pub(super) fn scale(&mut self, x: NodeId, c: f64) -> Result<NodeId> {
        let c = self.scalar(c, x);
        self.mul(x, c)
    }
    pub(super) fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Where, &[cond, a, b])
    }
    pub(super) fn sum(&mut self, x: NodeId, axes: Vec<usize>, keepdims: bool) -> Result<NodeId> {
        self.op(Op::Reduce { fun: ReduceOp::Sum, axes: axes.into(), keepdims }, &[x])
    }
    pub(super) fn reshape(&mut self, x: NodeId, shape: &Shape) -> Result<NodeId> {
        if &self.ty(x).shape == shape { Ok(x) } else { self.op(Op::Reshape { shape: shape.clone() }, &[x]) }
    }
    pub(super) fn dimshuffle(&mut self, x: NodeId, pattern: Vec<Option<usize>>) -> Result<NodeId> {
        self.op(Op::DimShuffle { pattern: pattern.into() }, &[x])
    }
    pub(super) fn transpose_last2(&mut self, x: NodeId) -> Result<NodeId> {
        let r = self.ty(x).shape.rank();
        let mut pattern: Vec<Option<usize>> = (0..r).map(Some).collect();
        pattern.swap(r - 2, r - 1);
        self.dimshuffle(x, pattern)
    }
    pub(super) fn broadcast_to(&mut self, x: NodeId, shape: &Shape) -> Result<NodeId> {
        if &self.ty(x).shape == shape { Ok(x) } else { self.op(Op::BroadcastTo { shape: shape.clone() }, &[x]) }
    }
    pub(super) fn zeros(&mut self, ty: &TensorType) -> Result<NodeId> {
        let z = self.g.add_const(Value::scalar(0.0, ty.dtype), self.loc.clone());
        self.broadcast_to(z, &ty.shape)
    }
    pub(super) fn slice(&mut self, x: NodeId, specs: Vec<SliceSpec>) -> Result<NodeId> {
        self.op(Op::Slice { specs: specs.into() }, &[x])
    }
    pub(super) fn pad_axis(&mut self, x: NodeId, axis: usize, before: usize, after: usize) -> Result<NodeId> {
        let mut widths = vec![(0, 0); self.ty(x).shape.rank()];
        widths[axis] = (before, after);
        self.op(Op::Pad { widths: widths.into(), value: crate::F64(0.0) }, &[x])
    }

    /// Sums a gradient of a broadcast result back to the operand's shape.
    pub(super) fn unbroadcast(&mut self, adj: NodeId, target: &Shape) -> Result<NodeId> {
        let shape = self.ty(adj).shape;
        if &shape == target {
            return Ok(adj);
        }
        let lead = shape.rank() - target.rank();
        let mut axes: Vec<usize> = (0..lead).collect();
        axes.extend(
            (0..target.rank())
                .filter(|&i| target[i] == Dim::Known(1) && shape[lead + i] != Dim::Known(1))
                .map(|i| lead + i),
        );
        let summed = if axes.is_empty() { adj } else { self.sum(adj, axes, true)? };
        self.reshape(summed, target)
    }

    /// `gy` reshaped to the keepdims form of a reduction's output.
    pub(super) fn keep(&mut self, gy: NodeId, x: &Shape, axes: &[usize], keepdims: bool) -> Result<NodeId> {
        if keepdims { Ok(gy) } else { self.reshape(gy, &reduced_shape(x, axes, true)) }
    }
}
