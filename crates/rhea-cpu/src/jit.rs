//! Compiling a program's kernels with Cranelift's JIT, and calling them.

use std::collections::HashMap;

use cranelift_codegen::ir::{AbiParam, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use ndarray::{ArrayD, IxDyn};
use rhea_graph::{DType, Value};
use rhea_kernel::{Bindings, Combine, Kernel, resolve, row_major};

use crate::lower::{Helpers, is_flat, lower, signature};
use crate::math;

type KernelFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *const i64, *const i64, *const i64, i64, i64);

/// Element-instructions of work (elements times body length) above which a
/// kernel's outer loop is split across the cores.
const PARALLEL_WORK: usize = 1 << 20;

/// What went wrong compiling kernels.
#[derive(Debug, thiserror::Error)]
#[error("cpu backend: {0}")]
pub struct CpuError(pub String);

fn err(e: impl std::fmt::Display) -> CpuError {
    CpuError(e.to_string())
}

/// A program's kernels as machine code. The code is freed when this drops.
pub struct CpuKernels {
    module: Option<JITModule>,
    functions: Vec<KernelFn>,
    kernels: Vec<Kernel>,
    /// Whether each kernel is one flat loop (see [`crate::lower::is_flat`]).
    flat: Vec<bool>,
    clif: Vec<String>,
    asm: Vec<String>,
}

// The JIT code is immutable once finalized and the kernels only read their
// arguments, so calling from several threads is fine.
unsafe impl Send for CpuKernels {}
// SAFETY: no method taking `&self` touches the module (only `Drop`, which
// has `&mut self`); the code and the launch data are read-only.
unsafe impl Sync for CpuKernels {}

impl CpuKernels {
    /// Compiles every kernel.
    pub fn compile(kernels: &[Kernel]) -> Result<CpuKernels, CpuError> {
        Self::compile_with(kernels, false)
    }

    /// Compiles every kernel, keeping each one's Cranelift IR and
    /// machine-code listing for [`CpuKernels::clif`] and
    /// [`CpuKernels::asm`] (they cost about a third of compile time, so
    /// [`CpuKernels::compile`] leaves them out).
    pub fn compile_with_listings(kernels: &[Kernel]) -> Result<CpuKernels, CpuError> {
        Self::compile_with(kernels, true)
    }

