//! The plan: fused kernels and library ops in an executable order, and a
//! liveness-based memory plan that reuses buffers and runs elementwise
//! kernels in place where an input dies.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use rhea_graph::{Graph, NodeId, Op};
use rhea_kernel::{Bindings, resolve};

use crate::fuse::Fusion;

/// What a step runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Fused kernel number `k` of the fusion.
    Kernel(usize),
    /// One graph op run as a library call (dot, gemm, conv2d, gather...).
    Op(NodeId),
}

/// One step of the plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// What it runs.
    pub kind: StepKind,
    /// The values it reads.
    pub inputs: Vec<NodeId>,
    /// The values it writes.
    pub outputs: Vec<NodeId>,
}

/// Orders kernels and library ops so that every step comes after the steps
/// that produce its inputs; ties go to the step whose first node is oldest.
pub fn schedule(g: &Graph, fusion: &Fusion) -> Vec<Step> {
    let order = g.topo_order();
    let index: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut steps: Vec<Step> = fusion
        .groups
        .iter()
        .enumerate()
        .map(|(k, grp)| Step { kind: StepKind::Kernel(k), inputs: grp.inputs.clone(), outputs: grp.outputs.clone() })
        .collect();
    for &id in &order {
        let node = g.node(id);
        if node.op.is_leaf() || fusion.group_of.contains_key(&id) {
            continue;
        }
        match node.op {
            // Written by their scan's step.
            Op::ScanResult { .. } => {}
            Op::Scan(_) => {
                let mut results: Vec<(usize, NodeId)> = g
                    .consumers(id)
                    .into_iter()
                    .filter_map(|c| match g.node(c).op {
                        Op::ScanResult { index } => Some((index, c)),
                        _ => None,
                    })
                    .collect();
                results.sort();
                let mut outputs = vec![id];
                outputs.extend(results.into_iter().map(|(_, c)| c));
                steps.push(Step { kind: StepKind::Op(id), inputs: node.inputs.to_vec(), outputs });
            }
            _ => steps.push(Step { kind: StepKind::Op(id), inputs: node.inputs.to_vec(), outputs: vec![id] }),
        }
    }
    let producer: HashMap<NodeId, usize> =
        steps.iter().enumerate().flat_map(|(s, st)| st.outputs.iter().map(move |&o| (o, s))).collect();
    // Nodes computed inside a kernel but not written out are still produced by it.
    let producer_of = |id: &NodeId| producer.get(id).copied().or_else(|| fusion.group_of.get(id).copied());
    let first = |st: &Step| match st.kind {
        StepKind::Kernel(k) => fusion.groups[k].members.iter().map(|m| index[m]).min().unwrap_or(0),
        StepKind::Op(id) => index[&id],
    };
    let mut pending = vec![0usize; steps.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (s, st) in steps.iter().enumerate() {
        let deps: HashSet<usize> = st.inputs.iter().filter_map(producer_of).filter(|&p| p != s).collect();
        pending[s] = deps.len();
        for d in deps {
            users[d].push(s);
        }
    }
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> =
        (0..steps.len()).filter(|&s| pending[s] == 0).map(|s| Reverse((first(&steps[s]), s))).collect();
    let mut out = Vec::with_capacity(steps.len());
    while let Some(Reverse((_, s))) = ready.pop() {
        out.push(s);
        for &u in &users[s] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push(Reverse((first(&steps[u]), u)));
            }
        }
    }
    debug_assert_eq!(out.len(), steps.len(), "fusion made a cycle");
    out.into_iter().map(|s| steps[s].clone()).collect()
}

/// The NaN guard's check of one step's output: given the program step, the
/// node whose value it is, that value and the step's input values, `None`
/// when the value is finite, else the guard's message naming the op that
/// first made it (`rhea_interp::nan_check` makes it; every backend calls it).
pub type NanCheck =
    std::sync::Arc<dyn Fn(usize, NodeId, &rhea_graph::Value, &[&rhea_graph::Value]) -> Option<String> + Send + Sync>;

/// Where each intermediate value lives.
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// The buffer of each value a step writes.
    pub buffer_of: HashMap<NodeId, usize>,
    /// Each buffer's size in bytes.
    pub buffer_bytes: Vec<usize>,
    /// The total of all buffers: the most memory intermediates need at once.
    pub peak_bytes: usize,
    /// Outputs written over a dying input of the same step.
    pub in_place: usize,
}

impl MemoryPlan {
    /// Buffer `b` for a message: its size and the values planned into it.
    pub fn describe_buffer(&self, g: &Graph, b: usize) -> String {
        let mut holders: Vec<NodeId> = self.buffer_of.iter().filter(|(_, x)| **x == b).map(|(&id, _)| id).collect();
        holders.sort();
        let named: Vec<String> =
            holders.iter().map(|&id| format!("{id} ({}, {})", g.node(id).op.name(), g.ty(id))).collect();
        let bytes = self.buffer_bytes.get(b).copied().unwrap_or(0);
        format!("buffer {b} of {} (holding {})", rhea_graph::memory::format_bytes(bytes as u128), named.join(", "))
    }

    /// Refuses a plan whose peak exceeds `limit` bytes, naming the peak and
    /// its largest buffers.
    pub fn check_budget(&self, g: &Graph, limit: u64) -> Result<(), String> {
        if self.peak_bytes as u128 <= limit as u128 {
            return Ok(());
        }
        let mut largest: Vec<usize> = (0..self.buffer_bytes.len()).collect();
        largest.sort_by_key(|&b| std::cmp::Reverse(self.buffer_bytes[b]));
        let shown: Vec<String> = largest.iter().take(3).map(|&b| self.describe_buffer(g, b)).collect();
        Err(format!(
            "the plan needs {} for intermediate values at its peak, more than the memory budget of {}; its largest: {}",
            rhea_graph::memory::format_bytes(self.peak_bytes as u128),
            rhea_graph::memory::format_bytes(limit.into()),
            shown.join("; ")
        ))
    }
}

