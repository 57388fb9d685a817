//! Loops in the builder: `scan` (Theano's), and `map`, `fori_loop` and
//! `while_loop` on top of it. The body is built by a closure on a builder
//! of its own; what it reads from outside comes in as sequences, states
//! and non-sequences (or through [`Step::outer`]).

use std::cell::RefCell;
use std::panic::Location;

use super::{Builder, Result, Var};
use crate::scan::{Body, Scan, nonseq_name, out_name, seq_name, state_name};
use crate::{Dim, GraphError, Loc, Op, Shape, TensorType};

/// A recurrent state of a loop: where it starts and which past values the
/// body reads.
#[derive(Clone)]
pub struct State {
    /// Its initial value: of the state's type when it is read only at
    /// `t-1`, else a window `[K, ...]` of its last `K` values, oldest first.
    pub init: Var,
    /// The steps back the body reads (Theano's taps `[-1]` is `[1]`).
    pub taps: Vec<usize>,
}

impl State {
    /// A state read at `t-1`, starting from `init`.
    pub fn new(init: &Var) -> State {
        State { init: init.clone(), taps: vec![1] }
    }

    /// A state read at each of `taps` steps back, starting from the window
    /// `init` (`[max tap, ...]`, oldest first).
    pub fn with_taps(init: &Var, taps: &[usize]) -> State {
        State { init: init.clone(), taps: taps.to_vec() }
    }
}

/// What a loop runs over, in Theano's terms.
#[derive(Clone, Default)]
pub struct ScanArgs {
    /// Tensors read one row per step, along axis 0.
    pub sequences: Vec<Var>,
    /// The recurrent states (Theano's `outputs_info` with initial values).
    pub states: Vec<State>,
    /// Tensors the body reads whole every step (weights).
    pub non_sequences: Vec<Var>,
    /// How many steps: by default the first sequence's length.
    pub n_steps: Option<Dim>,
    /// Step from row `n_steps - 1` down to row 0 (results stacked in the
    /// order computed).
    pub go_backwards: bool,
    /// Backpropagate through at most this many steps.
    pub truncate_gradient: Option<usize>,
}

/// The body's view of one step: its inputs, as vars of the body's graph.
pub struct Step {
    body: Builder,
    outer: Builder,
    seqs: Vec<Var>,
    states: Vec<Vec<(usize, Var)>>,
    non_seqs: Vec<Var>,
    captured: RefCell<Vec<(Var, Var)>>,
    /// Shared variables the body reads and may update, carried as states
    /// after the caller's: (the outer variable, its value in the body).
    shared: RefCell<Vec<(Var, Var)>>,
}

impl Step {
    /// The body's builder (for constants and inputs of its own).
    pub fn builder(&self) -> &Builder {
        &self.body
    }

    /// Row `t` of sequence `i`.
    pub fn seq(&self, i: usize) -> Result<Var> {
        self.seqs.get(i).cloned().ok_or_else(|| GraphError::Mismatch(format!("the scan has no sequence {i}")))
    }

    /// State `s` at its first tap (`t-1` for an ordinary state).
    pub fn state(&self, s: usize) -> Result<Var> {
        let taps = self.states.get(s).ok_or_else(|| GraphError::Mismatch(format!("the scan has no state {s}")))?;
        Ok(taps[0].1.clone())
    }

    /// State `s`, `k` steps back.
    pub fn tap(&self, s: usize, k: usize) -> Result<Var> {
        let taps = self.states.get(s).ok_or_else(|| GraphError::Mismatch(format!("the scan has no state {s}")))?;
        taps.iter()
            .find(|(t, _)| *t == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| GraphError::Mismatch(format!("state {s} has no tap {k} (its taps are given by State)")))
    }

    /// Non-sequence `j`.
    pub fn non_seq(&self, j: usize) -> Result<Var> {
        self.non_seqs.get(j).cloned().ok_or_else(|| GraphError::Mismatch(format!("the scan has no non-sequence {j}")))
    }

