//! Fusion: groups of elementwise ops over one iteration domain, possibly
//! ending in one reduction, become one kernel of kernel IR.
//!
//! Nodes are visited consumers first (reverse topological order). A node
//! joins the kernel of its consumers when all of them are in that one
//! kernel and it has the kernel's domain; otherwise it starts a kernel of
//! its own. Every member of a kernel comes after every node it joins
//! (in topological order), so no path can leave a kernel and come back: a
//! kernel never creates a cycle. Nothing is computed twice: a value needed
//! outside its kernel becomes one more output of that kernel.

use std::collections::{HashMap, HashSet};

use rhea_graph::{F64, Graph, NodeId, Op, ReduceOp, Shape};
use rhea_kernel::{Combine, Const, Inst, Kernel, KernelInput, KernelOutput, Reduction, Reg};

use crate::Mode;

/// One fused kernel and the graph nodes it computes.
#[derive(Clone, Debug)]
pub struct Group {
    /// The nodes it computes, in topological order.
    pub members: Vec<NodeId>,
    /// The node that decided its domain (last in topological order).
    pub root: NodeId,
    /// The nodes it reads, in the order of the kernel's inputs.
    pub inputs: Vec<NodeId>,
    /// The nodes whose values it writes, in the order of its outputs.
    pub outputs: Vec<NodeId>,
    /// The kernel.
    pub kernel: Kernel,
}

