//! `rhea bench`: the models' training steps timed on each backend, with
//! compile time, examples per second and achieved GFLOP/s beside the
//! machine's measured GEMM peak.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ndarray::{Array2, s};
use rhea::opt::StepKind;
use rhea::{Backend, DType, Function, Value, function};
use serde::Serialize;

/// The workloads `--model` names.
pub const MODELS: &[&str] = &["sonar-mlp", "theano-mlp", "vgg16", "lstm", "elman"];

/// One measured (model, backend) pair.
#[derive(Serialize)]
pub struct Row {
    pub(crate) model: String,
    pub(crate) backend: String,
    pub(crate) batch: usize,
    /// Graph to callable: optimizer, code generation.
    pub(crate) compile_ms: f64,
    /// The first call's planning (memory plan, executor), on top of compiling.
    pub(crate) first_call_ms: f64,
    /// Median time of one training step, and the spread (min, max) of the rounds.
    pub(crate) step_us: f64,
    pub(crate) step_min_us: f64,
    pub(crate) step_max_us: f64,
    pub(crate) examples_per_s: f64,
    /// Matrix-product and convolution FLOPs per step over the median step time.
    pub(crate) gflops: f64,
    /// For the Sonar MLP: one epoch (124 rows, 13 steps).
    pub(crate) epoch_ms: Option<f64>,
}

/// A model's training step, compiled, with its batches.
struct Workload {
    step: Function,
    batches: Vec<Vec<Value>>,
    /// Examples per batch (the recurrent models' inputs are time first).
    rows: Option<usize>,
    /// Batches per epoch (Sonar: 124 rows in batches of 10).
    epoch: Option<usize>,
}

/// How a workload is compiled: the backend, and whether CUDA plans run as
/// captured graphs.
#[derive(Clone, Copy)]
pub struct Target {
    pub backend: Backend,
    pub cuda_graph: bool,
    /// Steps of the recurrent models.
    pub seq_len: Option<usize>,
}

impl Target {
    /// The backend's name, `+graph` when CUDA graphs are on.
    fn label(self) -> String {
        if self.cuda_graph { format!("{}+graph", self.backend) } else { self.backend.to_string() }
    }
}

