//! Convolutions and pooling with their gradients against the interpreter,
//! over strides, padding, dilation, groups, 1x1 kernels and both float
//! dtypes: on the CPU backend's native kernels, and on the CUDA backend's
//! (im2col and col2im kernels with batched cuBLAS products, window
//! kernels for pooling) on the emulated GPU and, where there is one, a GPU.
//! Second derivatives (a gradient penalty) and forward mode run there too.

use std::collections::HashMap;

use rhea::opt::Mode;
use rhea::{Builder, Conv2d, DType, Pool2d, Value, grad, jvp, rng};

use crate::kit::*;

fn random(dtype: DType, shape: &[usize], stream: u64) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n as u64).map(|i| rng::uniform01(stream, i) * 2.0 - 1.0).collect();
    let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data).unwrap();
    match dtype {
        DType::F32 => Value::F32(a.mapv(|x| x as f32)),
        _ => Value::F64(a),
    }
}

/// Where a program runs.
#[derive(Clone, Copy)]
enum On {
    Cpu,
    /// The PTX emulator, with this many bytes of device memory.
    Emulator(usize),
    Gpu,
}

impl On {
    fn run(self, p: &rhea::opt::Program, feeds: &HashMap<String, Value>) -> Result<Vec<Value>, String> {
        match self {
            On::Cpu => run_cpu(p, feeds),
            On::Emulator(bytes) => run_cuda_on(std::sync::Arc::new(rhea_cuda::Gpu::emulated(bytes)), p, feeds),
            On::Gpu => run_cuda(p, feeds, false),
        }
    }
}

/// `sum(pool(conv(x, w)) * r)` and its gradients with respect to `x` and
/// `w`, on the interpreter and `on` a backend.
fn check(on: On, dtype: DType, x_shape: [usize; 4], w_shape: [usize; 4], conv: Conv2d, pool: Pool2d, max: bool) {
    let g = Builder::new();
    let x = g.input("x", dtype, x_shape).unwrap();
    let w = g.input("w", dtype, w_shape).unwrap();
    let y = x.conv2d(&w, conv.clone()).unwrap();
    let p = if max { y.max_pool2d(pool.clone()) } else { y.avg_pool2d(pool.clone()) }.unwrap();
    let shape = p.shape().to_known().unwrap();
    let r = g.input("r", dtype, shape.as_slice()).unwrap();
    let cost = (&p * &r).sum_all().unwrap();
    let grads = grad(&cost, &[&x, &w]).unwrap();
    let feeds: HashMap<String, Value> = [
        ("x".to_string(), random(dtype, &x_shape, 1)),
        ("w".to_string(), random(dtype, &w_shape, 2)),
        ("r".to_string(), random(dtype, &shape, 3)),
    ]
    .into();
    let outputs = [("y", &y), ("p", &p), ("gx", &grads[0]), ("gw", &grads[1])];
    let what = format!("{dtype} x{x_shape:?} w{w_shape:?} {conv:?} {pool:?} max={max}");
    compare(on, &g, &outputs, &feeds, &what);
}

/// The `outputs` of `g`'s graph on the interpreter and, optimized, `on` a
/// backend: the same within a tolerance of the dtype.
fn compare(on: On, g: &Builder, outputs: &[(&str, &rhea::Var)], feeds: &HashMap<String, Value>, what: &str) {
    let mut graph = g.graph().clone();
    for (name, v) in outputs {
        graph.set_output(name, v.id());
    }
    let want = run_raw(&graph, feeds);
    let got = on.run(&program(&graph, &options(Mode::Fast, &[])), feeds).unwrap();
    for ((name, v), (a, b)) in outputs.iter().zip(want.iter().zip(&got)) {
        let tol = if v.ty().dtype == DType::F32 { 1e-4 } else { 1e-10 };
        if let Err(e) = close(a, b, tol) {
            panic!("{name} of {what}: {e}");
        }
    }
}

/// A gradient penalty, `sum(gx^2) + sum(gw^2)` of the gradients of
/// `sum(pool(conv(x, w)) * r)`, with its own gradients (second
/// derivatives through every convolution and pooling gradient op), and the
/// JVP of `pool(conv(x, w))` along `(vx, vw)`: on the interpreter and `on`.
fn check_higher(on: On, dtype: DType, x_shape: [usize; 4], w_shape: [usize; 4], conv: Conv2d, pool: Pool2d, max: bool) {
    let g = Builder::new();
    let x = g.input("x", dtype, x_shape).unwrap();
    let w = g.input("w", dtype, w_shape).unwrap();
    let y = x.conv2d(&w, conv.clone()).unwrap().tanh().unwrap();
    let p = if max { y.max_pool2d(pool.clone()) } else { y.avg_pool2d(pool.clone()) }.unwrap();
    let shape = p.shape().to_known().unwrap();
    let r = g.input("r", dtype, shape.as_slice()).unwrap();
    let cost = (&p * &r).sum_all().unwrap();
    let first = grad(&cost, &[&x, &w]).unwrap();
    let penalty = first[0].square().unwrap().sum_all().unwrap() + first[1].square().unwrap().sum_all().unwrap();
    let second = grad(&penalty, &[&x, &w]).unwrap();
    let vx = g.input("vx", dtype, x_shape).unwrap();
    let vw = g.input("vw", dtype, w_shape).unwrap();
    let tangent = jvp(&[&p], &[&x, &w], &[&vx, &vw]).unwrap().remove(0);
    let feeds: HashMap<String, Value> = [
        ("x".to_string(), random(dtype, &x_shape, 1)),
        ("w".to_string(), random(dtype, &w_shape, 2)),
        ("r".to_string(), random(dtype, &shape, 3)),
        ("vx".to_string(), random(dtype, &x_shape, 4)),
        ("vw".to_string(), random(dtype, &w_shape, 5)),
    ]
    .into();
    let outputs = [("penalty", &penalty), ("hx", &second[0]), ("hw", &second[1]), ("tangent", &tangent)];
    let what = format!("{dtype} x{x_shape:?} w{w_shape:?} {conv:?} {pool:?} max={max}");
    compare(on, &g, &outputs, &feeds, &what);
}

