//! `scan` optimized and run on every backend against the interpreter: the
//! body compiled once and run as a loop by the one executor, with its
//! gradient (a backward scan), taps, until-conditions, nested loops, zero
//! steps and any number of steps through one compiled function.

use std::collections::HashMap;

use rhea::opt::Mode;
use rhea::{Builder, DType, Dim, ScanArgs, State, StepOut, Value, Var, grad, rng};

use crate::kit::*;

fn random(dtype: DType, shape: &[usize], stream: u64) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n as u64).map(|i| rng::uniform01(stream, i) - 0.5).collect();
    let v = Value::from_f64(DType::F64, shape, &data).unwrap();
    if dtype == DType::F32 { Value::from_f64(DType::F32, shape, &data).unwrap() } else { v }
}

#[derive(Clone, Copy)]
enum On {
    Interp,
    Cpu,
    Emulator,
    Gpu,
}

impl On {
    fn run(self, p: &rhea::opt::Program, feeds: &HashMap<String, Value>) -> Result<Vec<Value>, String> {
        match self {
            On::Interp => run_program(p, feeds),
            On::Cpu => run_cpu(p, feeds),
            On::Emulator => run_cuda(p, feeds, true),
            On::Gpu => run_cuda(p, feeds, false),
        }
    }
}

/// The `outputs` on the raw graph's interpreter and optimized `on` a backend.
fn compare(on: On, g: &Builder, outputs: &[(&str, &Var)], feeds: &HashMap<String, Value>, what: &str) {
    let mut graph = g.graph().clone();
    for (name, v) in outputs {
        graph.set_output(name, v.id());
    }
    let want = run_raw(&graph, feeds);
    let got = on.run(&program(&graph, &options(Mode::Fast, &[])), feeds).unwrap_or_else(|e| panic!("{what}: {e}"));
    for ((name, v), (a, b)) in outputs.iter().zip(want.iter().zip(&got)) {
        let tol = if v.ty().dtype == DType::F32 { 1e-4 } else { 1e-10 };
        if let Err(e) = close(a, b, tol) {
            panic!("{name} of {what}: {e}");
        }
    }
}

/// An Elman RNN over a symbolic number of steps with its loss's gradients
/// (backpropagation through time), at sequence lengths `ts`.
fn rnn(on: On, dtype: DType, ts: &[usize], backwards: bool) {
    let g = Builder::new();
    let t = g.dim("t").unwrap();
    let xs = g.input("xs", dtype, [t, Dim::Known(4), Dim::Known(3)]).unwrap();
    let h0 = g.input("h0", dtype, [4, 5]).unwrap();
    let w = g.input("w", dtype, [3, 5]).unwrap();
    let u = g.input("u", dtype, [5, 5]).unwrap();
    let args = ScanArgs {
        sequences: vec![xs.clone()],
        states: vec![State::new(&h0)],
        non_sequences: vec![w.clone()],
        go_backwards: backwards,
        ..Default::default()
    };
    let out = g
        .scan(args, |s| {
            let u = s.outer(&u)?;
            let h = (&s.seq(0)?.dot(&s.non_seq(0)?)? + &s.state(0)?.dot(&u)?).tanh()?;
            Ok(StepOut {
                states: vec![h.clone()],
                outputs: vec![h.square()?.sum(&[1], false)?],
                until: None,
                updates: vec![],
            })
        })
        .unwrap();
    let loss = (&out.outputs[0].sum_all().unwrap() + &out.finals[0].sum_all().unwrap()).named("loss");
    let grads = grad(&loss, &[&xs, &h0, &w, &u]).unwrap();
    for &n in ts {
        let feeds: HashMap<String, Value> = [
            ("xs".to_string(), random(dtype, &[n, 4, 3], 1)),
            ("h0".to_string(), random(dtype, &[4, 5], 2)),
            ("w".to_string(), random(dtype, &[3, 5], 3)),
            ("u".to_string(), random(dtype, &[5, 5], 4)),
        ]
        .into();
        let outputs = [
            ("hs", &out.states[0]),
            ("ys", &out.outputs[0]),
            ("loss", &loss),
            ("gxs", &grads[0]),
            ("gh0", &grads[1]),
            ("gw", &grads[2]),
            ("gu", &grads[3]),
            ("steps", &out.steps),
        ];
        compare(on, &g, &outputs, &feeds, &format!("rnn {dtype} t={n} backwards={backwards}"));
    }
}

