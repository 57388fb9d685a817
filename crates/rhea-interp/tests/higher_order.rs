//! Forward mode, Hessian-vector products, third derivatives through
//! pooling, and the gradient options (`stop_gradient`, `consider_constant`,
//! `known_grads`), against finite differences and closed forms.

use std::collections::HashMap;

use ndarray::array;
use rhea_graph::{
    Builder, Conv2d, DType, Disconnected, GradOptions, GraphError, Pool2d, Shape, Value, Var, grad, grad_opts,
    hessian_vector_product, jvp, lop,
};
use rhea_interp::{VerifyOptions, run, verify_grad};

#[allow(dead_code, reason = "each test binary uses a part of it")]
mod support;
use support::{Build, away, derivative};

fn conv(stride: [usize; 2], padding: [usize; 2]) -> Conv2d {
    Conv2d { stride, padding, ..Conv2d::default() }
}

fn pool(k: usize, s: usize, p: usize) -> Pool2d {
    Pool2d { kernel: [k, k], stride: [s, s], padding: [p, p], count_include_pad: false }
}

/// Inputs `x0, x1, ...` of the points' shapes, in a new builder.
fn inputs(points: &[Value]) -> (Builder, Vec<Var>) {
    let g = Builder::new();
    let vars = inputs_in(&g, "x", points);
    (g, vars)
}

/// Inputs `{prefix}0, {prefix}1, ...` of the values' shapes.
fn inputs_in(g: &Builder, prefix: &str, values: &[Value]) -> Vec<Var> {
    values
        .iter()
        .enumerate()
        .map(|(i, p)| g.input(&format!("{prefix}{i}"), DType::F64, Shape::known(p.shape())).unwrap())
        .collect()
}

fn named(prefix: &str, values: &[Value]) -> HashMap<String, Value> {
    values.iter().enumerate().map(|(i, v)| (format!("{prefix}{i}"), v.clone())).collect()
}

fn eval(g: &Builder, feeds: &HashMap<String, Value>, vars: &[&Var]) -> Vec<Vec<f64>> {
    let ids: Vec<_> = vars.iter().map(|v| v.id()).collect();
    run(&g.graph(), feeds, &ids).unwrap().iter().map(Value::to_f64_vec).collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: element {i}: {a} vs {b}");
    }
}

/// `points` moved by `h` times `dirs`.
fn moved(points: &[Value], dirs: &[Value], h: f64) -> Vec<Value> {
    points
        .iter()
        .zip(dirs)
        .map(|(p, d)| {
            let data: Vec<f64> = p.to_f64_vec().iter().zip(d.to_f64_vec()).map(|(x, v)| x + h * v).collect();
            Value::from_f64(DType::F64, p.shape(), &data).unwrap()
        })
        .collect()
}

/// The JVP of `build` at `points` along `dirs` against the central
/// difference of `build` along them, and against the Jacobian's transpose:
/// `<u, J v> = <J^T u, v>` for a random `u`.
fn check_jvp(name: &str, build: &Build, points: &[Value], dirs: &[Value]) {
    let (g, xs) = inputs(points);
    let vs = inputs_in(&g, "v", dirs);
    let y = build(&g, &xs).unwrap();
    let xr: Vec<&Var> = xs.iter().collect();
    let vr: Vec<&Var> = vs.iter().collect();
    let jv = jvp(&[&y], &xr, &vr).unwrap().remove(0);
    assert_eq!(jv.ty(), y.ty(), "{name}: the tangent has the output's type");
    let u = g.uniform(y.shape(), DType::F64, -1.0, 1.0, 7).unwrap();
    let jtu = lop(&[&y], &xr, &[&u]).unwrap();
    let lhs = (&u * &jv).sum_all().unwrap();
    let mut rhs = g.scalar(0.0, DType::F64);
    for (a, v) in jtu.iter().zip(&vs) {
        rhs = &rhs + &(a * v).sum_all().unwrap();
    }
    let graph = g.graph();
    assert!(
        graph.inputs().iter().all(|&i| !graph.leaf_name(i).unwrap_or_default().starts_with("jvp")),
        "{name}: a scratch cotangent is left in the graph"
    );
    drop(graph);
    let mut feeds = named("x", points);
    feeds.extend(named("v", dirs));
    let got = eval(&g, &feeds, &[&jv, &lhs, &rhs]);
    let h = 1e-6;
    let (gp, yp) = inputs(points);
    let yb = build(&gp, &yp).unwrap();
    let up = eval(&gp, &named("x", &moved(points, dirs, h)), &[&yb]).remove(0);
    let down = eval(&gp, &named("x", &moved(points, dirs, -h)), &[&yb]).remove(0);
    let numeric: Vec<f64> = up.iter().zip(&down).map(|(a, b)| (a - b) / (2.0 * h)).collect();
    assert_close(&format!("{name}: jvp vs finite differences"), &got[0], &numeric, 1e-6);
    assert_close(&format!("{name}: <u, Jv> vs <J^T u, v>"), &got[1], &got[2], 1e-10);
}

