//! Compiled functions: Theano's `function(inputs, outputs, updates=...)`.
//!
//! A [`Function`] holds its own copy of the part of the graph it needs
//! (with `givens` substituted), specialized and cached per distinct set of
//! input shapes. Shared variables stay in the builder's graph, so every
//! function built on it sees the same parameters: a training step's updates
//! are what an evaluation function reads next.

use std::collections::{HashMap, HashSet};

use rhea_exec::{Engines, ExecError, Io, Layout, SharedId, SharedValues};
use rhea_graph::{Builder, ElementsMut, Fetch, Graph, GraphError, NodeId, Op, Value, Var};
use rhea_interp::InterpError;
use rhea_opt::{Decisions, Mode, OptError, Options, Program, StepKind};

pub use crate::backend::Backend;
use crate::profile::{Profile, env_flag, profiling_requested};

/// What went wrong while compiling or calling a function.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// Building the function's graph failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Running failed (a bad input, a value error in an op).
    #[error(transparent)]
    Run(#[from] InterpError),
    /// A backend failed to run a plan (a bad input, a value error in an op,
    /// the device, memory, the NaN guard: see its kind).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The optimizer failed (a compiler bug, named by pass).
    #[error(transparent)]
    Opt(#[from] OptError),
    /// Code generation failed.
    #[error(transparent)]
    Cpu(#[from] rhea_cpu::CpuError),
    /// The GPU is missing or failed.
    #[error("backend cuda: {0}")]
    Cuda(rhea_cuda::CudaError),
    /// The function's definition is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A call's plan needs more memory than the budget allows.
    #[error("{0}")]
    Memory(String),
    /// The CPU's worker threads could not be started (a thread or memory limit).
    #[error("{0}")]
    Threads(String),
    /// A call gave the wrong number of inputs.
    #[error("the function takes {expected} input(s) ({names}), got {got}")]
    Arity {
        /// How many it takes.
        expected: usize,
        /// Their names.
        names: String,
        /// How many were given.
        got: usize,
    },
}

impl From<rhea_cuda::CudaError> for FunctionError {
    fn from(e: rhea_cuda::CudaError) -> FunctionError {
        FunctionError::Cuda(e)
    }
}

type Result<T> = std::result::Result<T, FunctionError>;

/// Starts a function from `inputs` to `outputs`; finish with
/// [`FunctionBuilder::compile`].
///
/// ```
/// use rhea::{Builder, DType, Value, function};
/// let g = Builder::new();
/// let x = g.input("x", DType::F64, [2])?;
/// let total = g.shared("total", Value::from(0.0f64))?;
/// let s = x.sum_all()?;
/// let mut f = function(&[&x], &[&s]).updates([(total.clone(), &total + &s)]).compile()?;
/// f.call(&[Value::from(ndarray::array![1.0f64, 2.0])])?;
/// f.call(&[Value::from(ndarray::array![3.0f64, 4.0])])?;
/// assert_eq!(f.shared("total")?, Value::from(10.0f64));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn function(inputs: &[&Var], outputs: &[&Var]) -> FunctionBuilder {
    FunctionBuilder {
        inputs: inputs.iter().map(|&v| v.clone()).collect(),
        outputs: outputs.iter().map(|&v| v.clone()).collect(),
        updates: Vec::new(),
        givens: Vec::new(),
        backend: Backend::default(),
        options: default_options(),
        nan_guard: env_flag("RHEA_NAN_GUARD"),
        cuda_graph: env_flag("RHEA_CUDA_GRAPH"),
        epilogues: !env_flag("RHEA_NO_EPILOGUE"),
        max_memory: None,
    }
}

/// The optimizer's defaults for compiled functions: every pass, constants
/// folded by the interpreter.
pub fn default_options() -> Options {
    Options { evaluator: Some(rhea_interp::fold_constant), ..Options::default() }
}

/// A function being defined.
pub struct FunctionBuilder {
    inputs: Vec<Var>,
    outputs: Vec<Var>,
    updates: Vec<(Var, Var)>,
    givens: Vec<(Var, Var)>,
    backend: Backend,
    options: Options,
    nan_guard: bool,
    cuda_graph: bool,
    epilogues: bool,
    max_memory: Option<u64>,
}

impl FunctionBuilder {
    /// On the CPU backend, runs the flat kernel after a matrix product on
    /// each block of the product's output while it is in cache (the
    /// default; `RHEA_NO_EPILOGUE=1` turns it off for every function, to
    /// measure it). The plan decides, and `rhea dump` shows it.
    pub fn epilogues(mut self, on: bool) -> Self {
        self.epilogues = on;
        self
    }

    /// Refuses to run a call whose plan needs more than `bytes` for its
    /// intermediate values at their peak, before anything is allocated: the
    /// error names the peak and the largest buffers. (Inputs, outputs and
    /// shared variables are the caller's and not counted.)
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// The optimizer mode: `Mode::Fast` (the default) or `Mode::None`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.options.mode = mode;
        self
    }

    /// All optimizer options (rules excluded or included, budgets).
    pub fn optimizer(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// After each call, each shared variable takes its paired value, all
    /// computed from the values before the call.
    pub fn updates(mut self, pairs: impl IntoIterator<Item = (Var, Var)>) -> Self {
        self.updates.extend(pairs);
        self
    }

    /// Replaces each first var by the second (of the same type) throughout
    /// the function's graph.
    pub fn givens(mut self, pairs: impl IntoIterator<Item = (Var, Var)>) -> Self {
        self.givens.extend(pairs);
        self
    }

    /// Checks every step's float outputs for NaN and infinities and stops a
    /// call at the first step that makes one, naming its node, op, the line
    /// that built it and its inputs' statistics (Theano's NanGuardMode,
    /// JAX's `debug_nans`). `RHEA_NAN_GUARD=1` turns it on for every
    /// function. Updates then always land after the last step.
    pub fn nan_guard(mut self, on: bool) -> Self {
        self.nan_guard = on;
        self
    }

    /// On the CUDA backend, runs each call's kernels and products as one
    /// captured CUDA graph: one launch per call instead of one per kernel,
    /// for steps small enough that launching costs more than computing.
    /// Functions with a step the GPU cannot run are not captured
    /// ([`Function::cuda_graph`] says why). `RHEA_CUDA_GRAPH=1` turns it
    /// on for every function; other backends ignore it.
    pub fn cuda_graph(mut self, on: bool) -> Self {
        self.cuda_graph = on;
        self
    }

    /// Chooses the backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Checks the definition and builds the function.
    pub fn compile(self) -> Result<Function> {
        let all = self.inputs.iter().chain(&self.outputs).chain(self.updates.iter().flat_map(|(a, b)| [a, b]));
        let all: Vec<&Var> = all.chain(self.givens.iter().flat_map(|(a, b)| [a, b])).collect();
        let builder = all
            .first()
            .ok_or_else(|| FunctionError::Invalid("a function needs at least one output or update".into()))?
            .builder()
            .clone();
        if all.iter().any(|v| !v.builder().same_graph(&builder)) {
            return Err(GraphError::ForeignVar.into());
        }
        let source = builder.graph();
        let mut seen = HashSet::new();
        for v in &self.inputs {
            if !matches!(source.node(v.id()).op, Op::Input { .. }) {
                return Err(FunctionError::Invalid(format!("function inputs must be graph inputs, got {v:?}")));
            }
            if !seen.insert(v.id()) {
                return Err(FunctionError::Invalid(format!("input {v:?} is listed twice")));
            }
        }
        let mut updated = HashSet::new();
        for (s, value) in &self.updates {
            let Op::Shared { name } = &source.node(s.id()).op else {
                return Err(FunctionError::Invalid(format!("update target {s:?} is not a shared variable")));
            };
            if !updated.insert(s.id()) {
                return Err(FunctionError::Invalid(format!("shared variable {name:?} is updated twice")));
            }
            if source.ty(value.id()) != source.ty(s.id()) {
                return Err(FunctionError::Invalid(format!(
                    "update of {name:?} ({}) has type {}; it must match exactly",
                    source.ty(s.id()),
                    source.ty(value.id())
                )));
            }
        }
        let givens: HashMap<NodeId, NodeId> = self.givens.iter().map(|(a, b)| (a.id(), b.id())).collect();
        for (a, b) in &self.givens {
            if source.ty(a.id()) != source.ty(b.id()) {
                return Err(FunctionError::Invalid(format!("givens replaces {a:?} with {b:?} of another type")));
            }
        }
        let declared: HashSet<NodeId> = self.inputs.iter().map(Var::id).collect();
        let mut copy = Copier {
            source: &source,
            graph: Graph::new(),
            map: HashMap::new(),
            givens,
            declared,
            pending: HashSet::new(),
        };
        let inputs = self
            .inputs
            .iter()
            .map(|v| Ok((source.leaf_name(v.id()).expect("inputs have names").to_string(), copy.copy(v.id())?)))
            .collect::<Result<Vec<_>>>()?;
        let outputs = self.outputs.iter().map(|v| copy.copy(v.id())).collect::<Result<Vec<_>>>()?;
        let updates = self.updates.iter().map(|(s, v)| Ok((s.id(), copy.copy(v.id())?))).collect::<Result<Vec<_>>>()?;
        let shared_origin: HashMap<NodeId, NodeId> = copy
            .map
            .iter()
            .filter(|(old, _)| matches!(source.node(**old).op, Op::Shared { .. }))
            .map(|(&old, &new)| (new, old))
            .collect();
        let mut graph = copy.graph;
        drop(source);
        graph.check_symbols_bound().map_err(FunctionError::Invalid)?;
        // The optimizer keeps what outputs and updates need; ids may change,
        // so the roots are read back from the optimized graph.
        for (i, &o) in outputs.iter().enumerate() {
            graph.set_output(&format!("out{i}"), o);
        }
        let private_shared: HashMap<NodeId, NodeId> = shared_origin.iter().map(|(&p, &o)| (o, p)).collect();
        for &(shared, value) in &updates {
            graph.add_update(private_shared[&shared], value)?;
        }
        let program = rhea_opt::compile(graph, &self.options)?;
        let outputs = program.graph.outputs().iter().map(|(_, id)| *id).collect();
        let updates = program.graph.updates().iter().map(|&(s, v)| (shared_origin[&s], v)).collect();
        let engines = self.backend.engines(&program, self.cuda_graph, self.epilogues)?;
        let target = if self.nan_guard { engines.main.target().unfused() } else { engines.main.target() };
        let decisions = rhea_opt::decide(&program, &target);
        Ok(Function {
            engines,
            decisions,
            builder,
            program,
            inputs,
            outputs,
            updates,
            shared_origin,
            backend: self.backend,
            nan_guard: self.nan_guard,
            max_memory: self.max_memory,
            plans: Vec::new(),
            last_plan: 0,
            profile: profiling_requested().then(Profile::default),
        })
    }
}

/// Copies the nodes a function needs into its own graph, substituting givens.
struct Copier<'s> {
    source: &'s Graph,
    graph: Graph,
    map: HashMap<NodeId, NodeId>,
    givens: HashMap<NodeId, NodeId>,
    declared: HashSet<NodeId>,
    /// givens whose replacement is being copied
    pending: HashSet<NodeId>,
}

