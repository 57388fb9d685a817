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
        let shape = [inputs, units];
        let weight = init::param(g, &format!("{name}.weight"), &shape, DType::F32, || {
            init::glorot_uniform(&shape, inputs, units, DType::F32, seed)
        })?;
        let bias = init::param(g, &format!("{name}.bias"), &[units], DType::F32, || init::zeros(&[units], DType::F32))?;
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

/// A 2-d convolution over NCHW images, `conv2d(x, weight) + bias`, weights
/// stored OIHW (as PyTorch stores them) and initialized as torchvision
/// initializes VGG: Kaiming-normal for the ReLU that follows (fan-out), zero
/// bias.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[out, in, kh, kw]`, named `{name}.weight`.
    pub weight: Var,
    /// `[out]`, named `{name}.bias`.
    pub bias: Var,
    /// Stride, padding, dilation, groups.
    pub params: rhea_graph::Conv2d,
}

impl Conv2d {
    /// A new `kernel x kernel` layer with "same" padding for odd kernels at
    /// stride 1 (`padding = kernel / 2`).
    pub fn new(g: &Builder, name: &str, inputs: usize, outputs: usize, kernel: usize, seed: u64) -> Result<Conv2d> {
        Conv2d::typed(g, name, [inputs, outputs, kernel], DType::F32, seed)
    }

    /// [`Conv2d::new`] with parameters of `dtype`; `sizes` is
    /// `[inputs, outputs, kernel]`.
    pub fn typed(g: &Builder, name: &str, sizes: [usize; 3], dtype: DType, seed: u64) -> Result<Conv2d> {
        let [inputs, outputs, kernel] = sizes;
        let fan_out = outputs * kernel * kernel;
        let std = (2.0 / fan_out.max(1) as f64).sqrt();
        let shape = [outputs, inputs, kernel, kernel];
        let weight =
            init::param(g, &format!("{name}.weight"), &shape, dtype, || init::normal(&shape, 0.0, std, dtype, seed))?;
        let bias = init::param(g, &format!("{name}.bias"), &[outputs], dtype, || init::zeros(&[outputs], dtype))?;
        let params = rhea_graph::Conv2d { padding: [kernel / 2, kernel / 2], ..rhea_graph::Conv2d::default() };
        Ok(Conv2d { weight, bias, params })
    }

    /// `conv2d(x, weight) + bias` (the bias broadcast over height and width).
    pub fn forward(&self, x: &Var) -> Result<Var> {
        let bias = self.bias.reshape(&[-1, 1, 1])?;
        Ok(x.conv2d(&self.weight, self.params.clone())?.add(&bias)?)
    }

    /// The trainable parameters.
    pub fn params(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}

/// Max pooling over `k x k` windows with stride `k` (VGG's 2x2).
pub fn max_pool2d(x: &Var, k: usize) -> Result<Var> {
    Ok(x.max_pool2d(rhea_graph::Pool2d::square(k))?)
}

/// Keeps the batch axis and flattens the rest (PyTorch's `flatten(x, 1)`).
pub fn flatten(x: &Var) -> Result<Var> {
    Ok(x.flatten(1)?)
}

/// Inverted dropout: in training, zeroes each element with probability
/// `rate` (seeded) and scales the rest by `1 / (1 - rate)`; at inference,
/// the identity.
pub fn dropout(x: &Var, rate: f64, seed: u64, training: bool) -> Result<Var> {
    Ok(x.dropout(rate, seed, training)?)
}

impl Dense {
    /// A layer initialized as torchvision initializes `nn.Linear` in VGG:
    /// weights normal with standard deviation 0.01, zero bias, of `dtype`.
    pub fn torchvision(g: &Builder, name: &str, inputs: usize, units: usize, dtype: DType, seed: u64) -> Result<Dense> {
        let shape = [inputs, units];
        let weight =
            init::param(g, &format!("{name}.weight"), &shape, dtype, || init::normal(&shape, 0.0, 0.01, dtype, seed))?;
        let bias = init::param(g, &format!("{name}.bias"), &[units], dtype, || init::zeros(&[units], dtype))?;
        Ok(Dense { weight, bias })
    }
}