#[test]
fn jvp_matches_finite_differences_and_the_transposed_vjp() {
    let cases: Vec<(&str, Build, Vec<Value>)> = vec![
        ("sin", Box::new(|_, v| v[0].sin()), vec![away(&[4], 1)]),
        ("mul_broadcast", Box::new(|_, v| v[0].mul(&v[1])), vec![away(&[2, 3], 2), away(&[3], 3)]),
        ("dot", Box::new(|_, v| v[0].dot(&v[1])?.tanh()), vec![away(&[2, 3], 4), away(&[3, 4], 5)]),
        ("softmax", Box::new(|_, v| v[0].softmax(1)), vec![away(&[2, 5], 6)]),
        (
            "reductions",
            Box::new(|_, v| v[0].max(&[1], false)?.add(&v[0].logsumexp(&[1], false)?)),
            vec![away(&[3, 4], 7)],
        ),
        (
            "conv2d",
            Box::new(|_, v| v[0].conv2d(&v[1], conv([2, 1], [1, 1]))),
            vec![away(&[1, 2, 5, 4], 8), away(&[3, 2, 3, 3], 9)],
        ),
        ("max_pool2d", Box::new(|_, v| v[0].max_pool2d(pool(3, 2, 1))), vec![away(&[1, 2, 5, 5], 10)]),
        ("avg_pool2d", Box::new(|_, v| v[0].avg_pool2d(pool(2, 2, 1))), vec![away(&[1, 1, 4, 4], 11)]),
        ("slice_take", Box::new(|g, v| v[0].take(&g.constant(array![2i64, 0, 2]), 1)?.exp()), vec![away(&[2, 3], 12)]),
        (
            "scan",
            Box::new(|g, v| {
                let args = rhea_graph::ScanArgs {
                    sequences: vec![v[0].clone()],
                    states: vec![rhea_graph::State::new(&v[1])],
                    ..Default::default()
                };
                let out = g.scan(args, |s| {
                    let h = s.state(0)?.mul(&s.seq(0)?)?.tanh()?;
                    Ok(rhea_graph::StepOut {
                        states: vec![h.clone()],
                        outputs: vec![h.sum_all()?],
                        until: None,
                        updates: vec![],
                    })
                })?;
                rhea_graph::concat(&[&out.states[0].reshape(&[-1])?, &out.outputs[0]], 0)
            }),
            vec![away(&[4, 3], 13), away(&[3], 14)],
        ),
    ];
    for (name, build, points) in cases {
        let dirs: Vec<Value> = points.iter().enumerate().map(|(i, p)| away(p.shape(), 100 + i as u64)).collect();
        check_jvp(name, &build, &points, &dirs);
    }
}

#[test]
fn jvp_of_closed_forms() {
    // d/dt sin(x + t v) = cos(x) v, exactly the graph's values.
    let g = Builder::new();
    let x = g.input("x", DType::F64, [3]).unwrap();
    let v = g.input("v", DType::F64, [3]).unwrap();
    let t = jvp(&[&x.sin().unwrap()], &[&x], &[&v]).unwrap().remove(0);
    let feeds = HashMap::from([
        ("x".to_string(), Value::from(array![0.0f64, 1.0, -2.0])),
        ("v".to_string(), Value::from(array![1.0f64, 2.0, 3.0])),
    ]);
    let want: Vec<f64> = [(0.0f64, 1.0), (1.0, 2.0), (-2.0, 3.0)].iter().map(|(x, v)| x.cos() * v).collect();
    assert_close("cos(x) v", &eval(&g, &feeds, &[&t])[0], &want, 1e-15);
    // A linear map's JVP is the map: (A + dA) x -> dA x + A dx.
    let a = g.input("a", DType::F64, [2, 3]).unwrap();
    let da = g.input("da", DType::F64, [2, 3]).unwrap();
    let y = a.dot(&x).unwrap();
    let t = jvp(&[&y], &[&a, &x], &[&da, &v]).unwrap().remove(0);
    let mut feeds = feeds;
    feeds.insert("a".into(), Value::from(array![[1.0f64, 0.0, 2.0], [0.0, 1.0, 0.0]]));
    feeds.insert("da".into(), Value::from(array![[0.0f64, 1.0, 0.0], [1.0, 0.0, 0.0]]));
    // da x = [1, 0]; a v = [7, 2].
    assert_eq!(eval(&g, &feeds, &[&t])[0], vec![8.0, 2.0]);
}

