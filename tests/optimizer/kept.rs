//! The CPU backend keeps a 3x3 convolution's transformed (Winograd)
//! filters between calls while its weights are a shared variable the call
//! only reads, and makes them again when the weights' version changes.

use std::collections::HashMap;

use rhea::opt::Mode;
use rhea::{Backend, Builder, Conv2d, DType, Dim, Value, Var, function, grad, rng};

use crate::kit::*;

fn random(shape: &[usize], stream: u64) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n as u64).map(|i| rng::uniform01(stream, i) * 2.0 - 1.0).collect();
    Value::from_f64(DType::F32, shape, &data).unwrap()
}

/// 16 channels in and out: enough for the Winograd path.
const W: [usize; 4] = [16, 16, 3, 3];
const SAME: Conv2d = Conv2d { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };

/// `y = conv2d(x, w)`, `x` of `n` images of 16 channels, `w` shared.
fn layer() -> (Builder, Var, Var, Var) {
    let g = Builder::new();
    let n = g.dim("n").unwrap();
    let x = g.input("x", DType::F32, [n, Dim::Known(16), Dim::Known(8), Dim::Known(8)]).unwrap();
    let w = g.shared("w", random(&W, 1)).unwrap();
    let y = x.conv2d(&w, SAME).unwrap();
    (g, x, w, y)
}

#[test]
fn kept_filter_transforms_follow_the_weights_version_not_their_memory() {
    let (g, _, _, y) = layer();
    g.output("y", &y).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::Fast, &[]));
    let engine = rhea_cpu::CpuEngine::new(&p, true).unwrap();
    let cache = engine.filters().clone();

    // A plan for `batch` images, sharing `cache`, called with the weights
    // `w` at `version`.
    let run = |batch: usize, w: &Value, version: u64| {
        use rhea::exec::{Engine, Io, Layout};
        let f = feeds(&[("x", random(&[batch, 16, 8, 8], 2))]);
        let (bindings, _, ids, inputs, values) = prepare(&p, &f).unwrap();
        let decisions = rhea::opt::decide(&p, &engine.target());
        let mem = rhea::opt::memory_plan_decided(&p, &decisions, &bindings, true).unwrap();
        let io = Io { inputs: &inputs, outputs: &ids, updates: &[] };
        let layout = Layout::new(&p, &mem, &decisions, &bindings, &io).unwrap();
        let mut plan = engine.prepare(&p, &mem, layout, None).unwrap();
        let mut weights = Weights(w.clone(), version);
        let got = plan.run(&values, &mut weights, None).unwrap().remove(0);
        (got, want(&graph, &f, w))
    };

    let (w1, w2) = (random(&W, 1), random(&W, 3));
    let (got, expected) = run(2, &w1, 7);
    close(&got, &expected, 1e-4).unwrap();
    assert_eq!(cache.kept_elements(), 16 * 16 * 16, "one 4x4 transform per filter, kept");
    // Other weights behind the same version: the kept transform is used,
    // so the result is still that of `w1`.
    let (stale, _) = run(2, &w2, 7);
    assert!(stale.bit_eq(&got), "the transform was made again although the version did not change");
    // A new version is seen, by this plan and by a plan for another batch
    // size, which shares the one kept copy.
    let (got, expected) = run(2, &w2, 8);
    close(&got, &expected, 1e-4).unwrap();
    let (got, expected) = run(3, &w2, 8);
    close(&got, &expected, 1e-4).unwrap();
    assert_eq!(cache.kept_elements(), 16 * 16 * 16);
}

/// The one shared variable, `w`, at a version the test chooses.
struct Weights(Value, u64);

impl rhea::exec::SharedValues for Weights {
    fn value(&self, _: rhea::exec::SharedId) -> Option<&Value> {
        Some(&self.0)
    }
    fn version(&self, _: rhea::exec::SharedId) -> u64 {
        self.1
    }
    fn elements_mut(&mut self, _: rhea::exec::SharedId) -> Option<rhea::ElementsMut<'_>> {
        Some(self.0.elements_mut())
    }
    fn set_pending(&mut self, _: rhea::exec::SharedId, _: rhea::Fetch) -> u64 {
        self.1
    }
}

/// The raw graph's output `y` on the interpreter, with the weights `w`.
fn want(graph: &rhea::Graph, feeds: &HashMap<String, Value>, w: &Value) -> Value {
    let mut graph = graph.clone();
    let id = graph.find("w").unwrap();
    graph.set_shared_value(id, w.clone()).unwrap();
    run_raw(&graph, feeds).remove(0)
}

#[test]
fn a_function_sees_weights_set_from_the_host_and_trained_by_another_function() {
    let (g, x, w, y) = layer();
    let cost = (&y * &y).sum_all().unwrap();
    let gw = grad(&cost, &[&w]).unwrap().remove(0);
    let step = &w - &(&gw * 1e-3f32);
    let mut predict = function(&[&x], &[&y]).compile().unwrap();
    let mut train = function(&[&x], &[&cost]).updates([(w.clone(), step)]).compile().unwrap();
    let reference = std::cell::RefCell::new(function(&[&x], &[&y, &cost]).backend(Backend::Interp).compile().unwrap());
    let expected = |x: &Value| reference.borrow_mut().call(std::slice::from_ref(x)).unwrap();
    let version = || g.graph().shared_version(w.id());
    let (x2, x3) = (random(&[2, 16, 8, 8], 2), random(&[3, 16, 8, 8], 4));
    // `predict` against the interpreter, on the weights as they are now.
    let mut check = |x: &Value| {
        let before = version();
        let got = predict.call(std::slice::from_ref(x)).unwrap().remove(0);
        assert_eq!(version(), before, "a call that only reads the weights changed their version");
        close(&got, &expected(x)[0], 1e-4).unwrap();
        got
    };
    // `train`'s cost (from the weights before its update) against the interpreter.
    let mut step = |x: &Value| {
        let cost = expected(x).remove(1);
        let before = version();
        close(&train.call(std::slice::from_ref(x)).unwrap()[0], &cost, 1e-4).unwrap();
        assert_ne!(version(), before, "an update kept the weights' version");
    };
    let first = check(&x2);
    g.graph_mut().set_shared_value(w.id(), random(&W, 5)).unwrap();
    let set = check(&x2);
    assert!(!set.bit_eq(&first));
    step(&x2);
    step(&x2);
    let trained = check(&x2);
    assert!(!trained.bit_eq(&set));
    check(&x3);
    step(&x3);
    check(&x3);
    check(&x2);
}

#[test]
fn the_forward_and_the_input_gradient_keep_their_own_transforms_of_the_same_weights() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [2, 16, 8, 8]).unwrap();
    let w = g.shared("w", random(&W, 1)).unwrap();
    let y = x.conv2d(&w, SAME).unwrap();
    let gx = grad(&(&y * &y).sum_all().unwrap(), &[&x]).unwrap().remove(0);
    let mut f = function(&[&x], &[&y, &gx]).compile().unwrap();
    let mut reference = function(&[&x], &[&y, &gx]).backend(Backend::Interp).compile().unwrap();
    let x2 = random(&[2, 16, 8, 8], 2);
    for weights in [None, Some(6), None] {
        if let Some(stream) = weights {
            f.set_shared("w", random(&W, stream)).unwrap();
        }
        let x = std::slice::from_ref(&x2);
        let (got, expected) = (f.call(x).unwrap(), reference.call(x).unwrap());
        for (a, b) in got.iter().zip(&expected) {
            close(a, b, 1e-4).unwrap();
        }
    }
}