    /// A shared variable of the enclosing graph as a value the body carries
    /// from step to step (Theano's updates inside `scan`): it starts as the
    /// variable's value, each step sees the value the last one gave in
    /// [`StepOut::updates`] (unchanged if none), and [`ScanOut::updates`]
    /// gives the value after the last step, for the function's updates.
    #[track_caller]
    pub fn shared(&self, v: &Var) -> Result<Var> {
        if !self.outer.same_graph(&v.builder) {
            return Err(GraphError::ForeignVar);
        }
        if !matches!(v.builder.0.borrow().node(v.id).op, Op::Shared { .. }) {
            return Err(GraphError::Mismatch(
                "Step::shared takes a shared variable; use Step::outer for other values".into(),
            ));
        }
        if let Some((_, inner)) = self.shared.borrow().iter().find(|(o, _)| o.id == v.id) {
            return Ok(inner.clone());
        }
        let s = self.states.len() + self.shared.borrow().len();
        let inner = self.body.input(&state_name(s, 1), v.dtype(), v.shape())?;
        self.shared.borrow_mut().push((v.clone(), inner.clone()));
        Ok(inner)
    }

    /// A var of the enclosing graph (a weight) as seen inside the body: it
    /// becomes another non-sequence, read whole every step.
    #[track_caller]
    pub fn outer(&self, v: &Var) -> Result<Var> {
        if !self.outer.same_graph(&v.builder) {
            return Err(GraphError::ForeignVar);
        }
        if let Some((_, inner)) = self.captured.borrow().iter().find(|(o, _)| o.id == v.id) {
            return Ok(inner.clone());
        }
        let j = self.non_seqs.len() + self.captured.borrow().len();
        let inner = self.body.input(&nonseq_name(j), v.dtype(), v.shape())?;
        self.captured.borrow_mut().push((v.clone(), inner.clone()));
        Ok(inner)
    }
}

/// What a body returns for one step.
#[derive(Clone, Default)]
pub struct StepOut {
    /// The new value of each state, in the order of [`ScanArgs::states`].
    pub states: Vec<Var>,
    /// Per-step outputs that no step reads back.
    pub outputs: Vec<Var>,
    /// A `bool` scalar: stop after this step when true.
    pub until: Option<Var>,
    /// New values of shared variables read with [`Step::shared`]:
    /// (the outer variable, its new value in the body).
    pub updates: Vec<(Var, Var)>,
}

impl StepOut {
    /// Just new states.
    pub fn states(states: Vec<Var>) -> StepOut {
        StepOut { states, ..StepOut::default() }
    }
}

/// What a loop gives back, as vars of the enclosing graph.
#[derive(Clone)]
pub struct ScanOut {
    /// Each state after every step, stacked: `[n_steps, ...]`.
    pub states: Vec<Var>,
    /// Each per-step output, stacked.
    pub outputs: Vec<Var>,
    /// Each state after the last step (its initial value after none).
    pub finals: Vec<Var>,
    /// The number of steps run (`i64`; fewer than `n_steps` when an
    /// until-condition stopped the loop).
    pub steps: Var,
    /// Each shared variable the body updated, with its value after the last
    /// step: pairs for `function(..).updates(..)`, as Theano's `scan`
    /// returns them.
    pub updates: Vec<(Var, Var)>,
}

