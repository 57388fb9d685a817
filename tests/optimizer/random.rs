//! Random graphs from the op set (with broadcasting, f32/f64/i32, -0.0
//! inputs, clipped logs, pow by constants, transposes of computed values,
//! keepdims reductions) give the same outputs before and after optimizing,
//! in every mode, on the interpreter and on the CPU backend.
//! `RHEA_RANDOM_GRAPHS=N` runs N graphs (default 2000). A graph that fails
//! is shrunk (nodes bypassed while it still fails) and saved, with its
//! inputs, under `target/random-failures/`; copied to
//! `tests/optimizer/regressions/`, it is a regression test.
//!
//! A result is wrong when it is farther from the reference than the
//! tolerance *and* than the reference's own conditioning allows: the raw
//! graph is also run with every value an op computes moved by up to 4 ulp
//! (both ways, two draws), and an output that lands in the range those
//! runs span, widened by its width, is accepted. Backends whose functions
//! are within a few ulp differ by that much where the graph amplifies
//! rounding (`log(1 - sigmoid(z))` for large `z`, `cos` of a large `exp`,
//! `floor` of a sum that is 1 up to rounding): a 60,000-graph run found 11
//! such, all of them that, and they are the regression cases.

use std::collections::HashMap;

use rhea::opt::Mode;
use rhea::{BinaryOp, Builder, DType, Graph, NodeId, Op, Value, Var, rng};

use crate::kit::*;

/// A small deterministic generator (rhea's counter-based one).
pub struct Rng {
    stream: u64,
    i: u64,
}

impl Rng {
    /// Stream `key` of `seed`.
    pub fn new(seed: u64, key: i64) -> Rng {
        Rng { stream: rng::stream(seed, key), i: 0 }
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.i += 1;
        (rng::bits(self.stream, self.i) % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn unit(&mut self) -> f64 {
        self.i += 1;
        rng::uniform01(self.stream, self.i)
    }
}

const SHAPES: [&[usize]; 7] = [&[], &[3], &[2, 3], &[1, 3], &[2, 1], &[2, 2, 3], &[6, 2, 3]];

fn value(r: &mut Rng, dtype: DType, shape: &[usize]) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|_| match dtype {
            DType::Bool => (r.unit() < 0.5) as u8 as f64,
            DType::I32 | DType::I64 => (r.below(7) as f64) - 3.0,
            _ if r.unit() < 0.05 => -0.0,
            _ => r.unit() * 4.0 - 2.0,
        })
        .collect();
    Value::from_f64(dtype, shape, &data).unwrap()
}

