//! The CPU executor. A program is prepared once per set of input shapes:
//! every buffer of the memory plan is allocated, every kernel's loop bounds
//! and strides computed, every step's operands resolved to a feed, a shared
//! variable, a constant or a buffer. A call then only checks its inputs,
//! runs the steps on raw pointers and copies out what the caller asked for:
//! no shape arithmetic, no maps, no allocation on the path of a kernel,
//! matrix product or convolution.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};
use rhea_graph::{DType, ElementsMut, Loc, NodeId, Op, Value};
use rhea_kernel::{Bindings, resolve};
use rhea_opt::{MemoryPlan, Program, StepKind};

use crate::jit::{CpuKernels, Launch, data_ptr, standard};
use crate::library::{is_native, run_native};
use crate::winograd::{FilterCache, Stable};

/// Runs an op the backend has no native kernel for (the interpreter's).
pub type Fallback<'f> = &'f dyn Fn(&Op, &[&Value], &Bindings) -> Result<Value, String>;

pub use rhea_opt::ExecError;

fn input_error(msg: String) -> ExecError {
    ExecError { op: None, loc: None, msg }
}

/// Where a step finds a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The caller's input number `i`.
    Feed(usize),
    /// Shared variable number `i` of [`Prepared::shared`].
    Shared(usize),
    /// Constant number `i`.
    Const(usize),
    /// Buffer number `i` of the memory plan.
    Buffer(usize),
}

/// Where a kernel writes an output: a buffer, or (for an update written in
/// place) the storage of shared variable number `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Buffer(usize),
    Shared(usize),
}

/// A shared variable's storage for one call: its dtype, its number of
/// elements, and a pointer to them (row-major), read by the steps and, for
/// updates written in place, written.
#[derive(Clone, Copy, Debug)]
pub struct SharedSlot {
    dtype: DType,
    len: usize,
    ptr: *mut u8,
    /// For a variable the call only reads: its value's version (see
    /// [`rhea_graph::Graph::shared_version`]). Steps may keep what they
    /// derive from it between calls while the version stays the same.
    version: Option<u64>,
}

