//! End-to-end tests of rhea: the `rhea` command-line tool run as a user runs
//! it, safetensors files written by numpy, the docs' examples, and the
//! crate-dependency invariants of `docs/architecture.md`.
//!
//! One test binary with modules, to keep link time low. Golden files live in
//! `tests/golden/`; refresh them with `RHEA_BLESS=1 cargo test --test cli`.

mod architecture;
mod bench;
mod check;
mod docs;
mod dump;
mod errors;
mod grad;
mod optimized;
mod python;
mod run;
mod sonar;
mod support;
mod vgg16;
