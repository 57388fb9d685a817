//! Finding and opening NVIDIA GPUs. The driver library is loaded at run
//! time; where it is missing, or the driver fails, every entry point here
//! returns an error that says so, and nothing panics: cudarc's own panics
//! on a missing symbol are caught and turned into errors too.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, DriverError};

use crate::ptx::Target;

/// What went wrong on the GPU side.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No CUDA driver library could be loaded.
    #[error("no CUDA driver found (libcuda.so could not be loaded): this machine has no NVIDIA GPU or driver")]
    NoDriver,
    /// The driver loaded but reports no device.
    #[error("the CUDA driver reports no GPU")]
    NoDevice,
    /// A device too old for rhea's PTX.
    #[error("GPU {ordinal} ({name}): {msg}")]
    Unsupported {
        /// Its index.
        ordinal: usize,
        /// Its name.
        name: String,
        /// Why.
        msg: String,
    },
    /// A driver or library call failed.
    #[error("CUDA {call} failed: {msg}")]
    Call {
        /// What was being done.
        call: String,
        /// The driver's words.
        msg: String,
    },
    /// A device allocation failed.
    #[error("out of GPU memory: {bytes} bytes for {what} ({free} of {total} bytes free)")]
    OutOfMemory {
        /// The request.
        bytes: usize,
        /// What it was for.
        what: String,
        /// Free device memory at the time.
        free: usize,
        /// The device's memory.
        total: usize,
    },
}

/// Wraps a driver error with what was being done.
pub(crate) fn call(what: &str) -> impl Fn(DriverError) -> CudaError + '_ {
    move |e| CudaError::Call { call: what.to_string(), msg: format!("{e:?}") }
}

/// Runs `f`, turning a panic inside cudarc (a driver without a symbol it
/// expects) into an error.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic inside the CUDA bindings".into());
        Err(CudaError::Call { call: what.to_string(), msg })
    })
}

/// One GPU as the driver describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its index.
    pub ordinal: usize,
    /// Its name ("NVIDIA H100 80GB HBM3").
    pub name: String,
    /// Compute capability.
    pub capability: (i32, i32),
    /// Its memory in bytes.
    pub memory: usize,
    /// Streaming multiprocessors.
    pub sms: usize,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cuda:{}  {}  (compute capability {}.{}, {} SMs, {:.1} GiB)",
            self.ordinal,
            self.name,
            self.capability.0,
            self.capability.1,
            self.sms,
            self.memory as f64 / (1u64 << 30) as f64
        )
    }
}

/// True if the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // Safety: only tries to open the library by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn describe(ordinal: usize, ctx: &CudaContext) -> Result<DeviceInfo, CudaError> {
    let attr = |a| ctx.attribute(a).map_err(call("cuDeviceGetAttribute"));
    Ok(DeviceInfo {
        ordinal,
        name: ctx.name().map_err(call("cuDeviceGetName"))?,
        capability: ctx.compute_capability().map_err(call("cuDeviceComputeCapability"))?,
        memory: ctx.total_mem().map_err(call("cuDeviceTotalMem"))?,
        sms: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize,
    })
}

/// Every GPU the driver reports.
pub fn devices() -> Result<Vec<DeviceInfo>, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    guarded("listing devices", || {
        let n = CudaContext::device_count().map_err(call("cuDeviceGetCount"))?;
        (0..n as usize)
            .map(|i| {
                let ctx = CudaContext::new(i).map_err(call("cuCtxCreate"))?;
                describe(i, &ctx)
            })
            .collect()
    })
}

/// An opened GPU: its context, a cuBLAS handle, and the PTX target.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    /// cuBLAS, loaded at the first product (`None`: not available, products
    /// then run on the host).
    blas: std::sync::OnceLock<Option<cudarc::cublas::CudaBlas>>,
    /// What the driver says of it.
    pub info: DeviceInfo,
    /// The PTX it runs.
    pub target: Target,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.info)
    }
}

impl Gpu {
    /// Opens GPU `ordinal`.
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        guarded("opening the GPU", || {
            let n = CudaContext::device_count().map_err(call("cuDeviceGetCount"))?;
            if n <= 0 {
                return Err(CudaError::NoDevice);
            }
            if ordinal >= n as usize {
                return Err(CudaError::Call {
                    call: "opening the GPU".into(),
                    msg: format!("there is no GPU {ordinal}; the driver reports {n}"),
                });
            }
            let ctx = CudaContext::new(ordinal).map_err(call("cuCtxCreate"))?;
            let info = describe(ordinal, &ctx)?;
            let target = Target::for_device(info.capability.0, info.capability.1)
                .map_err(|msg| CudaError::Unsupported { ordinal, name: info.name.clone(), msg })?;
            Ok(Gpu { ctx, blas: std::sync::OnceLock::new(), info, target })
        })
    }

    /// cuBLAS on this GPU's default stream, created on first use; `None` if
    /// the library cannot be loaded (products then run on the host). Full
    /// `f32` precision unless `RHEA_CUDA_TF32=1` allows TF32 tensor cores.
    pub(crate) fn blas(&self) -> Option<&cudarc::cublas::CudaBlas> {
        self.blas
            .get_or_init(|| {
                // Safety: only tries to open the library by its usual names.
                if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                    return None;
                }
                guarded("loading cuBLAS", || {
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

    /// Makes this GPU's context current on the calling thread.
    pub(crate) fn bind(&self) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(call("cuCtxSetCurrent"))
    }

    /// `(free, total)` device memory in bytes.
    pub fn memory(&self) -> (usize, usize) {
        self.ctx.mem_get_info().unwrap_or((0, self.info.memory))
    }
}

/// GPU `ordinal`, opened once per process and shared by every function
/// (a context and a cuBLAS handle take a while to create).
pub fn open_shared(ordinal: usize) -> Result<Arc<Gpu>, CudaError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(gpu) = open.get(&ordinal) {
        return Ok(gpu.clone());
    }
    let gpu = Arc::new(Gpu::open(ordinal)?);
    open.insert(ordinal, gpu.clone());
    Ok(gpu)
}
