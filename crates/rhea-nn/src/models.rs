//! Model builders: whole training graphs, ready to compile or dump.

use rhea_graph::{Builder, DType, Dim, Shape, Var};

use crate::{
    Activation, Adam, Conv2d, Dense, Optimizer, Result, Sgd, binary_accuracy_from_logits,
    binary_crossentropy_with_logits, categorical_accuracy, categorical_crossentropy_with_logits, flatten, max_pool2d,
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

/// VGG16's convolution widths, `0` marking a 2x2 max pool (torchvision's
/// configuration "D").
pub const VGG16_LAYOUT: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];

/// How to build [`vgg16`].
#[derive(Clone, Debug)]
pub struct VggOptions {
    /// Outputs of the last layer (1000 for ImageNet).
    pub num_classes: usize,
    /// Divides every channel count and the classifier's width (1: the real
    /// VGG16; 8 or 16: small enough to train from scratch on a laptop).
    pub width_div: usize,
    /// Height and width of the input images, a multiple of 32 (224 for the
    /// pretrained weights).
    pub image_size: usize,
    /// Seed of the initial weights and of the dropout masks.
    pub seed: u64,
    /// Build the training graph: dropout active, its masks keyed by an
    /// `i64[]` input named `step`.
    pub training: bool,
    /// Element type of the input and the parameters (`f32`; `f64` for
    /// gradient checks).
    pub dtype: DType,
    /// Declare the parameters by type only, without making their values:
    /// the graph to inspect (dump, optimize) at the cost of the graph, not
    /// of 138 million weights. Values then come from a weights file.
    pub types_only: bool,
}

impl Default for VggOptions {
    fn default() -> VggOptions {
        VggOptions {
            num_classes: 1000,
            width_div: 1,
            image_size: 224,
            seed: 1,
            training: false,
            dtype: DType::F32,
            types_only: false,
        }
    }
}

/// VGG16 as a graph.
pub struct Vgg16 {
    /// The builder holding the graph.
    pub graph: Builder,
    /// Images, `f32[batch, 3, size, size]`, normalized as torchvision's
    /// ImageNet models expect.
    pub x: Var,
    /// The step number keying the dropout masks (training graphs only).
    pub step: Option<Var>,
    /// Class scores before the softmax, `f32[batch, num_classes]`.
    pub logits: Var,
    /// The 13 convolutions, in order (`features.0` ... `features.28`).
    pub convs: Vec<Conv2d>,
    /// The 3 dense layers (`classifier.0`, `.3`, `.6`), weights `[in, out]`.
    pub classifier: Vec<Dense>,
    /// Seed of the dropout masks.
    pub seed: u64,
}

impl Vgg16 {
    /// Every parameter, in torchvision's state-dict order.
    pub fn params(&self) -> Vec<Var> {
        self.convs.iter().flat_map(Conv2d::params).chain(self.classifier.iter().flat_map(Dense::params)).collect()
    }
}

/// torchvision's parameter names of VGG16, in state-dict order: the
/// convolutions are `features.{i}` (ReLUs and pools take the indices
/// between), the dense layers `classifier.{0,3,6}`.
pub fn vgg16_param_names() -> Vec<String> {
    let mut names = Vec::new();
    let mut index = 0;
    for &w in &VGG16_LAYOUT {
        if w > 0 {
            names.push(format!("features.{index}.weight"));
            names.push(format!("features.{index}.bias"));
            index += 2;
        } else {
            index += 1;
        }
    }
    for i in [0, 3, 6] {
        names.push(format!("classifier.{i}.weight"));
        names.push(format!("classifier.{i}.bias"));
    }
    names
}

/// VGG16 exactly as torchvision's `vgg16`: 13 3x3 convolutions with ReLU,
/// 5 max pools, a classifier 25088-4096-4096-classes with ReLU and dropout
/// 0.5; 138,357,544 parameters with 1000 classes. Parameters are named as
/// torchvision names them and initialized as it does (seeded). At other
/// image sizes the classifier takes the flattened features directly
/// (torchvision's adaptive average pool is the identity at 224).
pub fn vgg16(opts: &VggOptions) -> Result<Vgg16> {
    let bad = |msg: String| crate::NnError::Invalid(msg);
    if opts.width_div == 0 || opts.image_size == 0 || !opts.image_size.is_multiple_of(32) {
        return Err(bad(format!(
            "vgg16 needs a positive width divisor and an image size that is a positive multiple of 32, got {} and {}",
            opts.width_div, opts.image_size
        )));
    }
    if opts.num_classes == 0 {
        return Err(bad("vgg16 needs at least one class".into()));
    }
    if opts.width_div > 64 {
        return Err(bad(format!(
            "vgg16's width divisor {} leaves no channels in its first layers (64 / {} rounds to 0); at most 64",
            opts.width_div, opts.width_div
        )));
    }
    let width = |c: usize| c / opts.width_div;
    let g = if opts.types_only { Builder::new().types_only() } else { Builder::new() };
    let batch = g.dim("batch")?;
    let s = opts.image_size;
    let x = g.input("x", opts.dtype, [batch, Dim::Known(3), Dim::Known(s), Dim::Known(s)])?;
    let step = if opts.training { Some(g.input("step", DType::I64, Shape::scalar())?) } else { None };
    let (mut channels, mut index, mut convs) = (3, 0, Vec::new());
    for &w in &VGG16_LAYOUT {
        if w == 0 {
            index += 1;
            continue;
        }
        let seed = opts.seed.wrapping_mul(1000).wrapping_add(index as u64);
        convs.push(Conv2d::typed(&g, &format!("features.{index}"), [channels, width(w), 3], opts.dtype, seed)?);
        channels = width(w);
        index += 2;
    }
    let spatial = (s / 32) * (s / 32);
    let sizes = [channels * spatial, width(4096), width(4096), opts.num_classes];
    let mut classifier = Vec::new();
    for (i, name) in [0, 3, 6].iter().enumerate() {
        let seed = opts.seed.wrapping_mul(1000).wrapping_add(100 + i as u64);
        classifier.push(Dense::torchvision(
            &g,
            &format!("classifier.{name}"),
            sizes[i],
            sizes[i + 1],
            opts.dtype,
            seed,
        )?);
    }
    let mut model = Vgg16 {
        graph: g.clone(),
        x: x.clone(),
        step: step.clone(),
        logits: x.clone(),
        convs,
        classifier,
        seed: opts.seed,
    };
    model.logits = model.forward(&x, step.as_ref())?.named("logits");
    g.output("logits", &model.logits)?;
    Ok(model)
}

