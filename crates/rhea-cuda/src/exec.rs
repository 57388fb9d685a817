//! The CUDA executor. A program is prepared once per set of input shapes:
//! its kernels are lowered to one PTX module at those sizes and loaded, the
//! memory plan's buffers are placed in one device arena, and every step's
//! operands are resolved to a device address. A call uploads the inputs,
//! launches the steps on the default stream, and downloads the outputs.
//!
//! Shared variables live on the device between calls ([`SharedStore`]);
//! one is uploaded again only when its host value has changed since (a
//! version number says so). Update values are copied into the device
//! copies after the last step, so a call that fails changes nothing, and
//! are not downloaded: the caller gets a fetch for each, which the graph
//! runs only when someone else reads the value. Only inputs and outputs
//! cross the bus on a training step.
//!
//! Library ops (products, convolutions, pooling) run as the sequences of
//! kernels and cuBLAS calls [`crate::library`] plans. Steps with no GPU
//! implementation (kernels using `sin`/`cos`, other library ops) run on
//! the host through the injected fallback, their inputs and outputs
//! crossing the bus.

use std::collections::HashMap;
use std::sync::Arc;

use rhea_graph::{DType, NodeId, Op, Value};
use rhea_kernel::{Bindings, resolve};
use rhea_opt::{ExecError, MemoryPlan, Program, StepKind};

use crate::device::{CudaError, Gpu};
use crate::driver::{Driver, FunctionId, GraphId, ModuleId, Ptr};
use crate::library::{At, Call, Place, SCRATCH_BUDGET};
use crate::memory::{ALIGN, DeviceBuffer, copy, download, upload, value_bytes};
use crate::ptx::{Lowered, lower_kernel, module};

/// Runs an op on the host (the interpreter's implementation).
pub type Fallback<'f> = &'f dyn Fn(&Op, &[&Value], &Bindings) -> Result<Value, String>;

pub use rhea_opt::NanCheck;

/// Where a step finds a value.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// The caller's input `i`.
    Feed(usize),
    /// Shared variable `i` of [`Prepared::shared_nodes`].
    Shared(usize),
    /// Constant `i`.
    Const(usize),
    /// This many bytes into the arena.
    Arena(usize),
    /// The plan's scratch buffer (a two-stage reduction's partials).
    Scratch,
}

/// A value as a step sees it: where, and its type at this plan's sizes.
#[derive(Clone, Debug)]
struct Operand {
    source: Source,
    dtype: DType,
    shape: Vec<usize>,
}

impl Operand {
    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_bytes()
    }
}

/// How one step runs.
enum Run {
    /// A PTX kernel: entry `entry` of the plan's modules.
    Kernel { entry: usize, grid: u32, block: u32, args: Vec<Operand> },
    /// A kernel evaluated on the host (no PTX lowering).
    HostKernel { kernel: usize, inputs: Vec<Operand>, outputs: Vec<Operand> },
    /// A library op as kernel launches (entry `base + kernel`) and cuBLAS
    /// calls, or on the host (through `inputs` and `output`) if the driver
    /// rejected one of its kernels.
    Calls { node: NodeId, inputs: Vec<Operand>, output: Operand, base: usize, calls: Vec<Call> },
    /// Same bytes, another shape.
    Copy { src: Operand, dst: Operand },
    /// A library op on the host.
    HostOp { node: NodeId, inputs: Vec<Operand>, output: Operand },
}

/// A kernel as loaded: its entry, and the entry launched after it (a
/// two-stage reduction's second stage) with its grid and block.
#[derive(Clone, Copy, Debug)]
struct Loaded {
    main: FunctionId,
    finish: Option<(FunctionId, u32, u32)>,
}

/// A program ready to run at one set of input sizes.
pub struct Prepared {
    driver: Arc<dyn Driver>,
    modules: Vec<ModuleId>,
    /// The entries of the modules, by index (`None` where the driver
    /// rejected one: no step launches those).
    functions: Vec<Option<Loaded>>,
    steps: Vec<(usize, Run)>,
    arena: DeviceBuffer,
    /// Columns for convolutions (`None`: no step needs any).
    scratch: Option<DeviceBuffer>,
    feeds: Vec<(Operand, DeviceBuffer)>,
    consts: Vec<DeviceBuffer>,
    shared: Vec<(NodeId, Operand)>,
    outputs: Vec<Operand>,
    /// (shared variable index, its new value)
    updates: Vec<(usize, Operand)>,
    bindings: Bindings,
    /// The NaN guard: check every step's float outputs.
    nan_guard: Option<NanCheck>,
    /// Whether the steps run as one captured CUDA graph.
    capture: Capture,
}

