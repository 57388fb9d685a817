//! VGG16, width-reduced, on every backend: the same logits and gradients
//! on the interpreter, the CPU backend and the CUDA backend (on the
//! emulated GPU, and on a GPU where there is one) for the same weights and
//! images, and gradients of a few parameters against finite differences.

use rhea::nn::models::{VggOptions, vgg16};
use rhea::{Backend, DType, Value, function, grad, rng};

use crate::kit::close;

fn images(dtype: DType, batch: usize, size: usize) -> Value {
    let shape = [batch, 3, size, size];
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n as u64).map(|i| rng::uniform01(9, i) * 4.0 - 2.0).collect();
    Value::from_f64(dtype, &shape, &data).unwrap()
}

#[test]
fn vgg16_gives_the_same_logits_on_the_interpreter_and_the_cpu() {
    let opts = VggOptions { num_classes: 5, width_div: 16, image_size: 64, seed: 7, ..VggOptions::default() };
    let x = images(DType::F32, 2, 64);
    let mut logits = Vec::new();
    for backend in [Backend::Interp, Backend::Cpu] {
        let m = vgg16(&opts).unwrap();
        let mut f = function(&[&m.x], &[&m.logits]).backend(backend).compile().unwrap();
        logits.push(f.call(std::slice::from_ref(&x)).unwrap().remove(0));
    }
    assert_eq!(logits[0].shape(), [2, 5]);
    close(&logits[0], &logits[1], 1e-4).unwrap();
    // Not all equal: the weights and images reach the logits.
    let v = logits[0].to_f64_vec();
    assert!(v.iter().any(|&a| (a - v[0]).abs() > 1e-6), "{v:?}");
}

#[test]
fn vgg16_gradients_on_the_cpu_match_the_interpreter() {
    // Width / 16 at 32x32: blocks 3 to 5 have 16 and 32 channels, so their
    // convolutions and input gradients run through Winograd on the CPU,
    // the first blocks through im2col.
    gradients_match_the_interpreter(Backend::Cpu);
}

#[test]
fn vgg16_gradients_on_the_emulated_gpu_match_the_interpreter() {
    gradients_match_the_interpreter(Backend::CudaEmulated);
}

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn vgg16_gradients_on_the_gpu_match_the_interpreter() {
    gradients_match_the_interpreter(Backend::Cuda);
}

fn gradients_match_the_interpreter(backend: Backend) {
    let opts = VggOptions { num_classes: 3, width_div: 16, image_size: 32, seed: 3, ..VggOptions::default() };
    let x = images(DType::F32, 2, 32);
    let names =
        ["features.0.weight", "features.12.weight", "features.17.weight", "features.28.weight", "classifier.0.weight"];
    let mut results = Vec::new();
    for backend in [Backend::Interp, backend] {
        let m = vgg16(&opts).unwrap();
        let r = Value::from_f64(DType::F32, &[3], &[0.3, -1.2, 0.7]).unwrap();
        let cost = (&m.logits * &m.graph.constant(r)).sum_all().unwrap();
        let params: Vec<rhea::Var> = names.iter().map(|n| m.graph.find(n).unwrap()).collect();
        let grads = grad(&cost, &params.iter().collect::<Vec<_>>()).unwrap();
        let mut f = function(&[&m.x], &grads.iter().collect::<Vec<_>>()).backend(backend).compile().unwrap();
        results.push(f.call(std::slice::from_ref(&x)).unwrap());
    }
    for (name, (want, got)) in names.iter().zip(results[0].iter().zip(&results[1])) {
        let (want, got) = (want.to_f64_vec(), got.to_f64_vec());
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-6, "the gradient of {name} is all zeros: the check would be empty");
        let worst = want.iter().zip(&got).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-4 * scale, "{backend}: d cost / d {name}: off by {worst} at scale {scale}");
    }
}

