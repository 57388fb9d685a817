//! Graphviz DOT dumps: inputs, shared variables, constants and ops drawn
//! differently, edges labelled with the shapes that flow along them.

use std::fmt::Write;

use crate::print::numbering;
use crate::{Graph, Op};

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The graph in Graphviz DOT (`dot -Tsvg graph.dot > graph.svg`).
pub fn to_dot(g: &Graph) -> String {
    let (order, number) = numbering(g);
    let mut out = String::from(
        "digraph rhea {\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=8, color=\"#555555\"];\n",
    );
    for &id in &order {
        let node = g.node(id);
        let (shape, fill, label) = match &node.op {
            Op::Input { name } => ("ellipse", "#cfe2f3", format!("input {name}")),
            Op::Shared { name } => ("cylinder", "#fce5cd", format!("shared {name}")),
            Op::Const { value } => ("note", "#eeeeee", format!("const {value}")),
            op => ("box", "#ffffff", op.to_string()),
        };
        let mut label = format!("%{} {label}\n{}", number[&id], node.ty);
        if let Some(name) = &node.name {
            label = format!("{name}\n{label}");
        }
        writeln!(
            out,
            "  n{} [shape={shape}, style=\"rounded,filled\", fillcolor=\"{fill}\", label=\"{}\"];",
            number[&id],
            escape(&label)
        )
        .expect("writing to a String");
    }
    for &id in &order {
        for input in g.node(id).inputs.iter() {
            writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"];",
                number[input],
                number[&id],
                escape(&g.ty(*input).to_string())
            )
            .expect("writing to a String");
        }
    }
    for (k, (name, id)) in g.outputs().iter().enumerate() {
        writeln!(
            out,
            "  out{k} [shape=doubleoctagon, style=filled, fillcolor=\"#d9ead3\", label=\"output {}\"];",
            escape(name)
        )
        .expect("writing to a String");
        writeln!(out, "  n{} -> out{k};", number[id]).expect("writing to a String");
    }
    for (shared, value) in g.updates() {
        writeln!(
            out,
            "  n{} -> n{} [style=dashed, color=\"#cc0000\", label=\"update\", constraint=false];",
            number[value], number[shared]
        )
        .expect("writing to a String");
    }
    out.push_str("}\n");
    out
}
