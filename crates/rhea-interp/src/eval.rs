//! Graph-level evaluation: check and bind the feeds, then evaluate the
//! needed nodes in topological order.

use std::borrow::Cow;
use std::collections::HashMap;

use rhea_graph::{Dim, Graph, NodeId, Op, Symbol, Value};

use crate::InterpError;

/// Sizes of the symbolic dims, as bound by the fed inputs.
pub type Bindings = HashMap<Symbol, usize>;

/// Checks `feeds` against the graph's inputs (every input given, none
/// unknown, dtypes and shapes matching) and binds the symbolic dims.
pub fn bind_inputs<V: std::borrow::Borrow<Value>>(
    graph: &Graph,
    feeds: &HashMap<String, V>,
) -> Result<Bindings, InterpError> {
    bind(graph, feeds, &graph.inputs())
}

/// Checks the inputs `needed` are fed and binds symbolic dims from every
/// fed input (a gradient can need `batch` without reading the input that
/// carries it); feeds naming no input of the graph are an error.
fn bind<V: std::borrow::Borrow<Value>>(
    graph: &Graph,
    feeds: &HashMap<String, V>,
    needed: &[NodeId],
) -> Result<Bindings, InterpError> {
    let inputs = graph.inputs();
    for name in feeds.keys() {
        if !inputs.iter().any(|&id| graph.leaf_name(id) == Some(name.as_str())) {
            let names: Vec<&str> = inputs.iter().filter_map(|&id| graph.leaf_name(id)).collect();
            return Err(InterpError::UnknownInput(name.clone(), names.join(", ")));
        }
    }
    for &id in needed {
        let name = graph.leaf_name(id).expect("inputs have names");
        if !feeds.contains_key(name) {
            return Err(InterpError::MissingInput(name.to_string()));
        }
    }
    let mut bindings = Bindings::new();
    let mut bound_by: HashMap<Symbol, String> = HashMap::new();
    for &id in &inputs {
        let name = graph.leaf_name(id).expect("inputs have names");
        let Some(value) = feeds.get(name).map(std::borrow::Borrow::borrow) else { continue };
        let ty = graph.ty(id);
        let mismatch = || InterpError::InputMismatch {
            name: name.to_string(),
            expected: ty.clone(),
            got: format!("{}{:?}", value.dtype(), value.shape()),
        };
        if value.dtype() != ty.dtype || value.shape().len() != ty.shape.rank() {
            return Err(mismatch());
        }
        for (dim, &n) in ty.shape.iter().zip(value.shape()) {
            match *dim {
                Dim::Known(k) if k != n => return Err(mismatch()),
                Dim::Known(_) => {}
                Dim::Sym(s) => match bindings.get(&s) {
                    Some(&prev) if prev != n => {
                        return Err(InterpError::SymbolConflict {
                            sym: s.name().to_string(),
                            first: prev,
                            first_input: bound_by[&s].clone(),
                            second: n,
                            second_input: name.to_string(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        bindings.insert(s, n);
                        bound_by.insert(s, name.to_string());
                    }
                },
            }
        }
    }
    Ok(bindings)
}

/// What a run checks as it goes, beyond the graph's own rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop at the first node whose float value holds a NaN or an infinity,
    /// naming its op, the line that built it and its inputs' statistics.
    pub nan_guard: bool,
    /// Refuse a run whose computed values would exceed this many bytes.
    pub max_memory: Option<u64>,
}

/// Evaluates `outputs` of `graph` given its inputs by name, using the
/// shared variables' current values.
pub fn run(graph: &Graph, feeds: &HashMap<String, Value>, outputs: &[NodeId]) -> Result<Vec<Value>, InterpError> {
    run_checked(graph, feeds, outputs, &RunOptions::default())
}

/// [`run`] with the checks of `options`.
pub fn run_checked(
    graph: &Graph,
    feeds: &HashMap<String, Value>,
    outputs: &[NodeId],
    options: &RunOptions,
) -> Result<Vec<Value>, InterpError> {
    let order = graph.ancestors(outputs);
    let values = evaluate(graph, feeds, &|id, _| graph.shared_value(id), &order, options)?;
    Ok(outputs.iter().map(|id| values[id].clone().into_owned()).collect())
}

/// Like [`run`], but shared values come from `shared(node, name)`: a
/// compiled function reads them from wherever they live without copying.
pub fn run_with<'a>(
    graph: &Graph,
    feeds: &'a HashMap<String, Value>,
    shared: &dyn Fn(NodeId, &str) -> Option<&'a Value>,
    outputs: &[NodeId],
) -> Result<Vec<Value>, InterpError> {
    let order = graph.ancestors(outputs);
    let values = evaluate(graph, feeds, shared, &order, &RunOptions::default())?;
    Ok(outputs.iter().map(|id| values[id].clone().into_owned()).collect())
}

/// Like [`run`], but returns the value of every node evaluated on the way
/// (for debugging tools that compare intermediates).
pub fn run_all(
    graph: &Graph,
    feeds: &HashMap<String, Value>,
    outputs: &[NodeId],
) -> Result<HashMap<NodeId, Value>, InterpError> {
    let order = graph.ancestors(outputs);
    let values = evaluate(graph, feeds, &|id, _| graph.shared_value(id), &order, &RunOptions::default())?;
    Ok(values.into_iter().map(|(id, v)| (id, v.into_owned())).collect())
}

/// Checks that `id`'s value can be allocated (within the budget and the
/// memory the system gives) before it is computed: `held` bytes are already
/// computed. Returns the value's bytes.
fn check_memory(
    graph: &Graph,
    id: NodeId,
    bindings: &Bindings,
    held: u128,
    options: &RunOptions,
) -> Result<usize, InterpError> {
    let node = graph.node(id);
    let oom =
        |msg: String| InterpError::OutOfMemory { node: id, op: node.op.name().to_string(), loc: node.loc.clone(), msg };
    let dims: Option<Vec<usize>> = node
        .ty
        .shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => Some(*n),
            Dim::Sym(s) => bindings.get(s).copied(),
        })
        .collect();
    // Unbound symbols are the op's own error to report.
    let Some(dims) = dims else { return Ok(0) };
    let bytes = dims
        .iter()
        .try_fold(node.ty.dtype.size_bytes() as u128, |acc, &n| acc.checked_mul(n as u128))
        .ok_or_else(|| oom(format!("out of memory: its {} value is too large to evaluate on any machine", node.ty)))?;
    let value = format!("{} value of {}", node.ty, rhea_graph::memory::format_bytes(bytes));
    if let Some(limit) = options.max_memory
        && held + bytes > limit as u128
    {
        return Err(oom(format!(
            "the values computed so far hold {} and this {value} would exceed the memory budget of {}",
            rhea_graph::memory::format_bytes(held),
            rhea_graph::memory::format_bytes(limit.into())
        )));
    }
    let bytes = usize::try_from(bytes)
        .map_err(|_| oom(format!("out of memory: its {value} is too large to evaluate on this machine")))?;
    rhea_graph::memory::can_allocate(bytes)
        .map_err(|_| oom(format!("out of memory: its {value} is too large to evaluate: it cannot be allocated")))?;
    Ok(bytes)
}

