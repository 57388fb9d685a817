//! Every differentiable op's gradient against finite differences
//! (`verify_grad`), on several shapes, with broadcasting; and its second
//! derivative, by checking the gradient graph's own gradient the same way.

use rhea_graph::{Builder, Conv2d, DType, Dim, Pool2d, SliceSpec, UnaryOp, Value, concat, grad, where_};
use rhea_interp::{VerifyOptions, verify_grad};

mod support;
use support::{Build, away, derivative, pos, pt};

/// Makes test points of a shape from a seed.
type Domain = fn(&[usize], u64) -> Value;

/// Checks each case's gradient and, unless `order` is 1, its second derivative.
fn run_cases_to(order: usize, cases: Vec<(&str, Build, Vec<Value>)>, opts: VerifyOptions) {
    let mut failures = Vec::new();
    let n = cases.len();
    for (name, build, points) in cases {
        if let Err(e) = verify_grad(&build, &points, opts) {
            failures.push(format!("{name}: {e}"));
        }
        if order > 1
            && let Err(e) = verify_grad(derivative(2, &build), &points, opts)
        {
            failures.push(format!("{name}, second derivative: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} of {n} gradient checks failed:\n{}", failures.len(), failures.join("\n"));
}

/// First and second derivatives.
fn run_cases(cases: Vec<(&str, Build, Vec<Value>)>, opts: VerifyOptions) {
    run_cases_to(2, cases, opts);
}

#[test]
fn unary_gradients() {
    use UnaryOp::*;
    let mut cases: Vec<(&str, Build, Vec<Value>)> = Vec::new();
    let domains: [(UnaryOp, Domain); 20] = [
        (Neg, away),
        (Abs, away),
        (Exp, away),
        (Log, pos),
        (Log1p, pos),
        (Expm1, away),
        (Sqrt, pos),
        (Rsqrt, pos),
        (Reciprocal, away),
        (Square, away),
        (Tanh, away),
        (Sigmoid, away),
        (Softplus, away),
        (Relu, away),
        (Sin, away),
        (Cos, away),
        // Piecewise constant: zero gradient away from the jumps.
        (Sign, away),
        (Floor, |s, seed| pt(s, 0.2, 0.8, true, seed)),
        (Ceil, |s, seed| pt(s, 0.2, 0.8, true, seed)),
        (Round, |s, seed| pt(s, 0.1, 0.4, true, seed)),
    ];
    let mut steps: Vec<(&str, Build, Vec<Value>)> = Vec::new();
    for (k, (fun, domain)) in domains.into_iter().enumerate() {
        for shape in [&[][..], &[4], &[2, 3]] {
            let case: (&str, Build, Vec<Value>) =
                (fun.name(), Box::new(move |_, v| v[0].map(fun)), vec![domain(shape, k as u64)]);
            if matches!(fun, Sign | Floor | Ceil | Round) { steps.push(case) } else { cases.push(case) }
        }
    }
    run_cases(cases, VerifyOptions::default());
    // Their gradient is a constant zero, which no second derivative depends on.
    run_cases_to(1, steps, VerifyOptions::default());
}

#[test]
fn binary_gradients_with_broadcasting() {
    let shapes: [(&[usize], &[usize]); 4] = [(&[2, 3], &[2, 3]), (&[2, 3], &[3]), (&[2, 1], &[1, 3]), (&[], &[2, 2])];
    let mut cases: Vec<(&str, Build, Vec<Value>)> = Vec::new();
    for (k, (sa, sb)) in shapes.into_iter().enumerate() {
        let k = k as u64 * 10;
        cases.push(("add", Box::new(|_, v| v[0].add(&v[1])), vec![away(sa, k), away(sb, k + 1)]));
        cases.push(("sub", Box::new(|_, v| v[0].sub(&v[1])), vec![away(sa, k + 2), away(sb, k + 3)]));
        cases.push(("mul", Box::new(|_, v| v[0].mul(&v[1])), vec![away(sa, k + 4), away(sb, k + 5)]));
        cases.push(("div", Box::new(|_, v| v[0].div(&v[1])), vec![away(sa, k + 6), away(sb, k + 7)]));
        cases.push(("pow", Box::new(|_, v| v[0].pow(&v[1])), vec![pos(sa, k + 8), away(sb, k + 9)]));
        // Distinct values, so no ties: a in [0.2, 1), b in [1.2, 2) or the reverse.
        cases.push((
            "maximum",
            Box::new(|_, v| v[0].maximum(&v[1])),
            vec![pt(sa, 0.2, 1.0, false, k), pt(sb, 1.2, 2.0, false, k + 1)],
        ));
        cases.push((
            "maximum_rev",
            Box::new(|_, v| v[0].maximum(&v[1])),
            vec![pt(sa, 1.2, 2.0, false, k), pt(sb, 0.2, 1.0, false, k + 1)],
        ));
        cases.push((
            "minimum",
            Box::new(|_, v| v[0].minimum(&v[1])),
            vec![pt(sa, 0.2, 1.0, false, k), pt(sb, 1.2, 2.0, false, k + 1)],
        ));
        cases.push((
            "minimum_rev",
            Box::new(|_, v| v[0].minimum(&v[1])),
            vec![pt(sa, 1.2, 2.0, false, k), pt(sb, 0.2, 1.0, false, k + 1)],
        ));
    }
    cases.push(("scalar_ops", Box::new(|_, v| Ok((2.0 - &v[0] * 3.0) / 4.0)), vec![away(&[3], 99)]));
    cases.push(("same_input_twice", Box::new(|_, v| v[0].mul(&v[0])?.add(&v[0])), vec![away(&[3], 98)]));
    cases.push((
        "where",
        Box::new(|g, v| {
            let c = g.constant(ndarray::array![[true, false, true]]);
            where_(&c, &v[0], &v[1])
        }),
        vec![away(&[2, 3], 97), away(&[2, 1], 96)],
    ));
    run_cases(cases, VerifyOptions::default());
    // Through f32 the finite difference needs a step far above f32's resolution.
    let cast: Build = Box::new(|_, v| v[0].cast(DType::F32)?.cast(DType::F64));
    let coarse = VerifyOptions { eps: 1e-2, atol: 1e-5, rtol: 1e-4, ..VerifyOptions::default() };
    run_cases(vec![("cast_round_trip", cast, vec![away(&[3], 95)])], coarse);
}

#[test]
fn reduction_gradients() {
    use rhea_graph::ReduceOp::*;
    let mut cases: Vec<(&str, Build, Vec<Value>)> = Vec::new();
    for (k, axes) in [vec![0isize], vec![1], vec![0, 2], vec![], vec![0, 1, 2]].into_iter().enumerate() {
        for keepdims in [false, true] {
            for fun in [Sum, Mean, Prod, Max, Min, LogSumExp] {
                let axes = axes.clone();
                let build: Build = Box::new(move |_, v| match fun {
                    Sum => v[0].sum(&axes, keepdims),
                    Mean => v[0].mean(&axes, keepdims),
                    Prod => v[0].prod(&axes, keepdims),
                    Max => v[0].max(&axes, keepdims),
                    Min => v[0].min(&axes, keepdims),
                    LogSumExp => v[0].logsumexp(&axes, keepdims),
                });
                cases.push((fun.name(), build, vec![away(&[2, 3, 2], k as u64)]));
            }
        }
    }
    run_cases(cases, VerifyOptions::default());
}

#[test]
fn prod_and_pow_gradients_at_zero_match_hand_values() {
    // prod([0, 2, 3]): the gradient at the zero is the product of the others.
    let g = Builder::new();
    let x = g.input("x", DType::F64, [3]).unwrap();
    let p = x.prod(&[0], false).unwrap();
    let dx = grad(&p, &[&x]).unwrap();
    let feeds = [("x".to_string(), Value::from(ndarray::array![0.0f64, 2.0, 3.0]))].into();
    let out = rhea_interp::run(&g.graph(), &feeds, &[dx[0].id()]).unwrap();
    assert_eq!(out[0], Value::from(ndarray::array![6.0f64, 0.0, 0.0]));
    let feeds = [("x".to_string(), Value::from(ndarray::array![0.0f64, 0.0, 3.0]))].into();
    let out = rhea_interp::run(&g.graph(), &feeds, &[dx[0].id()]).unwrap();
    assert_eq!(out[0], Value::from(ndarray::array![0.0f64, 0.0, 0.0]));
    // ... and finite differences agree at zeros, per group of a 2-d reduction.
    let pts = Value::from(ndarray::array![[0.0f64, 1.5, -2.0], [0.5, 0.0, 0.0], [1.0, 2.0, 3.0]]);
    verify_grad(|_, v| v[0].prod(&[1], false), &[pts], VerifyOptions::default()).unwrap();
    // pow's exponent gradient at base 0 is 0, not NaN.
    let g = Builder::new();
    let b = g.input("b", DType::F64, [2]).unwrap();
    let y = g.constant(ndarray::array![0.0f64, 2.0]).pow(&b).unwrap().sum_all().unwrap();
    let db = grad(&y, &[&b]).unwrap();
    let feeds = [("b".to_string(), Value::from(ndarray::array![2.0f64, 3.0]))].into();
    let out = rhea_interp::run(&g.graph(), &feeds, &[db[0].id()]).unwrap();
    assert_eq!(out[0], Value::from(ndarray::array![0.0f64, 8.0 * 2f64.ln()]));
    // floor's gradient is exactly zero.
    let g = Builder::new();
    let x = g.input("x", DType::F64, [2]).unwrap();
    let dx = grad(&x.floor().unwrap().sum_all().unwrap(), &[&x]).unwrap();
    let feeds = [("x".to_string(), Value::from(ndarray::array![0.3f64, -1.7]))].into();
    assert_eq!(
        rhea_interp::run(&g.graph(), &feeds, &[dx[0].id()]).unwrap()[0],
        Value::from(ndarray::array![0.0f64, 0.0])
    );
}

#[test]
fn dot_gradients_in_every_rank_combination() {
    let shapes: [(&[usize], &[usize]); 6] = [
        (&[3], &[3]),
        (&[2, 3], &[3]),
        (&[3], &[3, 4]),
        (&[2, 3], &[3, 4]),
        (&[2, 1, 2, 3], &[4, 3, 2]),
        (&[2, 2, 3], &[3]),
    ];
    let cases = shapes
        .into_iter()
        .enumerate()
        .map(|(k, (sa, sb))| {
            let b: Build = Box::new(|_, v| v[0].dot(&v[1]));
            ("dot", b, vec![away(sa, k as u64), away(sb, k as u64 + 50)])
        })
        .collect();
    run_cases(cases, VerifyOptions::default());
}

#[test]
fn movement_gradients() {
    let s = |start, stop, step| SliceSpec::new(start, stop, step);
    let cases: Vec<(&str, Build, Vec<Value>)> = vec![
        ("reshape", Box::new(|_, v| v[0].reshape(&[3, -1])), vec![away(&[2, 3, 2], 1)]),
        ("flatten", Box::new(|_, v| v[0].flatten(1)), vec![away(&[2, 3, 2], 2)]),
        ("dimshuffle", Box::new(|_, v| v[0].dimshuffle(&[Some(2), None, Some(0)])), vec![away(&[2, 1, 3], 3)]),
        ("transpose", Box::new(|_, v| v[0].transpose()), vec![away(&[2, 3, 4], 4)]),
        ("broadcast_to", Box::new(|_, v| v[0].broadcast_to([2, 4, 3])), vec![away(&[4, 1], 5)]),
        ("concat", Box::new(|_, v| concat(&[&v[0], &v[1], &v[0]], 1)), vec![away(&[2, 2], 6), away(&[2, 3], 7)]),
        ("stack", Box::new(|_, v| rhea_graph::stack(&[&v[0], &v[1]], 0)), vec![away(&[3], 8), away(&[3], 9)]),
        ("slice_range", Box::new(move |_, v| v[0].slice(&[s(Some(1), Some(4), 1)])), vec![away(&[6, 2], 10)]),
        (
            "slice_neg_step",
            Box::new(move |_, v| v[0].slice(&[s(None, None, -1), s(Some(-1), Some(0), -2)])),
            vec![away(&[3, 6], 11)],
        ),
        ("slice_step3", Box::new(move |_, v| v[0].slice(&[s(Some(1), None, 3)])), vec![away(&[8], 12)]),
        (
            "take_axis0",
            Box::new(|g, v| v[0].take(&g.constant(ndarray::array![2i64, -1, 0, 2]), 0)),
            vec![away(&[4, 3], 14)],
        ),
        (
            "take_axis1_2d_index",
            Box::new(|g, v| v[0].take(&g.constant(ndarray::array![[1i32, 0], [1, 1]]), 1)),
            vec![away(&[2, 3, 2], 15)],
        ),
        ("take_scalar_index", Box::new(|g, v| v[0].take(&g.constant(1i64), 1)), vec![away(&[2, 3], 16)]),
        ("pad", Box::new(|_, v| v[0].pad(&[(1, 0), (2, 1)], 7.0)), vec![away(&[2, 3], 17)]),
        ("squeeze_expand", Box::new(|_, v| v[0].squeeze(&[])?.expand_dims(0)), vec![away(&[3, 1], 18)]),
    ];
    run_cases(cases, VerifyOptions::default());
    // An empty slice has a constant (zero) gradient: nothing to differentiate again.
    let empty: Build = Box::new(move |_, v| v[0].slice(&[s(Some(3), Some(1), 1)]));
    run_cases_to(1, vec![("slice_empty", empty, vec![away(&[4], 13)])], VerifyOptions::default());
}

#[test]
fn nn_gradients() {
    let conv = |stride, padding, dilation, groups| Conv2d { stride, padding, dilation, groups };
    let pool =
        |k, s, p, count_include_pad| Pool2d { kernel: [k, k], stride: [s, s], padding: [p, p], count_include_pad };
    let cases: Vec<(&str, Build, Vec<Value>)> = vec![
        ("softmax", Box::new(|_, v| v[0].softmax(1)), vec![away(&[2, 4], 1)]),
        ("softmax_axis0", Box::new(|_, v| v[0].softmax(0)), vec![away(&[3, 2], 2)]),
        ("log_softmax", Box::new(|_, v| v[0].log_softmax(-1)), vec![away(&[2, 4], 3)]),
        (
            "conv2d",
            Box::new(move |_, v| v[0].conv2d(&v[1], conv([1, 1], [0, 0], [1, 1], 1))),
            vec![away(&[2, 2, 4, 4], 4), away(&[3, 2, 3, 3], 5)],
        ),
        (
            "conv2d_stride_pad",
            Box::new(move |_, v| v[0].conv2d(&v[1], conv([2, 1], [1, 2], [1, 1], 1))),
            vec![away(&[1, 2, 5, 4], 6), away(&[2, 2, 3, 2], 7)],
        ),
        (
            "conv2d_dilation_groups",
            Box::new(move |_, v| v[0].conv2d(&v[1], conv([1, 1], [1, 1], [2, 1], 2))),
            vec![away(&[1, 4, 5, 4], 8), away(&[2, 2, 2, 3], 9)],
        ),
        ("max_pool2d", Box::new(move |_, v| v[0].max_pool2d(pool(2, 2, 0, false))), vec![away(&[1, 2, 4, 4], 10)]),
        (
            "max_pool2d_overlap_pad",
            Box::new(move |_, v| v[0].max_pool2d(pool(3, 2, 1, false))),
            vec![away(&[2, 1, 5, 5], 11)],
        ),
        ("avg_pool2d", Box::new(move |_, v| v[0].avg_pool2d(pool(2, 2, 0, true))), vec![away(&[1, 2, 4, 4], 12)]),
        (
            "avg_pool2d_pad_incl",
            Box::new(move |_, v| v[0].avg_pool2d(pool(3, 2, 1, true))),
            vec![away(&[1, 1, 5, 5], 13)],
        ),
        (
            "avg_pool2d_pad_excl",
            Box::new(move |_, v| v[0].avg_pool2d(pool(3, 2, 1, false))),
            vec![away(&[1, 1, 5, 5], 14)],
        ),
        ("dropout", Box::new(|_, v| v[0].dropout(0.4, 3, true)), vec![away(&[4, 5], 15)]),
        (
            "dropout_keyed",
            Box::new(|g, v| v[0].dropout_keyed(0.4, 3, true, &g.constant(7i64))),
            vec![away(&[4, 5], 16)],
        ),
        (
            "mlp",
            Box::new(|_, v| {
                let h = v[0].dot(&v[1])?.add(&v[2])?.relu()?;
                h.dot(&v[3])?.sigmoid()
            }),
            vec![away(&[3, 4], 17), away(&[4, 5], 18), away(&[5], 19), away(&[5, 1], 20)],
        ),
    ];
    run_cases(cases, VerifyOptions::default());
}

#[test]
fn mean_over_a_symbolic_dim_divides_by_the_bound_size() {
    let g = Builder::new();
    let b = g.dim("batch").unwrap();
    let x = g.input("x", DType::F64, [b, Dim::Known(2)]).unwrap();
    let cost = x.mean_all().unwrap();
    let dx = grad(&cost, &[&x]).unwrap();
    for n in [1usize, 4] {
        let feeds = [("x".to_string(), Value::from(ndarray::Array2::<f64>::ones((n, 2))))].into();
        let out = rhea_interp::run(&g.graph(), &feeds, &[dx[0].id()]).unwrap();
        assert!(out[0].to_f64_vec().iter().all(|&v| (v - 1.0 / (2 * n) as f64).abs() < 1e-15), "{out:?}");
    }
}

#[test]
fn verify_grad_catches_a_wrong_gradient() {
    // floor has a zero gradient; at a jump the numeric one is huge.
    let err = verify_grad(|_, v| v[0].floor(), &[Value::from(ndarray::array![1.0f64])], VerifyOptions::default());
    assert!(err.unwrap_err().to_string().contains("symbolic 0e0"));
    let err = verify_grad(|_, v| v[0].exp(), &[Value::from(ndarray::array![1.0f32])], VerifyOptions::default());
    assert!(err.unwrap_err().to_string().contains("must be f64"));
}
