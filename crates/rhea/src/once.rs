//! One run of an optimized program on any backend, through the same
//! engine, layout and executor a compiled function uses: for checks and
//! tests that compare backends on the same program.

use std::collections::HashMap;

use rhea_exec::{Engines, Io, Layout, SharedId, SharedValues};
use rhea_graph::{ElementsMut, Fetch, NodeId, Value};
use rhea_opt::{MemoryPlan, Program};

use crate::{Backend, FunctionError};

/// Runs `program` once on `backend` on `feeds` (by input name) and returns
/// the values of `outputs`. The shared variables' values are copies of the
/// program graph's, so the updates a run makes change nothing outside it.
/// `memory` places the values (`None`: the plan's own memory plan).
pub fn run_program(
    program: &Program,
    backend: Backend,
    feeds: &HashMap<String, Value>,
    outputs: &[NodeId],
    memory: Option<&MemoryPlan>,
) -> Result<Vec<Value>, FunctionError> {
    run_on(program, &backend.engines(program, false, true)?, feeds, outputs, memory)
}

/// [`run_program`] on a backend's `engines` (CUDA engines on a given GPU, say).
pub fn run_on(
    program: &Program,
    engines: &Engines,
    feeds: &HashMap<String, Value>,
    outputs: &[NodeId],
    memory: Option<&MemoryPlan>,
) -> Result<Vec<Value>, FunctionError> {
    let g = &program.graph;
    let bindings = rhea_interp::bind_inputs(g, feeds)?;
    let engine = &engines.main;
    let decisions = rhea_opt::decide(program, &engine.target());
    let planned;
    let memory = match memory {
        Some(m) => m,
        None => {
            planned = rhea_opt::memory_plan_decided(program, &decisions, &bindings, true)
                .map_err(|msg| rhea_opt::OptError { pass: "plan".into(), msg })?;
            &planned
        }
    };
    let inputs = g.inputs();
    let values: Vec<Value> = inputs
        .iter()
        .map(|&id| {
            let name = g.leaf_name(id).unwrap_or_default();
            feeds.get(name).cloned().ok_or_else(|| InterpMissing(name.to_string()))
        })
        .collect::<Result<_, InterpMissing>>()
        .map_err(|m| FunctionError::Run(rhea_interp::InterpError::MissingInput(m.0)))?;
    let io = Io { inputs: &inputs, outputs, updates: g.updates() };
    let mut layout = Layout::new(program, memory, &decisions, &bindings, &io)?;
    layout.prepare_loops(engines, program)?;
    let mut plan = engine.prepare(program, memory, layout, None)?;
    let mut shared = Copies(plan.layout().shared.iter().map(|v| g.shared_value(v.node).cloned()).collect());
    Ok(plan.run(&values, &mut shared, None)?)
}

struct InterpMissing(String);

/// The shared variables' values, copied.
struct Copies(Vec<Option<Value>>);

impl SharedValues for Copies {
    fn value(&self, i: SharedId) -> Option<&Value> {
        self.0[i.index()].as_ref()
    }
    fn version(&self, _: SharedId) -> u64 {
        0
    }
    fn elements_mut(&mut self, i: SharedId) -> Option<ElementsMut<'_>> {
        self.0[i.index()].as_mut().map(Value::elements_mut)
    }
    fn set_pending(&mut self, _: SharedId, _: Fetch) -> u64 {
        1
    }
}
