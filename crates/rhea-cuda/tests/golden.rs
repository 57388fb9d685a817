//! Golden PTX for a few kernels, one of each organization: a broadcast
//! elementwise kernel with a transcendental, a contiguous kernel moved in
//! 16-byte vectors, a reduction with a thread per output, and one with a
//! block per output. `RHEA_BLESS=1` rewrites the files after a deliberate
//! change; review the diff. Each is also assembled when `ptxas` exists.

use rhea_graph::{BinaryOp, DType, F64, Shape, UnaryOp};
use rhea_kernel::{Combine, Const, Inst, Kernel, KernelInput, KernelOutput, Reduction};

fn input(shape: &[usize], axes: Vec<Option<usize>>) -> KernelInput {
    KernelInput { dtype: DType::F32, shape: Shape::known(shape), axes }
}

/// relu(x + b) * exp(x), x [4,5] and b [5] broadcast over rows.
fn bias_relu_exp() -> (Kernel, Vec<usize>) {
    let k = Kernel {
        domain: Shape::known(&[4, 5]),
        inputs: vec![input(&[4, 5], vec![Some(0), Some(1)]), input(&[5], vec![None, Some(0)])],
        body: vec![
            (Inst::Load { input: 0 }, DType::F32),
            (Inst::Load { input: 1 }, DType::F32),
            (Inst::Binary { op: BinaryOp::Add, a: 0, b: 1 }, DType::F32),
            (Inst::Unary { op: UnaryOp::Relu, x: 2 }, DType::F32),
            (Inst::Unary { op: UnaryOp::Exp, x: 0 }, DType::F32),
            (Inst::Binary { op: BinaryOp::Mul, a: 3, b: 4 }, DType::F32),
        ],
        outputs: vec![KernelOutput { value: 5, reduced: false }],
        reduce: None,
    };
    (k, vec![4, 5])
}

/// x * 0.5 + y over 1024 contiguous elements.
fn axpy() -> (Kernel, Vec<usize>) {
    let k = Kernel {
        domain: Shape::known(&[1024]),
        inputs: vec![input(&[1024], vec![Some(0)]), input(&[1024], vec![Some(0)])],
        body: vec![
            (Inst::Load { input: 0 }, DType::F32),
            (Inst::Const { value: Const::Float(F64(0.5)) }, DType::F32),
            (Inst::Binary { op: BinaryOp::Mul, a: 0, b: 1 }, DType::F32),
            (Inst::Load { input: 1 }, DType::F32),
            (Inst::Binary { op: BinaryOp::Add, a: 2, b: 3 }, DType::F32),
        ],
        outputs: vec![KernelOutput { value: 4, reduced: false }],
        reduce: None,
    };
    (k, vec![1024])
}

/// The row means of a [6, n] matrix: a thread per row for small n, a block
/// per row for large.
fn row_mean(n: usize) -> (Kernel, Vec<usize>) {
    let k = Kernel {
        domain: Shape::known(&[6, n]),
        inputs: vec![input(&[6, n], vec![Some(0), Some(1)])],
        body: vec![(Inst::Load { input: 0 }, DType::F32)],
        outputs: vec![KernelOutput { value: 0, reduced: true }],
        reduce: Some(Reduction { combine: Combine::Mean, axes: vec![1], keepdims: false }),
    };
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
