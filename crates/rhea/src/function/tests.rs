//! The compiled function's behaviour: updates, givens, plans per shape,
//! failed calls, backends.

use super::*;
use ndarray::{Array2, array};
use rhea_graph::{DType, Dim};

#[test]
fn updates_see_old_values_and_land_together() {
    let g = Builder::new();
    let a = g.shared("a", Value::from(1.0f64)).unwrap();
    let b = g.shared("b", Value::from(2.0f64)).unwrap();
    let s = a.add(&b).unwrap();
    let mut swap =
        function(&[], &[&s, &a]).updates([(a.clone(), b.clone()), (b.clone(), a.clone())]).compile().unwrap();
    let out = swap.call(&[]).unwrap();
    assert_eq!(out, vec![Value::from(3.0f64), Value::from(1.0f64)]);
    assert_eq!((swap.shared("a").unwrap(), swap.shared("b").unwrap()), (Value::from(2.0f64), Value::from(1.0f64)));
}

fn counter() -> (Builder, Var, Var, Var) {
    let g = Builder::new();
    let batch = g.dim("batch").unwrap();
    let x = g.input("x", DType::F32, [batch, Dim::Known(2)]).unwrap();
    let i = g.input("i", DType::I64, [1]).unwrap();
    let w = g.shared("w", array![1.0f32, 1.0]).unwrap();
    let picked = x.take(&i, 0).unwrap().sum_all().unwrap();
    (g, x, i, w.clone().add(&picked).unwrap().sub(&picked).unwrap().add(1.0).unwrap())
}

#[test]
fn a_failed_call_changes_nothing() {
    let (g, x, i, next) = counter();
    let w = g.find("w").unwrap();
    let mut f = function(&[&x, &i], &[&next]).updates([(w, next.clone())]).compile().unwrap();
    let x2 = Value::from(Array2::<f32>::ones((3, 2)));
    f.call(&[x2.clone(), Value::from(array![0i64])]).unwrap();
    assert_eq!(f.shared("w").unwrap(), Value::from(array![2.0f32, 2.0]));
    // Wrong dtype, wrong shape, and a value error inside an op: all fail, none updates.
    let e = f.call(&[Value::from(Array2::<f64>::ones((3, 2))), Value::from(array![0i64])]).unwrap_err();
    assert!(e.to_string().contains("input \"x\": expected f32[batch,2], got f64[3, 2]"), "{e}");
    assert!(f.call(&[Value::from(Array2::<f32>::ones((3, 5))), Value::from(array![0i64])]).is_err());
    let e = f.call(&[x2.clone(), Value::from(array![9i64])]).unwrap_err().to_string();
    assert!(e.contains("index 9 is out of range"), "{e}");
    assert_eq!(f.call(&[x2]).unwrap_err().to_string(), "the function takes 2 input(s) (x, i), got 1");
    assert_eq!(f.shared("w").unwrap(), Value::from(array![2.0f32, 2.0]));
}

#[test]
fn each_input_shape_compiles_once() {
    let (_, x, i, next) = counter();
    let mut f = function(&[&x, &i], &[&next]).compile().unwrap();
    let idx = Value::from(array![0i64]);
    for rows in [10, 10, 4, 10, 4] {
        f.call(&[Value::from(Array2::<f32>::ones((rows, 2))), idx.clone()]).unwrap();
    }
    assert_eq!(f.compiled_shapes(), 2);
}

#[test]
fn functions_share_parameters() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [2]).unwrap();
    let w = g.shared("w", array![0.0f32, 0.0]).unwrap();
    let y = x.mul(&w).unwrap().sum_all().unwrap();
    let mut train = function(&[&x], &[&y]).updates([(w.clone(), w.add(&x).unwrap())]).compile().unwrap();
    let mut eval = function(&[&x], &[&y]).compile().unwrap();
    let one = Value::from(array![1.0f32, 1.0]);
    train.call(std::slice::from_ref(&one)).unwrap();
    assert_eq!(eval.call(&[one]).unwrap()[0], Value::from(2.0f32));
}

#[test]
fn shared_values_are_set_by_name_and_predict_runs_on_a_function() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [g.dim("n").unwrap(), Dim::Known(2)]).unwrap();
    let w = g.shared("w", array![[1.0f32], [1.0]]).unwrap();
    let p = x.dot(&w).unwrap().sigmoid().unwrap();
    let mut f = function(&[&x], &[&p]).compile().unwrap();
    f.set_shared("w", Value::from(array![[0.0f32], [0.0]])).unwrap();
    let xs = Array2::<f32>::ones((5, 2));
    let probs = rhea_nn::predict(&mut f, &xs, 2).unwrap();
    assert_eq!(probs, Array2::from_elem((5, 1), 0.5f32));
    let e = f.set_shared("w", Value::from(array![0.0f32])).unwrap_err().to_string();
    assert!(e.contains("shared variable \"w\": expected f32[2,1], got f32[1]"), "{e}");
    assert!(
        f.set_shared("q", Value::from(0.0f32)).unwrap_err().to_string().contains("no shared variable called \"q\"")
    );
    assert_eq!(f.shared("w").unwrap(), Value::from(array![[0.0f32], [0.0]]));
}

