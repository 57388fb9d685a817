//! The gradient of a loop: backpropagation through time as another scan.
//!
//! The backward scan walks the forward steps in reverse. Each of its steps
//! reads the forward step's inputs (rows of the sequences, and the states
//! before the step, which the forward scan stacks as its `Before` results)
//! and the cotangents of that step's results; its body is the forward body
//! copied and differentiated. It carries the cotangent of each float state
//! back one step at a time and sums the cotangents of the non-sequences;
//! the cotangent of each sequence row is a per-step output.

use std::collections::HashMap;

use super::emit::Emit;
use super::{Disconnected, backprop};
use crate::scan::{Body, nonseq_name, out_name, seq_name, state_name};
use crate::{BinaryOp, DType, Dim, Graph, GraphError, Node, NodeId, Op, Scan, ScanPart, Shape, SliceSpec, TensorType};

type Result<T> = std::result::Result<T, GraphError>;

fn unsupported(what: &str) -> GraphError {
    GraphError::Mismatch(format!("gradient of scan is not supported {what}"))
}

/// One input of the backward scan and its type inside the body.
struct Slot {
    outer: NodeId,
    inner: TensorType,
}

/// The gradient of each input of the scan `node` (id `id`) given the
/// cotangents of its results (by result index); `need` says which inputs
/// want one.
pub(super) fn scan_vjp(
    e: &mut Emit,
    id: NodeId,
    node: &Node,
    scan: &Scan,
    cots: &[Option<NodeId>],
    need: &[bool],
) -> Result<Vec<Option<NodeId>>> {
    // An until-loop ran `steps` of at most `n` steps: the backward loop
    // walks all `n` and passes the cotangents through the steps that did
    // not run.
    let until_max = match (scan.until, scan.n_steps) {
        (false, _) => None,
        (true, Dim::Known(n)) => Some(n),
        (true, Dim::Sym(s)) => {
            return Err(unsupported(&format!(
                "through an until-loop of at most {} steps, a symbolic dim (give a known maximum)",
                s.name()
            )));
        }
    };
    let (q, ns, m) = (scan.sequences, scan.states(), scan.non_sequences);
    let fb = scan.body.graph();
    let float = |t: &TensorType| t.dtype.is_float();
    let state_ty: Vec<TensorType> = (0..ns)
        .map(|s| scan.body_output(&crate::scan::new_state_name(s)))
        .collect::<std::result::Result<_, _>>()
        .map_err(GraphError::Mismatch)?;
    let input_ty = |name: &str| scan.body_input(name).map_err(GraphError::Mismatch);
    let carried: Vec<usize> = (0..ns).filter(|&s| float(&state_ty[s])).collect();
    let seq_wanted: Vec<usize> = (0..q).filter(|&i| need[i] && float(e.g.ty(node.inputs[i]))).collect();
    let acc_wanted: Vec<usize> =
        (0..m).filter(|&j| need[q + ns + j] && float(e.g.ty(node.inputs[q + ns + j]))).collect();

    // Sequences of the backward scan, in the forward scan's step order
    // (reversed for a backward forward scan, whose rows are read the other way).
    let reverse = |e: &mut Emit, v: NodeId| e.slice(v, vec![SliceSpec::REVERSE]);
    let mut seqs: Vec<Slot> = Vec::new();
    for i in 0..q {
        seqs.push(Slot { outer: node.inputs[i], inner: input_ty(&seq_name(i))? });
    }
    let mut before_at = Vec::new();
    // What each step read of each state: its value, or its window.
    let window_ty: Vec<TensorType> =
        (0..ns).map(|s| scan.init_type(s)).collect::<std::result::Result<_, _>>().map_err(GraphError::Mismatch)?;
    for (s, ty) in window_ty.iter().enumerate() {
        let b = e.op(Op::ScanResult { index: scan.index(ScanPart::Before(s)) }, &[id])?;
        let b = if scan.go_backwards { reverse(e, b)? } else { b };
        before_at.push(seqs.len());
        seqs.push(Slot { outer: b, inner: ty.clone() });
    }
    // The stacked cotangents of each carried state, in step order: of the
    // states after each step, and of the states before each step (the
    // Before results a second derivative reads), which add to what flows
    // out of that step.
    let mut stacked_cots = |part: fn(usize) -> ScanPart, seqs: &mut Vec<Slot>| -> Result<HashMap<usize, usize>> {
        let mut at = HashMap::new();
        for &s in &carried {
            if let Some(c) = cots[scan.index(part(s))] {
                let c = if scan.go_backwards { reverse(e, c)? } else { c };
                let inner = if matches!(part(s), ScanPart::Before(_)) { &window_ty[s] } else { &state_ty[s] };
                at.insert(s, seqs.len());
                seqs.push(Slot { outer: c, inner: inner.clone() });
            }
        }
        Ok(at)
    };
    let gs_at = stacked_cots(ScanPart::States, &mut seqs)?;
    let gb_at = stacked_cots(ScanPart::Before, &mut seqs)?;
    // In output order, so that the backward body is the same graph every time.
    let mut gy_at = std::collections::BTreeMap::new();
    for j in 0..scan.outputs {
        let ty = scan.body_output(&out_name(j)).map_err(GraphError::Mismatch)?;
        if let (true, Some(c)) = (float(&ty), cots[scan.index(ScanPart::Outputs(j))]) {
            let c = if scan.go_backwards { reverse(e, c)? } else { c };
            gy_at.insert(j, seqs.len());
            seqs.push(Slot { outer: c, inner: ty });
        }
    }
    // States: the carried cotangents, the sums for the non-sequences, and a
    // step counter for truncation.
    let mut states: Vec<Slot> = Vec::new();
    // A state with a window of taps carries the pending cotangents of its
    // last K values, newest first: [s_t, s_{t-1}, ..., s_{t-K+1}].
    for &s in &carried {
        let init = match (cots[scan.index(ScanPart::Final(s))], scan.windowed(s)) {
            (Some(c), false) => c,
            (None, _) => e.zeros(&window_ty[s])?,
            (Some(c), true) => {
                let rank = state_ty[s].shape.rank();
                let row = e.dimshuffle(c, std::iter::once(None).chain((0..rank).map(Some)).collect())?;
                e.pad_axis(row, 0, 0, scan.depth(s) - 1)?
            }
        };
        states.push(Slot { outer: init, inner: window_ty[s].clone() });
    }
    for &j in &acc_wanted {
        let ty = e.ty(node.inputs[q + ns + j]);
        states.push(Slot { outer: e.zeros(&ty)?, inner: ty });
    }
    let counter = (scan.truncate_gradient.is_some() || until_max.is_some()).then_some(states.len());
    if counter.is_some() {
        let zero = e.g.add_const(crate::Value::from(0i64), e.loc.clone());
        states.push(Slot { outer: zero, inner: TensorType::new(DType::I64, Shape::scalar()) });
    }
    let mut nonseqs: Vec<Slot> = (0..m)
        .map(|j| Ok(Slot { outer: node.inputs[q + ns + j], inner: input_ty(&nonseq_name(j))? }))
        .collect::<Result<_>>()?;
    // How many of an until-loop's steps did not run: the first backward
    // steps, which only pass the cotangents on.
    let skipped = match until_max {
        Some(n) => {
            let n = e.g.add_const(crate::Value::from(n as i64), e.loc.clone());
            let skipped = e.bin(BinaryOp::Sub, n, id)?;
            nonseqs.push(Slot { outer: skipped, inner: TensorType::new(DType::I64, Shape::scalar()) });
            Some(nonseqs.len() - 1)
        }
        None => None,
    };

    // The backward body: the forward body copied, then differentiated.
    let mut bg = Graph::new();
    let loc = e.loc.clone();
    let add_inputs = |bg: &mut Graph, slots: &[Slot], name: &dyn Fn(usize) -> String| -> Result<Vec<NodeId>> {
        slots.iter().enumerate().map(|(k, sl)| bg.add_input(&name(k), sl.inner.clone(), loc.clone())).collect()
    };
    let b_seqs = add_inputs(&mut bg, &seqs, &seq_name)?;
    let b_states = add_inputs(&mut bg, &states, &|k| state_name(k, 1))?;
    let b_nonseqs = add_inputs(&mut bg, &nonseqs, &nonseq_name)?;
    let mut subst = HashMap::new();
    // The forward body's inputs, by name, become the backward body's.
    let forward_inputs = (0..q).map(|i| (seq_name(i), b_seqs[i]));
    let forward_inputs =
        forward_inputs.chain(before_at.iter().enumerate().map(|(s, &at)| (state_name(s, 1), b_seqs[at])));
    let forward_inputs = forward_inputs.chain(b_nonseqs.iter().enumerate().map(|(j, &x)| (nonseq_name(j), x)));
    for (name, to) in forward_inputs {
        if let Some(x) = fb.find(&name) {
            subst.insert(x, to);
        }
    }
    // A windowed state's taps are rows of the window the step read.
    for s in (0..ns).filter(|&s| scan.windowed(s)) {
        let depth = scan.depth(s) as i64;
        let window = b_seqs[before_at[s]];
        for &k in scan.taps[s].iter() {
            if let Some(x) = fb.find(&state_name(s, k)) {
                let mut te = Emit { g: &mut bg, loc: e.loc.clone() };
                let row = te.slice(window, vec![SliceSpec::range(depth - k as i64, depth - k as i64 + 1)])?;
                let tap = te.reshape(row, &state_ty[s].shape)?;
                subst.insert(x, tap);
            }
        }
    }
    let roots: Vec<NodeId> = fb.outputs().iter().map(|(_, o)| *o).collect();
    let map = bg.import(fb, &subst, &roots)?;
    let out_of = |name: &str| fb.outputs().iter().find(|(n, _)| &**n == name).map(|(_, o)| map[o]);
    let mut be = Emit { g: &mut bg, loc: e.loc.clone() };
    let mut seeds = Vec::new();
    for (k, &s) in carried.iter().enumerate() {
        let d = if scan.windowed(s) {
            let newest = be.slice(b_states[k], vec![SliceSpec::range(0, 1)])?;
            be.reshape(newest, &state_ty[s].shape)?
        } else {
            b_states[k]
        };
        let c = match gs_at.get(&s) {
            Some(&at) => be.bin(BinaryOp::Add, d, b_seqs[at])?,
            None => d,
        };
        let o =
            out_of(&crate::scan::new_state_name(s)).ok_or_else(|| unsupported("(a body without a state output)"))?;
        seeds.push((o, c));
    }
    for (&j, &at) in &gy_at {
        let o = out_of(&out_name(j)).ok_or_else(|| unsupported("(a body without an output)"))?;
        seeds.push((o, b_seqs[at]));
    }
    let mut wrt: Vec<NodeId> = carried.iter().map(|&s| b_seqs[before_at[s]]).collect();
    wrt.extend(seq_wanted.iter().map(|&i| b_seqs[i]));
    wrt.extend(acc_wanted.iter().map(|&j| b_nonseqs[j]));
    let grads = if seeds.is_empty() {
        wrt.iter()
            .map(|&w| {
                let t = be.ty(w);
                be.zeros(&t)
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        backprop(be.g, &seeds, &wrt, &[], Disconnected::Zero)?
    };
    // Within the truncation (the last k steps), and among the steps run.
    let within = match (counter, scan.truncate_gradient) {
        (Some(c), Some(k)) => {
            let k = be.g.add_const(crate::Value::from(k as i64), be.loc.clone());
            Some(be.bin(BinaryOp::Lt, b_states[c], k)?)
        }
        _ => None,
    };
    let ran = match (counter, skipped) {
        (Some(c), Some(at)) => Some(be.bin(BinaryOp::Ge, b_states[c], b_nonseqs[at])?),
        _ => None,
    };
    let valid = match (within, ran) {
        (Some(a), Some(b)) => Some(be.bin(BinaryOp::And, a, b)?),
        (a, b) => a.or(b),
    };
    let mask = |be: &mut Emit, v: NodeId| match valid {
        Some(ok) => {
            let zero = be.scalar(0.0, v);
            be.select(ok, v, zero)
        }
        None => Ok(v),
    };
    let nc = carried.len();
    for (k, s) in carried.iter().enumerate() {
        // The cotangent of what step t read (the state at t-1, or the window
        // oldest first), and of the stacked values before the step.
        let mut d = match gb_at.get(s) {
            Some(&at) => be.bin(BinaryOp::Add, grads[k], b_seqs[at])?,
            None => grads[k],
        };
        if scan.windowed(*s) {
            // Newest first, onto the older pending cotangents moved up one:
            // pending'[i] (for s_{t-1-i}) = pending[i+1] + read[K-1-i].
            let depth = scan.depth(*s);
            let read = be.slice(d, vec![SliceSpec::REVERSE])?;
            let older = be.slice(b_states[k], vec![SliceSpec::range(1, depth as i64)])?;
            let moved = be.pad_axis(older, 0, 0, 1)?;
            d = be.bin(BinaryOp::Add, moved, read)?;
        }
        let d = match (within, ran) {
            (Some(_), None) | (None, None) => mask(&mut be, d)?,
            // A step that did not run passes the pending cotangent on.
            (w, Some(r)) => {
                let d = match w {
                    Some(w) => {
                        let zero = be.scalar(0.0, d);
                        be.select(w, d, zero)?
                    }
                    None => d,
                };
                be.select(r, d, b_states[k])?
            }
        };
        be.g.set_output(&crate::scan::new_state_name(k), d);
    }
    for (k, _) in acc_wanted.iter().enumerate() {
        let dp = mask(&mut be, grads[nc + seq_wanted.len() + k])?;
        let acc = be.bin(BinaryOp::Add, b_states[nc + k], dp)?;
        be.g.set_output(&crate::scan::new_state_name(nc + k), acc);
    }
    if let Some(c) = counter {
        let one = be.g.add_const(crate::Value::from(1i64), be.loc.clone());
        let next = be.bin(BinaryOp::Add, b_states[c], one)?;
        be.g.set_output(&crate::scan::new_state_name(c), next);
    }
    for (k, _) in seq_wanted.iter().enumerate() {
        let dx = mask(&mut be, grads[nc + k])?;
        be.g.set_output(&out_name(k), dx);
    }
    bg.remove_dead();
    let full = Scan {
        body: Body::new(bg),
        n_steps: scan.n_steps,
        sequences: seqs.len(),
        taps: (0..states.len()).map(|_| Box::from([1usize])).collect(),
        outputs: seq_wanted.len(),
        non_sequences: nonseqs.len(),
        go_backwards: !scan.go_backwards,
        truncate_gradient: None,
        until: false,
    };
    // The inputs the backward body does not read go (see Scan::pruned).
    let (back, kept) = full.pruned()?;
    let all: Vec<NodeId> = seqs.iter().chain(&states).chain(&nonseqs).map(|s| s.outer).collect();
    let inputs: Vec<NodeId> = kept.iter().map(|&k| all[k]).collect();
    let bid = e.op(Op::Scan(Box::new(back.clone())), &inputs)?;
    let result = |e: &mut Emit, part| e.op(Op::ScanResult { index: back.index(part) }, &[bid]);

    let mut out: Vec<Option<NodeId>> = vec![None; node.inputs.len()];
    for (k, &i) in seq_wanted.iter().enumerate() {
        let rows = result(e, ScanPart::Outputs(k))?;
        let rows = if scan.go_backwards { rows } else { reverse(e, rows)? };
        out[i] = Some(pad_rows(e, rows, node.inputs[i], scan.n_steps)?);
    }
    for (k, &s) in carried.iter().enumerate() {
        if need[q + s] {
            let pending = result(e, ScanPart::Final(k))?;
            // Pending for s_{-1}, s_{-2}, ...: the initial window is oldest first.
            out[q + s] = Some(if scan.windowed(s) { reverse(e, pending)? } else { pending });
        }
    }
    for (k, &j) in acc_wanted.iter().enumerate() {
        out[q + ns + j] = Some(result(e, ScanPart::Final(nc + k))?);
    }
    Ok(out)
}

/// The gradient of a sequence's first `n` rows, padded with zero rows to
/// the sequence's length.
fn pad_rows(e: &mut Emit, rows: NodeId, seq: NodeId, n: Dim) -> Result<NodeId> {
    let len = e.ty(seq).shape[0];
    match (len, n) {
        _ if len == n => Ok(rows),
        (Dim::Known(l), Dim::Known(n)) => e.pad_axis(rows, 0, 0, l - n),
        _ => Err(unsupported(&format!(
            "with respect to a sequence of {len} rows when {n} steps run (give n_steps equal to its length)"
        ))),
    }
}
