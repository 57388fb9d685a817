//! The graph: typed nodes in a petgraph `StableDiGraph`, interned on insert.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::panic::Location;
use std::sync::Arc;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};

mod edit;

use crate::error::join;
use crate::{GraphError, Op, Shape, TensorType, Value, infer};

/// A node's handle: small, `Copy`, valid for the graph that made it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

impl NodeId {
    /// The raw index (stable while the node lives).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where in the user's source a node was built.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Loc(Arc<(Box<str>, u32, u32)>);

impl Loc {
    /// A location from its parts.
    pub fn new(file: &str, line: u32, column: u32) -> Loc {
        Loc(Arc::new((file.into(), line, column)))
    }

    /// The caller's location, as captured by `#[track_caller]`.
    pub fn from_caller(l: &Location<'_>) -> Loc {
        Loc::new(l.file(), l.line(), l.column())
    }

    /// Source file path.
    pub fn file(&self) -> &str {
        &self.0.0
    }

    /// Line, from 1.
    pub fn line(&self) -> u32 {
        self.0.1
    }

    /// Column, from 1.
    pub fn column(&self) -> u32 {
        self.0.2
    }

    /// Parses `file:line:column` (or `file:line`), as written in graph files.
    pub fn parse(s: &str) -> Option<Loc> {
        let mut parts = s.rsplitn(3, ':');
        let last: u32 = parts.next()?.parse().ok()?;
        let mid = parts.next()?;
        match (mid.parse::<u32>(), parts.next()) {
            (Ok(line), Some(file)) => Some(Loc::new(file, line, last)),
            _ => Some(Loc::new(&s[..s.len() - last.to_string().len() - 1], last, 0)),
        }
    }

    /// `file:line:column`, the form stored in graph files.
    pub fn full(&self) -> String {
        format!("{}:{}:{}", self.file(), self.line(), self.column())
    }
}

/// `file:line`.
impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file(), self.line())
    }
}

/// One node: an op, its inputs in order, its type, an optional display
/// name and where the user built it.
#[derive(Clone, Debug)]
pub struct Node {
    /// The operation and its attributes.
    pub op: Op,
    /// Operands, in the op's order.
    pub inputs: Box<[NodeId]>,
    /// Type of the node's value.
    pub ty: TensorType,
    /// A name for dumps, set by [`crate::Var::named`].
    pub name: Option<Box<str>>,
    /// Where the user built it.
    pub loc: Option<Loc>,
}

/// Fetches the current value of a shared variable held elsewhere (a
/// backend's device copy); see [`Graph::set_shared_pending`].
pub type Fetch = Arc<dyn Fn() -> Result<Value, String> + Send + Sync + std::panic::RefUnwindSafe>;

