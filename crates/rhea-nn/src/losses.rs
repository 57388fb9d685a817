//! Losses and metrics as graph builders. The `_with_logits` forms are the
//! numerically stable ones; the probability forms are what Keras users
//! write, and the optimizer rewrites them to the logits forms.

use rhea_graph::{DType, Var};

use crate::Result;

/// Mean binary cross-entropy of `targets` (0 or 1) given logits:
/// `softplus(z) - y*z`, which never takes the log of 0 or overflows.
pub fn binary_crossentropy_with_logits(logits: &Var, targets: &Var) -> Result<Var> {
    let per = logits.softplus()?.sub(&logits.mul(targets)?)?;
    Ok(per.mean_all()?)
}

/// Mean binary cross-entropy given probabilities, clipped to
/// `[1e-7, 1 - 1e-7]` as Keras does.
pub fn binary_crossentropy(probs: &Var, targets: &Var) -> Result<Var> {
    let p = probs.maximum(1e-7)?.minimum(1.0 - 1e-7)?;
    let pos = targets.mul(&p.log()?)?;
    let neg = (1.0 - targets).mul(&(1.0 - &p).log()?)?;
    Ok(pos.add(&neg)?.mean_all()?.neg()?)
}

/// Mean categorical cross-entropy of one-hot `targets` given logits over
/// the last axis.
pub fn categorical_crossentropy_with_logits(logits: &Var, targets: &Var) -> Result<Var> {
    let ll = targets.mul(&logits.log_softmax(-1)?)?.sum(&[-1], false)?;
    Ok(ll.mean_all()?.neg()?)
}

/// Mean categorical cross-entropy given probabilities over the last axis,
/// clipped to `[1e-7, 1 - 1e-7]` as Keras does.
pub fn categorical_crossentropy(probs: &Var, targets: &Var) -> Result<Var> {
    let p = probs.maximum(1e-7)?.minimum(1.0 - 1e-7)?;
    let ll = targets.mul(&p.log()?)?.sum(&[-1], false)?;
    Ok(ll.mean_all()?.neg()?)
}

/// Share of predictions `logits > 0` that match `targets > 0.5`.
pub fn binary_accuracy_from_logits(logits: &Var, targets: &Var) -> Result<Var> {
    let hit = logits.greater(0.0)?.equal(&targets.greater(0.5)?)?;
    Ok(hit.cast(logits.dtype())?.mean_all()?)
}

/// Share of rows whose largest score is at the one-hot target's class.
pub fn categorical_accuracy(scores: &Var, targets: &Var) -> Result<Var> {
    let hit = scores.argmax(-1, false)?.equal(&targets.argmax(-1, false)?)?;
    Ok(hit.cast(if scores.dtype().is_float() { scores.dtype() } else { DType::F32 })?.mean_all()?)
}
