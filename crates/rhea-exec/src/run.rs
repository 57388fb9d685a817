//! The executor: a layout's steps run in order on a [`Device`], with the
//! host fallback, profile timing, the NaN guard, the plan check of the
//! reference interpreter, and Theano's staging of updates.

use std::time::{Duration, Instant};

use rhea_graph::{NodeId, Value};

use crate::error::{ErrorKind, ExecError};
use crate::layout::{Layout, Operand, PlanStep, Source, Work};
use crate::{BufferId, NanCheck};

/// What a backend's device does: the executor asks for nothing else.
pub trait Device {
    /// A device address.
    type Addr: Copy;
    /// A kernel prepared at the layout's sizes.
    type Kernel;
    /// A library op prepared at the layout's sizes (with its epilogue).
    type Library;

    /// Where `src` lives for this call.
    fn addr(&self, src: Source) -> Self::Addr;
    /// Launches a kernel on its inputs and outputs (not waited for).
    fn launch(&self, k: &Self::Kernel, inputs: &[Self::Addr], outputs: &[Self::Addr]) -> Result<(), String>;
    /// Runs a library op: its inputs, its output, and its epilogue kernel's
    /// inputs and outputs (empty without one).
    fn library(
        &self,
        l: &Self::Library,
        inputs: &[Self::Addr],
        out: Self::Addr,
        epilogue: (&[Self::Addr], &[Self::Addr]),
    ) -> Result<(), String>;
    /// Copies `bytes` from `from` to `to`.
    fn copy(&self, to: Self::Addr, from: Self::Addr, bytes: usize) -> Result<(), String>;
    /// The value at `at`, after the steps launched so far.
    fn download(&self, at: Self::Addr, o: &Operand) -> Result<Value, String>;
    /// Writes `value` at `at`.
    fn upload(&self, at: Self::Addr, value: &Value) -> Result<(), String>;
    /// Waits for every step launched.
    fn synchronize(&self) -> Result<(), String> {
        Ok(())
    }
    /// The host address of `at`, for devices whose memory is the host's
    /// (loops then run their steps on it directly).
    fn host_ptr(&self, at: Self::Addr) -> Option<*mut u8> {
        let _ = at;
        None
    }
}

/// What a device prepared for one step.
pub enum Prepped<K, L> {
    /// A kernel launch.
    Kernel(K),
    /// A library call.
    Library(L),
    /// Nothing to prepare (copies, host steps, merged steps).
    None,
}

/// How a run is watched.
#[derive(Default)]
pub struct Control<'a> {
    /// One slot per program step: each step's wall time is added (the
    /// device is synchronized after each step).
    pub times: Option<&'a mut [Duration]>,
    /// The NaN guard: every step's float outputs are checked.
    pub guard: Option<&'a NanCheck>,
    /// The reference interpreter's plan check: which node each buffer holds,
    /// so a plan that reuses a buffer too early is caught by name.
    pub holders: Option<Vec<Option<NodeId>>>,
}

