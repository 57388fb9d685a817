//! Runs optimized programs: kernels through the kernel-IR evaluator,
//! library ops through the op semantics, every intermediate stored in the
//! buffer the memory plan gave it. A plan that reuses a buffer too early is
//! caught here, by name, instead of giving a wrong answer.

use std::borrow::Cow;
use std::collections::HashMap;

use rhea_graph::{NodeId, Op, Value};
use rhea_opt::{MemoryPlan, Program, StepKind};

use crate::{Bindings, InterpError, bind_inputs, eval_op};

/// Evaluates one op on constants: the optimizer's constant folder.
pub fn fold_constant(op: &Op, inputs: &[&Value]) -> Result<Value, String> {
    eval_op(op, inputs, &Bindings::new())
}

/// Runs kernel `k` of a program on its inputs.
pub type KernelRunner<'r> = &'r dyn Fn(usize, &[&Value], &Bindings) -> Result<Vec<Value>, String>;

/// Runs a library op natively if it can (`None`: the interpreter runs it).
pub type OpRunner<'r> = &'r dyn Fn(&Op, &[&Value]) -> Option<Result<Value, String>>;

/// Runs `program` with buffers placed by `memory` and returns the values of
/// `wanted` (outputs and update values); kernels run on the kernel-IR
/// evaluator.
pub fn run_program<'a>(
    program: &Program,
    memory: &MemoryPlan,
    feeds: &'a HashMap<String, Value>,
    shared: &dyn Fn(NodeId, &str) -> Option<&'a Value>,
    wanted: &[NodeId],
) -> Result<Vec<Value>, InterpError> {
    let evaluate = |k: usize, inputs: &[&Value], b: &Bindings| {
        rhea_kernel::eval_kernel(&program.fusion.groups[k].kernel, inputs, b)
    };
    run_program_with(program, memory, feeds, shared, wanted, &evaluate, &|_, _| None, None)
}

/// [`run_program`] with kernels run by `kernels` (compiled code, say) and
/// library ops by `ops` where it can, else by the interpreter; with
/// `guard` (the NaN guard, [`crate::nan_check`]), each step's outputs are
/// checked as it runs.
#[allow(clippy::too_many_arguments)]
pub fn run_program_with<'a>(
    program: &Program,
    memory: &MemoryPlan,
    feeds: &'a HashMap<String, Value>,
    shared: &dyn Fn(NodeId, &str) -> Option<&'a Value>,
    wanted: &[NodeId],
    kernels: KernelRunner,
    ops: OpRunner,
    guard: Option<&rhea_opt::NanCheck>,
) -> Result<Vec<Value>, InterpError> {
    let g = &program.graph;
    let bindings = bind_inputs(g, feeds)?;
    let mut slots: Vec<Option<(NodeId, Value)>> = vec![None; memory.buffer_bytes.len()];
    for (s, step) in program.steps.iter().enumerate() {
        // Inputs are borrowed, from the feeds or from the buffers, for the step.
        let args =
            step.inputs.iter().map(|&i| fetch(g, memory, feeds, shared, &slots, i)).collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&Value> = args.iter().map(|v| &**v).collect();
        let failed = |msg: String| {
            let (op, loc) = program.step_origin(s);
            InterpError::Op { op, loc, msg }
        };
        let outputs = match &step.kind {
            StepKind::Kernel(k) => kernels(*k, &refs, &bindings).map_err(failed)?,
            StepKind::Op(id) => {
                let op = &g.node(*id).op;
                vec![ops(op, &refs).unwrap_or_else(|| eval_op(op, &refs, &bindings)).map_err(failed)?]
            }
        };
        if let Some(check) = guard {
            for (&out, value) in step.outputs.iter().zip(&outputs) {
                if let Some(msg) = check(s, out, value, &refs) {
                    return Err(InterpError::Guard(msg));
                }
            }
        }
        drop(args);
        for (&out, value) in step.outputs.iter().zip(outputs) {
            let b = *memory.buffer_of.get(&out).ok_or_else(|| plan_bug(format!("{out} has no buffer")))?;
            slots[b] = Some((out, value));
        }
    }
    wanted.iter().map(|&id| fetch(g, memory, feeds, shared, &slots, id).map(Cow::into_owned)).collect()
}

fn plan_bug(msg: String) -> InterpError {
    InterpError::Op { op: "plan".into(), loc: None, msg }
}

/// A step input's value: a feed, a shared variable, a constant, or what an
/// earlier step left in the value's buffer (checked to be that value).
fn fetch<'s, 'a: 's>(
    g: &rhea_graph::Graph,
    memory: &MemoryPlan,
    feeds: &'a HashMap<String, Value>,
    shared: &dyn Fn(NodeId, &str) -> Option<&'a Value>,
    slots: &'s [Option<(NodeId, Value)>],
    id: NodeId,
) -> Result<Cow<'s, Value>, InterpError> {
    let node = g.node(id);
    match &node.op {
        Op::Input { name } => {
            feeds.get(&**name).map(Cow::Borrowed).ok_or_else(|| InterpError::MissingInput(name.to_string()))
        }
        Op::Shared { name } => {
            let v = shared(id, name).ok_or_else(|| InterpError::MissingShared(name.to_string()))?;
            rhea_graph::check_value(&format!("shared variable {name:?}"), &node.ty, v)
                .map_err(|e| InterpError::Op { op: "shared".into(), loc: node.loc.clone(), msg: e.to_string() })?;
            Ok(Cow::Borrowed(v))
        }
        Op::Const { value } => Ok(Cow::Owned(value.value().clone())),
        _ => {
            let b = *memory.buffer_of.get(&id).ok_or_else(|| plan_bug(format!("{id} has no buffer")))?;
            match &slots[b] {
                Some((holder, v)) if *holder == id => Ok(Cow::Borrowed(v)),
                Some((holder, _)) => Err(plan_bug(format!("buffer {b} holds {holder} when {id} is read"))),
                None => Err(plan_bug(format!("{id} is read before it is written"))),
            }
        }
    }
}