/// Plans buffers for `steps` at the sizes `bindings` give: values whose
/// last reader has run free their buffer for later values of the same size,
/// and an elementwise kernel writes over an input that dies there.
pub fn memory_plan(g: &Graph, steps: &[Step], fusion: &Fusion, bindings: &Bindings) -> Result<MemoryPlan, String> {
    memory_plan_with(g, steps, fusion, bindings, true)
}

/// [`memory_plan`], with `in_place` false never writing a kernel's output
/// over an input that dies there: every step's inputs then survive it (the
/// NaN guard replays a failing step on them).
pub fn memory_plan_with(
    g: &Graph,
    steps: &[Step],
    fusion: &Fusion,
    bindings: &Bindings,
    in_place: bool,
) -> Result<MemoryPlan, String> {
    plan_memory(g, steps, fusion, bindings, in_place, &[])
}

/// [`memory_plan_with`] for a program as `decisions` runs it: a matrix
/// product's inputs live until its epilogue kernel has run (the kernel runs
/// on each block while later blocks still read them), and that kernel never
/// writes over them.
pub fn memory_plan_decided(
    p: &crate::Program,
    decisions: &crate::Decisions,
    bindings: &Bindings,
    in_place: bool,
) -> Result<MemoryPlan, String> {
    let epilogues: Vec<bool> = decisions.steps.iter().map(|s| s.epilogue).collect();
    plan_memory(&p.graph, &p.steps, &p.fusion, bindings, in_place, &epilogues)
}

fn plan_memory(
    g: &Graph,
    steps: &[Step],
    fusion: &Fusion,
    bindings: &Bindings,
    in_place: bool,
    epilogues: &[bool],
) -> Result<MemoryPlan, String> {
    let epilogue = |s: usize| epilogues.get(s).copied().unwrap_or(false);
    let mut last_use: HashMap<NodeId, usize> = HashMap::new();
    for (s, st) in steps.iter().enumerate() {
        for &i in &st.inputs {
            last_use.insert(i, s);
        }
        if epilogue(s) {
            for &i in &steps[s - 1].inputs {
                last_use.insert(i, s);
            }
        }
    }
    let mut keep: HashSet<NodeId> = g.outputs().iter().map(|(_, id)| *id).collect();
    keep.extend(g.updates().iter().map(|&(_, v)| v));
    let bytes = |id: NodeId| -> Result<usize, String> {
        let ty = g.ty(id);
        resolve(&ty.shape, bindings)?
            .iter()
            .try_fold(ty.dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("{id} ({}, {ty}) does not fit in memory: its size overflows", g.node(id).op.name()))
    };
    let mut plan = MemoryPlan::default();
    let mut free: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (s, st) in steps.iter().enumerate() {
        let elementwise = in_place
            && match &st.kind {
                StepKind::Kernel(k) => fusion.groups[*k].kernel.reduce.is_none(),
                StepKind::Op(_) => false,
            };
        let mut reused: HashSet<usize> = HashSet::new();
        for &out in &st.outputs {
            let size = bytes(out)?;
            let in_place = elementwise
                .then(|| {
                    let k = match &st.kind {
                        StepKind::Kernel(k) => &fusion.groups[*k],
                        StepKind::Op(_) => unreachable!("elementwise steps are kernels"),
                    };
                    k.inputs.iter().zip(&k.kernel.inputs).find_map(|(&i, spec)| {
                        // Every load of the value must be at the point being written:
                        // a transposed or broadcast read of it would see overwritten data.
                        let identity = |spec: &rhea_kernel::KernelInput| spec.is_pointwise(&k.kernel.domain);
                        let all_identity =
                            k.inputs.iter().zip(&k.kernel.inputs).filter(|(n, _)| **n == i).all(|(_, s)| identity(s));
                        let b = *plan.buffer_of.get(&i)?;
                        let dies = last_use.get(&i) == Some(&s) && !keep.contains(&i);
                        let product_reads = epilogue(s) && steps[s - 1].inputs.contains(&i);
                        (identity(spec)
                            && all_identity
                            && dies
                            && !product_reads
                            && !reused.contains(&b)
                            && plan.buffer_bytes[b] == size)
                            .then_some(b)
                    })
                })
                .flatten();
            let buffer = match in_place {
                Some(b) => {
                    plan.in_place += 1;
                    b
                }
                None => match free.get_mut(&size).and_then(Vec::pop) {
                    Some(b) => b,
                    None => {
                        plan.buffer_bytes.push(size);
                        plan.buffer_bytes.len() - 1
                    }
                },
            };
            reused.insert(buffer);
            plan.buffer_of.insert(out, buffer);
        }
        let product_inputs = if epilogue(s) { steps[s - 1].inputs.as_slice() } else { &[] };
        for &i in st.inputs.iter().chain(product_inputs) {
            if last_use.get(&i) == Some(&s)
                && !keep.contains(&i)
                && let Some(&b) = plan.buffer_of.get(&i)
                && !reused.contains(&b)
            {
                free.entry(plan.buffer_bytes[b]).or_default().push(b);
                reused.insert(b);
            }
        }
    }
    plan.peak_bytes = plan.buffer_bytes.iter().sum();
    Ok(plan)
}

/// The value of a leaf as a step input: inputs, shared variables and
/// constants live outside the buffers.
pub fn is_external(g: &Graph, id: NodeId) -> bool {
    matches!(g.node(id).op, Op::Input { .. } | Op::Shared { .. } | Op::Const { .. })
}
