//! One test per rule: the rule alone (mode none, included) must fire on its
//! pattern, leave the expected op, and keep the values.

use ndarray::array;
use rhea::opt::Mode;
use rhea::{Builder, DType, Op, UnaryOp, Value, Var};

use crate::kit::*;

/// Builds `f(x)` for an input `x` of `xs` (f32), runs `rule` alone, checks
/// it fired, that the output's op is `want` (by name), and the values.
fn check(rule: &str, xs: Value, f: impl Fn(&Builder, &Var) -> Var, want: &str) {
    let g = Builder::new();
    let shape = rhea::Shape::known(xs.shape());
    let x = g.input("x", xs.dtype(), shape).unwrap();
    let y = f(&g, &x);
    g.output("y", &y).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::None, &[rule]));
    let fired: Vec<&str> = p.report.rewrites.iter().map(|r| r.rule).collect();
    assert!(fired.contains(&rule), "{rule} did not fire (fired: {fired:?}) on\n{graph:?}");
    let out = p.graph.outputs()[0].1;
    assert_eq!(p.graph.node(out).op.name(), want, "{rule} left\n{:?}", p.graph);
    assert_same(&graph, &p, &feeds(&[("x", xs)]), 1e-6);
    // Without the rule nothing changes.
    let q = program(&graph, &options(Mode::None, &[]));
    assert!(q.report.rewrites.is_empty());
}

fn v() -> Value {
    Value::from(array![[0.5f32, -1.5, 2.0], [0.25, 1.0, -0.75]])
}

fn pos() -> Value {
    Value::from(array![[0.5f32, 1.5, 2.0], [0.25, 1.0, 0.75]])
}

#[test]
fn useless_rules() {
    check("add_zero", v(), |_, x| (x + 0.0).exp().unwrap(), "exp");
    check("sub_zero", v(), |_, x| (x - 0.0).exp().unwrap(), "exp");
    check("mul_one", v(), |_, x| (1.0 * x).exp().unwrap(), "exp");
    check("div_one", v(), |_, x| (x / 1.0).exp().unwrap(), "exp");
    check("neg_neg", v(), |_, x| (-(-x)).exp().unwrap(), "exp");
    check("same_shape", v(), |_, x| x.reshape(&[2, 3]).unwrap().exp().unwrap(), "exp");
    check("dimshuffle_chain", v(), |_, x| x.transpose().unwrap().transpose().unwrap(), "dimshuffle");
    check("reshape_chain", v(), |_, x| x.reshape(&[6]).unwrap().reshape(&[3, 2]).unwrap(), "reshape");
    check("reduce_size1", v(), |_, x| x.expand_dims(0).unwrap().sum(&[0], false).unwrap().exp().unwrap(), "exp");
    check("cast_same", v(), |_, x| x.cast(DType::F32).unwrap().exp().unwrap(), "exp");
    check("stop_gradient", v(), |_, x| x.stop_gradient().unwrap().exp().unwrap(), "exp");
}

#[test]
fn canonicalize_rules() {
    check("const_right", v(), |g, x| g.scalar(2.0, DType::F32).mul(x).unwrap(), "mul");
    check("sub_const", v(), |_, x| x - 3.0, "add");
    check("div_pow2", v(), |_, x| x / 4.0, "mul");
    check("neg_mul_const", v(), |_, x| -x * 3.0, "mul");
    check("mul_neg_one", v(), |_, x| x * -1.0, "neg");
    // Constants are negated exactly in their own dtype: no f64 round trip.
    let g = Builder::new();
    let i = g.input("i", DType::I64, [1]).unwrap();
    g.output("y", &(&i - 9_007_199_254_740_993i64)).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::None, &["sub_const"]));
    assert_same(&graph, &p, &feeds(&[("i", Value::from(array![0i64]))]), 0.0);
    // x / 2^-130 (subnormal) is not rewritten: its reciprocal is not a normal f32.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [1]).unwrap();
    g.output("y", &(&x / f64::from(2f32.powi(-130)))).unwrap();
    assert!(program(&g.to_graph(), &options(Mode::None, &["div_pow2"])).report.rewrites.is_empty());
    check(
        "implicit_broadcast",
        v(),
        |g, x| x.add(g.scalar(2.0, DType::F32).broadcast_to([2, 3]).unwrap()).unwrap(),
        "add",
    );
}

