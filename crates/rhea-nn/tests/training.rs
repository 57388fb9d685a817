//! Losses, optimizers and the training loop, evaluated on the interpreter
//! and checked against values worked out by hand.

use std::collections::HashMap;

use ndarray::{Array2, array};
use rhea_graph::{Builder, DType, Value, Var};
use rhea_nn::{
    Adam, Callable, FitOptions, NnError, Optimizer, Sgd, binary_accuracy_from_logits, binary_crossentropy,
    binary_crossentropy_with_logits, categorical_accuracy, categorical_crossentropy,
    categorical_crossentropy_with_logits, evaluate, fit, predict,
};

fn eval(g: &Builder, outs: &[&Var]) -> Vec<f64> {
    let ids: Vec<_> = outs.iter().map(|v| v.id()).collect();
    let vals = rhea_interp::run(&g.graph(), &HashMap::new(), &ids).unwrap();
    vals.iter().map(|v| v.to_f64_vec()[0]).collect()
}

/// Applies a list of updates the way a compiled function does: all values
/// first, then every variable at once.
fn step(g: &Builder, updates: &[(Var, Var)]) {
    let ids: Vec<_> = updates.iter().map(|(_, v)| v.id()).collect();
    let vals = rhea_interp::run(&g.graph(), &HashMap::new(), &ids).unwrap();
    for ((s, _), v) in updates.iter().zip(vals) {
        g.graph_mut().set_shared_value(s.id(), v).unwrap();
    }
}

fn value(g: &Builder, v: &Var) -> f64 {
    g.graph().shared_value(v.id()).unwrap().to_f64_vec()[0]
}