impl Vgg16 {
    /// The network applied to images `x` with this model's parameters:
    /// with `dropout_step`, dropout is active and its masks are keyed by
    /// that `i64[]` value (training); without, it is the identity.
    pub fn forward(&self, x: &Var, dropout_step: Option<&Var>) -> Result<Var> {
        let mut h = x.clone();
        let mut convs = self.convs.iter();
        for &w in &VGG16_LAYOUT {
            h = match w {
                0 => max_pool2d(&h, 2)?,
                _ => convs.next().expect("one layer per width").forward(&h)?.relu()?,
            };
        }
        h = flatten(&h)?;
        for (i, dense) in self.classifier.iter().enumerate() {
            h = dense.forward(&h)?;
            if i < 2 {
                h = h.relu()?;
                if let Some(step) = dropout_step {
                    h = h.dropout_keyed(0.5, self.seed.wrapping_add(i as u64), true, step)?;
                }
            }
        }
        Ok(h)
    }
}

/// The model's parameters as torchvision's `state_dict` holds them: by name,
/// in state-dict order, linear weights transposed to `[out, in]`. Save them
/// with [`crate::io::save_safetensors`] for PyTorch's
/// `model.load_state_dict(safetensors.torch.load_file(path))`.
pub fn vgg16_state_dict(model: &Vgg16) -> Vec<(String, rhea_graph::Value)> {
    let g = model.graph.graph();
    model
        .params()
        .iter()
        .filter_map(|p| {
            let name = g.leaf_name(p.id())?.to_string();
            let value = g.shared_value(p.id())?;
            let value = if is_linear_weight(&name) {
                rhea_graph::with_array!(value, a => a.t().as_standard_layout().into_owned().into())
            } else {
                value.clone()
            };
            Some((name, value))
        })
        .collect()
}

/// torchvision stores these `[out, in]`; rhea stores `[in, out]`.
fn is_linear_weight(name: &str) -> bool {
    name.starts_with("classifier.") && name.ends_with(".weight")
}

