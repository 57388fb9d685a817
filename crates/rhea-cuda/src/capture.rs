//! A CUDA plan's calls: inputs and changed shared variables uploaded, the
//! steps run by the one executor (or replayed as one captured CUDA graph),
//! outputs downloaded, updates copied into the device copies and handed to
//! the host as pending fetches.

use std::sync::Arc;
use std::time::Duration;

use rhea_exec::{Control, ExecError, Layout, Plan, SharedValues, Source, outputs, run_steps, write_updates};
use rhea_graph::Value;

use crate::driver::{Driver, GraphId, Ptr};
use crate::exec::{CudaPlan, OnGpu, cuda};
use crate::memory::{DeviceBuffer, upload, value_bytes};

/// A plan's steps as a CUDA graph: one launch per call instead of one per
/// kernel. Inputs, shared variables and outputs still cross the bus outside
/// the graph; calls with the NaN guard or a profile run step by step.
pub(crate) enum Capture {
    /// Step by step.
    Off,
    /// To be captured at the next call.
    Wanted,
    /// Captured, with the shared variables' device addresses it was captured
    /// with (a graph holds addresses: new ones need a new graph), and whether
    /// it also copies the updates into them.
    Ready { graph: GraphId, shared: Vec<Ptr>, updates: bool },
    /// Not possible, and why.
    Refused(String),
}

impl Capture {
    /// The capture a plan starts with: refused if a step runs on the host.
    pub fn new(wanted: bool, layout: &Layout) -> Capture {
        if !wanted {
            return Capture::Off;
        }
        match layout.steps.iter().enumerate().find(|(_, st)| st.work.on_host()) {
            Some((s, st)) => Capture::Refused(format!("step {s} ({}) runs on the host", st.label)),
            None => Capture::Wanted,
        }
    }

    /// `Ok(true)` once captured, `Ok(false)` before, `Err` with why not.
    pub fn state(&self) -> Option<Result<bool, String>> {
        match self {
            Capture::Off => None,
            Capture::Wanted => Some(Ok(false)),
            Capture::Ready { .. } => Some(Ok(true)),
            Capture::Refused(why) => Some(Err(why.clone())),
        }
    }

    /// Drops the captured graph.
    pub fn release(&mut self, driver: &dyn Driver) {
        if let Capture::Ready { graph, .. } = *self {
            driver.drop_graph(graph);
            *self = Capture::Wanted;
        }
    }

    /// Replays the graph, capturing it first if there is none for these
    /// shared addresses. `None`: the steps are still to run one by one (no
    /// graph wanted, or the capture failed, which ran nothing and is
    /// remembered); `Some(true)` when the graph also made the updates.
    fn replay(&mut self, dev: &OnGpu) -> Result<Option<bool>, ExecError> {
        match self {
            Capture::Ready { shared, .. } if shared.as_slice() == dev.shared => {}
            Capture::Ready { .. } | Capture::Wanted => {
                self.release(&*dev.plan.driver);
                let updates = updates_capturable(&dev.plan.layout);
                *self = match record(dev, updates) {
                    Ok(graph) => Capture::Ready { graph, shared: dev.shared.to_vec(), updates },
                    Err(why) => Capture::Refused(format!("capturing failed: {why}")),
                };
            }
            Capture::Off | Capture::Refused(_) => return Ok(None),
        }
        let Capture::Ready { graph, updates, .. } = *self else { return Ok(None) };
        dev.plan.driver.replay(graph).map_err(|e| ExecError::device(format!("replaying the CUDA graph: {e}")))?;
        Ok(Some(updates))
    }
}

/// Whether the updates can be the graph's last copies: no update value is
/// a shared variable (a swap must read the old values first) and no output
/// is one (outputs are read after the graph, and must be the old values).
fn updates_capturable(layout: &Layout) -> bool {
    let shared = |src: Source| matches!(src, Source::Shared(_));
    !layout.updates.iter().any(|u| shared(u.value.src)) && !layout.outputs.iter().any(|o| shared(o.src))
}

