//! A plan laid out at one set of sizes: each step's work, with every
//! operand resolved to where its value lives, and the call's inputs, shared
//! variables, outputs and updates. Device independent: a device prepares
//! its own launches from it.

use std::borrow::Cow;

use rhea_graph::{DType, Loc, NodeId, Op, Value};
use rhea_kernel::{Bindings, Kernel, resolve};
use rhea_opt::{Decisions, MemoryPlan, Placement, Program, StepKind};

use crate::engine::Io;
use crate::error::{ErrorKind, ExecError};
use crate::ids::{BufferId, ConstId, FeedId, IdVec, SharedId, StepId};

/// Where a step finds (or writes) a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The caller's input.
    Feed(FeedId),
    /// A shared variable's storage (written only by updates in place).
    Shared(SharedId),
    /// A constant.
    Const(ConstId),
    /// A buffer of the memory plan.
    Buffer(BufferId),
}

/// A value as a step sees it: which node, where, and its type at these sizes.
#[derive(Clone, Debug)]
pub struct Operand {
    /// The node whose value it is.
    pub node: NodeId,
    /// Where it lives.
    pub src: Source,
    /// Its dtype.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
}

impl Operand {
    /// Its number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True if it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> usize {
        self.len() * self.dtype.size_bytes()
    }
}

/// A kernel run on each block of a matrix product's output as the block is
/// computed.
#[derive(Clone, Debug)]
pub struct Epilogue {
    /// The kernel's number in the program.
    pub kernel: usize,
    /// What it reads (the product's output among them).
    pub inputs: Vec<Operand>,
    /// What it writes.
    pub outputs: Vec<Operand>,
}

/// What one step does.
#[derive(Clone, Debug)]
pub enum Work {
    /// Kernel number `kernel` of the program, compiled for the device.
    Kernel {
        /// The kernel's number.
        kernel: usize,
        /// Its inputs, in the kernel's order.
        inputs: Vec<Operand>,
        /// Its outputs.
        outputs: Vec<Operand>,
    },
    /// A library op native to the device, with the kernel the plan runs as
    /// its epilogue.
    Library {
        /// The op.
        op: Op,
        /// Its inputs.
        inputs: Vec<Operand>,
        /// Its output.
        out: Operand,
        /// The next step's kernel, merged into this one.
        epilogue: Option<Epilogue>,
    },
    /// The same bytes in another buffer (a reshape).
    Copy {
        /// What is read.
        from: Operand,
        /// Where it goes.
        to: Operand,
    },
    /// A library op on the host, through the interpreter's semantics.
    HostOp {
        /// The op.
        op: Op,
        /// Its inputs.
        inputs: Vec<Operand>,
        /// Its output.
        out: Operand,
    },
    /// A kernel on the host, through the kernel-IR evaluator.
    HostKernel {
        /// The kernel.
        kernel: Box<Kernel>,
        /// Its inputs.
        inputs: Vec<Operand>,
        /// Its outputs.
        outputs: Vec<Operand>,
    },
    /// A loop: its body's plan run once per step.
    Loop(Box<crate::looping::LoopStep>),
    /// Nothing: its kernel runs as the epilogue of the step before.
    Merged,
}

impl Work {
    /// What the step reads and what it writes.
    pub fn operands(&self) -> (Vec<&Operand>, Vec<&Operand>) {
        match self {
            Work::Kernel { inputs, outputs, .. } | Work::HostKernel { inputs, outputs, .. } => {
                (inputs.iter().collect(), outputs.iter().collect())
            }
            Work::Library { inputs, out, epilogue, .. } => {
                let mut reads: Vec<&Operand> = inputs.iter().collect();
                let mut writes = vec![out];
                if let Some(e) = epilogue {
                    reads.extend(&e.inputs);
                    writes.extend(&e.outputs);
                }
                (reads, writes)
            }
            Work::HostOp { inputs, out, .. } => (inputs.iter().collect(), vec![out]),
            Work::Copy { from, to } => (vec![from], vec![to]),
            Work::Loop(l) => (l.inputs.iter().collect(), l.outputs.iter().map(|(_, o)| o).collect()),
            Work::Merged => (Vec::new(), Vec::new()),
        }
    }