/// Applies a random op to vars of the pool; `None` if the draw does not type.
fn step(r: &mut Rng, g: &Builder, pool: &[Var]) -> Option<Var> {
    let a = r.pick(pool).clone();
    let b = r.pick(pool).clone();
    use rhea::UnaryOp::*;
    let safe = [Neg, Abs, Exp, Tanh, Sigmoid, Softplus, Relu, Sin, Cos, Square, Sign, Floor, Expm1];
    let out = match r.below(22) {
        0..=3 => a.map(*r.pick(&safe)).ok()?,
        4..=7 => {
            use rhea::BinaryOp::*;
            a.zip(*r.pick(&[Add, Sub, Mul, Maximum, Minimum]), &b).ok()?
        }
        8 => a.mul(*r.pick(&[0.0, 1.0, 2.0, 0.5, -1.0])).ok()?,
        9 => a.add(*r.pick(&[0.0, 1.0, -1.0])).ok()?,
        10 => {
            let axes: Vec<isize> = (0..a.rank() as isize).filter(|_| r.unit() < 0.5).collect();
            match r.below(4) {
                0 => a.sum(&axes, r.unit() < 0.5).ok()?,
                1 => a.mean(&axes, r.unit() < 0.5).ok()?,
                2 if a.shape().iter().all(|d| *d != rhea::Dim::Known(0)) => a.max(&axes, r.unit() < 0.5).ok()?,
                _ => a.logsumexp(&axes, false).ok()?,
            }
        }
        11 => a.greater(&b).ok()?.select(&a, &b).ok()?,
        // The softmax family, at large offsets too (the expansions must shift first).
        12 if a.rank() >= 1 => {
            let shifted = match r.below(3) {
                0 => a.add(*r.pick(&[16777216.0, 1e6, -3e7, 1000.0])).ok()?,
                _ => a.clone(),
            };
            if r.unit() < 0.5 { shifted.softmax(-1).ok()? } else { shifted.log_softmax(-1).ok()? }
        }
        12 => return None,
        13 => match r.below(4) {
            0 => a.sigmoid().ok()?.log().ok()?,
            1 => (1.0 - &a.sigmoid().ok()?).log().ok()?,
            2 => a.abs().ok()?.add(1.0).ok()?.log().ok()?,
            _ => a.exp().ok()?.sub(1.0).ok()?,
        },
        14 if a.rank() == 2 => a
            .transpose()
            .ok()?
            .transpose()
            .ok()?
            .dot(&g.constant(value(r, a.dtype(), &[a.shape()[1].known()?, 2])))
            .ok()?,
        14 => a.expand_dims(0).ok()?.squeeze(&[0]).ok()?,
        15 => a.cast(DType::F64).ok()?.cast(a.dtype()).ok()?,
        // Keras' clipped log-probability.
        16 => a.sigmoid().ok()?.maximum(1e-7).ok()?.minimum(1.0 - 1e-7).ok()?.log().ok()?,
        17 => {
            let base = a.abs().ok()?.add(0.5).ok()?;
            base.pow(g.scalar(*r.pick(&[2.0, 0.5, -1.0, 3.0]), a.dtype())).ok()?
        }
        18 => a.div(b.abs().ok()?.add(1.0).ok()?).ok()?,
        // A transpose of a computed value, inside what may become one kernel.
        19 => a.tanh().ok()?.transpose().ok()?.exp().ok()?.transpose().ok()?,
        20 => a.broadcast_to([2, 2, 3]).ok()?.mul(&b).ok()?,
        // A keepdims reduction feeding an elementwise op (softmax's max shift).
        _ => a.sub(a.max(&[-1], true).ok()?).ok()?.exp().ok()?,
    };
    Some(out)
}

pub fn random_graph(seed: u64) -> (Graph, HashMap<String, Value>) {
    let mut r = Rng::new(seed, 77);
    let g = Builder::new();
    let dtype = *r.pick(&[DType::F32, DType::F32, DType::F64, DType::I32]);
    let mut pool = Vec::new();
    let mut feeds = HashMap::new();
    for i in 0..2 + r.below(2) {
        let shape = *r.pick(&SHAPES);
        let name = format!("x{i}");
        pool.push(g.input(&name, dtype, shape).unwrap());
        feeds.insert(name, value(&mut r, dtype, shape));
    }
    for _ in 0..6 + r.below(10) {
        if let Some(v) = step(&mut r, &g, &pool) {
            pool.push(v);
        }
    }
    // A few outputs, one of them an intermediate (multi-output kernels).
    let n = pool.len();
    g.output("last", &pool[n - 1]).unwrap();
    g.output("mid", &pool[n / 2]).unwrap();
    g.output("total", &pool[n - 2].sum_all().unwrap()).unwrap();
    (g.to_graph(), feeds)
}

/// Shrinks a failing graph: while it still fails, bypass a node (its uses
/// take one of its inputs of the same type) and drop what became dead.
pub fn minimize(g: &Graph, fails: &dyn Fn(&Graph) -> bool) -> Graph {
    let mut best = g.clone();
    'shrink: loop {
        for id in best.topo_order() {
            let node = best.node(id);
            if node.op.is_leaf() {
                continue;
            }
            for &input in node.inputs.iter() {
                let mut candidate = best.clone();
                if candidate.replace_all_uses(id, input).is_err() {
                    continue;
                }
                candidate.remove_dead();
                if fails(&candidate) {
                    best = candidate;
                    continue 'shrink;
                }
            }
        }
        return best;
    }
}