/// Runs every step of `layout` on `dev`, with what it prepared for each.
pub fn run_steps<D: Device>(
    dev: &D,
    layout: &Layout,
    prepped: &[Prepped<D::Kernel, D::Library>],
    ctl: &mut Control,
) -> Result<(), ExecError> {
    let mut ins: Vec<D::Addr> = Vec::with_capacity(16);
    let mut outs: Vec<D::Addr> = Vec::with_capacity(8);
    let mut epi_ins: Vec<D::Addr> = Vec::new();
    let mut epi_outs: Vec<D::Addr> = Vec::new();
    let addrs = |v: &mut Vec<D::Addr>, ops: &[Operand]| {
        v.clear();
        v.extend(ops.iter().map(|o| dev.addr(o.src)));
    };
    for (step, prepped) in layout.steps.iter().zip(prepped) {
        let fail = |msg: String| step.error(ErrorKind::Op, msg);
        let device = |msg: String| step.error(ErrorKind::Device, msg);
        if let Some(holders) = &ctl.holders {
            check_holders(step, holders)?;
        }
        let started = ctl.times.as_ref().map(|_| Instant::now());
        match (&step.work, prepped) {
            (Work::Kernel { inputs, outputs, .. }, Prepped::Kernel(k)) => {
                addrs(&mut ins, inputs);
                addrs(&mut outs, outputs);
                dev.launch(k, &ins, &outs).map_err(device)?;
            }
            (Work::Library { inputs, out, epilogue, .. }, Prepped::Library(l)) => {
                addrs(&mut ins, inputs);
                epi_ins.clear();
                epi_outs.clear();
                if let Some(e) = epilogue {
                    addrs(&mut epi_ins, &e.inputs);
                    addrs(&mut epi_outs, &e.outputs);
                }
                dev.library(l, &ins, dev.addr(out.src), (&epi_ins, &epi_outs)).map_err(fail)?;
            }
            (Work::Copy { from, to }, _) => {
                dev.copy(dev.addr(to.src), dev.addr(from.src), from.bytes()).map_err(device)?;
            }
            (Work::HostOp { op, inputs, out }, _) => {
                let values = download_all(dev, inputs).map_err(device)?;
                let refs: Vec<&Value> = values.iter().collect();
                let v = rhea_interp::eval_op(op, &refs, &layout.bindings).map_err(fail)?;
                store(dev, out, &v).map_err(fail)?;
            }
            (Work::HostKernel { kernel, inputs, outputs }, _) => {
                let values = download_all(dev, inputs).map_err(device)?;
                let refs: Vec<&Value> = values.iter().collect();
                let results = rhea_kernel::eval_kernel(kernel, &refs, &layout.bindings).map_err(fail)?;
                for (o, v) in outputs.iter().zip(&results) {
                    store(dev, o, v).map_err(fail)?;
                }
            }
            (Work::Loop(l), _) => {
                let body = l.body.as_ref().ok_or_else(|| step.error(ErrorKind::Plan, "its body was not prepared"))?;
                match crate::looping::host_loop(dev, layout, l, body) {
                    Some(done) => done.map_err(fail)?,
                    None => value_loop(dev, layout, l, body).map_err(fail)?,
                }
            }
            (Work::Merged, _) => {}
            (Work::Kernel { .. } | Work::Library { .. }, _) => {
                return Err(step.error(ErrorKind::Plan, "the device prepared nothing for this step"));
            }
        }
        if let (Some(times), Some(started)) = (ctl.times.as_deref_mut(), started) {
            dev.synchronize().map_err(device)?;
            if let Some(slot) = times.get_mut(step.step.index()) {
                *slot += started.elapsed();
            }
        }
        if let Some(check) = ctl.guard {
            dev.synchronize().map_err(device)?;
            guard(dev, check, step)?;
        }
        if let Some(holders) = &mut ctl.holders {
            for o in step.work.operands().1 {
                if let Source::Buffer(b) = o.src {
                    holders[b.index()] = Some(o.node);
                }
            }
        }
    }
    Ok(())
}

/// A loop step through values: its inputs downloaded, the loop's meaning
/// (`run_scan_with`) run with the body's plan as its step, the results read
/// stored (any device).
fn value_loop<D: Device>(
    dev: &D,
    layout: &Layout,
    l: &crate::looping::LoopStep,
    body: &crate::looping::BodyPlan,
) -> Result<(), String> {
    let values = download_all(dev, &l.inputs)?;
    let refs: Vec<&Value> = values.iter().collect();
    let mut keep = vec![false; 1 + l.scan.results()];
    for (k, _) in &l.outputs {
        if let Some(slot) = keep.get_mut(*k) {
            *slot = true;
        }
    }
    let results = rhea_interp::run_scan_with(&l.scan, &refs, &layout.bindings, &keep, body.inputs(), &mut |feeds| {
        body.step(feeds)
    })?;
    for (k, o) in &l.outputs {
        let v = results.get(*k).and_then(Option::as_ref);
        store(dev, o, v.ok_or_else(|| format!("it gave no value {k}"))?)?;
    }
    Ok(())
}

