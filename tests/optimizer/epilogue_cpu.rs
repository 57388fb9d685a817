//! Matrix products whose following kernel runs block by block on the
//! product's output (the CPU backend's fused epilogue) give the
//! interpreter's values, for products large enough to be blocked, with
//! transposes, a bias and a kernel that reads another input too.

use std::collections::HashMap;

use rhea::opt::Mode;
use rhea::{Builder, DType, Value, rng};

use crate::kit::*;

fn random(shape: &[usize], stream: u64) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n as u64).map(|i| rng::uniform01(stream, i) * 2.0 - 1.0).collect();
    Value::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data).unwrap().mapv(|x| x as f32))
}

#[test]
fn blocked_products_with_epilogues_match_the_interpreter() {
    for (m, k, n, transpose) in [(64, 300, 1000, false), (33, 70, 2100, true), (5, 7, 9, false)] {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [m, k]).unwrap();
        let w_shape = if transpose { [n, k] } else { [k, n] };
        let w = g.input("w", DType::F32, w_shape).unwrap();
        let b = g.input("b", DType::F32, [n]).unwrap();
        let r = g.input("r", DType::F32, [m, n]).unwrap();
        let w_op = if transpose { w.transpose().unwrap() } else { w.clone() };
        let y = x.dot(&w_op).unwrap().add(&b).unwrap();
        let out = y.tanh().unwrap().mul(&r).unwrap().add(1.0).unwrap();
        let mut graph = g.graph().clone();
        graph.set_output("out", out.id());
        let feeds: HashMap<String, Value> = [
            ("x".to_string(), random(&[m, k], 1)),
            ("w".to_string(), random(&w_shape, 2)),
            ("b".to_string(), random(&[n], 3)),
            ("r".to_string(), random(&[m, n], 4)),
        ]
        .into();
        let p = program(&graph, &options(Mode::Fast, &[]));
        let gemms =
            p.graph.node_ids().into_iter().filter(|&id| matches!(p.graph.node(id).op, rhea::Op::Gemm { .. })).count();
        assert_eq!(gemms, 1, "the product and bias are one gemm");
        let want = run_raw(&graph, &feeds);
        let got = run_cpu(&p, &feeds).unwrap();
        close(&want[0], &got[0], 1e-5).unwrap_or_else(|e| panic!("{m}x{k}x{n} transpose={transpose}: {e}"));
    }
}