/// The NaN guard's verdict on `id`'s new value.
fn check_finite(graph: &Graph, id: NodeId, value: &Value, inputs: &[&Value]) -> Result<(), InterpError> {
    let Some(report) = rhea_graph::nan_report(value, inputs) else { return Ok(()) };
    let node = graph.node(id);
    Err(InterpError::NonFinite { node: id, op: node.op.name().to_string(), loc: node.loc.clone(), report })
}

/// Evaluates the nodes of `order` (a topological order) after checking the
/// feeds; leaves are borrowed, computed values owned.
fn evaluate<'a>(
    graph: &Graph,
    feeds: &'a HashMap<String, Value>,
    shared: &dyn Fn(NodeId, &str) -> Option<&'a Value>,
    order: &[NodeId],
    options: &RunOptions,
) -> Result<HashMap<NodeId, Cow<'a, Value>>, InterpError> {
    let needed: Vec<NodeId> =
        order.iter().copied().filter(|&id| matches!(graph.node(id).op, Op::Input { .. })).collect();
    let bindings = bind(graph, feeds, &needed)?;
    let mut held: u128 = 0;
    let mut values: HashMap<NodeId, Cow<'a, Value>> = HashMap::with_capacity(order.len());
    // Each scan's results, read by its scan_result nodes.
    // (One scan_result node per index: hash-consing merges the others.)
    let mut results: HashMap<NodeId, Vec<Option<Value>>> = HashMap::new();
    for &id in order {
        let node = graph.node(id);
        let value = match &node.op {
            Op::ScanResult { index } => {
                held += check_memory(graph, id, &bindings, held, options)? as u128;
                let v =
                    results.get_mut(&node.inputs[0]).and_then(|r| r.get_mut(index + 1)?.take()).ok_or_else(|| {
                        InterpError::Op {
                            op: node.op.name().to_string(),
                            loc: node.loc.clone(),
                            msg: "its scan was not run".into(),
                        }
                    })?;
                Cow::Owned(v)
            }
            Op::Input { name } => Cow::Borrowed(&feeds[&**name]),
            Op::Shared { name } => {
                let v = shared(id, name).ok_or_else(|| InterpError::MissingShared(name.to_string()))?;
                if v.dtype() != node.ty.dtype || Some(v.shape().to_vec()) != node.ty.shape.to_known() {
                    return Err(InterpError::InputMismatch {
                        name: name.to_string(),
                        expected: node.ty.clone(),
                        got: format!("{}{:?}", v.dtype(), v.shape()),
                    });
                }
                Cow::Borrowed(v)
            }
            op => {
                held += check_memory(graph, id, &bindings, held, options)? as u128;
                let args: Vec<&Value> = node.inputs.iter().map(|i| &*values[i]).collect();
                let failed = |msg| InterpError::Op { op: op.name().to_string(), loc: node.loc.clone(), msg };
                let value = match op {
                    // The step count; the results wait for their scan_result nodes.
                    Op::Scan(scan) => {
                        let all = crate::scan::run_scan(scan, &args, &bindings).map_err(failed)?;
                        let steps =
                            all.first().cloned().ok_or_else(|| failed("a scan without its step count".into()))?;
                        results.insert(id, all.into_iter().map(Some).collect());
                        steps
                    }
                    op => eval_op(op, &args, &bindings).map_err(failed)?,
                };
                if options.nan_guard {
                    check_finite(graph, id, &value, &args)?;
                }
                Cow::Owned(value)
            }
        };
        values.insert(id, value);
    }
    Ok(values)
}

