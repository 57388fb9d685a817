//! Seeded initializers that give concrete starting values for parameters.

use rhea_graph::{Builder, DType, Shape, TensorType, Value, Var, rng};

use crate::{NnError, Result};

/// Keras' default for Dense kernels: uniform in `±sqrt(6 / (fan_in + fan_out))`.
pub fn glorot_uniform(shape: &[usize], fan_in: usize, fan_out: usize, dtype: DType, seed: u64) -> Result<Value> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    uniform(shape, -limit, limit, dtype, seed)
}

/// Uniform values in `[low, high)` from rhea's counter-based generator.
pub fn uniform(shape: &[usize], low: f64, high: f64, dtype: DType, seed: u64) -> Result<Value> {
    let stream = rng::stream(seed, 0);
    filled(shape, dtype, |i| low + (high - low) * rng::uniform01(stream, i as u64))
}

/// Normal values with the given mean and standard deviation.
pub fn normal(shape: &[usize], mean: f64, std: f64, dtype: DType, seed: u64) -> Result<Value> {
    let stream = rng::stream(seed, 0);
    filled(shape, dtype, |i| mean + std * rng::standard_normal(stream, i as u64))
}

/// Zeros.
pub fn zeros(shape: &[usize], dtype: DType) -> Result<Value> {
    filled(shape, dtype, |_| 0.0)
}

/// Parameter `name` of `shape` and `dtype`, its value made by `make` unless
/// the builder declares types only ([`Builder::types_only`]). The node's
/// location is the caller's.
#[track_caller]
pub fn param(
    g: &Builder,
    name: &str,
    shape: &[usize],
    dtype: DType,
    make: impl FnOnce() -> Result<Value>,
) -> Result<Var> {
    g.shared_with(name, TensorType::new(dtype, Shape::known(shape)), make)
}

/// A parameter's starting value, made straight in its dtype; too little
/// memory is an error naming the shape and the bytes.
fn filled(shape: &[usize], dtype: DType, f: impl Fn(usize) -> f64) -> Result<Value> {
    Value::try_from_fn(dtype, shape, f).map_err(NnError::Data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glorot_stays_in_its_limit_and_is_seeded() {
        let a = glorot_uniform(&[60, 60], 60, 60, DType::F32, 1).unwrap().to_f64_vec();
        let limit = (6.0f64 / 120.0).sqrt();
        assert!(a.iter().all(|v| v.abs() <= limit));
        let spread = a.iter().map(|v| v * v).sum::<f64>() / a.len() as f64;
        assert!((spread - limit * limit / 3.0).abs() < 0.01, "{spread}");
        assert_eq!(a, glorot_uniform(&[60, 60], 60, 60, DType::F32, 1).unwrap().to_f64_vec());
        assert_ne!(a, glorot_uniform(&[60, 60], 60, 60, DType::F32, 2).unwrap().to_f64_vec());
    }
}