/// Captures every step, then (with `updates`) the copies of the updates
/// into the shared variables, into a graph; the capture always ends.
fn record(dev: &OnGpu, updates: bool) -> Result<GraphId, String> {
    let driver = &*dev.plan.driver;
    driver.begin_capture()?;
    // Ends the capture if a step panics, so the device (and the other
    // threads waiting on it) are not left capturing.
    struct Open<'d>(Option<&'d dyn Driver>);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            if let Some(driver) = self.0
                && let Ok(graph) = driver.end_capture()
            {
                driver.drop_graph(graph);
            }
        }
    }
    let mut open = Open(Some(driver));
    let layout = &dev.plan.layout;
    let steps = run_steps(dev, layout, &dev.plan.prepped, &mut Control::default())
        .and_then(|()| if updates { write_updates(dev, layout) } else { Ok(()) })
        .map_err(|e| e.to_string());
    open.0 = None;
    let graph = driver.end_capture();
    match (steps, graph) {
        (Ok(()), graph) => graph,
        (Err(e), Ok(graph)) => {
            driver.drop_graph(graph);
            Err(e)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

impl Plan for CudaPlan {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn cuda_graph(&self) -> Option<Result<bool, String>> {
        self.capture.state()
    }

    fn run(
        &mut self,
        feeds: &[Value],
        shared: &mut dyn SharedValues,
        times: Option<&mut [Duration]>,
    ) -> Result<Vec<Value>, ExecError> {
        self.gpu().bind().map_err(cuda)?;
        self.layout.check_feeds(feeds)?;
        for (v, buffer) in feeds.iter().zip(&self.feeds) {
            upload(&*self.driver, buffer.ptr, &value_bytes(v)).map_err(cuda)?;
        }
        let store = self.store.clone();
        let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
        let mut addrs = Vec::with_capacity(self.layout.shared.len());
        for (i, var) in self.layout.shared.iter_ids() {
            let value = shared
                .value(i)
                .ok_or_else(|| ExecError::input(format!("shared variable {:?} has no value", var.name)))?;
            if value.dtype() != var.dtype || value.shape() != var.shape.as_slice() {
                return Err(ExecError::input(format!("shared variable {:?}: its value changed type", var.name)));
            }
            let version = shared.version(i);
            if store.buffers.get(&var.node).is_none_or(|(_, v)| *v != version) {
                let buffer = match store.buffers.remove(&var.node) {
                    Some((b, _)) => b,
                    None => {
                        let what = format!("shared variable {:?}", var.name);
                        let bytes = value.len() * value.dtype().size_bytes();
                        Arc::new(DeviceBuffer::alloc(self.gpu(), bytes, &what).map_err(cuda)?)
                    }
                };
                upload(&*self.driver, buffer.ptr, &value_bytes(value)).map_err(cuda)?;
                store.buffers.insert(var.node, (buffer, version));
            }
            addrs.push(store.buffers[&var.node].0.ptr);
        }
        let mut capture = std::mem::replace(&mut self.capture, Capture::Off);
        let values = call(self, &mut capture, &addrs, times);
        self.capture = capture;
        let values = values?;
        // The new values stay on the device until someone reads them.
        for u in &self.layout.updates {
            let var = &self.layout.shared[u.shared];
            let buffer = store.buffers[&var.node].0.clone();
            let (dtype, shape) = (var.dtype, var.shape.clone());
            let version =
                shared.set_pending(u.shared, Arc::new(move || buffer.read(dtype, &shape).map_err(|e| e.to_string())));
            if let Some(entry) = store.buffers.get_mut(&var.node) {
                entry.1 = version;
            }
        }
        Ok(values)
    }
}

/// The steps (or their graph), the outputs, then the updates.
fn call(
    plan: &CudaPlan,
    capture: &mut Capture,
    shared: &[Ptr],
    times: Option<&mut [Duration]>,
) -> Result<Vec<Value>, ExecError> {
    let dev = OnGpu { plan, shared };
    let replayed = match times.is_some() || plan.guard.is_some() {
        true => None,
        false => capture.replay(&dev)?,
    };
    if replayed.is_none() {
        let mut ctl = Control { times, guard: plan.guard.as_ref(), holders: None };
        run_steps(&dev, &plan.layout, &plan.prepped, &mut ctl)?;
    }
    rhea_exec::Device::synchronize(&dev).map_err(ExecError::device)?;
    let values = outputs(&dev, &plan.layout)?;
    if replayed != Some(true) {
        write_updates(&dev, &plan.layout)?;
    }
    Ok(values)
}
