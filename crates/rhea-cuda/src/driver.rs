//! What the executor asks of a GPU, as one small trait: memory, copies,
//! modules, launches, a matrix product and a wait. [`CudaDriver`] does it
//! through the CUDA driver and cuBLAS (`cudarc`); the PTX emulator
//! ([`crate::emu::EmulatedDriver`]) does it on the host, so every line of
//! the executor above this trait runs in tests on machines without a GPU.
//! This file is the only code of the backend that only a GPU exercises:
//! keep it thin.

use std::ffi::{CString, c_void};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;

use cudarc::driver::CudaContext;
use cudarc::driver::result;
use cudarc::driver::sys::{CUfunction, CUgraph, CUgraphExec, CUmodule, CUstream};
use rhea_graph::DType;

use crate::device::{CudaError, call};

/// A device address.
pub(crate) type Ptr = u64;

/// A loaded module, as the driver names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModuleId(pub usize);

/// A kernel entry of a loaded module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FunctionId(pub usize);

/// One column-major `C = alpha op(A) op(B) + beta C`, as BLAS defines it
/// (`op(A)` is `m x k`, `op(B)` is `k x n`, `C` is `m x n`; a `beta` of 0
/// ignores what `C` held), `batch` times: product `i` reads and writes the
/// matrices `i * stride` elements after the first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BlasGemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f64,
    pub beta: f64,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

/// A captured sequence of launches, products and device copies (a CUDA
/// graph), replayed as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GraphId(pub usize);

/// Who may use the device. While a thread captures a graph, every other
/// thread's device calls wait (on a GPU they would be recorded into its
/// graph, or break the capture), and a capture waits for the calls under
/// way to finish. Each driver call holds a [`Pass`] while it runs.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    capturer: Option<ThreadId>,
    busy: usize,
}

/// A call's turn on the device (see [`Gate`]).
pub(crate) struct Pass<'g> {
    gate: &'g Gate,
    counted: bool,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'s>(&self, s: MutexGuard<'s, GateState>) -> MutexGuard<'s, GateState> {
        self.changed.wait(s).unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until this thread may use the device.
    pub fn enter(&self) -> Pass<'_> {
        let me = std::thread::current().id();
        let mut s = self.state();
        while s.capturer.is_some_and(|t| t != me) {
            s = self.wait(s);
        }
        let counted = s.capturer.is_none();
        s.busy += usize::from(counted);
        Pass { gate: self, counted }
    }

    /// Makes this thread the capturer once no other call is under way.
    pub fn begin(&self) -> Result<(), String> {
        let me = std::thread::current().id();
        let mut s = self.state();
        if s.capturer == Some(me) {
            return Err("a capture is already under way".into());
        }
        while s.capturer.is_some() || s.busy > 0 {
            s = self.wait(s);
        }
        s.capturer = Some(me);
        Ok(())
    }

    /// Whether this thread is capturing.
    pub fn capturing_here(&self) -> bool {
        self.state().capturer == Some(std::thread::current().id())
    }

    /// Ends this thread's capture; the other threads go on.
    pub fn end(&self) {
        let mut s = self.state();
        if s.capturer == Some(std::thread::current().id()) {
            s.capturer = None;
            self.changed.notify_all();
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut s = self.gate.state();
            s.busy -= 1;
            if s.busy == 0 {
                self.gate.changed.notify_all();
            }
        }
    }
}

