//! The differential suite of the CUDA backend: every numpy golden case, the
//! random graphs, and the models, against the reference. Each check runs
//! twice: on an NVIDIA GPU, which these machines lack, so those tests are
//! `#[ignore]`d (`cargo test` reports them as ignored, not run, and
//! `scripts/gpu-check` runs them with `--ignored` on a GPU machine, where
//! they fail loudly if the GPU is missing); and on the PTX emulator
//! standing in for the GPU, which runs everywhere: the same executor, the
//! same generated kernels, products as BLAS defines them.

use ndarray::{Array2, Array4};
use rhea::Value;
use rhea::opt::Mode;

use crate::kit::*;

/// The GPU, or the emulator standing in for one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    Gpu,
    Emulator,
}

/// Two tests of `check(on)`: `$gpu` on a GPU (ignored by `cargo test`;
/// `scripts/gpu-check` runs it) and `$emulated` on the emulator.
macro_rules! on_both {
    ($gpu:ident, $emulated:ident, $check:expr) => {
        #[test]
        #[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
        fn $gpu() {
            ($check)(On::Gpu);
        }

        #[test]
        fn $emulated() {
            ($check)(On::Emulator);
        }
    };
}

impl On {
    fn backend(self) -> rhea::Backend {
        if self == On::Gpu { rhea::Backend::Cuda } else { rhea::Backend::CudaEmulated }
    }
    fn name(self) -> &'static str {
        if self == On::Gpu { "the GPU" } else { "the emulated GPU" }
    }
}

on_both!(
    every_golden_case_matches_numpy_on_the_gpu,
    every_golden_case_matches_numpy_on_the_emulated_gpu,
    golden_cases_match_numpy
);

fn golden_cases_match_numpy(on: On) {
    let (mut ran, mut failures) = (0, Vec::new());
    for case in golden_cases() {
        let Some(want) = case.expected else { continue };
        for mode in [Mode::None, Mode::Fast] {
            let p = program(&case.graph, &options(mode, &[]));
            ran += 1;
            let tol = if want.dtype() == rhea::DType::F32 { 1e-5 } else { 1e-10 };
            match run_cuda(&p, &case.feeds, on == On::Emulator) {
                Err(e) => failures.push(format!("{} {mode:?}: {e}", case.name)),
                Ok(got) => {
                    if let Err(e) = close(&want, &got[0], tol) {
                        failures.push(format!("{} {mode:?}: {e}", case.name));
                    }
                }
            }
        }
    }
    assert!(ran > 1400, "only {ran} cases ran");
    let on = on.name();
    assert!(failures.is_empty(), "{} of {ran} cases differ on {on}:\n{}", failures.len(), failures.join("\n"));
    println!("golden cases on {on}: {ran} programs (modes none and fast) match numpy");
}

on_both!(random_graphs_agree_on_the_gpu, random_graphs_agree_on_the_emulated_gpu, |on| random_graphs_agree(
    on,
    if on == On::Gpu { 300 } else { 100 }
));