/// A map keyed by node, hashed by one multiplication: the maps of shared
/// values are read for every shared variable on every call of a compiled
/// function, where SipHash cost about a microsecond per Sonar MLP step.
type IdMap<V> = HashMap<NodeId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`]: Fibonacci hashing of the node's index.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The product's high bits are the well-mixed ones; hashbrown takes
        // its bucket from the low bits (as rustc-hash 2 does).
        self.0.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A tensor expression graph: typed nodes, the values of its shared
/// variables, its named outputs and its update rules.
///
/// Nodes are hash-consed: adding an op with the same attributes and inputs as
/// an existing node gives back that node, so duplicates never exist.
#[derive(Clone, Default)]
pub struct Graph {
    nodes: StableDiGraph<Node, u32>,
    interned: HashMap<(Op, Box<[NodeId]>), NodeId>,
    names: HashMap<Box<str>, NodeId>,
    shared_values: IdMap<Value>,
    /// A process-wide unique number per write of each shared value, so
    /// device copies can tell whether they are current.
    shared_versions: IdMap<u64>,
    /// Shared values whose current copy is held elsewhere (a GPU), with
    /// who holds it and how to fetch it.
    pending_shared: IdMap<(u64, Fetch)>,
    outputs: Vec<(Box<str>, NodeId)>,
    updates: Vec<(NodeId, NodeId)>,
    /// How many outputs and update values each node is (to find them fast).
    root_count: HashMap<NodeId, usize>,
    /// Shared variables that have an update.
    updated: std::collections::HashSet<NodeId>,
    /// Build shared variables' types only, not their values (to inspect a
    /// model without the memory and time its weights cost).
    types_only: bool,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.node_count()
    }

    /// True if the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node behind `id`.
    ///
    /// # Panics
    /// If `id` does not belong to this graph: ids are only made by it.
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes.node_weight(id.0).expect("NodeId from another graph, or of a removed node")
    }

    /// The node behind `id`, if it exists.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.node_weight(id.0)
    }

    /// The type of a node.
    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.node(id).ty
    }

    /// Nodes that use `id` as an input (each once, in no particular order).
    pub fn consumers(&self, id: NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self.nodes.neighbors_directed(id.0, Direction::Outgoing).map(NodeId).collect();
        out.sort();
        out.dedup();
        out
    }

    /// True if some node uses `id` as an input.
    pub fn is_used(&self, id: NodeId) -> bool {
        self.nodes.neighbors_directed(id.0, Direction::Outgoing).next().is_some()
    }

    /// Adds `op` applied to `inputs`, checking the op's shape and dtype rule,
    /// or returns the identical node that already exists.
    pub fn add(&mut self, op: Op, inputs: &[NodeId], loc: Option<Loc>) -> Result<NodeId, GraphError> {
        if let Some(&id) = self.interned.get(&(op.clone(), inputs.into())) {
            return Ok(id);
        }
        for &i in inputs {
            if self.get(i).is_none() {
                return Err(GraphError::Mismatch(format!("{}: input {i} is not a node of this graph", op.name())));
            }
        }
        let types: Vec<&TensorType> = inputs.iter().map(|&i| self.ty(i)).collect();
        let rule = self.rule(&op, inputs);
        let ty = rule.map_err(|msg| GraphError::Type {
            op: op.name().to_string(),
            inputs: if types.is_empty() { "none".into() } else { join(&types) },
            msg,
            loc: loc.clone(),
        })?;
        Ok(self.insert(op, inputs, ty, loc))
    }

    /// The type `op` gives on the nodes `inputs` of this graph, by its
    /// shape rule ([`infer`]); a scan result's is its scan's.
    pub fn rule(&self, op: &Op, inputs: &[NodeId]) -> Result<TensorType, String> {
        match (op, inputs) {
            (Op::ScanResult { index }, [scan]) => match &self.node(*scan).op {
                Op::Scan(s) => s.result_type(*index).and_then(|t| {
                    crate::shape::check_size(&t.shape, t.dtype)?;
                    Ok(t)
                }),
                other => Err(format!("reads {}, which is not a scan", other.name())),
            },
            (Op::ScanResult { .. }, _) => Err(format!("takes its scan as its one input, got {} inputs", inputs.len())),
            _ => infer(op, &inputs.iter().map(|&i| self.ty(i)).collect::<Vec<_>>()),
        }
    }

    fn insert(&mut self, op: Op, inputs: &[NodeId], ty: TensorType, loc: Option<Loc>) -> NodeId {
        let key = (op.clone(), Box::<[NodeId]>::from(inputs));
        let node = Node { op, inputs: inputs.into(), ty, name: None, loc };
        let id = NodeId(self.nodes.add_node(node));
        for (pos, &i) in inputs.iter().enumerate() {
            self.nodes.add_edge(i.0, id.0, pos as u32);
        }
        self.interned.insert(key, id);
        id
    }

    fn claim_name(&self, name: &str) -> Result<(), GraphError> {
        if name.is_empty() {
            return Err(GraphError::Mismatch("inputs and shared variables need a non-empty name".into()));
        }
        if self.names.contains_key(name) {
            return Err(GraphError::DuplicateName(name.into()));
        }
        Ok(())
    }

    /// Adds a named input of the given type.
    pub fn add_input(&mut self, name: &str, ty: TensorType, loc: Option<Loc>) -> Result<NodeId, GraphError> {
        self.claim_name(name)?;
        crate::shape::check_size(&ty.shape, ty.dtype).map_err(GraphError::Mismatch)?;
        let id = self.insert(Op::Input { name: name.into() }, &[], ty, loc);
        self.names.insert(name.into(), id);
        Ok(id)
    }

    /// Adds a named shared variable holding `value`.
    pub fn add_shared(&mut self, name: &str, value: Value, loc: Option<Loc>) -> Result<NodeId, GraphError> {
        let ty = TensorType::new(value.dtype(), Shape::known(value.shape()));
        let id = self.add_shared_declared(name, ty, loc)?;
        self.shared_values.insert(id, value);
        self.bump(id);
        Ok(id)
    }

    /// Adds a named shared variable of a known type whose value is given
    /// later (a graph file that leaves large values to a weights file).
    pub fn add_shared_declared(&mut self, name: &str, ty: TensorType, loc: Option<Loc>) -> Result<NodeId, GraphError> {
        self.claim_name(name)?;
        if ty.shape.to_known().is_none() {
            return Err(GraphError::Mismatch(format!(
                "shared variable {name:?} has symbolic shape {}; shared shapes must be known",
                ty.shape
            )));
        }
        let id = self.insert(Op::Shared { name: name.into() }, &[], ty, loc);
        self.names.insert(name.into(), id);
        Ok(id)
    }

    /// Whether shared variables added through [`crate::Builder::shared_with`]
    /// are declared by type only, their values not made.
    pub fn types_only(&self) -> bool {
        self.types_only
    }

    /// Declare shared variables by type only from now on (see [`Graph::types_only`]).
    pub fn set_types_only(&mut self, on: bool) {
        self.types_only = on;
    }

    /// Adds a constant (interned by value, bit for bit).
    pub fn add_const(&mut self, value: Value, loc: Option<Loc>) -> NodeId {
        self.add(Op::Const { value: crate::Literal::new(value) }, &[], loc).expect("a constant's type rule cannot fail")
    }

    /// The input or shared variable called `name`.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// Input nodes, in the order they were added.
    pub fn inputs(&self) -> Vec<NodeId> {
        self.leaves(|op| matches!(op, Op::Input { .. }))
    }

    /// An error naming the first node (in topological order) whose type
    /// names a symbolic dim that no input's type has: nothing can give it a
    /// size when the graph runs (`broadcast_to([n, 3])` with no input of
    /// size `n`).
    pub fn check_symbols_bound(&self) -> Result<(), String> {
        let bound: std::collections::HashSet<crate::Symbol> = self
            .inputs()
            .into_iter()
            .flat_map(|id| self.ty(id).shape.iter().filter_map(symbol_of).collect::<Vec<_>>())
            .collect();
        let unbound = self.topo_order().into_iter().find_map(|id| {
            self.ty(id).shape.iter().filter_map(symbol_of).find(|s| !bound.contains(s)).map(|s| (id, s))
        });
        let Some((id, sym)) = unbound else { return Ok(()) };
        let node = self.node(id);
        let at = node.loc.as_ref().map_or_else(String::new, |l| format!(" at {l}"));
        Err(format!(
            "{id} ({}, {}){at} has the symbolic dim {}, which no input has: nothing gives it a size",
            node.op.name(),
            node.ty,
            sym.name()
        ))
    }

    /// Shared-variable nodes, in the order they were added.
    pub fn shared(&self) -> Vec<NodeId> {
        self.leaves(|op| matches!(op, Op::Shared { .. }))
    }

    fn leaves(&self, pick: impl Fn(&Op) -> bool) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.names.values().copied().filter(|&id| pick(&self.node(id).op)).collect();
        ids.sort();
        ids
    }

    /// The name of an input or shared variable node.
    pub fn leaf_name(&self, id: NodeId) -> Option<&str> {
        match &self.node(id).op {
            Op::Input { name } | Op::Shared { name } => Some(name),
            _ => None,
        }
    }

    /// The current value of a shared variable (`None` if not given yet).
    pub fn shared_value(&self, id: NodeId) -> Option<&Value> {
        self.shared_values.get(&id)
    }

    /// A shared variable's elements, to overwrite in place (its type cannot
    /// change through them).
    pub fn shared_elements_mut(&mut self, id: NodeId) -> Option<crate::ElementsMut<'_>> {
        self.bump(id);
        if !self.pending_shared.is_empty() {
            self.pending_shared.remove(&id);
        }
        self.shared_values.get_mut(&id).map(Value::elements_mut)
    }

    /// Records that the current value of shared variable `id` is held by
    /// `owner` (a backend's device copy) and is fetched by `fetch`: the host
    /// copy is stale until [`Graph::sync_shared`] brings it back. Returns the
    /// value's new version, which the owner's copy now has.
    pub fn set_shared_pending(&mut self, id: NodeId, owner: u64, fetch: Fetch) -> u64 {
        self.bump(id);
        self.pending_shared.insert(id, (owner, fetch));
        self.shared_version(id)
    }

    /// True if some shared value's current copy is held elsewhere.
    pub fn has_pending_shared(&self) -> bool {
        !self.pending_shared.is_empty()
    }

    /// Brings back every shared value held elsewhere, except those `except`
    /// holds, keeping their versions (the values they name do not change).
    /// A value that cannot be fetched keeps its stale host copy; the errors
    /// are returned.
    pub fn sync_shared(&mut self, except: Option<u64>) -> Vec<String> {
        let ids: Vec<NodeId> =
            self.pending_shared.iter().filter(|(_, (owner, _))| Some(*owner) != except).map(|(&id, _)| id).collect();
        let mut errors = Vec::new();
        for id in ids {
            let (_, fetch) = self.pending_shared.remove(&id).expect("listed above");
            let name = self.leaf_name(id).unwrap_or_default().to_string();
            match fetch() {
                Ok(v) => match check_value(&format!("shared variable {name:?}"), &self.node(id).ty, &v) {
                    Ok(()) => {
                        self.shared_values.insert(id, v);
                    }
                    Err(e) => errors.push(e.to_string()),
                },
                Err(e) => errors.push(format!("shared variable {name:?}: its current value could not be fetched: {e}")),
            }
        }
        errors
    }

    /// A number that changes whenever the shared variable's value is
    /// written (set, or lent out for writing), unique across the process:
    /// equal numbers mean equal values.
    pub fn shared_version(&self, id: NodeId) -> u64 {
        self.shared_versions.get(&id).copied().unwrap_or(0)
    }

    fn bump(&mut self, id: NodeId) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        self.shared_versions.insert(id, NEXT.fetch_add(1, Ordering::Relaxed));
    }

    /// Sets a shared variable's value; its dtype and shape must match the
    /// variable's type.
    pub fn set_shared_value(&mut self, id: NodeId, value: Value) -> Result<(), GraphError> {
        let node = self.node(id);
        let Op::Shared { name } = &node.op else {
            return Err(GraphError::Mismatch(format!("{id} ({}) is not a shared variable", node.op.name())));
        };
        check_value(&format!("shared variable {name:?}"), &node.ty, &value)?;
        self.shared_values.insert(id, value);
        self.pending_shared.remove(&id);
        self.bump(id);
        Ok(())
    }

    /// Names node `id` for dumps.
    pub fn set_name(&mut self, id: NodeId, name: &str) {
        if let Some(n) = self.nodes.node_weight_mut(id.0) {
            n.name = Some(name.into());
        }
    }

    /// Declares `id` an output called `name` (replacing an output of that name).
    pub fn set_output(&mut self, name: &str, id: NodeId) {
        match self.outputs.iter_mut().find(|(n, _)| &**n == name) {
            Some(slot) => {
                let old = std::mem::replace(&mut slot.1, id);
                if let Some(n) = self.root_count.get_mut(&old) {
                    *n -= 1;
                }
            }
            None => self.outputs.push((name.into(), id)),
        }
        *self.root_count.entry(id).or_default() += 1;
    }

    /// Named outputs, in the order declared.
    pub fn outputs(&self) -> &[(Box<str>, NodeId)] {
        &self.outputs
    }

    /// Declares that after a call, shared variable `shared` takes the value
    /// of `value` (computed from the old values, as in Theano).
    pub fn add_update(&mut self, shared: NodeId, value: NodeId) -> Result<(), GraphError> {
        let s = self.node(shared);
        let Op::Shared { name } = &s.op else {
            return Err(GraphError::Mismatch(format!(
                "update target {shared} ({}) is not a shared variable",
                s.op.name()
            )));
        };
        let v = self.ty(value);
        if v != &s.ty {
            return Err(GraphError::Mismatch(format!(
                "update of shared variable {name:?} ({}) has type {v}; it must match exactly",
                s.ty
            )));
        }
        if self.updated.contains(&shared) {
            return Err(GraphError::Mismatch(format!("shared variable {name:?} is updated twice")));
        }
        self.updated.insert(shared);
        self.updates.push((shared, value));
        *self.root_count.entry(value).or_default() += 1;
        Ok(())
    }

    /// `(shared variable, new value)` pairs, in the order declared.
    pub fn updates(&self) -> &[(NodeId, NodeId)] {
        &self.updates
    }

    /// Every node, inputs before the nodes that use them; ties go to the
    /// older node, so the order is deterministic.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut pending = vec![0usize; petgraph::visit::NodeIndexable::node_bound(&self.nodes)];
        let mut ready = BinaryHeap::new();
        for ix in self.nodes.node_indices() {
            let n = self.nodes[ix].inputs.len();
            if n == 0 {
                ready.push(std::cmp::Reverse(ix));
            } else {
                pending[ix.index()] = n;
            }
        }
        let mut order = Vec::with_capacity(self.len());
        while let Some(std::cmp::Reverse(ix)) = ready.pop() {
            order.push(NodeId(ix));
            for e in self.nodes.edges_directed(ix, Direction::Outgoing) {
                let t = petgraph::visit::EdgeRef::target(&e);
                pending[t.index()] -= 1;
                if pending[t.index()] == 0 {
                    ready.push(std::cmp::Reverse(t));
                }
            }
        }
        order
    }

    /// The nodes needed to compute `roots`, in topological order.
    pub fn ancestors(&self, roots: &[NodeId]) -> Vec<NodeId> {
        let needed = self.needed_by(roots);
        self.topo_order().into_iter().filter(|id| needed[id.index()]).collect()
    }

    /// A mark per node index: true for `roots` and everything they depend on.
    fn needed_by(&self, roots: &[NodeId]) -> Vec<bool> {
        let mut needed = vec![false; petgraph::visit::NodeIndexable::node_bound(&self.nodes)];
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if !std::mem::replace(&mut needed[id.index()], true) {
                stack.extend(self.node(id).inputs.iter().copied());
            }
        }
        needed
    }
}

impl Graph {
    /// Every node id, in no particular order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.node_indices().map(NodeId).collect()
    }
}

/// The text dump (see [`crate::to_text`]).
impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::to_text(self, crate::TextOptions::default()))
    }
}

/// Checks that `value` fits type `ty` (symbolic dims match any size).
pub fn check_value(what: &str, ty: &TensorType, value: &Value) -> Result<(), GraphError> {
    let shape_ok = value.shape().len() == ty.shape.rank()
        && ty.shape.iter().zip(value.shape()).all(|(d, &n)| d.known().is_none_or(|k| k == n));
    if value.dtype() != ty.dtype || !shape_ok {
        return Err(GraphError::Mismatch(format!("{what}: expected {ty}, got {}{:?}", value.dtype(), value.shape())));
    }
    Ok(())
}

/// The symbol of a symbolic dim.
fn symbol_of(d: &crate::Dim) -> Option<crate::Symbol> {
    match d {
        crate::Dim::Sym(s) => Some(*s),
        crate::Dim::Known(_) => None,
    }
}

#[cfg(test)]
impl Graph {
    fn to_string_for_test(&self) -> String {
        crate::to_text(self, crate::TextOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BinaryOp, DType, UnaryOp};

    #[test]
    fn node_size_is_pinned() {
        // Keep nodes small: large payloads go behind a Box or Arc.
        assert_eq!(std::mem::size_of::<Op>(), 32);
        assert_eq!(std::mem::size_of::<Node>(), 96);
        assert_eq!(std::mem::size_of::<NodeId>(), 4);
    }

    #[test]
    fn identical_nodes_are_interned() {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, [3]), None).unwrap();
        let a = g.add(Op::Unary { fun: UnaryOp::Exp }, &[x], None).unwrap();
        let b = g.add(Op::Unary { fun: UnaryOp::Exp }, &[x], None).unwrap();
        assert_eq!(a, b);
        let two1 = g.add_const(Value::from(2.0f32), None);
        let two2 = g.add_const(Value::from(2.0f32), None);
        assert_eq!(two1, two2);
        let m1 = g.add(Op::Binary { fun: BinaryOp::Mul }, &[a, two1], None).unwrap();
        let m2 = g.add(Op::Binary { fun: BinaryOp::Mul }, &[b, two2], None).unwrap();
        assert_eq!(m1, m2);
        assert_eq!(g.len(), 4);
    }

    #[test]
    fn names_are_unique_and_shared_values_checked() {
        let mut g = Graph::new();
        g.add_input("x", TensorType::new(DType::F32, [3]), None).unwrap();
        assert!(matches!(g.add_shared("x", Value::from(1.0f32), None), Err(GraphError::DuplicateName(_))));
        let w = g.add_shared("w", Value::from(ndarray::array![1.0f32, 2.0]), None).unwrap();
        let err = g.set_shared_value(w, Value::from(ndarray::array![1.0f64, 2.0])).unwrap_err();
        assert!(err.to_string().contains("expected f32[2], got f64[2]"), "{err}");
        assert!(g.set_shared_value(w, Value::from(ndarray::array![5.0f32, 6.0])).is_ok());
    }

    #[test]
    fn type_errors_name_op_inputs_and_location() {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, [2, 3]), None).unwrap();
        let y = g.add_input("y", TensorType::new(DType::F32, [4, 5]), None).unwrap();
        let err = g.add(Op::Dot, &[x, y], Some(Loc::new("model.rs", 7, 3))).unwrap_err().to_string();
        assert_eq!(
            err,
            "dot: dot of [2,3] and [4,5]: inner dims 3 and 4 differ (inputs: f32[2,3], f32[4,5]) at model.rs:7"
        );
    }

    #[test]
    fn updates_must_match_their_variable() {
        let mut g = Graph::new();
        let w = g.add_shared("w", Value::from(ndarray::array![1.0f32, 2.0]), None).unwrap();
        let x = g.add_input("x", TensorType::new(DType::F32, [3]), None).unwrap();
        assert!(g.add_update(w, x).unwrap_err().to_string().contains("must match"));
        assert!(g.add_update(x, w).unwrap_err().to_string().contains("not a shared variable"));
        let e = g.add(Op::Unary { fun: UnaryOp::Exp }, &[w], None).unwrap();
        g.add_update(w, e).unwrap();
        assert!(g.add_update(w, e).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn replacing_uses_merges_consumers_that_become_identical() {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, [3]), None).unwrap();
        let e = g.add(Op::Unary { fun: UnaryOp::Exp }, &[x], None).unwrap();
        let t = g.add(Op::Unary { fun: UnaryOp::Tanh }, &[x], None).unwrap();
        let a = g.add(Op::Unary { fun: UnaryOp::Neg }, &[e], None).unwrap();
        let b = g.add(Op::Unary { fun: UnaryOp::Neg }, &[t], None).unwrap();
        let s = g.add(Op::Binary { fun: BinaryOp::Add }, &[a, b], None).unwrap();
        g.set_output("s", s);
        // exp -> tanh makes neg(exp x) identical to neg(tanh x): they merge, and
        // the sum becomes neg(tanh x) + neg(tanh x).
        g.replace_all_uses(e, t).unwrap();
        let s2 = g.outputs()[0].1;
        assert_eq!(&*g.node(s2).inputs, &[b, b]);
        assert_eq!(g.remove_dead(), 2 + usize::from(s2 != s));
        assert_eq!(
            g.to_string_for_test(),
            "%0 = input \"x\" : f32[3]\n%1 = tanh(%0) : f32[3]\n%2 = neg(%1) : f32[3]\n%3 = add(%2, %2) : f32[3]\noutput \"s\" = %3\n"
        );
        let y = g.add_input("y", TensorType::new(DType::F32, [4]), None).unwrap();
        assert!(g.replace_all_uses(x, y).unwrap_err().to_string().contains("types differ"));
    }

    #[test]
    fn locations_parse_back() {
        let l = Loc::parse("src/a:b.rs:12:5").unwrap();
        assert_eq!((l.file(), l.line(), l.column()), ("src/a:b.rs", 12, 5));
        assert_eq!(l.full(), "src/a:b.rs:12:5");
        assert!(Loc::parse("nothing").is_none());
    }
}
