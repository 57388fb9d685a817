//! Every kernel the test suite generates, lowered to PTX and assembled by
//! `ptxas` for sm_80 and sm_90: the numpy golden cases of every op (in
//! modes none and fast), 100 random graphs, large reductions, and the three
//! models' training and inference steps (`emulated.rs` runs the same
//! kernels); and the window kernels of convolutions and pooling, from those
//! programs and from every layer of the full-size VGG16 (`spatial.rs` runs
//! them on the emulated GPU). Kernels with no PTX lowering (sin, cos, integer pow, bool
//! reductions) run on the host; the test lists them and checks nothing
//! else is among them.
//!
//! Without `ptxas` the assembly check does not run and says so; with
//! `RHEA_REQUIRE_PTXAS=1` (set in CI) a missing `ptxas` fails instead.

use std::collections::HashMap;

use rhea::Value;
use rhea::kernel::{Bindings, Kernel};
use rhea::opt::{Mode, Program};
use rhea_cuda::{Lowered, Target, lower_kernel, module};

use crate::kit::*;

/// One kernel the test suite generates, lowered at its program's sizes.
pub struct Generated {
    pub tag: String,
    pub kernel: Kernel,
    pub bindings: Bindings,
    pub shapes: Vec<Vec<usize>>,
    pub lowered: Lowered,
}

/// What [`generated_kernels`] found.
pub struct Suite {
    pub kernels: Vec<Generated>,
    /// Kernels with no PTX lowering, and why.
    pub host: Vec<String>,
    /// The kernels of library ops (im2col, col2im, pooling).
    pub library: Vec<Lowered>,
    pub programs: usize,
}

