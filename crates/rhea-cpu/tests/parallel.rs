//! Kernels large enough to be split across threads give the kernel-IR
//! evaluator's results: flat loops, transposed loop nests, and reductions
//! along a kept axis (split) or along axis 0 (not split).

use rhea_cpu::CpuKernels;
use rhea_graph::Value;
use rhea_kernel::{Bindings, Kernel, eval_kernel};

fn values(shape: &[usize]) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
    Value::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data).unwrap())
}

fn check(k: Kernel, inputs: &[Value], tol: f32) {
    let refs: Vec<&Value> = inputs.iter().collect();
    let want = eval_kernel(&k, &refs, &Bindings::new()).unwrap();
    let got = CpuKernels::compile(std::slice::from_ref(&k)).unwrap().run(0, &refs, &Bindings::new()).unwrap();
    for (w, g) in want.iter().zip(&got) {
        let (Value::F32(w), Value::F32(g)) = (w, g) else { panic!("f32 outputs") };
        assert_eq!(w.shape(), g.shape());
        for (i, (a, b)) in w.iter().zip(g.iter()).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + a.abs()), "element {i}: {a} vs {b}");
        }
    }
}

#[test]
fn split_flat_loops_cover_every_element() {
    let n = [301, 997];
    let k = Kernel::parse(
        "kernel [301,997]
           in0: f32[301,997]
           %0 = load in0 : f32
           %1 = tanh %0 : f32
           %2 = const 0.5 : f32
           %3 = mul %1, %2 : f32
           out0 = %3",
    )
    .unwrap();
    check(k, &[values(&n)], 1e-6);
}

#[test]
fn split_nests_and_reductions_match_the_evaluator() {
    // `reduce` is the header's reduction, if any.
    let transposed = |reduce: &str| {
        let out = if reduce.is_empty() { "%2" } else { "reduce(%2)" };
        Kernel::parse(&format!(
            "kernel [1000,700]{reduce}
               in0: f32[700,1000] view [1,0]
               in1: f32[700] view [_,0]
               %0 = load in0 : f32
               %1 = load in1 : f32
               %2 = add %0, %1 : f32
               out0 = {out}"
        ))
        .unwrap()
    };
    let inputs = [values(&[700, 1000]), values(&[700])];
    check(transposed(""), &inputs, 0.0);
    // Along axis 1: each thread owns whole rows of the output.
    check(transposed(" reduce sum axes=[1]"), &inputs, 1e-5);
    // Along axis 0: every row accumulates into the same outputs, so it stays on one thread.
    check(transposed(" reduce max axes=[0]"), &inputs, 0.0);
}
