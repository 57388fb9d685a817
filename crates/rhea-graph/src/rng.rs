//! The counter-based random numbers behind dropout and the random ops.
//!
//! Every random element is a pure function of (seed, key, element index), so
//! each backend computes the same values without shared generator state, in
//! any order and in parallel. This module is the specification.

/// SplitMix64's finalizer: a bijective 64-bit mixer.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream for an op's `seed` and call-time `key` (0 without a key input).
pub fn stream(seed: u64, key: i64) -> u64 {
    splitmix64(seed ^ splitmix64(key as u64))
}

/// 64 random bits for element `index` of `stream`.
pub fn bits(stream: u64, index: u64) -> u64 {
    splitmix64(stream ^ splitmix64(index.wrapping_mul(2).wrapping_add(1)))
}

/// A uniform value in `[0, 1)` with 53 random bits.
pub fn uniform01(stream: u64, index: u64) -> f64 {
    (bits(stream, index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal value (Box-Muller over elements `2i` and `2i+1`).
pub fn standard_normal(stream: u64, index: u64) -> f64 {
    let u1 = 1.0 - uniform01(stream, index.wrapping_mul(2));
    let u2 = uniform01(stream, index.wrapping_mul(2).wrapping_add(1));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_normal_moments() {
        let s = stream(42, 0);
        let n = 20_000;
        let u: Vec<f64> = (0..n).map(|i| uniform01(s, i)).collect();
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let z: Vec<f64> = (0..n).map(|i| standard_normal(s, i)).collect();
        let m = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{m} {var}");
    }

    #[test]
    fn keys_and_seeds_give_different_streams() {
        assert_ne!(uniform01(stream(1, 0), 0), uniform01(stream(1, 1), 0));
        assert_ne!(uniform01(stream(1, 0), 0), uniform01(stream(2, 0), 0));
        assert_eq!(uniform01(stream(7, 3), 11), uniform01(stream(7, 3), 11));
    }
}
