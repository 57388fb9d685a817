//! The NaN guard names the op that made a NaN even where the plan would
//! reuse buffers in place or fuse a product with its epilogue kernel: the
//! failing step is replayed on inputs that survived it.

use ndarray::array;
use rhea::{Backend, Builder, DType, Value, function};

#[test]
fn the_guard_names_the_log_after_a_product_and_its_epilogue() {
    for backend in [Backend::Interp, Backend::Cpu, Backend::CudaEmulated] {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [2, 3]).unwrap();
        let w = g.shared("w", array![[1.0f32, 0.5], [0.25, 1.0], [0.5, 0.5]]).unwrap();
        // dot(x, w) - 5 dies into the log: in place, or as the product's epilogue.
        let shifted = &x.dot(&w).unwrap() - 5.0;
        let logged = shifted.log().unwrap();
        // An elementwise output: its kernel may write over the product.
        let mut f = function(&[&x], &[&logged]).backend(backend).nan_guard(true).compile().unwrap();
        let fine = Value::from(array![[4.0f32, 4.0, 4.0], [5.0, 5.0, 5.0]]);
        f.call(std::slice::from_ref(&fine)).unwrap();
        let bad = Value::from(array![[4.0f32, 4.0, 4.0], [1.0, 1.0, 1.0]]);
        let e = f.call(&[bad]).unwrap_err().to_string();
        assert!(e.starts_with("NaN guard: log ("), "{backend}: names the log, the same on every backend: {e}");
        assert!(e.contains("tests/optimizer/nan_guard.rs:16"), "{backend}: the log's line: {e}");
        assert!(e.contains("NaN") && e.contains("element 2"), "{backend}: the first bad element: {e}");
        // The log's input, not the product's: dot(x, w) - 5 has a negative minimum.
        assert!(e.contains("inputs: f32[2, 2] min -3.2500e0"), "{backend}: the log's input statistics: {e}");
    }
}