/// The GPU operations the executor uses.
pub(crate) trait Driver: Send + Sync + std::panic::RefUnwindSafe {
    /// Makes the device current on the calling thread.
    fn bind(&self) -> Result<(), CudaError>;
    /// `bytes` of device memory (`None`: not enough left).
    fn malloc(&self, bytes: usize) -> Option<Ptr>;
    fn free(&self, ptr: Ptr);
    /// `(free, total)` bytes, if the device can say.
    fn mem_info(&self) -> Option<(usize, usize)>;
    fn upload(&self, dst: Ptr, bytes: &[u8]) -> Result<(), CudaError>;
    fn download(&self, src: Ptr, out: &mut [u8]) -> Result<(), CudaError>;
    fn copy(&self, dst: Ptr, src: Ptr, bytes: usize) -> Result<(), CudaError>;
    /// Loads a PTX module; the entries `names`, `None` where missing.
    fn load(&self, ptx: &str, names: &[&str]) -> Result<(ModuleId, Vec<Option<FunctionId>>), String>;
    fn unload(&self, module: ModuleId);
    /// Launches `f` on a 1-d grid with one `u64` parameter per address.
    fn launch(&self, f: FunctionId, grid: u32, block: u32, params: &[Ptr]) -> Result<(), String>;
    /// Whether [`Driver::gemm`] is available.
    fn has_blas(&self) -> bool;
    /// A BLAS product on `f32` or `f64` matrices at device addresses.
    fn gemm(&self, g: &BlasGemm, dtype: DType, a: Ptr, b: Ptr, c: Ptr) -> Result<(), String>;
    /// Waits for all launched work; its first error.
    fn synchronize(&self) -> Result<(), String>;
    /// Starts recording: until [`Driver::end_capture`], launches, products
    /// and copies are recorded into a graph, not run, and anything that
    /// waits for the device (uploads, downloads, allocations,
    /// synchronizing) is an error, as in CUDA's stream capture.
    fn begin_capture(&self) -> Result<(), String>;
    /// Stops recording; the recorded work as a graph ready to replay. Ends
    /// the recording even when it fails.
    fn end_capture(&self) -> Result<GraphId, String>;
    /// Runs a captured graph, ordered with every other launch and copy.
    fn replay(&self, graph: GraphId) -> Result<(), String>;
    fn drop_graph(&self, graph: GraphId);
}

/// A GPU through the CUDA driver, with cuBLAS loaded at the first product.
pub(crate) struct CudaDriver {
    pub ctx: Arc<CudaContext>,
    blas: OnceLock<Option<cudarc::cublas::CudaBlas>>,
    capture: Mutex<Capture>,
    gate: Gate,
}

/// CUDA graphs: the stream they are captured on and replayed on (created at
/// the first capture, blocking, so the null stream's copies and launches
/// order with it) and the instantiated graphs (`CUgraph`, `CUgraphExec` as
/// addresses) by id. Whether a capture is under way is the gate's.
#[derive(Default)]
struct Capture {
    stream: Option<usize>,
    graphs: Vec<Option<(usize, usize)>>,
}

impl CudaDriver {
    pub fn new(ctx: Arc<CudaContext>) -> CudaDriver {
        CudaDriver { ctx, blas: OnceLock::new(), capture: Mutex::new(Capture::default()), gate: Gate::default() }
    }

    fn capture(&self) -> std::sync::MutexGuard<'_, Capture> {
        self.capture.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stream launches go to: the capture stream while capturing, else
    /// the null stream.
    fn stream(&self) -> CUstream {
        match self.capture().stream {
            Some(s) if self.gate.capturing_here() => s as CUstream,
            _ => std::ptr::null_mut(),
        }
    }

    /// Points cuBLAS at `stream` (products follow the capture).
    fn blas_stream(&self, stream: CUstream) -> Result<(), String> {
        match self.blas() {
            // Safety: a live handle; the stream outlives the driver's use of it.
            Some(b) => unsafe { cudarc::cublas::result::set_stream(*b.handle(), stream as _) }
                .map_err(|e| format!("cublasSetStream: {e:?}")),
            None => Ok(()),
        }
    }

