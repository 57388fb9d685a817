//! Fusion counts, the memory plan, and what the dumps explain.

use ndarray::{Array2, array};
use rhea::opt::{Mode, StepKind, memory_plan};
use rhea::{Builder, DType, Dim, Value};

use crate::kit::*;

fn kernels_and_steps(g: &Builder) -> (usize, usize) {
    let p = program(&g.to_graph(), &options(Mode::Fast, &[]));
    (p.kernels(), p.steps.len())
}

#[test]
fn softmax_adam_and_the_sonar_loss_take_few_kernels() {
    // softmax: expanded into kernels every backend compiles (max, shift
    // and exp, sum, normalize), no library step left.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [4, 10]).unwrap();
    g.output("p", &x.softmax(-1).unwrap()).unwrap();
    let (kernels, steps) = kernels_and_steps(&g);
    assert_eq!(kernels, steps, "every step is a kernel");
    assert!(kernels <= 4, "{kernels} kernels");

    // The Adam update of one parameter: one kernel for m, v and the
    // parameter, one for the step-size scalars (shared by all parameters).
    let g = Builder::new();
    let w = g.shared("w", array![1.0f32, 2.0, 3.0]).unwrap();
    let loss = w.square().unwrap().sum_all().unwrap();
    let ups = rhea::nn::Optimizer::updates(&rhea::nn::Adam::default(), &loss, std::slice::from_ref(&w)).unwrap();
    for (s, v) in &ups {
        g.update(s, v).unwrap();
    }
    let p = program(&g.to_graph(), &options(Mode::Fast, &[]));
    let adam: Vec<_> = p.fusion.groups.iter().filter(|k| k.outputs.len() == 3).collect();
    assert_eq!(adam.len(), 1, "{}", rhea::opt::print::to_text_optimized(&p, Default::default()));
    assert_eq!(p.kernels(), 2, "{}", rhea::opt::print::to_text_optimized(&p, Default::default()));

    // The Sonar MLP's loss from the logits: one kernel.
    let m = rhea::nn::models::sonar_mlp_forward(1).unwrap();
    let p = program(&m.graph.to_graph(), &options(Mode::Fast, &[]));
    let loss = p.graph.outputs().iter().find(|(n, _)| &**n == "loss").unwrap().1;
    let k = p.fusion.group_of[&loss];
    let ops: Vec<&str> = p.fusion.groups[k].members.iter().map(|&m| p.graph.node(m).op.name()).collect();
    assert_eq!(ops, ["softplus", "mul", "sub", "mean"], "the loss is one kernel from the logits");
}

#[test]
fn mode_none_is_one_kernel_per_op() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3]).unwrap();
    let y = x.exp().unwrap().add(1.0).unwrap().log().unwrap().sum_all().unwrap();
    g.output("y", &y).unwrap();
    let graph = g.to_graph();
    let none = program(&graph, &options(Mode::None, &[]));
    assert_eq!(none.kernels(), 4);
    assert!(none.fusion.groups.iter().all(|k| k.members.len() == 1));
    let fast = program(&graph, &options(Mode::Fast, &[]));
    assert_eq!(fast.kernels(), 1);
    let f = feeds(&[("x", Value::from(array![0.1f32, 0.2, 0.3]))]);
    assert_same(&graph, &none, &f, 1e-6);
    assert_same(&graph, &fast, &f, 1e-6);
}

#[test]
fn fusion_never_recomputes_or_makes_cycles() {
    // e = exp(x) feeds an elementwise chain and a dot: it is computed once,
    // written out by its kernel, and the kernel reading the dot comes after.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [2, 2]).unwrap();
    let e = x.exp().unwrap();
    let d = e.dot(&x).unwrap();
    let y = e.add(&d).unwrap().tanh().unwrap();
    g.output("y", &y).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::Fast, &[]));
    let exp_kernels = p
        .fusion
        .groups
        .iter()
        .filter(|k| {
            k.members.iter().any(|&m| matches!(p.graph.node(m).op, rhea::Op::Unary { fun: rhea::UnaryOp::Exp }))
        })
        .count();
    assert_eq!(exp_kernels, 1);
    let order: Vec<String> = p.steps.iter().map(|s| format!("{:?}", s.kind)).collect();
    assert_eq!(p.steps.len(), 3, "{order:?}");
    assert_same(&graph, &p, &feeds(&[("x", Value::from(array![[0.1f32, 0.2], [0.3, 0.4]]))]), 1e-6);
    let why = rhea::opt::print::explain_fusion(&p);
    assert!(why.contains("exp: starts kernel") && why.contains("its consumer gemm runs as its own step"), "{why}");
    assert!(why.contains("gemm: not fusible"), "{why}");
}

