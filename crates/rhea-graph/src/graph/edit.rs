//! Editing a graph in place: replacing uses, removing dead nodes and
//! scratch inputs, keeping the interning table and the names right.

use super::{Graph, NodeId};
use crate::{GraphError, Op};

impl Graph {
    /// Makes every use of `old` (as an input, an output or an update value)
    /// use `new` instead. Consumers are re-interned, so a consumer that
    /// becomes identical to an existing node is merged into it, and so on
    /// upward. `old` stays in the graph, dead, until [`Graph::remove_dead`].
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) -> Result<(), GraphError> {
        if self.ty(old) != self.ty(new) {
            return Err(GraphError::Mismatch(format!(
                "cannot replace {old} ({}) with {new} ({}): the types differ",
                self.ty(old),
                self.ty(new)
            )));
        }
        let mut work = vec![(old, new)];
        while let Some((old, new)) = work.pop() {
            if old == new {
                continue;
            }
            if self.node(new).name.is_none()
                && let Some(name) = self.node(old).name.clone()
            {
                self.set_name(new, &name);
            }
            if self.root_count.get(&old).is_some_and(|&n| n > 0) {
                for slot in self.outputs.iter_mut().filter(|(_, id)| *id == old) {
                    slot.1 = new;
                }
                for slot in self.updates.iter_mut().filter(|(_, v)| *v == old) {
                    slot.1 = new;
                }
                let n = self.root_count.remove(&old).unwrap_or(0);
                *self.root_count.entry(new).or_default() += n;
            }
            for c in self.consumers(old) {
                let node = &self.nodes[c.0];
                let key = (node.op.clone(), node.inputs.clone());
                if self.interned.get(&key) == Some(&c) {
                    self.interned.remove(&key);
                }
                let moved: Vec<usize> = (0..node.inputs.len()).filter(|&p| node.inputs[p] == old).collect();
                let inputs: Box<[NodeId]> = node.inputs.iter().map(|&i| if i == old { new } else { i }).collect();
                let stale: Vec<_> =
                    self.nodes.edges_connecting(old.0, c.0).map(|e| petgraph::visit::EdgeRef::id(&e)).collect();
                for e in stale {
                    self.nodes.remove_edge(e);
                }
                for pos in moved {
                    self.nodes.add_edge(new.0, c.0, pos as u32);
                }
                self.nodes[c.0].inputs = inputs.clone();
                let key = (self.nodes[c.0].op.clone(), inputs);
                match self.interned.get(&key) {
                    Some(&dup) if dup != c => work.push((c, dup)),
                    _ => {
                        self.interned.insert(key, c);
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies the nodes of `src` that `roots` need into this graph, each
    /// leaf through `subst` (a leaf of `src` to a node of this graph;
    /// constants are copied when not given). Returns the copy of each node
    /// by its id in `src`.
    pub fn import(
        &mut self,
        src: &Graph,
        subst: &std::collections::HashMap<NodeId, NodeId>,
        roots: &[NodeId],
    ) -> Result<std::collections::HashMap<NodeId, NodeId>, GraphError> {
        let mut map = subst.clone();
        for id in src.ancestors(roots) {
            if map.contains_key(&id) {
                continue;
            }
            let node = src.node(id);
            let new = match &node.op {
                Op::Const { value } => self.add_const(value.value().clone(), node.loc.clone()),
                Op::Input { name } | Op::Shared { name } => {
                    return Err(GraphError::Mismatch(format!("import: the leaf {name:?} is given no node")));
                }
                op => {
                    let inputs: Vec<NodeId> = node.inputs.iter().map(|i| map[i]).collect();
                    self.add(op.clone(), &inputs, node.loc.clone())?
                }
            };
            map.insert(id, new);
        }
        Ok(map)
    }

    /// Removes every node that no output or update needs, keeping inputs
    /// and updated shared variables (a function's signature). Returns how
    /// many nodes were removed.
    pub fn remove_dead(&mut self) -> usize {
        let mut roots: Vec<NodeId> = self.outputs.iter().map(|(_, id)| *id).collect();
        roots.extend(self.updates.iter().flat_map(|&(s, v)| [s, v]));
        roots.extend(self.inputs());
        let live = self.needed_by(&roots);
        let dead: Vec<NodeId> = self.nodes.node_indices().map(NodeId).filter(|id| !live[id.index()]).collect();
        for &id in &dead {
            self.remove_node(id);
        }
        dead.len()
    }

    /// Removes the inputs `ids` and every node computed from them (scratch
    /// placeholders, such as the cotangents [`crate::jvp`] differentiates
    /// with respect to). None of them may be an output or an update.
    pub(crate) fn remove_inputs(&mut self, ids: &[NodeId]) -> Result<(), GraphError> {
        let mut doomed = vec![false; petgraph::visit::NodeIndexable::node_bound(&self.nodes)];
        let mut stack: Vec<NodeId> = ids.to_vec();
        while let Some(id) = stack.pop() {
            if !std::mem::replace(&mut doomed[id.index()], true) {
                stack.extend(self.consumers(id));
            }
        }
        let dead: Vec<NodeId> = self.nodes.node_indices().map(NodeId).filter(|id| doomed[id.index()]).collect();
        if let Some(id) = dead.iter().find(|id| self.root_count.get(id).is_some_and(|&n| n > 0)) {
            return Err(GraphError::Mismatch(format!("node {id} is an output or an update, so it cannot be removed")));
        }
        for id in dead {
            self.remove_node(id);
        }
        Ok(())
    }

    /// Removes one node, unregistering its key and name.
    fn remove_node(&mut self, id: NodeId) {
        let node = self.nodes.remove_node(id.0).expect("listed from the graph");
        let key = (node.op, node.inputs);
        if self.interned.get(&key) == Some(&id) {
            self.interned.remove(&key);
        }
        if let Op::Input { name } | Op::Shared { name } = &key.0 {
            self.names.remove(&**name);
            self.shared_values.remove(&id);
        }
    }
}
