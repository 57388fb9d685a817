//! The inline `f32` transcendentals against the `f64` reference definitions:
//! maximum error in ulps over a sweep of every 127th `f32` bit pattern (every
//! 4099th in debug builds; `RHEA_ULP_STEP=1` sweeps all of them), exact
//! special values, and vector lanes rounding exactly as the scalar tail does. The bounds asserted here are the ones
//! stated in docs/cpu-backend.md. Compiled code must also agree bit for bit
//! with `rhea_kernel::math` run on plain floats: the GPU emits the same
//! algorithms, so the bounds hold there too.

use rhea_cpu::CpuKernels;
use rhea_graph::{UnaryOp, Value};
use rhea_kernel::scalar::unary_f64;
use rhea_kernel::{Bindings, Kernel};

fn kernel(op: UnaryOp, n: usize) -> Kernel {
    let text =
        format!("kernel [{n}]\n  in0: f32[{n}]\n  %0 = load in0 : f32\n  %1 = {} %0 : f32\n  out0 = %1\n", op.name());
    Kernel::parse(&text).unwrap()
}

fn run(op: UnaryOp, xs: &[f32]) -> Vec<f32> {
    let cpu = CpuKernels::compile(&[kernel(op, xs.len())]).unwrap();
    let x = Value::from(ndarray::Array1::from(xs.to_vec()));
    match cpu.run(0, &[&x], &Bindings::new()).unwrap().remove(0) {
        Value::F32(a) => a.iter().copied().collect(),
        other => panic!("expected f32, got {other:?}"),
    }
}

/// Position on the number line in ulps (so that -0 and +0 coincide).
fn ordinal(x: f32) -> i64 {
    let b = x.to_bits();
    if b >> 31 == 1 { -((b & 0x7fff_ffff) as i64) } else { b as i64 }
}

const OPS: [(UnaryOp, i64); 8] = [
    (UnaryOp::Exp, 1),
    (UnaryOp::Log, 1),
    (UnaryOp::Log1p, 2),
    (UnaryOp::Expm1, 2),
    (UnaryOp::Tanh, 1),
    (UnaryOp::Sigmoid, 3),
    (UnaryOp::Softplus, 3),
    (UnaryOp::Rsqrt, 1),
];

#[test]
fn inline_transcendentals_are_within_their_stated_ulps() {
    let default = if cfg!(debug_assertions) { 4099 } else { 127 };
    let step = std::env::var("RHEA_ULP_STEP").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let xs: Vec<f32> = (0..=u32::MAX).step_by(step).map(f32::from_bits).filter(|x| !x.is_nan()).collect();
    let mut report = Vec::new();
    for (op, bound) in OPS {
        let got = run(op, &xs);
        let (mut worst, mut at) = (0i64, 0.0f32);
        for (&x, &y) in xs.iter().zip(&got) {
            let want = unary_f64(op, x as f64) as f32;
            if want.is_nan() || y.is_nan() {
                assert!(want.is_nan() && y.is_nan(), "{}({x:e}) = {y:e}, want {want:e}", op.name());
                continue;
            }
            if want.is_infinite() || y.is_infinite() {
                assert_eq!(want, y, "{}({x:e})", op.name());
                continue;
            }
            // Subnormal results carry fewer bits; judge them absolutely.
            let ulps = if want.abs() < f32::MIN_POSITIVE {
                ((y - want).abs() / f32::MIN_POSITIVE * 8388608.0) as i64
            } else {
                (ordinal(y) - ordinal(want)).abs()
            };
            if ulps > worst {
                (worst, at) = (ulps, x);
            }
        }
        let reference = xs.iter().zip(&got).find(|&(&x, &y)| {
            let soft = rhea_kernel::math::Soft::<f32>::unary(op, x);
            soft.to_bits() != y.to_bits() && !(soft.is_nan() && y.is_nan())
        });
        assert!(reference.is_none(), "{}: compiled code and rhea_kernel::math differ at {reference:?}", op.name());
        let verdict = if worst <= bound { "" } else { "  <- over its bound" };
        report.push(format!("{:<8} max {worst} ulp (at x = {at:e}), bound {bound}{verdict}", op.name()));
    }
    let report = report.join("\n");
    println!("{} values each\n{report}", xs.len());
    assert!(!report.contains("over its bound"), "{report}");
}

#[test]
fn special_values_behave_like_libm() {
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, 1e-45, -1e-45];
    for (op, _) in OPS {
        let got = run(op, &specials);
        for (&x, &y) in specials.iter().zip(&got) {
            let want = unary_f64(op, x as f64) as f32;
            let same = (want.is_nan() && y.is_nan()) || want == y || (ordinal(want) - ordinal(y)).abs() <= 1;
            assert!(same, "{}({x:e}) = {y:e}, want {want:e}", op.name());
        }
    }
}

#[test]
fn vector_lanes_round_exactly_as_the_scalar_tail() {
    // 4 * 4 * 3 + 3: unrolled vectors, a single vector, and a scalar tail.
    let xs: Vec<f32> = (0..51).map(|i| (i as f32 - 25.0) * 0.37).collect();
    for (op, _) in OPS {
        let together = run(op, &xs);
        for (i, &x) in xs.iter().enumerate() {
            let alone = run(op, &[x])[0];
            assert!(
                alone.to_bits() == together[i].to_bits() || (alone.is_nan() && together[i].is_nan()),
                "{} lane {i}",
                op.name()
            );
        }
    }
}
