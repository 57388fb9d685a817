//! `scan`: a loop whose body is a graph of its own (Theano's `scan`).
//!
//! A scan node's inputs are its sequences, the initial values of its
//! recurrent states and its non-sequences, in that order; the number of
//! steps is an attribute (a known size or a symbolic dim bound by the
//! inputs). The node's own value is the number of steps run (`i64`); its
//! results are [`crate::Op::ScanResult`] nodes reading it: each state
//! stacked over the steps, each per-step output stacked, each state's
//! final value, and each state's value before every step (what the
//! gradient, backpropagation through time, reads).
//!
//! The body's inputs and outputs are found by name: `seq{i}` (row `t` of
//! sequence `i`), `state{s}[t-{k}]` (state `s` `k` steps back),
//! `nonseq{j}`; outputs `state{s}` (the new state), `out{j}` and, for a
//! loop with an until-condition, `until` (a `bool` scalar: stop after this
//! step).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{DType, Dim, Graph, Shape, TensorType};

/// The body of a loop: an immutable graph, compared and hashed by its
/// canonical JSON text (so identical scans are one node).
#[derive(Clone)]
pub struct Body(Arc<(Graph, String)>);

impl Body {
    /// Wraps a finished body graph.
    pub fn new(graph: Graph) -> Body {
        let key = crate::json::to_json_with(&graph, usize::MAX);
        Body(Arc::new((graph, key)))
    }

    /// The body graph.
    pub fn graph(&self) -> &Graph {
        &self.0.0
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.1 == other.0.1
    }
}

impl Eq for Body {}

impl Hash for Body {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.1.hash(state);
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({} nodes)", self.graph().len())
    }
}

/// In a graph file the body is a graph file of its own, nested.
impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: serde_json::Value = serde_json::from_str(&self.0.1).map_err(serde::ser::Error::custom)?;
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let graph =
            crate::json::from_json(&v.to_string()).map_err(|e| serde::de::Error::custom(format!("body: {e}")))?;
        Ok(Body::new(graph))
    }
}

/// A loop: its body and how the node's inputs and results map onto it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scan {
    /// The loop body.
    pub body: Body,
    /// How many steps run (at most, with an until-condition).
    pub n_steps: Dim,
    /// How many sequences (each read one row per step, along axis 0).
    pub sequences: usize,
    /// For each recurrent state, the steps back it reads (`1` for `t-1`),
    /// ascending. A state read only at `t-1` starts from a value of its
    /// type; any other state from a window `[K, ...]` of its last `K`
    /// values, oldest first (`K` its largest tap).
    pub taps: Box<[Box<[usize]>]>,
    /// How many per-step outputs that are not states.
    pub outputs: usize,
    /// How many non-sequences (the same value every step).
    pub non_sequences: usize,
    /// Run the steps backwards: step `t` reads row `n_steps - 1 - t` of each
    /// sequence (so from the last row read to the first; Theano reverses a
    /// whole sequence, which differs when it is longer than `n_steps`). The
    /// stacked results are in the order computed, as in Theano.
    #[serde(default, skip_serializing_if = "is_false")]
    pub go_backwards: bool,
    /// Backpropagate through at most this many steps (Theano's
    /// `truncate_gradient`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_gradient: Option<usize>,
    /// The body has an `until` output: the loop stops after the first step
    /// where it is true; stacked rows after it are zero.
    #[serde(default, skip_serializing_if = "is_false")]
    pub until: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a result of a scan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanPart {
    /// State `s` after every step, stacked: `[n_steps, ...]`.
    States(usize),
    /// Per-step output `j`, stacked.
    Outputs(usize),
    /// State `s` after the last step (its initial value after none).
    Final(usize),
    /// State `s` before every step, stacked: its value at `t-1`, or for a
    /// state with a window of taps the window `[K, ...]` (oldest first) the
    /// step reads. What the gradient reads.
    Before(usize),
}

/// What a body input is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyInput {
    /// A row of sequence `i`.
    Seq(usize),
    /// State `s`, `k` steps back.
    State(usize, usize),
    /// Non-sequence `j`.
    NonSeq(usize),
}

/// The body input of row `t` of sequence `i`.
pub fn seq_name(i: usize) -> String {
    format!("seq{i}")
}

/// The body input of state `s`, `k` steps back.
pub fn state_name(s: usize, k: usize) -> String {
    format!("state{s}[t-{k}]")
}

/// The body input of non-sequence `j`.
pub fn nonseq_name(j: usize) -> String {
    format!("nonseq{j}")
}

/// The body output of state `s`'s new value.
pub fn new_state_name(s: usize) -> String {
    format!("state{s}")
}

/// The body output of per-step output `j`.
pub fn out_name(j: usize) -> String {
    format!("out{j}")
}

impl Scan {
    /// The number of recurrent states.
    pub fn states(&self) -> usize {
        self.taps.len()
    }

