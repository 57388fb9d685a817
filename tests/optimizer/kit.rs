//! Running a graph raw and optimized, and comparing the results.

use std::collections::HashMap;

use rhea::opt::{Mode, Options, Program, compile, memory_plan};
use rhea::{Graph, Value};

/// The optimizer options of a test: verification on, the interpreter folding.
pub fn options(mode: Mode, include: &[&str]) -> Options {
    Options { mode, include: include.iter().map(|s| s.to_string()).collect(), verify: true, ..rhea::default_options() }
}

/// Compiles `g` (which must declare its outputs).
pub fn program(g: &Graph, opts: &Options) -> Program {
    compile(g.clone(), opts).unwrap_or_else(|e| panic!("{e}\n{g:?}"))
}

/// The graph's outputs, computed from the raw graph.
pub fn run_raw(g: &Graph, feeds: &HashMap<String, Value>) -> Vec<Value> {
    let ids: Vec<_> = g.outputs().iter().map(|(_, id)| *id).collect();
    rhea::interp::run(g, feeds, &ids).unwrap_or_else(|e| panic!("raw run: {e}\n{g:?}"))
}

/// The program's outputs, run through its kernels and memory plan on the
/// reference interpreter (every buffer checked to hold the value read).
pub fn run_program(p: &Program, feeds: &HashMap<String, Value>) -> Result<Vec<Value>, String> {
    run_on_backend(p, feeds, rhea::Backend::Interp)
}

fn run_on_backend(p: &Program, feeds: &HashMap<String, Value>, backend: rhea::Backend) -> Result<Vec<Value>, String> {
    let ids: Vec<_> = p.graph.outputs().iter().map(|(_, id)| *id).collect();
    rhea::run_program(p, backend, feeds, &ids, None).map_err(|e| e.to_string())
}

/// A numpy golden case of `crates/rhea-interp/tests/golden/ops.json` as a
/// one-op graph with its feeds and numpy's value, if it has one.
pub struct GoldenCase {
    pub name: String,
    pub graph: Graph,
    pub feeds: HashMap<String, Value>,
    pub expected: Option<Value>,
}

/// Every golden case whose op types on its inputs.
pub fn golden_cases() -> Vec<GoldenCase> {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        op: rhea::Op,
        inputs: Vec<rhea::Literal>,
        #[serde(default)]
        expected: Option<rhea::Literal>,
    }
    let path = repo_file("crates/rhea-interp/tests/golden/ops.json");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cases
        .into_iter()
        .filter_map(|case| {
            let mut graph = Graph::new();
            let mut feeds = HashMap::new();
            let mut ids = Vec::new();
            for (i, lit) in case.inputs.iter().enumerate() {
                let v = lit.value().clone();
                let name = format!("in{i}");
                let ty = rhea::TensorType::new(v.dtype(), rhea::Shape::known(v.shape()));
                ids.push(graph.add_input(&name, ty, None).unwrap());
                feeds.insert(name, v);
            }
            let out = graph.add(case.op.clone(), &ids, None).ok()?;
            graph.set_output("out", out);
            Some(GoldenCase { name: case.name, graph, feeds, expected: case.expected.map(|l| l.value().clone()) })
        })
        .collect()
}

/// What every backend needs to run `p` on `feeds`: the bindings, the memory
/// plan, the outputs, the inputs and their values in order.
#[allow(clippy::type_complexity)]
pub fn prepare(
    p: &Program,
    feeds: &HashMap<String, Value>,
) -> Result<(rhea::interp::Bindings, rhea::opt::MemoryPlan, Vec<rhea::NodeId>, Vec<rhea::NodeId>, Vec<Value>), String> {
    let bindings = rhea::interp::bind_inputs(&p.graph, feeds).map_err(|e| e.to_string())?;
    let mem = memory_plan(&p.graph, &p.steps, &p.fusion, &bindings)?;
    let ids: Vec<_> = p.graph.outputs().iter().map(|(_, id)| *id).collect();
    let inputs = p.graph.inputs();
    let values: Vec<Value> = inputs
        .iter()
        .map(|&i| feeds.get(p.graph.leaf_name(i).unwrap_or_default()).cloned().ok_or("an input was not fed"))
        .collect::<Result<_, _>>()?;
    Ok((bindings, mem, ids, inputs, values))
}

