//! Library ops on the GPU as sequences of kernel launches and BLAS calls:
//! matrix products through cuBLAS, convolutions as im2col (or col2im) and
//! batched cuBLAS products, pooling and its gradients as window kernels,
//! dropout as a kernel drawing the interpreter's random numbers.
//! Planned once per input shape; the executor resolves each [`Place`] to a
//! device address. An op this module does not plan (`None`) runs on the
//! host.

use rhea_graph::{Conv2d, DType, Op, Pool2d, Shape};
use rhea_kernel::{Kernel, KernelInput, KernelOutput};

use crate::driver::BlasGemm;
use crate::ptx::{Lowered, Pooling, Window, col2im, dropout, im2col, lower_kernel, pool, pool_grad};

/// The most bytes of im2col columns held at once (and at most a sixteenth
/// of the device's memory): a convolution over a batch whose columns need
/// more runs in chunks of images.
pub(crate) const SCRATCH_BUDGET: usize = 256 << 20;

/// A buffer a call reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// The op's input `i`.
    Input(usize),
    /// The op's output.
    Output,
    /// The plan's scratch buffer (im2col columns).
    Scratch,
}

/// An address: a place and a byte offset into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct At {
    pub place: Place,
    pub offset: usize,
}

impl Place {
    fn at(self, elements: usize, dtype: DType) -> At {
        At { place: self, offset: elements * dtype.size_bytes() }
    }
}

/// One call of a sequence.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    /// Kernel `kernel` of the sequence, one parameter per address.
    Launch { kernel: usize, grid: u32, block: u32, args: Vec<At> },
    /// A row-major product on `dtype` matrices.
    Gemm { product: Product, dtype: DType, a: At, b: At, c: At },
}

/// An op as calls, with the kernels they launch and the scratch they need.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    pub kernels: Vec<Lowered>,
    pub calls: Vec<Call>,
    /// Bytes of scratch.
    pub scratch: usize,
}

impl Sequence {
    fn kernel(&mut self, l: Lowered) -> usize {
        self.kernels.push(l);
        self.kernels.len() - 1
    }

    fn launch(&mut self, kernel: usize, args: Vec<At>) {
        let (grid, block) = (self.kernels[kernel].grid, self.kernels[kernel].block);
        self.calls.push(Call::Launch { kernel, grid, block, args });
    }
}

/// A row-major `out = alpha op(a) op(b) + beta out`, `batch` times, each
/// matrix `strides` elements (a, b, out) after the one before.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Product {
    pub alpha: f64,
    pub beta: f64,
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub strides: [usize; 3],
}

impl Product {
    fn new(m: usize, n: usize, k: usize) -> Product {
        Product { alpha: 1.0, beta: 0.0, trans_a: false, trans_b: false, m, n, k, batch: 1, strides: [0; 3] }
    }

    /// The column-major BLAS call computing it: a row-major matrix is its
    /// transpose in column-major, so `out^T = op(b)^T op(a)^T`: BLAS's `A`
    /// is our `b` and its `B` our `a`, with the transpose flags as given.
    pub fn blas(&self) -> BlasGemm {
        BlasGemm {
            trans_a: self.trans_b,
            trans_b: self.trans_a,
            m: self.n,
            n: self.m,
            k: self.k,
            alpha: self.alpha,
            beta: self.beta,
            // BLAS wants every leading dimension >= 1, even for an empty k.
            lda: if self.trans_b { self.k } else { self.n }.max(1),
            ldb: if self.trans_a { self.m } else { self.k }.max(1),
            ldc: self.n.max(1),
            batch: self.batch,
            stride_a: self.strides[1],
            stride_b: self.strides[0],
            stride_c: self.strides[2],
        }
    }

    /// Whether cuBLAS's 32-bit sizes hold it.
    fn fits(&self) -> bool {
        let fits = |x: usize| x <= i32::MAX as usize;
        fits(self.m) && fits(self.n) && fits(self.k) && fits(self.batch)
    }
}

/// What a plan may use of the device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Whether products can run (cuBLAS loaded).
    pub blas: bool,
    /// The most bytes of scratch.
    pub scratch: usize,
}

