//! Host memory as a device: the memory plan's buffers as allocations of
//! this process, the caller's inputs and the shared variables' storage used
//! where they are. The reference interpreter ([`Interp`]) is this device
//! with nothing native: every kernel runs on the kernel-IR evaluator and
//! every library op on the interpreter's semantics. The CPU backend runs
//! its compiled kernels and native ops on the same memory.

use std::time::Duration;

use ndarray::{ArrayD, IxDyn};
use rhea_graph::{DType, ElementsMut, Value};
use rhea_opt::{MemoryPlan, Program, Target};

use crate::NanCheck;
use crate::engine::{Engine, Plan, SharedValues};
use crate::error::ExecError;
use crate::ids::SharedId;
use crate::layout::{Layout, Operand, Source, out_of_memory, standard};
use crate::run::{Control, Device, Prepped, outputs, run_steps, write_updates};

/// A shared variable's storage for one call: its dtype, its number of
/// elements, and a pointer to them (row-major), read by the steps and, for
/// updates, written.
#[derive(Clone, Copy, Debug)]
pub struct SharedSlot {
    /// Its dtype.
    pub dtype: DType,
    /// Its number of elements.
    pub len: usize,
    /// Its elements.
    pub ptr: *mut u8,
    /// For a variable the call only reads: its value's version. Steps may
    /// keep what they derive from it between calls while it stays the same.
    pub version: Option<u64>,
}

impl SharedSlot {
    /// The slot of a value's elements, which the call may write.
    pub fn of(elements: ElementsMut<'_>) -> SharedSlot {
        let (dtype, len, ptr) = match elements {
            ElementsMut::F32(e) => (DType::F32, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::F64(e) => (DType::F64, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::I32(e) => (DType::I32, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::I64(e) => (DType::I64, e.len(), e.as_mut_ptr() as *mut u8),
            ElementsMut::Bool(e) => (DType::Bool, e.len(), e.as_mut_ptr() as *mut u8),
        };
        SharedSlot { dtype, len, ptr, version: None }
    }

    /// The slot of a variable the call only reads, at `version`; `None` if
    /// the value is not in row-major layout.
    pub fn unchanged(value: &Value, version: u64) -> Option<SharedSlot> {
        let (len, ptr) = rhea_graph::with_array!(value, a => (a.len(), a.as_slice()?.as_ptr() as *mut u8));
        Some(SharedSlot { dtype: value.dtype(), len, ptr, version: Some(version) })
    }
}

/// The memory of a plan run on the host.
pub struct HostMemory {
    buffers: Vec<Vec<u64>>,
    buffer_ptrs: Vec<*mut u8>,
    const_ptrs: Vec<*const u8>,
    /// For one call: the inputs' data, row-major copies of those that were
    /// not, and the shared variables' storage.
    feed_ptrs: Vec<*const u8>,
    feed_copies: Vec<Option<Value>>,
    /// The shared variables' storage during a call.
    pub slots: Vec<SharedSlot>,
}

// SAFETY: the pointers into the caller's values live only for one call;
// the rest is owned data (the constants are the layout's, which the plan
// owns beside this memory and never changes).
unsafe impl Send for HostMemory {}

impl HostMemory {
    /// The layout's buffers, zeroed; a buffer that cannot be allocated is an
    /// error naming the values planned into it.
    pub fn new(p: &Program, memory: &MemoryPlan, layout: &Layout) -> Result<HostMemory, ExecError> {
        let mut buffers = Vec::with_capacity(layout.buffers.len());
        for (b, &bytes) in layout.buffers.iter().enumerate() {
            let mut buffer: Vec<u64> = Vec::new();
            if buffer.try_reserve_exact(bytes.div_ceil(8)).is_err() {
                return Err(out_of_memory(p, memory, b));
            }
            buffer.resize(bytes.div_ceil(8), 0);
            buffers.push(buffer);
        }
        let buffer_ptrs = buffers.iter_mut().map(|b| b.as_mut_ptr() as *mut u8).collect();
        let const_ptrs = layout.consts.iter().map(data_ptr).collect();
        Ok(HostMemory {
            buffers,
            buffer_ptrs,
            const_ptrs,
            feed_ptrs: Vec::new(),
            feed_copies: Vec::new(),
            slots: Vec::new(),
        })
    }

    /// Binds one call's inputs (checked against the layout) and shared
    /// variables: those the call only reads keep their version, so that
    /// what steps derive from them can be kept between calls.
    pub fn bind(&mut self, layout: &Layout, feeds: &[Value], shared: &mut dyn SharedValues) -> Result<(), ExecError> {
        self.feed_copies = layout.check_feeds(feeds)?;
        self.feed_ptrs.clear();
        for (i, v) in feeds.iter().enumerate() {
            self.feed_ptrs.push(data_ptr(self.feed_copies.get(i).and_then(Option::as_ref).unwrap_or(v)));
        }
        self.slots.clear();
        for (i, var) in layout.shared.iter_ids() {
            let read = match shared.value(i) {
                Some(v) if !var.written => SharedSlot::unchanged(v, shared.version(i)),
                _ => None,
            };
            let slot = match read {
                Some(slot) => slot,
                None => shared
                    .elements_mut(i)
                    .map(SharedSlot::of)
                    .ok_or_else(|| ExecError::input(format!("shared variable {:?} has no value", var.name)))?,
            };
            layout.check_shared(i, slot.dtype, slot.len)?;
            self.slots.push(slot);
        }
        Ok(())
    }

    /// Binds feeds already in host memory (for a loop's body: rows of the
    /// loop's buffers, its states), unchecked: the caller promises they hold
    /// the layout's feeds. No shared variables.
    pub fn bind_raw(&mut self, feeds: &[*const u8]) {
        self.feed_copies.clear();
        self.feed_ptrs.clear();
        self.feed_ptrs.extend_from_slice(feeds);
        self.slots.clear();
    }

    /// Where `src` lives during this call.
    pub fn addr(&self, src: Source) -> *mut u8 {
        match src {
            Source::Feed(i) => self.feed_ptrs[i.index()] as *mut u8,
            Source::Shared(i) => self.slots[i.index()].ptr,
            Source::Const(i) => self.const_ptrs[i.index()] as *mut u8,
            Source::Buffer(b) => self.buffer_ptrs[b.index()],
        }
    }

    /// The slot of shared variable `i` this call.
    pub fn slot(&self, i: SharedId) -> &SharedSlot {
        &self.slots[i.index()]
    }

    /// The memory's total size, for tests.
    pub fn buffer_bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.len() * 8).sum()
    }
}

/// A type with no values: what a device that runs nothing natively prepares.
pub enum Never {}

/// Host memory with nothing native: every step runs on the host's evaluator.
#[expect(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "a device's addresses come only from its own `addr`, for the layout's operands"
)]
impl Device for HostMemory {
    type Addr = *mut u8;
    type Kernel = Never;
    type Library = Never;

