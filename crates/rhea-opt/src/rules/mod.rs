//! The rule families, one file each.

pub mod canonicalize;
pub mod loops;
pub mod specialize;
pub mod stabilize;
pub mod useless;