#[test]
fn hessian_vector_products_match_closed_forms_and_finite_differences() {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [3]).unwrap();
    let v = g.input("v", DType::F64, [3]).unwrap();
    let hv = hessian_vector_product(&x.square().unwrap().sum_all().unwrap(), &[&x], &[&v]).unwrap();
    let feeds = HashMap::from([
        ("x".to_string(), Value::from(array![0.5f64, -1.0, 2.0])),
        ("v".to_string(), Value::from(array![1.0f64, 2.0, -3.0])),
    ]);
    assert_eq!(eval(&g, &feeds, &[&hv[0]])[0], vec![2.0, 4.0, -6.0]);
    // A small convolutional network: H v against the central difference of the gradient along v.
    let build = |_: &Builder, v: &[Var]| -> Result<Var, GraphError> {
        let h = v[0].conv2d(&v[1], conv([1, 1], [1, 1]))?.tanh()?.max_pool2d(pool(2, 2, 0))?;
        h.square()?.sum_all()
    };
    let points = [away(&[1, 2, 4, 4], 20), away(&[2, 2, 3, 3], 21)];
    let dirs = [away(&[1, 2, 4, 4], 22), away(&[2, 2, 3, 3], 23)];
    let (g, xs) = inputs(&points);
    let vs = inputs_in(&g, "v", &dirs);
    let cost = build(&g, &xs).unwrap();
    let hv = hessian_vector_product(&cost, &[&xs[0], &xs[1]], &[&vs[0], &vs[1]]).unwrap();
    let grads = grad(&cost, &[&xs[0], &xs[1]]).unwrap();
    let mut feeds = named("x", &points);
    feeds.extend(named("v", &dirs));
    let got = eval(&g, &feeds, &[&hv[0], &hv[1]]);
    let h = 1e-5;
    let mut up_feeds = named("x", &moved(&points, &dirs, h));
    up_feeds.extend(named("v", &dirs));
    let mut down_feeds = named("x", &moved(&points, &dirs, -h));
    down_feeds.extend(named("v", &dirs));
    let up = eval(&g, &up_feeds, &[&grads[0], &grads[1]]);
    let down = eval(&g, &down_feeds, &[&grads[0], &grads[1]]);
    for k in 0..2 {
        let numeric: Vec<f64> = up[k].iter().zip(&down[k]).map(|(a, b)| (a - b) / (2.0 * h)).collect();
        assert_close(&format!("H v, input {k}"), &got[k], &numeric, 1e-5);
    }
}

