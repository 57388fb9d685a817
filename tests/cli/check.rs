//! `rhea check`: the interpreter and a compiled backend (the CPU, or the
//! CUDA backend on the emulated GPU), node by node or step by step.

use ndarray::array;
use rhea::{Builder, DType, Value};

use crate::support::{mlp, rhea, tempdir, write_graph, write_tensors};

/// The test MLP's graph and a batch of inputs for it, written into `dir`.
fn mlp_with_inputs(dir: &std::path::Path) -> (String, String) {
    let graph = write_graph(dir, "mlp.json", &mlp());
    let x = Value::from(array![[1.0f32, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]);
    (graph, write_tensors(dir, "in.safetensors", &[("x", x)]))
}

#[test]
fn agreeing_backends_report_how_many_nodes_were_compared() {
    let dir = tempdir();
    let (graph, inputs) = mlp_with_inputs(dir.path());
    let out = rhea(&["check", &graph, "--inputs", &inputs]).ok().to_string();
    assert!(out.starts_with("checked ") && out.contains(" nodes: interp and cpu agree within 0.0001"), "{out}");
    // The CUDA backend's code, node by node, on the emulated GPU.
    let out = rhea(&["check", &graph, "--inputs", &inputs, "--backends", "interp,cuda-emu"]).ok().to_string();
    assert!(out.contains(" nodes: interp and cuda-emu agree within 0.0001"), "{out}");
}

#[test]
fn the_first_differing_node_is_named_with_both_values() {
    // The CPU's inline f32 tanh is within an ulp or so of the exact one:
    // with no tolerance at all, tanh is the first node that differs.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [64]).unwrap();
    let y = x.mul(3.0).unwrap().tanh().unwrap().named("squashed");
    g.output("y", &y.add(1.0).unwrap()).unwrap();
    let dir = tempdir();
    let graph = write_graph(dir.path(), "tanh.json", &g.to_graph());
    let xs: Vec<f32> = (0..64).map(|i| i as f32 * 0.0731 - 2.3).collect();
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", Value::from(ndarray::Array1::from(xs)))]);
    let out = rhea(&["check", &graph, "--inputs", &inputs, "--tolerance", "0"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("(tanh : f32[64], built at tests/cli/check.rs:"), "{}", out.stdout);
    assert!(
        out.stdout.contains("differs at element") && out.stdout.contains("interp ") && out.stdout.contains(", cpu "),
        "{}",
        out.stdout
    );
    rhea(&["check", &graph, "--inputs", &inputs, "--backends", "cpu,interp"])
        .fails_with(&["compares the interpreter with one backend", "interp,cpu, interp,cuda or interp,cuda-emu"]);
    rhea(&["check", &graph, "--inputs", &inputs, "--tolerance=-1"]).fails_with(&["--tolerance must be a number >= 0"]);
}

#[test]
fn the_fused_program_is_checked_step_by_step_naming_the_kernel() {
    let dir = tempdir();
    let (graph, inputs) = mlp_with_inputs(dir.path());
    let out = rhea(&["check", &graph, "--inputs", &inputs, "--fused"]).ok().to_string();
    assert!(out.contains("step outputs of the fused program: interp and cpu agree within 0.0001"), "{out}");
    let out =
        rhea(&["check", &graph, "--inputs", &inputs, "--fused", "--backends", "interp,cuda-emu"]).ok().to_string();
    assert!(out.contains("step outputs of the fused program: interp and cuda-emu agree within 0.0001"), "{out}");
    // With no tolerance, the inline tanh differs from the exact one inside
    // a fused kernel, which is named with the nodes it fuses.
    let g = Builder::new();
    let x = g.input("x", DType::F32, [64]).unwrap();
    let y = x.mul(3.0).unwrap().tanh().unwrap().add(1.0).unwrap();
    g.output("y", &y).unwrap();
    let graph = write_graph(dir.path(), "tanh.json", &g.to_graph());
    let xs: Vec<f32> = (0..64).map(|i| i as f32 * 0.0731 - 2.3).collect();
    let inputs = write_tensors(dir.path(), "in.safetensors", &[("x", Value::from(ndarray::Array1::from(xs)))]);
    // The GPU's tanh is the CPU's algorithm: the same kernel differs there.
    for backend in ["interp,cpu", "interp,cuda-emu"] {
        let out = rhea(&["check", &graph, "--inputs", &inputs, "--fused", "--tolerance", "0", "--backends", backend]);
        assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("computed by kernel k0 (fuses "), "{}", out.stdout);
        assert!(out.stdout.contains("built at tests/cli/check.rs:"), "{}", out.stdout);
    }
    if !rhea_cuda::driver_present() {
        rhea(&["check", &graph, "--inputs", &inputs, "--fused", "--backends", "interp,cuda"])
            .fails_with(&["no CUDA driver found"]);
    }
}
