//! Text dumps in the spirit of Theano's `debugprint`: one line per node, ids
//! renumbered in topological order so that dumps are stable.

use std::collections::HashMap;
use std::fmt::Write;

use crate::{Graph, NodeId, Op};

/// What a text dump shows beyond the nodes themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// Append the user's `file:line` that built each node.
    pub locs: bool,
}

/// Nodes in dump order and each node's dump number.
pub fn numbering(g: &Graph) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
    let order = g.topo_order();
    let number = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    (order, number)
}

/// The graph as text, one node per line:
///
/// ```text
/// %0 = input "x" : f32[batch,3]
/// %1 = shared "w" : f32[3,2]
/// %2 = dot(%0, %1) : f32[batch,2]
/// output "y" = %2
/// ```
///
/// A loop's body follows its `scan` line, indented and numbered on its own.
pub fn to_text(g: &Graph, opts: TextOptions) -> String {
    let (order, number) = numbering(g);
    let mut out = String::new();
    for &id in &order {
        let node = g.node(id);
        let n = number[&id];
        let head = match &node.op {
            Op::Input { name } => format!("input {name:?}"),
            Op::Shared { name } => format!("shared {name:?}"),
            Op::Const { value } => format!("const {value}"),
            op => {
                let args: Vec<String> = node.inputs.iter().map(|i| format!("%{}", number[i])).collect();
                format!("{op}({})", args.join(", "))
            }
        };
        write!(out, "%{n} = {head} : {}", node.ty).expect("writing to a String");
        let mut notes = Vec::new();
        if let Some(name) = &node.name {
            notes.push(name.to_string());
        }
        if let (true, Some(loc)) = (opts.locs, &node.loc) {
            notes.push(format!("@ {loc}"));
        }
        if !notes.is_empty() {
            write!(out, "  # {}", notes.join(" ")).expect("writing to a String");
        }
        out.push('\n');
        if let Op::Scan(scan) = &node.op {
            for line in to_text(scan.body.graph(), opts).lines() {
                writeln!(out, "    | {line}").expect("writing to a String");
            }
        }
    }
    for (name, id) in g.outputs() {
        writeln!(out, "output {name:?} = %{}", number[id]).expect("writing to a String");
    }
    for (shared, value) in g.updates() {
        let name = g.leaf_name(*shared).unwrap_or("?");
        writeln!(out, "update {name:?} <- %{}", number[value]).expect("writing to a String");
    }
    out
}