#[test]
fn third_derivatives_through_convolution_and_pooling() {
    // The second derivative of max_pool2d_grad is max_pool2d_gather's gradient, and so on.
    let cases: Vec<(&str, Build, Vec<Value>)> = vec![
        (
            "conv2d",
            Box::new(|_, v| v[0].conv2d(&v[1], conv([2, 1], [1, 0]))),
            vec![away(&[1, 2, 4, 3], 30), away(&[2, 2, 2, 2], 31)],
        ),
        ("max_pool2d", Box::new(|_, v| v[0].max_pool2d(pool(2, 1, 0))), vec![away(&[1, 1, 4, 4], 32)]),
        ("avg_pool2d", Box::new(|_, v| v[0].avg_pool2d(pool(3, 2, 1))), vec![away(&[1, 2, 5, 5], 33)]),
    ];
    let mut failures = Vec::new();
    for (name, build, points) in cases {
        if let Err(e) =
            verify_grad(derivative(3, &build), &points, VerifyOptions { atol: 1e-5, ..VerifyOptions::default() })
        {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn stop_gradient_and_consider_constant_cut_the_flow() {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [2]).unwrap();
    // cost = sum(x * stop(x)): the value of x^2, the gradient of x * c, which is x.
    let cost = (&x * &x.stop_gradient().unwrap()).sum_all().unwrap();
    let dx = grad(&cost, &[&x]).unwrap();
    let feeds = HashMap::from([("x".to_string(), Value::from(array![3.0f64, -2.0]))]);
    assert_eq!(eval(&g, &feeds, &[&cost, &dx[0]]), vec![vec![13.0], vec![3.0, -2.0]]);
    // Only through a stopped path: the cost still depends on x, with a zero gradient (as in JAX and
    // Theano's consider_constant); a variable the cost does not use at all is an error unless asked.
    let stopped = x.stop_gradient().unwrap().exp().unwrap().sum_all().unwrap();
    let zero = grad(&stopped, &[&x]).unwrap();
    assert_eq!(eval(&g, &feeds, &[&zero[0]]), vec![vec![0.0, 0.0]]);
    let unused = g.input("unused", DType::F64, [2]).unwrap();
    let err = grad(&stopped, &[&unused]).unwrap_err().to_string();
    assert!(err.contains("does not depend on \"unused\""), "{err}");
    let zero = rhea_graph::grad_with(&stopped, &[&unused], Disconnected::Zero).unwrap();
    assert_eq!(eval(&g, &feeds, &[&zero[0]]), vec![vec![0.0, 0.0]]);
    // consider_constant: h = x^2 still gets its gradient; nothing flows through it to x.
    let h = x.square().unwrap();
    let cost = (&h + &x).sum_all().unwrap();
    let opts = GradOptions { consider_constant: &[&h], ..Default::default() };
    let d = grad_opts(Some(&cost), &[&x, &h], &opts).unwrap();
    assert_eq!(eval(&g, &feeds, &[&d[0], &d[1]]), vec![vec![1.0, 1.0], vec![1.0, 1.0]]);
    let full = grad(&cost, &[&x]).unwrap();
    assert_eq!(eval(&g, &feeds, &[&full[0]]), vec![vec![7.0, -3.0]]);
}

#[test]
fn known_grads_continue_a_backward_pass() {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [3]).unwrap();
    let w = g.input("w", DType::F64, [3]).unwrap();
    let h = (&x * &w).tanh().unwrap();
    let cost = h.square().unwrap().sum_all().unwrap().log().unwrap();
    let whole = grad(&cost, &[&x, &w]).unwrap();
    // The gradient at h, handed in as known: the same gradients, without the cost.
    let gh = grad(&cost, &[&h]).unwrap().remove(0);
    let split = grad_opts(None, &[&x, &w], &GradOptions { known_grads: &[(&h, &gh)], ..Default::default() }).unwrap();
    let feeds = HashMap::from([
        ("x".to_string(), Value::from(array![0.5f64, -1.0, 2.0])),
        ("w".to_string(), Value::from(array![1.5f64, 0.3, -0.7])),
    ]);
    let vals = eval(&g, &feeds, &[&whole[0], &whole[1], &split[0], &split[1]]);
    assert_close("x", &vals[2], &vals[0], 1e-14);
    assert_close("w", &vals[3], &vals[1], 1e-14);
    // With a cost as well, the known gradient is added to the cost's.
    let both = grad_opts(Some(&cost), &[&x], &GradOptions { known_grads: &[(&h, &gh)], ..Default::default() }).unwrap();
    let doubled: Vec<f64> = vals[0].iter().map(|v| 2.0 * v).collect();
    assert_close("cost + known", &eval(&g, &feeds, &[&both[0]])[0], &doubled, 1e-14);
}

#[test]
fn bad_requests_are_clear_errors() {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [3]).unwrap();
    let v2 = g.input("v2", DType::F64, [2]).unwrap();
    let vf = g.input("vf", DType::F32, [3]).unwrap();
    let y = x.exp().unwrap();
    let err = |r: Result<Vec<Var>, GraphError>| r.unwrap_err().to_string();
    let e = err(jvp(&[&y], &[&x], &[&v2]));
    assert!(e.contains("must have the variable's type f64[3]") && e.contains("f64[2]"), "{e}");
    let e = err(jvp(&[&y], &[&x], &[]));
    assert!(e.contains("1 variables but 0 vectors"), "{e}");
    let e = err(hessian_vector_product(&y.sum_all().unwrap(), &[&x], &[&vf]));
    assert!(e.contains("f32[3]"), "{e}");
    let e = err(hessian_vector_product(&y, &[&x], &[&x]));
    assert!(e.contains("scalar"), "{e}");
    let e = err(lop(&[&y], &[&x], &[&v2]));
    assert!(e.contains("known_grads") && e.contains("f64[2]"), "{e}");
    let e = err(grad_opts(None, &[&x], &GradOptions::default()));
    assert!(e.contains("needs a cost or known_grads"), "{e}");
    let n = g.input("n", DType::I64, [3]).unwrap();
    let e = err(jvp(&[&n.mul(&n).unwrap()], &[&x], &[&x]));
    assert!(e.contains("only float outputs"), "{e}");
    let other = Builder::new();
    let z = other.input("z", DType::F64, [3]).unwrap();
    assert!(matches!(jvp(&[&y], &[&x], &[&z]), Err(GraphError::ForeignVar)));
    // A failed jvp leaves no scratch input behind.
    assert_eq!(g.graph().inputs().len(), 4, "{:?}", g.graph());
}