    /// True if the host takes part (its values cross over): a host step,
    /// or a loop, which the host drives step by step.
    pub fn on_host(&self) -> bool {
        matches!(self, Work::HostOp { .. } | Work::HostKernel { .. } | Work::Loop(_))
    }
}

/// One step of a layout.
#[derive(Clone, Debug)]
pub struct PlanStep {
    /// The program step it runs (the first, where an epilogue merges two).
    pub step: StepId,
    /// What it does.
    pub work: Work,
    /// For errors and profiles: the op or kernel, and where it was built.
    pub label: String,
    /// Where the user built it.
    pub loc: Option<Loc>,
}

impl PlanStep {
    /// An error of this step.
    pub fn error(&self, kind: ErrorKind, msg: impl ToString) -> ExecError {
        ExecError::new(kind, msg).at(&self.label, self.loc.as_ref())
    }
}

/// A caller's input as the plan expects it.
#[derive(Clone, Debug)]
pub struct FeedSlot {
    /// The input's name.
    pub name: String,
    /// Its dtype.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// A shared variable the plan reads or updates.
#[derive(Clone, Debug)]
pub struct SharedVar {
    /// Its node in the program's graph.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// Its dtype.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Whether a call updates it (else it only reads it).
    pub written: bool,
}

/// A shared variable's update.
#[derive(Clone, Debug)]
pub struct Update {
    /// The variable.
    pub shared: SharedId,
    /// Its new value.
    pub value: Operand,
    /// Written by its kernel straight into the variable (nothing to copy).
    pub in_place: bool,
}

/// A program laid out at one set of sizes.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The steps, one per program step.
    pub steps: Vec<PlanStep>,
    /// The call's inputs.
    pub feeds: IdVec<FeedId, FeedSlot>,
    /// The shared variables read or updated.
    pub shared: IdVec<SharedId, SharedVar>,
    /// The constants, in row-major layout.
    pub consts: IdVec<ConstId, Value>,
    /// Each buffer's size in bytes.
    pub buffers: IdVec<BufferId, usize>,
    /// The values a call returns.
    pub outputs: Vec<Operand>,
    /// The updates a call makes.
    pub updates: Vec<Update>,
    /// The sizes of the symbolic dims.
    pub bindings: Bindings,
}

