//! The 3x3 convolutions of VGG16 (batch 1, f32) on the CPU backend, with
//! the GFLOP/s each reaches: criterion's throughput in elements is the
//! direct convolution's 2 * 9 * C * O * H * W FLOPs. Each layer twice:
//! `kept`, its weights a shared variable the call only reads (their
//! Winograd transform is kept between calls, as in inference), and
//! `fresh`, its weights an input (transformed on every call, as in
//! training).
//!
//! `cargo bench --bench conv`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rhea::{Builder, Conv2d, DType, Value, function};

/// (channels in, channels out, height = width) of VGG16's conv layers, one
/// per block size.
const LAYERS: [(usize, usize, usize); 5] =
    [(64, 64, 224), (128, 128, 112), (256, 256, 56), (512, 512, 28), (512, 512, 14)];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("vgg16_conv3x3");
    group.sample_size(10);
    for (cin, cout, size) in LAYERS {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [1, cin, size, size]).unwrap();
        let weights = ndarray::Array4::<f32>::from_elem((cout, cin, 3, 3), 0.01);
        let same = Conv2d { padding: [1, 1], ..Conv2d::default() };
        let shared = g.shared("w", weights.clone()).unwrap();
        let mut kept = function(&[&x], &[&x.conv2d(&shared, same.clone()).unwrap()]).compile().unwrap();
        let input = g.input("w_in", DType::F32, [cout, cin, 3, 3]).unwrap();
        let mut fresh = function(&[&x, &input], &[&x.conv2d(&input, same).unwrap()]).compile().unwrap();
        let xv = Value::from(ndarray::Array4::<f32>::from_elem((1, cin, size, size), 0.5));
        let both = [xv.clone(), Value::from(weights)];
        group.throughput(Throughput::Elements((2 * 9 * cin * cout * size * size) as u64));
        group.bench_function(format!("{cin}x{cout}x{size}/kept"), |b| {
            b.iter(|| kept.call(std::slice::from_ref(&xv)).unwrap())
        });
        group.bench_function(format!("{cin}x{cout}x{size}/fresh"), |b| b.iter(|| fresh.call(&both).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
