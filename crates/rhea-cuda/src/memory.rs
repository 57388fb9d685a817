//! Device memory: owned allocations freed on drop, and copies between host
//! values and device addresses, all through the GPU's [`Driver`].

use std::borrow::Cow;
use std::sync::Arc;

use rhea_graph::{DType, Value};

use crate::device::{CudaError, Gpu};
use crate::driver::{Driver, Ptr};

/// Offsets inside an arena are rounded up to this (enough for 16-byte
/// vector loads and cuBLAS's preferences).
pub(crate) const ALIGN: usize = 256;

/// One device allocation.
pub(crate) struct DeviceBuffer {
    pub ptr: Ptr,
    driver: Arc<dyn Driver>,
}

impl DeviceBuffer {
    /// `bytes` of device memory for `what` (named in an out-of-memory error).
    pub fn alloc(gpu: &Gpu, bytes: usize, what: &str) -> Result<DeviceBuffer, CudaError> {
        gpu.bind()?;
        match gpu.driver.malloc(bytes.max(ALIGN)) {
            Some(ptr) => Ok(DeviceBuffer { ptr, driver: gpu.driver.clone() }),
            None => {
                let (free, total) = gpu.memory();
                Err(CudaError::OutOfMemory { bytes, what: what.to_string(), free, total })
            }
        }
    }

    /// Its contents as a value of `dtype` and `shape`, from any thread.
    pub fn read(&self, dtype: DType, shape: &[usize]) -> Result<Value, CudaError> {
        self.driver.bind()?;
        download(&*self.driver, self.ptr, dtype, shape)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.driver.free(self.ptr);
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
pub(crate) fn upload(d: &dyn Driver, dst: Ptr, bytes: &[u8]) -> Result<(), CudaError> {
    if bytes.is_empty() {
        return Ok(());
    }
    d.upload(dst, bytes)
}

/// A value of `dtype` and `shape` read from device address `src`.
pub(crate) fn download(d: &dyn Driver, src: Ptr, dtype: DType, shape: &[usize]) -> Result<Value, CudaError> {
    let n: usize = shape.iter().product();
    let mut bytes = vec![0u8; n * dtype.size_bytes()];
    if !bytes.is_empty() {
        d.download(src, &mut bytes)?;
    }
    Value::from_le_bytes(dtype, shape, &bytes)
        .map_err(|msg| CudaError::Call { call: "reading a value back".into(), msg })
}

/// Copies `bytes` bytes between device addresses.
pub(crate) fn copy(d: &dyn Driver, dst: Ptr, src: Ptr, bytes: usize) -> Result<(), CudaError> {
    if bytes == 0 || dst == src {
        return Ok(());
    }
    d.copy(dst, src, bytes)
}