/// The higher-order cases every backend runs.
fn higher_cases(on: On) {
    for dtype in [DType::F32, DType::F64] {
        check_higher(on, dtype, [2, 3, 6, 6], [4, 3, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(2, 2, 0, true), true);
        check_higher(
            on,
            dtype,
            [1, 4, 7, 5],
            [4, 2, 3, 2],
            conv([2, 1], [1, 0], [1, 2], 2),
            pool(3, 1, 1, false),
            false,
        );
        check_higher(on, dtype, [1, 2, 7, 7], [2, 2, 2, 2], conv([1, 1], [0, 0], [1, 1], 1), pool(3, 2, 1, true), true);
    }
}

#[test]
fn second_derivatives_and_forward_mode_match_the_interpreter() {
    higher_cases(On::Cpu);
    higher_cases(On::Emulator(rhea_cuda::EMULATED_MEMORY));
}

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn second_derivatives_and_forward_mode_on_the_gpu_match_the_interpreter() {
    higher_cases(On::Gpu);
}

fn conv(stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2], groups: usize) -> Conv2d {
    Conv2d { stride, padding, dilation, groups }
}

fn pool(k: usize, s: usize, p: usize, count_include_pad: bool) -> Pool2d {
    Pool2d { kernel: [k, k], stride: [s, s], padding: [p, p], count_include_pad }
}

/// The cases every backend runs.
fn common_cases(on: On) {
    for dtype in [DType::F32, DType::F64] {
        // VGG's 3x3 same convolution and 2x2 max pool.
        check(on, dtype, [2, 3, 8, 8], [4, 3, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(2, 2, 0, true), true);
        // Strided, rectangular padding, dilated, grouped.
        check(on, dtype, [3, 4, 9, 7], [6, 2, 3, 2], conv([2, 1], [1, 0], [1, 2], 2), pool(3, 1, 1, false), false);
        check(on, dtype, [1, 2, 10, 10], [3, 2, 5, 5], conv([3, 3], [2, 2], [1, 1], 1), pool(2, 1, 1, true), true);
        // 1x1 convolution (the image is its own im2col matrix).
        check(on, dtype, [2, 5, 4, 6], [3, 5, 1, 1], conv([1, 1], [0, 0], [1, 1], 1), pool(2, 2, 1, true), false);
        // Kernels wider than the image, padding only.
        check(on, dtype, [1, 1, 2, 2], [2, 1, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(1, 1, 0, true), true);
        // Overlapping max pool windows with padding; stride 2 over an odd size.
        check(on, dtype, [2, 3, 7, 7], [2, 3, 2, 2], conv([1, 1], [0, 0], [1, 1], 1), pool(3, 2, 1, true), true);
    }
}

#[test]
fn convolution_and_pooling_with_gradients_match_the_interpreter() {
    let on = On::Cpu;
    common_cases(on);
    // 3x3 stride-1 convolutions with 16 channels or more go through
    // Winograd F(2x2, 3x3), forward and input gradient: odd output sizes
    // (clipped tiles), paddings 0 to 3 (3: input gradient by im2col).
    for dtype in [DType::F32, DType::F64] {
        check(on, dtype, [2, 16, 7, 9], [20, 16, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(1, 1, 0, true), true);
        check(on, dtype, [1, 17, 6, 5], [16, 17, 3, 3], conv([1, 1], [0, 2], [1, 1], 1), pool(2, 2, 0, true), false);
        check(on, dtype, [1, 16, 4, 4], [16, 16, 3, 3], conv([1, 1], [3, 3], [1, 1], 1), pool(2, 2, 0, true), true);
    }
    // Many tile rows: Winograd blocks run in parallel.
    large_image(on);
    // An im2col matrix over 32 MiB: built and multiplied in blocks of
    // output pixels, in parallel.
    check(on, DType::F32, [1, 64, 128, 130], [8, 64, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(2, 2, 0, true), true);
}

#[test]
fn convolution_and_pooling_with_gradients_on_the_emulated_gpu_match_the_interpreter() {
    common_cases(On::Emulator(rhea_cuda::EMULATED_MEMORY));
    // A device this small leaves room for the columns of a few images at
    // a time: the batch runs in chunks, the last one overlapping the one
    // before (20 KiB of columns: 2 of 5 images; grouped, 4 of 5).
    let small = On::Emulator(320 << 10);
    for groups in [1, 2] {
        let w = [6, 4 / groups, 3, 3];
        check(small, DType::F32, [5, 4, 8, 8], w, conv([1, 1], [1, 1], [1, 1], groups), pool(2, 2, 0, true), true);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn convolution_and_pooling_with_gradients_on_the_gpu_match_the_interpreter() {
    common_cases(On::Gpu);
    large_image(On::Gpu);
}

/// A 3x3 convolution of 16 channels over two 130x130 images, and a 2x2 pool.
fn large_image(on: On) {
    let (x, w) = ([2, 16, 130, 130], [16, 16, 3, 3]);
    check(on, DType::F32, x, w, conv([1, 1], [1, 1], [1, 1], 1), pool(2, 2, 0, true), true);
}
