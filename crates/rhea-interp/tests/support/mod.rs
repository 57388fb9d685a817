//! What the gradient test binaries share: deterministic test points, and
//! derivatives of any order as graphs for `verify_grad` to check.

use rhea_graph::{Builder, DType, GraphError, Value, Var, concat, grad, rng};

/// Builds a graph's output from its inputs.
pub type BuildFn = dyn Fn(&Builder, &[Var]) -> Result<Var, GraphError>;
/// A [`BuildFn`] to keep in a table of cases.
pub type Build = Box<BuildFn>;

/// Deterministic f64 points in `[lo, hi)`, with a random sign if `signed`.
pub fn pt(shape: &[usize], lo: f64, hi: f64, signed: bool, seed: u64) -> Value {
    let s = rng::stream(seed, 0);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|i| {
            let v = lo + (hi - lo) * rng::uniform01(s, 2 * i as u64);
            if signed && rng::uniform01(s, 2 * i as u64 + 1) < 0.5 { -v } else { v }
        })
        .collect();
    Value::from_f64(DType::F64, shape, &data).unwrap()
}

/// Values bounded away from zero, either sign.
pub fn away(shape: &[usize], seed: u64) -> Value {
    pt(shape, 0.2, 1.5, true, seed)
}

/// Strictly positive values.
pub fn pos(shape: &[usize], seed: u64) -> Value {
    pt(shape, 0.2, 2.0, false, seed)
}

/// `build`, then `order - 1` times the gradient, with respect to every
/// input, of the sum of its squares, the gradients flattened and joined:
/// `verify_grad` of it checks the `order`-th derivative of `build`, through
/// the gradient rules of every op in it.
pub fn derivative(order: usize, build: &BuildFn) -> impl Fn(&Builder, &[Var]) -> Result<Var, GraphError> + '_ {
    move |g, v| {
        let mut y = build(g, v)?;
        for _ in 1..order {
            let cost = y.cast(DType::F64)?.square()?.sum_all()?;
            let grads = grad(&cost, &v.iter().collect::<Vec<_>>())?;
            let flat = grads.iter().map(|d| d.reshape(&[-1])).collect::<Result<Vec<_>, _>>()?;
            y = concat(&flat.iter().collect::<Vec<_>>(), 0)?;
        }
        Ok(y)
    }
}
