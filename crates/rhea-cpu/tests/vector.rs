//! Loop nests whose innermost axis runs on vectors give the kernel-IR
//! evaluator's results: broadcast rows and columns, a reduction over the
//! outer axis (vector accumulators), tails shorter than a vector, and an
//! input whose innermost size turns out to be 1 when the kernel runs (the
//! scalar loop must take over).

use rhea_cpu::CpuKernels;
use rhea_graph::{Dim, Symbol, Value};
use rhea_kernel::{Bindings, Kernel, eval_kernel};

fn values(shape: &[usize], stream: usize) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| (((i + stream) * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
    Value::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data).unwrap())
}

fn check(k: &Kernel, inputs: &[Value], bindings: &Bindings, tol: f32) {
    let refs: Vec<&Value> = inputs.iter().collect();
    let want = eval_kernel(k, &refs, bindings).unwrap();
    let cpu = CpuKernels::compile(std::slice::from_ref(k)).unwrap();
    let got = cpu.run(0, &refs, bindings).unwrap();
    for (w, g) in want.iter().zip(&got) {
        let (Value::F32(w), Value::F32(g)) = (w, g) else { panic!("f32 outputs") };
        assert_eq!(w.shape(), g.shape());
        for (i, (a, b)) in w.iter().zip(g.iter()).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + a.abs()), "element {i}: {a} vs {b}");
        }
    }
}

/// `tanh(a + row) * col`, and its sum over axis 0, over `[rows, cols]`.
fn kernel(rows: Dim, cols: Dim, col_cols: Dim, reduce: bool) -> Kernel {
    let (header, out) = if reduce { (" reduce sum axes=[0]", "reduce(%5)") } else { ("", "%5") };
    Kernel::parse(&format!(
        "kernel [{rows},{cols}]{header}
           in0: f32[{rows},{cols}]
           in1: f32[{cols}] view [_,0]
           in2: f32[{rows},{col_cols}]
           %0 = load in0 : f32
           %1 = load in1 : f32
           %2 = load in2 : f32
           %3 = add %0, %1 : f32
           %4 = tanh %3 : f32
           %5 = mul %4, %2 : f32
           out0 = {out}"
    ))
    .unwrap()
}

#[test]
fn broadcast_kernels_and_outer_reductions_match_the_evaluator() {
    let none = Bindings::new();
    for (rows, cols) in [(5, 37), (3, 4), (2, 3), (7, 64)] {
        for reduce in [false, true] {
            let (r, c) = (Dim::Known(rows), Dim::Known(cols));
            // A column broadcast from a [rows, 1] input (splat).
            let k = kernel(r, c, Dim::Known(1), reduce);
            // Rows shorter than a vector stay scalar (no vector code at all).
            assert_eq!(rhea_cpu::inner_vector_dtype(&k).is_some(), cols >= 4);
            check(&k, &[values(&[rows, cols], 0), values(&[cols], 1), values(&[rows, 1], 2)], &none, 1e-5);
            // A third input read contiguously along the innermost axis.
            let k = kernel(r, c, c, reduce);
            check(&k, &[values(&[rows, cols], 0), values(&[cols], 1), values(&[rows, cols], 2)], &none, 1e-5);
        }
    }
    // The third input's last size is symbolic: 37 runs on vectors, 1 must not.
    let n = Dim::Sym(Symbol::new("vector_test_n").unwrap());
    let k = kernel(Dim::Known(5), Dim::Known(37), n, false);
    for size in [37, 1] {
        let b: Bindings = [(Symbol::new("vector_test_n").unwrap(), size)].into();
        check(&k, &[values(&[5, 37], 0), values(&[37], 1), values(&[5, size], 2)], &b, 1e-5);
    }
}

/// `x * w` (w a row broadcast over the rows) with every combine over the
/// innermost axis, or over both, kept as a size-1 axis or not, plus the
/// elementwise product as a second output: rows combine in vector
/// registers, then across lanes, then with the scalar tail.
#[test]
fn innermost_reductions_run_on_vectors_and_match_the_evaluator() {
    let none = Bindings::new();
    for combine in ["sum", "mean", "max", "min", "prod"] {
        for axes in ["[1]", "[0,1]"] {
            for (rows, cols) in [(3, 1), (2, 3), (4, 4), (5, 37), (2, 64)] {
                let keepdims = if axes == "[1]" { " keepdims" } else { "" };
                let k = Kernel::parse(&format!(
                    "kernel [{rows},{cols}] reduce {combine} axes={axes}{keepdims}
                       in0: f32[{rows},{cols}]
                       in1: f32[{cols}] view [_,0]
                       %0 = load in0 : f32
                       %1 = load in1 : f32
                       %2 = mul %0, %1 : f32
                       out0 = reduce(%2)
                       out1 = %2"
                ))
                .unwrap();
                assert_eq!(rhea_cpu::inner_reduce_vector_dtype(&k).is_some(), cols >= 4);
                // Products of many values need values near 1 to stay finite.
                let scale = |v: Value| match (combine, v) {
                    ("prod", Value::F32(a)) => Value::F32(a.mapv(|x| 1.0 + x / 16.0)),
                    (_, v) => v,
                };
                let inputs = [scale(values(&[rows, cols], 3)), scale(values(&[cols], 4))];
                check(&k, &inputs, &none, 1e-5);
            }
        }
    }
    // NaN wins a max wherever it sits, in a vector or in the tail.
    let k = Kernel::parse(
        "kernel [3,9] reduce max axes=[1]
           in0: f32[3,9]
           %0 = load in0 : f32
           out0 = reduce(%0)",
    )
    .unwrap();
    let mut x = vec![0.5f32; 27];
    x[2] = f32::NAN; // row 0, inside the first vector
    x[9 + 8] = f32::NAN; // row 1, in the scalar tail
    let x = Value::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[3, 9]), x).unwrap());
    let cpu = CpuKernels::compile(std::slice::from_ref(&k)).unwrap();
    let got = cpu.run(0, &[&x], &none).unwrap().remove(0).to_f64_vec();
    assert!(got[0].is_nan() && got[1].is_nan() && got[2] == 0.5, "{got:?}");
}
