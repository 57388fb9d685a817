//! The NaN guard's explanation, the same on every backend: when a step's
//! output holds a NaN or an infinity, the step's ops are evaluated again
//! here on the step's own input values to find the first op that made it,
//! named with its node, the line that built it and its inputs' statistics.
//! A fused kernel of forty ops is then reported as the `log` of a negative
//! number at the user's line, not as "kernel k3".

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rhea_graph::{Loc, NodeId, Op, Value, nan_report};
use rhea_opt::{NanCheck, Program, StepKind};

use crate::{Bindings, InterpError, eval_op};

/// One op of a step, as much of its node as the explanation needs.
struct Member {
    id: NodeId,
    op: Op,
    inputs: Vec<NodeId>,
    loc: Option<Loc>,
}

/// What one program step computes: the nodes it reads and its ops in order.
struct StepOps {
    inputs: Vec<NodeId>,
    members: Vec<Member>,
}

/// The NaN guard's check for `program` at the sizes `bindings` gives: given
/// a step, the node an output holds, its value and the step's input values,
/// `None` when the value is finite, else the guard's message.
pub fn nan_check(program: &Program, bindings: &Bindings) -> NanCheck {
    let g = &program.graph;
    let member = |id: NodeId| {
        let node = g.node(id);
        Member { id, op: node.op.clone(), inputs: node.inputs.to_vec(), loc: node.loc.clone() }
    };
    let steps: Vec<StepOps> = program
        .steps
        .iter()
        .map(|step| match step.kind {
            StepKind::Kernel(k) => {
                let group = &program.fusion.groups[k];
                StepOps { inputs: group.inputs.clone(), members: group.members.iter().map(|&m| member(m)).collect() }
            }
            StepKind::Op(id) => StepOps { inputs: step.inputs.clone(), members: vec![member(id)] },
        })
        .collect();
    // Constants a step reads without listing them as inputs.
    let consts: HashMap<NodeId, Value> = steps
        .iter()
        .flat_map(|s| s.members.iter().flat_map(|m| m.inputs.iter().copied()))
        .filter_map(|id| match &g.node(id).op {
            Op::Const { value } => Some((id, value.value().clone())),
            _ => None,
        })
        .collect();
    let nodes: HashMap<NodeId, (String, Option<Loc>)> = program
        .steps
        .iter()
        .flat_map(|s| s.outputs.iter())
        .map(|&id| (id, (g.node(id).op.name().to_string(), g.node(id).loc.clone())))
        .collect();
    let bindings = bindings.clone();
    Arc::new(move |s: usize, node: NodeId, value: &Value, inputs: &[&Value]| {
        let report = nan_report(value, inputs)?;
        if let Some(found) = steps.get(s).and_then(|step| first_non_finite(step, &consts, inputs, &bindings)) {
            return Some(found.to_string());
        }
        let (op, loc) = nodes.get(&node).cloned().unwrap_or_else(|| ("step".into(), None));
        Some(InterpError::NonFinite { node, op, loc, report }.to_string())
    })
}

/// The first op of `step` whose value is not all finite, evaluated on the
/// step's `inputs`; `None` if every op is finite here (a backend's
/// rounding differs) or the step cannot be replayed.
fn first_non_finite(
    step: &StepOps,
    consts: &HashMap<NodeId, Value>,
    inputs: &[&Value],
    bindings: &Bindings,
) -> Option<InterpError> {
    if step.inputs.len() != inputs.len() {
        return None;
    }
    let mut values: HashMap<NodeId, Cow<Value>> =
        step.inputs.iter().zip(inputs).map(|(&id, &v)| (id, Cow::Borrowed(v))).collect();
    for m in &step.members {
        let args: Vec<&Value> =
            m.inputs.iter().map(|i| values.get(i).map(|v| &**v).or_else(|| consts.get(i))).collect::<Option<_>>()?;
        let value = eval_op(&m.op, &args, bindings).ok()?;
        if let Some(report) = nan_report(&value, &args) {
            return Some(InterpError::NonFinite {
                node: m.id,
                op: m.op.name().to_string(),
                loc: m.loc.clone(),
                report,
            });
        }
        values.insert(m.id, Cow::Owned(value));
    }
    None
}
