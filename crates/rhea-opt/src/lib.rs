//! rhea's optimizer: named rewrite passes driven to a fixed point, fusion
//! of elementwise chains and reductions into kernel IR, a schedule and a
//! memory plan, and dumps that explain each of them.
//!
//! ```
//! use rhea_graph::{Builder, DType};
//! use rhea_opt::{Options, compile};
//!
//! let g = Builder::new();
//! let x = g.input("x", DType::F32, [4])?;
//! let y = (&x * 1.0 + 0.0).sigmoid()?.log()?.sum_all()?;
//! g.output("y", &y)?;
//! let p = compile(g.to_graph(), &Options::default()).unwrap();
//! // x*1 and +0 are gone, log(sigmoid(x)) became -softplus(-x), and the rest is one kernel.
//! let rules: Vec<&str> = p.report.rewrites.iter().map(|r| r.rule).collect();
//! assert_eq!(rules, ["mul_one", "add_zero", "log_sigmoid"]);
//! assert_eq!(p.fusion.groups.len(), 1);
//! # Ok::<(), rhea_graph::GraphError>(())
//! ```
#![warn(missing_docs)]

mod decide;
mod driver;
mod fuse;
mod plan;
pub mod print;
pub mod rule;
pub mod rules;
mod verify;

pub use decide::{Decisions, Placement, StepPlan, Target, decide};
pub use driver::{
    Evaluator, Mode, OptError, Options, PassReport, Report, Rewrite, Stop, all_rules, describe, optimize, pass_names,
};
pub use fuse::{Fusion, Group, fuse};
pub use plan::{
    MemoryPlan, NanCheck, Step, StepKind, is_external, memory_plan, memory_plan_decided, memory_plan_with, schedule,
};
pub use verify::verify;

use rhea_graph::Graph;

/// An optimized graph, ready for a backend: the rewritten graph, its
/// kernels, the order of steps, and what the optimizer did.
#[derive(Clone, Debug)]
pub struct Program {
    /// The graph after the rewrite passes.
    pub graph: Graph,
    /// Its fused kernels.
    pub fusion: Fusion,
    /// Kernels and library ops in execution order.
    pub steps: Vec<Step>,
    /// What the passes did.
    pub report: Report,
    /// The body of each loop (`scan` node) of the graph, optimized and
    /// fused once: its program runs every step.
    pub bodies: Vec<(rhea_graph::NodeId, Program)>,
}

/// Optimizes `graph` and plans it: rewrites, fusion, schedule.
pub fn compile(mut graph: Graph, opts: &Options) -> Result<Program, OptError> {
    let report = optimize(&mut graph, opts)?;
    let fusion = fuse(&graph, opts.mode);
    for (k, group) in fusion.groups.iter().enumerate() {
        group.kernel.verify().map_err(|msg| OptError { pass: "fuse".into(), msg: format!("kernel {k}: {msg}") })?;
    }
    let steps = schedule(&graph, &fusion);
    let mut bodies = Vec::new();
    for id in graph.topo_order() {
        if let rhea_graph::Op::Scan(scan) = &graph.node(id).op {
            let body = compile(scan.body.graph().clone(), opts)
                .map_err(|e| OptError { pass: e.pass, msg: format!("the body of loop {id}: {}", e.msg) })?;
            bodies.push((id, body));
        }
    }
    Ok(Program { graph, fusion, steps, report, bodies })
}

impl Program {
    /// The program of loop `node`'s body.
    pub fn body(&self, node: rhea_graph::NodeId) -> Option<&Program> {
        self.bodies.iter().find(|(id, _)| *id == node).map(|(_, p)| p)
    }

    /// The number of fused kernels.
    pub fn kernels(&self) -> usize {
        self.fusion.groups.len()
    }

    /// Step `s` as errors name it (`kernel k3`, `gemm`) and the line that
    /// built it (a kernel's root node).
    pub fn step_origin(&self, s: usize) -> (String, Option<rhea_graph::Loc>) {
        let g = &self.graph;
        match &self.steps[s].kind {
            StepKind::Kernel(k) => (format!("kernel k{k}"), g.node(self.fusion.groups[*k].root).loc.clone()),
            StepKind::Op(id) => (g.node(*id).op.name().to_string(), g.node(*id).loc.clone()),
        }
    }
}
