//! Loops: a `scan` step runs its body's own plan once per step. The body
//! is optimized and fused once (in the program, [`Program::body`]), its
//! kernels are compiled once per function (an engine per body,
//! [`Engines`]), and it is laid out and prepared once per set of input
//! sizes; a step only binds the body's inputs and runs that plan. The loop
//! itself (rows read, states carried, results stacked, the until-condition)
//! is the interpreter's `run_scan_with`, the one definition of its meaning.

use std::cell::RefCell;
use std::rc::Rc;

use rhea_graph::{ElementsMut, Fetch, NodeId, Scan, Value};
use rhea_opt::Program;

use crate::engine::{Engine, Io, Plan, SharedValues};
use crate::error::ExecError;
use crate::ids::SharedId;
use crate::layout::{Layout, Operand, Work};

/// An engine for a program and one for each loop body in it, recursively:
/// what a function holds.
pub struct Engines {
    /// The program's own engine.
    pub main: Box<dyn Engine>,
    bodies: Vec<(NodeId, Engines)>,
}

impl Engines {
    /// Engines for `program` and every body in it, each made by `make`.
    pub fn new<E, F>(program: &Program, make: &F) -> Result<Engines, E>
    where
        F: Fn(&Program) -> Result<Box<dyn Engine>, E>,
    {
        let bodies =
            program.bodies.iter().map(|(id, p)| Ok((*id, Engines::new(p, make)?))).collect::<Result<_, E>>()?;
        Ok(Engines { main: make(program)?, bodies })
    }

    /// The engines of loop `node`'s body.
    pub fn body(&self, node: NodeId) -> Option<&Engines> {
        self.bodies.iter().find(|(id, _)| *id == node).map(|(_, e)| e)
    }
}

/// A loop step of a layout.
#[derive(Clone, Debug)]
pub struct LoopStep {
    /// The scan node.
    pub node: NodeId,
    /// The loop.
    pub scan: Scan,
    /// Its inputs: sequences, initial states, non-sequences.
    pub inputs: Vec<Operand>,
    /// What it writes, each with the number of the scan's value it takes
    /// (0 for the step count, `1 + index` for result `index`).
    pub outputs: Vec<(usize, Operand)>,
    /// The body's plan, once [`Layout::prepare_loops`] made it.
    pub body: Option<BodyPlan>,
}

/// A body prepared for the device at the layout's sizes.
#[derive(Clone)]
pub struct BodyPlan {
    plan: Rc<RefCell<Box<dyn Plan>>>,
    /// The body's input names, in the plan's feed order.
    inputs: Vec<String>,
}

impl std::fmt::Debug for BodyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodyPlan({:?})", self.inputs)
    }
}

impl BodyPlan {
    /// Runs one step: the body's inputs in the order of [`BodyPlan::inputs`],
    /// its outputs in order.
    pub fn step(&self, feeds: &[Value]) -> Result<Vec<Value>, String> {
        let mut plan = self.plan.try_borrow_mut().map_err(|_| "a loop body ran inside itself".to_string())?;
        plan.run(feeds, &mut NoShared, None).map_err(|e| e.to_string())
    }

    /// The body's input names, in the plan's feed order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }
}

/// A body has no shared variables (the scan's rule refuses them).
struct NoShared;

impl SharedValues for NoShared {
    fn value(&self, _: SharedId) -> Option<&Value> {
        None
    }
    fn version(&self, _: SharedId) -> u64 {
        0
    }
    fn elements_mut(&mut self, _: SharedId) -> Option<ElementsMut<'_>> {
        None
    }
    fn set_pending(&mut self, _: SharedId, _: Fetch) -> u64 {
        0
    }
}

impl Layout {
    /// Prepares the body of every loop step of this layout (laid out from
    /// `p`) on its engine in `engines`, at this layout's sizes.
    pub fn prepare_loops(&mut self, engines: &Engines, p: &Program) -> Result<(), ExecError> {
        let bindings = self.bindings.clone();
        for step in &mut self.steps {
            let Work::Loop(l) = &mut step.work else { continue };
            let fail = |msg: String| ExecError::plan(format!("loop {}: {msg}", l.node));
            let body = p.body(l.node).ok_or_else(|| fail("the program has no body for it".into()))?;
            let engines = engines.body(l.node).ok_or_else(|| fail("no engine was made for its body".into()))?;
            let g = &body.graph;
            let inputs = g.inputs();
            let names: Vec<String> = inputs.iter().map(|&i| g.leaf_name(i).unwrap_or_default().to_string()).collect();
            let outputs = rhea_interp::body_outputs(&l.scan)
                .map_err(fail)?
                .iter()
                .map(|n| g.outputs().iter().find(|(o, _)| **o == **n).map(|(_, id)| *id))
                .collect::<Option<Vec<NodeId>>>()
                .ok_or_else(|| fail("its body lost an output".into()))?;
            let decisions = rhea_opt::decide(body, &engines.main.target());
            let memory = rhea_opt::memory_plan_decided(body, &decisions, &bindings, true).map_err(fail)?;
            let io = Io { inputs: &inputs, outputs: &outputs, updates: &[] };
            let mut layout = Layout::new(body, &memory, &decisions, &bindings, &io)?;
            layout.prepare_loops(engines, body)?;
            let plan = engines.main.prepare(body, &memory, layout, None)?;
            l.body = Some(BodyPlan { plan: Rc::new(RefCell::new(plan)), inputs: names });
        }
        Ok(())
    }
}
