//! The backends a function can run on, and the engine each one gives the
//! one executor: the only place that knows which backend is which.

use std::fmt;
use std::str::FromStr;

use rhea_exec::{Engine, Engines};
use rhea_opt::{Program, Target};

use crate::function::FunctionError;

/// Where a function runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter (`rhea-interp`).
    Interp,
    /// The default: kernels compiled to machine code with Cranelift, matrix
    /// products, convolution and pooling on native kernels (`rhea-cpu`);
    /// the remaining library ops (gathers, softmax, concat...) run on the
    /// interpreter's implementations.
    #[default]
    Cpu,
    /// An NVIDIA GPU (`rhea-cuda`): kernels as generated PTX, matrix
    /// products through cuBLAS, parameters kept on the device between
    /// calls; other library ops run on the host.
    Cuda,
    /// The CUDA backend's generated code on rhea's PTX emulator instead of
    /// a GPU (like Pallas's interpret mode): every kernel runs thread by
    /// thread on the host, products as BLAS defines them. Thousands of
    /// times slower than a GPU; it checks what the CUDA backend computes
    /// on machines without one.
    CudaEmulated,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "interp" => Ok(Backend::Interp),
            "cpu" => Ok(Backend::Cpu),
            "cuda" => Ok(Backend::Cuda),
            "cuda-emu" => Ok(Backend::CudaEmulated),
            other => Err(format!("unknown backend {other:?}; available: interp, cpu, cuda, cuda-emu")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Interp => "interp",
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::CudaEmulated => "cuda-emu",
        })
    }
}

impl Backend {
    /// What the backend runs natively, for planning and dumps.
    pub fn target(self) -> Target {
        match self {
            Backend::Interp => Target::host(),
            Backend::Cpu => rhea_cpu::target(true),
            Backend::Cuda | Backend::CudaEmulated => rhea_cuda::target(),
        }
    }

    /// Whether it runs native code on rhea's worker threads (the CPU's
    /// kernels, and the host steps of the GPU).
    pub fn uses_threads(self) -> bool {
        self != Backend::Interp
    }

    /// The engines for `program` and each loop body in it: their kernels
    /// compiled, their device opened. `cuda_graph` and `epilogues` are the
    /// function's options for the backends that have them.
    pub(crate) fn engines(
        self,
        program: &Program,
        cuda_graph: bool,
        epilogues: bool,
    ) -> Result<Engines, FunctionError> {
        // A loop body's plan runs once per step, uploading and downloading
        // its values: it is not captured as a CUDA graph.
        Engines::new(program, &|p| self.engine(p, cuda_graph && std::ptr::eq(p, program), epilogues))
    }

    /// The engine for one program.
    fn engine(self, program: &Program, cuda_graph: bool, epilogues: bool) -> Result<Box<dyn Engine>, FunctionError> {
        if self.uses_threads() {
            rhea_cpu::threads::start().map_err(FunctionError::Threads)?;
        }
        Ok(match self {
            Backend::Interp => Box::new(rhea_exec::Interp),
            Backend::Cpu => Box::new(rhea_cpu::CpuEngine::new(program, epilogues)?),
            Backend::Cuda => Box::new(rhea_cuda::CudaEngine::new(rhea_cuda::open_shared(0)?, cuda_graph)),
            Backend::CudaEmulated => Box::new(rhea_cuda::CudaEngine::new(rhea_cuda::open_emulated(), cuda_graph)),
        })
    }
}
