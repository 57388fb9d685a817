//! The CUDA backend as a device of the one executor (`rhea-exec`). A plan
//! is prepared once per set of input shapes: its kernels are lowered to one
//! PTX module at those sizes and loaded, the memory plan's buffers placed in
//! one device arena, each library op planned as kernel launches and cuBLAS
//! calls ([`crate::library`]). A call uploads the inputs, launches the
//! steps on the default stream (or replays them as one captured CUDA
//! graph, [`crate::capture`]), and downloads the outputs.
//!
//! Shared variables live on the device between calls ([`SharedStore`]);
//! one is uploaded again only when its host value has changed since (a
//! version number says so). Update values are copied into the device
//! copies after the last step, so a call that fails changes nothing, and
//! are not downloaded: the host value becomes a fetch, run only when
//! someone reads it. Only inputs and outputs cross the bus on a training
//! step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rhea_exec::{Device, Engine, ExecError, Layout, NanCheck, Operand, Plan, Prepped, Source, Work};
use rhea_graph::{NodeId, Value};
use rhea_kernel::resolve;
use rhea_opt::{MemoryPlan, Program, Target};

use crate::capture::Capture;
use crate::device::{CudaError, Gpu};
use crate::driver::{Driver, FunctionId, ModuleId, Ptr};
use crate::library::{At, Call, Place, SCRATCH_BUDGET};
use crate::memory::{ALIGN, DeviceBuffer, copy, download, upload, value_bytes};
use crate::ptx::{Lowered, lower_kernel, module};

/// What the CUDA backend runs on the GPU: kernels the PTX lowering takes,
/// products, convolutions, pooling and dropout in float dtypes. No
/// epilogues or in-place updates (yet).
pub fn target() -> Target {
    Target {
        name: "cuda",
        library: |op, inputs, dtype, ranks| crate::library::runs(op, inputs, dtype, ranks),
        kernel: crate::ptx::lowers,
        epilogue: None,
        in_place_updates: false,
    }
}

/// Shared variables' device copies, kept across calls and plans, and who
/// holds them (the owner named in [`rhea_graph::Graph::set_shared_pending`]).
pub struct SharedStore {
    pub(crate) buffers: HashMap<NodeId, (Arc<DeviceBuffer>, u64)>,
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
}

/// The CUDA backend on one GPU (or the emulator), for one function: its
/// plans share the device copies of the shared variables.
pub struct CudaEngine {
    gpu: Arc<Gpu>,
    store: Arc<Mutex<SharedStore>>,
    owner: u64,
    cuda_graph: bool,
}

impl CudaEngine {
    /// The backend on `gpu`; with `cuda_graph`, plans run as captured CUDA
    /// graphs where they can.
    pub fn new(gpu: Arc<Gpu>, cuda_graph: bool) -> CudaEngine {
        let store = SharedStore::default();
        CudaEngine { gpu, owner: store.owner(), store: Arc::new(Mutex::new(store)), cuda_graph }
    }
}

/// A kernel as loaded: its entry, and the entry launched after it (a
/// two-stage reduction's second stage) with its grid and block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loaded {
    pub main: FunctionId,
    pub finish: Option<(FunctionId, u32, u32)>,
}

/// A kernel step: entry `entry` of the plan's modules.
pub struct CudaKernel {
    entry: usize,
    grid: u32,
    block: u32,
    /// Whether it takes the scratch buffer (a two-stage reduction's partials).
    partials: bool,
}

/// A library op as kernel launches (entry `base + kernel`) and cuBLAS calls.
pub struct CudaLibrary {
    base: usize,
    calls: Vec<Call>,
}

/// A program ready to run at one set of input sizes.
pub(crate) struct CudaPlan {
    pub layout: Layout,
    pub driver: Arc<dyn Driver>,
    gpu: Arc<Gpu>,
    modules: Vec<ModuleId>,
    functions: Vec<Option<Loaded>>,
    pub prepped: Vec<Prepped<CudaKernel, CudaLibrary>>,
    arena: DeviceBuffer,
    offsets: Vec<usize>,
    scratch: Option<DeviceBuffer>,
    pub feeds: Vec<DeviceBuffer>,
    consts: Vec<DeviceBuffer>,
    pub store: Arc<Mutex<SharedStore>>,
    pub guard: Option<NanCheck>,
    pub capture: Capture,
}

