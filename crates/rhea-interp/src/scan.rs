//! The meaning of `scan`: the body evaluated once per step, states carried,
//! rows of the sequences read and per-step values stacked.

use std::collections::{HashMap, VecDeque};

use ndarray::Axis;
use rhea_graph::scan::{nonseq_name, out_name, seq_name, state_name};
use rhea_graph::{DType, Dim, NodeId, Scan, TensorType, Value};

use crate::Bindings;

type R<T> = Result<T, String>;

/// One step of a loop's body: its inputs by name to its outputs in order.
pub type BodyStep<'a> = dyn FnMut(&HashMap<String, Value>) -> R<Vec<Value>> + 'a;

/// Row `i` of `v` along axis 0.
pub(crate) fn row(v: &Value, i: usize) -> Value {
    rhea_graph::with_array!(v, a => Value::from(a.index_axis(Axis(0), i).to_owned()))
}

/// `rows` (each of `dtype` and shape `row_shape`) stacked along a new
/// axis 0, with zero rows after them up to `n`.
pub(crate) fn stack_rows(rows: &[Value], n: usize, dtype: DType, row_shape: &[usize]) -> R<Value> {
    let mut shape = vec![n];
    shape.extend_from_slice(row_shape);
    let per_row: usize = row_shape.iter().product::<usize>() * dtype.size_bytes();
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(per_row.saturating_mul(n))
        .map_err(|_| format!("out of memory stacking {dtype}{shape:?}"))?;
    for r in rows {
        bytes.extend_from_slice(&r.to_le_bytes());
    }
    bytes.resize(per_row * n, 0);
    Value::from_le_bytes(dtype, &shape, &bytes)
}

fn resolve(d: Dim, bindings: &Bindings) -> R<usize> {
    match d {
        Dim::Known(n) => Ok(n),
        Dim::Sym(s) => bindings.get(&s).copied().ok_or_else(|| format!("the symbolic dim {} is not bound", s.name())),
    }
}

/// Runs `scan` on its inputs (sequences, initial states, non-sequences):
/// the number of steps run, then every result in [`Scan::part`] order.
/// The body runs on the interpreter.
pub fn run_scan(scan: &Scan, inputs: &[&Value], bindings: &Bindings) -> R<Vec<Value>> {
    let body = scan.body.graph();
    let wanted = body_outputs(scan)?
        .iter()
        .map(|name| {
            body.outputs()
                .iter()
                .find(|(o, _)| **o == **name)
                .map(|(_, id)| *id)
                .ok_or_else(|| format!("no body output {name}"))
        })
        .collect::<R<Vec<NodeId>>>()?;
    let keep = vec![true; 1 + scan.results()];
    let results = run_scan_with(scan, inputs, bindings, &keep, &mut |feeds| {
        crate::run(body, feeds, &wanted).map_err(|e| e.to_string())
    })?;
    Ok(results.into_iter().flatten().collect())
}

/// The names of the body outputs a step gives, in order: the new states,
/// the per-step outputs, and the until-condition if there is one.
pub fn body_outputs(scan: &Scan) -> R<Vec<String>> {
    let mut names: Vec<String> = (0..scan.states()).map(rhea_graph::scan::new_state_name).collect();
    names.extend((0..scan.outputs).map(out_name));
    if scan.until {
        names.push("until".into());
    }
    Ok(names)
}

