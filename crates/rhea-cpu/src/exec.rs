//! The CPU backend as a device of the one executor (`rhea-exec`): host
//! memory, kernels compiled by Cranelift, and native library ops. A plan is
//! prepared once per set of input shapes: every kernel's loop bounds and
//! strides are computed, every library op's operand shapes fixed. A call
//! then only binds its inputs and runs the steps on raw pointers: no shape
//! arithmetic, no maps, no allocation on the path of a kernel, matrix
//! product or convolution.

use std::sync::Arc;
use std::time::Duration;

use rhea_exec::host::{HostMemory, host_copy, host_upload, value_at};
use rhea_exec::{
    Control, Device, Engine, ExecError, Layout, NanCheck, Operand, Plan, Prepped, SharedId, SharedValues, Source, Work,
    outputs, run_steps, write_updates,
};
use rhea_graph::{DType, NodeId, Op, Value};
use rhea_kernel::Kernel;
use rhea_opt::{MemoryPlan, Program, Target};

use crate::jit::{CpuError, CpuKernels, Launch};
use crate::library::{is_native, run_native};
use crate::winograd::{FilterCache, Stable};

/// The most inputs a native library op takes (a GEMM's A, B and C).
const MAX_LIBRARY_INPUTS: usize = 3;

/// What the CPU backend runs natively: every kernel, matrix products,
/// convolutions and pooling in float dtypes; with `epilogues`, a flat
/// kernel after a 2-d matrix product runs on each block of its output.
pub fn target(epilogues: bool) -> Target {
    Target {
        name: "cpu",
        library: |op, inputs, dtype, ranks| {
            inputs.iter().all(|&d| d == dtype) && ranks.len() <= MAX_LIBRARY_INPUTS && is_native(op, dtype, ranks)
        },
        kernel: |_| true,
        epilogue: if epilogues { Some(crate::lower::is_flat as fn(&Kernel) -> bool) } else { None },
        in_place_updates: true,
    }
}

/// The CPU backend for one program: its kernels compiled, and the
/// transformed convolution filters its plans share.
pub struct CpuEngine {
    kernels: Arc<CpuKernels>,
    filters: FilterCache,
    epilogues: bool,
}

impl CpuEngine {
    /// Compiles `program`'s kernels; `epilogues` as for [`target`].
    pub fn new(program: &Program, epilogues: bool) -> Result<CpuEngine, CpuError> {
        let kernels: Vec<Kernel> = program.fusion.groups.iter().map(|g| g.kernel.clone()).collect();
        Ok(CpuEngine { kernels: Arc::new(CpuKernels::compile(&kernels)?), filters: FilterCache::default(), epilogues })
    }

    /// The compiled kernels.
    pub fn kernels(&self) -> &CpuKernels {
        &self.kernels
    }

    /// The transformed convolution filters its plans keep (clones share them).
    pub fn filters(&self) -> &FilterCache {
        &self.filters
    }
}

/// A kernel prepared at a plan's sizes.
pub struct CpuKernel {
    k: usize,
    launch: Launch,
}

/// A library op prepared at a plan's sizes.
pub struct CpuLibrary {
    op: Op,
    dtype: DType,
    inputs: Vec<Vec<usize>>,
    out: Vec<usize>,
    /// A convolution's weights that the call only reads: their transform is
    /// kept between calls while their version stays.
    stable: Option<(SharedId, NodeId)>,
    epilogue: Option<CpuKernel>,
}

impl Engine for CpuEngine {
    fn target(&self) -> Target {
        target(self.epilogues)
    }