    /// The number of results (not counting the node's own step count).
    pub fn results(&self) -> usize {
        3 * self.states() + self.outputs
    }

    /// What result `index` is.
    pub fn part(&self, index: usize) -> Option<ScanPart> {
        let (s, o) = (self.states(), self.outputs);
        match index {
            i if i < s => Some(ScanPart::States(i)),
            i if i < s + o => Some(ScanPart::Outputs(i - s)),
            i if i < 2 * s + o => Some(ScanPart::Final(i - s - o)),
            i if i < 3 * s + o => Some(ScanPart::Before(i - 2 * s - o)),
            _ => None,
        }
    }

    /// The result index of `part`.
    pub fn index(&self, part: ScanPart) -> usize {
        match part {
            ScanPart::States(s) => s,
            ScanPart::Outputs(j) => self.states() + j,
            ScanPart::Final(s) => self.states() + self.outputs + s,
            ScanPart::Before(s) => 2 * self.states() + self.outputs + s,
        }
    }

    /// True if state `s` starts from a window of values rather than one.
    pub fn windowed(&self, s: usize) -> bool {
        self.taps[s].as_ref() != [1]
    }

    /// The largest tap of state `s`.
    pub fn depth(&self, s: usize) -> usize {
        self.taps[s].iter().copied().max().unwrap_or(1)
    }

    /// What the body input called `name` reads, or an error naming it.
    pub fn feed_of(&self, name: &str) -> Result<BodyInput, String> {
        let seq = (0..self.sequences).find(|&i| seq_name(i) == name).map(BodyInput::Seq);
        let state = || {
            (0..self.states())
                .find_map(|s| self.taps[s].iter().find(|&&k| state_name(s, k) == name).map(|&k| BodyInput::State(s, k)))
        };
        let nonseq = || (0..self.non_sequences).find(|&j| nonseq_name(j) == name).map(BodyInput::NonSeq);
        seq.or_else(state)
            .or_else(nonseq)
            .ok_or_else(|| format!("the body reads {name:?}, which the scan does not give"))
    }

