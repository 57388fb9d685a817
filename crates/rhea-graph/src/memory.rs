//! Memory in messages and before large allocations: the sizes that a
//! user's graph or file asks for are checked before anything is allocated,
//! so that too little memory is an error naming the bytes and what they
//! were for, never an abort.

use std::collections::TryReserveError;

/// `n` bytes for a person: `8.0 TB (8000000000000 bytes)`, `512 bytes`.
pub fn format_bytes(n: u128) -> String {
    const UNITS: [(&str, u128); 4] =
        [("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)];
    match UNITS.iter().find(|(_, size)| n >= *size) {
        Some((unit, size)) => format!("{:.1} {unit} ({n} bytes)", n as f64 / *size as f64),
        None => format!("{n} bytes"),
    }
}

/// Whether `bytes` can be allocated now: reserves them and gives them back.
/// A value about to be computed is checked this way, since the ops that
/// make it allocate through ndarray, which aborts on failure.
pub fn can_allocate(bytes: usize) -> Result<(), TryReserveError> {
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes)
}

/// The bytes of `elements` values of `dtype`, if that fits in `usize`.
pub fn value_bytes(elements: usize, dtype: crate::DType) -> Option<usize> {
    elements.checked_mul(dtype.size_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them_and_huge_ones_are_refused() {
        assert_eq!(format_bytes(512), "512 bytes");
        assert_eq!(format_bytes(8_000_000_000_000), "8.0 TB (8000000000000 bytes)");
        assert_eq!(format_bytes(1_250_000_000), "1.2 GB (1250000000 bytes)");
        assert!(can_allocate(1 << 20).is_ok());
        assert!(can_allocate(usize::MAX / 2).is_err());
        assert_eq!(value_bytes(usize::MAX, crate::DType::F32), None);
    }
}