fn workload(model: &str, target: Target, batch: Option<usize>) -> Result<(Workload, Duration)> {
    let Target { backend, cuda_graph, seq_len } = target;
    match model {
        "sonar-mlp" => {
            let m = rhea::nn::models::sonar_mlp(1)?;
            let started = Instant::now();
            let step = function(&[&m.x, &m.y], &[&m.loss])
                .updates(m.updates.clone())
                .backend(backend)
                .cuda_graph(cuda_graph)
                .compile()?;
            let compiled = started.elapsed();
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sonar/sonar.all-data");
            let table = rhea::nn::data::read_csv(std::path::Path::new(path))
                .with_context(|| format!("the Sonar data ({path})"))?;
            let rows = 124;
            let x = table.features.slice(s![..rows, ..]).to_owned();
            let y = Array2::from_shape_fn((rows, 1), |(i, _)| f32::from(table.labels[i] == "R"));
            let b = batch.unwrap_or(10);
            let batches: Vec<Vec<Value>> = (0..rows)
                .step_by(b)
                .map(|s| {
                    let e = (s + b).min(rows);
                    vec![Value::from(x.slice(s![s..e, ..]).to_owned()), Value::from(y.slice(s![s..e, ..]).to_owned())]
                })
                .collect();
            let epoch = Some(batches.len());
            Ok((Workload { step, batches, rows: None, epoch }, compiled))
        }
        "theano-mlp" => {
            let m = rhea::nn::models::theano_mlp(1)?;
            let started = Instant::now();
            let step = function(&[&m.x, &m.y], &[&m.loss])
                .updates(m.updates.clone())
                .backend(backend)
                .cuda_graph(cuda_graph)
                .compile()?;
            let compiled = started.elapsed();
            // Synthetic MNIST-sized data: the step's cost does not depend on the values.
            let b = batch.unwrap_or(60);
            let batches = (0..4u64)
                .map(|k| {
                    let x = Value::from(Array2::from_shape_fn((b, 784), |(i, j)| {
                        rhea::rng::uniform01(k, (i * 784 + j) as u64) as f32
                    }));
                    let y = Value::from(Array2::from_shape_fn((b, 10), |(i, j)| f32::from((i + k as usize) % 10 == j)));
                    vec![x, y]
                })
                .collect();
            Ok((Workload { step, batches, rows: None, epoch: None }, compiled))
        }
        "vgg16" => {
            // Inference at 224x224 with torchvision's 1000 classes.
            let m = rhea::nn::models::vgg16(&rhea::nn::models::VggOptions::default())?;
            let started = Instant::now();
            let step = function(&[&m.x], &[&m.logits]).backend(backend).cuda_graph(cuda_graph).compile()?;
            let compiled = started.elapsed();
            let b = batch.unwrap_or(8);
            let n = b * 3 * 224 * 224;
            let data: Vec<f64> = (0..n as u64).map(|i| rhea::rng::uniform01(3, i) * 4.0 - 2.0).collect();
            let x = Value::from_f64(DType::F32, &[b, 3, 224, 224], &data).map_err(anyhow::Error::msg)?;
            Ok((Workload { step, batches: vec![vec![x]], rows: None, epoch: None }, compiled))
        }
        "lstm" | "elman" => {
            // The LSTM: batch 32, 32 features, 128 units, 100 steps; the
            // Elman RNN: batch 16, 8 features, 32 units, 200 steps. A dense
            // head on the last state, mean squared error, SGD 0.01.
            let lstm = model == "lstm";
            let (b, inputs, units) = if lstm { (32, 32, 128) } else { (16, 8, 32) };
            let b = batch.unwrap_or(b);
            let t = seq_len.unwrap_or(if lstm { 100 } else { 200 });
            let g = rhea::Builder::new();
            let x = g.input("x", DType::F32, [t, b, inputs])?;
            let y = g.input("y", DType::F32, [b, 1])?;
            let (last, mut params) = if lstm {
                let l = rhea::nn::Lstm::new(&g, "lstm", inputs, units, 1)?;
                (l.forward(&x)?.1, l.params())
            } else {
                let l = rhea::nn::SimpleRnn::new(&g, "rnn", inputs, units, 1)?;
                (l.forward(&x)?.1, l.params())
            };
            let head = rhea::nn::Dense::new(&g, "head", units, 1, 2)?;
            params.extend(head.params());
            let loss = head.forward(&last)?.sub(&y)?.square()?.mean_all()?;
            let updates = rhea::nn::Optimizer::updates(&rhea::nn::Sgd::default(), &loss, &params)?;
            let started = Instant::now();
            let step =
                function(&[&x, &y], &[&loss]).updates(updates).backend(backend).cuda_graph(cuda_graph).compile()?;
            let compiled = started.elapsed();
            let batches = (0..2u64)
                .map(|k| -> Result<Vec<Value>> {
                    let n = t * b * inputs;
                    let xs: Vec<f64> = (0..n as u64).map(|i| rhea::rng::uniform01(k, i) - 0.5).collect();
                    let ys: Vec<f64> = (0..b as u64).map(|i| rhea::rng::uniform01(k + 10, i)).collect();
                    Ok(vec![
                        Value::from_f64(DType::F32, &[t, b, inputs], &xs).map_err(anyhow::Error::msg)?,
                        Value::from_f64(DType::F32, &[b, 1], &ys).map_err(anyhow::Error::msg)?,
                    ])
                })
                .collect::<Result<_>>()?;
            Ok((Workload { step, batches, rows: Some(b), epoch: None }, compiled))
        }
        other => bail!("unknown model {other:?}; available: {}", MODELS.join(", ")),
    }
}