#[test]
fn stabilize_rules() {
    check("log_sigmoid", v(), |_, x| x.sigmoid().unwrap().log().unwrap(), "neg");
    check("one_minus_sigmoid", v(), |_, x| 1.0 - &x.sigmoid().unwrap(), "sigmoid");
    check("log_softmax", v(), |_, x| x.softmax(1).unwrap().log().unwrap(), "log_softmax");
    check(
        "log_clip",
        v(),
        |_, x| x.sigmoid().unwrap().maximum(1e-7).unwrap().minimum(1.0 - 1e-7).unwrap().log().unwrap(),
        "minimum",
    );
    check(
        "one_minus_clip",
        v(),
        |_, x| 1.0 - &x.sigmoid().unwrap().maximum(0.1).unwrap().minimum(0.9).unwrap(),
        "minimum",
    );
    // The safe-log idiom on values that may be negative is left alone: there
    // log(max(p, lo)) is finite where clip(log p, ...) would be NaN.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3]).unwrap();
    g.output("y", &x.maximum(1e-3).unwrap().minimum(10.0).unwrap().log().unwrap()).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::Fast, &[]));
    assert!(!p.report.rewrites.iter().any(|r| r.rule == "log_clip"));
    assert_same(&graph, &p, &feeds(&[("x", Value::from(array![-1.0f32, 0.5, 2.0]))]), 1e-6);
    check("log1p", v(), |_, x| (x * x + 1.0).log().unwrap(), "log1p");
    check("expm1", v(), |_, x| x.exp().unwrap() - 1.0, "expm1");
    check("softplus", v(), |_, x| x.exp().unwrap().log1p().unwrap(), "softplus");
    check("logsumexp", v(), |_, x| x.exp().unwrap().sum(&[1], false).unwrap().log().unwrap(), "logsumexp");
    check("softmax", v(), |_, x| x.exp().unwrap().div(x.exp().unwrap().sum(&[1], true).unwrap()).unwrap(), "softmax");
}

fn w() -> Value {
    Value::from(array![[1.0f32, 2.0], [0.5, -1.0], [0.0, 3.0]])
}

#[test]
fn specialize_rules() {
    check("mul_self", v(), |_, x| x * x, "square");
    check("pow_const", pos(), |g, x| x.pow(g.scalar(0.5, DType::F32)).unwrap(), "where");
    check("pow_const", v(), |g, x| x.pow(g.scalar(2.0, DType::F32)).unwrap(), "square");
    check("pow_const", v(), |g, x| x.pow(g.scalar(-1.0, DType::F32)).unwrap(), "reciprocal");
    // pow(x, 0.5) keeps pow's values at -inf and -0.
    let edges = Value::from(array![[f32::NEG_INFINITY, -0.0, 4.0], [0.0, f32::INFINITY, 2.25]]);
    check("pow_const", edges, |g, x| x.pow(g.scalar(0.5, DType::F32)).unwrap(), "where");
    check("dot_gemm", v(), |g, x| x.dot(&g.constant(w())).unwrap(), "gemm");
    check("softmax_expand", v(), |_, x| x.softmax(1).unwrap(), "div");
    check("log_softmax_expand", v(), |_, x| x.log_softmax(1).unwrap(), "sub");
    // The interpreter's lanes at the edges: -inf entries, a NaN row, large values.
    let edges = Value::from(array![[f32::NEG_INFINITY, 0.0, 1.0], [f32::NAN, 1.0, 2.0], [80.0, 90.0, -1e30]]);
    check("softmax_expand", edges.clone(), |_, x| x.softmax(1).unwrap(), "div");
    check("log_softmax_expand", edges, |_, x| x.log_softmax(1).unwrap(), "sub");
    // Large offsets: the shift must come before the log-sum is subtracted,
    // or `max + log(sum)` rounds away the answer (-0.693 became 0 at 2^24).
    let far = Value::from(array![[16777216.0f32, 16777216.0], [1e6, 1e6], [1000.0, 1000.5], [-3e7, -3e7]]);
    check("softmax_expand", far.clone(), |_, x| x.softmax(1).unwrap(), "div");
    check("log_softmax_expand", far, |_, x| x.log_softmax(1).unwrap(), "sub");
    // The other gemm rules need dot_gemm to make a gemm first.
    for (rule, f) in [
        (
            "gemm_transpose",
            (|g: &Builder, x: &Var| {
                x.transpose().unwrap().transpose().unwrap().dot(&g.constant(w())).unwrap().add(0.0).unwrap()
            }) as fn(&Builder, &Var) -> Var,
        ),
        ("gemm_bias", |g, x| x.dot(&g.constant(w())).unwrap().add(g.constant(array![1.0f32, 2.0])).unwrap()),
        ("gemm_scale", |g, x| x.dot(&g.constant(w())).unwrap().mul(3.0).unwrap()),
    ] {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [2, 3]).unwrap();
        let y = f(&g, &x);
        g.output("y", &y).unwrap();
        let graph = g.to_graph();
        let p = program(&graph, &options(Mode::None, &["dot_gemm", rule, "add_zero", "dimshuffle_chain"]));
        let fired: Vec<&str> = p.report.rewrites.iter().map(|r| r.rule).collect();
        if rule != "gemm_transpose" {
            assert!(fired.contains(&rule), "{rule} did not fire: {fired:?}");
            assert_eq!(p.graph.node(p.graph.outputs()[0].1).op.name(), "gemm");
        }
        assert_same(&graph, &p, &feeds(&[("x", v())]), 1e-6);
    }
    // A transposed operand folds into the flags.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3, 2]).unwrap();
    let y = x.transpose().unwrap().dot(&g.constant(w())).unwrap();
    g.output("y", &y).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::None, &["dot_gemm", "gemm_transpose"]));
    let out = p.graph.outputs()[0].1;
    assert!(matches!(p.graph.node(out).op, Op::Gemm { trans_a: true, trans_b: false, .. }), "{:?}", p.graph);
    assert_same(&graph, &p, &feeds(&[("x", Value::from(array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]))]), 1e-6);
}