/// A plan's steps as a CUDA graph ([`Prepared::with_cuda_graph`]).
enum Capture {
    /// Step by step.
    Off,
    /// To be captured at the next call.
    Wanted,
    /// Captured, with the shared variables' device addresses it was
    /// captured with (a graph holds addresses: new ones need a new graph),
    /// and whether it also copies the updates into them.
    Ready { graph: GraphId, shared: Vec<Ptr>, updates: bool },
    /// Not possible, and why.
    Refused(String),
}

/// Shared variables' device copies, kept across calls and plans, and who
/// holds them (the owner named in [`rhea_graph::Graph::set_shared_pending`]).
pub struct SharedStore {
    buffers: HashMap<NodeId, (Arc<DeviceBuffer>, u64)>,
    owner: u64,
}

impl Default for SharedStore {
    fn default() -> SharedStore {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SharedStore { buffers: HashMap::new(), owner: NEXT.fetch_add(1, Ordering::Relaxed) }
    }
}

impl SharedStore {
    /// This store's identity as the holder of shared values.
    pub fn owner(&self) -> u64 {
        self.owner
    }

    /// Records that the device copy of `id` equals host version `version`
    /// (after the caller stored a call's update on the host).
    pub fn mark(&mut self, id: NodeId, version: u64) {
        if let Some(entry) = self.buffers.get_mut(&id) {
            entry.1 = version;
        }
    }
}

fn fail(step: Option<(&Program, usize)>, msg: impl ToString) -> ExecError {
    match step {
        Some((p, s)) => p.step_error(s, msg),
        None => ExecError { op: None, loc: None, msg: msg.to_string() },
    }
}