/// FLOPs of the matrix products and convolutions of one call at the first
/// batch's sizes.
fn matmul_flops(f: &Function, batch: &[Value]) -> Result<f64> {
    let g = f.graph();
    let feeds: std::collections::HashMap<String, Value> =
        ["x", "y"].iter().map(|n| n.to_string()).zip(batch.iter().cloned()).collect();
    let bindings = rhea::interp::bind_inputs(g, &feeds)?;
    program_flops(f.program(), &bindings)
}

/// The products' FLOPs of `p` at `bindings`, each loop's body counted once
/// per step.
fn program_flops(p: &rhea::opt::Program, bindings: &rhea::interp::Bindings) -> Result<f64> {
    let g = &p.graph;
    let mut flops = 0.0;
    for step in &p.steps {
        let StepKind::Op(id) = step.kind else { continue };
        let node = g.node(id);
        let resolve = |shape: &rhea::Shape| rhea::kernel::resolve(shape, bindings).map_err(anyhow::Error::msg);
        let k = match &node.op {
            rhea::Op::Scan(scan) => {
                let body = p.body(id).context("a loop without its body")?;
                let steps = resolve(&rhea::Shape::from(vec![scan.n_steps]))?[0];
                flops += steps as f64 * program_flops(body, bindings)?;
                continue;
            }
            rhea::Op::Gemm { trans_a: true, .. } => resolve(&g.ty(node.inputs[0]).shape)?[0],
            rhea::Op::Gemm { .. } | rhea::Op::Dot => *resolve(&g.ty(node.inputs[0]).shape)?.last().unwrap_or(&0),
            // Each output element sums C/groups * kh * kw products.
            rhea::Op::Conv2d(_) => resolve(&g.ty(node.inputs[1]).shape)?[1..].iter().product(),
            _ => continue,
        };
        // Every output element is a dot product of length k.
        flops += 2.0 * (resolve(&node.ty.shape)?.iter().product::<usize>() * k) as f64;
    }
    Ok(flops)
}

/// Times the training step: warm-up, then `rounds` rounds of `steps` calls.
pub fn measure(model: &str, target: Target, batch: Option<usize>, rounds: usize) -> Result<Row> {
    let (mut w, compiled) = workload(model, target, batch)?;
    let started = Instant::now();
    w.step.call(&w.batches[0])?;
    let first_call = started.elapsed();
    if let Some(Err(why)) = w.step.cuda_graph() {
        bail!("{model} on {}: the step cannot run as a CUDA graph: {why}", target.label());
    }
    // Slow steps (VGG16) warm up once and are timed over at most 5 rounds.
    let one = first_call.as_secs_f64().max(1e-7);
    let (warm, rounds) = if one > 0.5 { (1, rounds.min(5)) } else { (3, rounds) };
    for b in w.batches.iter().cycle().take(warm) {
        w.step.call(b)?;
    }
    // Enough calls per round for about 20 ms, at least one pass over the batches.
    let probe = Instant::now();
    w.step.call(&w.batches[0])?;
    let one = probe.elapsed().as_secs_f64().max(1e-7);
    let per_round = ((0.02 / one) as usize).max(w.batches.len()).min(100_000);
    let mut per_step = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for b in w.batches.iter().cycle().take(per_round) {
            w.step.call(b)?;
        }
        per_step.push(t.elapsed().as_secs_f64() / per_round as f64);
    }
    per_step.sort_by(f64::total_cmp);
    let median = per_step[per_step.len() / 2];
    let batch_rows = w.rows.unwrap_or(w.batches[0][0].shape()[0]);
    let flops = matmul_flops(&w.step, &w.batches[0])?;
    let epoch_ms = match w.epoch {
        Some(n) => {
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                for b in w.batches.iter().take(n) {
                    w.step.call(b)?;
                }
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            Some(times[times.len() / 2])
        }
        None => None,
    };
    Ok(Row {
        model: model.to_string(),
        backend: target.label(),
        batch: batch_rows,
        compile_ms: compiled.as_secs_f64() * 1e3,
        first_call_ms: first_call.as_secs_f64() * 1e3,
        step_us: median * 1e6,
        step_min_us: per_step[0] * 1e6,
        step_max_us: per_step[per_step.len() - 1] * 1e6,
        examples_per_s: batch_rows as f64 / median,
        gflops: flops / median / 1e9,
        epoch_ms,
    })
}

