//! Model builders: whole training graphs, ready to compile or dump.

use rhea_graph::{Builder, DType, Dim, Var};

use crate::{
    Activation, Adam, Dense, Optimizer, Result, Sgd, binary_accuracy_from_logits, binary_crossentropy_with_logits,
    categorical_accuracy, categorical_crossentropy_with_logits,
};

/// A binary classifier's training graph: inputs, outputs, parameters and
/// the optimizer's update rules.
pub struct BinaryClassifier {
    /// The builder holding the graph.
    pub graph: Builder,
    /// Features, `f32[batch, n_features]`.
    pub x: Var,
    /// Targets (0 or 1), `f32[batch, 1]`.
    pub y: Var,
    /// Pre-sigmoid scores, `f32[batch, 1]`.
    pub logits: Var,
    /// `sigmoid(logits)`, the predicted probability of class 1.
    pub probs: Var,
    /// Mean binary cross-entropy (computed from the logits).
    pub loss: Var,
    /// Share of correct predictions.
    pub accuracy: Var,
    /// Trainable parameters.
    pub params: Vec<Var>,
    /// One optimization step's updates.
    pub updates: Vec<(Var, Var)>,
}

/// The Sonar MLP of the tutorial: Dense 60 relu, Dense 8 relu, Dense 1
/// sigmoid, binary cross-entropy, Adam with Keras' defaults. Weights are
/// Glorot-uniform from `seed`. The graph's outputs are `loss`, `accuracy`
/// and `probs`, and its updates are Adam's, so a dump shows the whole
/// training step.
pub fn sonar_mlp(seed: u64) -> Result<BinaryClassifier> {
    mlp_binary(60, &[60, 8], Activation::Relu, Some(&Adam::default()), seed)
}

/// The Sonar MLP's forward graph and loss, without gradients or updates.
pub fn sonar_mlp_forward(seed: u64) -> Result<BinaryClassifier> {
    mlp_binary(60, &[60, 8], Activation::Relu, None, seed)
}

/// A binary MLP classifier with the given hidden layer widths; with an
/// optimizer, its gradients and update rules are part of the graph.
pub fn mlp_binary(
    n_features: usize,
    hidden: &[usize],
    activation: Activation,
    optimizer: Option<&dyn Optimizer>,
    seed: u64,
) -> Result<BinaryClassifier> {
    let g = Builder::new();
    let batch = g.dim("batch")?;
    let x = g.input("x", DType::F32, [batch, Dim::Known(n_features)])?;
    let y = g.input("y", DType::F32, [batch, Dim::Known(1)])?;
    let mut h = x.clone();
    let mut width = n_features;
    let mut params = Vec::new();
    for (i, &units) in hidden.iter().chain(&[1]).enumerate() {
        let layer =
            Dense::new(&g, &format!("dense_{}", i + 1), width, units, seed.wrapping_mul(1000).wrapping_add(i as u64))?;
        h = layer.forward(&h)?;
        if i < hidden.len() {
            h = activation.apply(&h)?;
        }
        params.extend(layer.params());
        width = units;
    }
    let logits = h.named("logits");
    let probs = logits.sigmoid()?.named("probs");
    let loss = binary_crossentropy_with_logits(&logits, &y)?.named("loss");
    let accuracy = binary_accuracy_from_logits(&logits, &y)?.named("accuracy");
    let updates = match optimizer {
        Some(opt) => opt.updates(&loss, &params)?,
        None => Vec::new(),
    };
    g.output("loss", &loss)?;
    g.output("accuracy", &accuracy)?;
    g.output("probs", &probs)?;
    for (s, v) in &updates {
        g.update(s, v)?;
    }
    Ok(BinaryClassifier { graph: g, x, y, logits, probs, loss, accuracy, params, updates })
}

/// A multi-class classifier's training graph.
pub struct Classifier {
    /// The builder holding the graph.
    pub graph: Builder,
    /// Features, `f32[batch, n_features]`.
    pub x: Var,
    /// One-hot targets, `f32[batch, classes]`.
    pub y: Var,
    /// Pre-softmax scores.
    pub logits: Var,
    /// Mean categorical cross-entropy (computed from the logits).
    pub loss: Var,
    /// Share of rows classified correctly.
    pub accuracy: Var,
    /// Trainable parameters.
    pub params: Vec<Var>,
    /// One optimization step's updates.
    pub updates: Vec<(Var, Var)>,
}

/// The MLP of the Theano paper's benchmark (Bergstra et al. 2010): 784
/// inputs, 500 tanh units, 10 softmax outputs, categorical cross-entropy,
/// plain SGD with learning rate 0.01.
pub fn theano_mlp(seed: u64) -> Result<Classifier> {
    let g = Builder::new();
    let batch = g.dim("batch")?;
    let x = g.input("x", DType::F32, [batch, Dim::Known(784)])?;
    let y = g.input("y", DType::F32, [batch, Dim::Known(10)])?;
    let hidden = Dense::new(&g, "hidden", 784, 500, seed)?;
    let out = Dense::new(&g, "out", 500, 10, seed.wrapping_add(1))?;
    let logits = out.forward(&Activation::Tanh.apply(&hidden.forward(&x)?)?)?.named("logits");
    let loss = categorical_crossentropy_with_logits(&logits, &y)?.named("loss");
    let accuracy = categorical_accuracy(&logits, &y)?.named("accuracy");
    let params: Vec<Var> = hidden.params().into_iter().chain(out.params()).collect();
    let updates = Sgd::default().updates(&loss, &params)?;
    g.output("loss", &loss)?;
    g.output("accuracy", &accuracy)?;
    for (s, v) in &updates {
        g.update(s, v)?;
    }
    Ok(Classifier { graph: g, x, y, logits, loss, accuracy, params, updates })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonar_mlp_has_the_tutorials_shape() {
        let m = sonar_mlp(1).unwrap();
        let shapes: Vec<String> = m.params.iter().map(|p| p.shape().to_string()).collect();
        assert_eq!(shapes, ["[60,60]", "[60]", "[60,8]", "[8]", "[8,1]", "[1]"]);
        assert_eq!(m.updates.len(), 1 + 3 * 6);
        assert_eq!(m.graph.graph().outputs().len(), 3);
        assert_eq!(m.probs.ty().to_string(), "f32[batch,1]");
        let forward = sonar_mlp_forward(1).unwrap();
        assert!(forward.updates.is_empty() && forward.graph.graph().len() < m.graph.graph().len());
    }

    #[test]
    fn theano_mlp_is_784_500_10() {
        let m = theano_mlp(1).unwrap();
        let shapes: Vec<String> = m.params.iter().map(|p| p.shape().to_string()).collect();
        assert_eq!(shapes, ["[784,500]", "[500]", "[500,10]", "[10]"]);
        assert_eq!(m.updates.len(), 4);
        assert_eq!(m.logits.ty().to_string(), "f32[batch,10]");
    }
}
