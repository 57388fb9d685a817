//! The differential suite on an NVIDIA GPU: every numpy golden case, the
//! random graphs, and the models, on the CUDA backend against the
//! reference. These need a GPU, so they are `#[ignore]`d: `cargo test`
//! reports them as ignored (not run) here, and `scripts/gpu-check` runs them
//! with `--ignored` on a GPU machine, where they fail loudly if the GPU is
//! missing.

use ndarray::{Array2, Array4};
use rhea::Value;
use rhea::opt::Mode;

use crate::kit::*;

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn every_golden_case_matches_numpy_on_the_gpu() {
    let (mut ran, mut failures) = (0, Vec::new());
    for case in golden_cases() {
        let Some(want) = case.expected else { continue };
        for mode in [Mode::None, Mode::Fast] {
            let p = program(&case.graph, &options(mode, &[]));
            ran += 1;
            let tol = if want.dtype() == rhea::DType::F32 { 1e-5 } else { 1e-10 };
            match run_cuda(&p, &case.feeds) {
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
    assert!(failures.is_empty(), "{} of {ran} cases differ on the GPU:\n{}", failures.len(), failures.join("\n"));
    println!("golden cases on the GPU: {ran} programs (modes none and fast) match numpy");
}

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn random_graphs_agree_on_the_gpu() {
    let count: u64 = std::env::var("RHEA_RANDOM_GRAPHS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut failures = Vec::new();
    for seed in 0..count {
        let (graph, feeds) = crate::random::random_graph(seed);
        for mode in [Mode::Fast, Mode::None] {
            let Ok(p) = rhea::opt::compile(graph.clone(), &options(mode, &[])) else { continue };
            let want = run_program(&p, &feeds).unwrap();
            match run_cuda(&p, &feeds) {
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
    assert!(
        failures.is_empty(),
        "{} of {count} random graphs failed on the GPU:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("random graphs on the GPU: {count} agree with the interpreter in modes fast and none");
}

/// Runs `steps` Sonar training steps on `backend` from the same seed; the
/// losses and the final first-layer weights.
fn sonar_training(backend: rhea::Backend, steps: usize) -> (Vec<f64>, Value) {
    let m = rhea::nn::models::sonar_mlp(7).unwrap();
    let mut f =
        rhea::function(&[&m.x, &m.y], &[&m.loss]).updates(m.updates.clone()).backend(backend).compile().unwrap();
    let mut losses = Vec::new();
    for s in 0..steps {
        let x = Array2::from_shape_fn((10, 60), |(i, j)| (((i * 60 + j + s * 7) % 13) as f32) / 13.0);
        let y = Array2::from_shape_fn((10, 1), |(i, _)| ((i + s) % 2) as f32);
        let out = f.call(&[Value::from(x), Value::from(y)]).unwrap();
        losses.push(out[0].to_f64_vec()[0]);
    }
    (losses, f.shared("dense_1.weight").unwrap())
}

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn sonar_training_on_the_gpu_follows_the_cpu() {
    let (cpu_losses, cpu_w) = sonar_training(rhea::Backend::Cpu, 30);
    let (gpu_losses, gpu_w) = sonar_training(rhea::Backend::Cuda, 30);
    for (s, (a, b)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "step {s}: cpu loss {a}, gpu loss {b}");
    }
    close(&cpu_w, &gpu_w, 1e-4).unwrap();
    println!(
        "sonar on the GPU: 30 Adam steps follow the CPU (last loss {:.6} vs {:.6})",
        gpu_losses[29], cpu_losses[29]
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn vgg16_logits_on_the_gpu_match_the_interpreter() {
    let options = rhea::nn::models::VggOptions { width_div: 16, image_size: 32, training: false, ..Default::default() };
    let vgg = rhea::nn::models::vgg16(&options).unwrap();
    let x =
        Array4::from_shape_fn((2, 3, 32, 32), |(n, c, h, w)| ((n + c * 3 + h * 5 + w * 7) % 17) as f32 / 17.0 - 0.5);
    let mut results = Vec::new();
    for backend in [rhea::Backend::Interp, rhea::Backend::Cuda] {
        let mut f = rhea::function(&[&vgg.x], &[&vgg.logits]).backend(backend).compile().unwrap();
        results.push(f.call(&[Value::from(x.clone())]).unwrap().remove(0));
    }
    close(&results[0], &results[1], 1e-4).unwrap();
    println!("vgg16 (width/16, 32x32) logits on the GPU match the interpreter");
}
