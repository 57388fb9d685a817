//! Recurrent layers written with `scan`, Keras' `SimpleRNN` and `LSTM`:
//! the input projection of every step is one matrix product before the
//! loop, the loop body one recurrent product and the gate arithmetic
//! (which fusion makes one kernel); compiled once whatever the sequence
//! length.

use rhea_graph::{Builder, DType, ScanArgs, SliceSpec, State, StepOut, Var};

use crate::{Result, init};

/// Zeros of shape `[batch, units]`, `batch` the size of axis 1 of `xs`
/// (`[time, batch, features]`).
fn zero_state(xs: &Var, units: usize) -> Result<Var> {
    let batch = xs.shape()[1];
    let zero = xs.builder().scalar(0.0, xs.dtype());
    Ok(zero.broadcast_to([batch, units.into()])?)
}

/// The parameters both layers have: `{name}.kernel` `[inputs, k units]`
/// and `{name}.recurrent_kernel` `[units, k units]` (Glorot uniform), and
/// `{name}.bias` `[k units]` from `bias`.
fn params(
    g: &Builder,
    name: &str,
    (inputs, units, k): (usize, usize, usize),
    seed: u64,
    bias: impl Fn(usize) -> f64,
) -> Result<(Var, Var, Var)> {
    let wide = k * units;
    let kernel = init::param(g, &format!("{name}.kernel"), &[inputs, wide], DType::F32, || {
        init::glorot_uniform(&[inputs, wide], inputs, wide, DType::F32, seed)
    })?;
    let recurrent = init::param(g, &format!("{name}.recurrent_kernel"), &[units, wide], DType::F32, || {
        init::glorot_uniform(&[units, wide], units, wide, DType::F32, seed.wrapping_add(1))
    })?;
    let b = init::param(g, &format!("{name}.bias"), &[wide], DType::F32, || {
        rhea_graph::Value::try_from_fn(DType::F32, &[wide], &bias).map_err(crate::NnError::Data)
    })?;
    Ok((kernel, recurrent, b))
}

/// Keras' `SimpleRNN` (an Elman network): `h_t = tanh(x_t W + h_{t-1} U + b)`.
#[derive(Clone)]
pub struct SimpleRnn {
    /// `[inputs, units]`.
    pub kernel: Var,
    /// `[units, units]`.
    pub recurrent_kernel: Var,
    /// `[units]`.
    pub bias: Var,
    units: usize,
}

impl SimpleRnn {
    /// A new layer with parameters named `{name}.kernel`, `.recurrent_kernel`, `.bias`.
    pub fn new(g: &Builder, name: &str, inputs: usize, units: usize, seed: u64) -> Result<SimpleRnn> {
        let (kernel, recurrent_kernel, bias) = params(g, name, (inputs, units, 1), seed, |_| 0.0)?;
        Ok(SimpleRnn { kernel, recurrent_kernel, bias, units })
    }

    /// Runs over `xs` (`[time, batch, inputs]`) from a zero state: the
    /// hidden state after every step (`[time, batch, units]`) and the last.
    pub fn forward(&self, xs: &Var) -> Result<(Var, Var)> {
        let projected = xs.dot(&self.kernel)?.add(&self.bias)?;
        let args = ScanArgs {
            sequences: vec![projected],
            states: vec![State::new(&zero_state(xs, self.units)?)],
            non_sequences: vec![self.recurrent_kernel.clone()],
            ..ScanArgs::default()
        };
        let out = xs.builder().scan(args, |s| {
            let h = s.seq(0)?.add(&s.state(0)?.dot(&s.non_seq(0)?)?)?.tanh()?;
            Ok(StepOut::states(vec![h]))
        })?;
        Ok((out.states[0].clone(), out.finals[0].clone()))
    }

    /// The trainable parameters.
    pub fn params(&self) -> Vec<Var> {
        vec![self.kernel.clone(), self.recurrent_kernel.clone(), self.bias.clone()]
    }
}

/// Keras' `LSTM` with its gate order (input, forget, cell, output) and
/// `unit_forget_bias` (the forget gate's bias starts at 1); the recurrent
/// kernel starts Glorot uniform rather than orthogonal.
#[derive(Clone)]
pub struct Lstm {
    /// `[inputs, 4 units]`.
    pub kernel: Var,
    /// `[units, 4 units]`.
    pub recurrent_kernel: Var,
    /// `[4 units]`.
    pub bias: Var,
    units: usize,
}