impl Copier<'_> {
    /// Copies `root` and what it depends on, iteratively (graphs can be deep).
    fn copy(&mut self, root: NodeId) -> Result<NodeId> {
        let mut stack = vec![(root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if self.map.contains_key(&id) {
                continue;
            }
            if let Some(&replacement) = self.givens.get(&id) {
                if let Some(&done) = self.map.get(&replacement) {
                    self.map.insert(id, done);
                } else if !self.pending.insert(id) {
                    return Err(FunctionError::Invalid(format!(
                        "givens replaces {id} with an expression that depends on {id} itself"
                    )));
                } else {
                    stack.push((id, false));
                    stack.push((replacement, false));
                }
                continue;
            }
            let node = self.source.node(id);
            if !expanded && !node.inputs.is_empty() {
                stack.push((id, true));
                stack.extend(node.inputs.iter().map(|&i| (i, false)));
                continue;
            }
            let new = match &node.op {
                Op::Input { name } => {
                    if !self.declared.contains(&id) {
                        return Err(FunctionError::Invalid(format!(
                            "the outputs depend on input {name:?}, which is not an input of the function \
                             (list it, or replace it with givens)"
                        )));
                    }
                    self.graph.add_input(name, node.ty.clone(), node.loc.clone())?
                }
                Op::Shared { name } => self.graph.add_shared_declared(name, node.ty.clone(), node.loc.clone())?,
                op => {
                    let inputs: Vec<NodeId> = node.inputs.iter().map(|i| self.map[i]).collect();
                    let new = self.graph.add(op.clone(), &inputs, node.loc.clone())?;
                    if let Some(name) = &node.name {
                        self.graph.set_name(new, name);
                    }
                    new
                }
            };
            self.map.insert(id, new);
        }
        Ok(self.map[&root])
    }
}