pub(crate) fn cuda(e: CudaError) -> ExecError {
    match e {
        CudaError::OutOfMemory { .. } => ExecError::new(rhea_exec::ErrorKind::OutOfMemory, e),
        e => ExecError::device(e),
    }
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
        let ids = memory.buffer_of.iter().filter(|&(_, &x)| x == b).map(|(&id, _)| id);
        ids.min().map(|id| (b, id))
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

impl Engine for CudaEngine {
    fn target(&self) -> Target {
        target()
    }

    fn owner(&self) -> Option<u64> {
        Some(self.owner)
    }

    fn prepare(
        &self,
        p: &Program,
        memory: &MemoryPlan,
        mut layout: Layout,
        guard: Option<NanCheck>,
    ) -> Result<Box<dyn Plan>, ExecError> {
        let gpu = &self.gpu;
        gpu.bind().map_err(cuda)?;
        let mut offsets = Vec::with_capacity(layout.buffers.len());
        let mut total = 0usize;
        for &b in layout.buffers.iter() {
            offsets.push(total);
            total = total
                .checked_add(align(b))
                .ok_or_else(|| ExecError::plan("the plan's buffers overflow the address space"))?;
        }
        let arena = DeviceBuffer::alloc(gpu, total, &arena_contents(p, memory)).map_err(cuda)?;
        let mut feeds = Vec::with_capacity(layout.feeds.len());
        for f in layout.feeds.iter() {
            let bytes = f.shape.iter().product::<usize>() * f.dtype.size_bytes();
            feeds.push(DeviceBuffer::alloc(gpu, bytes, &format!("input {:?}", f.name)).map_err(cuda)?);
        }
        let mut consts = Vec::with_capacity(layout.consts.len());
        for v in layout.consts.iter() {
            let buffer = DeviceBuffer::alloc(gpu, v.len() * v.dtype().size_bytes(), "a constant").map_err(cuda)?;
            upload(&*gpu.driver, buffer.ptr, &value_bytes(v)).map_err(cuda)?;
            consts.push(buffer);
        }
        // Lower every kernel at these sizes; what cannot be lowered runs on the host.
        let budget = crate::library::Budget {
            blas: gpu.driver.has_blas(),
            scratch: gpu.driver.mem_info().map_or(SCRATCH_BUDGET, |(_, total)| (total / 16).min(SCRATCH_BUDGET)),
        };
        let mut lowered: Vec<Lowered> = Vec::new();
        let mut scratch = 0usize;
        let mut prepped = Vec::with_capacity(layout.steps.len());
        for s in 0..layout.steps.len() {
            let step = &layout.steps[s];
            let ready = match &step.work {
                Work::Kernel { kernel, inputs, .. } => {
                    let k = &p.fusion.groups[*kernel].kernel;
                    let dims = resolve(&k.domain, &layout.bindings).map_err(ExecError::plan)?;
                    let shapes: Vec<Vec<usize>> = inputs.iter().map(|o| o.shape.clone()).collect();
                    lower_kernel(k, &format!("k{kernel}"), &dims, &shapes).ok().map(|l| {
                        scratch = scratch.max(l.scratch);
                        let kernel =
                            CudaKernel { entry: lowered.len(), grid: l.grid, block: l.block, partials: l.scratch > 0 };
                        lowered.push(l);
                        Prepped::Kernel(kernel)
                    })
                }
                Work::Library { op, inputs, out, .. } => {
                    let shapes: Vec<&[usize]> = inputs.iter().map(|o| o.shape.as_slice()).collect();
                    let name = format!("s{s}");
                    crate::library::plan(op, out.dtype, &shapes, &out.shape, &name, budget).map(|seq| {
                        let base = lowered.len();
                        lowered.extend(seq.kernels);
                        scratch = scratch.max(seq.scratch);
                        Prepped::Library(CudaLibrary { base, calls: seq.calls })
                    })
                }
                _ => Some(Prepped::None),
            };
            if ready.is_none() {
                layout.to_host(s, p);
            }
            prepped.push(ready.unwrap_or(Prepped::None));
        }
        let refs: Vec<&Lowered> = lowered.iter().collect();
        let (modules, functions) = load_kernels(gpu, &module(gpu.target, &refs), &lowered);
        // What the driver rejected runs on the host.
        for (s, prepped) in prepped.iter_mut().enumerate() {
            let rejected = match prepped {
                Prepped::Kernel(k) => functions[k.entry].is_none(),
                Prepped::Library(l) => l
                    .calls
                    .iter()
                    .any(|c| matches!(c, Call::Launch { kernel, .. } if functions[l.base + kernel].is_none())),
                Prepped::None => false,
            };
            if rejected {
                *prepped = Prepped::None;
                layout.to_host(s, p);
            }
        }
        let scratch = match scratch {
            0 => None,
            bytes => Some(DeviceBuffer::alloc(gpu, bytes, "convolution columns").map_err(cuda)?),
        };
        let capture = Capture::new(self.cuda_graph, &layout);
        Ok(Box::new(CudaPlan {
            layout,
            driver: gpu.driver.clone(),
            gpu: gpu.clone(),
            modules,
            functions,
            prepped,
            arena,
            offsets,
            scratch,
            feeds,
            consts,
            store: self.store.clone(),
            guard,
            capture,
        }))
    }
}

/// The device for one call: the plan, and the shared variables' device
/// addresses this call.
pub(crate) struct OnGpu<'a> {
    pub plan: &'a CudaPlan,
    pub shared: &'a [Ptr],
}

