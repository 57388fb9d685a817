//! A small Keras-like training loop over compiled functions.
//!
//! The loop only needs something it can call with a batch: the [`Callable`]
//! trait, which `rhea::Function` implements. That keeps this crate free of
//! any backend.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Axis, concatenate};
use rhea_graph::Value;

use crate::data::{shuffled, take_rows};
use crate::{NnError, Result};

/// A compiled function: positional inputs in, outputs out.
pub trait Callable {
    /// Runs one call.
    fn call(&mut self, inputs: &[Value]) -> Result<Vec<Value>>;
}

/// How to train.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Passes over the training data.
    pub epochs: usize,
    /// Examples per step; the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Reshuffle the training rows before each epoch.
    pub shuffle: bool,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Print one line per epoch (with a progress bar on a terminal).
    pub verbose: bool,
}

impl Default for FitOptions {
    fn default() -> FitOptions {
        FitOptions { epochs: 1, batch_size: 32, shuffle: true, seed: 0, verbose: true }
    }
}

/// The metrics of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's examples.
    pub loss: f64,
    /// Mean training accuracy over the epoch's examples.
    pub acc: f64,
    /// Loss on the validation data, if given.
    pub val_loss: Option<f64>,
    /// Accuracy on the validation data, if given.
    pub val_acc: Option<f64>,
}

impl EpochLog {
    /// Keras' epoch line: `Epoch 3/100 - loss: 0.5123 - acc: 0.7480 - ...`.
    pub fn line(&self, epochs: usize) -> String {
        let mut s = format!("Epoch {}/{epochs} - loss: {:.4} - acc: {:.4}", self.epoch, self.loss, self.acc);
        if let (Some(l), Some(a)) = (self.val_loss, self.val_acc) {
            s.push_str(&format!(" - val_loss: {l:.4} - val_acc: {a:.4}"));
        }
        s
    }
}

fn scalar(v: &Value, what: &str) -> Result<f64> {
    match v.to_f64_vec().as_slice() {
        [x] => Ok(*x),
        _ => Err(NnError::Run(format!("{what} must be a scalar, got shape {:?}", v.shape()))),
    }
}

fn batches(n: usize, batch_size: usize) -> Result<impl Iterator<Item = std::ops::Range<usize>>> {
    if batch_size == 0 {
        return Err(NnError::Data("batch size must be at least 1".into()));
    }
    Ok((0..n).step_by(batch_size).map(move |s| s..(s + batch_size).min(n)))
}

fn check_rows(x: &Array2<f32>, y: &Array2<f32>) -> Result<()> {
    if x.nrows() != y.nrows() {
        return Err(NnError::Data(format!("{} feature rows but {} target rows", x.nrows(), y.nrows())));
    }
    Ok(())
}

/// Trains with `step`, a function of `(x, y)` batches returning `[loss,
/// accuracy]` and updating the parameters; after each epoch `eval` (the
/// same outputs, no updates) scores the validation data if given.
pub fn fit(
    step: &mut dyn Callable,
    eval: &mut dyn Callable,
    x: &Array2<f32>,
    y: &Array2<f32>,
    validation: Option<(&Array2<f32>, &Array2<f32>)>,
    opts: &FitOptions,
) -> Result<Vec<EpochLog>> {
    check_rows(x, y)?;
    let n = x.nrows();
    let mut history = Vec::with_capacity(opts.epochs);
    let bar = (opts.verbose && std::io::stdout().is_terminal()).then(|| {
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    });
    for epoch in 1..=opts.epochs {
        let epoch_seed = rhea_graph::rng::stream(opts.seed, epoch as i64);
        let order: Vec<usize> = if opts.shuffle { shuffled(n, epoch_seed) } else { (0..n).collect() };
        let (xs, ys) = (take_rows(x, &order), take_rows(y, &order));
        let (mut loss, mut acc) = (0.0, 0.0);
        if let Some(bar) = &bar {
            bar.reset();
            bar.set_message(format!("Epoch {epoch}/{}", opts.epochs));
        }
        for r in batches(n, opts.batch_size)? {
            let bx = Value::from(xs.slice(ndarray::s![r.clone(), ..]).to_owned());
            let by = Value::from(ys.slice(ndarray::s![r.clone(), ..]).to_owned());
            let out = step.call(&[bx, by])?;
            let w = r.len() as f64;
            loss += w * scalar(&out[0], "the loss")?;
            acc += w * scalar(&out[1], "the accuracy")?;
            if let Some(bar) = &bar {
                bar.inc(r.len() as u64);
            }
        }
        let (val_loss, val_acc) = match validation {
            Some((vx, vy)) => {
                let (l, a) = evaluate(eval, vx, vy, opts.batch_size)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let log = EpochLog { epoch, loss: loss / n as f64, acc: acc / n as f64, val_loss, val_acc };
        if opts.verbose {
            match &bar {
                Some(bar) => bar.println(log.line(opts.epochs)),
                None => crate::outln!("{}", log.line(opts.epochs)).map_err(NnError::Output)?,
            }
        }
        history.push(log);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(history)
}

/// Mean loss and accuracy of `eval` (returning `[loss, accuracy]`) over the
/// rows, batch by batch, weighted by batch size.
pub fn evaluate(eval: &mut dyn Callable, x: &Array2<f32>, y: &Array2<f32>, batch_size: usize) -> Result<(f64, f64)> {
    check_rows(x, y)?;
    let (mut loss, mut acc) = (0.0, 0.0);
    for r in batches(x.nrows(), batch_size)? {
        let bx = Value::from(x.slice(ndarray::s![r.clone(), ..]).to_owned());
        let by = Value::from(y.slice(ndarray::s![r.clone(), ..]).to_owned());
        let out = eval.call(&[bx, by])?;
        loss += r.len() as f64 * scalar(&out[0], "the loss")?;
        acc += r.len() as f64 * scalar(&out[1], "the accuracy")?;
    }
    let n = x.nrows().max(1) as f64;
    Ok((loss / n, acc / n))
}

/// `predict`'s first output for every row, batch by batch, stacked.
pub fn predict(predict: &mut dyn Callable, x: &Array2<f32>, batch_size: usize) -> Result<Array2<f32>> {
    let mut parts = Vec::new();
    for r in batches(x.nrows(), batch_size)? {
        let bx = Value::from(x.slice(ndarray::s![r, ..]).to_owned());
        let out = predict.call(&[bx])?;
        let a =
            out[0].as_f32().ok_or_else(|| NnError::Run(format!("predictions must be f32, got {}", out[0].dtype())))?;
        let rows = a.shape()[0];
        parts.push(a.to_shape((rows, a.len() / rows.max(1))).map_err(|e| NnError::Run(e.to_string()))?.to_owned());
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    if views.is_empty() {
        return Ok(Array2::zeros((0, 0)));
    }
    concatenate(Axis(0), &views).map_err(|e| NnError::Run(e.to_string()))
}