/// A callable compiled from a graph: positional `ndarray` values in,
/// outputs out, shared variables updated.
pub struct Function {
    builder: Builder,
    program: Program,
    /// The backend that runs the plans.
    engines: Engines,
    /// The plan's decisions for it: placement, epilogues, in-place updates.
    decisions: Decisions,
    inputs: Vec<(String, NodeId)>,
    outputs: Vec<NodeId>,
    /// (shared variable in the builder's graph, new value in ours)
    updates: Vec<(NodeId, NodeId)>,
    /// our shared nodes -> the builder's
    shared_origin: HashMap<NodeId, NodeId>,
    backend: Backend,
    /// stop at the first step that makes a NaN or an infinity
    nan_guard: bool,
    /// refuse plans whose peak exceeds this many bytes
    max_memory: Option<u64>,
    /// prepared plan per distinct set of input shapes
    plans: Vec<Plan>,
    /// the plan the last call used (most calls have the same shapes)
    last_plan: usize,
    /// per-step times, when profiling
    profile: Option<Profile>,
}

/// What a function keeps per distinct set of input shapes.
struct Plan {
    /// the input shapes it was made for
    shapes: Vec<Vec<usize>>,
    /// the backend's prepared plan
    prepared: Box<dyn rhea_exec::Plan>,
    /// the builder's shared variables, in the layout's order
    shared: Vec<NodeId>,
}

