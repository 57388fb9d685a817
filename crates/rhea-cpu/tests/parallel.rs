//! Kernels large enough to be split across threads give the kernel-IR
//! evaluator's results: flat loops, transposed loop nests, and reductions
//! along a kept axis (split) or along axis 0 (not split).

use rhea_cpu::CpuKernels;
use rhea_graph::{BinaryOp, DType, F64, Shape, UnaryOp, Value};
use rhea_kernel::{Bindings, Combine, Const, Inst, Kernel, KernelInput, KernelOutput, Reduction, eval_kernel};

fn input(shape: &[usize], axes: Vec<Option<usize>>) -> KernelInput {
    KernelInput { dtype: DType::F32, shape: Shape::known(shape), axes }
}

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
    let k = Kernel {
        domain: Shape::known(&n),
        inputs: vec![input(&n, vec![Some(0), Some(1)])],
        body: vec![
            (Inst::Load { input: 0 }, DType::F32),
            (Inst::Unary { op: UnaryOp::Tanh, x: 0 }, DType::F32),
            (Inst::Const { value: Const::Float(F64(0.5)) }, DType::F32),
            (Inst::Binary { op: BinaryOp::Mul, a: 1, b: 2 }, DType::F32),
        ],
        outputs: vec![KernelOutput { value: 3, reduced: false }],
        reduce: None,
    };
    check(k, &[values(&n)], 1e-6);
}

#[test]
fn split_nests_and_reductions_match_the_evaluator() {
    let transposed = |reduce: Option<Reduction>| Kernel {
        domain: Shape::known(&[1000, 700]),
        inputs: vec![input(&[700, 1000], vec![Some(1), Some(0)]), input(&[700], vec![None, Some(0)])],
        body: vec![
            (Inst::Load { input: 0 }, DType::F32),
            (Inst::Load { input: 1 }, DType::F32),
            (Inst::Binary { op: BinaryOp::Add, a: 0, b: 1 }, DType::F32),
        ],
        outputs: vec![KernelOutput { value: 2, reduced: reduce.is_some() }],
        reduce,
    };
    let inputs = [values(&[700, 1000]), values(&[700])];
    check(transposed(None), &inputs, 0.0);
    // Along axis 1: each thread owns whole rows of the output.
    let sum = Reduction { combine: Combine::Sum, axes: vec![1], keepdims: false };
    check(transposed(Some(sum)), &inputs, 1e-5);
    // Along axis 0: every row accumulates into the same outputs, so it stays on one thread.
    let max = Reduction { combine: Combine::Max, axes: vec![0], keepdims: false };
    check(transposed(Some(max)), &inputs, 0.0);
}
