//! Every kernel the test suite generates, lowered to PTX and assembled by
//! `ptxas` for sm_80 and sm_90: the numpy golden cases of every op (in
//! modes none and fast), random graphs, and the three models' training
//! and inference steps. Kernels with no PTX lowering (sin, cos, integer
//! pow, bool reductions) run on the host; the test lists them and checks
//! nothing else is among them.
//!
//! Without `ptxas` the assembly check does not run and says so; with
//! `RHEA_REQUIRE_PTXAS=1` (set in CI) a missing `ptxas` fails instead.

use std::collections::HashMap;

use rhea::Value;
use rhea::opt::{Mode, Program};
use rhea_cuda::{Lowered, Target, lower_kernel, module};

use crate::kit::*;

/// Lowers every kernel of `p` at the sizes `feeds` give.
fn lower_program(
    p: &Program,
    feeds: &HashMap<String, Value>,
    tag: &str,
    out: &mut Vec<Lowered>,
    host: &mut Vec<String>,
) {
    let bindings = rhea::interp::bind_inputs(&p.graph, feeds).unwrap();
    for (k, group) in p.fusion.groups.iter().enumerate() {
        let kernel = &group.kernel;
        let dims = rhea::kernel::resolve(&kernel.domain, &bindings).unwrap();
        let shapes: Vec<Vec<usize>> =
            kernel.inputs.iter().map(|i| rhea::kernel::resolve(&i.shape, &bindings).unwrap()).collect();
        let name = format!("{}_k{k}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        match lower_kernel(kernel, &name, &dims, &shapes) {
            Ok(l) => out.push(l),
            Err(e) => host.push(format!("{tag} k{k}: {e}")),
        }
    }
}

fn golden_kernels(out: &mut Vec<Lowered>, host: &mut Vec<String>) -> usize {
    let mut n = 0;
    for case in golden_cases() {
        for mode in [Mode::None, Mode::Fast] {
            let Ok(p) = rhea::opt::compile(case.graph.clone(), &options(mode, &[])) else { continue };
            lower_program(&p, &case.feeds, &format!("{}_{mode:?}_{n}", case.name), out, host);
            n += 1;
        }
    }
    n
}

fn model_kernels(out: &mut Vec<Lowered>, host: &mut Vec<String>) {
    use ndarray::{Array2, Array4};
    // An MLP's training step, lowered for `[rows, x_width]` and `[rows, y_width]` inputs.
    let mut training = |step: rhea::Function, [rows, x_width, y_width]: [usize; 3], name: &str| {
        let feeds = HashMap::from([
            ("x".to_string(), Value::from(Array2::<f32>::zeros((rows, x_width)))),
            ("y".to_string(), Value::from(Array2::<f32>::zeros((rows, y_width)))),
        ]);
        lower_program(step.program(), &feeds, name, out, host);
    };
    let sonar = rhea::nn::models::sonar_mlp(1).unwrap();
    let f = rhea::function(&[&sonar.x, &sonar.y], &[&sonar.loss]).updates(sonar.updates.clone()).compile().unwrap();
    training(f, [10, 60, 1], "sonar");
    let mlp = rhea::nn::models::theano_mlp(1).unwrap();
    let f = rhea::function(&[&mlp.x, &mlp.y], &[&mlp.loss]).updates(mlp.updates.clone()).compile().unwrap();
    training(f, [60, 784, 10], "theano_mlp");
    let options = rhea::nn::models::VggOptions { width_div: 16, image_size: 32, training: false, ..Default::default() };
    let vgg = rhea::nn::models::vgg16(&options).unwrap();
    let f = rhea::function(&[&vgg.x], &[&vgg.logits]).compile().unwrap();
    let feeds = HashMap::from([("x".to_string(), Value::from(Array4::<f32>::zeros((2, 3, 32, 32))))]);
    lower_program(f.program(), &feeds, "vgg16", out, host);
}

#[test]
fn every_generated_kernel_assembles_for_sm80_and_sm90() {
    let (mut lowered, mut host) = (Vec::new(), Vec::new());
    let programs = golden_kernels(&mut lowered, &mut host);
    model_kernels(&mut lowered, &mut host);
    // Only what has no PTX lowering by design runs on the host.
    let unexpected: Vec<&String> = host
        .iter()
        .filter(|m| {
            !["sin on", "cos on", "pow on i", "reductions of bool", "empty axis"].iter().any(|ok| m.contains(ok))
        })
        .collect();
    assert!(unexpected.is_empty(), "kernels that should lower to PTX did not:\n{unexpected:#?}");
    assert!(lowered.len() > 800, "only {} kernels lowered from {programs} programs", lowered.len());
    let Some(ptxas) = rhea_cuda::ptxas::find() else {
        let required = std::env::var("RHEA_REQUIRE_PTXAS").is_ok_and(|v| v == "1");
        assert!(!required, "RHEA_REQUIRE_PTXAS=1 but no ptxas was found (pip install nvidia-cuda-nvcc-cu12)");
        println!("NOT RUN: ptxas not found; {} kernels lowered but not assembled", lowered.len());
        return;
    };
    let refs: Vec<&Lowered> = lowered.iter().collect();
    for sm in [80, 90] {
        let target = Target { sm };
        // A few hundred entries per module keeps ptxas's reports readable.
        for chunk in refs.chunks(400) {
            rhea_cuda::ptxas::assemble(&ptxas, &module(target, chunk), target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    println!(
        "{} kernels from {programs} programs and 3 models assemble for sm_80 and sm_90; {} run on the host",
        lowered.len(),
        host.len()
    );
}
