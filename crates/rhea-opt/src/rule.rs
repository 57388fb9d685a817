//! Rewrite rules: small named functions from a node to an equivalent,
//! better node, grouped by family (one file per family under `rules/`).

use rhea_graph::{BinaryOp, DType, Graph, Loc, Node, NodeId, Op, TensorType, UnaryOp, Value};

/// What a rule sees: the graph and the node it may rewrite. Nodes it builds
/// carry the rewritten node's source location.
pub struct Ctx<'g> {
    /// The graph being rewritten.
    pub g: &'g mut Graph,
    /// The node the rule looks at.
    pub id: NodeId,
    loc: Option<Loc>,
}

impl<'g> Ctx<'g> {
    /// A context for rewriting `id`.
    pub fn new(g: &'g mut Graph, id: NodeId) -> Ctx<'g> {
        let loc = g.node(id).loc.clone();
        Ctx { g, id, loc }
    }

    /// The node being looked at.
    pub fn node(&self) -> &Node {
        self.g.node(self.id)
    }

    /// Its op.
    pub fn op(&self) -> &Op {
        &self.g.node(self.id).op
    }

    /// Its input `i`.
    pub fn input(&self, i: usize) -> NodeId {
        self.g.node(self.id).inputs[i]
    }

    /// Any node's op.
    pub fn op_of(&self, id: NodeId) -> &Op {
        &self.g.node(id).op
    }

    /// Any node's inputs.
    pub fn inputs_of(&self, id: NodeId) -> Vec<NodeId> {
        self.g.node(id).inputs.to_vec()
    }

    /// Any node's type.
    pub fn ty(&self, id: NodeId) -> TensorType {
        self.g.ty(id).clone()
    }

    /// The value of a constant whose elements are all equal (a scalar, a
    /// filled tensor, or a scalar broadcast), as `f64`.
    pub fn scalar(&self, id: NodeId) -> Option<f64> {
        match self.op_of(id) {
            Op::Const { value } => {
                let v = value.value().to_f64_vec();
                let first = *v.first()?;
                v.iter().all(|x| x.to_bits() == first.to_bits()).then_some(first)
            }
            Op::BroadcastTo { .. } => self.scalar(self.g.node(id).inputs[0]),
            _ => None,
        }
    }

    /// A 0-d constant's exact value in its own dtype.
    pub fn scalar_exact(&self, id: NodeId) -> Option<rhea_kernel::scalar::Scalar> {
        use rhea_kernel::scalar::Scalar;
        let Op::Const { value } = self.op_of(id) else { return None };
        let v = value.value();
        if !v.shape().is_empty() {
            return None;
        }
        Some(match v {
            Value::F32(a) => Scalar::F32(*a.iter().next()?),
            Value::F64(a) => Scalar::F64(*a.iter().next()?),
            Value::I32(a) => Scalar::I32(*a.iter().next()?),
            Value::I64(a) => Scalar::I64(*a.iter().next()?),
            Value::Bool(a) => Scalar::Bool(*a.iter().next()?),
        })
    }

    /// A 0-d constant holding `s` exactly.
    pub fn constant_exact(&mut self, s: rhea_kernel::scalar::Scalar) -> NodeId {
        use rhea_kernel::scalar::Scalar;
        let v = match s {
            Scalar::F32(x) => Value::from(x),
            Scalar::F64(x) => Value::from(x),
            Scalar::I32(x) => Value::from(x),
            Scalar::I64(x) => Value::from(x),
            Scalar::Bool(x) => Value::from(x),
        };
        self.g.add_const(v, self.loc.clone())
    }

    /// True if `id` is a constant equal to `x`.
    pub fn is(&self, id: NodeId, x: f64) -> bool {
        self.scalar(id) == Some(x)
    }

    /// If `id` is `op(...)` of the given unary function, its argument.
    pub fn unary_arg(&self, id: NodeId, fun: UnaryOp) -> Option<NodeId> {
        match self.op_of(id) {
            Op::Unary { fun: f } if *f == fun => Some(self.g.node(id).inputs[0]),
            _ => None,
        }
    }

    /// If `id` is the given binary function, its two arguments.
    pub fn binary_args(&self, id: NodeId, fun: BinaryOp) -> Option<(NodeId, NodeId)> {
        match self.op_of(id) {
            Op::Binary { fun: f } if *f == fun => {
                let i = &self.g.node(id).inputs;
                Some((i[0], i[1]))
            }
            _ => None,
        }
    }

    /// Builds `op(inputs)`, or `None` if its type rule refuses (the rule
    /// then does not fire).
    pub fn make(&mut self, op: Op, inputs: &[NodeId]) -> Option<NodeId> {
        self.g.add(op, inputs, self.loc.clone()).ok()
    }

    /// `fun(x)`.
    pub fn un(&mut self, fun: UnaryOp, x: NodeId) -> Option<NodeId> {
        self.make(Op::Unary { fun }, &[x])
    }

    /// `fun(a, b)`.
    pub fn bin(&mut self, fun: BinaryOp, a: NodeId, b: NodeId) -> Option<NodeId> {
        self.make(Op::Binary { fun }, &[a, b])
    }

    /// A scalar constant of `dtype`.
    pub fn constant(&mut self, x: f64, dtype: DType) -> NodeId {
        self.g.add_const(Value::scalar(x, dtype), self.loc.clone())
    }
}

/// A named rewrite rule.
#[derive(Clone, Copy)]
pub struct Rule {
    /// Its name (`log_sigmoid`), used by `--include`/`--exclude` and traces.
    pub name: &'static str,
    /// The identity it applies, for docs and traces.
    pub identity: &'static str,
    /// Gives an equivalent node of the same type, or `None`.
    pub apply: fn(&mut Ctx) -> Option<NodeId>,
}