/// Evaluates one op on concrete input values. `bindings` gives the sizes of
/// symbolic dims that appear in the op's attributes (a reshape target).
/// A scan has more than one value: [`crate::run_scan`] evaluates it.
pub fn eval_op(op: &Op, inputs: &[&Value], bindings: &Bindings) -> Result<Value, String> {
    crate::ops::eval(op, inputs, bindings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};
    use rhea_graph::{Builder, DType};

    fn feeds(items: &[(&str, Value)]) -> HashMap<String, Value> {
        items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn mlp() -> (Builder, NodeId) {
        let g = Builder::new();
        let batch = g.dim("batch").unwrap();
        let x = g.input("x", DType::F32, [batch, Dim::Known(2)]).unwrap();
        let w = g.shared("w", array![[1.0f32, -1.0], [2.0, 0.5]]).unwrap();
        let y = x.dot(&w).unwrap().relu().unwrap().sum(&[1], false).unwrap();
        (g, y.id())
    }

    #[test]
    fn runs_with_any_batch_size() {
        let (g, y) = mlp();
        let out = run(&g.graph(), &feeds(&[("x", Value::from(array![[1.0f32, 1.0]]))]), &[y]).unwrap();
        // [1,1] @ w = [3, -0.5] -> relu -> [3, 0] -> 3
        assert_eq!(out[0], Value::from(array![3.0f32]));
        let x = Array2::<f32>::ones((4, 2));
        let out = run(&g.graph(), &feeds(&[("x", Value::from(x))]), &[y]).unwrap();
        assert_eq!(out[0].shape(), &[4]);
    }

    #[test]
    fn feed_errors_name_the_input() {
        let (g, y) = mlp();
        let err = run(&g.graph(), &HashMap::new(), &[y]).unwrap_err().to_string();
        assert_eq!(err, "input \"x\" was not given");
        let err = run(&g.graph(), &feeds(&[("x", Value::from(array![[1.0f64, 1.0]]))]), &[y]).unwrap_err();
        assert_eq!(err.to_string(), "input \"x\": expected f32[batch,2], got f64[1, 2]");
        let err = run(&g.graph(), &feeds(&[("x", Value::from(array![[1.0f32, 1.0, 1.0]]))]), &[y]).unwrap_err();
        assert_eq!(err.to_string(), "input \"x\": expected f32[batch,2], got f32[1, 3]");
        let bad = feeds(&[("x", Value::from(array![[1.0f32, 1.0]])), ("z", Value::from(1.0f32))]);
        let err = run(&g.graph(), &bad, &[y]).unwrap_err().to_string();
        assert_eq!(err, "\"z\" is not an input of the graph (inputs: x)");
    }

    #[test]
    fn symbolic_dims_must_agree_across_inputs() {
        let g = Builder::new();
        let n = g.dim("n").unwrap();
        let a = g.input("a", DType::F64, [n]).unwrap();
        let b = g.input("b", DType::F64, [n]).unwrap();
        let s = (&a + &b).sum(&[0], false).unwrap();
        let f = feeds(&[("a", Value::from(array![1.0f64, 2.0])), ("b", Value::from(array![1.0f64, 2.0, 3.0]))]);
        let err = run(&g.graph(), &f, &[s.id()]).unwrap_err().to_string();
        assert_eq!(err, "symbolic dim n is 2 from input \"a\" but 3 from input \"b\"");
    }

    #[test]
    fn value_errors_name_the_op_and_the_users_line() {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [3]).unwrap();
        let i = g.input("i", DType::I64, [1]).unwrap();
        let t = x.take(&i, 0).unwrap();
        let f = feeds(&[("x", Value::from(array![1.0f32, 2.0, 3.0])), ("i", Value::from(array![7i64]))]);
        let err = run(&g.graph(), &f, &[t.id()]).unwrap_err().to_string();
        assert!(err.starts_with("gather at crates/rhea-interp/src/eval.rs:"), "{err}");
        assert!(err.ends_with("index 7 is out of range for axis 0 of size 3"), "{err}");
    }

    #[test]
    fn shared_variables_without_values_are_reported() {
        let mut g = Graph::new();
        let w = g.add_shared_declared("w", rhea_graph::TensorType::new(DType::F32, [2]), None).unwrap();
        let err = run(&g, &HashMap::new(), &[w]).unwrap_err().to_string();
        assert_eq!(err, "shared variable \"w\" has no value: give it in the inputs file");
    }

    #[test]
    fn symbolic_reshape_and_random_shapes_resolve_at_run_time() {
        let g = Builder::new();
        let b = g.dim("b").unwrap();
        let x = g.input("x", DType::F32, [b, Dim::Known(2), Dim::Known(3)]).unwrap();
        let flat = x.flatten(1).unwrap();
        let noise = g.uniform([b, Dim::Known(6)], DType::F32, 0.0, 1.0, 9).unwrap();
        let y = &flat + &noise;
        let f = feeds(&[("x", Value::from(ndarray::Array3::<f32>::zeros((5, 2, 3))))]);
        let out = run(&g.graph(), &f, &[y.id()]).unwrap();
        assert_eq!(out[0].shape(), &[5, 6]);
        assert!(out[0].to_f64_vec().iter().all(|v| (0.0..1.0).contains(v)));
    }
}