fn cuda(e: CudaError) -> ExecError {
    fail(None, e)
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// What the arena holds, for an out-of-memory error: the buffer count and
/// the value in the largest.
fn arena_contents(program: &Program, memory: &MemoryPlan) -> String {
    let n = memory.buffer_bytes.len();
    let largest = (0..n).max_by_key(|&b| memory.buffer_bytes[b]);
    let holder = largest.and_then(|b| {
        let mut ids: Vec<NodeId> = memory.buffer_of.iter().filter(|&(_, &x)| x == b).map(|(&id, _)| id).collect();
        ids.sort();
        ids.first().map(|&id| (b, id))
    });
    match holder {
        Some((b, id)) => {
            let node = program.graph.node(id);
            let at = node.loc.as_ref().map(|l| format!(", built at {l}")).unwrap_or_default();
            format!(
                "{n} intermediate buffers (the largest, {} bytes, holds {id}: {}{at})",
                memory.buffer_bytes[b],
                node.op.name()
            )
        }
        None => format!("{n} intermediate buffers"),
    }
}

impl Prepared {
    /// Prepares `program` for the sizes `bindings` gives: lowers and loads
    /// its kernels, allocates its buffers and its inputs' device copies,
    /// uploads its constants.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        program: &Program,
        memory: &MemoryPlan,
        bindings: &Bindings,
        inputs: &[NodeId],
        outputs: &[NodeId],
        updates: &[(NodeId, NodeId)],
    ) -> Result<Prepared, ExecError> {
        gpu.bind().map_err(cuda)?;
        let g = &program.graph;
        let concrete = |id: NodeId| -> Result<(DType, Vec<usize>), ExecError> {
            let ty = g.ty(id);
            Ok((ty.dtype, resolve(&ty.shape, bindings).map_err(|m| fail(None, m))?))
        };
        // The arena: each planned buffer at an aligned offset.
        let mut offsets = Vec::with_capacity(memory.buffer_bytes.len());
        let mut total = 0usize;
        for &b in &memory.buffer_bytes {
            offsets.push(total);
            total = total
                .checked_add(align(b))
                .ok_or_else(|| fail(None, "the plan's buffers overflow the address space"))?;
        }
        let arena = DeviceBuffer::alloc(gpu, total, &arena_contents(program, memory)).map_err(cuda)?;
        let mut feeds = Vec::with_capacity(inputs.len());
        for &id in inputs {
            let (dtype, shape) = concrete(id)?;
            let op = Operand { source: Source::Feed(feeds.len()), dtype, shape };
            let what = format!("input {:?}", g.leaf_name(id).unwrap_or_default());
            let buffer = DeviceBuffer::alloc(gpu, op.bytes(), &what).map_err(cuda)?;
            feeds.push((op, buffer));
        }
        let mut shared: Vec<(NodeId, Operand)> = Vec::new();
        let mut consts: Vec<DeviceBuffer> = Vec::new();
        let mut const_of: HashMap<NodeId, usize> = HashMap::new();
        let mut resolve_node = |id: NodeId| -> Result<Operand, ExecError> {
            let (dtype, shape) = concrete(id)?;
            let source = match &g.node(id).op {
                Op::Input { .. } => {
                    let i = inputs.iter().position(|&x| x == id).ok_or_else(|| {
                        fail(None, format!("the program reads input {id}, which the function does not take"))
                    })?;
                    Source::Feed(i)
                }
                Op::Shared { .. } => match shared.iter().position(|(s, _)| *s == id) {
                    Some(i) => Source::Shared(i),
                    None => {
                        shared
                            .push((id, Operand { source: Source::Shared(shared.len()), dtype, shape: shape.clone() }));
                        Source::Shared(shared.len() - 1)
                    }
                },
                Op::Const { value } => match const_of.get(&id) {
                    Some(&i) => Source::Const(i),
                    None => {
                        let v = value.value();
                        let buffer =
                            DeviceBuffer::alloc(gpu, v.len() * dtype.size_bytes(), "a constant").map_err(cuda)?;
                        upload(&*gpu.driver, buffer.ptr, &value_bytes(v)).map_err(cuda)?;
                        consts.push(buffer);
                        const_of.insert(id, consts.len() - 1);
                        Source::Const(consts.len() - 1)
                    }
                },
                _ => {
                    let b = *memory
                        .buffer_of
                        .get(&id)
                        .ok_or_else(|| fail(None, format!("plan bug: {id} has no buffer")))?;
                    Source::Arena(offsets[b])
                }
            };
            Ok(Operand { source, dtype, shape })
        };
        // Lower every kernel at these sizes; what cannot be lowered runs on the host.
        let mut lowered: Vec<Lowered> = Vec::new();
        let mut scratch = 0usize;
        let budget = crate::library::Budget {
            blas: gpu.driver.has_blas(),
            scratch: gpu.driver.mem_info().map_or(SCRATCH_BUDGET, |(_, total)| (total / 16).min(SCRATCH_BUDGET)),
        };
        let mut plan: Vec<(usize, Run)> = Vec::with_capacity(program.steps.len());
        for (s, step) in program.steps.iter().enumerate() {
            let ins = step.inputs.iter().map(|&i| resolve_node(i)).collect::<Result<Vec<_>, _>>()?;
            let outs = step.outputs.iter().map(|&o| resolve_node(o)).collect::<Result<Vec<_>, _>>()?;
            let run = match &step.kind {
                StepKind::Kernel(k) => {
                    let kernel = &program.fusion.groups[*k].kernel;
                    let dims = resolve(&kernel.domain, bindings).map_err(|m| fail(Some((program, s)), m))?;
                    let shapes: Vec<Vec<usize>> = ins.iter().map(|o| o.shape.clone()).collect();
                    match lower_kernel(kernel, &format!("k{k}"), &dims, &shapes) {
                        Ok(l) => {
                            let (grid, block) = (l.grid, l.block);
                            let partials = (l.scratch > 0).then(|| {
                                scratch = scratch.max(l.scratch);
                                Operand { source: Source::Scratch, dtype: DType::F64, shape: vec![l.scratch / 8] }
                            });
                            lowered.push(l);
                            let args = ins.into_iter().chain(outs).chain(partials).collect();
                            Run::Kernel { entry: lowered.len() - 1, grid, block, args }
                        }
                        Err(_) => Run::HostKernel { kernel: *k, inputs: ins, outputs: outs },
                    }
                }
                StepKind::Op(id) => {
                    let op = &g.node(*id).op;
                    let out =
                        outs.into_iter().next().ok_or_else(|| fail(Some((program, s)), "an op without output"))?;
                    let shapes: Vec<&[usize]> = ins.iter().map(|o| o.shape.as_slice()).collect();
                    let dtypes: Vec<DType> = ins.iter().map(|o| o.dtype).collect();
                    let same_dtype = crate::library::accepts(op, &dtypes, out.dtype);
                    let sequence = same_dtype
                        .then(|| crate::library::plan(op, out.dtype, &shapes, &out.shape, &format!("s{s}"), budget))
                        .flatten();
                    match sequence {
                        Some(seq) => {
                            let base = lowered.len();
                            lowered.extend(seq.kernels);
                            scratch = scratch.max(seq.scratch);
                            Run::Calls { node: *id, inputs: ins, output: out, base, calls: seq.calls }
                        }
                        None if matches!(op, Op::Reshape { .. }) && ins[0].bytes() == out.bytes() => {
                            Run::Copy { src: ins[0].clone(), dst: out }
                        }
                        None => Run::HostOp { node: *id, inputs: ins, output: out },
                    }
                }
            };
            plan.push((s, run));
        }
        let refs: Vec<&Lowered> = lowered.iter().collect();
        let ptx = module(gpu.target, &refs);
        let (modules, functions) = load_kernels(gpu, &ptx, &lowered);
        // What the driver rejected runs on the host.
        for (s, run) in &mut plan {
            match run {
                Run::Kernel { entry, args, .. } if functions[*entry].is_none() => {
                    let StepKind::Kernel(k) = program.steps[*s].kind else { unreachable!("kernel steps") };
                    let mut inputs = std::mem::take(args);
                    let mut outputs = inputs.split_off(program.fusion.groups[k].kernel.inputs.len());
                    outputs.truncate(program.steps[*s].outputs.len());
                    *run = Run::HostKernel { kernel: k, inputs, outputs };
                }
                Run::Calls { node, inputs, output, base, calls }
                    if calls
                        .iter()
                        .any(|c| matches!(c, Call::Launch { kernel, .. } if functions[*base + kernel].is_none())) =>
                {
                    *run = Run::HostOp { node: *node, inputs: std::mem::take(inputs), output: output.clone() };
                }
                _ => {}
            }
        }
        let outputs = outputs.iter().map(|&o| resolve_node(o)).collect::<Result<Vec<_>, _>>()?;
        let mut update_list = Vec::with_capacity(updates.len());
        for &(target, value) in updates {
            let t = resolve_node(target)?;
            let Source::Shared(i) = t.source else {
                return Err(fail(None, format!("update target {target} is not a shared variable")));
            };
            update_list.push((i, resolve_node(value)?));
        }
        let scratch = match scratch {
            0 => None,
            bytes => Some(DeviceBuffer::alloc(gpu, bytes, "convolution columns").map_err(cuda)?),
        };
        Ok(Prepared {
            driver: gpu.driver.clone(),
            modules,
            functions,
            steps: plan,
            arena,
            scratch,
            feeds,
            consts,
            shared,
            outputs,
            updates: update_list,
            bindings: bindings.clone(),
            nan_guard: None,
            capture: Capture::Off,
        })
    }

    /// Runs the steps as one CUDA graph: captured at the next call, then
    /// replayed by every call with one launch instead of one per kernel
    /// (and captured again if a shared variable's device copy moved).
    /// Inputs, shared variables and outputs still cross the bus outside the
    /// graph. Plans with a step on the host cannot be captured; they run
    /// step by step, as do calls with the NaN guard or a profile.
    /// [`Prepared::cuda_graph`] says what happened.
    pub fn with_cuda_graph(mut self, program: &Program) -> Prepared {
        self.capture = Capture::Wanted;
        for (s, run) in &self.steps {
            let what = match run {
                Run::HostKernel { kernel, .. } => format!("kernel k{kernel}"),
                Run::HostOp { node, .. } => format!("{node}: {}", program.graph.node(*node).op.name()),
                _ => continue,
            };
            self.capture = Capture::Refused(format!("step {s} ({what}) runs on the host"));
            break;
        }
        self
    }

    /// With [`Prepared::with_cuda_graph`]: `Ok(true)` once the steps run as
    /// a captured graph, `Ok(false)` before the first call, `Err` with why
    /// they cannot. `None` without it.
    pub fn cuda_graph(&self) -> Option<Result<bool, String>> {
        match &self.capture {
            Capture::Off => None,
            Capture::Wanted => Some(Ok(false)),
            Capture::Ready { .. } => Some(Ok(true)),
            Capture::Refused(why) => Some(Err(why.clone())),
        }
    }

    /// Checks every step's float outputs with `check` as the call goes,
    /// stopping at the first that holds a NaN or an infinity: the GPU is
    /// synchronized and the step's inputs and outputs downloaded after each
    /// step (slow, for debugging). Updates land after the last step, so a
    /// stopped call changes nothing.
    pub fn with_nan_guard(mut self, check: NanCheck) -> Prepared {
        self.nan_guard = Some(check);
        self
    }

    /// A step's operands: what it reads and what it writes.
    fn operands(run: &Run, reads: usize) -> (Vec<&Operand>, Vec<&Operand>) {
        match run {
            // A two-stage reduction's partials (after the outputs) are not checked.
            Run::Kernel { args, .. } => (
                args[..reads].iter().collect(),
                args[reads..].iter().filter(|a| !matches!(a.source, Source::Scratch)).collect(),
            ),
            Run::HostKernel { inputs, outputs, .. } => (inputs.iter().collect(), outputs.iter().collect()),
            Run::Calls { inputs, output, .. } | Run::HostOp { inputs, output, .. } => {
                (inputs.iter().collect(), vec![output])
            }
            Run::Copy { src, dst } => (vec![src], vec![dst]),
        }
    }

    /// The NaN guard after step `s`: its first output holding a NaN or an
    /// infinity, as an error naming the node.
    fn guard(
        &self,
        check: &NanCheck,
        program: &Program,
        s: usize,
        run: &Run,
        store: &SharedStore,
    ) -> Result<(), String> {
        let step = &program.steps[s];
        let (reads, writes) = Self::operands(run, step.inputs.len());
        let mut inputs: Option<Vec<Value>> = None;
        for (o, out) in writes.iter().enumerate() {
            if !out.dtype.is_float() {
                continue;
            }
            let v =
                download(&*self.driver, self.address(out, store), out.dtype, &out.shape).map_err(|e| e.to_string())?;
            if v.to_f64_vec().iter().all(|x| x.is_finite()) {
                continue;
            }
            if inputs.is_none() {
                inputs = Some(self.fetch(reads.iter().copied(), store).map_err(|e| e.to_string())?);
            }
            let refs: Vec<&Value> = inputs.iter().flatten().collect();
            let Some(&node) = step.outputs.get(o).or(step.outputs.last()) else { continue };
            if let Some(msg) = check(s, node, &v, &refs) {
                return Err(msg);
            }
        }
        Ok(())
    }

    /// The shared variables the plan reads or updates, in the order
    /// [`Prepared::run`] takes their host values.
    pub fn shared_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.shared.iter().map(|(id, _)| *id)
    }

    fn address(&self, o: &Operand, store: &SharedStore) -> Ptr {
        match o.source {
            Source::Feed(i) => self.feeds[i].1.ptr,
            Source::Const(i) => self.consts[i].ptr,
            Source::Arena(off) => self.arena.ptr + off as u64,
            Source::Shared(i) => store.buffers.get(&self.shared[i].0).map_or(0, |(b, _)| b.ptr),
            Source::Scratch => self.scratch_ptr(),
        }
    }

    fn scratch_ptr(&self) -> Ptr {
        self.scratch.as_ref().map_or(0, |b| b.ptr)
    }

    /// The address of `at` in a library op's buffers.
    fn place(&self, at: &At, inputs: &[Operand], output: &Operand, store: &SharedStore) -> Ptr {
        let base = match at.place {
            Place::Input(i) => self.address(&inputs[i], store),
            Place::Output => self.address(output, store),
            Place::Scratch => self.scratch_ptr(),
        };
        base + at.offset as u64
    }

    /// Runs the plan on `feeds` (checked against the plan's input types),
    /// with `shared` the host value and version of each of
    /// [`Prepared::shared_nodes`]. Returns the outputs, and for each updated
    /// shared variable, in the order given, a fetch of its new value: the
    /// device copies hold those values, and the caller records them as
    /// pending on the host ([`rhea_graph::Graph::set_shared_pending`]) and
    /// [`SharedStore::mark`]s the versions that gives. With `times` (one
    /// slot per program step), the GPU is synchronized after every step and
    /// each step's wall time added to its slot (a profile; slower).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        gpu: &Gpu,
        program: &Program,
        feeds: &[Value],
        shared: &[(&Value, u64)],
        store: &mut SharedStore,
        fallback: Fallback,
        mut times: Option<&mut [std::time::Duration]>,
    ) -> Result<(Vec<Value>, Vec<rhea_graph::Fetch>), ExecError> {
        gpu.bind().map_err(cuda)?;
        if feeds.len() != self.feeds.len() || shared.len() != self.shared.len() {
            return Err(fail(None, "a call's inputs do not match the prepared plan"));
        }
        for (v, (op, buffer)) in feeds.iter().zip(&self.feeds) {
            if v.dtype() != op.dtype || v.shape() != op.shape.as_slice() {
                return Err(fail(
                    None,
                    format!("input: expected {}{:?}, got {}{:?}", op.dtype, op.shape, v.dtype(), v.shape()),
                ));
            }
            upload(&*gpu.driver, buffer.ptr, &value_bytes(v)).map_err(cuda)?;
        }
        for ((id, op), (value, version)) in self.shared.iter().zip(shared) {
            if value.dtype() != op.dtype || value.shape() != op.shape.as_slice() {
                return Err(fail(None, format!("shared variable {id}: its value changed type")));
            }
            let fresh = store.buffers.get(id).is_some_and(|(_, v)| v == version);
            if !fresh {
                let buffer = match store.buffers.remove(id) {
                    Some((b, _)) => b,
                    None => {
                        Arc::new(DeviceBuffer::alloc(gpu, op.bytes(), &format!("shared variable {id}")).map_err(cuda)?)
                    }
                };
                upload(&*gpu.driver, buffer.ptr, &value_bytes(value)).map_err(cuda)?;
                store.buffers.insert(*id, (buffer, *version));
            }
        }
        let replayed = match times.is_some() || self.nan_guard.is_some() {
            true => None,
            false => self.replay(program, store, fallback)?,
        };
        if replayed.is_none() {
            for (s, run) in &self.steps {
                let at = Some((program, *s));
                let started = times.as_ref().map(|_| std::time::Instant::now());
                self.step(program, *s, run, store, fallback)?;
                if let (Some(t), Some(started)) = (times.as_deref_mut(), started) {
                    self.driver.synchronize().map_err(|e| fail(at, format!("a GPU step failed: {e}")))?;
                    if let Some(slot) = t.get_mut(*s) {
                        *slot += started.elapsed();
                    }
                }
                if let Some(check) = &self.nan_guard {
                    self.driver.synchronize().map_err(|e| fail(at, format!("a GPU step failed: {e}")))?;
                    // The guard's message names the op and its line itself.
                    self.guard(check, program, *s, run, store).map_err(|e| fail(None, e))?;
                }
            }
        }
        self.driver.synchronize().map_err(|e| fail(None, format!("a GPU step failed: {e}")))?;
        let outputs = self.fetch(&self.outputs, store).map_err(cuda)?;
        // An update whose value is another shared variable's old value (a
        // swap) reads it before any shared copy changes. A graph may have
        // made the updates already.
        let updated = replayed == Some(true);
        let staged: Vec<Option<Value>> = self
            .updates
            .iter()
            .map(|(_, v)| match v.source {
                Source::Shared(_) if !updated => {
                    download(&*self.driver, self.address(v, store), v.dtype, &v.shape).map(Some)
                }
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()
            .map_err(cuda)?;
        let mut fetches: Vec<rhea_graph::Fetch> = Vec::with_capacity(self.updates.len());
        for ((i, op), staged) in self.updates.iter().zip(&staged) {
            let (id, target) = &self.shared[*i];
            let dst = self.address(target, store);
            match staged {
                _ if updated => {}
                Some(value) => upload(&*self.driver, dst, &value_bytes(value)).map_err(cuda)?,
                None => self.copy_update(*i, op, store).map_err(cuda)?,
            }
            let buffer = store.buffers.get(id).expect("updated shared variables have device copies").0.clone();
            let (dtype, shape) = (target.dtype, target.shape.clone());
            fetches.push(Arc::new(move || buffer.read(dtype, &shape).map_err(|e| e.to_string())));
        }
        Ok((outputs, fetches))
    }

    /// Runs step `s` (launches are not waited for).
    fn step(
        &self,
        program: &Program,
        s: usize,
        run: &Run,
        store: &SharedStore,
        fallback: Fallback,
    ) -> Result<(), ExecError> {
        let at = Some((program, s));
        match run {
            Run::Kernel { entry, grid, block, args } => {
                let ptrs: Vec<Ptr> = args.iter().map(|a| self.address(a, store)).collect();
                self.launch(*entry, *grid, *block, &ptrs).map_err(|e| fail(at, e))?;
            }
            Run::Calls { inputs, output, base, calls, .. } => {
                for call in calls {
                    let addr = |a: &At| self.place(a, inputs, output, store);
                    match call {
                        Call::Launch { kernel, grid, block, args } => {
                            let ptrs: Vec<Ptr> = args.iter().map(addr).collect();
                            self.launch(base + kernel, *grid, *block, &ptrs).map_err(|e| fail(at, e))?;
                        }
                        Call::Gemm { product, dtype, a, b, c } => {
                            // BLAS's A is our b (see Product::blas).
                            let (a, b, c) = (addr(a), addr(b), addr(c));
                            self.driver.gemm(&product.blas(), *dtype, b, a, c).map_err(|e| fail(at, e))?;
                        }
                    }
                }
            }
            Run::Copy { src, dst } => {
                copy(&*self.driver, self.address(dst, store), self.address(src, store), dst.bytes())
                    .map_err(|e| fail(at, e))?;
            }
            Run::HostKernel { kernel, inputs, outputs } => {
                let values = self.fetch(inputs, store).map_err(|e| fail(at, e))?;
                let refs: Vec<&Value> = values.iter().collect();
                let k = &program.fusion.groups[*kernel].kernel;
                let results = rhea_kernel::eval_kernel(k, &refs, &self.bindings).map_err(|m| fail(at, m))?;
                for (o, v) in outputs.iter().zip(&results) {
                    self.store_value(o, v, store).map_err(|e| fail(at, e))?;
                }
            }
            Run::HostOp { node, inputs, output } => {
                let values = self.fetch(inputs, store).map_err(|e| fail(at, e))?;
                let refs: Vec<&Value> = values.iter().collect();
                let v = fallback(&program.graph.node(*node).op, &refs, &self.bindings).map_err(|m| fail(at, m))?;
                self.store_value(output, &v, store).map_err(|e| fail(at, e))?;
            }
        }
        Ok(())
    }

    /// With a CUDA graph wanted: replays it, capturing it first if there is
    /// none for the shared variables' current addresses. `None`: the steps
    /// are still to run one by one (no graph wanted, or the capture failed,
    /// which ran nothing and is remembered); `Some(true)` when the graph
    /// also made the updates.
    fn replay(
        &mut self,
        program: &Program,
        store: &SharedStore,
        fallback: Fallback,
    ) -> Result<Option<bool>, ExecError> {
        match &self.capture {
            Capture::Ready { shared, .. } if shared.iter().copied().eq(self.shared_addresses(store)) => {}
            Capture::Ready { .. } | Capture::Wanted => {
                let shared = self.shared_addresses(store).collect();
                if let Capture::Ready { graph, .. } = self.capture {
                    self.driver.drop_graph(graph);
                }
                let updates = self.updates_capturable();
                self.capture = match self.record(program, store, fallback, updates) {
                    Ok(graph) => Capture::Ready { graph, shared, updates },
                    Err(why) => Capture::Refused(format!("capturing failed: {why}")),
                };
            }
            Capture::Off | Capture::Refused(_) => return Ok(None),
        }
        let Capture::Ready { graph, updates, .. } = self.capture else { return Ok(None) };
        self.driver.replay(graph).map_err(|e| fail(None, format!("replaying the CUDA graph: {e}")))?;
        Ok(Some(updates))
    }

    /// The device addresses of the shared variables' copies, in order.
    fn shared_addresses<'a>(&'a self, store: &'a SharedStore) -> impl Iterator<Item = Ptr> + 'a {
        self.shared.iter().map(move |(_, o)| self.address(o, store))
    }

    /// Copies an update's new value into shared variable `i`'s device copy.
    fn copy_update(&self, i: usize, value: &Operand, store: &SharedStore) -> Result<(), CudaError> {
        let dst = self.address(&self.shared[i].1, store);
        copy(&*self.driver, dst, self.address(value, store), value.bytes())
    }

    /// Whether the updates can be the graph's last copies: no update value
    /// is a shared variable (a swap must read the old values first) and no
    /// output is one (outputs are read after the graph, and must be the old
    /// values).
    fn updates_capturable(&self) -> bool {
        let shared = |o: &Operand| matches!(o.source, Source::Shared(_));
        !self.updates.iter().any(|(_, v)| shared(v)) && !self.outputs.iter().any(shared)
    }

    /// Captures every step, then (with `updates`) the copies of the updates
    /// into the shared variables, into a graph; the capture always ends.
    fn record(
        &self,
        program: &Program,
        store: &SharedStore,
        fallback: Fallback,
        updates: bool,
    ) -> Result<GraphId, String> {
        self.driver.begin_capture()?;
        // Ends the capture if a step panics, so the device (and the other
        // threads waiting on it) are not left capturing.
        struct Open<'d>(Option<&'d dyn Driver>);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                if let Some(driver) = self.0
                    && let Ok(graph) = driver.end_capture()
                {
                    driver.drop_graph(graph);
                }
            }
        }
        let mut open = Open(Some(&*self.driver));
        let steps = self.steps.iter().try_for_each(|(s, run)| self.step(program, *s, run, store, fallback));
        let steps = steps.map_err(|e| e.to_string()).and_then(|()| match updates {
            true => self
                .updates
                .iter()
                .try_for_each(|(i, value)| self.copy_update(*i, value, store).map_err(|e| e.to_string())),
            false => Ok(()),
        });
        open.0 = None;
        let graph = self.driver.end_capture();
        match (steps, graph) {
            (Ok(()), graph) => graph,
            (Err(e), Ok(graph)) => {
                self.driver.drop_graph(graph);
                Err(e)
            }
            (Err(e), Err(_)) => Err(e),
        }
    }

    fn fetch<'o>(
        &self,
        ops: impl IntoIterator<Item = &'o Operand>,
        store: &SharedStore,
    ) -> Result<Vec<Value>, CudaError> {
        ops.into_iter().map(|o| download(&*self.driver, self.address(o, store), o.dtype, &o.shape)).collect()
    }

    fn launch(&self, entry: usize, grid: u32, block: u32, ptrs: &[Ptr]) -> Result<(), String> {
        let f = self.functions[entry].ok_or("a kernel the driver rejected was launched")?;
        self.driver.launch(f.main, grid, block, ptrs)?;
        match f.finish {
            Some((g, grid, block)) => self.driver.launch(g, grid, block, ptrs),
            None => Ok(()),
        }
    }

    fn store_value(&self, o: &Operand, v: &Value, store: &SharedStore) -> Result<(), CudaError> {
        if v.dtype() != o.dtype || v.shape() != o.shape.as_slice() {
            return Err(CudaError::Call {
                call: "a host step".into(),
                msg: format!("made {}{:?} where the plan has {}{:?}", v.dtype(), v.shape(), o.dtype, o.shape),
            });
        }
        upload(&*self.driver, self.address(o, store), &value_bytes(v))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Capture::Ready { graph, .. } = self.capture {
            self.driver.drop_graph(graph);
        }
        for m in self.modules.drain(..) {
            self.driver.unload(m);
        }
    }
}