/// `op` with input shapes `inputs` and output shape `output`, all of
/// `dtype`, as GPU calls, or `None` where it runs on the host. `name`
/// prefixes its kernels' names.
pub(crate) fn plan(
    op: &Op,
    dtype: DType,
    inputs: &[&[usize]],
    output: &[usize],
    name: &str,
    budget: Budget,
) -> Option<Sequence> {
    let blas = budget.blas;
    if !dtype.is_float() {
        return None;
    }
    match op {
        Op::Gemm { .. } | Op::Dot | Op::Conv2d(_) | Op::Conv2dInputGrad(_) | Op::Conv2dWeightGrad(_) if !blas => None,
        Op::Gemm { .. } | Op::Dot => product(op, dtype, inputs, output, name),
        Op::Conv2d(c) => {
            let (x, w) = (dims4(inputs.first()?)?, dims4(inputs.get(1)?)?);
            conv(Direction::Forward, c, dtype, x, w, dims4(output)?, name, budget.scratch)
        }
        Op::Conv2dInputGrad(g) => {
            let (gy, w) = (dims4(inputs.first()?)?, dims4(inputs.get(1)?)?);
            conv(Direction::Input, &g.conv, dtype, dims4(output)?, w, gy, name, budget.scratch)
        }
        Op::Conv2dWeightGrad(g) => {
            let (x, gy) = (dims4(inputs.first()?)?, dims4(inputs.get(1)?)?);
            conv(Direction::Weights, &g.conv, dtype, x, dims4(output)?, gy, name, budget.scratch)
        }
        Op::Dropout { rate, seed, training } => {
            let items: usize = output.iter().product();
            if items == 0 || inputs.first()? != &output {
                return None;
            }
            let keyed = inputs.len() > 1;
            let mut seq = Sequence::default();
            let kernel = seq.kernel(dropout(&format!("{name}_dropout"), dtype, items, rate.0, *seed, *training, keyed));
            let mut args = vec![Place::Input(0).at(0, dtype)];
            args.extend(keyed.then(|| Place::Input(1).at(0, DType::I64)));
            args.push(Place::Output.at(0, dtype));
            seq.launch(kernel, args);
            Some(seq)
        }
        _ => pooling(op, dtype, inputs, output, name),
    }
}

/// Whether the GPU runs `op` on inputs of `inputs` dtypes for an output
/// of `output` (what [`plan`] implements; it may still refuse sizes past
/// its kernels' limits, which then run on the host).
pub(crate) fn runs(op: &Op, inputs: &[DType], output: DType, ranks: &[usize]) -> bool {
    let rank = |i: usize| ranks.get(i).copied().unwrap_or(0);
    let shaped = match op {
        Op::Gemm { .. } | Op::Dot => rank(0) == 2 && rank(1) == 2 && rank(2) <= 2,
        Op::Dropout { .. } => true,
        _ => rank(0) == 4,
    };
    let implemented = shaped
        && matches!(
            op,
            Op::Gemm { .. }
                | Op::Dot
                | Op::Conv2d(_)
                | Op::Conv2dInputGrad(_)
                | Op::Conv2dWeightGrad(_)
                | Op::Dropout { .. }
                | Op::MaxPool2d(_)
                | Op::AvgPool2d(_)
                | Op::MaxPool2dGrad(_)
                | Op::AvgPool2dGrad(_)
        );
    implemented && output.is_float() && accepts(op, inputs, output)
}

/// Whether [`plan`] takes inputs of `inputs` dtypes for an output of
/// `output`: the output's dtype throughout, but for dropout's `i64` key.
pub(crate) fn accepts(op: &Op, inputs: &[DType], output: DType) -> bool {
    inputs
        .iter()
        .enumerate()
        .all(|(i, &d)| d == output || (matches!(op, Op::Dropout { .. }) && i == 1 && d == DType::I64))
}

fn dims4(s: &[usize]) -> Option<[usize; 4]> {
    s.try_into().ok()
}

/// A kernel writing `c` (rank 0 to 2) broadcast over an `m x n` output.
fn broadcast_kernel(dtype: DType, c_shape: &[usize], m: usize, n: usize) -> Kernel {
    let axes = match c_shape.len() {
        0 => vec![None, None],
        1 => vec![None, Some(0)],
        _ => vec![Some(0), Some(1)],
    };
    Kernel {
        domain: Shape::known(&[m, n]),
        inputs: vec![KernelInput { dtype, shape: Shape::known(c_shape), axes }],
        body: vec![(rhea_kernel::Inst::Load { input: 0 }, dtype)],
        outputs: vec![KernelOutput { value: 0, reduced: false }],
        reduce: None,
    }
}

