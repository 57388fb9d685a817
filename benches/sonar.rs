//! One training epoch of the Sonar MLP (124 rows, batch 10, Adam: 13 steps)
//! on each backend. Issue 5's target for the CPU backend is 0.15 ms.
//!
//! `cargo bench --bench sonar`

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::Array2;
use rhea::nn::models::sonar_mlp;
use rhea::{Backend, Value, function};

fn bench(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sonar/sonar.all-data");
    let table = rhea::nn::data::read_csv(std::path::Path::new(path)).unwrap();
    let x = table.features.slice(ndarray::s![..124, ..]).to_owned();
    let y = Array2::from_shape_fn((124, 1), |(i, _)| f32::from(table.labels[i] == "R"));
    let batches: Vec<[Value; 2]> = (0..124)
        .step_by(10)
        .map(|s| {
            let e = (s + 10).min(124);
            [
                Value::from(x.slice(ndarray::s![s..e, ..]).to_owned()),
                Value::from(y.slice(ndarray::s![s..e, ..]).to_owned()),
            ]
        })
        .collect();
    let mut group = c.benchmark_group("sonar_epoch");
    for backend in [Backend::Interp, Backend::Cpu] {
        let m = sonar_mlp(1).unwrap();
        let mut step = function(&[&m.x, &m.y], &[&m.loss, &m.accuracy])
            .updates(m.updates.clone())
            .backend(backend)
            .compile()
            .unwrap();
        group.bench_function(backend.to_string(), |b| {
            b.iter(|| {
                for batch in &batches {
                    step.call(batch).unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