impl SharedSlot {
    /// The slot of a value's elements, which the call may write (an
    /// updated variable); it stays valid while they do.
    pub fn of(elements: ElementsMut<'_>) -> SharedSlot {
        let (dtype, len, ptr) = match elements {
            ElementsMut::F32(e) => (DType::F32, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::F64(e) => (DType::F64, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::I32(e) => (DType::I32, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::I64(e) => (DType::I64, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::Bool(e) => (DType::Bool, e.len(), e.as_mut_ptr() as *mut u8),
        };
        SharedSlot { dtype, len, ptr, version: None }
    }

    /// The slot of a variable the call only reads, whose value (`version`)
    /// stays the same until the next call: what steps derive from it (a
    /// convolution's transformed filters) is kept while later calls bring
    /// the same version. `None` if the value is not in row-major layout
    /// (use [`SharedSlot::of`], which makes it so).
    pub fn unchanged(value: &Value, version: u64) -> Option<SharedSlot> {
        let (len, ptr) = rhea_graph::with_array!(value, a => (a.len(), a.as_slice()?.as_ptr() as *mut u8));
        Some(SharedSlot { dtype: value.dtype(), len, ptr, version: Some(version) })
    }
}

/// A value a step reads: where, and what it is.
#[derive(Clone, Debug)]
struct Operand {
    src: Source,
    dtype: DType,
    shape: Vec<usize>,
}

impl Operand {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

enum Action {
    /// A compiled kernel.
    Kernel { k: usize, launch: Launch, inputs: Vec<Source>, outputs: Vec<Target> },
    /// A library op with a native kernel.
    Native { op: Op, inputs: Vec<Operand>, out: Operand },
    /// A reshape: the same bytes in another buffer.
    Copy { from: Operand, to: Operand },
    /// Nothing: a step merged into the one before it.
    Done,
    /// Any other op, through the fallback on `Value`s.
    Fallback { op: Op, inputs: Vec<Operand>, out: Operand },
    /// A matrix product whose next step is a flat kernel reading its
    /// output pointwise: the kernel runs on each block of the product's
    /// output right after the block is computed, while it is in cache.
    GemmEpilogue {
        op: Op,
        inputs: Vec<Operand>,
        out: Operand,
        k: usize,
        launch: Launch,
        kernel_inputs: Vec<Source>,
        kernel_outputs: Vec<Target>,
    },
}

/// One step of a prepared program.
struct Prepped {
    action: Action,
    /// The program step it runs (the first, where epilogues merge steps).
    step: usize,
    /// The values it writes (the program step's outputs).
    writes: Vec<NodeId>,
    /// For errors and profiles: the op (or kernel) and where it was built.
    label: String,
    loc: Option<Loc>,
}

/// A program prepared for one set of input shapes.
pub struct Prepared {
    steps: Vec<Prepped>,
    buffers: Vec<Vec<u64>>,
    consts: Vec<Value>,
    /// Each input's name, dtype and shape.
    feeds: Vec<(String, DType, Vec<usize>)>,
    /// The shared variables read, by node of the program's graph.
    shared: Vec<(NodeId, String, DType, Vec<usize>)>,
    /// The values the caller wants: outputs, then update values.
    wanted: Vec<Operand>,
    outputs: usize,
    /// The shared variable (index into `shared`) each update writes.
    updated: Vec<usize>,
    /// Updates whose kernel writes straight into the shared variable.
    in_place: Vec<bool>,
    /// Each update value's buffer (to undo writing it in place).
    update_buffers: Vec<Option<usize>>,
    /// Check every step's float outputs for NaN and infinities.
    nan_guard: Option<rhea_opt::NanCheck>,
    /// Transformed convolution filters of weights that did not change.
    filters: FilterCache,
    /// Scratch: the inputs' data pointers of a call.
    feed_ptrs: Vec<*const u8>,
    /// Pointers to the constants and the buffers (which never move).
    const_ptrs: Vec<*const u8>,
    buffer_ptrs: Vec<*mut u8>,
    bindings: Bindings,
}

// SAFETY: the raw pointers a call builds live only for that call; the
// prepared state itself is owned data.
unsafe impl Send for Prepared {}

impl Prepared {
    /// Prepares `program` for the sizes in `bindings`. `inputs` are the
    /// program's input nodes in call order; `outputs` the values a call
    /// returns; `updates` the (shared variable, new value) pairs a call
    /// writes once every step has run.
    pub fn new(
        program: &Program,
        kernels: &CpuKernels,
        memory: &MemoryPlan,
        bindings: &Bindings,
        inputs: &[NodeId],
        outputs: &[NodeId],
        updates: &[(NodeId, NodeId)],
    ) -> Result<Prepared, ExecError> {
        let g = &program.graph;
        let mut p = Prepared {
            steps: Vec::with_capacity(program.steps.len()),
            buffers: allocate(program, memory)?,
            consts: Vec::new(),
            feeds: Vec::new(),
            shared: Vec::new(),
            wanted: Vec::new(),
            outputs: outputs.len(),
            updated: Vec::new(),
            in_place: Vec::new(),
            update_buffers: Vec::new(),
            nan_guard: None,
            filters: FilterCache::default(),
            feed_ptrs: Vec::new(),
            const_ptrs: Vec::new(),
            buffer_ptrs: Vec::new(),
            bindings: bindings.clone(),
        };
        let plan_bug = |msg: String| ExecError { op: Some("plan".into()), loc: None, msg };
        for &id in inputs {
            let ty = g.ty(id);
            let shape = resolve(&ty.shape, bindings).map_err(input_error)?;
            p.feeds.push((g.leaf_name(id).unwrap_or_default().to_string(), ty.dtype, shape));
        }
        let operand = |p: &mut Prepared, id: NodeId| -> Result<Operand, ExecError> {
            let ty = g.ty(id);
            let shape = resolve(&ty.shape, bindings).map_err(plan_bug)?;
            let src = match &g.node(id).op {
                Op::Input { .. } => Source::Feed(
                    inputs.iter().position(|&i| i == id).ok_or_else(|| plan_bug(format!("{id} is not an input")))?,
                ),
                Op::Shared { name } => match p.shared.iter().position(|s| s.0 == id) {
                    Some(i) => Source::Shared(i),
                    None => {
                        p.shared.push((id, name.to_string(), ty.dtype, shape.clone()));
                        Source::Shared(p.shared.len() - 1)
                    }
                },
                Op::Const { value } => {
                    p.consts.push(standard(value.value()).into_owned());
                    Source::Const(p.consts.len() - 1)
                }
                _ => Source::Buffer(*memory.buffer_of.get(&id).ok_or_else(|| plan_bug(format!("{id} has no buffer")))?),
            };
            Ok(Operand { src, dtype: ty.dtype, shape })
        };
        for (s, step) in program.steps.iter().enumerate() {
            let action = match &step.kind {
                StepKind::Kernel(k) => {
                    let launch = kernels.launch(*k, bindings).map_err(|msg| program.step_error(s, msg))?;
                    let ins =
                        step.inputs.iter().map(|&i| operand(&mut p, i).map(|o| o.src)).collect::<Result<_, _>>()?;
                    let mut outs = Vec::with_capacity(step.outputs.len());
                    for &o in &step.outputs {
                        match operand(&mut p, o)?.src {
                            Source::Buffer(b) => outs.push(Target::Buffer(b)),
                            other => return Err(plan_bug(format!("kernel k{k} writes {other:?}"))),
                        }
                    }
                    Action::Kernel { k: *k, launch, inputs: ins, outputs: outs }
                }
                StepKind::Op(id) => {
                    let node = g.node(*id);
                    let ins: Vec<Operand> =
                        step.inputs.iter().map(|&i| operand(&mut p, i)).collect::<Result<_, _>>()?;
                    let out = operand(&mut p, *id)?;
                    let ranks: Vec<usize> = ins.iter().map(|o| o.shape.len()).collect();
                    let same_dtype = ins.iter().all(|o| o.dtype == out.dtype);
                    match &node.op {
                        Op::Reshape { .. } => Action::Copy { from: ins[0].clone(), to: out },
                        op if same_dtype && ins.len() <= MAX_LIBRARY_INPUTS && is_native(op, out.dtype, &ranks) => {
                            Action::Native { op: op.clone(), inputs: ins, out }
                        }
                        op => Action::Fallback { op: op.clone(), inputs: ins, out },
                    }
                }
            };
            let (label, loc) = program.step_origin(s);
            p.steps.push(Prepped { action, step: s, writes: step.outputs.clone(), label, loc });
        }
        if std::env::var("RHEA_NO_EPILOGUE").is_err() {
            p.fuse_epilogues(kernels);
        }
        for &w in outputs.iter().chain(updates.iter().map(|(_, v)| v)) {
            let o = operand(&mut p, w)?;
            p.wanted.push(o);
        }
        for &(s, _) in updates {
            match operand(&mut p, s)?.src {
                Source::Shared(i) => p.updated.push(i),
                other => return Err(plan_bug(format!("update of {s}, which is {other:?}"))),
            }
        }
        p.in_place = vec![false; updates.len()];
        p.update_buffers = updates.iter().map(|(_, v)| memory.buffer_of.get(v).copied()).collect();
        p.update_in_place(kernels, memory, updates);
        p.const_ptrs = p.consts.iter().map(data_ptr).collect();
        p.buffer_ptrs = p.buffers.iter_mut().map(|b| b.as_mut_ptr() as *mut u8).collect();
        Ok(p)
    }

    /// Merges each 2-d matrix product with the flat kernel right after it
    /// when that kernel covers the product's output pointwise. The merged
    /// step keeps the product's place; the kernel's becomes empty, so step
    /// numbers (and profiles) stay those of the program.
    fn fuse_epilogues(&mut self, kernels: &CpuKernels) {
        for s in 0..self.steps.len().saturating_sub(1) {
            let (head, tail) = self.steps.split_at_mut(s + 1);
            let (Action::Native { op, out, inputs: product_inputs }, Action::Kernel { k, launch, inputs, outputs }) =
                (&head[s].action, &tail[0].action)
            else {
                continue;
            };
            // The plan may give the kernel a buffer that the product's inputs
            // freed; blocks still being multiplied would read it overwritten.
            let clobbers = outputs
                .iter()
                .any(|&t| product_inputs.iter().any(|i| matches!(t, Target::Buffer(b) if i.src == Source::Buffer(b))));
            let product = matches!(op, Op::Gemm { .. } | Op::Dot) && out.shape.len() == 2;
            let covers = launch.outputs.iter().all(|o| o.shape == out.shape)
                && launch.input_shapes.iter().all(|sh| sh == &out.shape || sh.iter().all(|&d| d == 1));
            let reads = inputs.iter().any(|&i| Some(i) == buffer_of(out).ok().map(Source::Buffer));
            if !(product && kernels.is_flat(*k) && covers && reads) || clobbers {
                continue;
            }
            let kernel = std::mem::replace(&mut tail[0].action, Action::Done);
            let native = std::mem::replace(&mut head[s].action, Action::Done);
            let (Action::Native { op, inputs, out }, Action::Kernel { k, launch, inputs: kernel_inputs, outputs }) =
                (native, kernel)
            else {
                unreachable!("matched above")
            };
            let writes = std::mem::take(&mut tail[0].writes);
            head[s].writes.extend(writes);
            head[s].label = format!("{} + kernel k{k}", head[s].label);
            head[s].action =
                Action::GemmEpilogue { op, inputs, out, k, launch, kernel_inputs, kernel_outputs: outputs };
        }
    }

    /// Undoes [`Prepared::fuse_epilogues`]: each product and its kernel are
    /// two steps again, the kernel in the place it left empty.
    fn split_epilogues(&mut self) {
        for s in 0..self.steps.len().saturating_sub(1) {
            if !matches!(self.steps[s].action, Action::GemmEpilogue { .. }) {
                continue;
            }
            let Action::GemmEpilogue { op, inputs, out, k, launch, kernel_inputs, kernel_outputs } =
                std::mem::replace(&mut self.steps[s].action, Action::Done)
            else {
                unreachable!("matched above")
            };
            self.steps[s].action = Action::Native { op, inputs, out };
            let product_writes = self.steps[s].writes.len() - kernel_outputs.len();
            let kernel_writes = self.steps[s].writes.split_off(product_writes);
            if let Some((product, _)) = self.steps[s].label.split_once(" + kernel k") {
                self.steps[s].label = product.to_string();
            }
            let next = &mut self.steps[s + 1];
            next.action = Action::Kernel { k, launch, inputs: kernel_inputs, outputs: kernel_outputs };
            next.writes = kernel_writes;
        }
    }

    /// Lets each update's kernel write straight into its shared variable
    /// (no copy after the call) where that is invisible: the kernel reads
    /// the variable's old value only at the point it writes (or not at
    /// all), nothing after it reads the old value or the new one, the new
    /// value is not also an output, and no step from there on can fail (so
    /// a failed call still changes nothing).
    fn update_in_place(&mut self, kernels: &CpuKernels, memory: &MemoryPlan, updates: &[(NodeId, NodeId)]) {
        for (j, &(_, value)) in updates.iter().enumerate() {
            let shared = self.updated[j];
            let Some(&buffer) = memory.buffer_of.get(&value) else { continue };
            let Some(t) = self.steps.iter().position(|st| st.writes.contains(&value)) else { continue };
            let (k, launch, inputs) = match &self.steps[t].action {
                Action::Kernel { k, launch, inputs, .. } => (k, launch, inputs),
                // The product's blocks must not read what the epilogue overwrites.
                Action::GemmEpilogue { k, launch, kernel_inputs, inputs, .. }
                    if inputs.iter().all(|o| o.src != Source::Shared(shared)) =>
                {
                    (k, launch, kernel_inputs)
                }
                _ => continue,
            };
            let kernel = kernels.kernel(*k);
            let domain = &kernel.domain;
            let reads_pointwise = inputs
                .iter()
                .zip(&kernel.inputs)
                .filter(|(src, _)| **src == Source::Shared(shared))
                .all(|(_, spec)| spec.is_pointwise(domain));
            let writes_whole = launch.outputs.iter().all(|o| o.combine.is_none());
            let reads = |a: &Action, src: Source| match a {
                Action::Kernel { inputs, .. } => inputs.contains(&src),
                Action::GemmEpilogue { inputs, kernel_inputs, .. } => {
                    kernel_inputs.contains(&src) || inputs.iter().any(|o| o.src == src)
                }
                Action::Native { inputs, .. } | Action::Fallback { inputs, .. } => inputs.iter().any(|o| o.src == src),
                Action::Copy { from, .. } => from.src == src,
                Action::Done => false,
            };
            let later = &self.steps[t + 1..];
            let read_later = later
                .iter()
                .any(|st| reads(&st.action, Source::Shared(shared)) || reads(&st.action, Source::Buffer(buffer)));
            let wanted_elsewhere = self.wanted.iter().enumerate().any(|(i, o)| {
                (o.src == Source::Shared(shared)) || (o.src == Source::Buffer(buffer) && i != self.outputs + j)
            });
            let fallible_later = self.steps[t..].iter().any(|st| matches!(st.action, Action::Fallback { .. }));
            if !reads_pointwise || !writes_whole || read_later || wanted_elsewhere || fallible_later {
                continue;
            }
            if let Action::Kernel { outputs, .. } | Action::GemmEpilogue { kernel_outputs: outputs, .. } =
                &mut self.steps[t].action
            {
                for o in outputs.iter_mut() {
                    if *o == Target::Buffer(buffer) {
                        *o = Target::Shared(shared);
                    }
                }
            }
            self.in_place[j] = true;
        }
    }

    /// Checks every step's float outputs for NaN and infinities, stopping
    /// the call at the first step that made one (Theano's NanGuardMode).
    /// Updates are then all written after the last step, so that a call
    /// the guard stops changes nothing.
    ///
    /// The guard replays a failing step's ops on its inputs to name the op
    /// that made the value, so every step's inputs must survive it: plan
    /// the memory without in-place reuse (`rhea_opt::memory_plan_with`),
    /// and products and their epilogue kernels run as two steps again.
    pub fn with_nan_guard(mut self, check: rhea_opt::NanCheck) -> Prepared {
        self.nan_guard = Some(check);
        self.split_epilogues();
        for (j, in_place) in self.in_place.iter_mut().enumerate() {
            let (Some(buffer), true) = (self.update_buffers[j], *in_place) else { continue };
            let shared = Target::Shared(self.updated[j]);
            for step in &mut self.steps {
                if let Action::Kernel { outputs, .. } | Action::GemmEpilogue { kernel_outputs: outputs, .. } =
                    &mut step.action
                {
                    outputs.iter_mut().filter(|t| **t == shared).for_each(|t| *t = Target::Buffer(buffer));
                }
            }
            *in_place = false;
        }
        self
    }

    /// Keeps transformed convolution filters in `cache`, which may be
    /// shared with the other plans of the same program (each plan has its
    /// own otherwise).
    pub fn with_filter_cache(mut self, cache: FilterCache) -> Prepared {
        self.filters = cache;
        self
    }

    /// How many updates are written in place by their kernels.
    pub fn updates_in_place(&self) -> usize {
        self.in_place.iter().filter(|&&b| b).count()
    }

    /// The number of steps (for profiles).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True if there are no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Step `s`'s label: `kernel k3`, `gemm`, ...
    pub fn label(&self, s: usize) -> &str {
        &self.steps[s].label
    }

    /// Runs every step, writes every update into its shared variable (all
    /// after the last step, or in place where that is invisible), and
    /// returns the outputs. `shared` gives each shared variable's storage;
    /// it must stay valid, and be touched by nothing else, for the call.
    /// With `times`, each step's wall time is added to its slot.
    pub fn run(
        &mut self,
        kernels: &CpuKernels,
        feeds: &[Value],
        shared: &[SharedSlot],
        fallback: Fallback,
        times: Option<&mut [Duration]>,
    ) -> Result<Vec<Value>, ExecError> {
        let copies = self.check_feeds(feeds)?;
        self.check_shared(shared)?;
        let mut feed_ptrs = std::mem::take(&mut self.feed_ptrs);
        feed_ptrs.clear();
        feed_ptrs.extend(
            feeds.iter().enumerate().map(|(i, v)| data_ptr(copies.get(i).and_then(Option::as_ref).unwrap_or(v))),
        );
        let result = self.run_steps(kernels, &feed_ptrs, shared, fallback, times);
        self.feed_ptrs = feed_ptrs;
        result
    }

    /// The steps, on checked inputs.
    fn run_steps(
        &mut self,
        kernels: &CpuKernels,
        feed_ptrs: &[*const u8],
        slots: &[SharedSlot],
        fallback: Fallback,
        mut times: Option<&mut [Duration]>,
    ) -> Result<Vec<Value>, ExecError> {
        // The constants and buffers never move once prepared: their
        // pointers were taken then.
        let (consts, buffers) = (&self.const_ptrs, &self.buffer_ptrs);
        let ptr = |s: Source| -> *const u8 {
            match s {
                Source::Feed(i) => feed_ptrs[i],
                Source::Shared(i) => slots[i].ptr,
                Source::Const(i) => consts[i],
                Source::Buffer(b) => buffers[b],
            }
        };
        let target = |t: Target| -> *mut u8 {
            match t {
                Target::Buffer(b) => buffers[b],
                Target::Shared(i) => slots[i].ptr,
            }
        };
        let mut in_ptrs: Vec<*const u8> = Vec::with_capacity(16);
        let mut out_ptrs: Vec<*mut u8> = Vec::with_capacity(8);
        for (s, step) in self.steps.iter().enumerate() {
            let started = times.as_ref().map(|_| Instant::now());
            let fail = |msg: String| ExecError { op: Some(step.label.clone()), loc: step.loc.clone(), msg };
            match &step.action {
                Action::Kernel { k, launch, inputs, outputs } => {
                    in_ptrs.clear();
                    in_ptrs.extend(inputs.iter().map(|&i| ptr(i)));
                    out_ptrs.clear();
                    out_ptrs.extend(outputs.iter().map(|&t| target(t)));
                    // SAFETY: every pointer is to a live buffer of the dtype and
                    // shape the launch was made for (the plan sized the buffers,
                    // inputs and shared variables were checked above), and an
                    // output only overlaps an input the kernel reads pointwise
                    // (the memory plan's in-place rule, `update_in_place`).
                    unsafe { kernels.call(*k, launch, &in_ptrs, &out_ptrs) };
                }
                Action::Native { op, inputs, out } => {
                    let out_ptr = buffers[buffer_of(out).map_err(fail)?];
                    let stable = self.stable_weights(op, inputs, slots);
                    let stable = stable.as_ref();
                    // SAFETY: as above; the output buffer is not an input of
                    // a library step.
                    unsafe {
                        match out.dtype {
                            DType::F32 => native::<f32>(op, inputs, out, out_ptr, &ptr, None, stable),
                            _ => native::<f64>(op, inputs, out, out_ptr, &ptr, None, stable),
                        }
                    }
                    .map_err(fail)?;
                }
                Action::Done => {}
                Action::GemmEpilogue { op, inputs, out, k, launch, kernel_inputs, kernel_outputs } => {
                    let out_ptr = buffers[buffer_of(out).map_err(fail)?];
                    in_ptrs.clear();
                    in_ptrs.extend(kernel_inputs.iter().map(|&i| ptr(i)));
                    out_ptrs.clear();
                    out_ptrs.extend(kernel_outputs.iter().map(|&t| target(t)));
                    let (ins, outs) = (SendPtrs(&in_ptrs), SendPtrs(&out_ptrs));
                    let n = out.shape[1];
                    let epilogue = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
                        // SAFETY: as for the kernel step this was: the kernel
                        // reads the product's output pointwise, and each
                        // block of it is complete when this runs.
                        let call = |range| unsafe { kernels.call_range(*k, launch, ins.get(), outs.get(), range) };
                        if cols == (0..n) {
                            // Whole rows are one range of the output.
                            call(rows.start * n..rows.end * n);
                        } else {
                            rows.for_each(|r| call(r * n + cols.start..r * n + cols.end));
                        }
                    };
                    // SAFETY: as for a native step.
                    unsafe {
                        match out.dtype {
                            DType::F32 => native::<f32>(op, inputs, out, out_ptr, &ptr, Some(&epilogue), None),
                            _ => native::<f64>(op, inputs, out, out_ptr, &ptr, Some(&epilogue), None),
                        }
                    }
                    .map_err(fail)?;
                }
                Action::Copy { from, to } => {
                    let to = buffers[buffer_of(to).map_err(fail)?];
                    // SAFETY: both hold `from.len()` elements of its dtype; a
                    // reshape's output buffer is never its input's.
                    unsafe { std::ptr::copy_nonoverlapping(ptr(from.src), to, from.len() * from.dtype.size_bytes()) };
                }
                Action::Fallback { op, inputs, out } => {
                    // SAFETY: the pointers are live buffers of these operands.
                    let values: Vec<Value> =
                        inputs.iter().map(|o| unsafe { value_at(ptr(o.src), o.dtype, &o.shape) }).collect();
                    let refs: Vec<&Value> = values.iter().collect();
                    let v = fallback(op, &refs, &self.bindings).map_err(fail)?;
                    if v.dtype() != out.dtype || v.shape() != out.shape.as_slice() {
                        return Err(fail(format!(
                            "gave {}{:?} where {}{:?} was planned",
                            v.dtype(),
                            v.shape(),
                            out.dtype,
                            out.shape
                        )));
                    }
                    let to = buffers[buffer_of(out).map_err(fail)?];
                    let v = standard(&v);
                    // SAFETY: checked to be the planned size above.
                    unsafe { std::ptr::copy_nonoverlapping(data_ptr(&v), to, out.len() * out.dtype.size_bytes()) };
                }
            }
            if let (Some(t), Some(started)) = (times.as_deref_mut(), started) {
                t[s] += started.elapsed();
            }
            if let Some(check) = &self.nan_guard {
                // The guard's message names the op and its line itself.
                self.guard(check, kernels, step, &ptr, &target).map_err(|msg| ExecError {
                    op: None,
                    loc: None,
                    msg,
                })?;
            }
        }
        // SAFETY: each wanted operand's pointer is live and sized for it.
        let outputs =
            self.wanted[..self.outputs].iter().map(|o| unsafe { value_at(ptr(o.src), o.dtype, &o.shape) }).collect();
        // Update values outside the buffers (another shared variable, an
        // input) are read before any update lands.
        let updates = &self.wanted[self.outputs..];
        let staged: Vec<Option<Value>> = if updates.iter().all(|o| matches!(o.src, Source::Buffer(_))) {
            Vec::new()
        } else {
            updates
                .iter()
                .map(|o| match o.src {
                    Source::Buffer(_) => None,
                    // SAFETY: as above.
                    src => Some(unsafe { value_at(ptr(src), o.dtype, &o.shape) }),
                })
                .collect()
        };
        for (j, o) in updates.iter().enumerate() {
            if self.in_place[j] {
                continue;
            }
            let src = match staged.get(j).and_then(Option::as_ref) {
                Some(v) => data_ptr(v),
                None => ptr(o.src),
            };
            let slot = slots[self.updated[j]];
            // SAFETY: the slot was checked to hold `o.len()` elements of
            // `o.dtype`, and the value's storage is another allocation.
            unsafe { std::ptr::copy_nonoverlapping(src, slot.ptr, o.len() * o.dtype.size_bytes()) };
        }
        Ok(outputs)
    }

    /// A convolution's weights that stay as they are between calls: a
    /// shared variable this call only reads.
    fn stable_weights(&self, op: &Op, inputs: &[Operand], slots: &[SharedSlot]) -> Option<Stable<'_>> {
        if !matches!(op, Op::Conv2d(_) | Op::Conv2dInputGrad(_)) {
            return None;
        }
        let Source::Shared(i) = inputs.get(1)?.src else { return None };
        Some(Stable { cache: &self.filters, node: self.shared[i].0, version: slots[i].version? })
    }

    /// Checks each input's dtype and shape; non-contiguous ones are copied
    /// (`None`: used as it is).
    fn check_feeds(&self, feeds: &[Value]) -> Result<Vec<Option<Value>>, ExecError> {
        if feeds.len() != self.feeds.len() {
            return Err(input_error(format!("expected {} inputs, got {}", self.feeds.len(), feeds.len())));
        }
        let mut copies = Vec::new();
        for (i, (v, (name, dtype, shape))) in feeds.iter().zip(&self.feeds).enumerate() {
            if v.dtype() != *dtype || v.shape() != shape.as_slice() {
                return Err(input_error(format!(
                    "input {name:?}: expected {dtype}{shape:?}, got {}{:?}",
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

    /// Checks each shared variable's storage against its type.
    fn check_shared(&self, slots: &[SharedSlot]) -> Result<(), ExecError> {
        if slots.len() != self.shared.len() {
            return Err(input_error(format!("expected {} shared variables, got {}", self.shared.len(), slots.len())));
        }
        for (slot, (_, name, dtype, shape)) in slots.iter().zip(&self.shared) {
            let len: usize = shape.iter().product();
            if slot.dtype != *dtype || slot.len != len {
                return Err(input_error(format!(
                    "shared variable {name:?}: expected {dtype}{shape:?}, got {} elements of {}",
                    slot.len, slot.dtype
                )));
            }
        }
        Ok(())
    }

    /// The shared variables a call reads, in the order [`Prepared::run`]
    /// takes their slots.
    pub fn shared_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.shared.iter().map(|(id, ..)| *id)
    }
}

/// The memory plan's buffers, zeroed; a buffer that cannot be allocated is
/// an error naming the values it was planned for.
fn allocate(program: &Program, memory: &MemoryPlan) -> Result<Vec<Vec<u64>>, ExecError> {
    let mut buffers = Vec::with_capacity(memory.buffer_bytes.len());
    for (b, &bytes) in memory.buffer_bytes.iter().enumerate() {
        let mut buffer: Vec<u64> = Vec::new();
        if buffer.try_reserve_exact(bytes.div_ceil(8)).is_err() {
            let holder = memory.buffer_of.iter().filter(|(_, x)| **x == b).map(|(&id, _)| id).min();
            return Err(ExecError {
                op: None,
                loc: holder.and_then(|id| program.graph.node(id).loc.clone()),
                msg: format!("out of memory: cannot allocate {}", memory.describe_buffer(&program.graph, b)),
            });
        }
        buffer.resize(bytes.div_ceil(8), 0);
        buffers.push(buffer);
    }
    Ok(buffers)
}

fn buffer_of(o: &Operand) -> Result<usize, String> {
    match o.src {
        Source::Buffer(b) => Ok(b),
        other => Err(format!("the plan writes into {other:?}")),
    }
}

impl Prepared {
    /// The NaN guard's check of one step: the first NaN or infinity among
    /// its float outputs, named with the value, the element, and the
    /// statistics of the step's inputs.
    fn guard(
        &self,
        check: &rhea_opt::NanCheck,
        kernels: &CpuKernels,
        step: &Prepped,
        ptr: &dyn Fn(Source) -> *const u8,
        target: &dyn Fn(Target) -> *mut u8,
    ) -> Result<(), String> {
        // (where, dtype, shape) of each output, and of each input.
        let mut outs: Vec<(*const u8, DType, &[usize])> = Vec::new();
        let mut ins: Vec<(*const u8, DType, &[usize])> = Vec::new();
        fn operand<'o>(ptr: &dyn Fn(Source) -> *const u8, o: &'o Operand) -> (*const u8, DType, &'o [usize]) {
            (ptr(o.src), o.dtype, o.shape.as_slice())
        }
        match &step.action {
            Action::Kernel { launch, inputs, outputs, k } => {
                outs.extend(
                    outputs
                        .iter()
                        .zip(&launch.outputs)
                        .map(|(t, o)| (target(*t) as *const u8, o.dtype, o.shape.as_slice())),
                );
                let specs = &kernels.kernel(*k).inputs;
                for ((src, shape), spec) in inputs.iter().zip(&launch.input_shapes).zip(specs) {
                    ins.push((ptr(*src), spec.dtype, shape.as_slice()));
                }
            }
            Action::Native { inputs, out, .. } | Action::Fallback { inputs, out, .. } => {
                outs.push(operand(ptr, out));
                ins.extend(inputs.iter().map(|o| operand(ptr, o)));
            }
            Action::Copy { from, to } => {
                outs.push(operand(ptr, to));
                ins.push(operand(ptr, from));
            }
            // A guarded plan has its epilogues split (`with_nan_guard`).
            Action::GemmEpilogue { .. } | Action::Done => {}
        }
        // SAFETY (both): each pointer holds its dtype and shape, as run.
        let value = |&(p, dtype, shape): &(*const u8, DType, &[usize])| unsafe { value_at(p, dtype, shape) };
        for (o, out) in outs.iter().enumerate() {
            if !out.1.is_float() {
                continue;
            }
            let v = value(out);
            if v.to_f64_vec().iter().all(|x| x.is_finite()) {
                continue;
            }
            let inputs: Vec<Value> = ins.iter().map(value).collect();
            let Some(&node) = step.writes.get(o).or(step.writes.last()) else { continue };
            if let Some(msg) = check(step.step, node, &v, &inputs.iter().collect::<Vec<_>>()) {
                return Err(msg);
            }
        }
        Ok(())
    }
}

/// The most inputs a native library op takes (a GEMM's A, B and C).
const MAX_LIBRARY_INPUTS: usize = 3;

/// Runs a native library op on raw operands; a matrix product with an
/// `epilogue` runs it on each block of its output (see
/// [`crate::blas::gemm_with_epilogue`]), a convolution with `stable`
/// weights keeps their transform.
///
/// # Safety
/// Every operand's pointer must hold its dtype and shape; `out_ptr` must not
/// overlap any input.
unsafe fn native<T: crate::blas::Float>(
    op: &Op,
    inputs: &[Operand],
    out: &Operand,
    out_ptr: *mut u8,
    ptr: &dyn Fn(Source) -> *const u8,
    epilogue: Option<&(dyn Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync)>,
    stable: Option<&Stable>,
) -> Result<(), String> {
    // SAFETY: as the caller promises.
    let mut slices: [(&[T], &[usize]); MAX_LIBRARY_INPUTS] = [(&[], &[]); MAX_LIBRARY_INPUTS];
    for (slot, o) in slices.iter_mut().zip(inputs) {
        *slot = (unsafe { std::slice::from_raw_parts(ptr(o.src) as *const T, o.len()) }, o.shape.as_slice());
    }
    let slices = &slices[..inputs.len().min(MAX_LIBRARY_INPUTS)];
    let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr as *mut T, out.len()) };
    let Some(epilogue) = epilogue else {
        return run_native(op, slices, &out.shape, dst, stable);
    };
    let product = crate::blas::Product::of(op).ok_or_else(|| format!("{} is not a matrix product", op.name()))?;
    crate::blas::gemm_with_epilogue(dst, slices[0], slices[1], slices.get(2).copied(), product, epilogue)
}

/// Pointers shared by the tasks of a product with an epilogue.
struct SendPtrs<'a, T>(&'a [T]);
impl<T> SendPtrs<'_, T> {
    fn get(&self) -> &[T] {
        self.0
    }
}
// SAFETY: the kernels called through them write disjoint blocks.
unsafe impl<T> Sync for SendPtrs<'_, T> {}

/// A copy of the value of `dtype` and `shape` at `ptr`.
///
/// # Safety
/// `ptr` must hold that many elements of `dtype`.
unsafe fn value_at(ptr: *const u8, dtype: DType, shape: &[usize]) -> Value {
    let n: usize = shape.iter().product();
    let sh = IxDyn(shape);
    macro_rules! copy {
        ($t:ty, $variant:ident) => {{
            // SAFETY: as the caller promises.
            let data = unsafe { std::slice::from_raw_parts(ptr as *const $t, n) }.to_vec();
            Value::$variant(ArrayD::from_shape_vec(sh, data).expect("length matches shape"))
        }};
    }
    match dtype {
        DType::F32 => copy!(f32, F32),
        DType::F64 => copy!(f64, F64),
        DType::I32 => copy!(i32, I32),
        DType::I64 => copy!(i64, I64),
        // SAFETY: kernels store bools as the bytes 0 and 1.
        DType::Bool => copy!(bool, Bool),
    }
}