/// [`run_scan`] with the body run by `step`: given the body's inputs by
/// name, it gives the values of [`body_outputs`] (the executor runs a
/// body's compiled plan this way). Only the values `keep` marks (by number:
/// 0 the step count, `1 + index` result `index`) are made: a stacked
/// result nobody reads is never stored (Theano's save-memory).
pub fn run_scan_with(
    scan: &Scan,
    inputs: &[&Value],
    bindings: &Bindings,
    keep: &[bool],
    step: &mut BodyStep,
) -> R<Vec<Option<Value>>> {
    let kept = |value: usize| keep.get(value).copied().unwrap_or(false);
    let (ns, no) = (scan.states(), scan.outputs);
    let keep_stacked: Vec<bool> = (0..ns + no).map(|k| kept(1 + k)).collect();
    let keep_before: Vec<bool> = (0..ns).map(|s| kept(1 + 2 * ns + no + s)).collect();
    let (q, ns, m) = (scan.sequences, scan.states(), scan.non_sequences);
    if inputs.len() != q + ns + m {
        return Err(format!("scan takes {} inputs, got {}", q + ns + m, inputs.len()));
    }
    let n = resolve(scan.n_steps, bindings)?;
    for (i, s) in inputs[..q].iter().enumerate() {
        let rows = s.shape().first().copied().unwrap_or(0);
        if rows < n {
            return Err(format!("sequence {i} has {rows} rows, fewer than the {n} steps"));
        }
    }
    let names = body_outputs(scan)?;
    let types: Vec<TensorType> = names.iter().map(|n| scan.body_output(n)).collect::<R<_>>()?;
    let mut windows: Vec<VecDeque<Value>> = (0..ns)
        .map(|s| {
            let init = inputs[q + s];
            if scan.windowed(s) {
                (0..scan.depth(s)).map(|r| row(init, r)).collect()
            } else {
                VecDeque::from([init.clone()])
            }
        })
        .collect();
    let mut feeds: HashMap<String, Value> = HashMap::new();
    for j in 0..m {
        feeds.insert(nonseq_name(j), inputs[q + ns + j].clone());
    }
    let mut stacked: Vec<Vec<Value>> = vec![Vec::new(); ns + scan.outputs];
    let mut before: Vec<Vec<Value>> = vec![Vec::new(); ns];
    let mut steps = 0;
    for t in 0..n {
        let r = if scan.go_backwards { n - 1 - t } else { t };
        for (i, seq) in inputs[..q].iter().enumerate() {
            feeds.insert(seq_name(i), row(seq, r));
        }
        for (s, window) in windows.iter().enumerate() {
            for &k in scan.taps[s].iter() {
                feeds.insert(state_name(s, k), window[window.len() - k].clone());
            }
        }
        for (s, window) in windows.iter().enumerate() {
            if keep_before[s] {
                before[s].push(window.back().cloned().ok_or("a state without a value")?);
            }
        }
        let vals = step(&feeds).map_err(|e| format!("step {t}: {e}"))?;
        if vals.len() != names.len() {
            return Err(format!("step {t}: the body gave {} values for {}", vals.len(), names.len()));
        }
        for (s, window) in windows.iter_mut().enumerate() {
            window.push_back(vals[s].clone());
            if window.len() > scan.depth(s) {
                window.pop_front();
            }
        }
        for (k, rows) in stacked.iter_mut().enumerate() {
            if keep_stacked[k] {
                rows.push(vals[k].clone());
            }
        }
        steps = t + 1;
        if scan.until && vals[ns + scan.outputs].to_f64_vec().first().is_some_and(|&c| c != 0.0) {
            break;
        }
    }
    let stack = |rows: &[Value], ty: &TensorType| -> R<Value> {
        let shape: Vec<usize> = ty.shape.iter().map(|&d| resolve(d, bindings)).collect::<R<_>>()?;
        stack_rows(rows, n, ty.dtype, &shape)
    };
    let mut results = vec![Some(Value::from(steps as i64))];
    for (k, rows) in stacked.iter().enumerate() {
        results.push(if keep_stacked[k] { Some(stack(rows, &types[k])?) } else { None });
    }
    for window in &windows {
        results.push(Some(window.back().cloned().ok_or("a state without a value")?));
    }
    for (s, rows) in before.iter().enumerate() {
        results.push(if keep_before[s] { Some(stack(rows, &types[s])?) } else { None });
    }
    Ok(results)
}