/// `graph` with every float value an op computes (not inputs or
/// constants) multiplied by `1 + sign * 4 ε u`, `u` uniform in [-1, 1] from
/// `seed` and `ε` its dtype's machine epsilon: the graph as a backend whose
/// every function is off by a few ulp may compute it.
fn perturbed(graph: &Graph, seed: u64, sign: f64) -> Graph {
    let mut r = Rng::new(seed, 991);
    let mut out = Graph::new();
    let mut new: HashMap<NodeId, NodeId> = HashMap::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let inputs: Vec<NodeId> = node.inputs.iter().map(|i| new[i]).collect();
        let mut made = match &node.op {
            Op::Input { name } => out.add_input(name, node.ty.clone(), None),
            Op::Shared { name } => out.add_shared(name, graph.shared_value(id).expect("a value").clone(), None),
            op => out.add(op.clone(), &inputs, None),
        }
        .expect("a copy of a valid graph");
        if !node.op.is_leaf() && node.ty.dtype.is_float() {
            let eps = if node.ty.dtype == DType::F32 { f32::EPSILON as f64 } else { f64::EPSILON };
            let shape = node.ty.shape.to_known().expect("random graphs have known shapes");
            let factors: Vec<f64> =
                (0..shape.iter().product()).map(|_| 1.0 + sign * 4.0 * eps * (2.0 * r.unit() - 1.0)).collect();
            let factors = out.add_const(Value::from_f64(node.ty.dtype, &shape, &factors).expect("sized"), None);
            made = out.add(Op::Binary { fun: BinaryOp::Mul }, &[made, factors], None).expect("same shape");
        }
        new.insert(id, made);
    }
    for (name, id) in graph.outputs() {
        out.set_output(name, new[id]);
    }
    out
}

