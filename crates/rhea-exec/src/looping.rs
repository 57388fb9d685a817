//! Loops: a `scan` step runs its body's own plan once per step. The body
//! is optimized and fused once (in the program, [`Program::body`]), its
//! kernels are compiled once per function (an engine per body,
//! [`Engines`]), and it is laid out and prepared once per set of input
//! sizes; a step only binds the body's inputs and runs that plan. The loop
//! itself (rows read, states carried, results stacked, the until-condition)
//! is the interpreter's `run_scan_with`, the one definition of its meaning.

use std::cell::RefCell;
use std::rc::Rc;

use rhea_graph::scan::BodyInput;
use rhea_graph::{ElementsMut, Fetch, NodeId, Scan, Value};
use rhea_opt::Program;

use crate::engine::{Engine, Io, Plan, SharedValues};
use crate::error::ExecError;
use crate::host::host_copy;
use crate::ids::SharedId;
use crate::layout::{Layout, Operand, Work};
use crate::run::Device;

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

impl BodyPlan {
    /// Whether the body's plan runs on host memory ([`Plan::run_host`]).
    fn runs_on_host(&self) -> bool {
        self.plan.try_borrow().is_ok_and(|p| p.runs_on_host())
    }

    /// One step on host addresses.
    ///
    /// # Safety
    /// As for [`Plan::run_host`].
    unsafe fn step_at(&self, feeds: &[*const u8], outputs: &[*mut u8]) -> Result<(), String> {
        let mut plan = self.plan.try_borrow_mut().map_err(|_| "a loop body ran inside itself".to_string())?;
        // SAFETY: as the caller promises.
        unsafe { plan.run_host(feeds, outputs) }.map_err(|e| e.to_string())
    }
}

/// A host buffer of `bytes`, 8-byte aligned.
fn scratch(bytes: usize) -> Result<Vec<u64>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes.div_ceil(8)).map_err(|_| format!("out of memory: a loop's state of {bytes} bytes"))?;
    v.resize(bytes.div_ceil(8), 0);
    Ok(v)
}

/// A loop step run on host memory directly: each step's body reads its
/// rows where they lie in the sequences' buffers and its states from
/// two buffers per state that trade places, and writes its outputs into
/// the rows of the stacked results. The same meaning as
/// `rhea_interp::run_scan_with` (the tests hold the two together), without
/// a value made per step. `None` where it does not apply (a device whose
/// memory is not the host's, a state with a window of taps): the caller
/// runs the loop through values.
pub(crate) fn host_loop<D: Device>(
    dev: &D,
    layout: &Layout,
    l: &LoopStep,
    body: &BodyPlan,
) -> Option<Result<(), String>> {
    let scan = &l.scan;
    if (0..scan.states()).any(|s| scan.windowed(s)) || !body.runs_on_host() {
        return None;
    }
    let ptrs: Vec<*mut u8> = l.inputs.iter().map(|o| dev.host_ptr(dev.addr(o.src))).collect::<Option<_>>()?;
    let outs: Vec<(usize, &Operand, *mut u8)> =
        l.outputs.iter().map(|(k, o)| Some((*k, o, dev.host_ptr(dev.addr(o.src))?))).collect::<Option<_>>()?;
    Some(host_steps(layout, l, body, &ptrs, &outs))
}