impl Lstm {
    /// A new layer with parameters named `{name}.kernel`, `.recurrent_kernel`, `.bias`.
    pub fn new(g: &Builder, name: &str, inputs: usize, units: usize, seed: u64) -> Result<Lstm> {
        let forget = |i: usize| if (units..2 * units).contains(&i) { 1.0 } else { 0.0 };
        let (kernel, recurrent_kernel, bias) = params(g, name, (inputs, units, 4), seed, forget)?;
        Ok(Lstm { kernel, recurrent_kernel, bias, units })
    }

    /// Runs over `xs` (`[time, batch, inputs]`) from zero states: the
    /// hidden state after every step (`[time, batch, units]`) and the last.
    pub fn forward(&self, xs: &Var) -> Result<(Var, Var)> {
        let u = self.units;
        let projected = xs.dot(&self.kernel)?.add(&self.bias)?;
        let zero = zero_state(xs, u)?;
        let args = ScanArgs {
            sequences: vec![projected],
            states: vec![State::new(&zero), State::new(&zero)],
            non_sequences: vec![self.recurrent_kernel.clone()],
            ..ScanArgs::default()
        };
        let out = xs.builder().scan(args, |s| {
            let (h, c) = (s.state(0)?, s.state(1)?);
            let z = s.seq(0)?.add(&h.dot(&s.non_seq(0)?)?)?;
            let gate = |k: usize| z.slice(&[SliceSpec::FULL, SliceSpec::range((k * u) as i64, ((k + 1) * u) as i64)]);
            let (i, f, g, o) = (gate(0)?.sigmoid()?, gate(1)?.sigmoid()?, gate(2)?.tanh()?, gate(3)?.sigmoid()?);
            let c = f.mul(&c)?.add(&i.mul(&g)?)?;
            let h = o.mul(&c.tanh()?)?;
            Ok(StepOut::states(vec![h, c]))
        })?;
        Ok((out.states[0].clone(), out.finals[0].clone()))
    }

    /// The trainable parameters.
    pub fn params(&self) -> Vec<Var> {
        vec![self.kernel.clone(), self.recurrent_kernel.clone(), self.bias.clone()]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use rhea_graph::Value;

    /// The LSTM's loop against the same cell unrolled by hand in the graph.
    #[test]
    fn the_lstm_loop_is_the_cell_applied_step_by_step() {
        let g = Builder::new();
        let batch = g.dim("batch").unwrap();
        let xs = g.input("xs", DType::F32, [3.into(), batch, 2.into()]).unwrap();
        let lstm = Lstm::new(&g, "lstm", 2, 4, 7).unwrap();
        let (hs, last) = lstm.forward(&xs).unwrap();
        assert_eq!(hs.ty().to_string(), "f32[3,batch,4]");
        let (w, uk, b) = (&lstm.kernel, &lstm.recurrent_kernel, &lstm.bias);
        let mut h = zero_state(&xs, 4).unwrap();
        let mut c = h.clone();
        for t in 0..3i64 {
            let x = xs.slice(&[SliceSpec::range(t, t + 1)]).unwrap().reshape(&[-1, 2]).unwrap();
            let z = x.dot(w).unwrap().add(b).unwrap().add(h.dot(uk).unwrap()).unwrap();
            let gate = |k: i64| z.slice(&[SliceSpec::FULL, SliceSpec::range(4 * k, 4 * k + 4)]).unwrap();
            let (i, f, gg, o) = (
                gate(0).sigmoid().unwrap(),
                gate(1).sigmoid().unwrap(),
                gate(2).tanh().unwrap(),
                gate(3).sigmoid().unwrap(),
            );
            c = f.mul(&c).unwrap().add(i.mul(&gg).unwrap()).unwrap();
            h = o.mul(c.tanh().unwrap()).unwrap();
        }
        let data: Vec<f64> = (0..3 * 5 * 2).map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0).collect();
        let feeds = HashMap::from([("xs".to_string(), Value::from_f64(DType::F32, &[3, 5, 2], &data).unwrap())]);
        let out = rhea_interp::run(&g.graph(), &feeds, &[last.id(), h.id()]).unwrap();
        for (a, b) in out[0].to_f64_vec().iter().zip(out[1].to_f64_vec()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
