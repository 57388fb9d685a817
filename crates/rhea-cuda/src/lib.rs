//! rhea's CUDA backend. Kernels are lowered from the kernel IR to PTX text
//! here ([`ptx`]), with no CUDA toolkit at build time; at run time the
//! driver is loaded dynamically through `cudarc`, so this crate builds and
//! its tests pass on machines without a GPU.
#![warn(missing_docs)]

pub mod emu;
pub mod ptx;
pub mod ptxas;

pub use ptx::{Lowered, Target, lower_kernel, module};
pub mod device;
mod driver;

pub use device::{CudaError, DeviceInfo, EMULATED_MEMORY, Gpu, devices, driver_present, open_emulated, open_shared};
mod capture;
mod exec;
mod library;

pub use library::{OpKernels, op_kernels};
mod memory;

pub use exec::{CudaEngine, CudaKernel, CudaLibrary, SharedStore, target};