#[test]
fn logits_and_probability_losses_agree_and_logits_stay_finite() {
    let g = Builder::new();
    let z = g.constant(array![[2.0f64], [-1.0], [0.5]]);
    let y = g.constant(array![[1.0f64], [0.0], [0.0]]);
    let stable = binary_crossentropy_with_logits(&z, &y).unwrap();
    let plain = binary_crossentropy(&z.sigmoid().unwrap(), &y).unwrap();
    let by_hand = ((1.0 + (-2.0f64).exp()).ln() + (1.0 + (-1.0f64).exp()).ln() + (1.0 + 0.5f64.exp()).ln()) / 3.0;
    let [a, b] = eval(&g, &[&stable, &plain])[..] else { unreachable!() };
    assert!((a - by_hand).abs() < 1e-12 && (b - by_hand).abs() < 1e-9, "{a} {b} {by_hand}");
    // At a logit of 1000 the probability form saturates; the logits form does not.
    let big = g.constant(array![[1000.0f64]]);
    let zero = g.constant(array![[0.0f64]]);
    let huge = binary_crossentropy_with_logits(&big, &zero).unwrap();
    assert_eq!(eval(&g, &[&huge])[0], 1000.0);
    let acc = binary_accuracy_from_logits(&z, &y).unwrap();
    assert!((eval(&g, &[&acc])[0] - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn categorical_losses_agree() {
    let g = Builder::new();
    let z = g.constant(array![[1.0f64, 2.0, 3.0], [0.0, 0.0, 5.0]]);
    let t = g.constant(array![[0.0f64, 0.0, 1.0], [1.0, 0.0, 0.0]]);
    let a = categorical_crossentropy_with_logits(&z, &t).unwrap();
    let b = categorical_crossentropy(&z.softmax(-1).unwrap(), &t).unwrap();
    let lse1 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let lse2 = (2.0 + 5f64.exp()).ln();
    let by_hand = ((lse1 - 3.0) + lse2) / 2.0;
    let acc = categorical_accuracy(&z, &t).unwrap();
    let v = eval(&g, &[&a, &b, &acc]);
    assert!((v[0] - by_hand).abs() < 1e-12 && (v[1] - by_hand).abs() < 1e-6, "{v:?} {by_hand}");
    assert_eq!(v[2], 0.5);
}

/// loss = (w - 3)^2, so the gradient is 2 (w - 3).
fn quadratic(w0: f64) -> (Builder, Var, Var) {
    let g = Builder::new();
    let w = g.shared("w", Value::from(w0)).unwrap();
    let loss = w.sub(3.0).unwrap().square().unwrap();
    (g, w, loss)
}

#[test]
fn sgd_momentum_and_nesterov_follow_keras() {
    // Plain: w = 1 - 0.1 * 2 * (1 - 3) = 1.4.
    let (g, w, loss) = quadratic(1.0);
    let ups = Sgd { lr: 0.1, ..Sgd::default() }.updates(&loss, std::slice::from_ref(&w)).unwrap();
    step(&g, &ups);
    assert!((value(&g, &w) - 1.4).abs() < 1e-12);
    // Momentum 0.9: m1 = -0.1 * -4 = 0.4, w1 = 1.4; g2 = 2 (1.4 - 3) = -3.2,
    // m2 = 0.9 * 0.4 + 0.32 = 0.68, w2 = 2.08.
    let (g, w, loss) = quadratic(1.0);
    let ups = Sgd { lr: 0.1, momentum: 0.9, ..Sgd::default() }.updates(&loss, std::slice::from_ref(&w)).unwrap();
    step(&g, &ups);
    step(&g, &ups);
    assert!((value(&g, &w) - 2.08).abs() < 1e-12, "{}", value(&g, &w));
    // Nesterov: m1 = 0.4, w1 = 1 + 0.9 * 0.4 + 0.4 = 1.76.
    let (g, w, loss) = quadratic(1.0);
    let ups = Sgd { lr: 0.1, momentum: 0.9, nesterov: true, ..Sgd::default() }
        .updates(&loss, std::slice::from_ref(&w))
        .unwrap();
    step(&g, &ups);
    assert!((value(&g, &w) - 1.76).abs() < 1e-12, "{}", value(&g, &w));
}

#[test]
fn adam_follows_keras() {
    let (g, w, loss) = quadratic(1.0);
    let adam = Adam { lr: 0.1, ..Adam::default() };
    let ups = adam.updates(&loss, std::slice::from_ref(&w)).unwrap();
    // Keras: alpha = lr sqrt(1 - b2^t) / (1 - b1^t); m, v running moments; w -= alpha m / (sqrt(v) + eps).
    let (mut wv, mut m, mut v) = (1.0f64, 0.0, 0.0);
    for t in 1..=3 {
        step(&g, &ups);
        let gr = 2.0 * (wv - 3.0);
        m += (gr - m) * 0.1;
        v += (gr * gr - v) * 0.001;
        let alpha = 0.1 * (1.0 - 0.999f64.powi(t)).sqrt() / (1.0 - 0.9f64.powi(t));
        wv -= alpha * m / (v.sqrt() + 1e-7);
        assert!((value(&g, &w) - wv).abs() < 1e-12, "step {t}: {} vs {wv}", value(&g, &w));
    }
    let it = g.find("adam.iterations").unwrap();
    assert_eq!(value(&g, &it), 3.0);
    assert_eq!(it.dtype(), DType::I64);
    // Mixed f32 and f64 parameters each get a step size of their own dtype.
    let g2 = Builder::new();
    let a = g2.shared("a", Value::from(1.0f32)).unwrap();
    let b = g2.shared("b", Value::from(1.0f64)).unwrap();
    let l = a.cast(DType::F64).unwrap().add(&b).unwrap().square().unwrap();
    let ups = Adam::default().updates(&l, &[a.clone(), b.clone()]).unwrap();
    step(&g2, &ups);
    assert!(value(&g2, &a) < 1.0 && value(&g2, &b) < 1.0);
    assert!(Adam::default().updates(&loss, &[]).is_err());
    let x = g.input("x", DType::F64, [1]).unwrap();
    let e = Sgd::default().updates(&x.sum_all().unwrap(), &[x]).unwrap_err().to_string();
    assert!(e.contains("must be shared variables"), "{e}");
}

/// A compiled-function stand-in over the interpreter: positional inputs
/// named `x`, `y`, updates applied after each call.
struct Interp {
    g: Builder,
    inputs: Vec<&'static str>,
    outputs: Vec<Var>,
    updates: Vec<(Var, Var)>,
}

impl Callable for Interp {
    fn call(&mut self, inputs: &[Value]) -> rhea_nn::Result<Vec<Value>> {
        let feeds: HashMap<String, Value> =
            self.inputs.iter().map(|n| n.to_string()).zip(inputs.iter().cloned()).collect();
        let mut ids: Vec<_> = self.outputs.iter().map(Var::id).collect();
        ids.extend(self.updates.iter().map(|(_, v)| v.id()));
        let vals = rhea_interp::run(&self.g.graph(), &feeds, &ids).map_err(|e| NnError::Run(e.to_string()))?;
        for ((s, _), v) in self.updates.iter().zip(&vals[self.outputs.len()..]) {
            self.g.graph_mut().set_shared_value(s.id(), v.clone()).unwrap();
        }
        Ok(vals[..self.outputs.len()].to_vec())
    }
}

#[test]
fn fit_learns_a_separable_problem_and_predict_stacks_batches() {
    let m =
        rhea_nn::models::mlp_binary(2, &[4], rhea_nn::Activation::Tanh, Some(&Adam { lr: 0.05, ..Adam::default() }), 3)
            .unwrap();
    let x = Array2::from_shape_fn((40, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
    let y = Array2::from_shape_fn((40, 1), |(i, _)| f32::from(x[[i, 0]] + x[[i, 1]] > 0.0));
    let outs = vec![m.loss.clone(), m.accuracy.clone()];
    let mut train =
        Interp { g: m.graph.clone(), inputs: vec!["x", "y"], outputs: outs.clone(), updates: m.updates.clone() };
    let mut score = Interp { g: m.graph.clone(), inputs: vec!["x", "y"], outputs: outs, updates: vec![] };
    let opts = FitOptions { epochs: 60, batch_size: 7, shuffle: true, seed: 1, verbose: false };
    let history = fit(&mut train, &mut score, &x, &y, Some((&x, &y)), &opts).unwrap();
    assert_eq!(history.len(), 60);
    assert!(history[59].loss < history[0].loss, "{:?} -> {:?}", history[0], history[59]);
    let (_, acc) = evaluate(&mut score, &x, &y, 16).unwrap();
    assert!(acc >= 0.9, "{acc}");
    assert_eq!(history[59].val_acc, Some(acc));
    assert!(history[0].line(60).starts_with("Epoch 1/60 - loss: "));
    let mut probs = Interp { g: m.graph.clone(), inputs: vec!["x"], outputs: vec![m.probs.clone()], updates: vec![] };
    let p = predict(&mut probs, &x, 16).unwrap();
    assert_eq!(p.shape(), &[40, 1]);
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(fit(&mut train, &mut score, &x, &y.slice(ndarray::s![..3, ..]).to_owned(), None, &opts).is_err());
    assert!(evaluate(&mut score, &x, &y, 0).is_err());
}