    /// cuBLAS on this GPU's default stream, created on first use; `None` if
    /// the library cannot be loaded (products then run on the host). Full
    /// `f32` precision unless `RHEA_CUDA_TF32=1` allows TF32 tensor cores.
    fn blas(&self) -> Option<&cudarc::cublas::CudaBlas> {
        self.blas
            .get_or_init(|| {
                // Safety: only tries to open the library by its usual names.
                if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                    return None;
                }
                crate::device::guarded("loading cuBLAS", || {
                    self.bind()?;
                    let blas = cudarc::cublas::CudaBlas::new(self.ctx.default_stream())
                        .map_err(|e| CudaError::Call { call: "cublasCreate".into(), msg: format!("{e:?}") })?;
                    if std::env::var("RHEA_CUDA_TF32").is_ok_and(|v| v == "1") {
                        use cudarc::cublas::sys;
                        // Safety: the handle was just created and is alive.
                        unsafe {
                            sys::cublasSetMathMode(*blas.handle(), sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH)
                        }
                        .result()
                        .map_err(|e| CudaError::Call { call: "cublasSetMathMode".into(), msg: format!("{e:?}") })?;
                    }
                    Ok(blas)
                })
                .ok()
            })
            .as_ref()
    }
}

impl Drop for CudaDriver {
    fn drop(&mut self) {
        let ids: Vec<GraphId> = (0..self.capture().graphs.len()).map(GraphId).collect();
        for id in ids {
            self.drop_graph(id);
        }
        if let Some(s) = self.capture().stream.take()
            && self.bind().is_ok()
        {
            // Safety: created by begin_capture; no graph uses it any more.
            let _ = unsafe { result::stream::destroy(s as CUstream) };
        }
    }
}

