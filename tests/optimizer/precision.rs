//! Values that lose their answer if an expansion rounds in the wrong order:
//! `log_softmax` and its gradient at large offsets, on every backend,
//! against the exact values.

use ndarray::array;
use rhea::{Backend, Builder, DType, Value, function};

#[test]
fn log_softmax_and_its_gradient_keep_their_precision_at_large_offsets() {
    // Two equal logits: log_softmax is -ln 2 for each, its gradient of the
    // first output is [1/2, -1/2], whatever the offset.
    for offset in [16777216.0f32, 1e6, -3e7, 1000.0] {
        for backend in [Backend::Interp, Backend::Cpu, Backend::CudaEmulated] {
            let g = Builder::new();
            let x = g.input("x", DType::F32, [2]).unwrap();
            let y = x.log_softmax(-1).unwrap();
            let first = y.take(&g.constant(array![0i64]), 0).unwrap().sum_all().unwrap();
            let grad = rhea::grad(&first, &[&x]).unwrap().remove(0);
            let mut f = function(&[&x], &[&y, &grad]).backend(backend).compile().unwrap();
            let out = f.call(&[Value::from(array![offset, offset])]).unwrap();
            let (ys, gs) = (out[0].to_f64_vec(), out[1].to_f64_vec());
            let ln2 = std::f64::consts::LN_2;
            for v in &ys {
                assert!((v + ln2).abs() < 1e-6, "{backend} at {offset}: log_softmax {ys:?}, want -{ln2}");
            }
            assert!((gs[0] - 0.5).abs() < 1e-6 && (gs[1] + 0.5).abs() < 1e-6, "{backend} at {offset}: gradient {gs:?}");
        }
    }
    // Unequal logits far from zero: [1000, 1000.5] gives
    // [-ln(1 + e^0.5), -ln(1 + e^-0.5)] to f32 precision.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [2]).unwrap();
    let y = x.log_softmax(-1).unwrap();
    let mut f = function(&[&x], &[&y]).compile().unwrap();
    let got = f.call(&[Value::from(array![1000.0f32, 1000.5])]).unwrap()[0].to_f64_vec();
    let want = [-(1.0 + 0.5f64.exp()).ln(), -(1.0 + (-0.5f64).exp()).ln()];
    for (g, w) in got.iter().zip(want) {
        assert!(((g - w) / w).abs() < 1e-6, "got {got:?}, want {want:?}");
    }
}