/// A `gemm` or 2-d `dot`: `c` (if any) broadcast into the output by a
/// kernel, then one cuBLAS call.
fn product(op: &Op, dtype: DType, inputs: &[&[usize]], output: &[usize], name: &str) -> Option<Sequence> {
    let (alpha, beta, trans_a, trans_b) = match op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => (alpha.0, beta.0, *trans_a, *trans_b),
        _ => (1.0, 0.0, false, false),
    };
    let (a, b) = (inputs.first()?, inputs.get(1)?);
    if a.len() != 2 || b.len() != 2 || output.len() != 2 || inputs.get(2).is_some_and(|c| c.len() > 2) {
        return None;
    }
    let (m, k) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let n = if trans_b { b[0] } else { b[1] };
    let mut p = Product { alpha, beta, trans_a, trans_b, ..Product::new(m, n, k) };
    if !p.fits() || output != [m, n] {
        return None;
    }
    let mut seq = Sequence::default();
    match inputs.get(2) {
        Some(c) if beta != 0.0 => {
            let l =
                lower_kernel(&broadcast_kernel(dtype, c, m, n), &format!("{name}_c"), &[m, n], &[c.to_vec()]).ok()?;
            let kernel = seq.kernel(l);
            seq.launch(kernel, vec![Place::Input(2).at(0, dtype), Place::Output.at(0, dtype)]);
        }
        _ => p.beta = 0.0,
    }
    if m > 0 && n > 0 {
        let [a, b, c] = [Place::Input(0), Place::Input(1), Place::Output].map(|p| p.at(0, dtype));
        seq.calls.push(Call::Gemm { product: p, dtype, a, b, c });
    }
    Some(seq)
}

/// Which convolution an im2col plan computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// `y = conv(x, w)`: columns of `x`, then `w_g @ cols`, batched.
    Forward,
    /// `gx`: `w_g^T @ gy` as columns, batched, then col2im.
    Input,
    /// `gw`: columns of `x`, then `gw_g += gy @ cols^T` image by image.
    Weights,
}

/// A convolution over `x` `[N, C, H, W]` with weights `w` `[O, C/g, KH,
/// KW]` and output (gradient) `y` `[N, O, OH, OW]`, one of which the
/// sequence writes.
#[allow(clippy::too_many_arguments)]
fn conv(
    dir: Direction,
    c: &Conv2d,
    dtype: DType,
    x: [usize; 4],
    w: [usize; 4],
    y: [usize; 4],
    name: &str,
    budget: usize,
) -> Option<Sequence> {
    let [n, ch, h, wd] = x;
    let [o, cg, kh, kw] = w;
    let [_, _, oh, ow] = y;
    let groups = c.groups;
    if [n, ch, h, wd, o, cg, oh, ow, groups].contains(&0) || ch != cg * groups || !o.is_multiple_of(groups) {
        // Empty tensors and what shape inference would refuse: the host.
        return None;
    }
    let og = o / groups;
    let win = Window {
        input: [h, wd],
        output: [oh, ow],
        kernel: [kh, kw],
        stride: c.stride,
        padding: c.padding,
        dilation: c.dilation,
    };
    let (ckk, ohw, hw) = (cg * kh * kw, oh * ow, h * wd);
    let per_image = ckk * ohw;
    let size = dtype.size_bytes();
    let chunk = (budget / (per_image * size)).clamp(1, n);
    let mut seq = Sequence { scratch: chunk * per_image * size, ..Sequence::default() };
    let columns = match dir {
        Direction::Input => col2im(&format!("{name}_col2im"), dtype, &win, cg, chunk, ch * hw),
        _ => im2col(&format!("{name}_im2col"), dtype, &win, cg, chunk, ch * hw),
    };
    let kernel = seq.kernel(columns.ok()?);
    // Chunks of `chunk` images; the last starts early enough to be whole
    // (images it repeats are recomputed, never accumulated twice).
    let starts: Vec<usize> = (0..n).step_by(chunk).map(|s| s.min(n - chunk)).collect();
    let (x_in, gy_in) = match dir {
        Direction::Forward => (Place::Input(0), Place::Output),
        Direction::Input => (Place::Output, Place::Input(0)),
        Direction::Weights => (Place::Input(0), Place::Input(1)),
    };
    let w_at = |gi: usize| match dir {
        Direction::Weights => Place::Output.at(gi * og * ckk, dtype),
        _ => Place::Input(1).at(gi * og * ckk, dtype),
    };
    let scratch = |image: usize| Place::Scratch.at(image * per_image, dtype);
    for gi in 0..groups {
        let mut done = 0;
        for &start in &starts {
            let x_at = x_in.at(start * ch * hw + gi * cg * hw, dtype);
            let gy_at = |image: usize| gy_in.at(image * o * ohw + gi * og * ohw, dtype);
            let batched = |p: Product| Product { batch: chunk, ..p };
            match dir {
                Direction::Forward => {
                    seq.launch(kernel, vec![x_at, scratch(0)]);
                    let p = Product { strides: [0, per_image, o * ohw], ..batched(Product::new(og, ohw, ckk)) };
                    seq.calls.push(Call::Gemm { product: p, dtype, a: w_at(gi), b: scratch(0), c: gy_at(start) });
                }
                Direction::Input => {
                    let p = Product::new(ckk, ohw, og);
                    let p = Product { trans_a: true, strides: [0, o * ohw, per_image], ..batched(p) };
                    seq.calls.push(Call::Gemm { product: p, dtype, a: w_at(gi), b: gy_at(start), c: scratch(0) });
                    seq.launch(kernel, vec![scratch(0), x_at]);
                }
                Direction::Weights => {
                    seq.launch(kernel, vec![x_at, scratch(0)]);
                    for image in done.max(start)..start + chunk {
                        let beta = if image == 0 { 0.0 } else { 1.0 };
                        let p = Product { trans_b: true, beta, ..Product::new(og, ckk, ohw) };
                        let (a, b) = (gy_at(image), scratch(image - start));
                        seq.calls.push(Call::Gemm { product: p, dtype, a, b, c: w_at(gi) });
                    }
                    done = start + chunk;
                }
            }
        }
    }
    let fits = seq.calls.iter().all(|c| match c {
        Call::Gemm { product, .. } => product.fits(),
        Call::Launch { .. } => true,
    });
    fits.then_some(seq)
}