/// Taps, an until-condition and a loop inside a loop's body.
fn loops(on: On) {
    let g = Builder::new();
    let init = g.input("init", DType::F64, [2, 3]).unwrap();
    let args =
        ScanArgs { states: vec![State::with_taps(&init, &[1, 2])], n_steps: Some(Dim::Known(5)), ..Default::default() };
    let fib = g.scan(args, |s| Ok(StepOut::states(vec![(&s.tap(0, 1)? + &s.tap(0, 2)?.sin()?)]))).unwrap();
    let x0 = g.input("x0", DType::F64, [3]).unwrap();
    let until = g
        .while_loop(40, &[&x0], |v| {
            let next = &v[0] * 1.5;
            Ok((vec![next.clone()], next.sum_all()?.greater(10.0)?))
        })
        .unwrap();
    let m = g.input("m", DType::F64, [3, 4]).unwrap();
    let one = g.scalar(1.0, DType::F64);
    let nested = g
        .scan(ScanArgs { sequences: vec![m.clone()], states: vec![State::new(&one)], ..Default::default() }, |s| {
            let zero = s.builder().scalar(0.0, DType::F64);
            let inner = s.builder().scan(
                ScanArgs { sequences: vec![s.seq(0)?], states: vec![State::new(&zero)], ..Default::default() },
                |i| Ok(StepOut::states(vec![&i.state(0)? + &i.seq(0)?.exp()?])),
            )?;
            Ok(StepOut::states(vec![&s.state(0)? * &inner.finals[0]]))
        })
        .unwrap();
    let dm = grad(&nested.finals[0], &[&m]).unwrap().remove(0);
    let dinit = grad(&fib.states[0].sum_all().unwrap(), &[&init]).unwrap().remove(0);
    let dx0 = grad(&until.finals[0].sum_all().unwrap(), &[&x0]).unwrap().remove(0);
    let feeds: HashMap<String, Value> = [
        ("init".to_string(), random(DType::F64, &[2, 3], 5)),
        ("x0".to_string(), Value::from(ndarray::array![0.5, 1.0, 0.25])),
        ("m".to_string(), random(DType::F64, &[3, 4], 6)),
    ]
    .into();
    let outputs = [
        ("fib", &fib.states[0]),
        ("until", &until.finals[0]),
        ("until_steps", &until.steps),
        ("nested", &nested.states[0]),
        ("dm", &dm),
        ("dinit", &dinit),
        ("dx0", &dx0),
    ];
    compare(on, &g, &outputs, &feeds, "taps, until and nesting");
}

fn all(on: On) {
    for dtype in [DType::F32, DType::F64] {
        rnn(on, dtype, &[3, 0, 1], false);
    }
    rnn(on, DType::F64, &[4], true);
    loops(on);
}

#[test]
fn loops_on_the_interpreter_engine_match_the_graph() {
    all(On::Interp);
}

#[test]
fn loops_on_the_cpu_match_the_interpreter() {
    all(On::Cpu);
}

#[test]
fn loops_on_the_emulated_gpu_match_the_interpreter() {
    all(On::Emulator);
}

#[test]
#[ignore = "needs an NVIDIA GPU (scripts/gpu-check runs it)"]
fn loops_on_the_gpu_match_the_interpreter() {
    all(On::Gpu);
}

