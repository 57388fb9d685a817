//! The emulator as a [`Driver`]: device memory is host memory with a
//! capacity, modules are parsed PTX, launches run in the emulator, and
//! products follow the BLAS definition element by element (reading every
//! matrix through its leading dimension, so a wrong one is an
//! out-of-bounds error or a wrong result, as on a GPU).

use std::sync::{Arc, Mutex};

use rhea_graph::DType;

use super::{Memory, Module};
use crate::device::CudaError;
use crate::driver::{BlasGemm, Driver, FunctionId, Gate, GraphId, ModuleId, Ptr};

/// An emulated GPU.
pub(crate) struct EmulatedDriver {
    state: Mutex<State>,
    capacity: usize,
    gate: Gate,
}

#[derive(Default)]
struct State {
    mem: Memory,
    used: usize,
    modules: Vec<Option<Module>>,
    /// (module, entry name) by function id.
    functions: Vec<(usize, String)>,
    /// The work recorded since `begin_capture`, while capturing.
    recording: Option<Vec<Work>>,
    /// What broke the capture under way (CUDA then fails its end).
    broken: Option<String>,
    /// Captured graphs by id (`None` once dropped).
    graphs: Vec<Option<Arc<[Work]>>>,
}

/// What a graph replays: the calls it recorded, with their arguments.
enum Work {
    Launch { f: FunctionId, grid: u32, block: u32, params: Vec<Ptr> },
    Gemm { g: BlasGemm, dtype: DType, a: Ptr, b: Ptr, c: Ptr },
    Copy { dst: Ptr, src: Ptr, bytes: usize },
}

