//! Micro-benchmarks of the CPU backend, each a ratio to read in one run:
//!
//! - a chain of six cheap elementwise ops fused into one kernel (mode
//!   fast) against one kernel per op (mode none), over 1M f32;
//! - softmax over rows, at the Theano MLP's output size and a large one;
//! - the matrix products of the two MLPs' training steps (forward and both
//!   gradients), with criterion's throughput as FLOPs.
//!
//! `cargo bench --bench micro`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rhea::opt::Mode;
use rhea::{Builder, DType, Value, function};

fn input(rows: usize, cols: usize) -> Value {
    Value::from(Array2::from_shape_fn((rows, cols), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.5))
}

fn chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("elementwise_chain_1M");
    group.throughput(Throughput::Elements(1 << 20));
    for (name, mode) in [("fused", Mode::Fast), ("unfused", Mode::None)] {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [1024, 1024]).unwrap();
        // relu((2x + 1) * x - 0.5) * x: five cheap ops, memory-bound unfused.
        let y =
            x.mul(2.0).unwrap().add(1.0).unwrap().mul(&x).unwrap().sub(0.5).unwrap().relu().unwrap().mul(&x).unwrap();
        let mut f = function(&[&x], &[&y]).mode(mode).compile().unwrap();
        let xv = input(1024, 1024);
        group.bench_function(name, |b| b.iter(|| f.call(std::slice::from_ref(&xv)).unwrap()));
    }
    group.finish();
}

fn softmax(c: &mut Criterion) {
    let mut group = c.benchmark_group("softmax_rows");
    for (rows, cols) in [(60, 10), (1024, 1000)] {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [rows, cols]).unwrap();
        let y = x.softmax(-1).unwrap();
        let mut f = function(&[&x], &[&y]).compile().unwrap();
        let xv = input(rows, cols);
        group.throughput(Throughput::Elements((rows * cols) as u64));
        group.bench_function(format!("{rows}x{cols}"), |b| b.iter(|| f.call(std::slice::from_ref(&xv)).unwrap()));
    }
    group.finish();
}

fn products(c: &mut Criterion) {
    let mut group = c.benchmark_group("mlp_gemm");
    // (what, m, k, n): x @ w forward, x^T @ dy for the weight gradient,
    // dy @ w^T for the input gradient, as the steps compute them.
    let shapes = [
        ("sonar_fwd_60x60", 10, 60, 60),
        ("sonar_fwd_60x8", 10, 60, 8),
        ("sonar_dw_60x60", 60, 10, 60),
        ("mlp_fwd_784x500", 60, 784, 500),
        ("mlp_fwd_500x10", 60, 500, 10),
        ("mlp_dw_784x500", 784, 60, 500),
        ("mlp_dx_500x784", 60, 500, 784),
    ];
    for (name, m, k, n) in shapes {
        let g = Builder::new();
        let a = g.input("a", DType::F32, [m, k]).unwrap();
        let b = g.input("b", DType::F32, [k, n]).unwrap();
        let y = a.dot(&b).unwrap();
        let mut f = function(&[&a, &b], &[&y]).compile().unwrap();
        let (av, bv) = (input(m, k), input(k, n));
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(name, |bench| bench.iter(|| f.call(&[av.clone(), bv.clone()]).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, chain, softmax, products);
criterion_main!(benches);