/// One compiled function runs any number of steps: the body's kernels are
/// compiled once, whatever the sequence length.
#[test]
fn one_function_runs_every_sequence_length() {
    let g = Builder::new();
    let t = g.dim("t").unwrap();
    let xs = g.input("xs", DType::F32, [t, Dim::Known(2)]).unwrap();
    let s0 = g.input("s0", DType::F32, [2]).unwrap();
    let args = ScanArgs { sequences: vec![xs.clone()], states: vec![State::new(&s0)], ..Default::default() };
    let out = g.scan(args, |s| Ok(StepOut::states(vec![(&s.state(0)? * 0.5 + &s.seq(0)?).tanh()?]))).unwrap();
    let mut f = rhea::function(&[&xs, &s0], &[&out.finals[0]]).compile().unwrap();
    assert_eq!(f.program().bodies.len(), 1, "one body, compiled once");
    for n in [0usize, 1, 7, 50] {
        let x = random(DType::F32, &[n, 2], 9);
        let want = {
            let mut s = [0.1f32, -0.2];
            let xv: Vec<f64> = x.to_f64_vec();
            for r in 0..n {
                for k in 0..2 {
                    s[k] = (s[k] * 0.5 + xv[2 * r + k] as f32).tanh();
                }
            }
            s
        };
        let got = f.call(&[x, Value::from(ndarray::array![0.1f32, -0.2])]).unwrap();
        let got = got[0].to_f64_vec();
        for k in 0..2 {
            assert!((got[k] - want[k] as f64).abs() < 1e-5, "t={n}: {got:?} vs {want:?}");
        }
    }
}

/// Work the body repeats on the same values every step moves out of the
/// loop: `u * 0.5` and `transpose(w)` are computed once.
#[test]
fn loop_invariant_work_moves_out_of_the_body() {
    let g = Builder::new();
    let xs = g.input("xs", DType::F64, [6, 3]).unwrap();
    let h0 = g.input("h0", DType::F64, [3]).unwrap();
    let w = g.input("w", DType::F64, [3, 3]).unwrap();
    let args = ScanArgs {
        sequences: vec![xs.clone()],
        states: vec![State::new(&h0)],
        non_sequences: vec![w.clone()],
        ..Default::default()
    };
    let out = g
        .scan(args, |s| {
            let wt = s.non_seq(0)?.transpose()?.mul(0.5)?;
            Ok(StepOut::states(vec![s.state(0)?.dot(&wt)?.add(&s.seq(0)?)?.tanh()?]))
        })
        .unwrap();
    let mut graph = g.graph().clone();
    graph.set_output("hs", out.states[0].id());
    let p = program(&graph, &options(Mode::Fast, &[]));
    assert!(p.report.rewrites.iter().any(|r| r.rule == "scan_push_out"), "{:?}", p.report.rewrites);
    let (_, body) = &p.bodies[0];
    let ops: Vec<&str> = body.graph.node_ids().iter().map(|&id| body.graph.node(id).op.name()).collect();
    assert!(!ops.contains(&"dimshuffle") && !ops.contains(&"mul"), "the body still has {ops:?}");
    let feeds: HashMap<String, Value> = [
        ("xs".to_string(), random(DType::F64, &[6, 3], 1)),
        ("h0".to_string(), random(DType::F64, &[3], 2)),
        ("w".to_string(), random(DType::F64, &[3, 3], 3)),
    ]
    .into();
    let want = run_raw(&graph, &feeds);
    for on in [On::Interp, On::Cpu] {
        let got = on.run(&p, &feeds).unwrap();
        close(&want[0], &got[0], 1e-12).unwrap();
    }
}