#[test]
fn givens_substitute_and_definitions_are_checked() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [2]).unwrap();
    let z = g.input("z", DType::F32, [2]).unwrap();
    let y = x.mul(2.0).unwrap().sum_all().unwrap();
    let mut f = function(&[&z], &[&y]).givens([(x.clone(), z.add(1.0).unwrap())]).compile().unwrap();
    assert_eq!(f.call(&[Value::from(array![0.0f32, 1.0])]).unwrap()[0], Value::from(6.0f32));
    let e = function(&[], &[&y]).compile().err().unwrap().to_string();
    assert!(e.contains("depend on input \"x\", which is not an input of the function"), "{e}");
    let e = function(&[&y], &[&y]).compile().err().unwrap().to_string();
    assert!(e.contains("must be graph inputs"), "{e}");
    let e = function(&[&x], &[&y]).updates([(y.clone(), y.clone())]).compile().err().unwrap().to_string();
    assert!(e.contains("is not a shared variable"), "{e}");
    let e = function(&[&z], &[&y]).givens([(x.clone(), x.add(1.0).unwrap())]).compile().err().unwrap().to_string();
    assert!(e.contains("depends on"), "{e}");
    assert!(function(&[], &[]).compile().is_err());
    let other = Builder::new().input("q", DType::F32, [2]).unwrap();
    assert!(matches!(function(&[&other], &[&y]).compile(), Err(FunctionError::Graph(GraphError::ForeignVar))));
}

#[test]
fn profiles_name_every_step_and_count_calls() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [4, 3]).unwrap();
    let w = g.shared("w", Array2::<f32>::ones((3, 2))).unwrap();
    let y = x.dot(&w).unwrap().tanh().unwrap().sum_all().unwrap();
    let mut f = function(&[&x], &[&y]).compile().unwrap();
    assert!(f.profile().is_none() || profiling_requested());
    f.enable_profile();
    for _ in 0..3 {
        f.call(&[Value::from(Array2::<f32>::ones((4, 3)))]).unwrap();
    }
    let p = f.profile().unwrap();
    assert_eq!(p.calls, 3);
    assert_eq!(p.steps.len(), f.program().steps.len());
    assert!(p.steps.iter().sum::<std::time::Duration>() <= p.total);
    let text = p.to_string();
    assert!(text.starts_with("rhea profile: 3 call(s)"), "{text}");
    assert!(text.contains("gemm %") && text.contains("kernel k0"), "{text}");
    assert!(text.contains("src/function/tests.rs"), "{text}");
}

#[test]
fn updates_written_in_place_keep_theano_semantics() {
    // The old value is an output: the update cannot overwrite it early.
    let g = Builder::new();
    let a = g.shared("a", array![1.0f32, 2.0]).unwrap();
    let doubled = a.mul(2.0).unwrap();
    let mut f = function(&[], &[&a]).updates([(a.clone(), doubled)]).compile().unwrap();
    assert_eq!(f.call(&[]).unwrap()[0], Value::from(array![1.0f32, 2.0]));
    assert_eq!(f.call(&[]).unwrap()[0], Value::from(array![2.0f32, 4.0]));
    assert_eq!(f.shared("a").unwrap(), Value::from(array![4.0f32, 8.0]));
    f.enable_profile();
    f.call(&[]).unwrap();
    assert_eq!(f.profile().unwrap().updates, (1, 0));
    // The Sonar training step: Adam's updates are written by their kernels.
    let m = rhea_nn::models::sonar_mlp(1).unwrap();
    let mut step = function(&[&m.x, &m.y], &[&m.loss]).updates(m.updates.clone()).compile().unwrap();
    step.enable_profile();
    step.call(&[Value::from(Array2::<f32>::zeros((4, 60))), Value::from(Array2::<f32>::ones((4, 1)))]).unwrap();
    let (updates, in_place) = step.profile().unwrap().updates;
    assert_eq!(updates, 19);
    // Two weights are read by the backward pass after their update is
    // computed (the schedule runs updates as early as they are ready).
    assert!(in_place >= 17, "{in_place} of {updates} updates in place");
}

#[test]
fn the_nan_guard_stops_at_the_step_that_made_a_nan_and_changes_nothing() {
    for backend in [Backend::Cpu, Backend::Interp, Backend::CudaEmulated] {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [4]).unwrap();
        let w = g.shared("w", array![1.0f32, 1.0, 1.0, 1.0]).unwrap();
        let h = x.dot(&x.reshape(&[4, 1]).unwrap()).unwrap();
        let y = x.log().unwrap().mul(&w).unwrap();
        let total = y.sum_all().unwrap().add(h.sum_all().unwrap()).unwrap();
        let next = w.add(&y).unwrap();
        let build =
            |guard| function(&[&x], &[&total]).updates([(w.clone(), next.clone())]).backend(backend).nan_guard(guard);
        let bad = Value::from(array![1.0f32, 2.0, 0.0, 3.0]);
        // Unguarded, -inf flows through.
        let mut f = build(false).compile().unwrap();
        assert!(f.call(std::slice::from_ref(&bad)).unwrap()[0].to_f64_vec()[0].is_infinite());
        f.set_shared("w", Value::from(array![1.0f32, 1.0, 1.0, 1.0])).unwrap();
        let mut f = build(true).compile().unwrap();
        let good = Value::from(array![1.0f32, 2.0, 4.0, 3.0]);
        f.call(std::slice::from_ref(&good)).unwrap();
        let before = f.shared("w").unwrap();
        let e = f.call(std::slice::from_ref(&bad)).unwrap_err().to_string();
        assert!(e.contains("NaN guard") && e.contains("an infinity") && e.contains("element 2"), "{backend}: {e}");
        assert!(e.contains("src/function/tests.rs"), "{backend}: the line that built it: {e}");
        assert!(e.contains("min 0.0000e0 max 3.0000e0"), "{backend}: input statistics: {e}");
        assert_eq!(f.shared("w").unwrap(), before, "{backend}: a stopped call changes nothing");
    }
}