#[test]
fn merge_and_dead_code_and_folding() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3]).unwrap();
    // Two identical subgraphs are one node already; an unused branch is dead.
    let a = x.exp().unwrap().add(1.0).unwrap();
    let b = x.exp().unwrap().add(1.0).unwrap();
    assert_eq!(a.id(), b.id());
    let _unused = x.tanh().unwrap().sum_all().unwrap();
    let c = g.constant(array![1.0f32, 2.0, 3.0]).mul(2.0).unwrap().exp().unwrap();
    let y = a.add(&b).unwrap().add(&c).unwrap();
    g.output("y", &y).unwrap();
    let graph = g.to_graph();
    let p = program(&graph, &options(Mode::Fast, &[]));
    assert!(!p.graph.node_ids().iter().any(|&id| matches!(p.graph.node(id).op, Op::Unary { fun: UnaryOp::Tanh })));
    let folded = p.report.rewrites.iter().filter(|r| r.rule == "fold").count();
    assert_eq!(folded, 2, "{:?}", p.report.rewrites);
    assert_same(&graph, &p, &feeds(&[("x", Value::from(array![0.5f32, 1.0, -1.0]))]), 1e-6);
    // Folding is size-capped: a large constant is not materialized.
    let g = Builder::new();
    let big = g.scalar(1.0, DType::F32).broadcast_to([1000, 1000]).unwrap().exp().unwrap().sum_all().unwrap();
    g.output("y", &big).unwrap();
    let p = program(&g.to_graph(), &options(Mode::Fast, &[]));
    assert!(!p.report.rewrites.iter().any(|r| r.before.starts_with("broadcast_to")), "{:?}", p.report.rewrites);
}

#[test]
fn risky_patterns_are_reported_with_their_source_line() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3]).unwrap();
    let y = (1.0 - &x.tanh().unwrap()).log().unwrap().sum_all().unwrap();
    g.output("y", &y).unwrap();
    let p = program(&g.to_graph(), &options(Mode::Fast, &[]));
    let text = rhea::opt::print::trace(&p);
    assert!(text.contains("risk") && text.contains("log of a") && text.contains("rules.rs:"), "{text}");
}

#[test]
fn unknown_rules_and_passes_are_errors() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3]).unwrap();
    g.output("y", &x.exp().unwrap()).unwrap();
    let e = rhea::opt::compile(g.to_graph(), &options(Mode::None, &["log_sigmod"])).unwrap_err().to_string();
    assert!(e.contains("unknown rule \"log_sigmod\"") && e.contains("log_sigmoid"), "{e}");
    let opts = rhea::opt::Options { stop_after: Some("fuse_all".into()), ..options(Mode::Fast, &[]) };
    assert!(rhea::opt::compile(g.to_graph(), &opts).unwrap_err().to_string().contains("unknown pass"));
}
