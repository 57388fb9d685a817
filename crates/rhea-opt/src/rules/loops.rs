//! Loops: work a loop's body repeats on the same values every step moves
//! out of the loop (Theano's scan push-out).

use std::collections::{HashMap, HashSet};

use rhea_graph::scan::{Body, nonseq_name};
use rhea_graph::{Graph, NodeId, Op, Scan};

use crate::rule::{Ctx, Rule};

/// The rules of this family.
pub const RULES: &[Rule] = &[Rule {
    name: "scan_push_out",
    identity: "scan whose body computes f(non-sequences) -> scan reading f(non-sequences) computed once",
    apply: push_out,
}];

/// The body's loop-invariant nodes that loop-variant ones (or the body's
/// outputs) read: computed from non-sequences and constants only, and
/// from at least one non-sequence (constants alone are folded).
fn invariant_frontier(body: &Graph) -> Vec<NodeId> {
    let order = body.topo_order();
    let mut invariant: HashSet<NodeId> = HashSet::new();
    let mut reads_nonseq: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let node = body.node(id);
        match &node.op {
            Op::Input { name } if name.starts_with("nonseq") => {
                invariant.insert(id);
                reads_nonseq.insert(id);
            }
            Op::Const { .. } => {
                invariant.insert(id);
            }
            Op::Input { .. } | Op::Shared { .. } => {}
            _ if node.inputs.iter().all(|i| invariant.contains(i)) => {
                invariant.insert(id);
                if node.inputs.iter().any(|i| reads_nonseq.contains(i)) {
                    reads_nonseq.insert(id);
                }
            }
            _ => {}
        }
    }
    let outputs: HashSet<NodeId> = body.outputs().iter().map(|(_, o)| *o).collect();
    order
        .into_iter()
        .filter(|id| reads_nonseq.contains(id) && !body.node(*id).op.is_leaf())
        .filter(|&id| outputs.contains(&id) || body.consumers(id).iter().any(|c| !invariant.contains(c)))
        .collect()
}

fn push_out(cx: &mut Ctx) -> Option<NodeId> {
    let Op::Scan(scan) = cx.op() else { return None };
    let scan: Scan = (**scan).clone();
    let body = scan.body.graph();
    let hoisted = invariant_frontier(body);
    if hoisted.is_empty() {
        return None;
    }
    let node_inputs = cx.node().inputs.to_vec();
    let first_nonseq = scan.sequences + scan.states();
    // The hoisted values, computed once outside from the scan's non-sequences.
    let mut outer_subst = HashMap::new();
    for (j, &outer) in node_inputs[first_nonseq..].iter().enumerate() {
        if let Some(inner) = body.find(&nonseq_name(j)) {
            outer_subst.insert(inner, outer);
        }
    }
    let outside = cx.g.import(body, &outer_subst, &hoisted).ok()?;
    // The body reads them as new non-sequences.
    let mut new_body = Graph::new();
    let mut subst = HashMap::new();
    for id in body.inputs() {
        let name = body.leaf_name(id)?;
        subst.insert(id, new_body.add_input(name, body.ty(id).clone(), body.node(id).loc.clone()).ok()?);
    }
    for (k, &h) in hoisted.iter().enumerate() {
        let name = nonseq_name(scan.non_sequences + k);
        subst.insert(h, new_body.add_input(&name, body.ty(h).clone(), body.node(h).loc.clone()).ok()?);
    }
    let roots: Vec<NodeId> = body.outputs().iter().map(|(_, o)| *o).collect();
    let map = new_body.import(body, &subst, &roots).ok()?;
    for (name, o) in body.outputs() {
        new_body.set_output(name, map[o]);
    }
    new_body.remove_dead();
    let spec = Scan { body: Body::new(new_body), non_sequences: scan.non_sequences + hoisted.len(), ..scan };
    let mut inputs = node_inputs;
    inputs.extend(hoisted.iter().map(|h| outside[h]));
    // Non-sequences only the moved work read are no longer passed in.
    let (spec, kept) = spec.pruned().ok()?;
    let inputs: Vec<NodeId> = kept.iter().map(|&k| inputs[k]).collect();
    cx.make(Op::Scan(Box::new(spec)), &inputs)
}
