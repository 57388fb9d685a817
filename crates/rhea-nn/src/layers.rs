//! Layers as graph builders: each owns its parameters (shared variables)
//! and adds its forward computation to the graph.

use rhea_graph::{Builder, DType, Var};

use crate::{Result, init};

/// An activation applied after a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The identity (the layer gives logits).
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax over the last axis.
    Softmax,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: &Var) -> Result<Var> {
        Ok(match self {
            Activation::Linear => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::Sigmoid => x.sigmoid()?,
            Activation::Tanh => x.tanh()?,
            Activation::Softmax => x.softmax(-1)?,
        })
    }
}

/// A fully connected layer `x @ weight + bias`, weights stored `[in, out]`,
/// initialized like Keras' Dense (Glorot-uniform kernel, zero bias).
#[derive(Clone, Debug)]
pub struct Dense {
    /// `[inputs, units]`, named `{name}.weight`.
    pub weight: Var,
    /// `[units]`, named `{name}.bias`.
    pub bias: Var,
}

impl Dense {
    /// A new layer with parameters `{name}.weight` and `{name}.bias`.
    pub fn new(g: &Builder, name: &str, inputs: usize, units: usize, seed: u64) -> Result<Dense> {
        let weight = g.shared(
            &format!("{name}.weight"),
            init::glorot_uniform(&[inputs, units], inputs, units, DType::F32, seed),
        )?;
        let bias = g.shared(&format!("{name}.bias"), init::zeros(&[units], DType::F32))?;
        Ok(Dense { weight, bias })
    }

    /// `x @ weight + bias`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.dot(&self.weight)?.add(&self.bias)?)
    }

    /// The trainable parameters.
    pub fn params(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}
