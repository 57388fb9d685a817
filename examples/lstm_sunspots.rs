//! An LSTM, written with `scan`, forecasting the monthly sunspot numbers
//! (NOAA, public domain; `data/sunspots/`): the next month from the
//! previous `--window` months, split chronologically into training (70%),
//! validation (15%) and test (15%) parts. Beside it, two baselines:
//! persistence (next month = this month) and a least-squares AR(p) with
//! `p` chosen on the validation part. The LSTM's test RMSE is taken at the
//! epoch with the best validation RMSE.
//!
//! `cargo run --release --example lstm_sunspots -- --seed 1`

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ndarray::{Array2, s};
use rhea::nn::{Adam, Dense, Lstm, Optimizer};
use rhea::{Backend, Builder, DType, Value, function};

/// Train the LSTM and compare its test RMSE with persistence and AR(p).
#[derive(Parser)]
struct Args {
    /// The monthly series (`year,month,sunspots`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sunspots/sunspots_monthly.csv"))]
    data: PathBuf,
    /// Months of history per prediction.
    #[arg(long, default_value_t = 36)]
    window: usize,
    /// LSTM units.
    #[arg(long, default_value_t = 32)]
    units: usize,
    /// Passes over the training windows.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.002)]
    lr: f64,
    /// Seed of the weights and the shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to run: cpu, interp or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
}

fn read_series(path: &std::path::Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let value = line.rsplit(',').next().unwrap_or_default().trim();
        let v: f64 =
            value.parse().with_context(|| format!("{}:{}: {value:?} is not a number", path.display(), i + 1))?;
        out.push(v);
    }
    if out.len() < 100 {
        bail!("{}: {} months are too few to split", path.display(), out.len());
    }
    Ok(out)
}

/// Windows of the series: inputs `[n, window]` and next values `[n]`, for
/// the targets `range` (indices into the series).
fn windows(series: &[f64], window: usize, range: std::ops::Range<usize>) -> (Array2<f64>, Vec<f64>) {
    let x = Array2::from_shape_fn((range.len(), window), |(i, k)| series[range.start + i - window + k]);
    let y = range.map(|t| series[t]).collect();
    (x, y)
}

fn rmse(pred: &[f64], y: &[f64]) -> f64 {
    (pred.iter().zip(y).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / y.len() as f64).sqrt()
}

/// Least squares `y ~ c + sum a_k x_{-k}` on the last `p` columns, by the
/// normal equations (Cholesky; `p` is small).
fn fit_ar(x: &Array2<f64>, y: &[f64], p: usize) -> Result<Vec<f64>> {
    let w = x.ncols();
    let feats = |row: usize| -> Vec<f64> {
        let mut f = vec![1.0];
        f.extend((0..p).map(|k| x[[row, w - 1 - k]]));
        f
    };
    let d = p + 1;
    let mut a = vec![0.0; d * d];
    let mut b = vec![0.0; d];
    for (row, &t) in y.iter().enumerate() {
        let f = feats(row);
        for i in 0..d {
            b[i] += f[i] * t;
            for j in 0..d {
                a[i * d + j] += f[i] * f[j];
            }
        }
    }
    // Cholesky a = l l^T, then two triangular solves.
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - sum;
                if v <= 0.0 {
                    bail!("AR({p}): the normal equations are singular");
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - sum) / l[j * d + j];
            }
        }
    }
    let mut z = vec![0.0; d];
    for i in 0..d {
        z[i] = (b[i] - (0..i).map(|k| l[i * d + k] * z[k]).sum::<f64>()) / l[i * d + i];
    }
    let mut coef = vec![0.0; d];
    for i in (0..d).rev() {
        coef[i] = (z[i] - (i + 1..d).map(|k| l[k * d + i] * coef[k]).sum::<f64>()) / l[i * d + i];
    }
    Ok(coef)
}

fn predict_ar(x: &Array2<f64>, coef: &[f64]) -> Vec<f64> {
    let w = x.ncols();
    (0..x.nrows()).map(|r| coef[0] + (1..coef.len()).map(|k| coef[k] * x[[r, w - k]]).sum::<f64>()).collect()
}

fn to_f32(x: &Array2<f64>, mean: f64, std: f64) -> Array2<f32> {
    x.mapv(|v| ((v - mean) / std) as f32)
}