/// One time slot per step while profiling (`None` otherwise).
fn step_times(profile: &mut Option<Profile>, steps: usize) -> Option<&mut [std::time::Duration]> {
    profile.as_mut().map(|p| {
        p.steps.resize(steps, Default::default());
        p.steps.as_mut_slice()
    })
}

/// The builder's shared variables as a plan numbers them.
struct BuilderShared<'g> {
    graph: &'g mut Graph,
    nodes: &'g [NodeId],
    owner: Option<u64>,
}

impl SharedValues for BuilderShared<'_> {
    fn value(&self, i: SharedId) -> Option<&Value> {
        self.graph.shared_value(self.nodes[i.index()])
    }
    fn version(&self, i: SharedId) -> u64 {
        self.graph.shared_version(self.nodes[i.index()])
    }
    fn elements_mut(&mut self, i: SharedId) -> Option<ElementsMut<'_>> {
        self.graph.shared_elements_mut(self.nodes[i.index()])
    }
    fn set_pending(&mut self, i: SharedId, fetch: Fetch) -> u64 {
        self.graph.set_shared_pending(self.nodes[i.index()], self.owner.unwrap_or(0), fetch)
    }
}

impl Function {
    /// Calls the function: outputs and updates are computed from the values
    /// before the call, then every updated shared variable changes together.
    /// A call that fails changes nothing.
    pub fn call(&mut self, inputs: &[Value]) -> Result<Vec<Value>> {
        if inputs.len() != self.inputs.len() {
            let names: Vec<&str> = self.inputs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(FunctionError::Arity {
                expected: self.inputs.len(),
                names: names.join(", "),
                got: inputs.len(),
            });
        }
        let g = &self.program.graph;
        let dtypes_match = self.inputs.iter().zip(inputs).all(|((_, id), v)| g.ty(*id).dtype == v.dtype());
        let fits = |plan: &Plan| plan.shapes.iter().zip(inputs).all(|(s, v)| s.as_slice() == v.shape());
        let found = match self.plans.get(self.last_plan) {
            Some(plan) if fits(plan) => Some(self.last_plan),
            _ => self.plans.iter().position(fits),
        };
        let index = match found {
            Some(i) if dtypes_match => i,
            _ => {
                // The interpreter's input check names what is wrong (on
                // borrowed values: a large input is not copied).
                let feeds: HashMap<String, &Value> =
                    self.inputs.iter().zip(inputs).map(|((name, _), v)| (name.clone(), v)).collect();
                let bindings = rhea_interp::bind_inputs(g, &feeds)?;
                let plan = self.plan(&bindings, inputs)?;
                self.plans.push(plan);
                self.plans.len() - 1
            }
        };
        self.last_plan = index;
        if self.backend.uses_threads() {
            rhea_cpu::threads::check_caller().map_err(FunctionError::Threads)?;
        }
        let started = self.profile.as_ref().map(|_| std::time::Instant::now());
        let outputs = self.run(index, inputs)?;
        if let (Some(p), Some(t)) = (self.profile.as_mut(), started) {
            p.calls += 1;
            p.total += t.elapsed();
        }
        Ok(outputs)
    }