    fn compile_with(kernels: &[Kernel], listings: bool) -> Result<CpuKernels, CpuError> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(err)?;
        flags.set("use_colocated_libcalls", "false").map_err(err)?;
        flags.set("is_pic", "false").map_err(err)?;
        let isa = cranelift_native::builder().map_err(err)?.finish(settings::Flags::new(flags)).map_err(err)?;
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        for (_, name, ptr) in math::unary_symbols() {
            jb.symbol(name, ptr);
        }
        jb.symbol("rhea_pow", math::rhea_pow as *const u8);
        let mut module = JITModule::new(jb);
        let mut one = module.make_signature();
        one.params.push(AbiParam::new(types::F64));
        one.returns.push(AbiParam::new(types::F64));
        let mut two = one.clone();
        two.params.push(AbiParam::new(types::F64));
        let mut unary = HashMap::new();
        for (op, name, _) in math::unary_symbols() {
            unary.insert(op, module.declare_function(name, Linkage::Import, &one).map_err(err)?);
        }
        let pow = module.declare_function("rhea_pow", Linkage::Import, &two).map_err(err)?;
        let helpers = Helpers { unary, pow };
        let mut ids = Vec::with_capacity(kernels.len());
        let mut clif = Vec::with_capacity(kernels.len());
        let mut asm = Vec::with_capacity(kernels.len());
        let mut ctx = module.make_context();
        for (i, k) in kernels.iter().enumerate() {
            k.verify().map_err(err)?;
            ctx.func.signature = signature(&module);
            lower(&mut module, &helpers, k, &mut ctx.func).map_err(err)?;
            if listings {
                clif.push(ctx.func.display().to_string());
            }
            ctx.set_disasm(listings);
            let id = module.declare_function(&format!("k{i}"), Linkage::Local, &ctx.func.signature).map_err(err)?;
            module.define_function(id, &mut ctx).map_err(|e| CpuError(format!("kernel {i}: {e:?}")))?;
            if listings {
                asm.push(ctx.compiled_code().and_then(|c| c.vcode.clone()).unwrap_or_default());
            }
            module.clear_context(&mut ctx);
            ids.push(id);
        }
        module.finalize_definitions().map_err(err)?;
        let functions = ids
            .iter()
            // SAFETY: each id names a function defined above with the kernel signature.
            .map(|&id| unsafe { std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(id)) })
            .collect();
        let flat = kernels.iter().map(is_flat).collect();
        Ok(CpuKernels { module: Some(module), functions, kernels: kernels.to_vec(), flat, clif, asm })
    }

    /// The Cranelift IR of kernel `k`, as compiled (empty unless compiled
    /// by [`CpuKernels::compile_with_listings`]).
    pub fn clif(&self, k: usize) -> &str {
        self.clif.get(k).map_or("", String::as_str)
    }

    /// The machine code of kernel `k`, as Cranelift's assembly listing
    /// (empty unless compiled by [`CpuKernels::compile_with_listings`]).
    pub fn asm(&self, k: usize) -> &str {
        self.asm.get(k).map_or("", String::as_str)
    }

    /// Everything a call of kernel `k` needs that depends only on the sizes
    /// `bindings` give: its loop bounds, strides and output shapes.
    pub fn launch(&self, k: usize, bindings: &Bindings) -> Result<Launch, String> {
        let kernel = &self.kernels[k];
        let dims = resolve(&kernel.domain, bindings)?;
        let rank = dims.len();
        let mut in_strides = Vec::with_capacity(kernel.inputs.len() * rank);
        let mut input_shapes = Vec::with_capacity(kernel.inputs.len());
        for (i, spec) in kernel.inputs.iter().enumerate() {
            let shape = resolve(&spec.shape, bindings)?;
            let strides = spec.strides(&shape, &dims).map_err(|e| format!("input {i}: {e}"))?;
            in_strides.extend(strides.iter().map(|&st| st as i64));
            input_shapes.push(shape);
        }
        let reduced = |d: usize| kernel.reduce.as_ref().is_some_and(|r| r.axes.contains(&d));
        let kept: Vec<usize> = (0..rank).filter(|&d| !reduced(d)).map(|d| dims[d]).collect();
        let kept_rm = row_major(&kept);
        let count: usize = (0..rank).filter(|&d| reduced(d)).map(|d| dims[d]).product();
        let mut outputs = Vec::with_capacity(kernel.outputs.len());
        let mut out_strides = Vec::with_capacity(kernel.outputs.len() * rank);
        let dom_rm = row_major(&dims);
        for (o, out) in kernel.outputs.iter().enumerate() {
            let shape = resolve(&kernel.output_shape(o), bindings)?;
            let combine = kernel.reduce.as_ref().filter(|_| out.reduced).map(|r| r.combine);
            if matches!(combine, Some(Combine::Max | Combine::Min)) && count == 0 && kept.iter().product::<usize>() > 0
            {
                return Err("reduction over an empty axis has no identity".into());
            }
            let mut kept_axis = 0;
            for (d, &dom_stride) in dom_rm.iter().enumerate() {
                out_strides.push(match combine {
                    Some(_) if reduced(d) => 0,
                    Some(_) => {
                        kept_axis += 1;
                        kept_rm[kept_axis - 1] as i64
                    }
                    None => dom_stride as i64,
                });
            }
            outputs.push(LaunchOutput { dtype: kernel.output_dtype(o), shape, combine });
        }
        let total: usize = dims.iter().product();
        // The outer loop: the flat index, or axis 0 (split only if no output
        // accumulates along it).
        let (outer, splittable) =
            if self.flat[k] { (total, true) } else { (dims.first().copied().unwrap_or(1), !reduced(0)) };
        Ok(Launch {
            dims: dims.iter().map(|&d| d as i64).collect(),
            in_strides,
            out_strides,
            input_shapes,
            outputs,
            total,
            count,
            outer,
            splittable,
            work: total.saturating_mul(kernel.body.len()),
        })
    }

    /// Calls kernel `k`: fills reduced outputs with their identity, runs the
    /// loop (split over threads when large), and divides means.
    ///
    /// # Safety
    /// `inputs` and `outputs` must point to contiguous buffers of the dtypes
    /// and shapes `launch` (made by [`CpuKernels::launch`] for `k`) gives,
    /// outputs must not overlap each other, and an output may overlap an
    /// input only where the kernel reads that input pointwise.
    pub unsafe fn call(&self, k: usize, launch: &Launch, inputs: &[*const u8], outputs: &[*mut u8]) {
        for (out, &ptr) in launch.outputs.iter().zip(outputs) {
            if let Some(combine) = out.combine {
                // SAFETY: the caller gives a buffer of this dtype and shape.
                unsafe { fill_identity(ptr, out.dtype, out.shape.iter().product(), combine) };
            }
        }
        if launch.total > 0 {
            let call = |start: usize, end: usize| {
                // SAFETY: the pointers are valid as the caller promises, and
                // concurrent calls write disjoint parts of the outputs: the
                // ranges are disjoint and no output is reduced along them.
                unsafe { self.call_range(k, launch, inputs, outputs, start..end) };
            };
            let threads = rayon::current_num_threads().min(launch.outer);
            if launch.splittable && threads > 1 && launch.work >= PARALLEL_WORK {
                let shared = SendCall(&call);
                rayon::scope(|s| {
                    for t in 0..threads {
                        let (start, end) = (launch.outer * t / threads, launch.outer * (t + 1) / threads);
                        let shared = &shared;
                        s.spawn(move |_| (shared.0)(start, end));
                    }
                });
            } else {
                call(0, launch.outer);
            }
        }
        for (out, &ptr) in launch.outputs.iter().zip(outputs) {
            if out.combine == Some(Combine::Mean) {
                let (n, len) = (launch.count as f64, out.shape.iter().product::<usize>());
                // SAFETY: as above.
                unsafe {
                    match out.dtype {
                        DType::F32 => std::slice::from_raw_parts_mut(ptr as *mut f32, len)
                            .iter_mut()
                            .for_each(|x| *x = (*x as f64 / n) as f32),
                        DType::F64 => {
                            std::slice::from_raw_parts_mut(ptr as *mut f64, len).iter_mut().for_each(|x| *x /= n)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Kernel `k`'s IR.
    pub fn kernel(&self, k: usize) -> &Kernel {
        &self.kernels[k]
    }

    /// True if kernel `k` is one flat loop (see `lower::is_flat`): its
    /// outer range is the flat index and any part of it can run alone.
    pub fn is_flat(&self, k: usize) -> bool {
        self.flat[k]
    }

    /// Runs part `range` of kernel `k`'s outer loop (the flat index of a
    /// flat kernel, else axis 0) on this thread, with no identity fill or
    /// mean: the caller's part of a [`CpuKernels::call`].
    ///
    /// # Safety
    /// As for [`CpuKernels::call`], with `range` within the outer loop; a
    /// range of a kernel that reduces along its outer axis must be all of it.
    pub unsafe fn call_range(
        &self,
        k: usize,
        launch: &Launch,
        inputs: &[*const u8],
        outputs: &[*mut u8],
        range: std::ops::Range<usize>,
    ) {
        debug_assert!(range.end <= launch.outer);
        // SAFETY: as the caller promises.
        unsafe {
            (self.functions[k])(
                inputs.as_ptr(),
                outputs.as_ptr(),
                launch.dims.as_ptr(),
                launch.in_strides.as_ptr(),
                launch.out_strides.as_ptr(),
                range.start as i64,
                range.end as i64,
            );
        }
    }

    /// Runs kernel `k` on `inputs`, giving its outputs in order.
    pub fn run(&self, k: usize, inputs: &[&Value], bindings: &Bindings) -> Result<Vec<Value>, String> {
        let kernel = &self.kernels[k];
        let launch = self.launch(k, bindings)?;
        if inputs.len() != kernel.inputs.len() {
            return Err(format!("kernel takes {} inputs, got {}", kernel.inputs.len(), inputs.len()));
        }
        let contiguous: Vec<std::borrow::Cow<Value>> = inputs.iter().map(|v| standard(v)).collect();
        for (i, ((spec, v), shape)) in kernel.inputs.iter().zip(&contiguous).zip(&launch.input_shapes).enumerate() {
            if v.dtype() != spec.dtype || v.shape() != shape.as_slice() {
                return Err(format!("input {i}: expected {}{shape:?}, got {}{:?}", spec.dtype, v.dtype(), v.shape()));
            }
        }
        let mut outputs: Vec<Value> = launch.outputs.iter().map(|o| zeros(o.dtype, &o.shape)).collect();
        let in_ptrs: Vec<*const u8> = contiguous.iter().map(|v| data_ptr(v)).collect();
        let out_ptrs: Vec<*mut u8> = outputs.iter_mut().map(data_ptr_mut).collect();
        // SAFETY: the inputs were checked against the launch's shapes and
        // dtypes, and the outputs are fresh arrays of the launch's shapes.
        unsafe { self.call(k, &launch, &in_ptrs, &out_ptrs) };
        Ok(outputs)
    }
}

/// The sizes of one kernel call, from [`CpuKernels::launch`].
#[derive(Clone, Debug)]
pub struct Launch {
    dims: Vec<i64>,
    in_strides: Vec<i64>,
    out_strides: Vec<i64>,
    /// The shape each input must have.
    pub input_shapes: Vec<Vec<usize>>,
    /// What each output is.
    pub outputs: Vec<LaunchOutput>,
    total: usize,
    count: usize,
    outer: usize,
    splittable: bool,
    work: usize,
}

/// One output of a kernel call.
#[derive(Clone, Debug)]
pub struct LaunchOutput {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// How it accumulates, if it is reduced.
    pub combine: Option<Combine>,
}

impl Drop for CpuKernels {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the function pointers into this memory drop with `self`
            // and are never called again.
            unsafe { module.free_memory() };
        }
    }
}

/// A tensor of zeros.
pub(crate) fn zeros(dtype: DType, shape: &[usize]) -> Value {
    let sh = IxDyn(shape);
    match dtype {
        DType::F32 => Value::F32(ArrayD::zeros(sh)),
        DType::F64 => Value::F64(ArrayD::zeros(sh)),
        DType::I32 => Value::I32(ArrayD::zeros(sh)),
        DType::I64 => Value::I64(ArrayD::zeros(sh)),
        DType::Bool => Value::Bool(ArrayD::from_elem(sh, false)),
    }
}

/// Fills `len` elements at `ptr` with the identity of `combine`: 0 for
/// sums, 1 for products, the lowest (highest) value for max (min).
///
/// # Safety
/// `ptr` must point to `len` writable elements of `dtype`.
unsafe fn fill_identity(ptr: *mut u8, dtype: DType, len: usize, combine: Combine) {
    macro_rules! fill {
        ($t:ty, $lo:expr, $hi:expr, $one:expr, $zero:expr) => {{
            let v: $t = match combine {
                Combine::Max => $lo,
                Combine::Min => $hi,
                Combine::Prod => $one,
                Combine::Sum | Combine::Mean => $zero,
            };
            // SAFETY: as the caller promises.
            unsafe { std::slice::from_raw_parts_mut(ptr as *mut $t, len) }.fill(v);
        }};
    }
    match dtype {
        DType::F32 => fill!(f32, f32::NEG_INFINITY, f32::INFINITY, 1.0, 0.0),
        DType::F64 => fill!(f64, f64::NEG_INFINITY, f64::INFINITY, 1.0, 0.0),
        DType::I32 => fill!(i32, i32::MIN, i32::MAX, 1, 0),
        DType::I64 => fill!(i64, i64::MIN, i64::MAX, 1, 0),
        DType::Bool => fill!(u8, 0, 1, 1, 0),
    }
}

/// The value itself if it is contiguous row-major, else a contiguous copy.
pub(crate) fn standard(v: &Value) -> std::borrow::Cow<'_, Value> {
    let contiguous = rhea_graph::with_array!(v, a => a.is_standard_layout());
    if contiguous {
        std::borrow::Cow::Borrowed(v)
    } else {
        std::borrow::Cow::Owned(rhea_graph::with_array!(v, a => a.as_standard_layout().into_owned().into()))
    }
}

pub(crate) fn data_ptr(v: &Value) -> *const u8 {
    rhea_graph::with_array!(v, a => a.as_ptr() as *const u8)
}

pub(crate) fn data_ptr_mut(v: &mut Value) -> *mut u8 {
    rhea_graph::with_array!(v, a => a.as_mut_ptr() as *mut u8)
}

/// A kernel call shared by the threads of one run: it captures raw pointers,
/// which are not `Sync` by themselves.
struct SendCall<'a>(&'a (dyn Fn(usize, usize) + 'a));

// SAFETY: the pointers the call captures stay valid for the scope of the
// threads, and the threads write disjoint ranges (see the call site).
unsafe impl Sync for SendCall<'_> {}
