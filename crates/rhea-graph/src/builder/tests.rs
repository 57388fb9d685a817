//! The builder's unit tests.

use super::*;

#[test]
fn values_held_on_a_device_come_back_when_anyone_reads_the_graph() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let g = Builder::new();
    let w = g.shared("w", Value::from(1.0f32)).unwrap();
    let v = g.shared("v", Value::from(5.0f32)).unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let fetch: crate::Fetch = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(Value::from(2.0f32))
    });
    let before = g.0.borrow().shared_version(w.id());
    let version = g.0.borrow_mut().set_shared_pending(w.id(), 7, fetch);
    assert_ne!(version, before, "the device's value is a new version");
    // The owner's own access leaves its value on the device.
    assert_eq!(g.graph_mut_for(7).shared_value(w.id()), Some(&Value::from(1.0f32)));
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
    // Anyone else's brings it back, once, keeping the version.
    assert_eq!(g.graph().shared_value(w.id()), Some(&Value::from(2.0f32)));
    assert_eq!(g.graph().shared_value(w.id()), Some(&Value::from(2.0f32)));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(g.graph().shared_version(w.id()), version);
    // A host write wins over a value still on a device.
    let stale: crate::Fetch = Arc::new(|| Ok(Value::from(9.0f32)));
    g.0.borrow_mut().set_shared_pending(v.id(), 7, stale);
    g.0.borrow_mut().set_shared_value(v.id(), Value::from(6.0f32)).unwrap();
    assert_eq!(g.graph().shared_value(v.id()), Some(&Value::from(6.0f32)));
    // A value that cannot be fetched keeps its host copy; the reason is named.
    let broken: crate::Fetch = Arc::new(|| Err("the GPU fell off the bus".into()));
    g.0.borrow_mut().set_shared_pending(v.id(), 7, broken);
    let errors = g.0.borrow_mut().sync_shared(None);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("\"v\"") && errors[0].contains("fell off the bus"), "{errors:?}");
    assert_eq!(g.graph().shared_value(v.id()), Some(&Value::from(6.0f32)));
}

#[test]
fn operators_build_typed_nodes_with_locations() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [2, 3]).unwrap();
    let w = g.shared("w", ndarray::Array2::<f32>::zeros((3, 4))).unwrap();
    let b = g.shared("b", ndarray::Array1::<f32>::zeros(4)).unwrap();
    let y = &x.dot(&w).unwrap() + &b;
    assert_eq!(y.ty().to_string(), "f32[2,4]");
    let loc = g.graph().node(y.id()).loc.clone().unwrap();
    assert!(loc.file().ends_with("builder/tests.rs"), "{loc}");
    assert_eq!(loc.line(), line!() - 4);
    let z = 1.0 - &y * 2.0;
    assert_eq!(z.ty().to_string(), "f32[2,4]");
}

#[test]
fn operator_panics_name_the_rule_and_try_forms_return_errors() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [3]).unwrap();
    let y = g.input("y", DType::F32, [4]).unwrap();
    let err = x.try_add(&y).unwrap_err().to_string();
    let rule = |e: &str| e.split(" at ").next().unwrap_or_default().to_string();
    assert_eq!(rule(&err), rule(&x.add(&y).unwrap_err().to_string()));
    assert!(err.starts_with("add: shapes [3] and [4] do not broadcast"), "{err}");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| &x + &y)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.contains("shapes [3] and [4] do not broadcast"), "{msg}");
    let i = g.input("i", DType::I32, [3]).unwrap();
    assert!(i.mul(2.5).unwrap_err().to_string().contains("without loss"));
    assert!(i.mul(2.0).is_ok());
    assert_eq!((&x * 0.1).dtype(), DType::F32);
}

#[test]
fn vars_of_two_builders_do_not_mix() {
    let (g1, g2) = (Builder::new(), Builder::new());
    let a = g1.input("a", DType::F32, [3]).unwrap();
    let b = g2.input("b", DType::F32, [3]).unwrap();
    assert!(matches!(a.add(&b), Err(GraphError::ForeignVar)));
}

#[test]
fn reshape_infers_symbolic_and_known_dims() {
    let g = Builder::new();
    let batch = g.dim("batch").unwrap();
    let x = g.input("x", DType::F32, [batch, Dim::Known(3), Dim::Known(4)]).unwrap();
    assert_eq!(x.reshape(&[-1, 12]).unwrap().shape().to_string(), "[batch,12]");
    assert_eq!(x.flatten(1).unwrap().shape().to_string(), "[batch,12]");
    assert!(x.reshape(&[-1, 5]).is_err());
    assert!(x.reshape(&[-1, -1]).is_err());
    let y = g.input("y", DType::F32, [6, 4]).unwrap();
    assert_eq!(y.reshape(&[3, -1]).unwrap().shape().to_string(), "[3,8]");
    assert_eq!(y.flatten(0).unwrap().shape().to_string(), "[24]");
}

#[test]
fn shape_helpers() {
    let g = Builder::new();
    let x = g.input("x", DType::F32, [2, 1, 3]).unwrap();
    assert_eq!(x.transpose().unwrap().shape().to_string(), "[3,1,2]");
    assert_eq!(x.squeeze(&[]).unwrap().shape().to_string(), "[2,3]");
    assert_eq!(x.expand_dims(-1).unwrap().shape().to_string(), "[2,1,3,1]");
    assert_eq!(x.permute(&[2, 0, 1]).unwrap().shape().to_string(), "[3,2,1]");
    assert!(x.squeeze(&[0]).is_err());
    assert_eq!(stack(&[&x, &x], 1).unwrap().shape().to_string(), "[2,2,1,3]");
    assert_eq!(concat(&[&x, &x], -1).unwrap().shape().to_string(), "[2,1,6]");
    assert_eq!(x.sum(&[-1, 0], true).unwrap().shape().to_string(), "[1,1,1]");
    assert!(x.sum(&[0, -3], false).is_err());
    let c = x.greater(0.0).unwrap();
    assert_eq!(where_(&c, &x, 0.0).unwrap().ty().to_string(), "f32[2,1,3]");
}