fn host_steps(
    layout: &Layout,
    l: &LoopStep,
    body: &BodyPlan,
    ptrs: &[*mut u8],
    outs: &[(usize, &Operand, *mut u8)],
) -> Result<(), String> {
    let scan = &l.scan;
    let (q, ns, no) = (scan.sequences, scan.states(), scan.outputs);
    let n = rhea_interp::loop_steps(
        scan,
        l.inputs[..q].iter().map(|o| o.shape.first().copied().unwrap_or(0)),
        &layout.bindings,
    )?;
    let row_bytes: Vec<usize> =
        l.inputs[..q].iter().map(|o| o.bytes() / o.shape.first().copied().unwrap_or(1).max(1)).collect();
    let state_bytes: Vec<usize> = l.inputs[q..q + ns].iter().map(Operand::bytes).collect();
    let resolve = |t: &rhea_graph::TensorType| -> Result<usize, String> {
        let dims = rhea_kernel::resolve(&t.shape, &layout.bindings)?;
        Ok(dims.iter().product::<usize>() * t.dtype.size_bytes())
    };
    let names = rhea_interp::body_outputs(scan)?;
    let out_bytes: Vec<usize> =
        names.iter().map(|n| scan.body_output(n).and_then(|t| resolve(&t))).collect::<Result<_, _>>()?;
    let feeds: Vec<BodyInput> = body.inputs.iter().map(|name| scan.feed_of(name)).collect::<Result<_, _>>()?;
    let target = |k: usize| outs.iter().find(|(j, _, _)| *j == k).map(|(_, _, p)| *p);
    let stacked: Vec<Option<*mut u8>> = (0..ns + no).map(|k| target(1 + k)).collect();
    let before: Vec<Option<*mut u8>> = (0..ns).map(|s| target(1 + 2 * ns + no + s)).collect();
    // Two buffers per state, the current one starting as the initial value.
    let mut cur: Vec<Vec<u64>> = state_bytes.iter().map(|&b| scratch(b)).collect::<Result<_, _>>()?;
    let mut next: Vec<Vec<u64>> = state_bytes.iter().map(|&b| scratch(b)).collect::<Result<_, _>>()?;
    for s in 0..ns {
        // SAFETY: the operand holds `state_bytes[s]` bytes; the buffer as many.
        unsafe { host_copy(cur[s].as_mut_ptr() as *mut u8, ptrs[q + s], state_bytes[s]) };
    }
    // Per-step outputs nobody stacks, and the until-condition, land here.
    let mut spare: Vec<Vec<u64>> = out_bytes[ns..].iter().map(|&b| scratch(b)).collect::<Result<_, _>>()?;
    let mut feed_ptrs: Vec<*const u8> = vec![std::ptr::null(); feeds.len()];
    let mut out_ptrs: Vec<*mut u8> = vec![std::ptr::null_mut(); names.len()];
    let mut steps = 0;
    for t in 0..n {
        let r = if scan.go_backwards { n - 1 - t } else { t };
        for (p, f) in feed_ptrs.iter_mut().zip(&feeds) {
            *p = match *f {
                // SAFETY: row r < n <= rows of the sequence.
                BodyInput::Seq(i) => unsafe { ptrs[i].add(r * row_bytes[i]) as *const u8 },
                BodyInput::State(s, _) => cur[s].as_ptr() as *const u8,
                BodyInput::NonSeq(j) => ptrs[q + ns + j] as *const u8,
            };
        }
        for s in 0..ns {
            out_ptrs[s] = next[s].as_mut_ptr() as *mut u8;
            if let Some(b) = before[s] {
                // SAFETY: the stacked result has n rows of the state's bytes.
                unsafe { host_copy(b.add(t * state_bytes[s]), cur[s].as_mut_ptr() as *mut u8, state_bytes[s]) };
            }
        }
        for j in 0..names.len() - ns {
            out_ptrs[ns + j] = match stacked.get(ns + j).copied().flatten() {
                // SAFETY: as above, for the per-step output's rows.
                Some(p) => unsafe { p.add(t * out_bytes[ns + j]) },
                None => spare[j].as_mut_ptr() as *mut u8,
            };
        }
        // SAFETY: every feed address holds the body's feed at its type (rows
        // of contiguous buffers, states and non-sequences of their types),
        // every output address room for its output, none overlapping.
        unsafe { body.step_at(&feed_ptrs, &out_ptrs) }.map_err(|e| format!("step {t}: {e}"))?;
        for s in 0..ns {
            if let Some(p) = stacked[s] {
                // SAFETY: as above.
                unsafe { host_copy(p.add(t * state_bytes[s]), next[s].as_mut_ptr() as *mut u8, state_bytes[s]) };
            }
            std::mem::swap(&mut cur[s], &mut next[s]);
        }
        steps = t + 1;
        // The until-condition, a bool, is the last output.
        if scan.until && spare.last().is_some_and(|b| b[0] & 0xff != 0) {
            break;
        }
    }
    // Rows after an until-condition stopped the loop are zero.
    for (k, p) in stacked.iter().enumerate().chain(before.iter().enumerate()) {
        let bytes = if k < ns { state_bytes[k] } else { out_bytes[k] };
        if let Some(p) = p {
            // SAFETY: the rows from `steps` to n of a stacked result.
            unsafe { std::ptr::write_bytes(p.add(steps * bytes), 0, (n - steps) * bytes) };
        }
    }
    for s in 0..ns {
        if let Some(p) = target(1 + ns + no + s) {
            // SAFETY: the final state's operand holds its bytes.
            unsafe { host_copy(p, cur[s].as_mut_ptr() as *mut u8, state_bytes[s]) };
        }
    }
    if let Some(p) = target(0) {
        // SAFETY: the step count's operand is one i64.
        unsafe { std::ptr::write_unaligned(p as *mut i64, steps as i64) };
    }
    Ok(())
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