    fn prepare(
        &self,
        p: &Program,
        memory: &MemoryPlan,
        layout: Layout,
        guard: Option<NanCheck>,
    ) -> Result<Box<dyn Plan>, ExecError> {
        let host = HostMemory::new(p, memory, &layout)?;
        let launch = |k: usize| -> Result<CpuKernel, String> {
            Ok(CpuKernel { k, launch: self.kernels.launch(k, &layout.bindings)? })
        };
        let mut prepped = Vec::with_capacity(layout.steps.len());
        for step in &layout.steps {
            let fail = |msg: String| step.error(rhea_exec::ErrorKind::Plan, msg);
            prepped.push(match &step.work {
                Work::Kernel { kernel, .. } => Prepped::Kernel(launch(*kernel).map_err(fail)?),
                Work::Library { op, inputs, out, epilogue } => {
                    let conv = matches!(op, Op::Conv2d(_) | Op::Conv2dInputGrad(_));
                    let stable = match inputs.get(1).map(|o| o.src) {
                        Some(Source::Shared(i)) if conv && !layout.shared[i].written => {
                            Some((i, layout.shared[i].node))
                        }
                        _ => None,
                    };
                    Prepped::Library(CpuLibrary {
                        op: op.clone(),
                        dtype: out.dtype,
                        inputs: inputs.iter().map(|o| o.shape.clone()).collect(),
                        out: out.shape.clone(),
                        stable,
                        epilogue: epilogue.as_ref().map(|e| launch(e.kernel)).transpose().map_err(fail)?,
                    })
                }
                _ => Prepped::None,
            });
        }
        let kernels = self.kernels.clone();
        Ok(Box::new(CpuPlan { layout, memory: host, prepped, kernels, filters: self.filters.clone(), guard }))
    }
}

struct CpuPlan {
    layout: Layout,
    memory: HostMemory,
    prepped: Vec<Prepped<CpuKernel, CpuLibrary>>,
    kernels: Arc<CpuKernels>,
    filters: FilterCache,
    guard: Option<NanCheck>,
}

impl Plan for CpuPlan {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn runs_on_host(&self) -> bool {
        self.layout.shared.is_empty()
    }

    unsafe fn run_host(&mut self, feeds: &[*const u8], outputs: &[*mut u8]) -> Result<(), ExecError> {
        if !self.runs_on_host() || feeds.len() != self.layout.feeds.len() || outputs.len() != self.layout.outputs.len()
        {
            return Err(ExecError::plan("run_host: the addresses do not match the plan"));
        }
        let _flush = crate::denormals::Flush::on();
        self.memory.bind_raw(feeds);
        let dev = Cpu { memory: &self.memory, kernels: &self.kernels, filters: &self.filters };
        let mut ctl = Control { times: None, guard: self.guard.as_ref(), holders: None };
        run_steps(&dev, &self.layout, &self.prepped, &mut ctl)?;
        for (o, &to) in self.layout.outputs.iter().zip(outputs) {
            // SAFETY: the output holds its operand's bytes; `to` has room for
            // them (the caller promises), and they do not overlap.
            unsafe { host_copy(to, dev.addr(o.src), o.bytes()) };
        }
        Ok(())
    }

    fn run(
        &mut self,
        feeds: &[Value],
        shared: &mut dyn SharedValues,
        times: Option<&mut [Duration]>,
    ) -> Result<Vec<Value>, ExecError> {
        let _flush = crate::denormals::Flush::on();
        self.memory.bind(&self.layout, feeds, shared)?;
        let dev = Cpu { memory: &self.memory, kernels: &self.kernels, filters: &self.filters };
        let mut ctl = Control { times, guard: self.guard.as_ref(), holders: None };
        run_steps(&dev, &self.layout, &self.prepped, &mut ctl)?;
        let values = outputs(&dev, &self.layout)?;
        write_updates(&dev, &self.layout)?;
        Ok(values)
    }
}

/// The device for one call: the plan's memory, bound to the call's values.
struct Cpu<'a> {
    memory: &'a HostMemory,
    kernels: &'a CpuKernels,
    filters: &'a FilterCache,
}

/// A slice of mutable addresses as the const pointers kernels read.
fn reads(ptrs: &[*mut u8]) -> &[*const u8] {
    // SAFETY: `*mut u8` and `*const u8` have the same layout.
    unsafe { std::slice::from_raw_parts(ptrs.as_ptr() as *const *const u8, ptrs.len()) }
}

