//! What a backend gives the facade: an [`Engine`] (its target, and plans
//! prepared from layouts) and the [`Plan`]s it prepares. The facade holds
//! one engine and never asks which backend it is.

use std::time::Duration;

use rhea_graph::{ElementsMut, Fetch, NodeId, Value};
use rhea_opt::{MemoryPlan, Program, Target};

use crate::NanCheck;
use crate::error::ExecError;
use crate::ids::SharedId;
use crate::layout::Layout;

/// A function's interface in its program's graph.
#[derive(Clone, Copy, Debug)]
pub struct Io<'a> {
    /// The input nodes, in call order.
    pub inputs: &'a [NodeId],
    /// The output nodes, in order.
    pub outputs: &'a [NodeId],
    /// (shared variable, new value) pairs, in the graph's update order.
    pub updates: &'a [(NodeId, NodeId)],
}

/// A backend: what it can run, and plans for it.
pub trait Engine {
    /// What it runs natively (the input to [`rhea_opt::decide`]).
    fn target(&self) -> Target;

    /// A plan that runs `layout` (laid out from `program` with `memory`),
    /// checking every step with `guard` if given.
    fn prepare(
        &self,
        program: &Program,
        memory: &MemoryPlan,
        layout: Layout,
        guard: Option<NanCheck>,
    ) -> Result<Box<dyn Plan>, ExecError>;

    /// Where shared values live between calls: `Some(owner)` when the
    /// backend keeps device copies under that owner (their host values are
    /// pending, [`SharedValues::set_pending`]).
    fn owner(&self) -> Option<u64> {
        None
    }
}

/// A program ready to run at one set of sizes.
pub trait Plan {
    /// What it runs.
    fn layout(&self) -> &Layout;

    /// Runs the steps on `feeds` (in call order) with the shared variables
    /// of [`Layout::shared`] in `shared`, writes every update, and returns
    /// the outputs. A call that fails changes nothing. With `times`, each
    /// program step's wall time is added to its slot.
    fn run(
        &mut self,
        feeds: &[Value],
        shared: &mut dyn SharedValues,
        times: Option<&mut [Duration]>,
    ) -> Result<Vec<Value>, ExecError>;

    /// Whether [`Plan::run_host`] runs this plan (its memory is the host's).
    fn runs_on_host(&self) -> bool {
        false
    }

    /// Runs the steps on feeds already in host memory, at `feeds` (in call
    /// order), and copies each output to its address in `outputs`: what a
    /// loop calls once per step, with no value made or checked. Plans that
    /// do not [`Plan::runs_on_host`] refuse.
    ///
    /// # Safety
    /// Each feed address must hold the layout's feed (its dtype and shape,
    /// row-major) and each output address room for the layout's output,
    /// none of them overlapping another; the plan must have no shared
    /// variables.
    unsafe fn run_host(&mut self, feeds: &[*const u8], outputs: &[*mut u8]) -> Result<(), ExecError> {
        let _ = (feeds, outputs);
        Err(ExecError::plan("this plan does not run on host memory"))
    }

    /// For backends that capture a plan's steps as one CUDA graph:
    /// `Ok(true)` once they run so, `Ok(false)` before the first call, `Err`
    /// with why they cannot; `None` when no graph was asked for.
    fn cuda_graph(&self) -> Option<Result<bool, String>> {
        None
    }
}

/// The host storage of the shared variables a call reads and updates, by
/// the layout's numbering.
pub trait SharedValues {
    /// Variable `i`'s value (`None`: it has none).
    fn value(&self, i: SharedId) -> Option<&Value>;
    /// Its version: it changes whenever the value does.
    fn version(&self, i: SharedId) -> u64;
    /// Its elements, to write in place (row-major; made so if they were not).
    fn elements_mut(&mut self, i: SharedId) -> Option<ElementsMut<'_>>;
    /// Its new value, held on a device until `fetch` is read; gives the
    /// version the value now has.
    fn set_pending(&mut self, i: SharedId, fetch: Fetch) -> u64;
}