    /// Lays the program out and prepares the backend's plan for one set of
    /// input sizes.
    fn plan(&self, bindings: &rhea_interp::Bindings, inputs: &[Value]) -> Result<Plan> {
        let p = &self.program;
        // The NaN guard replays a failing step on its inputs: keep them.
        let memory = rhea_opt::memory_plan_decided(p, &self.decisions, bindings, !self.nan_guard)
            .map_err(|msg| OptError { pass: "plan".into(), msg })?;
        if let Some(limit) = self.max_memory {
            memory.check_budget(&p.graph, limit).map_err(FunctionError::Memory)?;
        }
        let ids: Vec<NodeId> = self.inputs.iter().map(|(_, id)| *id).collect();
        let io = Io { inputs: &ids, outputs: &self.outputs, updates: p.graph.updates() };
        let mut layout = Layout::new(p, &memory, &self.decisions, bindings, &io)?;
        layout.prepare_loops(&self.engines, p)?;
        let guard = self.nan_guard.then(|| rhea_interp::nan_check(p, bindings));
        let prepared = self.engines.main.prepare(p, &memory, layout, guard)?;
        let shared = prepared.layout().shared.iter().map(|v| self.shared_origin[&v.node]).collect();
        let shapes = inputs.iter().map(|v| v.shape().to_vec()).collect();
        Ok(Plan { shapes, prepared, shared })
    }