/// Whether `got` is within what the reference's conditioning allows:
/// inside the range of `want` and the perturbed runs' values, widened by
/// its width and the tolerance. Near a NaN or an infinity of the
/// reference (a function evaluated at the edge of its domain or range)
/// anything goes.
fn within_noise(want: f64, got: f64, noisy: &[f64], tol: f64) -> bool {
    let all = || std::iter::once(want).chain(noisy.iter().copied());
    if all().any(|v| !v.is_finite()) {
        return true;
    }
    if !got.is_finite() {
        return false;
    }
    let (lo, hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let margin = (hi - lo) + tol * (1.0 + want.abs());
    (lo - margin..=hi + margin).contains(&got)
}

/// The first element of `got` farther from `want` than the perturbed
/// runs `noisy` (the same output of each) allow.
fn beyond_noise(want: &Value, got: &Value, noisy: &[&Value], tol: f64) -> Option<String> {
    let noisy: Vec<Vec<f64>> = noisy.iter().map(|v| v.to_f64_vec()).collect();
    let (want, got) = (want.to_f64_vec(), got.to_f64_vec());
    (0..want.len()).find_map(|i| {
        let around: Vec<f64> = noisy.iter().map(|n| n[i]).collect();
        (!within_noise(want[i], got[i], &around, tol))
            .then(|| format!("element {i}: {} vs {}, the reference moving over {around:?}", want[i], got[i]))
    })
}

/// The outputs of `graph` on every mode and backend, or what differs.
fn disagreement(graph: &Graph, feeds: &HashMap<String, Value>) -> Option<String> {
    let want = run_raw(graph, feeds);
    // The perturbed runs, made the first time a result is not close.
    let mut noisy: Option<Vec<Vec<Value>>> = None;
    for mode in [Mode::Fast, Mode::None] {
        let p = match rhea::opt::compile(graph.clone(), &options(mode, &[])) {
            Ok(p) => p,
            Err(e) => return Some(format!("{mode:?}: {e}")),
        };
        // A stabilization is more accurate than the raw graph where the raw
        // graph cancels or underflows: compare those loosely.
        let stabilized = p.report.rewrites.iter().any(|r| r.pass == "stabilize");
        let tol = if stabilized { 1e-2 } else { 1e-4 };
        for (backend, result) in [("interp", run_program(&p, feeds)), ("cpu", run_cpu(&p, feeds))] {
            match result {
                Err(e) => return Some(format!("{mode:?} {backend}: {e}")),
                Ok(got) => {
                    for (k, (w, o)) in want.iter().zip(&got).enumerate() {
                        let check = if stabilized { close_or_improved(w, o, tol) } else { close(w, o, tol) };
                        if let Err(e) = check {
                            if w.dtype() != o.dtype() || w.shape() != o.shape() {
                                return Some(format!("{mode:?} {backend} output {k}: {e}"));
                            }
                            let runs = noisy.get_or_insert_with(|| {
                                [(1, 1.0), (1, -1.0), (2, 1.0), (2, -1.0)]
                                    .map(|(seed, sign)| run_raw(&perturbed(graph, seed, sign), feeds))
                                    .into()
                            });
                            let around: Vec<&Value> = runs.iter().map(|r| &r[k]).collect();
                            if let Some(e) = beyond_noise(w, o, &around, tol) {
                                return Some(format!("{mode:?} {backend} output {k}: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    None
}

/// Shrinks a failing graph and writes it and its inputs where a developer
/// turns them into a regression test; returns what was written.
fn save_failure(seed: u64, graph: &Graph, feeds: &HashMap<String, Value>) -> String {
    let fails = |g: &Graph| std::panic::catch_unwind(|| disagreement(g, feeds)).map_or(true, |d| d.is_some());
    let small = minimize(graph, &fails);
    let dir = repo_file("target/random-failures");
    let _ = std::fs::create_dir_all(&dir);
    let json = dir.join(format!("seed-{seed}.json"));
    let inputs = dir.join(format!("seed-{seed}.safetensors"));
    let _ = std::fs::write(&json, rhea::to_json(&small));
    let named: Vec<(&str, &Value)> = feeds.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let _ = rhea::io::save_safetensors(&inputs, &named);
    format!(
        "minimized to {} nodes: {} with inputs {} (replay: rhea check {} --inputs {})\n{small:?}",
        small.len(),
        json.display(),
        inputs.display(),
        json.display(),
        inputs.display()
    )
}

#[test]
fn the_minimizer_keeps_the_failure_and_little_else() {
    // A stand-in failure: "the graph still computes an exp or a log".
    let has = |g: &Graph| g.topo_order().iter().any(|&id| matches!(g.node(id).op.name(), "exp" | "log" | "tanh"));
    let start = (0..40).map(random_graph).find(|(g, _)| has(g)).expect("some random graph uses exp, log or tanh").0;
    let small = minimize(&start, &has);
    assert!(has(&small));
    let computed = |g: &Graph| g.topo_order().iter().filter(|&&id| !g.node(id).op.is_leaf()).count();
    let (before, after) = (computed(&start), computed(&small));
    assert!(after < before && after <= 6, "{after} computed nodes left of {before}:\n{small:?}");
}

#[test]
fn the_minimized_failures_of_earlier_runs_agree() {
    let dir = repo_file("tests/optimizer/regressions");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 11, "{} cases in {}", cases.len(), dir.display());
    for json in cases {
        let graph = rhea::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let feeds: HashMap<String, Value> =
            rhea::io::load_safetensors(json.with_extension("safetensors")).unwrap().into_iter().collect();
        if let Some(what) = disagreement(&graph, &feeds) {
            panic!("{}: {what}\n{graph:?}", json.display());
        }
    }
}

#[test]
fn a_wrong_result_is_still_found_where_the_graph_is_ill_conditioned() {
    // log(1 - sigmoid(z)) for z near 11.6 amplifies an ulp of sigmoid
    // about 10^5 times, but not without bound.
    let (want, noisy) = (-11.6451, [-11.6383, -11.6520, -11.6451, -11.6401]);
    assert!(within_noise(want, -11.6383, &noisy, 1e-4));
    assert!(within_noise(want, -11.66, &noisy, 1e-4));
    assert!(!within_noise(want, -11.8, &noisy, 1e-4));
    assert!(!within_noise(want, f64::NAN, &noisy, 1e-4));
    // Well-conditioned: the runs agree, and the tolerance is all there is.
    assert!(!within_noise(1.0, 1.001, &[1.0, 1.0], 1e-4));
    assert!(within_noise(1.0, 1.0001, &[1.0, 1.0], 1e-4));
}

#[test]
fn random_graphs_agree_before_and_after_optimizing() {
    let count: u64 = std::env::var("RHEA_RANDOM_GRAPHS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let mut failures = Vec::new();
    for seed in 0..count {
        let (graph, feeds) = random_graph(seed);
        if let Some(what) = disagreement(&graph, &feeds) {
            failures.push(format!("seed {seed}: {what}\n{}", save_failure(seed, &graph, &feeds)));
        }
    }
    assert!(failures.is_empty(), "{} of {count} random graphs failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("random graphs: {count} checked in modes fast and none, on the interpreter and the CPU backend");
}