impl Device for Cpu<'_> {
    type Addr = *mut u8;
    type Kernel = CpuKernel;
    type Library = CpuLibrary;

    fn addr(&self, src: Source) -> *mut u8 {
        self.memory.addr(src)
    }

    fn host_ptr(&self, at: *mut u8) -> Option<*mut u8> {
        Some(at)
    }

    fn launch(&self, k: &CpuKernel, inputs: &[*mut u8], outputs: &[*mut u8]) -> Result<(), String> {
        // SAFETY: every pointer is to live memory of the dtype and shape the
        // launch was made for (the plan sized the buffers; inputs and shared
        // variables were checked when bound), and an output only overlaps an
        // input the kernel reads pointwise (the plan's in-place rules).
        unsafe { self.kernels.call(k.k, &k.launch, reads(inputs), outputs) };
        Ok(())
    }

    fn library(
        &self,
        l: &CpuLibrary,
        inputs: &[*mut u8],
        out: *mut u8,
        (epi_ins, epi_outs): (&[*mut u8], &[*mut u8]),
    ) -> Result<(), String> {
        let stable = l
            .stable
            .and_then(|(i, node)| Some(Stable { cache: self.filters, node, version: self.memory.slot(i).version? }));
        let Some(e) = &l.epilogue else {
            // SAFETY: as for a kernel; the output is not an input of a library op.
            return unsafe { native(l, inputs, out, None, stable.as_ref()) };
        };
        let (ins, outs) = (SendPtrs(reads(epi_ins)), SendPtrs(epi_outs));
        let n = l.out[1];
        let epilogue = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
            // SAFETY: as for the kernel step this was: the kernel reads the
            // product's output pointwise, and each block of it is complete
            // when this runs; the plan keeps the product's inputs alive and
            // unwritten until the kernel has run.
            let call = |range| unsafe { self.kernels.call_range(e.k, &e.launch, ins.get(), outs.get(), range) };
            if cols == (0..n) {
                call(rows.start * n..rows.end * n);
            } else {
                rows.for_each(|r| call(r * n + cols.start..r * n + cols.end));
            }
        };
        // SAFETY: as above.
        unsafe { native(l, inputs, out, Some(&epilogue), None) }
    }

    fn copy(&self, to: *mut u8, from: *mut u8, bytes: usize) -> Result<(), String> {
        // SAFETY: the executor copies only between operands of `bytes`.
        unsafe { host_copy(to, from, bytes) };
        Ok(())
    }

    fn download(&self, at: *mut u8, o: &Operand) -> Result<Value, String> {
        // SAFETY: every address of a layout operand holds its dtype and shape.
        Ok(unsafe { value_at(at, o.dtype, &o.shape) })
    }

    fn upload(&self, at: *mut u8, value: &Value) -> Result<(), String> {
        // SAFETY: the executor checked `value` against the operand at `at`.
        unsafe { host_upload(at, value) };
        Ok(())
    }
}

/// Runs a native library op on raw operands; with an `epilogue`, a matrix
/// product runs it on each block of its output (see
/// [`crate::blas::gemm_with_epilogue`]), a convolution with `stable`
/// weights keeps their transform.
///
/// # Safety
/// Each pointer must hold its operand's elements; `out` must not overlap
/// any input.
unsafe fn native(
    l: &CpuLibrary,
    inputs: &[*mut u8],
    out: *mut u8,
    epilogue: Option<&(dyn Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync)>,
    stable: Option<&Stable>,
) -> Result<(), String> {
    // SAFETY: as the caller promises.
    unsafe {
        match l.dtype {
            DType::F32 => typed::<f32>(l, inputs, out, epilogue, stable),
            _ => typed::<f64>(l, inputs, out, epilogue, stable),
        }
    }
}

/// [`native`] in the op's float type.
///
/// # Safety
/// As for [`native`].
unsafe fn typed<T: crate::blas::Float>(
    l: &CpuLibrary,
    inputs: &[*mut u8],
    out: *mut u8,
    epilogue: Option<&(dyn Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync)>,
    stable: Option<&Stable>,
) -> Result<(), String> {
    let mut slices: [(&[T], &[usize]); MAX_LIBRARY_INPUTS] = [(&[], &[]); MAX_LIBRARY_INPUTS];
    for ((slot, &ptr), shape) in slices.iter_mut().zip(inputs).zip(&l.inputs) {
        let len = shape.iter().product();
        // SAFETY: as the caller promises.
        *slot = (unsafe { std::slice::from_raw_parts(ptr as *const T, len) }, shape.as_slice());
    }
    let slices = &slices[..inputs.len().min(MAX_LIBRARY_INPUTS)];
    // SAFETY: as the caller promises.
    let dst = unsafe { std::slice::from_raw_parts_mut(out as *mut T, l.out.iter().product()) };
    let Some(epilogue) = epilogue else {
        return run_native(&l.op, slices, &l.out, dst, stable);
    };
    let product = crate::blas::Product::of(&l.op).ok_or_else(|| format!("{} is not a matrix product", l.op.name()))?;
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