impl EmulatedDriver {
    /// A device with `capacity` bytes of memory.
    pub(crate) fn new(capacity: usize) -> EmulatedDriver {
        EmulatedDriver { state: Mutex::new(State::default()), capacity, gate: Gate::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `work` if a capture is under way (`true`), as CUDA's stream
    /// capture does instead of running it.
    fn record(&self, work: impl FnOnce() -> Work) -> bool {
        match self.state().recording.as_mut() {
            Some(r) => {
                r.push(work());
                true
            }
            None => false,
        }
    }

    /// An error if a capture is under way: `what` would wait for the device.
    fn not_capturing(&self, what: &str) -> Result<(), String> {
        let mut s = self.state();
        match s.recording {
            Some(_) => {
                let e = format!("{what} during a graph capture (CUDA refuses it and ends the capture)");
                s.broken.get_or_insert(e.clone());
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn run(&self, work: &Work) -> Result<(), String> {
        match work {
            Work::Launch { f, grid, block, params } => self.launch(*f, *grid, *block, params),
            Work::Gemm { g, dtype, a, b, c } => self.gemm(g, *dtype, *a, *b, *c),
            Work::Copy { dst, src, bytes } => self.copy(*dst, *src, *bytes).map_err(|e| e.to_string()),
        }
    }
}

fn emu(call: &str) -> impl Fn(String) -> CudaError + '_ {
    move |msg| CudaError::Call { call: call.to_string(), msg }
}

/// `n` elements of `dtype` at `at` as `f64`s.
fn read_f64(mem: &Memory, at: Ptr, n: usize, dtype: DType) -> Result<Vec<f64>, String> {
    let size = dtype.size_bytes();
    let bytes = mem.read(at, n * size)?;
    Ok(match dtype {
        DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        _ => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
    })
}

impl Driver for EmulatedDriver {
    fn bind(&self) -> Result<(), CudaError> {
        Ok(())
    }

    fn malloc(&self, bytes: usize) -> Option<Ptr> {
        let _pass = self.gate.enter();
        self.not_capturing("an allocation").ok()?;
        let mut s = self.state();
        if s.used.checked_add(bytes)? > self.capacity {
            return None;
        }
        s.used += bytes;
        Some(s.mem.alloc(bytes))
    }

    fn free(&self, ptr: Ptr) {
        let _pass = self.gate.enter();
        if self.not_capturing("freeing memory").is_err() {
            return;
        }
        let mut s = self.state();
        let freed = s.mem.free(ptr);
        s.used -= freed;
    }

    fn mem_info(&self) -> Option<(usize, usize)> {
        Some((self.capacity - self.state().used, self.capacity))
    }

    fn upload(&self, dst: Ptr, bytes: &[u8]) -> Result<(), CudaError> {
        let _pass = self.gate.enter();
        self.not_capturing("a copy to the device").map_err(emu("copying to the emulated GPU"))?;
        self.state().mem.write(dst, bytes).map_err(emu("copying to the emulated GPU"))
    }

    fn download(&self, src: Ptr, out: &mut [u8]) -> Result<(), CudaError> {
        let _pass = self.gate.enter();
        self.not_capturing("a copy from the device").map_err(emu("copying from the emulated GPU"))?;
        let s = self.state();
        out.copy_from_slice(s.mem.read(src, out.len()).map_err(emu("copying from the emulated GPU"))?);
        Ok(())
    }

    fn copy(&self, dst: Ptr, src: Ptr, bytes: usize) -> Result<(), CudaError> {
        let _pass = self.gate.enter();
        if self.record(|| Work::Copy { dst, src, bytes }) {
            return Ok(());
        }
        let mut s = self.state();
        let data = s.mem.read(src, bytes).map_err(emu("copying on the emulated GPU"))?.to_vec();
        s.mem.write(dst, &data).map_err(emu("copying on the emulated GPU"))
    }

    fn load(&self, ptx: &str, names: &[&str]) -> Result<(ModuleId, Vec<Option<FunctionId>>), String> {
        let _pass = self.gate.enter();
        let module = Module::parse(ptx)?;
        let mut s = self.state();
        let m = s.modules.len();
        let mut functions = Vec::with_capacity(names.len());
        for name in names {
            functions.push(module.entries.contains_key(*name).then(|| {
                s.functions.push((m, name.to_string()));
                FunctionId(s.functions.len() - 1)
            }));
        }
        s.modules.push(Some(module));
        Ok((ModuleId(m), functions))
    }

    fn unload(&self, module: ModuleId) {
        let _pass = self.gate.enter();
        if let Some(m) = self.state().modules.get_mut(module.0) {
            *m = None;
        }
    }

    fn launch(&self, f: FunctionId, grid: u32, block: u32, params: &[Ptr]) -> Result<(), String> {
        let _pass = self.gate.enter();
        if self.gate.capturing_here() && self.state().functions.get(f.0).is_none() {
            return Err("no such function".into());
        }
        if self.record(|| Work::Launch { f, grid, block, params: params.to_vec() }) {
            return Ok(());
        }
        let mut s = self.state();
        let State { mem, modules, functions, .. } = &mut *s;
        let (m, name) = functions.get(f.0).ok_or("no such function")?;
        let module = modules[*m].as_ref().ok_or("a launch from an unloaded module")?;
        module.launch(name, grid, block, params, mem)
    }

    fn has_blas(&self) -> bool {
        true
    }

    fn gemm(&self, g: &BlasGemm, dtype: DType, a: Ptr, b: Ptr, c: Ptr) -> Result<(), String> {
        let _pass = self.gate.enter();
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(format!("BLAS has no {dtype} product"));
        }
        if self.record(|| Work::Gemm { g: *g, dtype, a, b, c }) {
            return Ok(());
        }
        let size = dtype.size_bytes() as u64;
        for i in 0..g.batch as u64 {
            let at = |base: Ptr, stride: usize| base + i * stride as u64 * size;
            self.product(g, dtype, at(a, g.stride_a), at(b, g.stride_b), at(c, g.stride_c))?;
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), String> {
        let _pass = self.gate.enter();
        self.not_capturing("synchronizing")
    }

    fn begin_capture(&self) -> Result<(), String> {
        self.gate.begin()?;
        let mut s = self.state();
        s.recording = Some(Vec::new());
        s.broken = None;
        Ok(())
    }

    fn end_capture(&self) -> Result<GraphId, String> {
        if !self.gate.capturing_here() {
            return Err("no capture is under way on this thread".into());
        }
        let graph = {
            let mut s = self.state();
            let work = s.recording.take().ok_or("no capture is under way");
            match (work, s.broken.take()) {
                (Ok(work), None) => {
                    s.graphs.push(Some(work.into()));
                    Ok(GraphId(s.graphs.len() - 1))
                }
                (_, Some(why)) => Err(format!("the capture was invalidated: {why}")),
                (Err(e), None) => Err(e.to_string()),
            }
        };
        self.gate.end();
        graph
    }

    fn replay(&self, graph: GraphId) -> Result<(), String> {
        let _pass = self.gate.enter();
        self.not_capturing("replaying a graph")?;
        let work = match self.state().graphs.get(graph.0) {
            Some(Some(w)) => Arc::clone(w),
            _ => return Err("no such graph".into()),
        };
        work.iter().try_for_each(|w| self.run(w))
    }

    fn drop_graph(&self, graph: GraphId) {
        let _pass = self.gate.enter();
        if let Some(g) = self.state().graphs.get_mut(graph.0) {
            *g = None;
        }
    }
}

impl EmulatedDriver {
    /// One product of a (batched) BLAS call.
    fn product(&self, g: &BlasGemm, dtype: DType, a: Ptr, b: Ptr, c: Ptr) -> Result<(), String> {
        let mut s = self.state();
        // Column j of a column-major matrix starts at j * ld; `cols` columns of `rows`.
        let extent =
            |rows: usize, cols: usize, ld: usize| if cols == 0 || rows == 0 { 0 } else { (cols - 1) * ld + rows };
        let (a_rows, a_cols) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (b_rows, b_cols) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        if g.lda < a_rows.max(1) || g.ldb < b_rows.max(1) || g.ldc < g.m.max(1) {
            return Err(format!("a leading dimension is smaller than its matrix's rows: {g:?}"));
        }
        let av = read_f64(&s.mem, a, extent(a_rows, a_cols, g.lda), dtype)?;
        let bv = read_f64(&s.mem, b, extent(b_rows, b_cols, g.ldb), dtype)?;
        let cn = extent(g.m, g.n, g.ldc);
        let mut cv = read_f64(&s.mem, c, cn, dtype)?;
        let op_a = |i: usize, l: usize| if g.trans_a { av[l + i * g.lda] } else { av[i + l * g.lda] };
        let op_b = |l: usize, j: usize| if g.trans_b { bv[j + l * g.ldb] } else { bv[l + j * g.ldb] };
        for j in 0..g.n {
            for i in 0..g.m {
                let dot: f64 = (0..g.k).map(|l| op_a(i, l) * op_b(l, j)).sum();
                let at = i + j * g.ldc;
                // beta = 0 ignores C, NaN included.
                let old = if g.beta == 0.0 { 0.0 } else { g.beta * cv[at] };
                cv[at] = g.alpha * dot + old;
            }
        }
        let bytes: Vec<u8> = match dtype {
            DType::F32 => cv.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
            _ => cv.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        };
        s.mem.write(c, &bytes)
    }
}
