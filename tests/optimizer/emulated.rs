//! What the generated CUDA kernels compute, checked without a GPU: every
//! kernel the test suite generates (`ptx.rs` collects them) runs in
//! rhea-cuda's PTX emulator on random inputs, special values among them,
//! and its outputs are compared with the kernel IR's reference evaluator
//! on the same inputs. Outputs start as 0xFF bytes, so an element the
//! kernel fails to write shows; the emulator itself refuses out-of-bounds
//! and misaligned accesses, reads of unwritten registers, and shuffles or
//! barriers reached by part of a warp.

use rhea::kernel::eval_kernel;
use rhea::{DType, Value};
use rhea_cuda::emu::{Memory, Module};
use rhea_cuda::{Target, module};

use crate::kit::close;
use crate::ptx::{Generated, Suite, generated_kernels};
use crate::random::Rng;

/// Random elements of `dtype`: mostly moderate values, one in sixteen a
/// special one (zeros of both signs, infinities, NaN, huge and tiny).
/// Tensors of over 1024 elements get no NaN, infinity or huge value: one
/// would decide every sum or maximum over them, and hide the rest.
fn random_value(r: &mut Rng, dtype: DType, shape: &[usize]) -> Value {
    const SPECIAL: [f64; 8] = [0.0, -0.0, -1e-30, 88.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e30];
    let n: usize = shape.iter().product();
    let kinds = if n > 1024 { 4 } else { SPECIAL.len() };
    let floats: Vec<f64> =
        (0..n).map(|_| if r.below(16) == 0 { SPECIAL[r.below(kinds)] } else { (r.unit() - 0.5) * 8.0 }).collect();
    let bytes: Vec<u8> = match dtype {
        DType::F32 => floats.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        DType::F64 => floats.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        DType::I32 => (0..n).flat_map(|_| (r.below(19) as i32 - 9).to_le_bytes()).collect(),
        DType::I64 => (0..n).flat_map(|_| (r.below(19) as i64 - 9).to_le_bytes()).collect(),
        DType::Bool => (0..n).map(|_| r.below(2) as u8).collect(),
    };
    Value::from_le_bytes(dtype, shape, &bytes).expect("sizes match")
}

/// Runs one generated kernel in the emulator and by the reference; `Err`
/// says how they differ.
fn check(g: &Generated, seed: u64) -> Result<(), String> {
    let mut r = Rng::new(seed, 91);
    let inputs: Vec<Value> =
        g.kernel.inputs.iter().zip(&g.shapes).map(|(spec, shape)| random_value(&mut r, spec.dtype, shape)).collect();
    let refs: Vec<&Value> = inputs.iter().collect();
    let want = eval_kernel(&g.kernel, &refs, &g.bindings).map_err(|e| format!("reference: {e}"))?;
    let ptx = module(Target::MIN, &[&g.lowered]);
    let m = Module::parse(&ptx)?;
    let mut mem = Memory::default();
    let mut params = Vec::new();
    for v in &inputs {
        let bytes = v.to_le_bytes();
        let at = mem.alloc(bytes.len());
        mem.write(at, &bytes)?;
        params.push(at);
    }
    let outs: Vec<u64> = want.iter().map(|w| mem.alloc(w.len() * w.dtype().size_bytes())).collect();
    params.extend(&outs);
    let l = &g.lowered;
    if l.scratch > 0 {
        params.push(mem.alloc(l.scratch));
    }
    m.launch(&l.name, l.grid, l.block, &params, &mut mem)?;
    if let Some(stage) = &l.finish {
        m.launch(&stage.name, stage.grid, stage.block, &params, &mut mem)?;
    }
    for (o, (w, &at)) in want.iter().zip(&outs).enumerate() {
        let bytes = mem.read(at, w.len() * w.dtype().size_bytes())?;
        let got = Value::from_le_bytes(w.dtype(), w.shape(), bytes)?;
        close(w, &got, 1e-6).map_err(|e| format!("output {o}: {e}"))?;
    }
    Ok(())
}

#[test]
fn every_generated_kernel_computes_in_the_emulator_what_the_reference_does() {
    let Suite { kernels, programs, .. } = generated_kernels(100);
    let mut failures = Vec::new();
    for (i, g) in kernels.iter().enumerate() {
        if let Err(e) = check(g, i as u64) {
            failures
                .push(format!("{} ({}, grid {} x {}): {e}", g.tag, g.lowered.shape, g.lowered.grid, g.lowered.block));
        }
    }
    let mut shapes: Vec<&str> = kernels.iter().map(|k| k.lowered.shape).collect();
    shapes.sort();
    shapes.dedup();
    assert!(
        failures.is_empty(),
        "{} of {} kernels differ from the reference in the emulator:\n{}",
        failures.len(),
        kernels.len(),
        failures.join("\n")
    );
    assert_eq!(shapes.len(), 5, "every organization is exercised: {shapes:?}");
    println!("{} kernels from {programs} programs agree with the reference in the PTX emulator", kernels.len());
}
