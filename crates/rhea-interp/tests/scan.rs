//! `scan` on the reference interpreter: its results against closed forms,
//! its errors, its dumps, and its gradient (backpropagation through time)
//! against finite differences, to the second derivative.

#[allow(dead_code)]
mod support;

use std::collections::HashMap;

use ndarray::{Array1, Array2, array};
use rhea_graph::{
    Builder, DType, Dim, GraphError, ScanArgs, State, StepOut, TensorType, Value, Var, from_json, grad, to_json,
};
use rhea_interp::{VerifyOptions, run, verify_grad};
use support::{away, derivative};

fn feeds(items: &[(&str, Value)]) -> HashMap<String, Value> {
    items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn eval(g: &Builder, f: &[(&str, Value)], outs: &[&Var]) -> Vec<Value> {
    let ids: Vec<_> = outs.iter().map(|v| v.id()).collect();
    run(&g.graph(), &feeds(f), &ids).unwrap_or_else(|e| panic!("{e}"))
}

/// A running sum over a sequence of any length: `s_t = s_{t-1} + x_t`.
fn cumsum(backwards: bool) -> (Builder, rhea_graph::ScanOut) {
    let g = Builder::new();
    let t = g.dim("t").unwrap();
    let xs = g.input("xs", DType::F64, [t, Dim::Known(2)]).unwrap();
    let s0 = g.input("s0", DType::F64, [2]).unwrap();
    let args =
        ScanArgs { sequences: vec![xs], states: vec![State::new(&s0)], go_backwards: backwards, ..Default::default() };
    let out = g.scan(args, |s| Ok(StepOut::states(vec![&s.state(0)? + &s.seq(0)?]))).unwrap();
    (g, out)
}

#[test]
fn a_running_sum_runs_for_any_number_of_steps_without_a_new_graph() {
    let (g, out) = cumsum(false);
    assert_eq!(out.states[0].ty().to_string(), "f64[t,2]");
    let xs = array![[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]];
    let s0 = array![100.0, 0.0];
    let r = eval(&g, &[("xs", xs.into()), ("s0", s0.clone().into())], &[&out.states[0], &out.finals[0], &out.steps]);
    assert_eq!(r[0], Value::from(array![[101.0, 10.0], [103.0, 30.0], [106.0, 60.0]]));
    assert_eq!(r[1], Value::from(array![106.0, 60.0]));
    assert_eq!(r[2], Value::from(3i64));
    // Zero steps: nothing stacked, the final state is the initial one.
    let empty = Array2::<f64>::zeros((0, 2));
    let r = eval(&g, &[("xs", empty.into()), ("s0", s0.clone().into())], &[&out.states[0], &out.finals[0], &out.steps]);
    assert_eq!(r[0].shape(), &[0, 2]);
    assert_eq!(r[1], Value::from(s0));
    assert_eq!(r[2], Value::from(0i64));
}

#[test]
fn go_backwards_reads_the_rows_last_first_and_stacks_in_the_order_computed() {
    let (g, out) = cumsum(true);
    let xs = array![[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]];
    let r = eval(&g, &[("xs", xs.into()), ("s0", array![0.0, 0.0].into())], &[&out.states[0]]);
    assert_eq!(r[0], Value::from(array![[3.0, 30.0], [5.0, 50.0], [6.0, 60.0]]));
}

#[test]
fn taps_read_several_steps_back() {
    // Fibonacci: f_t = f_{t-1} + f_{t-2}, from the window [f_{-2}, f_{-1}] = [0, 1].
    let g = Builder::new();
    let init = g.constant(Value::from(array![0i64, 1]));
    let args =
        ScanArgs { states: vec![State::with_taps(&init, &[1, 2])], n_steps: Some(Dim::Known(6)), ..Default::default() };
    let out = g.scan(args, |s| Ok(StepOut::states(vec![&s.tap(0, 1)? + &s.tap(0, 2)?]))).unwrap();
    let r = eval(&g, &[], &[&out.states[0], &out.finals[0]]);
    assert_eq!(r[0], Value::from(array![1i64, 2, 3, 5, 8, 13]));
    assert_eq!(r[1], Value::from(13i64));
}

#[test]
fn an_until_condition_stops_the_loop() {
    let g = Builder::new();
    let x0 = g.input("x0", DType::F64, rhea_graph::Shape::scalar()).unwrap();
    let out = g
        .while_loop(50, &[&x0], |v| {
            let next = &v[0] * 2.0;
            let done = next.greater(100.0)?;
            Ok((vec![next], done))
        })
        .unwrap();
    let r = eval(&g, &[("x0", Value::from(1.0f64))], &[&out.finals[0], &out.steps, &out.states[0]]);
    assert_eq!(r[0], Value::from(128.0f64));
    assert_eq!(r[1], Value::from(7i64));
    // Stacked rows after the stop are zero.
    let rows = r[2].to_f64_vec();
    assert_eq!(rows.len(), 50);
    assert_eq!(&rows[..8], &[2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 0.0]);
}

#[test]
fn fori_loop_and_map() {
    let g = Builder::new();
    let acc = g.scalar(0.0, DType::F64);
    let total = g.fori_loop(10, &[&acc], |i, v| Ok(vec![&v[0] + &i.cast(DType::F64)?])).unwrap();
    let xs = g.input("xs", DType::F64, [3, 2]).unwrap();
    let norms = g.map(&[&xs], |s| s.seq(0)?.square()?.sum_all()).unwrap();
    let r = eval(&g, &[("xs", array![[1.0, 2.0], [3.0, 4.0], [0.0, 0.5]].into())], &[&total[0], &norms]);
    assert_eq!(r[0], Value::from(45.0f64));
    assert_eq!(r[1], Value::from(array![5.0, 25.0, 0.25]));
}

/// An Elman RNN: `h_t = tanh(x_t W + h_{t-1} U + b)`, with the per-step
/// output `y_t = h_t . v`, weights as non-sequences (two captured from
/// outside the body).
fn elman(
    g: &Builder,
    xs: &Var,
    h0: &Var,
    w: &Var,
    u: &Var,
    b: &Var,
    truncate: Option<usize>,
) -> Result<rhea_graph::ScanOut, GraphError> {
    let args = ScanArgs {
        sequences: vec![xs.clone()],
        states: vec![State::new(h0)],
        non_sequences: vec![w.clone()],
        truncate_gradient: truncate,
        ..Default::default()
    };
    g.scan(args, |s| {
        let (u, b) = (s.outer(u)?, s.outer(b)?);
        let h = (&(&s.seq(0)?.dot(&s.non_seq(0)?)? + &s.state(0)?.dot(&u)?) + &b).tanh()?;
        let y = h.sum_all()?;
        Ok(StepOut { states: vec![h], outputs: vec![y], until: None, updates: vec![] })
    })
}

/// The same RNN unrolled in Rust, on plain arrays.
fn elman_by_hand(
    xs: &Array2<f64>,
    h0: &Array1<f64>,
    w: &Array2<f64>,
    u: &Array2<f64>,
    b: &Array1<f64>,
) -> Vec<Array1<f64>> {
    let mut h = h0.clone();
    let mut out = Vec::new();
    for x in xs.rows() {
        h = (x.dot(w) + h.dot(u) + b).mapv(f64::tanh);
        out.push(h.clone());
    }
    out
}

#[test]
fn an_elman_rnn_matches_the_loop_written_by_hand() {
    let g = Builder::new();
    let xs = g.input("xs", DType::F64, [4, 3]).unwrap();
    let h0 = g.input("h0", DType::F64, [2]).unwrap();
    let w = g.input("w", DType::F64, [3, 2]).unwrap();
    let u = g.input("u", DType::F64, [2, 2]).unwrap();
    let b = g.input("b", DType::F64, [2]).unwrap();
    let out = elman(&g, &xs, &h0, &w, &u, &b, None).unwrap();
    let vx = array![[0.1, -0.2, 0.3], [0.5, 0.1, -0.4], [-0.3, 0.2, 0.2], [0.0, 0.7, -0.1]];
    let vh0 = array![0.2, -0.1];
    let vw = array![[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]];
    let vu = array![[0.9, 0.1], [-0.2, 0.4]];
    let vb = array![0.05, -0.05];
    let f = [
        ("xs", vx.clone().into()),
        ("h0", vh0.clone().into()),
        ("w", vw.clone().into()),
        ("u", vu.clone().into()),
        ("b", vb.clone().into()),
    ];
    let r = eval(&g, &f, &[&out.states[0], &out.outputs[0]]);
    let hs = elman_by_hand(&vx, &vh0, &vw, &vu, &vb);
    let got = r[0].to_f64_vec();
    for (t, h) in hs.iter().enumerate() {
        for k in 0..2 {
            assert!((got[2 * t + k] - h[k]).abs() < 1e-12, "h[{t}][{k}]");
        }
        assert!((r[1].to_f64_vec()[t] - h.sum()).abs() < 1e-12);
    }
}

fn elman_case(truncate: Option<usize>, backwards: bool) -> impl Fn(&Builder, &[Var]) -> Result<Var, GraphError> {
    move |g, v| {
        let args_xs = if backwards { v[0].slice(&[rhea_graph::SliceSpec::REVERSE])? } else { v[0].clone() };
        let out = elman(g, &args_xs, &v[1], &v[2], &v[3], &v[4], truncate)?;
        let hs = out.states[0].reshape(&[-1])?;
        let ys = out.outputs[0].clone();
        let last = out.finals[0].clone();
        rhea_graph::concat(&[&hs, &ys, &last], 0)
    }
}

fn elman_points() -> Vec<Value> {
    vec![away(&[4, 3], 1), away(&[2], 2), away(&[3, 2], 3), away(&[2, 2], 4), away(&[2], 5)]
}

#[test]
fn gradients_through_scan_match_finite_differences() {
    let opts = VerifyOptions::default();
    verify_grad(elman_case(None, false), &elman_points(), opts).unwrap_or_else(|e| panic!("{e}"));
    verify_grad(elman_case(None, true), &elman_points(), opts).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn second_derivatives_through_scan_match_finite_differences() {
    let build = elman_case(None, false);
    let opts = VerifyOptions { atol: 1e-5, rtol: 1e-4, ..VerifyOptions::default() };
    verify_grad(derivative(2, &build), &elman_points(), opts).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_go_backwards_scan_has_gradients_too() {
    let build = |g: &Builder, v: &[Var]| -> Result<Var, GraphError> {
        let args = ScanArgs {
            sequences: vec![v[0].clone()],
            states: vec![State::new(&v[1])],
            go_backwards: true,
            ..Default::default()
        };
        let out = g.scan(args, |s| Ok(StepOut::states(vec![(&s.state(0)? * &s.seq(0)?).sin()?])))?;
        out.states[0].reshape(&[-1])
    };
    verify_grad(build, &[away(&[5, 2], 7), away(&[2], 8)], VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn truncate_gradient_backpropagates_through_the_last_steps_only() {
    let g = Builder::new();
    let xs = g.input("xs", DType::F64, [5, 1]).unwrap();
    let h0 = g.input("h0", DType::F64, [1]).unwrap();
    let args = ScanArgs {
        sequences: vec![xs.clone()],
        states: vec![State::new(&h0)],
        truncate_gradient: Some(2),
        ..Default::default()
    };
    // h_t = 2 h_{t-1} + x_t: d h_5 / d x_t = 2^(5-1-t), cut after 2 steps back.
    let out = g.scan(args, |s| Ok(StepOut::states(vec![&(&s.state(0)? * 2.0) + &s.seq(0)?]))).unwrap();
    let cost = out.finals[0].sum_all().unwrap();
    let d = grad(&cost, &[&xs, &h0]).unwrap();
    let r = eval(&g, &[("xs", Array2::<f64>::ones((5, 1)).into()), ("h0", array![1.0].into())], &[&d[0], &d[1]]);
    assert_eq!(r[0].to_f64_vec(), vec![0.0, 0.0, 0.0, 2.0, 1.0]);
    assert_eq!(r[1].to_f64_vec(), vec![0.0]);
}

#[test]
fn nested_scans_run_and_differentiate() {
    // The outer loop over rows sums each row with an inner loop, and carries
    // a product of the sums: a scan inside a scan's body.
    let build = |g: &Builder, v: &[Var]| -> Result<Var, GraphError> {
        let one = g.scalar(1.0, DType::F64);
        let args = ScanArgs { sequences: vec![v[0].clone()], states: vec![State::new(&one)], ..Default::default() };
        let out = g.scan(args, |s| {
            let row = s.seq(0)?;
            let zero = s.builder().scalar(0.0, DType::F64);
            let inner = s.builder().scan(
                ScanArgs { sequences: vec![row], states: vec![State::new(&zero)], ..Default::default() },
                |t| Ok(StepOut::states(vec![&t.state(0)? + &t.seq(0)?.tanh()?])),
            )?;
            Ok(StepOut::states(vec![&s.state(0)? * &inner.finals[0]]))
        })?;
        out.states[0].reshape(&[-1])
    };
    let x = array![[0.1, 0.2, 0.3], [0.4, -0.5, 0.6]];
    let g = Builder::new();
    let xi = g.input("x", DType::F64, [2, 3]).unwrap();
    let y = build(&g, std::slice::from_ref(&xi)).unwrap();
    let r = eval(&g, &[("x", x.clone().into())], &[&y]);
    let sums: Vec<f64> = x.rows().into_iter().map(|r| r.mapv(f64::tanh).sum()).collect();
    assert!((r[0].to_f64_vec()[1] - sums[0] * sums[1]).abs() < 1e-12);
    verify_grad(build, &[away(&[2, 3], 9)], VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_loops_are_clear_errors_naming_the_line() {
    let g = Builder::new();
    let xs = g.input("xs", DType::F32, [3, 2]).unwrap();
    let h0 = g.input("h0", DType::F32, [2]).unwrap();
    // A new state of another type than the initial one.
    let args = ScanArgs { sequences: vec![xs.clone()], states: vec![State::new(&h0)], ..Default::default() };
    let e = g.scan(args.clone(), |s| Ok(StepOut::states(vec![s.seq(0)?.sum_all()?]))).err().unwrap().to_string();
    assert!(e.contains("state 0: the body reads it as f32[2] but returns f32[]"), "{e}");
    assert!(e.contains("tests/scan.rs:"), "{e}");
    // A sequence shorter than the steps asked for.
    let long = ScanArgs { n_steps: Some(Dim::Known(5)), ..args.clone() };
    let e = g.scan(long, |s| Ok(StepOut::states(vec![s.state(0)?]))).err().unwrap().to_string();
    assert!(e.contains("sequence 0 has 3 rows, fewer than the 5 steps"), "{e}");
    // An until-condition that is not a bool scalar.
    let e = g
        .scan(args.clone(), |s| {
            Ok(StepOut { states: vec![s.state(0)?], outputs: vec![], until: Some(s.state(0)?), updates: vec![] })
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("the until-condition must be a bool scalar, got f32[2]"), "{e}");
    // A shape error inside the body names the body's line.
    let e = g
        .scan(args.clone(), |s| Ok(StepOut::states(vec![s.state(0)?.dot(&s.seq(0)?.reshape(&[1, 2])?)?])))
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("dot:") && e.contains("tests/scan.rs:"), "{e}");
    // Step::shared takes shared variables only.
    let e = g.scan(args.clone(), |s| Ok(StepOut::states(vec![s.shared(&h0)?]))).err().unwrap().to_string();
    assert!(e.contains("Step::shared takes a shared variable"), "{e}");
    // A var of the enclosing graph used without Step::outer.
    let e = g.scan(args.clone(), |s| Ok(StepOut::states(vec![s.state(0)?.add(&h0)?]))).err().unwrap();
    assert!(matches!(e, GraphError::ForeignVar), "{e}");
    // A symbolic number of steps larger than a sequence: found when it runs.
    let t = g.dim("t").unwrap();
    let n = g.input("n_carrier", DType::F32, [t]).unwrap();
    let sym = ScanArgs { n_steps: Some(t), ..args.clone() };
    let out = g.scan(sym, |s| Ok(StepOut::states(vec![&s.state(0)? + &s.seq(0)?]))).unwrap();
    let f = [
        ("xs", Array2::<f32>::zeros((3, 2)).into()),
        ("h0", Array1::<f32>::zeros(2).into()),
        ("n_carrier", Array1::<f32>::zeros(4).into()),
    ];
    let ids = [out.finals[0].id(), n.id()];
    let e = run(&g.graph(), &feeds(&f), &ids).unwrap_err().to_string();
    assert!(e.contains("sequence 0 has 3 rows, fewer than the 4 steps"), "{e}");
    // No gradient through an until-loop whose maximum is symbolic.
    let x0 = g.input("x0", DType::F32, rhea_graph::Shape::scalar()).unwrap();
    let w = g.while_loop(t, &[&x0], |v| Ok((vec![&v[0] * 2.0], v[0].greater(3.0)?))).unwrap();
    let e = grad(&w.finals[0], &[&x0]).unwrap_err().to_string();
    assert!(e.contains("through an until-loop of at most t steps, a symbolic dim"), "{e}");
}

#[test]
fn a_scan_dumps_with_its_body_and_its_file_loads_back() {
    let (g, out) = cumsum(false);
    g.output("sum", &out.finals[0]).unwrap();
    let graph = g.to_graph();
    let text = rhea_graph::to_text(&graph, Default::default());
    assert!(
        text.contains("scan{n_steps=t, sequences=1, taps=[[1]], outputs=0, non_sequences=0}(%0, %1) : i64[]"),
        "{text}"
    );
    assert!(text.contains("    | %0 = input \"seq0\" : f64[2]"), "{text}");
    assert!(text.contains("scan_result{index=1}"), "{text}");
    let json = to_json(&graph);
    assert!(json.contains("\"version\": 2"), "{json}");
    let back = from_json(&json).unwrap();
    assert_eq!(to_json(&back), json);
    let r = run(
        &back,
        &feeds(&[("xs", array![[1.0, 2.0]].into()), ("s0", array![1.0, 1.0].into())]),
        &[back.outputs()[0].1],
    )
    .unwrap();
    assert_eq!(r[0], Value::from(array![2.0, 3.0]));
    // A body that breaks the scan's rule is refused when loaded.
    let broken = json.replacen("\"f64[2]\"", "\"f64[3]\"", 1);
    assert!(from_json(&broken).is_err());
    let _ = TensorType::new(DType::F64, [2]);
}

#[test]
fn gradients_read_only_the_rows_the_steps_read() {
    // Four steps over a six-row sequence, both ways: rows 4 and 5 get no gradient.
    for backwards in [false, true] {
        let build = move |g: &Builder, v: &[Var]| -> Result<Var, GraphError> {
            let args = ScanArgs {
                sequences: vec![v[0].clone()],
                states: vec![State::new(&v[1])],
                n_steps: Some(Dim::Known(4)),
                go_backwards: backwards,
                ..Default::default()
            };
            let out = g.scan(args, |s| Ok(StepOut::states(vec![(&s.state(0)? * &s.seq(0)?).tanh()?])))?;
            out.states[0].reshape(&[-1])
        };
        verify_grad(build, &[away(&[6, 2], 21), away(&[2], 22)], VerifyOptions::default())
            .unwrap_or_else(|e| panic!("backwards={backwards}: {e}"));
        let g = Builder::new();
        let xs = g.input("xs", DType::F64, [6, 1]).unwrap();
        let h0 = g.input("h0", DType::F64, [1]).unwrap();
        let y = build(&g, &[xs.clone(), h0.clone()]).unwrap().sum_all().unwrap();
        let d = grad(&y, &[&xs]).unwrap();
        let r = eval(&g, &[("xs", Array2::<f64>::ones((6, 1)).into()), ("h0", array![0.5].into())], &[&d[0]]);
        let rows = r[0].to_f64_vec();
        assert!(rows[..4].iter().all(|&v| v != 0.0) && rows[4..] == [0.0, 0.0], "backwards={backwards}: {rows:?}");
    }
}

#[test]
fn a_window_of_taps_steps_backwards_too() {
    // s_t = s_{t-1} - s_{t-2} + x_t over the rows last to first.
    let g = Builder::new();
    let xs = g.input("xs", DType::F64, [4]).unwrap();
    let init = g.input("init", DType::F64, [2]).unwrap();
    let args = ScanArgs {
        sequences: vec![xs.clone()],
        states: vec![State::with_taps(&init, &[1, 2])],
        go_backwards: true,
        ..Default::default()
    };
    let out = g.scan(args, |s| Ok(StepOut::states(vec![(&(&s.tap(0, 1)? - &s.tap(0, 2)?) + &s.seq(0)?)]))).unwrap();
    let x = [1.0, 2.0, 3.0, 4.0];
    let (mut a, mut b) = (10.0, 20.0); // s_{-2}, s_{-1}
    let mut want = Vec::new();
    for t in 0..4 {
        let s = b - a + x[3 - t];
        want.push(s);
        (a, b) = (b, s);
    }
    let r = eval(
        &g,
        &[("xs", array![1.0, 2.0, 3.0, 4.0].into()), ("init", array![10.0, 20.0].into())],
        &[&out.states[0], &out.finals[0]],
    );
    assert_eq!(r[0].to_f64_vec(), want);
    assert_eq!(r[1].to_f64_vec(), vec![want[3]]);
}

#[test]
fn boolean_rows_of_one_element_and_bad_windows() {
    let g = Builder::new();
    let m = g.input("m", DType::Bool, [4, 1]).unwrap();
    let not = g.map(&[&m], |s| s.seq(0)?.logical_not()).unwrap();
    let r = eval(&g, &[("m", array![[true], [false], [true], [true]].into())], &[&not]);
    assert_eq!(r[0], Value::from(array![[false], [true], [false], [false]]));
    // A window too short for its taps, given to the loop's semantics directly.
    let init = g.input("init", DType::F64, [2, 3]).unwrap();
    let args =
        ScanArgs { states: vec![State::with_taps(&init, &[1, 2])], n_steps: Some(Dim::Known(2)), ..Default::default() };
    let out = g.scan(args, |s| Ok(StepOut::states(vec![&s.tap(0, 1)? + &s.tap(0, 2)?]))).unwrap();
    let graph = g.graph();
    let rhea_graph::Op::Scan(scan) = &graph.node(out.steps.id()).op else { panic!("a scan") };
    let short = Value::from(Array2::<f64>::zeros((1, 3)));
    let e = rhea_interp::run_scan(scan, &[&short], &Default::default()).unwrap_err();
    assert!(e.contains("state 0 reads 2 steps back, but its initial window has 1 rows"), "{e}");
}

/// `s_t = tanh(a s_{t-1} + b s_{t-k} + x_t)` with taps `[1, k]` (or `[k]`
/// alone), from an initial window.
fn tapped(taps: &'static [usize], backwards: bool) -> impl Fn(&Builder, &[Var]) -> Result<Var, GraphError> {
    move |g, v| {
        let args = ScanArgs {
            sequences: vec![v[0].clone()],
            states: vec![State::with_taps(&v[1], taps)],
            go_backwards: backwards,
            ..Default::default()
        };
        let out = g.scan(args, |s| {
            let deepest = s.tap(0, *taps.last().unwrap())?;
            let mut z = (&deepest * 0.7 + &s.seq(0)?).mul(&s.seq(0)?.add(1.5)?)?;
            if taps.len() > 1 {
                z = z.add(&s.tap(0, taps[0])?.mul(0.4)?)?;
            }
            Ok(StepOut { states: vec![z.tanh()?], outputs: vec![z.sum_all()?], until: None, updates: vec![] })
        })?;
        rhea_graph::concat(&[&out.states[0].reshape(&[-1])?, &out.outputs[0], &out.finals[0]], 0)
    }
}

#[test]
fn gradients_flow_through_states_read_several_steps_back() {
    for (taps, backwards) in [(&[1usize, 2][..], false), (&[1, 3][..], true), (&[2][..], false)] {
        let depth = *taps.last().unwrap();
        let points = [away(&[5, 2], 31), away(&[depth, 2], 32)];
        let what = format!("taps {taps:?} backwards={backwards}");
        verify_grad(tapped(taps, backwards), &points, VerifyOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let opts = VerifyOptions { atol: 1e-5, rtol: 1e-4, ..VerifyOptions::default() };
        verify_grad(derivative(2, &tapped(taps, backwards)), &points, opts)
            .unwrap_or_else(|e| panic!("{what}, second derivative: {e}"));
    }
}

#[test]
fn gradients_flow_through_until_loops_over_the_steps_that_ran() {
    // x_{t+1} = tanh(x_t w + a) until sum(x) > 1.2, at most 12 steps: the
    // number of steps is data, but constant near the test point.
    let build = |g: &Builder, v: &[Var]| -> Result<Var, GraphError> {
        let args = ScanArgs {
            states: vec![State::new(&v[0])],
            non_sequences: vec![v[1].clone(), v[2].clone()],
            n_steps: Some(Dim::Known(12)),
            ..Default::default()
        };
        let out = g.scan(args, |s| {
            let x = s.state(0)?.dot(&s.non_seq(0)?)?.add(&s.non_seq(1)?)?.tanh()?;
            let stop = x.sum_all()?.greater(1.2)?;
            Ok(StepOut {
                states: vec![x.clone()],
                outputs: vec![x.square()?.sum_all()?],
                until: Some(stop),
                updates: vec![],
            })
        })?;
        rhea_graph::concat(&[&out.finals[0], &out.outputs[0], &out.states[0].reshape(&[-1])?], 0)
    };
    let points =
        [Value::from(array![0.1, -0.2]), Value::from(array![[0.9, 0.3], [0.2, 0.8]]), Value::from(array![0.15, 0.1])];
    // The loop stops early at this point: some steps do not run.
    let g = Builder::new();
    let v: Vec<Var> = points
        .iter()
        .enumerate()
        .map(|(i, p)| g.input(&format!("v{i}"), DType::F64, rhea_graph::Shape::known(p.shape())).unwrap())
        .collect();
    let y = build(&g, &v).unwrap();
    let graph = g.graph();
    let steps_node =
        graph.node_ids().into_iter().find(|&id| matches!(graph.node(id).op, rhea_graph::Op::Scan(_))).unwrap();
    drop(graph);
    let f: Vec<(&str, Value)> = vec![("v0", points[0].clone()), ("v1", points[1].clone()), ("v2", points[2].clone())];
    let steps = run(&g.graph(), &feeds(&f), &[steps_node, y.id()]).unwrap()[0].to_f64_vec()[0];
    assert!(steps > 1.0 && steps < 12.0, "the loop runs {steps} of 12 steps");
    verify_grad(build, &points, VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
}
