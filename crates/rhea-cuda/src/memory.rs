//! Device memory: owned allocations freed on drop, and copies between host
//! values and device addresses.

use std::borrow::Cow;
use std::sync::Arc;

use cudarc::driver::{CudaContext, result, sys::CUdeviceptr};
use rhea_graph::{DType, Value};

use crate::device::{CudaError, Gpu, call};

/// Offsets inside an arena are rounded up to this (enough for 16-byte
/// vector loads and cuBLAS's preferences).
pub(crate) const ALIGN: usize = 256;

/// One device allocation.
pub(crate) struct DeviceBuffer {
    pub ptr: CUdeviceptr,
    ctx: Arc<CudaContext>,
}

impl DeviceBuffer {
    /// `bytes` of device memory for `what` (named in an out-of-memory error).
    pub fn alloc(gpu: &Gpu, bytes: usize, what: &str) -> Result<DeviceBuffer, CudaError> {
        gpu.bind()?;
        // Safety: a plain allocation; the pointer is owned by the buffer.
        match unsafe { result::malloc_sync(bytes.max(ALIGN)) } {
            Ok(ptr) => Ok(DeviceBuffer { ptr, ctx: gpu.ctx.clone() }),
            Err(_) => {
                let (free, total) = gpu.memory();
                Err(CudaError::OutOfMemory { bytes, what: what.to_string(), free, total })
            }
        }
    }
}

impl DeviceBuffer {
    /// Its contents as a value of `dtype` and `shape`, from any thread.
    pub fn read(&self, dtype: DType, shape: &[usize]) -> Result<Value, CudaError> {
        self.ctx.bind_to_thread().map_err(call("cuCtxSetCurrent"))?;
        download(self.ptr, dtype, shape)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // Safety: allocated by malloc_sync and freed once, here.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// The bytes of a value's elements in row-major order (borrowed when the
/// value is laid out that way already).
pub(crate) fn value_bytes(v: &Value) -> Cow<'_, [u8]> {
    fn raw<T>(s: &[T]) -> &[u8] {
        // Safety: any initialized memory may be read as bytes.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
    }
    let borrowed = match v {
        Value::F32(a) => a.as_slice().map(raw),
        Value::F64(a) => a.as_slice().map(raw),
        Value::I32(a) => a.as_slice().map(raw),
        Value::I64(a) => a.as_slice().map(raw),
        Value::Bool(a) => a.as_slice().map(raw),
    };
    borrowed.map_or_else(|| Cow::Owned(v.to_le_bytes()), Cow::Borrowed)
}

/// Copies `bytes` to device address `dst`.
pub(crate) fn upload(dst: CUdeviceptr, bytes: &[u8]) -> Result<(), CudaError> {
    if bytes.is_empty() {
        return Ok(());
    }
    // Safety: callers give an address with room for `bytes` (planned sizes).
    unsafe { result::memcpy_htod_sync(dst, bytes) }.map_err(call("copying to the GPU"))
}

/// A value of `dtype` and `shape` read from device address `src`.
pub(crate) fn download(src: CUdeviceptr, dtype: DType, shape: &[usize]) -> Result<Value, CudaError> {
    let n: usize = shape.iter().product();
    let mut bytes = vec![0u8; n * dtype.size_bytes()];
    if !bytes.is_empty() {
        // Safety: callers give an address holding a value of this size.
        unsafe { result::memcpy_dtoh_sync(&mut bytes, src) }.map_err(call("copying from the GPU"))?;
    }
    Value::from_le_bytes(dtype, shape, &bytes)
        .map_err(|msg| CudaError::Call { call: "reading a value back".into(), msg })
}

/// Copies `bytes` bytes between device addresses.
pub(crate) fn copy(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize) -> Result<(), CudaError> {
    if bytes == 0 || dst == src {
        return Ok(());
    }
    // Safety: both addresses hold at least `bytes` (planned sizes).
    unsafe { result::memcpy_dtod_sync(dst, src, bytes) }.map_err(call("copying on the GPU"))
}