fn random_graphs_agree(on: On, default_count: u64) {
    let count: u64 = std::env::var("RHEA_RANDOM_GRAPHS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
    let mut failures = Vec::new();
    for seed in 0..count {
        let (graph, feeds) = crate::random::random_graph(seed);
        for mode in [Mode::Fast, Mode::None] {
            let Ok(p) = rhea::opt::compile(graph.clone(), &options(mode, &[])) else { continue };
            let want = run_program(&p, &feeds).unwrap();
            match run_cuda(&p, &feeds, on == On::Emulator) {
                Err(e) => failures.push(format!("seed {seed} {mode:?}: {e}")),
                Ok(got) => {
                    for (k, (w, o)) in want.iter().zip(&got).enumerate() {
                        if let Err(e) = close(w, o, 1e-4) {
                            failures.push(format!("seed {seed} {mode:?} output {k}: {e}\n{graph:?}"));
                        }
                    }
                }
            }
        }
    }
    let on = on.name();
    assert!(
        failures.is_empty(),
        "{} of {count} random graphs failed on {on}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("random graphs on {on}: {count} agree with the interpreter in modes fast and none");
}

/// Runs `steps` Sonar training steps on `backend` from the same seed; the
/// losses and the final first-layer weights.
fn sonar_training(backend: rhea::Backend, steps: usize) -> (Vec<f64>, Value) {
    let m = rhea::nn::models::sonar_mlp(7).unwrap();
    let mut f = rhea::function(&[&m.x, &m.y], &[&m.loss])
        .updates(m.updates.clone())
        .backend(backend)
        .cuda_graph(false)
        .compile()
        .unwrap();
    let losses = sonar_steps(&mut f, 0..steps);
    (losses, f.shared("dense_1.weight").unwrap())
}

/// Sonar training steps `range` (each step's batch depends on its index): the losses.
fn sonar_steps(f: &mut rhea::Function, range: std::ops::Range<usize>) -> Vec<f64> {
    range
        .map(|s| {
            let x = Array2::from_shape_fn((10, 60), |(i, j)| (((i * 60 + j + s * 7) % 13) as f32) / 13.0);
            let y = Array2::from_shape_fn((10, 1), |(i, _)| ((i + s) % 2) as f32);
            f.call(&[Value::from(x), Value::from(y)]).unwrap()[0].to_f64_vec()[0]
        })
        .collect()
}

on_both!(
    sonar_steps_as_a_cuda_graph_on_the_gpu_match_step_by_step,
    sonar_steps_as_a_cuda_graph_on_the_emulated_gpu_match_step_by_step,
    sonar_steps_as_a_cuda_graph_match_step_by_step
);

/// The Sonar step captured once as a CUDA graph and replayed: new inputs
/// each call, Adam's state and the weights updated on the device, a weight
/// replaced from the host halfway (uploaded into the same device copy the
/// graph reads) all give what running step by step gives. The emulator,
/// like CUDA, runs nothing while capturing and refuses copies and waits
/// then, so a graph that is not replayed, or a capture that waits, fails.
fn sonar_steps_as_a_cuda_graph_match_step_by_step(on: On) {
    let run = |graph: bool| {
        let m = rhea::nn::models::sonar_mlp(7).unwrap();
        let mut f = rhea::function(&[&m.x, &m.y], &[&m.loss])
            .updates(m.updates.clone())
            .backend(on.backend())
            .cuda_graph(graph)
            .compile()
            .unwrap();
        let mut losses = sonar_steps(&mut f, 0..6);
        let w = f.shared("dense_2.weight").unwrap();
        let halved: Vec<f64> = w.to_f64_vec().iter().map(|x| x * 0.5).collect();
        f.set_shared("dense_2.weight", Value::from_f64(w.dtype(), w.shape(), &halved).unwrap()).unwrap();
        losses.extend(sonar_steps(&mut f, 6..12));
        (losses, f.shared("dense_1.weight").unwrap(), f.cuda_graph())
    };
    let (plain, plain_w, none) = run(false);
    let (graph, graph_w, captured) = run(true);
    assert_eq!(none, None);
    assert_eq!(captured, Some(Ok(true)), "the Sonar step should run as a CUDA graph");
    for (s, (a, b)) in plain.iter().zip(&graph).enumerate() {
        assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "step {s}: step by step {a}, as a graph {b}");
    }
    close(&plain_w, &graph_w, 1e-6).unwrap();
    println!("sonar on {}: 12 steps as a CUDA graph match step by step (last loss {:.6})", on.name(), graph[11]);
}

/// The (emulated) GPU is one per process: while one thread captures a
/// graph, another thread's calls wait instead of being recorded into it or
/// breaking it. Two threads train the Sonar step at once, one as a graph
/// and one step by step, many times over; each gets what it gets alone.
#[test]
fn a_capture_on_one_thread_leaves_another_threads_calls_alone() {
    let train = |graph: bool| {
        let m = rhea::nn::models::sonar_mlp(3).unwrap();
        let mut f = rhea::function(&[&m.x, &m.y], &[&m.loss])
            .updates(m.updates.clone())
            .backend(rhea::Backend::CudaEmulated)
            .cuda_graph(graph)
            .compile()
            .unwrap();
        let losses = sonar_steps(&mut f, 0..3);
        assert_eq!(f.cuda_graph().map(|r| r.is_ok()), graph.then_some(true), "{:?}", f.cuda_graph());
        losses
    };
    let alone = train(false);
    std::thread::scope(|scope| {
        let threads: Vec<_> =
            (0..4).map(|t| scope.spawn(move || (0..6).map(|_| train(t % 2 == 0)).collect::<Vec<_>>())).collect();
        for t in threads {
            for losses in t.join().unwrap() {
                for (a, b) in alone.iter().zip(&losses) {
                    assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "alone {a}, beside a capture {b}");
                }
            }
        }
    });
}