fn main() -> std::process::ExitCode {
    rhea::cli::exit_code(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    let usage = |msg: &str| Err(rhea::cli::usage(msg));
    if args.window == 0 || args.units == 0 || args.epochs == 0 || args.batch_size == 0 {
        return usage("--window, --units, --epochs and --batch-size must be at least 1");
    }
    let backend: Backend = args.backend.parse().map_err(|e: String| rhea::cli::usage(format!("--backend: {e}")))?;
    let series = read_series(&args.data)?;
    let n = series.len();
    if n <= args.window + 20 {
        return usage("--window leaves too few months to split");
    }
    let targets = n - args.window;
    let (n_train, n_val) = (targets * 70 / 100, targets * 15 / 100);
    let w = args.window;
    let (xtr, ytr) = windows(&series, w, w..w + n_train);
    let (xva, yva) = windows(&series, w, w + n_train..w + n_train + n_val);
    let (xte, yte) = windows(&series, w, w + n_train + n_val..n);
    rhea::outln!(
        "sunspots: {n} months, window {w}: {} training, {} validation, {} test windows, backend {backend}",
        ytr.len(),
        yva.len(),
        yte.len()
    )?;
    let last = |x: &Array2<f64>| x.column(w - 1).to_vec();
    let persistence = rmse(&last(&xte), &yte);
    let mut best_ar: Option<(usize, f64, Vec<f64>)> = None;
    for p in [1, 2, 3, 6, 9, 12, 18, 24, 36, 48, 60].into_iter().filter(|&p| p <= w) {
        let coef = fit_ar(&xtr, &ytr, p)?;
        let val = rmse(&predict_ar(&xva, &coef), &yva);
        if best_ar.as_ref().is_none_or(|(_, v, _)| val < *v) {
            best_ar = Some((p, val, coef));
        }
    }
    let (p, _, coef) = best_ar.context("no AR order fits the window")?;
    let ar = rmse(&predict_ar(&xte, &coef), &yte);

    // The LSTM on standardized values (statistics of the training part).
    let train_part = &series[..w + n_train];
    let mean = train_part.iter().sum::<f64>() / train_part.len() as f64;
    let std = (train_part.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / train_part.len() as f64).sqrt();
    let g = Builder::new();
    let batch = g.dim("batch")?;
    let x = g.input("x", DType::F32, [batch, w.into()])?;
    let y = g.input("y", DType::F32, [batch, 1.into()])?;
    let xs = x.dimshuffle(&[Some(1), Some(0), None])?; // [window, batch, 1]: time first
    let lstm = Lstm::new(&g, "lstm", 1, args.units, args.seed)?;
    let head = Dense::new(&g, "head", args.units, 1, args.seed + 10)?;
    let (_, h) = lstm.forward(&xs)?;
    let pred = head.forward(&h)?;
    let loss = pred.sub(&y)?.square()?.mean_all()?;
    let params = [lstm.params(), head.params()].concat();
    let updates = Adam { lr: args.lr, ..Adam::default() }.updates(&loss, &params)?;
    let mut step = function(&[&x, &y], &[&loss]).updates(updates).backend(backend).compile()?;
    let mut infer = function(&[&x], &[&pred]).backend(backend).compile()?;
    let scale_y = |v: &[f64]| Array2::from_shape_fn((v.len(), 1), |(i, _)| ((v[i] - mean) / std) as f32);
    let (xtr32, ytr32) = (to_f32(&xtr, mean, std), scale_y(&ytr));
    let mut predict = |x: &Array2<f64>| -> Result<Vec<f64>> {
        let xs = to_f32(x, mean, std);
        let mut out = Vec::with_capacity(x.nrows());
        for start in (0..x.nrows()).step_by(256) {
            let part = xs.slice(s![start..(start + 256).min(x.nrows()), ..]).to_owned();
            let r = infer.call(&[Value::from(part)])?;
            out.extend(r[0].to_f64_vec().into_iter().map(|v| v * std + mean));
        }
        Ok(out)
    };
    let mut best: Option<(usize, f64, f64)> = None;
    let started = std::time::Instant::now();
    for epoch in 1..=args.epochs {
        let order = rhea::nn::data::shuffled(xtr32.nrows(), args.seed.wrapping_mul(1000) + epoch as u64);
        let mut total = 0.0;
        for chunk in order.chunks(args.batch_size) {
            let xb = rhea::nn::data::take_rows(&xtr32, chunk);
            let yb = rhea::nn::data::take_rows(&ytr32, chunk);
            let r = step.call(&[Value::from(xb), Value::from(yb)])?;
            total += r[0].to_f64_vec()[0] * chunk.len() as f64;
        }
        let val = rmse(&predict(&xva)?, &yva);
        let test = rmse(&predict(&xte)?, &yte);
        if best.is_none_or(|(_, v, _)| val < v) {
            best = Some((epoch, val, test));
        }
        if !args.quiet {
            let train = (total / xtr32.nrows() as f64).sqrt() * std;
            rhea::outln!("epoch {epoch}/{}: train RMSE {train:.2}, validation RMSE {val:.2}", args.epochs)?;
        }
    }
    let (epoch, val, lstm_rmse) = best.context("no epoch ran")?;
    rhea::outln!("persistence test RMSE: {persistence:.2}")?;
    rhea::outln!("AR({p}) test RMSE: {ar:.2} (p chosen on validation)")?;
    rhea::outln!(
        "LSTM({}) test RMSE: {lstm_rmse:.2} (epoch {epoch}, best validation RMSE {val:.2}; {:.1} s of training)",
        args.units,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}