/// Lowers every kernel of `p` at the sizes `feeds` give.
fn lower_program(p: &Program, feeds: &HashMap<String, Value>, tag: &str, suite: &mut Suite) {
    let bindings = rhea::interp::bind_inputs(&p.graph, feeds).unwrap();
    suite.programs += 1;
    for (k, group) in p.fusion.groups.iter().enumerate() {
        let kernel = &group.kernel;
        let dims = rhea::kernel::resolve(&kernel.domain, &bindings).unwrap();
        let shapes: Vec<Vec<usize>> =
            kernel.inputs.iter().map(|i| rhea::kernel::resolve(&i.shape, &bindings).unwrap()).collect();
        let name = format!("{}_k{k}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        match lower_kernel(kernel, &name, &dims, &shapes) {
            Ok(lowered) => suite.kernels.push(Generated {
                tag: format!("{tag} k{k}"),
                kernel: kernel.clone(),
                bindings: bindings.clone(),
                shapes,
                lowered,
            }),
            Err(e) => suite.host.push(format!("{tag} k{k}: {e}")),
        }
    }
    for (s, step) in p.steps.iter().enumerate() {
        let rhea::opt::StepKind::Op(id) = step.kind else { continue };
        let shape = |id: rhea::NodeId| rhea::kernel::resolve(&p.graph.ty(id).shape, &bindings).unwrap();
        let inputs: Vec<Vec<usize>> = step.inputs.iter().map(|&i| shape(i)).collect();
        let refs: Vec<&[usize]> = inputs.iter().map(|v| v.as_slice()).collect();
        let name = format!("{}_s{s}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let op = &p.graph.node(id).op;
        if let Some(plan) = rhea_cuda::op_kernels(op, p.graph.ty(id).dtype, &refs, &shape(id), &name) {
            suite.library.extend(plan.kernels);
        }
    }
}

/// The window kernels of every convolution and pooling layer of the
/// full-size VGG16 at batch 8, forward and backward.
fn vgg16_window_kernels(suite: &mut Suite) {
    let conv = rhea::Op::Conv2d(Box::new(rhea::Conv2d { padding: [1, 1], ..Default::default() }));
    let grad = |size| rhea::ConvGrad { conv: rhea::Conv2d { padding: [1, 1], ..Default::default() }, size };
    let pool = rhea::Pool2d::square(2);
    let (mut channels, mut size, batch) = (3, 224, 8);
    for (layer, out) in
        [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0].into_iter().enumerate()
    {
        let name = format!("vgg224_l{layer}");
        let x = [batch, channels, size, size];
        let mut add = |op: rhea::Op, inputs: &[&[usize]], output: &[usize], what: &str| {
            let kernels = rhea_cuda::op_kernels(&op, rhea::DType::F32, inputs, output, &format!("{name}_{what}"));
            suite.library.extend(kernels.unwrap_or_else(|| panic!("{name} {what} runs on the host")).kernels);
        };
        if out == 0 {
            let y = [batch, channels, size / 2, size / 2];
            add(rhea::Op::MaxPool2d(Box::new(pool.clone())), &[&x], &y, "pool");
            add(rhea::Op::MaxPool2dGrad(Box::new(pool.clone())), &[&x, &y], &x, "pool_grad");
            size /= 2;
        } else {
            let (w, y) = ([out, channels, 3, 3], [batch, out, size, size]);
            add(conv.clone(), &[&x, &w], &y, "conv");
            add(rhea::Op::Conv2dInputGrad(Box::new(grad([size, size]))), &[&y, &w], &x, "input_grad");
            add(rhea::Op::Conv2dWeightGrad(Box::new(grad([3, 3]))), &[&x, &y], &w, "weight_grad");
            channels = out;
        }
    }
}

fn golden_kernels(suite: &mut Suite) {
    for (n, case) in golden_cases().into_iter().enumerate() {
        for mode in [Mode::None, Mode::Fast] {
            let Ok(p) = rhea::opt::compile(case.graph.clone(), &options(mode, &[])) else { continue };
            lower_program(&p, &case.feeds, &format!("{}_{mode:?}_{n}", case.name), suite);
        }
    }
}

fn random_kernels(suite: &mut Suite, count: u64) {
    for seed in 0..count {
        let (graph, feeds) = crate::random::random_graph(seed);
        for mode in [Mode::None, Mode::Fast] {
            let Ok(p) = rhea::opt::compile(graph.clone(), &options(mode, &[])) else { continue };
            lower_program(&p, &feeds, &format!("random{seed}_{mode:?}"), suite);
        }
    }
}

/// A feed `x` of zeros (only its shape matters for lowering).
fn zeros(dtype: rhea::DType, shape: &[usize]) -> HashMap<String, Value> {
    let n: usize = shape.iter().product();
    let x = Value::from_le_bytes(dtype, shape, &vec![0; n * dtype.size_bytes()]).unwrap();
    HashMap::from([("x".to_string(), x)])
}

/// Reductions large enough for the block-per-output organization (warp
/// shuffles, shared memory, a barrier) and the coalesced thread-per-output
/// one, alone and fused with their producers and consumers.
fn reduction_kernels(suite: &mut Suite) {
    use rhea::{Builder, DType, Var};
    type Reduce = fn(&Var, &[isize], bool) -> Result<Var, rhea::GraphError>;
    let combines: [(&str, Reduce); 5] =
        [("sum", Var::sum), ("mean", Var::mean), ("max", Var::max), ("min", Var::min), ("prod", Var::prod)];
    // The last two have few outputs of many elements: several blocks each,
    // then a second kernel combining their parts.
    let layouts: [(&[usize], &[isize]); 6] = [
        (&[6, 1000], &[1]),
        (&[500, 16], &[0]),
        (&[3, 5, 70], &[0, 2]),
        (&[100, 1100], &[0]),
        (&[6, 20000], &[1]),
        (&[70000], &[0]),
    ];
    for dtype in [DType::F32, DType::F64, DType::I32] {
        for (shape, axes) in layouts {
            let g = Builder::new();
            let x = g.input("x", dtype, shape).unwrap();
            for (name, reduce) in combines {
                if let Ok(r) = reduce(&x, axes, false) {
                    g.output(name, &r).unwrap();
                }
            }
            if dtype.is_float() {
                // A producer fused in, and an elementwise output beside the reduced one.
                let e = x.exp().unwrap();
                g.output("exp", &e).unwrap();
                g.output("sum_exp", &e.sum(axes, false).unwrap()).unwrap();
            }
            let feeds = zeros(dtype, shape);
            for mode in [Mode::None, Mode::Fast] {
                let p = rhea::opt::compile(g.to_graph(), &options(mode, &[])).unwrap();
                lower_program(&p, &feeds, &format!("reduce_{dtype}_{shape:?}_{mode:?}"), suite);
            }
        }
    }
    // More outputs than blocks in a grid: each block loops over several,
    // and its shared memory is reused between them.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [8195, 65]).unwrap();
    g.output("sum", &x.sum(&[1], false).unwrap()).unwrap();
    let p = rhea::opt::compile(g.to_graph(), &options(Mode::Fast, &[])).unwrap();
    lower_program(&p, &zeros(DType::F32, &[8195, 65]), "reduce_many_outputs", suite);
    for (shape, dtype) in [([4usize, 3000usize], DType::F32), ([3, 700], DType::F64)] {
        let g = Builder::new();
        let x = g.input("x", dtype, shape).unwrap();
        g.output("softmax", &x.softmax(-1).unwrap()).unwrap();
        g.output("log_softmax", &x.log_softmax(-1).unwrap()).unwrap();
        let p = rhea::opt::compile(g.to_graph(), &options(Mode::Fast, &[])).unwrap();
        lower_program(&p, &zeros(dtype, &shape), &format!("softmax_{dtype}_{shape:?}"), suite);
    }
}

fn model_kernels(suite: &mut Suite) {
    use ndarray::{Array2, Array4};
    // An MLP's training step, lowered for `[rows, x_width]` and `[rows, y_width]` inputs.
    let mut training = |step: rhea::Function, [rows, x_width, y_width]: [usize; 3], name: &str| {
        let feeds = HashMap::from([
            ("x".to_string(), Value::from(Array2::<f32>::zeros((rows, x_width)))),
            ("y".to_string(), Value::from(Array2::<f32>::zeros((rows, y_width)))),
        ]);
        lower_program(step.program(), &feeds, name, suite);
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
    lower_program(f.program(), &feeds, "vgg16", suite);
    // Dropout as VGG16's classifier trains it (keyed by the step), and unkeyed in f64.
    for (dtype, key) in [(rhea::DType::F32, Some(&[][..])), (rhea::DType::F64, None)] {
        let op = rhea::Op::Dropout { rate: rhea::F64(0.5), seed: 7, training: true };
        let x: &[usize] = &[8, 4096];
        let inputs: Vec<&[usize]> = std::iter::once(x).chain(key).collect();
        let name = format!("dropout_{dtype}");
        let plan = rhea_cuda::op_kernels(&op, dtype, &inputs, x, &name).expect("dropout runs on the GPU");
        suite.library.extend(plan.kernels);
    }
}

/// Every kernel of the numpy golden cases (modes none and fast), of
/// `random` random graphs (both modes), of large reductions and of the
/// three models' steps.
pub fn generated_kernels(random: u64) -> Suite {
    let mut suite = Suite { kernels: Vec::new(), host: Vec::new(), library: Vec::new(), programs: 0 };
    golden_kernels(&mut suite);
    random_kernels(&mut suite, random);
    reduction_kernels(&mut suite);
    model_kernels(&mut suite);
    vgg16_window_kernels(&mut suite);
    suite
}

#[test]
fn every_generated_kernel_assembles_for_sm80_and_sm90() {
    let Suite { kernels, host, library, programs } = generated_kernels(100);
    // Only what has no PTX lowering by design runs on the host.
    let unexpected: Vec<&String> = host
        .iter()
        .filter(|m| {
            !["sin on", "cos on", "pow on i", "reductions of bool", "empty axis"].iter().any(|ok| m.contains(ok))
        })
        .collect();
    assert!(unexpected.is_empty(), "kernels that should lower to PTX did not:\n{unexpected:#?}");
    assert!(kernels.len() > 800, "only {} kernels lowered from {programs} programs", kernels.len());
    let Some(ptxas) = rhea_cuda::ptxas::find() else {
        let required = std::env::var("RHEA_REQUIRE_PTXAS").is_ok_and(|v| v == "1");
        assert!(!required, "RHEA_REQUIRE_PTXAS=1 but no ptxas was found (pip install nvidia-cuda-nvcc-cu12)");
        println!("NOT RUN: ptxas not found; {} kernels lowered but not assembled", kernels.len());
        return;
    };
    // VGG16's 13 convolutions (3 kernels each) and 5 pools (2 each) at least.
    assert!(library.len() >= 49, "only {} window kernels", library.len());
    let refs: Vec<&Lowered> = kernels.iter().map(|k| &k.lowered).chain(&library).collect();
    for sm in [80, 90] {
        let target = Target { sm };
        // A few hundred entries per module keeps ptxas's reports readable.
        for chunk in refs.chunks(400) {
            rhea_cuda::ptxas::assemble(&ptxas, &module(target, chunk), target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    println!(
        "{} kernels from {programs} programs and {} window kernels assemble for sm_80 and sm_90; {} run on the host",
        kernels.len(),
        library.len(),
        host.len()
    );
}