/// The machine's f32 GEMM rate: a 1024x1024x1024 product through the CPU
/// backend (the same library and threads the models use), best of 10.
pub fn gemm_peak() -> Result<f64> {
    let n = 1024;
    let g = rhea::Builder::new();
    let a = g.input("a", DType::F32, [n, n])?;
    let b = g.input("b", DType::F32, [n, n])?;
    let c = a.dot(&b)?;
    let mut f = function(&[&a, &b], &[&c]).compile()?;
    let m = Value::from(Array2::from_shape_fn((n, n), |(i, j)| ((i * 31 + j) % 17) as f32 / 17.0));
    let inputs = [m.clone(), m];
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let t = Instant::now();
        f.call(&inputs)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n * n * n) as f64 / best / 1e9)
}

/// The table printed on stdout.
pub fn table(rows: &[Row], peak: f64) -> String {
    let mut out = format!(
        "machine: {} threads; f32 GEMM peak {peak:.0} GFLOP/s (1024^3 through the cpu backend)\n",
        rayon_threads()
    );
    out.push_str(&format!(
        "{:<11} {:<14} {:>5} {:>10} {:>10} {:>11} {:>17} {:>12} {:>8} {:>6} {:>9}\n",
        "model",
        "backend",
        "batch",
        "compile",
        "1st call",
        "step",
        "(min..max)",
        "examples/s",
        "GFLOP/s",
        "%peak",
        "epoch"
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<11} {:<14} {:>5} {:>8.2}ms {:>8.2}ms {:>9.1}us {:>17} {:>12} {:>8.1} {:>6} {:>9}\n",
            r.model,
            r.backend,
            r.batch,
            r.compile_ms,
            r.first_call_ms,
            r.step_us,
            format!("({:.1}..{:.1})", r.step_min_us, r.step_max_us),
            if r.examples_per_s < 100.0 {
                format!("{:.2}", r.examples_per_s)
            } else {
                format!("{:.0}", r.examples_per_s)
            },
            r.gflops,
            // The peak is the CPU's: a GPU's share of it means nothing.
            if r.backend.starts_with("cuda") { "-".to_string() } else { format!("{:.1}%", r.gflops / peak * 100.0) },
            r.epoch_ms.map_or_else(String::new, |e| format!("{e:.3}ms")),
        ));
    }
    let by = |model: &str, backend: &str| rows.iter().find(|r| r.model == model && r.backend == backend);
    for model in MODELS {
        if let (Some(i), Some(c)) = (by(model, "interp"), by(model, "cpu")) {
            out.push_str(&format!("{model}: cpu is {:.1}x the interpreter\n", i.step_us / c.step_us));
        }
        if let (Some(c), Some(g)) = (by(model, "cpu"), by(model, "cuda")) {
            out.push_str(&format!("{model}: GPU/CPU ratio {:.2}x (examples/s, same batch)\n", c.step_us / g.step_us));
        }
        for gpu in ["cuda", "cuda-emu"] {
            if let (Some(plain), Some(graph)) = (by(model, gpu), by(model, &format!("{gpu}+graph"))) {
                out.push_str(&format!(
                    "{model}: as a CUDA graph the {gpu} step takes {:.2}x the time step by step\n",
                    graph.step_us / plain.step_us
                ));
            }
        }
    }
    out
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
