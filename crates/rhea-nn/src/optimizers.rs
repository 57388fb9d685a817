//! Optimizers as update rules over shared variables, as in Theano: each
//! returns `(variable, new value)` pairs for a compiled function's
//! `updates`. Their own state (moments, step count) is shared variables too,
//! so it is saved, loaded and updated like the parameters.

use rhea_graph::{DType, Value, Var, grad};

use crate::{NnError, Result, init};

/// Something that turns a loss and parameters into update rules.
pub trait Optimizer {
    /// Update pairs that take one optimization step on `loss`.
    fn updates(&self, loss: &Var, params: &[Var]) -> Result<Vec<(Var, Var)>>;
}

fn name_of(p: &Var) -> Result<String> {
    match &p.builder().graph().node(p.id()).op {
        rhea_graph::Op::Shared { name } => Ok(name.to_string()),
        _ => Err(NnError::Data(format!("optimizer parameters must be shared variables, got {p:?}"))),
    }
}

/// Checks that every parameter is a shared variable (only those can be updated).
fn check_params(params: &[Var]) -> Result<()> {
    params.iter().try_for_each(|p| name_of(p).map(drop))
}

/// A shared state variable shaped like `p`, starting at zero.
fn slot(p: &Var, prefix: &str, what: &str) -> Result<Var> {
    let shape = p.shape().to_known().expect("shared variables have known shapes");
    init::param(p.builder(), &format!("{prefix}.{}.{what}", name_of(p)?), &shape, p.dtype(), || {
        init::zeros(&shape, p.dtype())
    })
}

/// Stochastic gradient descent, optionally with (Nesterov) momentum, with
/// Keras' update rule.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 for plain SGD).
    pub momentum: f64,
    /// Nesterov's look-ahead form.
    pub nesterov: bool,
    /// Prefix of the state variables' names.
    pub name: String,
}

impl Default for Sgd {
    fn default() -> Sgd {
        Sgd { lr: 0.01, momentum: 0.0, nesterov: false, name: "sgd".into() }
    }
}

impl Optimizer for Sgd {
    fn updates(&self, loss: &Var, params: &[Var]) -> Result<Vec<(Var, Var)>> {
        check_params(params)?;
        let refs: Vec<&Var> = params.iter().collect();
        let grads = grad(loss, &refs)?;
        let mut out = Vec::new();
        for (p, g) in params.iter().zip(&grads) {
            let step = g.mul(self.lr)?;
            if self.momentum == 0.0 {
                out.push((p.clone(), p.sub(&step)?));
                continue;
            }
            let m = slot(p, &self.name, "momentum")?;
            let m_new = m.mul(self.momentum)?.sub(&step)?;
            let p_new = if self.nesterov { p.add(&m_new.mul(self.momentum)?)?.sub(&step)? } else { p.add(&m_new)? };
            out.push((m, m_new));
            out.push((p.clone(), p_new));
        }
        Ok(out)
    }
}

/// Adam with Keras' defaults and update rule (bias correction folded into
/// the step size, epsilon added to `sqrt(v)`).
#[derive(Clone, Debug)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to `sqrt(v)`.
    pub epsilon: f64,
    /// Prefix of the state variables' names.
    pub name: String,
}

impl Default for Adam {
    fn default() -> Adam {
        Adam { lr: 0.001, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, name: "adam".into() }
    }
}

impl Optimizer for Adam {
    fn updates(&self, loss: &Var, params: &[Var]) -> Result<Vec<(Var, Var)>> {
        let first = params.first().ok_or_else(|| NnError::Data("Adam needs at least one parameter".into()))?;
        check_params(params)?;
        let g = first.builder();
        let refs: Vec<&Var> = params.iter().collect();
        let grads = grad(loss, &refs)?;
        // The step count is an integer, as in Keras: f32 counts exactly only to 2^24.
        let iterations = g.shared(&format!("{}.iterations", self.name), Value::from(0i64))?;
        let step = iterations.add(1i64)?;
        let mut out = vec![(iterations.clone(), step.clone())];
        // One step size per parameter dtype (mixed f32/f64 models work).
        let mut alphas: std::collections::HashMap<DType, Var> = std::collections::HashMap::new();
        for (p, gr) in params.iter().zip(&grads) {
            let dtype = p.dtype();
            let alpha = match alphas.get(&dtype) {
                Some(a) => a.clone(),
                None => {
                    let t = step.cast(dtype)?;
                    let beta1_power = g.scalar(self.beta1, dtype).pow(&t)?;
                    let beta2_power = g.scalar(self.beta2, dtype).pow(&t)?;
                    let a = (1.0 - &beta2_power).sqrt()?.mul(self.lr)?.div(&(1.0 - &beta1_power))?;
                    alphas.insert(dtype, a.clone());
                    a
                }
            };
            let m = slot(p, &self.name, "m")?;
            let v = slot(p, &self.name, "v")?;
            let m_new = m.add(&gr.sub(&m)?.mul(1.0 - self.beta1)?)?;
            let v_new = v.add(&gr.square()?.sub(&v)?.mul(1.0 - self.beta2)?)?;
            let step = alpha.mul(&m_new)?.div(&v_new.sqrt()?.add(self.epsilon)?)?;
            out.push((m, m_new));
            out.push((v, v_new));
            out.push((p.clone(), p.sub(&step)?));
        }
        Ok(out)
    }
}