impl Driver for CudaDriver {
    fn bind(&self) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(call("cuCtxSetCurrent"))
    }

    fn malloc(&self, bytes: usize) -> Option<Ptr> {
        let _pass = self.gate.enter();
        self.bind().ok()?;
        // Safety: a plain allocation, owned by the caller's buffer.
        unsafe { result::malloc_sync(bytes) }.ok()
    }

    fn free(&self, ptr: Ptr) {
        let _pass = self.gate.enter();
        if self.bind().is_ok() {
            // Safety: allocated by malloc and freed once, by its owner.
            let _ = unsafe { result::free_sync(ptr) };
        }
    }

    fn mem_info(&self) -> Option<(usize, usize)> {
        self.ctx.mem_get_info().ok()
    }

    fn upload(&self, dst: Ptr, bytes: &[u8]) -> Result<(), CudaError> {
        let _pass = self.gate.enter();
        // Safety: callers give an address with room for `bytes` (planned sizes).
        unsafe { result::memcpy_htod_sync(dst, bytes) }.map_err(call("copying to the GPU"))
    }

    fn download(&self, src: Ptr, out: &mut [u8]) -> Result<(), CudaError> {
        let _pass = self.gate.enter();
        // Safety: callers give an address holding at least `out.len()` bytes.
        unsafe { result::memcpy_dtoh_sync(out, src) }.map_err(call("copying from the GPU"))
    }

    fn copy(&self, dst: Ptr, src: Ptr, bytes: usize) -> Result<(), CudaError> {
        let _pass = self.gate.enter();
        let stream = self.stream();
        // Safety: both addresses hold at least `bytes` (planned sizes); a
        // copy on the null stream returns once it is ordered, like a launch.
        unsafe {
            if stream.is_null() {
                result::memcpy_dtod_sync(dst, src, bytes)
            } else {
                result::memcpy_dtod_async(dst, src, bytes, stream)
            }
        }
        .map_err(call("copying on the GPU"))
    }

    fn load(&self, ptx: &str, names: &[&str]) -> Result<(ModuleId, Vec<Option<FunctionId>>), String> {
        let _pass = self.gate.enter();
        let text = CString::new(ptx).map_err(|_| "generated PTX holds a NUL byte".to_string())?;
        // Safety: a NUL-terminated PTX image; the driver JIT-compiles it.
        let m: CUmodule =
            unsafe { result::module::load_data(text.as_ptr().cast::<c_void>()) }.map_err(|e| format!("{e:?}"))?;
        let functions = names
            .iter()
            .map(|name| {
                let name = CString::new(*name).ok()?;
                // Safety: `m` is a loaded module.
                let f: CUfunction = unsafe { result::module::get_function(m, name) }.ok()?;
                Some(FunctionId(f as usize))
            })
            .collect();
        Ok((ModuleId(m as usize), functions))
    }

    fn unload(&self, module: ModuleId) {
        let _pass = self.gate.enter();
        if self.bind().is_ok() {
            // Safety: loaded by `load` and unloaded once, by its plan.
            let _ = unsafe { result::module::unload(module.0 as CUmodule) };
        }
    }

    fn launch(&self, f: FunctionId, grid: u32, block: u32, params: &[Ptr]) -> Result<(), String> {
        let _pass = self.gate.enter();
        let mut ptrs = params.to_vec();
        let mut args: Vec<*mut c_void> = ptrs.iter_mut().map(|p| (p as *mut Ptr).cast::<c_void>()).collect();
        // Safety: `f` came from `load`; every parameter is a device address
        // of the size the kernel was lowered for; the null stream orders
        // launches and copies.
        unsafe { result::launch_kernel(f.0 as CUfunction, (grid, 1, 1), (block, 1, 1), 0, self.stream(), &mut args) }
            .map_err(|e| format!("kernel launch failed: {e:?}"))
    }

    fn has_blas(&self) -> bool {
        self.blas().is_some()
    }

    fn gemm(&self, g: &BlasGemm, dtype: DType, a: Ptr, b: Ptr, c: Ptr) -> Result<(), String> {
        use cudarc::cublas::{result as blas, sys::cublasOperation_t as T};
        let _pass = self.gate.enter();
        let h = *self.blas().ok_or("cuBLAS is not available")?.handle();
        let op = |t: bool| if t { T::CUBLAS_OP_T } else { T::CUBLAS_OP_N };
        let int = |x: usize| i32::try_from(x).map_err(|_| format!("a matrix dimension of {x} is past cuBLAS's range"));
        let (m, n, k, lda, ldb, ldc) = (int(g.m)?, int(g.n)?, int(g.k)?, int(g.lda)?, int(g.ldb)?, int(g.ldc)?);
        let (ta, tb) = (op(g.trans_a), op(g.trans_b));
        let batch = int(g.batch)?;
        let (sa, sb, sc) = (g.stride_a as i64, g.stride_b as i64, g.stride_c as i64);
        // Safety: the addresses hold matrices of these sizes (checked when
        // the plan was prepared); alpha and beta are host scalars.
        let r = unsafe {
            if dtype == DType::F32 {
                let (alpha, beta) = (g.alpha as f32, g.beta as f32);
                let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
                if batch == 1 {
                    blas::sgemm(h, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc)
                } else {
                    blas::sgemm_strided_batched(
                        h, ta, tb, m, n, k, &alpha, a, lda, sa, b, ldb, sb, &beta, c, ldc, sc, batch,
                    )
                }
            } else {
                let (alpha, beta) = (&g.alpha, &g.beta);
                let (a, b, c) = (a as *const f64, b as *const f64, c as *mut f64);
                if batch == 1 {
                    blas::dgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
                } else {
                    blas::dgemm_strided_batched(
                        h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch,
                    )
                }
            }
        };
        r.map_err(|e| format!("cuBLAS gemm failed: {e:?}"))
    }

    fn synchronize(&self) -> Result<(), String> {
        let _pass = self.gate.enter();
        self.ctx.synchronize().map_err(|e| format!("{e:?}"))
    }

    fn begin_capture(&self) -> Result<(), String> {
        self.gate.begin()?;
        let started = self.start_capture();
        if started.is_err() {
            self.gate.end();
        }
        started
    }

    fn end_capture(&self) -> Result<GraphId, String> {
        if !self.gate.capturing_here() {
            return Err("no capture is under way on this thread".into());
        }
        let graph = self.finish_capture();
        self.gate.end();
        graph
    }

    fn replay(&self, graph: GraphId) -> Result<(), String> {
        let _pass = self.gate.enter();
        let (exec, stream) = {
            let c = self.capture();
            let Some(Some((_, exec))) = c.graphs.get(graph.0) else { return Err("no such graph".into()) };
            (*exec as CUgraphExec, c.stream.expect("a graph has a stream") as CUstream)
        };
        self.bind().map_err(|e| e.to_string())?;
        // Safety: an instantiated graph of this context; its addresses were
        // checked by the executor to be the ones it was captured with.
        unsafe { result::graph::launch(exec, stream) }.map_err(|e| format!("cuGraphLaunch: {e:?}"))
    }

    fn drop_graph(&self, graph: GraphId) {
        let _pass = self.gate.enter();
        let taken = self.capture().graphs.get_mut(graph.0).and_then(Option::take);
        if let Some((g, exec)) = taken
            && self.bind().is_ok()
        {
            // Safety: created by end_capture and destroyed once, here.
            unsafe {
                let _ = result::graph::exec_destroy(exec as CUgraphExec);
                let _ = result::graph::destroy(g as CUgraph);
            }
        }
    }
}

