//! Dumps of optimized programs: text with each kernel's body, DOT with
//! kernels drawn as clusters around the ops they fuse, the rewrite trace,
//! the fusion explanation and a summary line.

use std::collections::HashMap;
use std::fmt::Write;

use rhea_graph::{Graph, NodeId, TextOptions, numbering, to_dot, to_text};
use rhea_kernel::Bindings;

use crate::{Decisions, Placement, Program, StepKind, StepPlan, memory_plan};

fn w(out: &mut String, args: std::fmt::Arguments) {
    out.write_fmt(args).expect("writing to a String");
}

/// The optimized graph as text: leaves and library ops one per line as in
/// the raw dump, each kernel as a header naming the nodes it computes and
/// writes, followed by its body.
pub fn to_text_optimized(p: &Program, opts: TextOptions) -> String {
    text(p, None, opts)
}

/// [`to_text_optimized`] with the plan's decisions for one backend: a
/// first line counting them, then after each step where it runs (`device`
/// or `host`) and whether it is a matrix product's epilogue, and after each
/// update whether its kernel writes it in place.
pub fn to_text_planned(p: &Program, d: &Decisions, opts: TextOptions) -> String {
    text(p, Some(d), opts)
}

fn text(p: &Program, d: Option<&Decisions>, opts: TextOptions) -> String {
    let g = &p.graph;
    let (_, number) = numbering(g);
    let n = |id: &NodeId| format!("%{}", number[id]);
    let list = |ids: &[NodeId]| ids.iter().map(n).collect::<Vec<_>>().join(", ");
    let raw = to_text(g, opts);
    // Node lines by number (a loop's body lines, indented, are not among them).
    let lines: HashMap<usize, &str> =
        raw.lines().filter_map(|l| Some((l.strip_prefix('%')?.split(' ').next()?.parse().ok()?, l))).collect();
    let mut out = String::new();
    if let Some(d) = d {
        let host = d.steps.iter().filter(|s| s.placement == Placement::Host).count();
        let epilogues = d.steps.iter().filter(|s| s.epilogue).count();
        w(
            &mut out,
            format_args!(
                "# plan for {}: {} steps on the device, {host} on the host, {epilogues} epilogues, {} of {} updates in place\n",
                d.target,
                d.steps.len() - host,
                d.updates_in_place(),
                d.in_place_updates.len()
            ),
        );
    }
    let note = |s: usize| match d.map(|d| d.steps[s]) {
        None => String::new(),
        Some(StepPlan { placement, epilogue }) => {
            let at = if placement == Placement::Host { "host" } else { "device" };
            match (epilogue, &p.steps[s.saturating_sub(1)].kind) {
                (true, StepKind::Op(product)) => format!("  [{at}, epilogue of %{}]", number[product]),
                _ => format!("  [{at}]"),
            }
        }
    };
    for id in g.topo_order() {
        if g.node(id).op.is_leaf() {
            w(&mut out, format_args!("{}\n", lines[&number[&id]]));
        }
    }
    for (s, step) in p.steps.iter().enumerate() {
        match &step.kind {
            StepKind::Op(id) => {
                w(&mut out, format_args!("{}{}\n", lines[&number[id]], note(s)));
                // A loop's body, optimized and fused on its own.
                if let Some(body) = p.body(*id) {
                    for line in text(body, None, opts).lines() {
                        w(&mut out, format_args!("    | {line}\n"));
                    }
                    // The results the loop step writes.
                    for o in step.outputs.iter().filter(|o| *o != id) {
                        w(&mut out, format_args!("{}\n", lines[&number[o]]));
                    }
                }
            }
            StepKind::Kernel(k) => {
                let grp = &p.fusion.groups[*k];
                w(
                    &mut out,
                    format_args!(
                        "kernel k{k}({}) -> {}  # fuses {}{}\n",
                        list(&grp.inputs),
                        list(&grp.outputs),
                        list(&grp.members),
                        note(s)
                    ),
                );
                for line in grp.kernel.to_string().lines() {
                    w(&mut out, format_args!("  {line}\n"));
                }
            }
        }
    }
    for line in raw.lines().filter(|l| l.starts_with("output ")) {
        w(&mut out, format_args!("{line}\n"));
    }
    for (u, line) in raw.lines().filter(|l| l.starts_with("update ")).enumerate() {
        let in_place = d.is_some_and(|d| d.in_place_updates[u]);
        w(&mut out, format_args!("{line}{}\n", if in_place { "  [in place]" } else { "" }));
    }
    out
}