    /// The type of body output `name`, or an error naming what is missing.
    pub fn body_output(&self, name: &str) -> Result<TensorType, String> {
        let g = self.body.graph();
        g.outputs()
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, id)| g.ty(*id).clone())
            .ok_or_else(|| format!("the body has no output {name:?}"))
    }

    /// The type of body input `name`, or an error naming what is missing.
    pub fn body_input(&self, name: &str) -> Result<TensorType, String> {
        let g = self.body.graph();
        g.find(name)
            .filter(|&id| matches!(g.node(id).op, crate::Op::Input { .. }))
            .map(|id| g.ty(id).clone())
            .ok_or_else(|| format!("the body has no input {name:?}"))
    }

    /// The type of result `index`.
    pub fn result_type(&self, index: usize) -> Result<TensorType, String> {
        let stacked = |t: TensorType| {
            let mut dims = vec![self.n_steps];
            dims.extend(t.shape.iter().copied());
            TensorType::new(t.dtype, Shape::from(dims))
        };
        match self.part(index) {
            Some(ScanPart::States(s)) => Ok(stacked(self.body_output(&new_state_name(s))?)),
            Some(ScanPart::Outputs(j)) => Ok(stacked(self.body_output(&out_name(j))?)),
            Some(ScanPart::Final(s)) => self.body_output(&new_state_name(s)),
            // What step t reads of the state: its window for a state of taps.
            Some(ScanPart::Before(s)) => Ok(stacked(self.init_type(s)?)),
            None => Err(format!("a scan with {} results has no result {index}", self.results())),
        }
    }

    /// The type an initial value of state `s` must have.
    pub fn init_type(&self, s: usize) -> Result<TensorType, String> {
        let t = self.body_output(&new_state_name(s))?;
        if !self.windowed(s) {
            return Ok(t);
        }
        let mut dims = vec![Dim::Known(self.depth(s))];
        dims.extend(t.shape.iter().copied());
        Ok(TensorType::new(t.dtype, Shape::from(dims)))
    }

    /// This scan without the sequences and non-sequences its body does not
    /// read, and the positions (among the scan's inputs) of those left.
    /// (A linear body's gradient reads none of the cotangents it is linear
    /// in, so pruning it keeps the loop that differentiates it again from
    /// depending on them: what makes forward mode possible through a loop.)
    pub fn pruned(&self) -> Result<(Scan, Vec<usize>), crate::GraphError> {
        let g = self.body.graph();
        let used =
            |name: &str| g.find(name).is_some_and(|id| g.is_used(id) || g.outputs().iter().any(|(_, o)| *o == id));
        let seqs: Vec<usize> = (0..self.sequences).filter(|&i| used(&seq_name(i))).collect();
        let nonseqs: Vec<usize> = (0..self.non_sequences).filter(|&j| used(&nonseq_name(j))).collect();
        let first_nonseq = self.sequences + self.states();
        let mut kept: Vec<usize> = seqs.clone();
        kept.extend(self.sequences..first_nonseq);
        kept.extend(nonseqs.iter().map(|j| first_nonseq + j));
        if seqs.len() == self.sequences && nonseqs.len() == self.non_sequences {
            return Ok((self.clone(), kept));
        }
        let mut ng = Graph::new();
        let mut subst = std::collections::HashMap::new();
        let mut rename = |ng: &mut Graph, old: String, new: String| -> Result<(), crate::GraphError> {
            if let Some(id) = g.find(&old) {
                subst.insert(id, ng.add_input(&new, g.ty(id).clone(), g.node(id).loc.clone())?);
            }
            Ok(())
        };
        for (new, &i) in seqs.iter().enumerate() {
            rename(&mut ng, seq_name(i), seq_name(new))?;
        }
        for s in 0..self.states() {
            for &k in self.taps[s].iter() {
                rename(&mut ng, state_name(s, k), state_name(s, k))?;
            }
        }
        for (new, &j) in nonseqs.iter().enumerate() {
            rename(&mut ng, nonseq_name(j), nonseq_name(new))?;
        }
        let roots: Vec<crate::NodeId> = g.outputs().iter().map(|(_, o)| *o).collect();
        let map = ng.import(g, &subst, &roots)?;
        for (name, o) in g.outputs() {
            ng.set_output(name, map[o]);
        }
        let scan = Scan { body: Body::new(ng), sequences: seqs.len(), non_sequences: nonseqs.len(), ..self.clone() };
        Ok((scan, kept))
    }

    /// The shape and dtype rule of a scan node, given its inputs' types.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, String> {
        let (q, s, m) = (self.sequences, self.states(), self.non_sequences);
        if inputs.len() != q + s + m {
            return Err(format!(
                "takes {} input(s) ({q} sequences, {s} initial states, {m} non-sequences), got {}",
                q + s + m,
                inputs.len()
            ));
        }
        let g = self.body.graph();
        let mut expected = Vec::new();
        for (i, t) in inputs[..q].iter().enumerate() {
            let Some((&rows, row)) = t.shape.split_first() else {
                return Err(format!("sequence {i} is a scalar ({t}); a sequence needs a leading axis to step along"));
            };
            if let (Dim::Known(rows), Dim::Known(n)) = (rows, self.n_steps)
                && rows < n
            {
                return Err(format!("sequence {i} has {rows} rows, fewer than the {n} steps"));
            }
            let want = self.body_input(&seq_name(i))?;
            let row = TensorType::new(t.dtype, Shape::from(row.to_vec()));
            if want != row {
                return Err(format!("sequence {i} gives rows of {row}, but the body reads {want}"));
            }
            expected.push(seq_name(i));
        }
        for st in 0..s {
            if self.taps[st].is_empty() || self.taps[st].contains(&0) || !self.taps[st].is_sorted_by(|a, b| a < b) {
                return Err(format!(
                    "state {st}: taps {:?} must be distinct steps back (1 or more), ascending",
                    self.taps[st]
                ));
            }
            let new = self.body_output(&new_state_name(st))?;
            for &k in &self.taps[st] {
                let read = self.body_input(&state_name(st, k))?;
                if read != new {
                    return Err(format!("state {st}: the body reads it as {read} but returns {new}"));
                }
                expected.push(state_name(st, k));
            }
            let init = self.init_type(st)?;
            if *inputs[q + st] != init {
                return Err(format!(
                    "state {st}: the initial value is {}, but the body returns {new}{}",
                    inputs[q + st],
                    if self.windowed(st) { format!(" (so the initial window must be {init})") } else { String::new() }
                ));
            }
        }
        for j in 0..m {
            let want = self.body_input(&nonseq_name(j))?;
            if *inputs[q + s + j] != want {
                return Err(format!("non-sequence {j} is {}, but the body reads {want}", inputs[q + s + j]));
            }
            expected.push(nonseq_name(j));
        }
        let inputs_named: Vec<&str> = g.inputs().iter().filter_map(|&id| g.leaf_name(id)).collect();
        if let Some(extra) = inputs_named.iter().find(|n| !expected.iter().any(|e| e == *n)) {
            return Err(format!("the body reads {extra:?}, which is no sequence, state or non-sequence of the scan"));
        }
        for j in 0..self.outputs {
            self.body_output(&out_name(j))?;
        }
        if self.until {
            let t = self.body_output("until")?;
            if t != TensorType::new(DType::Bool, Shape::scalar()) {
                return Err(format!("the until-condition must be a bool scalar, got {t}"));
            }
        }
        if !g.shared().is_empty() || !g.updates().is_empty() {
            return Err("a scan body cannot hold shared variables or updates; pass them as non-sequences".into());
        }
        Ok(TensorType::new(DType::I64, Shape::scalar()))
    }
}
