//! `verify_grad`: symbolic gradients checked against central finite
//! differences on the interpreter, in `f64`, as Theano and PyTensor do.

use std::collections::HashMap;

use rhea_graph::{Builder, DType, GraphError, Shape, Value, Var, grad};

use crate::{InterpError, run};

/// Tolerances and the step of [`verify_grad`].
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Seed of the random projection that makes the output a scalar cost.
    pub seed: u64,
}

impl Default for VerifyOptions {
    fn default() -> VerifyOptions {
        VerifyOptions { eps: 1e-6, atol: 1e-6, rtol: 1e-5, seed: 1234 }
    }
}

/// Why a gradient check failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Building the graph or its gradient failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Evaluating failed.
    #[error(transparent)]
    Interp(#[from] InterpError),
    /// A point is not an `f64` tensor.
    #[error("verify_grad points must be f64 tensors; point {0} is {1}")]
    NotF64(usize, DType),
    /// The symbolic and numeric gradients disagree.
    #[error("gradient of input {input} at flat index {index}: symbolic {symbolic:e}, numeric {numeric:e}")]
    Mismatch {
        /// Which input.
        input: usize,
        /// Which element of it.
        index: usize,
        /// From `grad`.
        symbolic: f64,
        /// From finite differences.
        numeric: f64,
    },
}

/// Checks the gradient of `build`'s output with respect to each input at
/// `points` (`f64` tensors): the output is projected onto a fixed random
/// tensor to make a scalar cost, whose symbolic gradient must match central
/// finite differences within `atol + rtol * |numeric|`.
///
/// ```
/// use rhea_graph::Value;
/// use rhea_interp::{VerifyOptions, verify_grad};
/// let x = Value::from(ndarray::array![0.3f64, -1.2, 2.0]);
/// verify_grad(|_, v| v[0].tanh(), &[x], VerifyOptions::default())?;
/// # Ok::<(), rhea_interp::VerifyError>(())
/// ```
pub fn verify_grad(
    build: impl Fn(&Builder, &[Var]) -> Result<Var, GraphError>,
    points: &[Value],
    opts: VerifyOptions,
) -> Result<(), VerifyError> {
    for (i, p) in points.iter().enumerate() {
        if p.dtype() != DType::F64 {
            return Err(VerifyError::NotF64(i, p.dtype()));
        }
    }
    let g = Builder::new();
    let inputs = points
        .iter()
        .enumerate()
        .map(|(i, p)| g.input(&format!("x{i}"), DType::F64, Shape::known(p.shape())))
        .collect::<Result<Vec<Var>, _>>()?;
    let out = build(&g, &inputs)?.cast(DType::F64)?;
    let shape = out.shape();
    let projection = g.uniform(shape, DType::F64, 0.5, 1.5, opts.seed)?;
    let cost = (&out * &projection).sum_all()?;
    let refs: Vec<&Var> = inputs.iter().collect();
    let grads = grad(&cost, &refs)?;
    let feeds = |pts: &[Value]| -> HashMap<String, Value> {
        pts.iter().enumerate().map(|(i, p)| (format!("x{i}"), p.clone())).collect()
    };
    let mut wanted = vec![cost.id()];
    wanted.extend(grads.iter().map(Var::id));
    let graph = g.to_graph();
    let values = run(&graph, &feeds(points), &wanted)?;
    let cost_at =
        |pts: &[Value]| -> Result<f64, VerifyError> { Ok(run(&graph, &feeds(pts), &[cost.id()])?[0].to_f64_vec()[0]) };
    for (i, p) in points.iter().enumerate() {
        let symbolic = values[i + 1].to_f64_vec();
        let base = p.to_f64_vec();
        for (j, &s) in symbolic.iter().enumerate() {
            let mut moved = points.to_vec();
            let mut plus = base.clone();
            plus[j] += opts.eps;
            moved[i] = Value::from_f64(DType::F64, p.shape(), &plus).expect("same shape");
            let up = cost_at(&moved)?;
            let mut minus = base.clone();
            minus[j] -= opts.eps;
            moved[i] = Value::from_f64(DType::F64, p.shape(), &minus).expect("same shape");
            let down = cost_at(&moved)?;
            let numeric = (up - down) / (2.0 * opts.eps);
            // Written so that a NaN on either side fails.
            let close = (s - numeric).abs() <= opts.atol + opts.rtol * numeric.abs();
            if !close {
                return Err(VerifyError::Mismatch { input: i, index: j, symbolic: s, numeric });
            }
        }
    }
    Ok(())
}
