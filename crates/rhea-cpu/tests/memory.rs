//! Dropping compiled kernels frees their machine code: compiling and
//! dropping 10,000 of them (1,000 in debug builds) leaves memory flat.

use rhea_graph::Value;
use rhea_kernel::{Bindings, Kernel};

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm has rss");
    pages * 4
}

fn exp_kernel() -> Kernel {
    Kernel::parse(
        "kernel [4]
           in0: f32[4]
           %0 = load in0 : f32
           %1 = exp %0 : f32
           out0 = %1",
    )
    .unwrap()
}

#[test]
fn compiling_and_dropping_kernels_keeps_memory_flat() {
    let n = if cfg!(debug_assertions) { 1_000 } else { 10_000 };
    let x = Value::from(ndarray::array![0.0f32, 1.0, 2.0, -1.0]);
    let kernels = [exp_kernel()];
    let once = |check: bool| {
        let cpu = rhea_cpu::CpuKernels::compile(&kernels).unwrap();
        let out = cpu.run(0, &[&x], &Bindings::new()).unwrap();
        if check {
            assert_eq!(out[0], Value::from(ndarray::array![1.0f32, 1.0f32.exp(), 2.0f32.exp(), (-1.0f32).exp()]));
        }
    };
    for _ in 0..200 {
        once(true);
    }
    let before = rss_kib();
    for _ in 0..n {
        once(false);
    }
    let grown = rss_kib().saturating_sub(before);
    // Leaked code would cost at least a page per kernel: 40 MiB for 10,000.
    assert!(grown < 8 * 1024, "resident memory grew by {grown} KiB over {n} compile-and-drop cycles");
}