impl CudaDriver {
    /// Points the capture stream (created the first time) and cuBLAS at
    /// each other and starts capturing; this thread holds the gate.
    fn start_capture(&self) -> Result<(), String> {
        use cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL as LOCAL;
        self.bind().map_err(|e| e.to_string())?;
        let stream = {
            let mut c = self.capture();
            match c.stream {
                Some(s) => s as CUstream,
                None => {
                    let s = result::stream::create(result::stream::StreamKind::Default)
                        .map_err(|e| format!("cuStreamCreate: {e:?}"))?;
                    c.stream = Some(s as usize);
                    s
                }
            }
        };
        // cuBLAS resets its workspace when its stream changes: before the capture.
        self.blas_stream(stream)?;
        // Safety: a live stream of this context, not capturing.
        if let Err(e) = unsafe { result::stream::begin_capture(stream, LOCAL) } {
            let _ = self.blas_stream(std::ptr::null_mut());
            return Err(format!("cuStreamBeginCapture: {e:?}"));
        }
        Ok(())
    }

    /// Ends the capture and instantiates its graph; cuBLAS goes back to
    /// the null stream whatever happens (the first error is the one told).
    fn finish_capture(&self) -> Result<GraphId, String> {
        let stream = self.capture().stream.ok_or("no capture is under way")? as CUstream;
        // Safety: the stream is capturing (begun above).
        let graph = unsafe { result::stream::end_capture(stream) };
        let reset = self.blas_stream(std::ptr::null_mut());
        let graph: CUgraph = graph.map_err(|e| format!("cuStreamEndCapture: {e:?}"))?;
        if graph.is_null() {
            return Err("the capture made no graph".into());
        }
        // Safety: a graph just captured, destroyed below if it cannot be used.
        let exec = unsafe { result::graph::instantiate(graph, cudarc::driver::sys::CUgraphInstantiate_flags(0)) };
        let exec: CUgraphExec = match (exec, reset) {
            (Ok(exec), Ok(())) => exec,
            (exec, reset) => {
                // Safety: the graph (and its instance) are ours and nothing else refers to them.
                unsafe {
                    if let Ok(exec) = exec {
                        let _ = result::graph::exec_destroy(exec);
                    }
                    let _ = result::graph::destroy(graph);
                }
                return Err(match (exec, reset) {
                    (Err(e), _) => format!("cuGraphInstantiate: {e:?}"),
                    (_, Err(e)) => e,
                    _ => unreachable!("one of them failed"),
                });
            }
        };
        let mut c = self.capture();
        c.graphs.push(Some((graph as usize, exec as usize)));
        Ok(GraphId(c.graphs.len() - 1))
    }
}