#[test]
fn the_memory_plan_reuses_buffers_and_runs_in_place() {
    // A chain of library ops and kernels: values die as the chain moves on.
    let g = Builder::new();
    let b = g.dim("b").unwrap();
    let x = g.input("x", DType::F32, [b, Dim::Known(64)]).unwrap();
    let w = g.shared("w", Array2::<f32>::eye(64)).unwrap();
    let mut h = x.clone();
    for _ in 0..4 {
        h = h.dot(&w).unwrap().tanh().unwrap().softmax(-1).unwrap();
    }
    g.output("y", &h).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::Fast, &[]));
    let bind = [(
        match b {
            Dim::Sym(s) => s,
            _ => unreachable!(),
        },
        8usize,
    )]
    .into_iter()
    .collect();
    let mem = memory_plan(&p.graph, &p.steps, &p.fusion, &bind).unwrap();
    let values = p.steps.iter().map(|s| s.outputs.len()).sum::<usize>();
    assert!(mem.buffer_bytes.len() < values, "{} buffers for {values} values", mem.buffer_bytes.len());
    assert!(mem.in_place > 0);
    assert!(mem.peak_bytes < values * 8 * 64 * 4);
    let f = feeds(&[("x", Value::from(Array2::<f32>::from_shape_fn((8, 64), |(i, j)| ((i + j) % 5) as f32 / 5.0)))]);
    assert_same(&graph, &p, &f, 1e-5);
}

#[test]
fn no_in_place_write_over_a_value_the_kernel_reads_transposed() {
    // y = d + d^T: the kernel reads d at (i, j) and (j, i), so y must not overwrite d.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3, 3]).unwrap();
    let d = x.dot(&x).unwrap();
    let y = d.add(d.transpose().unwrap()).unwrap();
    g.output("y", &y).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::Fast, &[]));
    let mem = memory_plan(&p.graph, &p.steps, &p.fusion, &Default::default()).unwrap();
    assert_eq!(mem.in_place, 0);
    let d_id = p.steps.iter().find(|s| matches!(s.kind, StepKind::Op(_))).unwrap().outputs[0];
    let y_id = p.graph.outputs()[0].1;
    assert_ne!(mem.buffer_of[&d_id], mem.buffer_of[&y_id]);
    assert_same(
        &graph,
        &p,
        &feeds(&[("x", Value::from(Array2::from_shape_fn((3, 3), |(i, j)| (i * 3 + j) as f32)))]),
        1e-6,
    );
}

#[test]
fn a_wrong_memory_plan_is_caught_by_name() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [4, 4]).unwrap();
    let a = x.dot(&x).unwrap();
    let b = a.dot(&x).unwrap();
    let c = b.dot(&x).unwrap();
    let y = a.add(&c).unwrap();
    g.output("y", &y).unwrap();
    let p = program(&g.to_graph(), &options(Mode::Fast, &[]));
    let mut mem = memory_plan(&p.graph, &p.steps, &p.fusion, &Default::default()).unwrap();
    // Put every value in one buffer: a is overwritten by b while the last step still needs it.
    for buf in mem.buffer_of.values_mut() {
        *buf = 0;
    }
    let f = feeds(&[("x", Value::from(Array2::<f32>::eye(4)))]);
    let ids: Vec<_> = p.graph.outputs().iter().map(|(_, id)| *id).collect();
    let e = rhea::run_program(&p, rhea::Backend::Interp, &f, &ids, Some(&mem)).unwrap_err().to_string();
    assert!(e.contains("buffer 0 holds"), "{e}");
}

#[test]
fn steps_follow_their_producers() {
    let m = rhea::nn::models::sonar_mlp(1).unwrap();
    let p = program(&m.graph.to_graph(), &options(Mode::Fast, &[]));
    let mut done = std::collections::HashSet::new();
    for s in &p.steps {
        for i in &s.inputs {
            assert!(rhea::opt::is_external(&p.graph, *i) || done.contains(i), "{s:?} reads {i} before it is written");
        }
        done.extend(s.outputs.iter().copied());
        if let StepKind::Kernel(k) = s.kind {
            p.fusion.groups[k].kernel.verify().unwrap();
        }
    }
}