/// Loads the plan's kernels: as one module, or, if the driver rejects it,
/// one module per kernel, so that only the rejected kernels (`None`) run on
/// the host.
fn load_kernels(gpu: &Gpu, ptx: &str, lowered: &[Lowered]) -> (Vec<ModuleId>, Vec<Option<Loaded>>) {
    if lowered.is_empty() {
        return (Vec::new(), Vec::new());
    }
    // Every kernel's entry, then each second stage's.
    let mut names: Vec<&str> = lowered.iter().map(|l| l.name.as_str()).collect();
    names.extend(lowered.iter().filter_map(|l| l.finish.as_ref().map(|f| f.name.as_str())));
    let pair = |l: &Lowered, main: Option<FunctionId>, finish: Option<FunctionId>| -> Option<Loaded> {
        match &l.finish {
            None => Some(Loaded { main: main?, finish: None }),
            Some(stage) => Some(Loaded { main: main?, finish: Some((finish?, stage.grid, stage.block)) }),
        }
    };
    if let Ok((m, functions)) = gpu.driver.load(ptx, &names) {
        let mut finishes = functions[lowered.len()..].iter();
        let loaded = lowered
            .iter()
            .zip(&functions)
            .map(|(l, &f)| {
                let finish = if l.finish.is_some() { finishes.next().copied().flatten() } else { None };
                pair(l, f, finish)
            })
            .collect();
        return (vec![m], loaded);
    }
    let mut modules = Vec::new();
    let loaded = lowered
        .iter()
        .map(|l| {
            let mut names = vec![l.name.as_str()];
            names.extend(l.finish.as_ref().map(|f| f.name.as_str()));
            let (m, f) = gpu.driver.load(&module(gpu.target, &[l]), &names).ok()?;
            modules.push(m);
            pair(l, f[0], f.get(1).copied().flatten())
        })
        .collect();
    (modules, loaded)
}