/// As a CUDA graph a call still computes outputs and updates from the old
/// values: an output that is a shared variable updated by the same call,
/// and two shared variables swapping, keep their meaning (the graph then
/// leaves the updates to the executor).
#[test]
fn a_graph_computes_outputs_and_updates_from_the_old_values() {
    let run = |graph: bool| {
        let g = rhea::Builder::new();
        let x = g.input("x", rhea::DType::F32, [4]).unwrap();
        let w = g.shared("w", ndarray::Array1::<f32>::zeros(4)).unwrap();
        let a = g.shared("a", ndarray::Array1::<f32>::from(vec![1.0; 4])).unwrap();
        let b = g.shared("b", ndarray::Array1::<f32>::from(vec![2.0; 4])).unwrap();
        let next = w.add(&x).unwrap().mul(&a).unwrap();
        let mut f = rhea::function(&[&x], &[&w, &next])
            .updates([(w.clone(), next.clone()), (a.clone(), b.clone()), (b.clone(), a.clone())])
            .backend(rhea::Backend::CudaEmulated)
            .cuda_graph(graph)
            .compile()
            .unwrap();
        let mut seen = Vec::new();
        for k in 0..4 {
            let xs = ndarray::Array1::from_shape_fn(4, |i| (i + k) as f32);
            seen.extend(f.call(&[Value::from(xs)]).unwrap().iter().flat_map(|v| v.to_f64_vec()));
        }
        seen.extend(["w", "a", "b"].iter().flat_map(|n| f.shared(n).unwrap().to_f64_vec()));
        (seen, f.cuda_graph())
    };
    let (plain, _) = run(false);
    let (graph, captured) = run(true);
    assert_eq!(captured, Some(Ok(true)));
    assert_eq!(plain, graph);
    // Step by step: w = (w + x) * a with a alternating 1, 2, 1, 2.
    assert_eq!(&plain[..8], &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
}

on_both!(
    dropout_on_the_gpu_drops_what_the_interpreter_drops,
    dropout_on_the_emulated_gpu_drops_what_the_interpreter_drops,
    dropout_drops_what_the_interpreter_drops
);

/// Dropout's mask is the interpreter's to the bit (the same counter-based
/// random numbers), keyed by a step number or not, in `f32` and `f64`,
/// with NaN and infinities dropped or scaled alike; and its gradient too.
fn dropout_drops_what_the_interpreter_drops(on: On) {
    for dtype in [rhea::DType::F32, rhea::DType::F64] {
        let n = 3000;
        let data: Vec<f64> = (0..n)
            .map(|i| match i % 500 {
                7 => f64::NAN,
                8 => f64::INFINITY,
                _ => (i as f64 * 0.37).sin() * 3.0,
            })
            .collect();
        let xv = Value::from_f64(dtype, &[3, 1000], &data).unwrap();
        let mut results = Vec::new();
        for backend in [rhea::Backend::Interp, on.backend()] {
            let g = rhea::Builder::new();
            let x = g.input("x", dtype, [3, 1000]).unwrap();
            let step = g.input("step", rhea::DType::I64, rhea::Shape::scalar()).unwrap();
            let keyed = x.dropout_keyed(0.3, 11, true, &step).unwrap();
            let plain = x.dropout(0.6, 5, true).unwrap();
            let cost = keyed.mul(&x).unwrap().sum_all().unwrap();
            let dx = rhea::grad(&cost, &[&x]).unwrap().remove(0);
            let mut f = rhea::function(&[&x, &step], &[&keyed, &plain, &dx]).backend(backend).compile().unwrap();
            for k in [0i64, 41] {
                results.push(f.call(&[xv.clone(), Value::from(ndarray::arr0(k))]).unwrap());
            }
        }
        let (want, got) = results.split_at(2);
        for (w, g) in want.iter().flatten().zip(got.iter().flatten()) {
            let same = w.to_f64_vec().iter().zip(g.to_f64_vec()).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{dtype} dropout on {} differs from the interpreter", on.name());
        }
        let kept = want[0][0].to_f64_vec().iter().filter(|v| **v != 0.0).count();
        assert!((1900..2300).contains(&kept), "{kept} of 3000 kept at rate 0.3");
        assert_ne!(want[0][0].to_f64_vec(), want[1][0].to_f64_vec(), "the key changes the mask");
    }
    println!("dropout on {}: masks and gradients equal the interpreter's bit for bit", on.name());
}

/// A function with a step the GPU does not run (a kernel using `sin`) is
/// not captured, says why, and still computes the right values.
#[test]
fn a_function_with_a_host_step_is_not_captured_and_says_why() {
    let g = rhea::Builder::new();
    let x = g.input("x", rhea::DType::F32, [64]).unwrap();
    let y = x.sin().unwrap().mul(&x).unwrap();
    let mut f = rhea::function(&[&x], &[&y]).backend(rhea::Backend::CudaEmulated).cuda_graph(true).compile().unwrap();
    let xs: Vec<f32> = (0..64).map(|i| i as f32 / 8.0).collect();
    let out = f.call(&[Value::from(ndarray::Array1::from(xs.clone()))]).unwrap();
    let want: Vec<f32> = xs.iter().map(|&v| v.sin() * v).collect();
    close(&out[0], &Value::from(ndarray::Array1::from(want)), 1e-5).unwrap();
    let why = f.cuda_graph().unwrap().unwrap_err();
    assert!(why.contains("runs on the host"), "{why}");
}

on_both!(
    sonar_training_on_the_gpu_follows_the_cpu,
    sonar_training_on_the_emulated_gpu_follows_the_cpu,
    sonar_training_follows_the_cpu
);

fn sonar_training_follows_the_cpu(on: On) {
    let (cpu_losses, cpu_w) = sonar_training(rhea::Backend::Cpu, 30);
    let (gpu_losses, gpu_w) = sonar_training(on.backend(), 30);
    for (s, (a, b)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "step {s}: cpu loss {a}, gpu loss {b}");
    }
    close(&cpu_w, &gpu_w, 1e-4).unwrap();
    println!(
        "sonar on {}: 30 Adam steps follow the CPU (last loss {:.6} vs {:.6})",
        on.name(),
        gpu_losses[29],
        cpu_losses[29]
    );
}