impl Layout {
    /// Lays `p` out at the sizes `bindings` gives, with the buffers of
    /// `memory` and the decisions `d`.
    pub fn new(
        p: &Program,
        memory: &MemoryPlan,
        d: &Decisions,
        bindings: &Bindings,
        io: &Io,
    ) -> Result<Layout, ExecError> {
        let g = &p.graph;
        let mut l = Layout {
            steps: Vec::with_capacity(p.steps.len()),
            feeds: IdVec::default(),
            shared: IdVec::default(),
            consts: IdVec::default(),
            buffers: memory.buffer_bytes.clone().into(),
            outputs: Vec::new(),
            updates: Vec::new(),
            bindings: bindings.clone(),
        };
        for &id in io.inputs {
            let ty = g.ty(id);
            let shape = resolve(&ty.shape, bindings).map_err(ExecError::input)?;
            l.feeds.push(FeedSlot { name: g.leaf_name(id).unwrap_or_default().to_string(), dtype: ty.dtype, shape });
        }
        let operand = |l: &mut Layout, id: NodeId| -> Result<Operand, ExecError> {
            let ty = g.ty(id);
            let shape = resolve(&ty.shape, bindings).map_err(ExecError::plan)?;
            let src = match &g.node(id).op {
                Op::Input { .. } => Source::Feed(
                    io.inputs
                        .iter()
                        .position(|&i| i == id)
                        .map(FeedId::from)
                        .ok_or_else(|| ExecError::plan(format!("{id} is not an input of the function")))?,
                ),
                Op::Shared { name } => Source::Shared(match l.shared.position(|s| s.node == id) {
                    Some(i) => i,
                    None => l.shared.push(SharedVar {
                        node: id,
                        name: name.to_string(),
                        dtype: ty.dtype,
                        shape: shape.clone(),
                        written: io.updates.iter().any(|&(s, _)| s == id),
                    }),
                }),
                Op::Const { value } => Source::Const(l.consts.push(standard(value.value()).into_owned())),
                _ => Source::Buffer(BufferId::from(
                    *memory.buffer_of.get(&id).ok_or_else(|| ExecError::plan(format!("{id} has no buffer")))?,
                )),
            };
            Ok(Operand { node: id, src, dtype: ty.dtype, shape })
        };
        for (s, step) in p.steps.iter().enumerate() {
            let inputs = step.inputs.iter().map(|&i| operand(&mut l, i)).collect::<Result<Vec<_>, _>>()?;
            let outputs = step.outputs.iter().map(|&o| operand(&mut l, o)).collect::<Result<Vec<_>, _>>()?;
            let device = d.steps[s].placement == Placement::Device;
            let work = match &step.kind {
                StepKind::Kernel(k) if device => Work::Kernel { kernel: *k, inputs, outputs },
                StepKind::Kernel(k) => {
                    Work::HostKernel { kernel: Box::new(p.fusion.groups[*k].kernel.clone()), inputs, outputs }
                }
                StepKind::Op(id) => match &g.node(*id).op {
                    Op::Scan(scan) => {
                        let outputs = outputs
                            .into_iter()
                            .map(|o| match g.node(o.node).op {
                                Op::ScanResult { index } => (index + 1, o),
                                _ => (0, o),
                            })
                            .collect();
                        let scan = (**scan).clone();
                        Work::Loop(Box::new(crate::looping::LoopStep { node: *id, scan, inputs, outputs, body: None }))
                    }
                    op => {
                        let out = outputs.into_iter().next().ok_or_else(|| ExecError::plan("an op without output"))?;
                        match op.clone() {
                            Op::Reshape { .. } => Work::Copy { from: inputs[0].clone(), to: out },
                            op if device => Work::Library { op, inputs, out, epilogue: None },
                            op => Work::HostOp { op, inputs, out },
                        }
                    }
                },
            };
            let (label, loc) = p.step_origin(s);
            l.steps.push(PlanStep { step: StepId::from(s), work, label, loc });
        }
        l.merge_epilogues(d)?;
        for &o in io.outputs {
            let o = operand(&mut l, o)?;
            l.outputs.push(o);
        }
        let in_place = |u: usize| io.updates.len() == d.in_place_updates.len() && d.in_place_updates[u];
        for (u, &(s, v)) in io.updates.iter().enumerate() {
            let Source::Shared(shared) = operand(&mut l, s)?.src else {
                return Err(ExecError::plan(format!("update of {s}, which is not a shared variable")));
            };
            let value = operand(&mut l, v)?;
            let in_place = in_place(u) && l.write_in_place(shared, &value);
            l.updates.push(Update { shared, value, in_place });
        }
        Ok(l)
    }

    /// Moves each epilogue kernel into the library step before it; the
    /// kernel's step keeps its place, empty, so steps stay the program's.
    fn merge_epilogues(&mut self, d: &Decisions) -> Result<(), ExecError> {
        for s in 1..self.steps.len() {
            if !d.steps[s].epilogue {
                continue;
            }
            let Work::Kernel { kernel, inputs, outputs } = std::mem::replace(&mut self.steps[s].work, Work::Merged)
            else {
                return Err(ExecError::plan(format!("step {s}: an epilogue that is not a kernel")));
            };
            let label = format!("{} + kernel k{kernel}", self.steps[s - 1].label);
            let Work::Library { epilogue, .. } = &mut self.steps[s - 1].work else {
                return Err(ExecError::plan(format!("step {s}: an epilogue after a step that is no library op")));
            };
            *epilogue = Some(Epilogue { kernel, inputs, outputs });
            self.steps[s - 1].label = label;
        }
        Ok(())
    }