impl OnGpu<'_> {
    fn scratch(&self) -> Ptr {
        self.plan.scratch.as_ref().map_or(0, |b| b.ptr)
    }

    fn entry(&self, entry: usize, grid: u32, block: u32, ptrs: &[Ptr]) -> Result<(), String> {
        let f = self.plan.functions[entry].ok_or("a kernel the driver rejected was launched")?;
        self.plan.driver.launch(f.main, grid, block, ptrs)?;
        match f.finish {
            Some((g, grid, block)) => self.plan.driver.launch(g, grid, block, ptrs),
            None => Ok(()),
        }
    }
}

impl Device for OnGpu<'_> {
    type Addr = Ptr;
    type Kernel = CudaKernel;
    type Library = CudaLibrary;

    fn addr(&self, src: Source) -> Ptr {
        let p = self.plan;
        match src {
            Source::Feed(i) => p.feeds[i.index()].ptr,
            Source::Const(i) => p.consts[i.index()].ptr,
            Source::Buffer(b) => p.arena.ptr + p.offsets[b.index()] as u64,
            Source::Shared(i) => self.shared[i.index()],
        }
    }

    fn launch(&self, k: &CudaKernel, inputs: &[Ptr], outputs: &[Ptr]) -> Result<(), String> {
        let mut args: Vec<Ptr> = Vec::with_capacity(inputs.len() + outputs.len() + 1);
        args.extend(inputs.iter().chain(outputs));
        args.extend(k.partials.then(|| self.scratch()));
        self.entry(k.entry, k.grid, k.block, &args)
    }

    fn library(&self, l: &CudaLibrary, inputs: &[Ptr], out: Ptr, _: (&[Ptr], &[Ptr])) -> Result<(), String> {
        let addr = |a: &At| {
            let base = match a.place {
                Place::Input(i) => inputs[i],
                Place::Output => out,
                Place::Scratch => self.scratch(),
            };
            base + a.offset as u64
        };
        for call in &l.calls {
            match call {
                Call::Launch { kernel, grid, block, args } => {
                    let ptrs: Vec<Ptr> = args.iter().map(addr).collect();
                    self.entry(l.base + kernel, *grid, *block, &ptrs)?;
                }
                Call::Gemm { product, dtype, a, b, c } => {
                    // BLAS's A is our b (see Product::blas).
                    self.plan.driver.gemm(&product.blas(), *dtype, addr(b), addr(a), addr(c))?;
                }
            }
        }
        Ok(())
    }

    fn copy(&self, to: Ptr, from: Ptr, bytes: usize) -> Result<(), String> {
        copy(&*self.plan.driver, to, from, bytes).map_err(|e| e.to_string())
    }

    fn download(&self, at: Ptr, o: &Operand) -> Result<Value, String> {
        download(&*self.plan.driver, at, o.dtype, &o.shape).map_err(|e| e.to_string())
    }

    fn upload(&self, at: Ptr, value: &Value) -> Result<(), String> {
        upload(&*self.plan.driver, at, &value_bytes(value)).map_err(|e| e.to_string())
    }

    fn synchronize(&self) -> Result<(), String> {
        self.plan.driver.synchronize().map_err(|e| format!("a GPU step failed: {e}"))
    }
}

impl CudaPlan {
    /// The GPU this plan runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl Drop for CudaPlan {
    fn drop(&mut self) {
        self.capture.release(&*self.driver);
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
