//! Golden PTX for a few kernels, one of each organization: a broadcast
//! elementwise kernel with a transcendental, a contiguous kernel moved in
//! 16-byte vectors, a reduction with a thread per output, and one with a
//! block per output. `RHEA_BLESS=1` rewrites the files after a deliberate
//! change; review the diff. Each is also assembled when `ptxas` exists.

use rhea_kernel::Kernel;

/// relu(x + b) * exp(x), x [4,5] and b [5] broadcast over rows.
fn bias_relu_exp() -> (Kernel, Vec<usize>) {
    let k = Kernel::parse(
        "kernel [4,5]
           in0: f32[4,5]
           in1: f32[5] view [_,0]
           %0 = load in0 : f32
           %1 = load in1 : f32
           %2 = add %0, %1 : f32
           %3 = relu %2 : f32
           %4 = exp %0 : f32
           %5 = mul %3, %4 : f32
           out0 = %5",
    )
    .unwrap();
    (k, vec![4, 5])
}

/// x * 0.5 + y over 1024 contiguous elements.
fn axpy() -> (Kernel, Vec<usize>) {
    let k = Kernel::parse(
        "kernel [1024]
           in0: f32[1024]
           in1: f32[1024]
           %0 = load in0 : f32
           %1 = const 0.5 : f32
           %2 = mul %0, %1 : f32
           %3 = load in1 : f32
           %4 = add %2, %3 : f32
           out0 = %4",
    )
    .unwrap();
    (k, vec![1024])
}

/// The row means of a [6, n] matrix: a thread per row for small n, a block
/// per row for large.
fn row_mean(n: usize) -> (Kernel, Vec<usize>) {
    let k = Kernel::parse(&format!(
        "kernel [6,{n}] reduce mean axes=[1]
           in0: f32[6,{n}]
           %0 = load in0 : f32
           out0 = reduce(%0)"
    ))
    .unwrap();
    (k, vec![6, n])
}

fn check(name: &str, (k, dims): (Kernel, Vec<usize>)) {
    let shapes: Vec<Vec<usize>> = k.inputs.iter().map(|i| i.shape.to_known().unwrap()).collect();
    let lowered = rhea_cuda::lower_kernel(&k, name, &dims, &shapes).unwrap();
    let target = rhea_cuda::Target { sm: 80 };
    let text = format!(
        "// {}, grid {} x block {}\n{}",
        lowered.shape,
        lowered.grid,
        lowered.block,
        rhea_cuda::module(target, &[&lowered])
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.ptx"));
    if std::env::var("RHEA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with RHEA_BLESS=1 to create it)", path.display()));
    assert!(golden == text, "{name}: the PTX differs from {}; rerun with RHEA_BLESS=1 if intended", path.display());
    match rhea_cuda::ptxas::find() {
        Some(ptxas) => rhea_cuda::ptxas::assemble(&ptxas, &text, target).unwrap(),
        None if std::env::var("RHEA_REQUIRE_PTXAS").is_ok_and(|v| v == "1") => {
            panic!("RHEA_REQUIRE_PTXAS=1 but no ptxas was found (pip install nvidia-cuda-nvcc-cu12)")
        }
        None => println!("NOT RUN: ptxas not found; {name} was compared with its golden file only"),
    }
}

#[test]
fn golden_ptx() {
    check("bias_relu_exp", bias_relu_exp());
    check("axpy_vector", axpy());
    check("row_mean_thread", row_mean(10));
    check("row_mean_block", row_mean(1000));
}