/// The fusion of a graph's fusible nodes into kernels.
#[derive(Clone, Debug, Default)]
pub struct Fusion {
    /// The kernels.
    pub groups: Vec<Group>,
    /// Each fused node's kernel.
    pub group_of: HashMap<NodeId, usize>,
    /// For `--explain-fusion`: for each fusible node, why it went where it did.
    pub notes: Vec<(NodeId, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Elementwise,
    /// Broadcast or dimshuffle: only a view on a value read from outside.
    View,
    Reduction,
}

fn kind(op: &Op) -> Option<Kind> {
    match op {
        Op::Unary { .. } | Op::Binary { .. } | Op::Where | Op::Cast { .. } => Some(Kind::Elementwise),
        Op::BroadcastTo { .. } | Op::DimShuffle { .. } => Some(Kind::View),
        Op::Reduce { fun, .. } if !matches!(fun, ReduceOp::LogSumExp) => Some(Kind::Reduction),
        _ => None,
    }
}

/// A scalar constant, inlined into kernels.
fn inline_const(g: &Graph, id: NodeId) -> Option<Const> {
    let Op::Const { value } = &g.node(id).op else { return None };
    let v = value.value();
    (v.len() == 1 && v.shape().is_empty()).then(|| match v {
        rhea_graph::Value::F32(_) | rhea_graph::Value::F64(_) => Const::Float(F64(v.to_f64_vec()[0])),
        rhea_graph::Value::Bool(a) => Const::Bool(*a.iter().next().expect("one element")),
        rhea_graph::Value::I32(a) => Const::Int(*a.iter().next().expect("one element") as i64),
        rhea_graph::Value::I64(a) => Const::Int(*a.iter().next().expect("one element")),
    })
}

/// Groups the fusible nodes of `g` into kernels.
pub fn fuse(g: &Graph, mode: Mode) -> Fusion {
    let order = g.topo_order();
    let mut roots: HashSet<NodeId> = g.outputs().iter().map(|(_, id)| *id).collect();
    roots.extend(g.updates().iter().map(|&(_, v)| v));
    let mut f = Fusion::default();
    let mut domains: Vec<Shape> = Vec::new();
    let mut members: Vec<Vec<NodeId>> = Vec::new();
    let mut views: HashSet<NodeId> = HashSet::new();
    for &id in order.iter().rev() {
        let node = g.node(id);
        let Some(k) = kind(&node.op) else {
            if !node.op.is_leaf() {
                f.notes.push((id, format!("not fusible: {} runs as its own step", node.op.name())));
            }
            continue;
        };
        if k == Kind::View {
            views.insert(id);
        }
        let consumers = g.consumers(id);
        let domain = match &node.op {
            Op::Reduce { .. } => g.ty(node.inputs[0]).shape.clone(),
            _ => node.ty.shape.clone(),
        };
        let target = join_target(g, &f, &views, &domains, k, &consumers, &domain, mode);
        match target {
            Ok(gi) => {
                f.group_of.insert(id, gi);
                members[gi].push(id);
                let why = if roots.contains(&id) { " (and written out: a graph output)" } else { "" };
                f.notes.push((id, format!("fused into kernel {gi} with its consumers{why}")));
            }
            Err(why) => {
                let gi = domains.len();
                domains.push(domain);
                members.push(vec![id]);
                f.group_of.insert(id, gi);
                f.notes.push((id, format!("starts kernel {gi}: {why}")));
            }
        }
    }
    let index: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    for (gi, mut m) in members.into_iter().enumerate() {
        m.sort_by_key(|id| index[id]);
        f.groups.push(build(g, gi, m, &domains[gi], &f.group_of, &roots));
    }
    f.notes.sort_by_key(|(id, _)| index[id]);
    f
}

#[allow(clippy::too_many_arguments)]
fn join_target(
    g: &Graph,
    f: &Fusion,
    views: &HashSet<NodeId>,
    domains: &[Shape],
    k: Kind,
    consumers: &[NodeId],
    domain: &Shape,
    mode: Mode,
) -> Result<usize, String> {
    if mode == Mode::None {
        return Err("mode none: one kernel per op".into());
    }
    if k == Kind::Reduction {
        return Err("a reduction ends its kernel".into());
    }
    let groups: HashSet<Option<usize>> = consumers.iter().map(|c| f.group_of.get(c).copied()).collect();
    let only = match (groups.len(), groups.iter().next()) {
        (0, _) => return Err("nothing in the graph uses it (a graph output)".into()),
        (1, Some(Some(gi))) => *gi,
        (1, Some(None)) => {
            let c = consumers[0];
            return Err(format!("its consumer {} runs as its own step", g.node(c).op.name()));
        }
        _ => return Err("its consumers are in different kernels or steps".into()),
    };
    if &domains[only] != domain {
        return Err(format!("its shape {domain} differs from the consumers' kernel domain {}", domains[only]));
    }
    if let Some(v) = consumers.iter().find(|c| views.contains(c)) {
        return Err(format!("it feeds a {} , which reads only values from outside the kernel", g.node(*v).op.name()));
    }
    Ok(only)
}

/// The kernel IR of one group.
fn build(
    g: &Graph,
    gi: usize,
    members: Vec<NodeId>,
    domain: &Shape,
    group_of: &HashMap<NodeId, usize>,
    roots: &HashSet<NodeId>,
) -> Group {
    let rank = domain.rank();
    let inside = |id: &NodeId| group_of.get(id) == Some(&gi);
    let mut b = Builder {
        g,
        regs: HashMap::new(),
        body: Vec::new(),
        inputs: Vec::new(),
        input_nodes: Vec::new(),
        consts: HashMap::new(),
    };
    let mut reduce = None;
    let mut reduced_root = None;
    for &m in &members {
        let node = g.node(m);
        let dtype = node.ty.dtype;
        let reg = match &node.op {
            Op::Unary { fun } => {
                let x = b.operand(node.inputs[0], &inside, rank);
                b.push(Inst::Unary { op: *fun, x }, dtype)
            }
            Op::Binary { fun } => {
                let (x, y) = (b.operand(node.inputs[0], &inside, rank), b.operand(node.inputs[1], &inside, rank));
                b.push(Inst::Binary { op: *fun, a: x, b: y }, dtype)
            }
            Op::Where => {
                let c = b.operand(node.inputs[0], &inside, rank);
                let x = b.operand(node.inputs[1], &inside, rank);
                let y = b.operand(node.inputs[2], &inside, rank);
                b.push(Inst::Select { cond: c, a: x, b: y }, dtype)
            }
            Op::Cast { .. } => {
                let x = b.operand(node.inputs[0], &inside, rank);
                b.push(Inst::Cast { x }, dtype)
            }
            Op::BroadcastTo { .. } => b.operand(node.inputs[0], &inside, rank),
            Op::DimShuffle { pattern } => {
                let x = node.inputs[0];
                b.load(x, pattern.to_vec())
            }
            Op::Reduce { fun, axes, keepdims } => {
                let combine = match fun {
                    ReduceOp::Sum => Combine::Sum,
                    ReduceOp::Mean => Combine::Mean,
                    ReduceOp::Prod => Combine::Prod,
                    ReduceOp::Max => Combine::Max,
                    ReduceOp::Min => Combine::Min,
                    ReduceOp::LogSumExp => unreachable!("logsumexp is not fused"),
                };
                reduce = Some(Reduction { combine, axes: axes.to_vec(), keepdims: *keepdims });
                reduced_root = Some(m);
                b.operand(node.inputs[0], &inside, rank)
            }
            other => unreachable!("{} is not fusible", other.name()),
        };
        b.regs.insert(m, reg);
    }
    let mut outputs = Vec::new();
    let mut kernel_outputs = Vec::new();
    for &m in &members {
        let needed = roots.contains(&m) || g.consumers(m).iter().any(|c| !inside(c)) || Some(m) == reduced_root;
        if needed {
            outputs.push(m);
            kernel_outputs.push(KernelOutput { value: b.regs[&m], reduced: Some(m) == reduced_root });
        }
    }
    let root = *members.last().expect("a group has a member");
    let kernel = Kernel { domain: domain.clone(), inputs: b.inputs, body: b.body, outputs: kernel_outputs, reduce };
    Group { members, root, inputs: b.input_nodes, outputs, kernel }
}

struct Builder<'g> {
    g: &'g Graph,
    regs: HashMap<NodeId, Reg>,
    body: Vec<(Inst, rhea_graph::DType)>,
    inputs: Vec<KernelInput>,
    input_nodes: Vec<NodeId>,
    consts: HashMap<(Const, rhea_graph::DType), Reg>,
}

