//! Seeded initializers that give concrete starting values for parameters.

use rhea_graph::{DType, Value, rng};

/// Keras' default for Dense kernels: uniform in `±sqrt(6 / (fan_in + fan_out))`.
pub fn glorot_uniform(shape: &[usize], fan_in: usize, fan_out: usize, dtype: DType, seed: u64) -> Value {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    uniform(shape, -limit, limit, dtype, seed)
}

/// Uniform values in `[low, high)` from rhea's counter-based generator.
pub fn uniform(shape: &[usize], low: f64, high: f64, dtype: DType, seed: u64) -> Value {
    let stream = rng::stream(seed, 0);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| low + (high - low) * rng::uniform01(stream, i as u64)).collect();
    Value::from_f64(dtype, shape, &data).expect("data sized to the shape")
}

/// Normal values with the given mean and standard deviation.
pub fn normal(shape: &[usize], mean: f64, std: f64, dtype: DType, seed: u64) -> Value {
    let stream = rng::stream(seed, 0);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| mean + std * rng::standard_normal(stream, i as u64)).collect();
    Value::from_f64(dtype, shape, &data).expect("data sized to the shape")
}

/// Zeros.
pub fn zeros(shape: &[usize], dtype: DType) -> Value {
    let n: usize = shape.iter().product();
    Value::from_f64(dtype, shape, &vec![0.0; n]).expect("data sized to the shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glorot_stays_in_its_limit_and_is_seeded() {
        let a = glorot_uniform(&[60, 60], 60, 60, DType::F32, 1).to_f64_vec();
        let limit = (6.0f64 / 120.0).sqrt();
        assert!(a.iter().all(|v| v.abs() <= limit));
        let spread = a.iter().map(|v| v * v).sum::<f64>() / a.len() as f64;
        assert!((spread - limit * limit / 3.0).abs() < 0.01, "{spread}");
        assert_eq!(a, glorot_uniform(&[60, 60], 60, 60, DType::F32, 1).to_f64_vec());
        assert_ne!(a, glorot_uniform(&[60, 60], 60, 60, DType::F32, 2).to_f64_vec());
    }
}