#[test]
fn vgg16_gradients_match_finite_differences() {
    let opts = VggOptions {
        num_classes: 3,
        width_div: 32,
        image_size: 32,
        seed: 5,
        dtype: DType::F64,
        ..VggOptions::default()
    };
    let m = vgg16(&opts).unwrap();
    let x = images(DType::F64, 2, 32);
    let r = Value::from_f64(DType::F64, &[3], &[0.3, -1.2, 0.7]).unwrap();
    let rv = m.graph.constant(r);
    let cost = (&m.logits * &rv).sum_all().unwrap();
    let names = ["features.0.weight", "features.14.bias", "features.28.weight", "classifier.6.weight"];
    let params: Vec<rhea::Var> = names.iter().map(|n| m.graph.find(n).unwrap()).collect();
    let refs: Vec<&rhea::Var> = params.iter().collect();
    let grads = grad(&cost, &refs).unwrap();
    let mut wanted = vec![&cost];
    wanted.extend(grads.iter());
    let mut f = function(&[&m.x], &wanted).backend(Backend::Interp).compile().unwrap();
    let symbolic = f.call(std::slice::from_ref(&x)).unwrap();
    let eps = 1e-6;
    for (p, name) in names.iter().enumerate() {
        let base = f.shared(name).unwrap();
        let values = base.to_f64_vec();
        let sym = symbolic[p + 1].to_f64_vec();
        assert!(sym.iter().any(|g| g.abs() > 1e-9), "the gradient of {name} is all zeros: the check would be empty");
        // A few elements of each parameter, spread over it.
        for j in (0..values.len()).step_by(values.len().div_ceil(4).max(1)) {
            let mut at = |delta: f64| {
                let mut moved = values.clone();
                moved[j] += delta;
                f.set_shared(name, Value::from_f64(DType::F64, base.shape(), &moved).unwrap()).unwrap();
                f.call(std::slice::from_ref(&x)).unwrap()[0].to_f64_vec()[0]
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - sym[j]).abs() <= 1e-6 + 1e-5 * numeric.abs(),
                "d cost / d {name}[{j}]: symbolic {} numeric {numeric}",
                sym[j]
            );
        }
        f.set_shared(name, base).unwrap();
    }
}

/// VGG16's whole training step (dropout keyed by the step number,
/// convolutions, pooling, their gradients, SGD updates) runs on the device:
/// it can be captured as one CUDA graph, which a step on the host would
/// prevent (`cuda_graph()` would name it), and the captured step matches
/// the step run kernel by kernel.
#[test]
fn vgg16_training_runs_wholly_on_the_emulated_gpu() {
    let opts =
        VggOptions { num_classes: 3, width_div: 16, image_size: 32, seed: 3, training: true, ..Default::default() };
    let x = images(DType::F32, 2, 32);
    let mut losses = Vec::new();
    for graph in [false, true] {
        let m = vgg16(&opts).unwrap();
        let r = Value::from_f64(DType::F32, &[3], &[0.3, -1.2, 0.7]).unwrap();
        let cost = (&m.logits * &m.graph.constant(r)).sum_all().unwrap();
        let params = m.params();
        let grads = grad(&cost, &params.iter().collect::<Vec<_>>()).unwrap();
        let updates: Vec<(rhea::Var, rhea::Var)> =
            params.iter().zip(&grads).map(|(p, g)| (p.clone(), p - &(g * 0.01f32))).collect();
        let step = m.step.clone().expect("a training graph takes the step number");
        let mut f = function(&[&m.x, &step], &[&cost])
            .updates(updates)
            .backend(Backend::CudaEmulated)
            .cuda_graph(graph)
            .compile()
            .unwrap();
        let mut seen = Vec::new();
        for k in 0..2i64 {
            seen.push(f.call(&[x.clone(), Value::from(ndarray::arr0(k))]).unwrap()[0].to_f64_vec()[0]);
        }
        if graph {
            assert_eq!(f.cuda_graph(), Some(Ok(true)), "the training step should run wholly on the device");
        }
        losses.push(seen);
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "step by step {a}, as a graph {b}");
    }
}