impl Builder {
    /// Theano's `scan`: runs `body` once per step, compiled once whatever
    /// the number of steps.
    ///
    /// ```
    /// use rhea_graph::{Builder, DType, ScanArgs, State, StepOut};
    /// let g = Builder::new();
    /// let t = g.dim("t")?;
    /// let xs = g.input("xs", DType::F32, [t, 3.into()])?;
    /// let h0 = g.input("h0", DType::F32, [3])?;
    /// let args = ScanArgs { sequences: vec![xs], states: vec![State::new(&h0)], ..ScanArgs::default() };
    /// let out = g.scan(args, |s| Ok(StepOut::states(vec![(&s.state(0)? * 0.5 + &s.seq(0)?).tanh()?])))?;
    /// assert_eq!(out.states[0].ty().to_string(), "f32[t,3]");
    /// assert_eq!(out.finals[0].ty().to_string(), "f32[3]");
    /// # Ok::<(), rhea_graph::GraphError>(())
    /// ```
    #[track_caller]
    pub fn scan(&self, args: ScanArgs, body: impl FnOnce(&Step) -> Result<StepOut>) -> Result<ScanOut> {
        let loc = Loc::from_caller(Location::caller());
        let bad =
            |msg: String| GraphError::Type { op: "scan".into(), inputs: String::new(), msg, loc: Some(loc.clone()) };
        let n_steps = match (args.n_steps, args.sequences.first()) {
            (Some(n), _) => n,
            (None, Some(s)) => *s.shape().first().ok_or_else(|| bad("sequence 0 is a scalar".into()))?,
            (None, None) => return Err(bad("a scan without sequences needs n_steps".into())),
        };
        let inner = Builder::new();
        let mut seqs = Vec::new();
        for (i, s) in args.sequences.iter().enumerate() {
            let shape = s.shape();
            let row =
                shape.split_first().map(|(_, r)| r.to_vec()).ok_or_else(|| bad(format!("sequence {i} is a scalar")))?;
            seqs.push(inner.input(&seq_name(i), s.dtype(), Shape::from(row))?);
        }
        let mut states = Vec::new();
        for (st, state) in args.states.iter().enumerate() {
            let init = state.init.ty();
            let ty = if state.taps.as_slice() == [1] {
                init
            } else {
                let (_, rest) = init.shape.split_first().ok_or_else(|| {
                    bad(format!(
                        "state {st} reads taps {:?}, so its initial value must be a window [K, ...]",
                        state.taps
                    ))
                })?;
                TensorType::new(init.dtype, Shape::from(rest.to_vec()))
            };
            let mut taps = Vec::new();
            for &k in &state.taps {
                taps.push((k, inner.input(&state_name(st, k), ty.dtype, ty.shape.clone())?));
            }
            if taps.is_empty() {
                return Err(bad(format!("state {st} reads no tap")));
            }
            states.push(taps);
        }
        let mut non_seqs = Vec::new();
        for (j, v) in args.non_sequences.iter().enumerate() {
            non_seqs.push(inner.input(&nonseq_name(j), v.dtype(), v.shape())?);
        }
        let step = Step {
            body: inner.clone(),
            outer: self.clone(),
            seqs,
            states,
            non_seqs,
            captured: RefCell::new(Vec::new()),
            shared: RefCell::new(Vec::new()),
        };
        let out = body(&step)?;
        if out.states.len() != args.states.len() {
            return Err(bad(format!(
                "the body returns {} new states for {} states",
                out.states.len(),
                args.states.len()
            )));
        }
        for (s, v) in out.states.iter().enumerate() {
            inner.output(&crate::scan::new_state_name(s), v)?;
        }
        for (outer, _) in &out.updates {
            step.shared(outer)?;
        }
        let shared = step.shared.take();
        for (k, (outer, current)) in shared.iter().enumerate() {
            let new = out.updates.iter().find(|(o, _)| o.id == outer.id).map_or(current, |(_, v)| v);
            inner.output(&crate::scan::new_state_name(out.states.len() + k), new)?;
        }
        for (j, v) in out.outputs.iter().enumerate() {
            inner.output(&out_name(j), v)?;
        }
        if let Some(u) = &out.until {
            inner.output("until", u)?;
        }
        let captured = step.captured.into_inner();
        let mut graph = inner.into_graph();
        graph.remove_dead();
        let spec = Scan {
            body: Body::new(graph),
            n_steps,
            sequences: args.sequences.len(),
            taps: args
                .states
                .iter()
                .map(|s| s.taps.clone().into_boxed_slice())
                .chain(shared.iter().map(|_| Box::from([1usize])))
                .collect(),
            outputs: out.outputs.len(),
            non_sequences: args.non_sequences.len() + captured.len(),
            go_backwards: args.go_backwards,
            truncate_gradient: args.truncate_gradient,
            until: out.until.is_some(),
        };
        let mut inputs: Vec<&Var> = args.sequences.iter().collect();
        inputs.extend(args.states.iter().map(|s| &s.init));
        inputs.extend(shared.iter().map(|(o, _)| o));
        inputs.extend(args.non_sequences.iter());
        inputs.extend(captured.iter().map(|(o, _)| o));
        let (all_states, n_outs, n_user) = (spec.states(), spec.outputs, args.states.len());
        let scan = self.apply(Op::Scan(Box::new(spec)), &inputs, loc.clone())?;
        let result = |index: usize| self.apply(Op::ScanResult { index }, &[&scan], loc.clone());
        let finals = all_states + n_outs;
        Ok(ScanOut {
            states: (0..n_user).map(result).collect::<Result<_>>()?,
            outputs: (all_states..all_states + n_outs).map(result).collect::<Result<_>>()?,
            finals: (finals..finals + n_user).map(result).collect::<Result<_>>()?,
            updates: shared
                .iter()
                .enumerate()
                .map(|(k, (o, _))| Ok((o.clone(), result(finals + n_user + k)?)))
                .collect::<Result<_>>()?,
            steps: scan,
        })
    }

