//! Finding and opening NVIDIA GPUs. The driver library is loaded at run
//! time; where it is missing, or the driver fails, every entry point here
//! returns an error that says so, and nothing panics: cudarc's own panics
//! on a missing symbol are caught and turned into errors too.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, DriverError};

use crate::driver::{CudaDriver, Driver};

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

/// An opened GPU (or the emulator standing in for one) and the PTX target.
pub struct Gpu {
    pub(crate) driver: Arc<dyn Driver>,
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
            Ok(Gpu { driver: Arc::new(CudaDriver::new(ctx)), info, target })
        })
    }

    /// rhea's PTX emulator as a GPU with `memory` bytes: every kernel runs
    /// thread by thread on the host and products as BLAS defines them.
    /// Thousands of times slower than a GPU; for checking the CUDA backend
    /// on machines without one (`RHEA_CUDA_EMULATE=1` makes
    /// [`open_shared`] return it).
    pub fn emulated(memory: usize) -> Gpu {
        let info =
            DeviceInfo { ordinal: 0, name: "rhea PTX emulator (no GPU)".into(), capability: (8, 0), memory, sms: 1 };
        Gpu { driver: Arc::new(crate::emu::EmulatedDriver::new(memory)), info, target: Target::MIN }
    }

    /// Makes this GPU's context current on the calling thread.
    pub(crate) fn bind(&self) -> Result<(), CudaError> {
        self.driver.bind()
    }

    /// `(free, total)` device memory in bytes.
    pub fn memory(&self) -> (usize, usize) {
        self.driver.mem_info().unwrap_or((0, self.info.memory))
    }
}

/// How much memory the shared emulated GPU has.
pub const EMULATED_MEMORY: usize = 4 << 30;

/// The emulated GPU ([`Gpu::emulated`] with [`EMULATED_MEMORY`]), created
/// once per process and shared by every function, like a real one.
pub fn open_emulated() -> Arc<Gpu> {
    static EMULATED: std::sync::OnceLock<Arc<Gpu>> = std::sync::OnceLock::new();
    EMULATED.get_or_init(|| Arc::new(Gpu::emulated(EMULATED_MEMORY))).clone()
}

/// GPU `ordinal`, opened once per process and shared by every function
/// (a context and a cuBLAS handle take a while to create); the emulator
/// instead when the environment sets `RHEA_CUDA_EMULATE=1`.
pub fn open_shared(ordinal: usize) -> Result<Arc<Gpu>, CudaError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    if std::env::var("RHEA_CUDA_EMULATE").is_ok_and(|v| v == "1") {
        return Ok(open_emulated());
    }
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(gpu) = open.get(&ordinal) {
        return Ok(gpu.clone());
    }
    let gpu = Arc::new(Gpu::open(ordinal)?);
    open.insert(ordinal, gpu.clone());
    Ok(gpu)
}
