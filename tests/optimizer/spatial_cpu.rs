//! Convolutions and pooling with their gradients on the CPU backend's
//! native kernels, against the interpreter, over strides, padding,
//! dilation, groups, 1x1 kernels and both float dtypes.

use std::collections::HashMap;

use rhea::opt::Mode;
use rhea::{Builder, Conv2d, DType, Pool2d, Value, grad, rng};

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

/// `sum(pool(conv(x, w)) * r)` and its gradients with respect to `x` and
/// `w`, on the interpreter and on the CPU backend.
fn check(dtype: DType, x_shape: [usize; 4], w_shape: [usize; 4], conv: Conv2d, pool: Pool2d, max: bool) {
    let g = Builder::new();
    let x = g.input("x", dtype, x_shape).unwrap();
    let w = g.input("w", dtype, w_shape).unwrap();
    let y = x.conv2d(&w, conv.clone()).unwrap();
    let p = if max { y.max_pool2d(pool.clone()) } else { y.avg_pool2d(pool.clone()) }.unwrap();
    let shape = p.shape().to_known().unwrap();
    let r = g.input("r", dtype, shape.as_slice()).unwrap();
    let cost = (&p * &r).sum_all().unwrap();
    let grads = grad(&cost, &[&x, &w]).unwrap();
    let mut graph = g.graph().clone();
    for (name, v) in [("y", &y), ("p", &p), ("gx", &grads[0]), ("gw", &grads[1])] {
        graph.set_output(name, v.id());
    }
    let feeds: HashMap<String, Value> = [
        ("x".to_string(), random(dtype, &x_shape, 1)),
        ("w".to_string(), random(dtype, &w_shape, 2)),
        ("r".to_string(), random(dtype, &shape, 3)),
    ]
    .into();
    let want = run_raw(&graph, &feeds);
    let got = run_cpu(&program(&graph, &options(Mode::Fast, &[])), &feeds).unwrap();
    let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
    for (name, (a, b)) in ["y", "p", "gx", "gw"].iter().zip(want.iter().zip(&got)) {
        if let Err(e) = close(a, b, tol) {
            panic!("{name} of {dtype} x{x_shape:?} w{w_shape:?} {conv:?} {pool:?} max={max}: {e}");
        }
    }
}

#[test]
fn convolution_and_pooling_with_gradients_match_the_interpreter() {
    let conv = |stride, padding, dilation, groups| Conv2d { stride, padding, dilation, groups };
    let pool =
        |k, s, p, include| Pool2d { kernel: [k, k], stride: [s, s], padding: [p, p], count_include_pad: include };
    for dtype in [DType::F32, DType::F64] {
        // VGG's 3x3 same convolution and 2x2 max pool.
        check(dtype, [2, 3, 8, 8], [4, 3, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(2, 2, 0, true), true);
        // Strided, rectangular padding, dilated, grouped.
        check(dtype, [3, 4, 9, 7], [6, 2, 3, 2], conv([2, 1], [1, 0], [1, 2], 2), pool(3, 1, 1, false), false);
        check(dtype, [1, 2, 10, 10], [3, 2, 5, 5], conv([3, 3], [2, 2], [1, 1], 1), pool(2, 1, 1, true), true);
        // 1x1 convolution (the image is its own im2col matrix).
        check(dtype, [2, 5, 4, 6], [3, 5, 1, 1], conv([1, 1], [0, 0], [1, 1], 1), pool(2, 2, 1, true), false);
        // Kernels wider than the image, padding only.
        check(dtype, [1, 1, 2, 2], [2, 1, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(1, 1, 0, true), true);
    }
    // 3x3 stride-1 convolutions with 16 channels or more go through
    // Winograd F(2x2, 3x3), forward and input gradient: odd output sizes
    // (clipped tiles), paddings 0 to 3 (3: input gradient by im2col).
    for dtype in [DType::F32, DType::F64] {
        check(dtype, [2, 16, 7, 9], [20, 16, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(1, 1, 0, true), true);
        check(dtype, [1, 17, 6, 5], [16, 17, 3, 3], conv([1, 1], [0, 2], [1, 1], 1), pool(2, 2, 0, true), false);
        check(dtype, [1, 16, 4, 4], [16, 16, 3, 3], conv([1, 1], [3, 3], [1, 1], 1), pool(2, 2, 0, true), true);
    }
    // Many tile rows: Winograd blocks run in parallel.
    check(DType::F32, [2, 16, 130, 130], [16, 16, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(2, 2, 0, true), true);
    // An im2col matrix over 32 MiB: built and multiplied in blocks of
    // output pixels, in parallel.
    check(DType::F32, [1, 64, 128, 130], [8, 64, 3, 3], conv([1, 1], [1, 1], [1, 1], 1), pool(2, 2, 0, true), true);
}