#[test]
fn jacobians_and_hessians_are_one_loop_in_either_mode() {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [3]).unwrap();
    let a = g.constant(array![[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]);
    let xv = array![0.3, -1.2, 0.8];
    // Reverse mode (2 outputs, 3 inputs): d(tanh(A x))/dx = diag(1 - tanh^2) A.
    let y = a.dot(&x).unwrap().tanh().unwrap();
    let j = rhea_graph::jacobian(&y, &x).unwrap();
    assert_eq!(j.ty().to_string(), "f64[2,3]");
    // Forward mode (6 outputs, 3 inputs): d(outer(x, x))/dx.
    let outer = x.reshape(&[3, 1]).unwrap().mul(&x).unwrap().slice(&[rhea_graph::SliceSpec::range(0, 2)]).unwrap();
    let jo = rhea_graph::jacobian(&outer, &x).unwrap();
    assert_eq!(jo.ty().to_string(), "f64[2,3,3]");
    let cube = x.mul(&x).unwrap().mul(&x).unwrap().sum_all().unwrap();
    let h = rhea_graph::hessian(&cube, &x).unwrap();
    let z = g.input("z", DType::F64, [2]).unwrap();
    let jz = rhea_graph::jacobian(&y, &z).unwrap();
    let zv = Value::from(array![0.0, 0.0]);
    let feeds: HashMap<String, Value> = [("x".to_string(), Value::from(xv.clone())), ("z".to_string(), zv)].into();
    let out = eval(&g, &feeds, &[&j, &jo, &h, &jz]);
    let av = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]];
    let mut want = Vec::new();
    for row in av {
        let s: f64 = row.iter().zip(xv.iter()).map(|(a, x)| a * x).sum();
        want.extend(row.iter().map(|a| (1.0 - s.tanh().powi(2)) * a));
    }
    assert_close("jacobian, reverse mode", &out[0], &want, 1e-12);
    let mut want = Vec::new();
    for i in 0..2 {
        for k in 0..3 {
            for jx in 0..3 {
                // d(x_i x_k)/dx_j
                want.push(f64::from(u8::from(i == jx)) * xv[k] + f64::from(u8::from(k == jx)) * xv[i]);
            }
        }
    }
    assert_close("jacobian, forward mode", &out[1], &want, 1e-12);
    let want: Vec<f64> = (0..9).map(|i| if i / 3 == i % 3 { 6.0 * xv[i / 3] } else { 0.0 }).collect();
    assert_close("hessian", &out[2], &want, 1e-12);
    assert_eq!(out[3], vec![0.0; 4], "a function of x only has a zero jacobian in z");
    // Forward mode where the function's dtype is not its argument's.
    let wide = x.cast(DType::F32).unwrap().broadcast_to([2, 3]).unwrap();
    let jw = rhea_graph::jacobian(&wide, &x).unwrap();
    assert_eq!(jw.ty().to_string(), "f32[2,3,3]");
    let e = rhea_graph::jacobian(&x.cast(DType::I64).unwrap(), &x).unwrap_err().to_string();
    assert!(e.contains("jacobian needs float tensors"), "{e}");
}