/// The optimized graph as a graph file, with a `kernels` section giving each
/// kernel's nodes (by the file's ids) and its kernel IR. The file loads back
/// as an ordinary graph; loading ignores the kernels.
pub fn to_json_optimized(p: &Program) -> String {
    let (_, number) = numbering(&p.graph);
    let ids = |xs: &[NodeId]| xs.iter().map(|x| number[x]).collect::<Vec<_>>();
    let records: Vec<String> = p
        .fusion
        .groups
        .iter()
        .enumerate()
        .map(|(k, grp)| {
            serde_json::json!({
                "kernel": k,
                "members": ids(&grp.members),
                "inputs": ids(&grp.inputs),
                "outputs": ids(&grp.outputs),
                "ir": grp.kernel,
            })
            .to_string()
        })
        .collect();
    let json = rhea_graph::to_json(&p.graph);
    let end = json.rfind('}').expect("a graph file ends with }");
    let body = json[..end].trim_end();
    if records.is_empty() {
        return format!("{body},\n  \"kernels\": []\n}}\n");
    }
    format!("{body},\n  \"kernels\": [\n    {}\n  ]\n}}\n", records.join(",\n    "))
}

/// DOT with each kernel drawn as a cluster around the ops it fuses.
pub fn to_dot_optimized(p: &Program) -> String {
    let (_, number) = numbering(&p.graph);
    let mut dot = to_dot(&p.graph);
    let mut clusters = String::new();
    for (k, grp) in p.fusion.groups.iter().enumerate() {
        w(
            &mut clusters,
            format_args!(
                "  subgraph cluster_k{k} {{\n    label=\"kernel k{k}\"; style=\"rounded,dashed\"; color=\"#3c78d8\";\n"
            ),
        );
        for m in &grp.members {
            w(&mut clusters, format_args!("    n{};\n", number[m]));
        }
        clusters.push_str("  }\n");
    }
    let end = dot.rfind('}').expect("a DOT graph ends with }");
    dot.insert_str(end, &clusters);
    dot
}

/// Every rewrite that fired, one per line: pass, rule, before -> after, and
/// the user's line that built the replaced node.
pub fn trace(p: &Program) -> String {
    let mut out = String::new();
    for r in &p.report.rewrites {
        let at = r.loc.as_ref().map_or_else(String::new, |l| format!("  @ {l}"));
        w(&mut out, format_args!("{:<12} {:<18} {} -> {}{at}\n", r.pass, r.rule, r.before, r.after));
    }
    for (id, risk) in &p.report.risks {
        if let Some(node) = p.graph.get(*id) {
            let at = node.loc.as_ref().map_or_else(String::new, |l| format!("  @ {l}"));
            w(&mut out, format_args!("risk         {}: {risk}{at}\n", crate::describe(&p.graph, *id, 2)));
        }
    }
    // The rewrites inside each loop's body, under its scan.
    let (_, number) = numbering(&p.graph);
    for (id, body) in &p.bodies {
        let inner = trace(body);
        if !inner.is_empty() {
            w(&mut out, format_args!("in the body of %{}:\n", number[id]));
            for line in inner.lines() {
                w(&mut out, format_args!("    | {line}\n"));
            }
        }
    }
    out
}

/// For each fusible node, why it was or was not fused with its neighbours.
pub fn explain_fusion(p: &Program) -> String {
    let (_, number) = numbering(&p.graph);
    let mut out = String::new();
    for (id, note) in &p.fusion.notes {
        w(&mut out, format_args!("%{} {}: {note}\n", number[id], p.graph.node(*id).op.name()));
    }
    out
}

/// One line: nodes before -> after, kernels, steps, peak intermediate
/// memory (symbolic dims at 1), time per pass.
pub fn summary(p: &Program) -> String {
    let g: &Graph = &p.graph;
    let mut bindings = Bindings::new();
    for id in g.node_ids() {
        for d in g.ty(id).shape.iter() {
            if let rhea_graph::Dim::Sym(s) = d {
                bindings.insert(*s, 1);
            }
        }
    }
    let peak = memory_plan(g, &p.steps, &p.fusion, &bindings).map(|m| m.peak_bytes);
    let times: Vec<String> = p
        .report
        .passes
        .iter()
        .map(|r| {
            let stop = if r.stop == crate::Stop::IterationLimit { " (stopped at the iteration limit)" } else { "" };
            format!("{} {:.2}ms{stop}", r.name, r.time.as_secs_f64() * 1e3)
        })
        .collect();
    let peak = peak.map_or_else(|e| format!("unknown ({e})"), |b| format!("{b} B"));
    let syms = if bindings.is_empty() { String::new() } else { " with symbolic dims at 1".into() };
    format!(
        "nodes {} -> {}, {} kernels, {} steps, {} rewrites, peak intermediate memory {peak}{syms}; {}",
        p.report.nodes_before,
        p.report.nodes_after,
        p.kernels(),
        p.steps.len(),
        p.report.rewrites.len(),
        times.join(", ")
    )
}
