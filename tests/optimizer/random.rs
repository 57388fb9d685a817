//! Random graphs from the op set (with broadcasting, f32/f64/i32, -0.0
//! inputs, clipped logs, pow by constants, transposes of computed values,
//! keepdims reductions) give the same outputs before and after optimizing,
//! in every mode, on the interpreter and on the CPU backend.
//! `RHEA_RANDOM_GRAPHS=N` runs N graphs (default 2000). A graph that fails
//! is shrunk (nodes bypassed while it still fails) and saved, with its
//! inputs, under `target/random-failures/` to become a regression test.

use std::collections::HashMap;

use rhea::opt::Mode;
use rhea::{Builder, DType, Graph, Value, Var, rng};

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
        12 if a.rank() >= 1 => a.softmax(-1).ok()?,
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

/// The outputs of `graph` on every mode and backend, or what differs.
fn disagreement(graph: &Graph, feeds: &HashMap<String, Value>) -> Option<String> {
    let want = run_raw(graph, feeds);
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
                            return Some(format!("{mode:?} {backend} output {k}: {e}"));
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