    /// `f` applied to each row of `sequences` (Theano's and JAX's `map`),
    /// stacked; `f` reads row `i` as `step.seq(i)`.
    #[track_caller]
    pub fn map(&self, sequences: &[&Var], f: impl FnOnce(&Step) -> Result<Var>) -> Result<Var> {
        let args = ScanArgs { sequences: sequences.iter().map(|&v| v.clone()).collect(), ..ScanArgs::default() };
        let out = self.scan(args, |s| Ok(StepOut { outputs: vec![f(s)?], ..StepOut::default() }))?;
        Ok(out.outputs[0].clone())
    }

    /// JAX's `fori_loop`: `n` steps of `f(i, states)`, where `i` is the
    /// step's index (an `i64` scalar); gives the final states.
    #[track_caller]
    pub fn fori_loop(
        &self,
        n: impl Into<Dim>,
        init: &[&Var],
        f: impl FnOnce(&Var, &[Var]) -> Result<Vec<Var>>,
    ) -> Result<Vec<Var>> {
        let zero = self.constant(crate::Value::from(0i64));
        let mut states: Vec<State> = init.iter().map(|v| State::new(v)).collect();
        states.push(State::new(&zero));
        let args = ScanArgs { states, n_steps: Some(n.into()), ..ScanArgs::default() };
        let out = self.scan(args, |s| {
            let vals: Vec<Var> = (0..init.len()).map(|k| s.state(k)).collect::<Result<_>>()?;
            let i = s.state(init.len())?;
            let mut next = f(&i, &vals)?;
            next.push(&i + 1i64);
            Ok(StepOut::states(next))
        })?;
        Ok(out.finals[..init.len()].to_vec())
    }

    /// A `while` loop (Theano's `scan` with `until`, JAX's `while_loop`
    /// with a bound): `f` gives the new states and a `bool` scalar that
    /// stops the loop after that step when true; at most `max_steps` run.
    #[track_caller]
    pub fn while_loop(
        &self,
        max_steps: impl Into<Dim>,
        init: &[&Var],
        f: impl FnOnce(&[Var]) -> Result<(Vec<Var>, Var)>,
    ) -> Result<ScanOut> {
        let args = ScanArgs {
            states: init.iter().map(|v| State::new(v)).collect(),
            n_steps: Some(max_steps.into()),
            ..ScanArgs::default()
        };
        self.scan(args, |s| {
            let vals: Vec<Var> = (0..init.len()).map(|k| s.state(k)).collect::<Result<_>>()?;
            let (states, until) = f(&vals)?;
            Ok(StepOut { states, outputs: Vec::new(), until: Some(until), updates: vec![] })
        })
    }
}