/// A training step whose loop body reads a shared weight that the step
/// updates: every backend sees the new weight on the next call, and all
/// agree with the interpreter.
#[test]
fn a_body_reading_a_shared_variable_sees_its_updates() {
    let mut results = Vec::new();
    for backend in [rhea::Backend::Interp, rhea::Backend::Cpu, rhea::Backend::CudaEmulated] {
        let g = Builder::new();
        let xs = g.input("xs", DType::F64, [5, 2]).unwrap();
        let h0 = g.input("h0", DType::F64, [2]).unwrap();
        let u = g.shared("u", ndarray::array![[0.5, -0.2], [0.1, 0.3]]).unwrap();
        let args = ScanArgs { sequences: vec![xs.clone()], states: vec![State::new(&h0)], ..Default::default() };
        let out = g
            .scan(args, |s| {
                let u = s.outer(&u)?;
                Ok(StepOut::states(vec![s.state(0)?.dot(&u)?.add(&s.seq(0)?)?.tanh()?]))
            })
            .unwrap();
        let loss = out.finals[0].square().unwrap().sum_all().unwrap();
        let du = grad(&loss, &[&u]).unwrap().remove(0);
        let step = u.sub(du.mul(0.1).unwrap()).unwrap();
        let mut f =
            rhea::function(&[&xs, &h0], &[&loss]).updates([(u.clone(), step)]).backend(backend).compile().unwrap();
        let (x, h) = (random(DType::F64, &[5, 2], 7), random(DType::F64, &[2], 8));
        let losses: Vec<f64> = (0..3).map(|_| f.call(&[x.clone(), h.clone()]).unwrap()[0].to_f64_vec()[0]).collect();
        assert!(losses[2] < losses[0], "{backend}: SGD through the loop lowers the loss: {losses:?}");
        let u_after = g.graph().shared_value(u.id()).unwrap().to_f64_vec();
        results.push((backend, losses, u_after));
    }
    for (backend, losses, u) in &results[1..] {
        for (a, b) in losses.iter().chain(u).zip(results[0].1.iter().chain(&results[0].2)) {
            assert!((a - b).abs() < 1e-12, "{backend} differs from the interpreter: {a} vs {b}");
        }
    }
}

/// Theano's updates inside `scan`: a body that counts its steps and sums its
/// rows into shared variables; the loop gives their values after the last
/// step as updates, and every backend applies them the same way.
#[test]
fn a_body_updates_shared_variables_as_theano_scan_does() {
    for backend in [rhea::Backend::Interp, rhea::Backend::Cpu, rhea::Backend::CudaEmulated] {
        let g = Builder::new();
        let xs = g.input("xs", DType::F64, [5, 2]).unwrap();
        let count = g.shared("count", Value::from(0.0f64)).unwrap();
        let total = g.shared("total", ndarray::array![0.0, 0.0]).unwrap();
        let args = ScanArgs { sequences: vec![xs.clone()], ..Default::default() };
        let out = g
            .scan(args, |s| {
                let (c, t) = (s.shared(&count)?, s.shared(&total)?);
                Ok(StepOut {
                    outputs: vec![t.sum_all()?],
                    updates: vec![(count.clone(), c.add(1.0)?), (total.clone(), t.add(&s.seq(0)?)?)],
                    ..Default::default()
                })
            })
            .unwrap();
        assert_eq!(out.updates.len(), 2);
        let mut f =
            rhea::function(&[&xs], &[&out.outputs[0]]).updates(out.updates.clone()).backend(backend).compile().unwrap();
        let x = random(DType::F64, &[5, 2], 11);
        let sums: Vec<f64> = x.to_f64_vec().chunks(2).map(|r| r[0] + r[1]).collect();
        let running: Vec<f64> = sums
            .iter()
            .scan(0.0, |acc, s| {
                *acc += s;
                Some(*acc)
            })
            .collect();
        // Each step sees the total before its own row.
        let seen = f.call(std::slice::from_ref(&x)).unwrap()[0].to_f64_vec();
        let want: Vec<f64> = std::iter::once(0.0).chain(running[..4].iter().copied()).collect();
        for (a, b) in seen.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{backend}: {seen:?} vs {want:?}");
        }
        f.call(std::slice::from_ref(&x)).unwrap();
        let graph = g.graph();
        assert_eq!(graph.shared_value(count.id()).unwrap().to_f64_vec(), vec![10.0], "{backend}");
        let t = graph.shared_value(total.id()).unwrap().to_f64_vec();
        assert!((t[0] + t[1] - 2.0 * running[4]).abs() < 1e-12, "{backend}: {t:?}");
    }
}