impl Builder<'_> {
    fn push(&mut self, inst: Inst, dtype: rhea_graph::DType) -> Reg {
        self.body.push((inst, dtype));
        (self.body.len() - 1) as Reg
    }

    /// The register holding `id`'s value: computed inside, an inlined
    /// constant, or a load broadcast numpy-style to the domain.
    fn operand(&mut self, id: NodeId, inside: &dyn Fn(&NodeId) -> bool, rank: usize) -> Reg {
        if inside(&id) {
            return self.regs[&id];
        }
        let dtype = self.g.ty(id).dtype;
        if let Some(c) = inline_const(self.g, id) {
            if let Some(&r) = self.consts.get(&(c, dtype)) {
                return r;
            }
            let r = self.push(Inst::Const { value: c }, dtype);
            self.consts.insert((c, dtype), r);
            return r;
        }
        let r_in = self.g.ty(id).shape.rank();
        let axes = (0..rank).map(|d| (d + r_in).checked_sub(rank)).collect();
        self.load(id, axes)
    }

    /// A load of `id` through a view, shared by every use of the same view.
    fn load(&mut self, id: NodeId, axes: Vec<Option<usize>>) -> Reg {
        let ty = self.g.ty(id);
        let spec = KernelInput { dtype: ty.dtype, shape: ty.shape.clone(), axes };
        let input = match self.input_nodes.iter().zip(&self.inputs).position(|(n, s)| *n == id && *s == spec) {
            Some(i) => i,
            None => {
                self.inputs.push(spec);
                self.input_nodes.push(id);
                self.inputs.len() - 1
            }
        };
        let dtype = ty.dtype;
        let existing = self.body.iter().position(|(inst, _)| *inst == Inst::Load { input: input as u32 });
        match existing {
            Some(r) => r as Reg,
            None => self.push(Inst::Load { input: input as u32 }, dtype),
        }
    }
}