    /// Points the kernel output that computes `value` at the shared
    /// variable's storage; false if no kernel writes it.
    fn write_in_place(&mut self, shared: SharedId, value: &Operand) -> bool {
        for step in &mut self.steps {
            let outputs = match &mut step.work {
                Work::Kernel { outputs, .. } => outputs,
                Work::Library { epilogue: Some(e), .. } => &mut e.outputs,
                _ => continue,
            };
            if let Some(o) = outputs.iter_mut().find(|o| o.node == value.node) {
                o.src = Source::Shared(shared);
                return true;
            }
        }
        false
    }

    /// How many updates kernels write in place.
    pub fn updates_in_place(&self) -> usize {
        self.updates.iter().filter(|u| u.in_place).count()
    }

    /// Sends step `s` to the host (the device could not prepare it).
    pub fn to_host(&mut self, s: usize, p: &Program) {
        let work = std::mem::replace(&mut self.steps[s].work, Work::Merged);
        self.steps[s].work = match work {
            Work::Kernel { kernel, inputs, outputs } => {
                Work::HostKernel { kernel: Box::new(p.fusion.groups[kernel].kernel.clone()), inputs, outputs }
            }
            Work::Library { op, inputs, out, epilogue: None } => Work::HostOp { op, inputs, out },
            other => other,
        };
    }

    /// Checks each input's dtype and shape; gives a row-major copy of each
    /// one not laid out so (`None`: used as it is).
    pub fn check_feeds(&self, feeds: &[Value]) -> Result<Vec<Option<Value>>, ExecError> {
        if feeds.len() != self.feeds.len() {
            return Err(ExecError::input(format!("expected {} inputs, got {}", self.feeds.len(), feeds.len())));
        }
        let mut copies = Vec::new();
        for (i, (v, slot)) in feeds.iter().zip(self.feeds.iter()).enumerate() {
            if v.dtype() != slot.dtype || v.shape() != slot.shape.as_slice() {
                return Err(ExecError::input(format!(
                    "input {:?}: expected {}{:?}, got {}{:?}",
                    slot.name,
                    slot.dtype,
                    slot.shape,
                    v.dtype(),
                    v.shape()
                )));
            }
            if let Cow::Owned(copy) = standard(v) {
                copies.resize(feeds.len(), None);
                copies[i] = Some(copy);
            }
        }
        Ok(copies)
    }

    /// Checks a shared variable's storage (`len` elements of `dtype`).
    pub fn check_shared(&self, i: SharedId, dtype: DType, len: usize) -> Result<(), ExecError> {
        let var = &self.shared[i];
        if var.dtype != dtype || var.shape.iter().product::<usize>() != len {
            return Err(ExecError::input(format!(
                "shared variable {:?}: expected {}{:?}, got {len} elements of {dtype}",
                var.name, var.dtype, var.shape
            )));
        }
        Ok(())
    }
}

/// `v` in row-major layout (borrowed if it is already).
pub fn standard(v: &Value) -> Cow<'_, Value> {
    let standard = rhea_graph::with_array!(v, a => a.is_standard_layout());
    if standard {
        Cow::Borrowed(v)
    } else {
        Cow::Owned(rhea_graph::with_array!(v, a => a.as_standard_layout().into_owned().into()))
    }
}

/// An out-of-memory error for buffer `b`, naming the values planned into it.
pub fn out_of_memory(p: &Program, memory: &MemoryPlan, b: usize) -> ExecError {
    let holder = memory.buffer_of.iter().filter(|(_, x)| **x == b).map(|(&id, _)| id).min();
    ExecError {
        kind: ErrorKind::OutOfMemory,
        op: None,
        loc: holder.and_then(|id| p.graph.node(id).loc.clone()),
        msg: format!("out of memory: cannot allocate {}", memory.describe_buffer(&p.graph, b)),
    }
}
