//! How long the optimizer takes as graphs grow: deep MLP training graphs
//! (forward, loss, gradients, SGD updates) of about 1k, 10k and 100k nodes,
//! and the Sonar MLP training step (optimize + lower).
//!
//! `cargo bench --bench optimizer`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rhea::nn::{Activation, Optimizer, Sgd};
use rhea::opt::{Options, compile};
use rhea::{Builder, DType, Dim, Graph};

/// A training graph of `layers` Dense(8) tanh layers with SGD.
fn deep_mlp(layers: usize) -> Graph {
    let g = Builder::new();
    let b = g.dim("batch").unwrap();
    let x = g.input("x", DType::F32, [b, Dim::Known(8)]).unwrap();
    let y = g.input("y", DType::F32, [b, Dim::Known(1)]).unwrap();
    let mut h = x;
    let mut params = Vec::new();
    for i in 0..layers {
        let d = rhea::nn::Dense::new(&g, &format!("l{i}"), 8, 8, i as u64).unwrap();
        h = Activation::Tanh.apply(&d.forward(&h).unwrap()).unwrap();
        params.extend(d.params());
    }
    let out = rhea::nn::Dense::new(&g, "out", 8, 1, 0).unwrap();
    params.extend(out.params());
    let logits = out.forward(&h).unwrap();
    let loss = rhea::nn::binary_crossentropy_with_logits(&logits, &y).unwrap();
    g.output("loss", &loss).unwrap();
    for (s, v) in Sgd::default().updates(&loss, &params).unwrap() {
        g.update(&s, &v).unwrap();
    }
    g.to_graph()
}

fn options() -> Options {
    Options { verify: false, ..rhea::default_options() }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("optimize");
    group.sample_size(10);
    for layers in [55, 555, 5550] {
        let graph = deep_mlp(layers);
        let name = format!("deep_mlp_{}_nodes", graph.len());
        group.bench_function(&name, |b| b.iter(|| compile(black_box(graph.clone()), &options()).unwrap()));
    }
    let sonar = rhea::nn::models::sonar_mlp(1).unwrap().graph.to_graph();
    group.bench_function("sonar_mlp_training_step", |b| {
        b.iter(|| compile(black_box(sonar.clone()), &options()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