/// Pooling and its gradients: one window kernel.
fn pooling(op: &Op, dtype: DType, inputs: &[&[usize]], output: &[usize], name: &str) -> Option<Sequence> {
    let window = |p: &Pool2d, input: &[usize], out: &[usize]| Window {
        input: [input[2], input[3]],
        output: [out[2], out[3]],
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
        dilation: [1, 1],
    };
    let how = |p: &Pool2d, max: bool| {
        if max { Pooling::Max } else { Pooling::Average { count_include_pad: p.count_include_pad } }
    };
    let x = *inputs.first()?;
    if x.len() != 4 || output.len() != 4 || x.contains(&0) || output.contains(&0) {
        return None;
    }
    let planes = output[0] * output[1];
    let name = format!("{name}_pool");
    let (kernel, args) = match op {
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            let how = how(p, matches!(op, Op::MaxPool2d(_)));
            (pool(&name, dtype, &window(p, x, output), planes, how), vec![Place::Input(0), Place::Output])
        }
        Op::MaxPool2dGrad(p) => {
            let gy = inputs.get(1)?;
            let args = vec![Place::Input(0), Place::Input(1), Place::Output];
            (pool_grad(&name, dtype, &window(p, x, gy), planes, Pooling::Max), args)
        }
        Op::AvgPool2dGrad(g) => {
            let how = how(&g.pool, false);
            (pool_grad(&name, dtype, &window(&g.pool, output, x), planes, how), vec![Place::Input(0), Place::Output])
        }
        _ => return None,
    };
    let mut seq = Sequence::default();
    let kernel = seq.kernel(kernel.ok()?);
    seq.launch(kernel, args.into_iter().map(|p| p.at(0, dtype)).collect());
    Some(seq)
}

/// How the GPU runs a library op, for dumps and for checking the PTX.
#[derive(Debug)]
pub struct OpKernels {
    /// The kernels it launches (none for a plain product).
    pub kernels: Vec<Lowered>,
    /// Whether it calls cuBLAS too.
    pub blas: bool,
}

/// How the GPU runs library op `op` (inputs of shapes `inputs`, output of
/// shape `output`, all of `dtype`), its kernels named after `name`; `None`
/// where the op runs on the host.
pub fn op_kernels(op: &Op, dtype: DType, inputs: &[&[usize]], output: &[usize], name: &str) -> Option<OpKernels> {
    let budget = Budget { blas: true, scratch: SCRATCH_BUDGET };
    let seq = plan(op, dtype, inputs, output, name, budget)?;
    let blas = seq.calls.iter().any(|c| matches!(c, Call::Gemm { .. }));
    Some(OpKernels { kernels: seq.kernels, blas })
}
