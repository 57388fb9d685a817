//! `rhea check`: a graph run node by node on the interpreter (the graph as
//! written) and on a compiled backend, CPU or CUDA (every op compiled as
//! its own kernel or library step, every intermediate kept), reporting the first node, in
//! topological order, whose values differ beyond the tolerance — Theano's
//! DebugMode, across backends.

use std::collections::HashMap;

use anyhow::{Result, bail};
use rhea::{Backend, Graph, Mode, NodeId, Value};

/// How two backends' values of one node compare.
pub struct Divergence {
    /// The node.
    pub node: NodeId,
    /// Its op, type and the line that built it.
    pub what: String,
    /// The first element that differs, and the two values there.
    pub element: usize,
    /// On the reference (the interpreter) and on the backend checked.
    pub values: (f64, f64),
    /// The largest difference relative to `1 + |reference|`.
    pub worst: f64,
}

/// The nodes compared and the first divergence, if any.
pub struct Report {
    /// How many nodes were compared.
    pub compared: usize,
    /// The first node whose values differ beyond the tolerance.
    pub first: Option<Divergence>,
}

/// Runs every computed node of `graph` on the interpreter and on `backend`
/// and compares them in topological order.
pub fn check(graph: &Graph, feeds: &HashMap<String, Value>, tolerance: f64, backend: Backend) -> Result<Report> {
    rhea_cpu::threads::start().map_err(anyhow::Error::msg)?;
    let roots: Vec<NodeId> = graph.outputs().iter().map(|(_, id)| *id).collect();
    if roots.is_empty() {
        bail!("the graph declares no outputs: there is nothing to check");
    }
    let nodes: Vec<NodeId> = graph.ancestors(&roots).into_iter().filter(|&id| !graph.node(id).op.is_leaf()).collect();
    let reference = rhea::interp::run_all(graph, feeds, &nodes)?;
    // Every node an output of its own, each op its own kernel: the
    // backend keeps them all.
    let inputs: Vec<NodeId> = graph.inputs();
    let builder = rhea::Builder::from_graph(graph.clone());
    let input_vars: Vec<rhea::Var> = inputs.iter().map(|&id| builder.var(id)).collect();
    let output_vars: Vec<rhea::Var> = nodes.iter().map(|&id| builder.var(id)).collect();
    let mut f = rhea::function(&input_vars.iter().collect::<Vec<_>>(), &output_vars.iter().collect::<Vec<_>>())
        .backend(backend)
        .mode(Mode::None)
        .compile()?;
    let values: Vec<Value> = inputs
        .iter()
        .map(|&id| {
            let name = graph.leaf_name(id).unwrap_or_default();
            feeds.get(name).cloned().ok_or_else(|| anyhow::anyhow!("input {name:?} was not given"))
        })
        .collect::<Result<_>>()?;
    let got = f.call(&values)?;
    for (compared, (&id, value)) in nodes.iter().zip(&got).enumerate() {
        let want = &reference[&id];
        if let Some((element, values, worst)) = diverges(want, value, tolerance) {
            let node = graph.node(id);
            let what = format!("{} : {}{}", node.op.name(), node.ty, built_at(graph, id));
            let first = Divergence { node: id, what, element, values, worst };
            return Ok(Report { compared: compared + 1, first: Some(first) });
        }
    }
    Ok(Report { compared: nodes.len(), first: None })
}

/// `, built at file:line` for a node that knows where it was built.
fn built_at(g: &Graph, id: NodeId) -> String {
    g.node(id).loc.as_ref().map_or_else(String::new, |l| format!(", built at {}", l.full()))
}

/// The first element of `b` that differs from `a` beyond `tol` (relative to
/// `1 + |a|`; NaN matches NaN, infinities must be equal), with the worst.
fn diverges(a: &Value, b: &Value, tol: f64) -> Option<(usize, (f64, f64), f64)> {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return Some((0, (f64::NAN, f64::NAN), f64::INFINITY));
    }
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let mut first = None;
    let mut worst = 0.0f64;
    for (i, (&p, &q)) in x.iter().zip(&y).enumerate() {
        let same = (p.is_nan() && q.is_nan()) || p == q;
        let err = if same {
            0.0
        } else if p.is_finite() && q.is_finite() {
            (p - q).abs() / (1.0 + p.abs())
        } else {
            f64::INFINITY
        };
        worst = worst.max(err);
        if err > tol && first.is_none() {
            first = Some((i, (p, q)));
        }
    }
    first.map(|(i, v)| (i, v, worst))
}

/// Runs `graph` optimized and fused (mode fast) on `backend` (the CPU or
/// CUDA backend), one step at a time with every step's outputs kept, and
/// compares each with the interpreter evaluating the same optimized graph
/// node by node. The first output that differs names its step: the fused
/// kernel with the nodes it computes (or the library op) and the line that
/// built it. This checks the code generation of fused kernels; the
/// rewrites themselves are checked by [`check`] (and by the optimizer's
/// own verification).
pub fn check_fused(graph: &Graph, feeds: &HashMap<String, Value>, tolerance: f64, backend: Backend) -> Result<Report> {
    rhea_cpu::threads::start().map_err(anyhow::Error::msg)?;
    use rhea::opt::{MemoryPlan, StepKind};
    if graph.outputs().is_empty() {
        bail!("the graph declares no outputs: there is nothing to check");
    }
    let program = rhea::opt::compile(graph.clone(), &rhea::default_options())?;
    let p = &program;
    let outputs: Vec<NodeId> = p.steps.iter().flat_map(|s| s.outputs.iter().copied()).collect();
    let reference = rhea::interp::run_all(&p.graph, feeds, &outputs)?;
    // Every step output in a buffer of its own, so that all are kept.
    let bindings = rhea::interp::bind_inputs(&p.graph, feeds)?;
    let mut memory = MemoryPlan::default();
    for (b, &id) in outputs.iter().enumerate() {
        let ty = p.graph.ty(id);
        let shape = rhea::kernel::resolve(&ty.shape, &bindings).map_err(anyhow::Error::msg)?;
        memory.buffer_of.insert(id, b);
        memory.buffer_bytes.push(shape.iter().product::<usize>() * ty.dtype.size_bytes());
    }
    if backend == Backend::Interp {
        bail!("--fused compares the interpreter with a compiled backend, not with itself");
    }
    let got = rhea::run_program(p, backend, feeds, &outputs, Some(&memory))?;
    let g = &p.graph;
    let mut compared = 0;
    let mut values = got.iter();
    for step in &p.steps {
        for &id in &step.outputs {
            let value = values.next().expect("one value per step output");
            compared += 1;
            if let Some((element, pair, worst)) = diverges(&reference[&id], value, tolerance) {
                let node = g.node(id);
                let step = match &step.kind {
                    StepKind::Kernel(k) => {
                        let group = &p.fusion.groups[*k];
                        let members: Vec<String> = group.members.iter().map(|m| m.to_string()).collect();
                        format!("kernel k{k} (fuses {}){}", members.join(", "), built_at(g, group.root))
                    }
                    StepKind::Op(op) => format!("library op {}{}", g.node(*op).op.name(), built_at(g, *op)),
                };
                let what = format!("{} : {}, computed by {step}", node.op.name(), node.ty);
                return Ok(Report {
                    compared,
                    first: Some(Divergence { node: id, what, element, values: pair, worst }),
                });
            }
        }
    }
    Ok(Report { compared, first: None })
}