on_both!(
    vgg16_logits_on_the_gpu_match_the_interpreter,
    vgg16_logits_on_the_emulated_gpu_match_the_interpreter,
    vgg16_logits_match_the_interpreter
);

fn vgg16_logits_match_the_interpreter(on: On) {
    let options = rhea::nn::models::VggOptions { width_div: 16, image_size: 32, training: false, ..Default::default() };
    let vgg = rhea::nn::models::vgg16(&options).unwrap();
    let x =
        Array4::from_shape_fn((2, 3, 32, 32), |(n, c, h, w)| ((n + c * 3 + h * 5 + w * 7) % 17) as f32 / 17.0 - 0.5);
    let mut results = Vec::new();
    for backend in [rhea::Backend::Interp, on.backend()] {
        let mut f = rhea::function(&[&vgg.x], &[&vgg.logits]).backend(backend).compile().unwrap();
        results.push(f.call(&[Value::from(x.clone())]).unwrap().remove(0));
    }
    close(&results[0], &results[1], 1e-4).unwrap();
    println!("vgg16 (width/16, 32x32) logits on {} match the interpreter", on.name());
}

/// A plan larger than the device's memory is an out-of-memory error that
/// names what did not fit, and the device is left usable (checked on an
/// emulated GPU of 1 MiB: a real one would need a plan of 80 GiB).
#[test]
fn an_allocation_larger_than_the_gpu_is_a_clear_error_naming_the_buffer() {
    use std::collections::HashMap;
    let gpu = std::sync::Arc::new(rhea_cuda::Gpu::emulated(1 << 20));
    let run = |rows: usize| {
        let g = rhea::Builder::new();
        let x = g.input("x", rhea::DType::F32, [rows, 256]).unwrap();
        g.output("y", &x.exp().unwrap().mul(&x).unwrap()).unwrap();
        let p = program(&g.to_graph(), &options(Mode::Fast, &[]));
        let feeds = HashMap::from([("x".to_string(), Value::from(Array2::<f32>::ones((rows, 256))))]);
        run_cuda_on(gpu.clone(), &p, &feeds)
    };
    let e = run(2048).unwrap_err();
    for part in ["out of GPU memory: 2097152 bytes for 1 intermediate buffers", "holds", "mul", "1048576 bytes free"] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    // Nothing leaked: the same device still runs what fits.
    let got = run(64).unwrap();
    assert_eq!(got[0].shape(), &[64, 256]);
    assert_eq!(gpu.memory(), (1 << 20, 1 << 20));
}

