//! The graph verifier, run after every pass in debug and test builds: a
//! failure is a compiler bug, and says which pass broke what.

use rhea_graph::{Graph, Op};

/// Checks every node's type against its op's rule, that the graph is
/// acyclic, and that outputs and updates name live nodes.
pub fn verify(g: &Graph) -> Result<(), String> {
    let order = g.topo_order();
    if order.len() != g.len() {
        return Err(format!("the graph has a cycle: {} of {} nodes can be ordered", order.len(), g.len()));
    }
    for id in order {
        let node = g.node(id);
        if matches!(node.op, Op::Input { .. } | Op::Shared { .. }) {
            continue;
        }
        match g.rule(&node.op, &node.inputs) {
            Ok(t) if t == node.ty => {}
            Ok(t) => return Err(format!("{id} ({}) is typed {} but its inputs give {t}", node.op.name(), node.ty)),
            Err(e) => return Err(format!("{id} ({}): {e}", node.op.name())),
        }
    }
    for (name, id) in g.outputs() {
        if g.get(*id).is_none() {
            return Err(format!("output {name:?} names a removed node"));
        }
    }
    for (s, v) in g.updates() {
        if g.get(*s).is_none() || g.get(*v).is_none() {
            return Err("an update names a removed node".into());
        }
    }
    Ok(())
}