    /// Runs plan `index`: the builder's graph stays borrowed for the whole
    /// call, since the steps read the shared variables and the updates are
    /// written into them.
    fn run(&mut self, index: usize, inputs: &[Value]) -> Result<Vec<Value>> {
        let plan = &mut self.plans[index];
        // A backend's own pending values stay on its device; others come back.
        let owner = self.engines.main.owner();
        let mut graph = match owner {
            Some(owner) => self.builder.graph_mut_for(owner),
            None => self.builder.graph_mut(),
        };
        let mut shared = BuilderShared { graph: &mut graph, nodes: &plan.shared, owner };
        let times = step_times(&mut self.profile, self.program.steps.len());
        Ok(plan.prepared.run(inputs, &mut shared, times)?)
    }

    /// The plan's decisions for this function's backend: where each step
    /// runs, epilogues, updates written in place.
    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// With [`FunctionBuilder::cuda_graph`] on the CUDA backend, for the
    /// last call's input sizes: `Ok(true)` when its steps ran as a captured
    /// graph, `Ok(false)` before the first call, `Err` with why they could
    /// not be captured. `None` when no graph was asked for.
    pub fn cuda_graph(&self) -> Option<std::result::Result<bool, String>> {
        self.plans.get(self.last_plan)?.prepared.cuda_graph()
    }

    /// Starts (or restarts) measuring calls, as `RHEA_PROFILE=1` does from
    /// the start; [`Function::profile`] then reports.
    pub fn enable_profile(&mut self) {
        self.profile = Some(Profile::default());
    }

    /// Where the time of the calls measured so far went, step by step
    /// (`None` unless profiling is on).
    pub fn profile(&self) -> Option<Profile> {
        let mut p = self.profile.clone()?;
        let g = &self.program.graph;
        let at = |id: NodeId| g.node(id).loc.as_ref().map_or_else(String::new, |l| format!("  at {}", l.full()));
        p.labels = self
            .program
            .steps
            .iter()
            .map(|step| match &step.kind {
                StepKind::Kernel(k) => {
                    let group = &self.program.fusion.groups[*k];
                    format!("kernel k{k} ({} nodes){}", group.members.len(), at(group.root))
                }
                StepKind::Op(id) => format!("{} {id}{}", g.node(*id).op.name(), at(*id)),
            })
            .collect();
        let in_place = self.plans.iter().map(|plan| plan.prepared.layout().updates_in_place()).max();
        p.updates = (self.updates.len(), in_place.unwrap_or(0));
        Some(p)
    }

    /// How many input-shape signatures have been compiled so far.
    pub fn compiled_shapes(&self) -> usize {
        self.plans.len()
    }

    /// The function's optimized graph (after givens and the rewrite passes).
    pub fn graph(&self) -> &Graph {
        &self.program.graph
    }

    /// The optimized program: kernels, steps and what the optimizer did.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The backend it runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The current value of a shared variable.
    pub fn shared(&self, name: &str) -> Result<Value> {
        let g = self.builder.graph();
        let id = g.find(name).filter(|&id| matches!(g.node(id).op, Op::Shared { .. }));
        id.and_then(|id| g.shared_value(id).cloned())
            .ok_or_else(|| FunctionError::Invalid(format!("no shared variable called {name:?}")))
    }

    /// Sets a shared variable (its dtype and shape must match).
    pub fn set_shared(&mut self, name: &str, value: Value) -> Result<()> {
        let mut g = self.builder.graph_mut();
        let id = g
            .find(name)
            .filter(|&id| matches!(g.node(id).op, Op::Shared { .. }))
            .ok_or_else(|| FunctionError::Invalid(format!("no shared variable called {name:?}")))?;
        Ok(g.set_shared_value(id, value)?)
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        if profiling_requested()
            && let Some(p) = self.profile()
            && p.calls > 0
        {
            eprint!("{p}");
        }
    }
}

impl rhea_nn::Callable for Function {
    fn call(&mut self, inputs: &[Value]) -> rhea_nn::Result<Vec<Value>> {
        Function::call(self, inputs).map_err(|e| rhea_nn::NnError::Run(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