/// The program's outputs on the CPU backend: kernels compiled by
/// Cranelift, run by the one executor (prepared buffers, native library
/// ops, the interpreter for the rest).
pub fn run_cpu(p: &Program, feeds: &HashMap<String, Value>) -> Result<Vec<Value>, String> {
    run_on_backend(p, feeds, rhea::Backend::Cpu)
}

/// The program's outputs on the CUDA backend, on GPU 0 or (`emulated`)
/// the PTX emulator: kernels as PTX, products on cuBLAS, other library
/// ops on the host.
pub fn run_cuda(p: &Program, feeds: &HashMap<String, Value>, emulated: bool) -> Result<Vec<Value>, String> {
    run_on_backend(p, feeds, if emulated { rhea::Backend::CudaEmulated } else { rhea::Backend::Cuda })
}

/// The program's outputs on the CUDA backend on `gpu`.
pub fn run_cuda_on(
    gpu: std::sync::Arc<rhea_cuda::Gpu>,
    p: &Program,
    feeds: &HashMap<String, Value>,
) -> Result<Vec<Value>, String> {
    let ids: Vec<_> = p.graph.outputs().iter().map(|(_, id)| *id).collect();
    let make = |_: &Program| -> Result<Box<dyn rhea_exec::Engine>, String> {
        Ok(Box::new(rhea_cuda::CudaEngine::new(gpu.clone(), false)))
    };
    let engines = rhea_exec::Engines::new(p, &make)?;
    rhea::run_on(p, &engines, feeds, &ids, None).map_err(|e| e.to_string())
}

/// A file of the repository: under `$RHEA_REPO` when set (test binaries
/// copied to a GPU machine), else where this crate was built.
pub fn repo_file(rel: &str) -> std::path::PathBuf {
    let root =
        std::env::var_os("RHEA_REPO").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from);
    root.join(rel)
}

/// Checks two values agree: same dtype and shape, floats within a relative
/// tolerance (NaN matching NaN, infinities matching exactly).
pub fn close(a: &Value, b: &Value, tol: f64) -> Result<(), String> {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return Err(format!("{}{:?} vs {}{:?}", a.dtype(), a.shape(), b.dtype(), b.shape()));
    }
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        let finite = x.is_finite() && y.is_finite();
        let same =
            (x.is_nan() && y.is_nan()) || x == &y || (finite && (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())));
        if !same {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

/// Like [`close`], for a graph a stabilization rewrote: where the raw value
/// overflowed or underflowed to a non-finite one, a finite optimized value is
/// the improvement the rewrite is for. The reverse is never accepted.
pub fn close_or_improved(raw: &Value, opt: &Value, tol: f64) -> Result<(), String> {
    if raw.dtype() != opt.dtype() || raw.shape() != opt.shape() {
        return close(raw, opt, tol);
    }
    for (i, (x, y)) in raw.to_f64_vec().iter().zip(opt.to_f64_vec()).enumerate() {
        let improved = !x.is_finite() && y.is_finite();
        let same = (x.is_nan() && y.is_nan())
            || *x == y
            || (x.is_finite() && y.is_finite() && (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())));
        if !(same || improved) {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

/// Asserts the optimized program computes what the raw graph does.
#[track_caller]
pub fn assert_same(g: &Graph, p: &Program, feeds: &HashMap<String, Value>, tol: f64) {
    let want = run_raw(g, feeds);
    let got = run_program(p, feeds).unwrap_or_else(|e| {
        panic!("optimized run: {e}\n{}", rhea::opt::print::to_text_optimized(p, Default::default()))
    });
    for (k, (w, o)) in want.iter().zip(&got).enumerate() {
        if let Err(e) = close(w, o, tol) {
            panic!(
                "output {k} differs after optimizing: {e}\nraw:\n{g:?}\noptimized:\n{}",
                rhea::opt::print::to_text_optimized(p, Default::default())
            );
        }
    }
}

/// Feeds from (name, value) pairs.
pub fn feeds(items: &[(&str, Value)]) -> HashMap<String, Value> {
    items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}