/// Each read buffer must hold the value read (the interpreter's check).
fn check_holders(step: &PlanStep, holders: &[Option<NodeId>]) -> Result<(), ExecError> {
    for o in step.work.operands().0 {
        let Source::Buffer(b) = o.src else { continue };
        match holders[b.index()] {
            Some(h) if h == o.node => {}
            Some(h) => return Err(plan_error(b, format!("holds {h} when {} is read", o.node))),
            None => return Err(ExecError::plan(format!("{} is read before it is written", o.node))),
        }
    }
    Ok(())
}

fn plan_error(b: BufferId, msg: String) -> ExecError {
    ExecError::plan(format!("buffer {} {msg}", b.index()))
}

fn download_all<D: Device>(dev: &D, ops: &[Operand]) -> Result<Vec<Value>, String> {
    ops.iter().map(|o| dev.download(dev.addr(o.src), o)).collect()
}

/// Writes a host step's result, checked to be what the plan sized.
fn store<D: Device>(dev: &D, o: &Operand, v: &Value) -> Result<(), String> {
    if v.dtype() != o.dtype || v.shape() != o.shape.as_slice() {
        return Err(format!("gave {}{:?} where {}{:?} was planned", v.dtype(), v.shape(), o.dtype, o.shape));
    }
    dev.upload(dev.addr(o.src), v)
}

/// The NaN guard after a step: its first float output holding a NaN or an
/// infinity, as the check's message naming the op that made it.
fn guard<D: Device>(dev: &D, check: &NanCheck, step: &PlanStep) -> Result<(), ExecError> {
    let (reads, writes) = step.work.operands();
    let device = |msg: String| step.error(ErrorKind::Device, msg);
    let mut inputs: Option<Vec<Value>> = None;
    for out in writes {
        if !out.dtype.is_float() {
            continue;
        }
        let v = dev.download(dev.addr(out.src), out).map_err(device)?;
        if v.to_f64_vec().iter().all(|x| x.is_finite()) {
            continue;
        }
        if inputs.is_none() {
            let values: Result<Vec<Value>, String> = reads.iter().map(|o| dev.download(dev.addr(o.src), o)).collect();
            inputs = Some(values.map_err(device)?);
        }
        let refs: Vec<&Value> = inputs.iter().flatten().collect();
        if let Some(msg) = check(step.step.index(), out.node, &v, &refs) {
            return Err(ExecError::new(ErrorKind::NanGuard, msg));
        }
    }
    Ok(())
}

/// The outputs' values, read before any update lands (an output may be a
/// shared variable's old value).
pub fn outputs<D: Device>(dev: &D, layout: &Layout) -> Result<Vec<Value>, ExecError> {
    download_all(dev, &layout.outputs).map_err(ExecError::device)
}

/// Writes every update not written in place into its shared variable.
/// Values that live outside the buffers (another shared variable: a swap)
/// are read before any variable changes, so every update sees the values
/// from before the call.
pub fn write_updates<D: Device>(dev: &D, layout: &Layout) -> Result<(), ExecError> {
    let staged: Vec<Option<Value>> = layout
        .updates
        .iter()
        .map(|u| match u.value.src {
            Source::Buffer(_) => Ok(None),
            _ if u.in_place => Ok(None),
            src => dev.download(dev.addr(src), &u.value).map(Some),
        })
        .collect::<Result<_, _>>()
        .map_err(ExecError::device)?;
    for (u, staged) in layout.updates.iter().zip(staged) {
        if u.in_place {
            continue;
        }
        let to = dev.addr(Source::Shared(u.shared));
        match staged {
            Some(v) => dev.upload(to, &v),
            None => dev.copy(to, dev.addr(u.value.src), u.value.bytes()),
        }
        .map_err(ExecError::device)?;
    }
    Ok(())
}
