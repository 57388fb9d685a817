//! The meaning of `scan`: the body evaluated once per step, states carried,
//! rows of the sequences read and per-step values stacked.

use std::collections::{HashMap, VecDeque};

use ndarray::Axis;
use rhea_graph::scan::BodyInput;
use rhea_graph::scan::out_name;
use rhea_graph::{DType, Dim, NodeId, Scan, TensorType, Value};

use crate::Bindings;

type R<T> = Result<T, String>;

/// One step of a loop's body: its inputs (in the order the loop was
/// given) to its outputs in order.
pub type BodyStep<'a> = dyn FnMut(&mut [Value]) -> R<Vec<Value>> + 'a;

/// Row `i` of `v` along axis 0.
pub(crate) fn row(v: &Value, i: usize) -> Value {
    rhea_graph::with_array!(v, a => Value::from(a.index_axis(Axis(0), i).to_owned()))
}

/// `rows` (each of `dtype` and shape `row_shape`) stacked along a new
/// axis 0, with zero rows after them up to `n`.
pub(crate) fn stack_rows(rows: &[Value], n: usize, dtype: DType, row_shape: &[usize]) -> R<Value> {
    let mut shape = vec![n];
    shape.extend_from_slice(row_shape);
    let per_row: usize = row_shape.iter().product();
    let total = per_row.checked_mul(n).ok_or_else(|| format!("{dtype}{shape:?} is too large"))?;
    macro_rules! stack {
        ($t:ty, $variant:ident) => {{
            let mut data: Vec<$t> = Vec::new();
            data.try_reserve_exact(total).map_err(|_| format!("out of memory stacking {dtype}{shape:?}"))?;
            for r in rows {
                let Value::$variant(a) = r else { return Err(format!("a row of {} in a stack of {dtype}", r.dtype())) };
                match a.as_slice() {
                    Some(s) => data.extend_from_slice(s),
                    None => data.extend(a.iter().copied()),
                }
            }
            data.resize(total, <$t>::default());
            Value::$variant(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data).map_err(|e| e.to_string())?)
        }};
    }
    Ok(match dtype {
        DType::F32 => stack!(f32, F32),
        DType::F64 => stack!(f64, F64),
        DType::I32 => stack!(i32, I32),
        DType::I64 => stack!(i64, I64),
        DType::Bool => stack!(bool, Bool),
    })
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
    let order: Vec<String> = body.inputs().iter().filter_map(|&i| body.leaf_name(i)).map(String::from).collect();
    let keep = vec![true; 1 + scan.results()];
    let results = run_scan_with(scan, inputs, bindings, &keep, &order, &mut |feeds| {
        let named: HashMap<String, Value> = order.iter().cloned().zip(feeds.iter().cloned()).collect();
        crate::run(body, &named, &wanted).map_err(|e| e.to_string())
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

/// The number of steps a loop runs at `bindings` (at most, with an
/// until-condition), checked against its sequences' numbers of rows.
pub fn loop_steps(scan: &Scan, seq_rows: impl IntoIterator<Item = usize>, bindings: &Bindings) -> R<usize> {
    let n = resolve(scan.n_steps, bindings)?;
    for (i, rows) in seq_rows.into_iter().enumerate() {
        if rows < n {
            return Err(format!("sequence {i} has {rows} rows, fewer than the {n} steps"));
        }
    }
    Ok(n)
}

/// Writes row `r` of `seq` into `slot`, reusing its memory when it can.
fn write_row(slot: &mut Value, seq: &Value, r: usize) {
    macro_rules! copy {
        ($($variant:ident),*) => {
            match (&mut *slot, seq) {
                $((Value::$variant(dst), Value::$variant(src)) if dst.shape() == &src.shape()[1..] => {
                    let len = dst.len();
                    if let (Some(d), Some(s)) = (dst.as_slice_mut(), src.as_slice()) {
                        if s.len() >= (r + 1) * len {
                            d.copy_from_slice(&s[r * len..(r + 1) * len]);
                            return;
                        }
                    }
                })*
                _ => {}
            }
        };
    }
    copy!(F32, F64, I32, I64, Bool);
    *slot = row(seq, r);
}

/// [`run_scan`] with the body run by `step`: given the body's inputs in the
/// order of the names `order`, it gives the values of [`body_outputs`] (the
/// executor runs a body's compiled plan this way). Rows and states move
/// into the inputs without copies where they can. Only the values `keep`
/// marks (by number: 0 the step count, `1 + index` result `index`) are
/// made: a stacked result nobody reads is never stored (Theano's
/// save-memory).
pub fn run_scan_with(
    scan: &Scan,
    inputs: &[&Value],
    bindings: &Bindings,
    keep: &[bool],
    order: &[String],
    step: &mut BodyStep,
) -> R<Vec<Option<Value>>> {
    let kept = |value: usize| keep.get(value).copied().unwrap_or(false);
    let (q, ns, m) = (scan.sequences, scan.states(), scan.non_sequences);
    let no = scan.outputs;
    let keep_stacked: Vec<bool> = (0..ns + no).map(|k| kept(1 + k)).collect();
    let keep_before: Vec<bool> = (0..ns).map(|s| kept(1 + 2 * ns + no + s)).collect();
    if inputs.len() != q + ns + m {
        return Err(format!("scan takes {} inputs, got {}", q + ns + m, inputs.len()));
    }
    let n = loop_steps(scan, inputs[..q].iter().map(|s| s.shape().first().copied().unwrap_or(0)), bindings)?;
    for s in (0..ns).filter(|&s| scan.windowed(s)) {
        let rows = inputs[q + s].shape().first().copied().unwrap_or(0);
        if rows < scan.depth(s) {
            return Err(format!(
                "state {s} reads {} steps back, but its initial window has {rows} rows",
                scan.depth(s)
            ));
        }
    }
    let names = body_outputs(scan)?;
    let types: Vec<TensorType> = names.iter().map(|n| scan.body_output(n)).collect::<R<_>>()?;
    let plan: Vec<BodyInput> = order.iter().map(|name| scan.feed_of(name)).collect::<R<_>>()?;
    let concrete = |ty: &TensorType| -> R<Vec<usize>> { ty.shape.iter().map(|&d| resolve(d, bindings)).collect() };
    // A state read only at t-1 lives in its input slot during a step
    // (`current` between steps); a state with a window of taps in `windows`.
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
    let placeholder = || Value::from(false);
    let mut feeds: Vec<Value> = plan
        .iter()
        .map(|f| match *f {
            BodyInput::NonSeq(j) => inputs[q + ns + j].clone(),
            _ => placeholder(),
        })
        .collect();
    let mut stacked: Vec<Vec<Value>> = vec![Vec::new(); ns + no];
    let mut before: Vec<Vec<Value>> = vec![Vec::new(); ns];
    let mut steps = 0;
    for t in 0..n {
        let r = if scan.go_backwards { n - 1 - t } else { t };
        for (slot, f) in feeds.iter_mut().zip(&plan) {
            match *f {
                BodyInput::Seq(i) => write_row(slot, inputs[i], r),
                BodyInput::State(s, k) if scan.windowed(s) => *slot = windows[s][windows[s].len() - k].clone(),
                // Moved in, and back out after the step.
                BodyInput::State(s, _) => *slot = windows[s].pop_back().unwrap_or_else(placeholder),
                BodyInput::NonSeq(_) => {}
            }
        }
        let vals = step(&mut feeds).map_err(|e| format!("step {t}: {e}"))?;
        if vals.len() != names.len() {
            return Err(format!("step {t}: the body gave {} values for {}", vals.len(), names.len()));
        }
        for (slot, f) in feeds.iter_mut().zip(&plan) {
            if let BodyInput::State(s, _) = *f
                && !scan.windowed(s)
            {
                windows[s].push_back(std::mem::replace(slot, placeholder()));
            }
        }
        for (s, window) in windows.iter_mut().enumerate() {
            let prev = if scan.windowed(s) {
                match keep_before[s] {
                    true => {
                        let depth = window.len();
                        Some(stack_rows(window.make_contiguous(), depth, types[s].dtype, &concrete(&types[s])?)?)
                    }
                    false => None,
                }
            } else {
                window.pop_back()
            };
            if keep_before[s] {
                before[s].push(prev.ok_or("a state without a value")?);
            }
        }
        let stop = scan.until && vals[ns + no].to_f64_vec().first().is_some_and(|&c| c != 0.0);
        for (k, v) in vals.into_iter().enumerate().take(ns + no) {
            if keep_stacked[k] {
                stacked[k].push(v.clone());
            }
            if k < ns {
                windows[k].push_back(v);
                if windows[k].len() > scan.depth(k) {
                    windows[k].pop_front();
                }
            }
        }
        steps = t + 1;
        if stop {
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
        let ty = scan.init_type(s)?;
        results.push(if keep_before[s] { Some(stack(rows, &ty)?) } else { None });
    }
    Ok(results)
}