    fn addr(&self, src: Source) -> *mut u8 {
        HostMemory::addr(self, src)
    }
    fn launch(&self, k: &Never, _: &[*mut u8], _: &[*mut u8]) -> Result<(), String> {
        match *k {}
    }
    fn library(&self, l: &Never, _: &[*mut u8], _: *mut u8, _: (&[*mut u8], &[*mut u8])) -> Result<(), String> {
        match *l {}
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
    fn host_ptr(&self, at: *mut u8) -> Option<*mut u8> {
        Some(at)
    }
}

/// Copies `bytes` between two host addresses of a plan.
///
/// # Safety
/// Both must be valid for `bytes` (addresses of a layout's operands are).
pub unsafe fn host_copy(to: *mut u8, from: *mut u8, bytes: usize) {
    // SAFETY: as the caller promises.
    unsafe { std::ptr::copy(from, to, bytes) }
}

/// Writes `value`'s elements at a host address sized for them.
///
/// # Safety
/// `at` must be valid for writing all of `value`'s elements (the executor
/// checks a value against the operand at its address).
pub unsafe fn host_upload(at: *mut u8, value: &Value) {
    let v = standard(value);
    let bytes = v.len() * v.dtype().size_bytes();
    // SAFETY: as the caller promises.
    unsafe { std::ptr::copy(data_ptr(&v), at, bytes) }
}

/// A value's first element.
pub fn data_ptr(v: &Value) -> *const u8 {
    rhea_graph::with_array!(v, a => a.as_ptr() as *const u8)
}

/// A copy of the value of `dtype` and `shape` at `ptr`.
///
/// # Safety
/// `ptr` must hold that many elements of `dtype`.
pub unsafe fn value_at(ptr: *const u8, dtype: DType, shape: &[usize]) -> Value {
    let n: usize = shape.iter().product();
    let sh = IxDyn(shape);
    macro_rules! copy {
        ($t:ty, $variant:ident) => {{
            // SAFETY: as the caller promises.
            let data = unsafe { std::slice::from_raw_parts(ptr as *const $t, n) }.to_vec();
            Value::$variant(ArrayD::from_shape_vec(sh, data).expect("length matches shape"))
        }};
    }
    match dtype {
        DType::F32 => copy!(f32, F32),
        DType::F64 => copy!(f64, F64),
        DType::I32 => copy!(i32, I32),
        DType::I64 => copy!(i64, I64),
        // SAFETY: kernels store bools as the bytes 0 and 1.
        DType::Bool => copy!(bool, Bool),
    }
}

/// The reference interpreter as an engine: every step on the host, every
/// buffer checked to hold the value read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interp;

struct InterpPlan {
    layout: Layout,
    memory: HostMemory,
    guard: Option<NanCheck>,
    prepped: Vec<Prepped<Never, Never>>,
}

impl Engine for Interp {
    fn target(&self) -> Target {
        Target::host()
    }

    fn prepare(
        &self,
        p: &Program,
        memory: &MemoryPlan,
        layout: Layout,
        guard: Option<NanCheck>,
    ) -> Result<Box<dyn Plan>, ExecError> {
        let host = HostMemory::new(p, memory, &layout)?;
        let prepped = layout.steps.iter().map(|_| Prepped::None).collect();
        Ok(Box::new(InterpPlan { layout, memory: host, guard, prepped }))
    }
}

impl Plan for InterpPlan {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn run(
        &mut self,
        feeds: &[Value],
        shared: &mut dyn SharedValues,
        times: Option<&mut [Duration]>,
    ) -> Result<Vec<Value>, ExecError> {
        self.memory.bind(&self.layout, feeds, shared)?;
        let mut ctl =
            Control { times, guard: self.guard.as_ref(), holders: Some(vec![None; self.layout.buffers.len()]) };
        run_steps(&self.memory, &self.layout, &self.prepped, &mut ctl)?;
        let values = outputs(&self.memory, &self.layout)?;
        write_updates(&self.memory, &self.layout)?;
        Ok(values)
    }
}