/// Loads torchvision-named VGG16 weights (a `state_dict` saved with
/// `safetensors.torch.save_file`) into `model`. Linear weights are stored
/// `[out, in]` in the file and transposed to rhea's `[in, out]`. Names in
/// `skip` (a replaced last layer) are neither loaded nor required; every
/// other parameter must be in the file with its shape and dtype, and the
/// file may hold nothing else (torchvision's VGG has no buffers). All
/// problems are reported together, and nothing is set unless everything
/// fits. Returns how many tensors were loaded.
pub fn load_vgg16_weights(model: &Vgg16, path: &std::path::Path, skip: &[&str]) -> Result<usize> {
    let mismatch = |problems: Vec<String>| {
        crate::NnError::Data(format!("{}: does not fit VGG16: {}", path.display(), problems.join("; ")))
    };
    let tensors = crate::io::load_safetensors(path).map_err(|e| crate::NnError::Data(e.to_string()))?;
    let mut file: std::collections::HashMap<String, rhea_graph::Value> = tensors.into_iter().collect();
    let mut problems = Vec::new();
    let mut fits = Vec::new();
    for p in model.params() {
        let name = model.graph.graph().leaf_name(p.id()).unwrap_or_default().to_string();
        if skip.contains(&name.as_str()) {
            file.remove(&name);
            continue;
        }
        let Some(value) = file.remove(&name) else {
            problems.push(format!("{name:?} is missing"));
            continue;
        };
        let want = p.shape().to_known().unwrap_or_default();
        let linear = is_linear_weight(&name);
        let torch_shape: Vec<usize> = if linear { want.iter().rev().copied().collect() } else { want.clone() };
        if value.dtype() != p.dtype() || value.shape() != torch_shape.as_slice() {
            problems.push(format!(
                "{name:?}: expected {}{torch_shape:?} (torchvision's layout), got {}{:?}",
                p.dtype(),
                value.dtype(),
                value.shape()
            ));
            continue;
        }
        let value = if linear {
            rhea_graph::with_array!(&value, a => a.t().as_standard_layout().into_owned().into())
        } else {
            value
        };
        fits.push((p.id(), value));
    }
    let mut extra: Vec<String> = file.into_keys().map(|n| format!("{n:?} is not a VGG16 parameter")).collect();
    extra.sort();
    problems.extend(extra);
    if !problems.is_empty() {
        return Err(mismatch(problems));
    }
    let n = fits.len();
    let mut g = model.graph.graph_mut();
    for (id, value) in fits {
        g.set_shared_value(id, value)?;
    }
    Ok(n)
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
    fn vgg16_has_torchvisions_parameters() {
        let m = vgg16(&VggOptions::default()).unwrap();
        let params = m.params();
        let count: usize = params.iter().map(|p| p.shape().to_known().unwrap().iter().product::<usize>()).sum();
        assert_eq!(count, 138_357_544);
        let names: Vec<String> =
            params.iter().map(|p| m.graph.graph().leaf_name(p.id()).unwrap().to_string()).collect();
        assert_eq!(names, vgg16_param_names());
        assert_eq!(names[0], "features.0.weight");
        assert_eq!(names[25], "features.28.bias");
        assert_eq!(names[31], "classifier.6.bias");
        assert_eq!(params[0].shape().to_string(), "[64,3,3,3]");
        assert_eq!(params[26].shape().to_string(), "[25088,4096]");
        assert_eq!(m.logits.ty().to_string(), "f32[batch,1000]");
        let small = vgg16(&VggOptions {
            num_classes: 2,
            width_div: 16,
            image_size: 64,
            seed: 3,
            training: true,
            ..VggOptions::default()
        })
        .unwrap();
        assert_eq!(small.params()[26].shape().to_string(), "[128,256]");
        assert!(small.step.is_some());
        assert!(vgg16(&VggOptions { image_size: 100, ..VggOptions::default() }).is_err());
        assert!(vgg16(&VggOptions { width_div: 0, ..VggOptions::default() }).is_err());
    }

    #[test]
    fn torchvision_weights_load_transposed_and_every_problem_is_named() {
        let opts = VggOptions { num_classes: 4, width_div: 32, image_size: 32, seed: 2, ..VggOptions::default() };
        let source = vgg16(&opts).unwrap();
        // The file as torchvision writes it: linear weights [out, in].
        let tensors = vgg16_state_dict(&source);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vgg.safetensors");
        let named: Vec<(&str, &rhea_graph::Value)> = tensors.iter().map(|(n, v)| (n.as_str(), v)).collect();
        crate::io::save_safetensors(&path, &named).unwrap();
        let target = vgg16(&VggOptions { seed: 9, ..opts.clone() }).unwrap();
        assert_eq!(load_vgg16_weights(&target, &path, &[]).unwrap(), 32);
        for p in source.params() {
            let id = source.graph.graph().find(source.graph.graph().leaf_name(p.id()).unwrap()).unwrap();
            assert_eq!(source.graph.graph().shared_value(id), target.graph.graph().shared_value(id));
        }
        // A replaced last layer is skipped, file entries included.
        let two = vgg16(&VggOptions { num_classes: 2, ..opts.clone() }).unwrap();
        assert_eq!(load_vgg16_weights(&two, &path, &["classifier.6.weight", "classifier.6.bias"]).unwrap(), 30);
        // Every problem at once, nothing set.
        let mut bad = named.clone();
        bad.retain(|(n, _)| *n != "features.0.bias");
        let wrong = rhea_graph::Value::from(ndarray::Array1::<f32>::zeros(7));
        bad.push(("extra.weight", &wrong));
        let w0 = rhea_graph::Value::from(ndarray::Array1::<f64>::zeros(3));
        bad.retain(|(n, _)| *n != "features.2.bias");
        bad.push(("features.2.bias", &w0));
        let bad_path = dir.path().join("bad.safetensors");
        crate::io::save_safetensors(&bad_path, &bad).unwrap();
        let fresh = vgg16(&VggOptions { seed: 11, ..opts }).unwrap();
        let before = fresh.graph.graph().shared_value(fresh.params()[0].id()).cloned();
        let e = load_vgg16_weights(&fresh, &bad_path, &[]).unwrap_err().to_string();
        assert!(e.contains("\"features.0.bias\" is missing"), "{e}");
        assert!(e.contains("\"features.2.bias\": expected f32[2]"), "{e}");
        assert!(e.contains("\"extra.weight\" is not a VGG16 parameter"), "{e}");
        assert_eq!(fresh.graph.graph().shared_value(fresh.params()[0].id()).cloned(), before);
        std::fs::write(&bad_path, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
        assert!(load_vgg16_weights(&fresh, &bad_path, &[]).is_err());
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
