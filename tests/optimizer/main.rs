//! The optimizer end to end: every rule, fusion and the memory plan, and
//! random graphs, each checked against the unoptimized graph on the
//! interpreter.

mod emulated;
mod epilogue_cpu;
mod golden_cpu;
mod gpu;
mod kept;
mod kit;
mod loops;
mod nan_guard;
mod plan;
mod precision;
mod ptx;
mod random;
mod rules;
mod spatial;
mod vgg;