on_both!(
    few_large_reductions_on_the_gpu_match_the_interpreter,
    few_large_reductions_on_the_emulated_gpu_match_the_interpreter,
    few_large_reductions_match_the_interpreter
);

/// Sums, means and maxima with few outputs of many elements run in two
/// stages (several blocks per output, then a kernel combining the parts
/// through the plan's scratch buffer), beside an elementwise output.
fn few_large_reductions_match_the_interpreter(on: On) {
    use std::collections::HashMap;
    for dtype in [rhea::DType::F32, rhea::DType::F64] {
        let g = rhea::Builder::new();
        let x = g.input("x", dtype, [5, 30000]).unwrap();
        let e = x.mul(0.5).unwrap().exp().unwrap();
        g.output("exp", &e).unwrap();
        g.output("rows", &e.sum(&[1], false).unwrap()).unwrap();
        g.output("mean", &x.mean(&[0, 1], false).unwrap()).unwrap();
        g.output("max", &x.max(&[1], true).unwrap()).unwrap();
        let graph = g.to_graph();
        let p = program(&graph, &options(Mode::Fast, &[]));
        let shape = [5, 30000];
        let data: Vec<f64> = (0..150_000u64).map(|i| rhea::rng::uniform01(5, i) * 6.0 - 3.0).collect();
        let feeds = HashMap::from([("x".to_string(), Value::from_f64(dtype, &shape, &data).unwrap())]);
        let want = run_program(&p, &feeds).unwrap();
        let got = run_cuda(&p, &feeds, on == On::Emulator).unwrap();
        for (k, (w, o)) in want.iter().zip(&got).enumerate() {
            close(w, o, 1e-6).unwrap_or_else(|e| panic!("{dtype} output {k} on {}: {e}", on.name()));
        }
    }
    println!("two-stage reductions on {} match the interpreter", on.name());
}
