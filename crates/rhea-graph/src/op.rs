//! The closed set of operations. Every `match` on [`Op`] is exhaustive, so
//! adding an op shows each place (shape rule, interpreter, gradient,
//! lowering) that needs work.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DType, F64, Literal, Shape};

/// An operation: a node's kind and attributes. Inputs are held by the node.
///
/// In the graph file each op is an object tagged by `"op"`, its attributes as
/// fields (see `docs/graph-format.md`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A named value fed by the caller.
    Input {
        /// The name the caller feeds it by.
        name: Box<str>,
    },
    /// A named variable whose value persists between calls (a parameter).
    Shared {
        /// The name it is read, set and saved by.
        name: Box<str>,
    },
    /// A constant tensor.
    Const {
        /// The value.
        value: Literal,
    },
    /// An elementwise function of one input.
    Unary {
        /// Which function.
        fun: UnaryOp,
    },
    /// An elementwise function of two inputs, broadcast like numpy.
    Binary {
        /// Which function.
        fun: BinaryOp,
    },
    /// `where(cond, a, b)`: `a` where `cond` is true, else `b`, broadcast.
    Where,
    /// Elementwise conversion to another dtype.
    Cast {
        /// The target dtype.
        to: DType,
    },
    /// A reduction over a set of axes.
    Reduce {
        /// Which reduction.
        fun: ReduceOp,
        /// The axes reduced, ascending, non-negative.
        axes: Box<[usize]>,
        /// Keep reduced axes as size 1.
        keepdims: bool,
    },
    /// The index of the largest or smallest element along one axis (`i64`).
    ArgReduce {
        /// `argmax` or `argmin`.
        fun: ArgReduceOp,
        /// The axis searched.
        axis: usize,
        /// Keep the axis as size 1.
        keepdims: bool,
    },
    /// numpy's `matmul`: vector/matrix products, batch dims broadcast.
    Dot,
    /// BLAS's `alpha * op(A) @ op(B) + beta * C` on matrices, where `op`
    /// transposes when its flag is set and `C` (the optional third input)
    /// broadcasts to the result. The optimizer makes these from `dot`.
    Gemm {
        /// Scale of the product.
        alpha: F64,
        /// Scale of `C`.
        beta: F64,
        /// Use `A` transposed.
        trans_a: bool,
        /// Use `B` transposed.
        trans_b: bool,
    },
    /// Same elements, new shape (row-major order).
    Reshape {
        /// The target shape, fully resolved.
        shape: Shape,
    },
    /// Theano's dimshuffle: output axis `i` is input axis `pattern[i]`, or a
    /// new size-1 axis where `pattern[i]` is null. Input axes left out must
    /// have size 1. Transpose, permute, expand_dims and squeeze are all this.
    #[serde(rename = "dimshuffle")]
    DimShuffle {
        /// For each output axis, the input axis it takes, or null for a new one.
        pattern: Box<[Option<usize>]>,
    },
    /// Broadcast to a larger shape (numpy's `broadcast_to`).
    BroadcastTo {
        /// The target shape.
        shape: Shape,
    },
    /// Join any number of inputs along an existing axis.
    Concat {
        /// The axis joined along.
        axis: usize,
    },
    /// Python slicing, one spec per axis (missing trailing axes are whole).
    Slice {
        /// Start, stop and step per axis.
        specs: Box<[SliceSpec]>,
    },
    /// numpy's `take(x, indices, axis)`: inputs are the data and an integer
    /// index tensor; negative indices count from the end.
    Gather {
        /// The axis indexed.
        axis: usize,
    },
    /// One-hot encoding of an integer tensor along a new last axis; indices
    /// outside `0..depth` give an all-zero row (as in JAX).
    OneHot {
        /// Length of the new axis.
        depth: usize,
        /// The output dtype.
        dtype: DType,
    },
    /// Constant padding.
    Pad {
        /// (before, after) per axis.
        widths: Box<[(usize, usize)]>,
        /// The fill value.
        value: F64,
    },
    /// `exp(x - max) / sum(exp(x - max))` along an axis.
    Softmax {
        /// The axis normalized over.
        axis: usize,
    },
    /// `x - logsumexp(x)` along an axis.
    LogSoftmax {
        /// The axis normalized over.
        axis: usize,
    },
    /// 2-d convolution (cross-correlation, as in every framework): input
    /// NCHW, weights OIHW with `I = C / groups`.
    Conv2d(Box<Conv2d>),
    /// Max pooling over NCHW; padding counts as minus infinity.
    MaxPool2d(Box<Pool2d>),
    /// Average pooling over NCHW.
    AvgPool2d(Box<Pool2d>),
    /// Gradient of [`Op::Conv2d`] with respect to its input: inputs are the
    /// output gradient `[N, O, OH, OW]` and the weights; `size` is the
    /// input's `[H, W]`.
    Conv2dInputGrad(Box<ConvGrad>),
    /// Gradient of [`Op::Conv2d`] with respect to its weights: inputs are the
    /// forward input and the output gradient; `size` is the kernel's `[KH, KW]`.
    Conv2dWeightGrad(Box<ConvGrad>),
    /// Gradient of [`Op::MaxPool2d`]: inputs are the forward input and the
    /// output gradient, which flows to the first maximum of each window.
    MaxPool2dGrad(Box<Pool2d>),
    /// Transpose of [`Op::MaxPool2dGrad`] in its output gradient (XLA's
    /// `select_and_gather_add`): inputs are the forward input `x` and a
    /// tensor `g` of its shape; each window's result is `g` at the first
    /// maximum of `x` in that window. The second derivative of max pooling.
    MaxPool2dGather(Box<Pool2d>),
    /// Gradient of [`Op::AvgPool2d`]: the input is the output gradient;
    /// `size` is the forward input's `[H, W]`.
    AvgPool2dGrad(Box<PoolGrad>),
    /// The identity whose gradient is zero (JAX's `stop_gradient`, Theano's
    /// `consider_constant` and `disconnected_grad`). The optimizer removes it.
    StopGradient,
    /// Inverted dropout: with `training`, each element is zeroed with
    /// probability `rate` and the rest scaled by `1/(1-rate)`; otherwise the
    /// identity. The mask is a pure function of `seed`, an optional `i64`
    /// scalar key input (a step counter) and the element index.
    Dropout {
        /// Probability of zeroing, in `[0, 1)`.
        rate: F64,
        /// Seed of the mask.
        seed: u64,
        /// Apply the mask (training) or pass through (inference).
        training: bool,
    },
    /// Uniform random values in `[low, high)`, a pure function of the seed,
    /// an optional `i64` scalar key input and the element index.
    RandomUniform(Box<Uniform>),
    /// Normal random values, a pure function like [`Op::RandomUniform`].
    RandomNormal(Box<Normal>),
}

/// Elementwise functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sign,
    Exp,
    Log,
    Log1p,
    Expm1,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Square,
    Tanh,
    Sigmoid,
    Softplus,
    Relu,
    Sin,
    Cos,
    Floor,
    Ceil,
    /// Round half to even, like numpy.
    Round,
    /// Logical not of a `bool` tensor.
    Not,
    #[serde(rename = "isnan")]
    IsNan,
    #[serde(rename = "isinf")]
    IsInf,
}

/// What dtypes a unary function takes and gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    /// Any numeric dtype, same dtype out.
    Numeric,
    /// Floats only, same dtype out.
    Float,
    /// `bool` in, `bool` out.
    Logical,
    /// Any numeric dtype in, `bool` out.
    Predicate,
}

impl UnaryOp {
    /// All unary functions.
    pub const ALL: [UnaryOp; 23] = {
        use UnaryOp::*;
        [
            Neg, Abs, Sign, Exp, Log, Log1p, Expm1, Sqrt, Rsqrt, Reciprocal, Square, Tanh, Sigmoid, Softplus, Relu,
            Sin, Cos, Floor, Ceil, Round, Not, IsNan, IsInf,
        ]
    };

    /// The name used in dumps, files and the builder.
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Abs => "abs",
            Sign => "sign",
            Exp => "exp",
            Log => "log",
            Log1p => "log1p",
            Expm1 => "expm1",
            Sqrt => "sqrt",
            Rsqrt => "rsqrt",
            Reciprocal => "reciprocal",
            Square => "square",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            Softplus => "softplus",
            Relu => "relu",
            Sin => "sin",
            Cos => "cos",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            Not => "not",
            IsNan => "isnan",
            IsInf => "isinf",
        }
    }

    /// Its dtype rule.
    pub fn kind(self) -> UnaryKind {
        use UnaryOp::*;
        match self {
            Neg | Abs | Sign | Square | Relu => UnaryKind::Numeric,
            Exp | Log | Log1p | Expm1 | Sqrt | Rsqrt | Reciprocal | Tanh | Sigmoid | Softplus | Sin | Cos | Floor
            | Ceil | Round => UnaryKind::Float,
            Not => UnaryKind::Logical,
            IsNan | IsInf => UnaryKind::Predicate,
        }
    }
}

/// Elementwise functions of two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// True division; floats only.
    Div,
    /// Floats only.
    Pow,
    /// NaN-propagating, like numpy's `maximum`.
    Maximum,
    /// NaN-propagating, like numpy's `minimum`.
    Minimum,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

/// What dtypes a binary function takes and gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// Any numeric dtype, same dtype out.
    Numeric,
    /// Floats only, same dtype out.
    Float,
    /// Any dtype in (both the same), `bool` out.
    Compare,
    /// `bool` in, `bool` out.
    Logical,
}

impl BinaryOp {
    /// All binary functions.
    pub const ALL: [BinaryOp; 15] = {
        use BinaryOp::*;
        [Add, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Ne, Lt, Le, Gt, Ge, And, Or]
    };

    /// The name used in dumps, files and the builder.
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Pow => "pow",
            Maximum => "maximum",
            Minimum => "minimum",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            And => "and",
            Or => "or",
        }
    }

    /// Its dtype rule.
    pub fn kind(self) -> BinaryKind {
        use BinaryOp::*;
        match self {
            Add | Sub | Mul | Maximum | Minimum => BinaryKind::Numeric,
            Div | Pow => BinaryKind::Float,
            Eq | Ne | Lt | Le | Gt | Ge => BinaryKind::Compare,
            And | Or => BinaryKind::Logical,
        }
    }
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ReduceOp {
    Sum,
    /// Floats only; the mean of no elements is NaN, as in numpy.
    Mean,
    Prod,
    /// Has no identity: reducing an empty axis is an error.
    Max,
    /// Has no identity: reducing an empty axis is an error.
    Min,
    /// `log(sum(exp(x)))`, computed stably; floats only.
    #[serde(rename = "logsumexp")]
    LogSumExp,
}

impl ReduceOp {
    /// All reductions.
    pub const ALL: [ReduceOp; 6] =
        [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min, ReduceOp::LogSumExp];

    /// The name used in dumps, files and the builder.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::LogSumExp => "logsumexp",
        }
    }
}

/// Index-of-extreme reductions along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ArgReduceOp {
    /// First index of the maximum (a NaN counts as the maximum).
    Argmax,
    /// First index of the minimum (a NaN counts as the minimum).
    Argmin,
}

impl ArgReduceOp {
    /// The name used in dumps, files and the builder.
    pub fn name(self) -> &'static str {
        match self {
            ArgReduceOp::Argmax => "argmax",
            ArgReduceOp::Argmin => "argmin",
        }
    }
}

/// Python's `start:stop:step` for one axis. `None` means the default for the
/// step's direction; negative bounds count from the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SliceSpec {
    /// First index taken (default 0, or the last for a negative step).
    pub start: Option<i64>,
    /// Index where the slice stops, not taken.
    pub stop: Option<i64>,
    /// Stride; never 0.
    pub step: i64,
}

impl SliceSpec {
    /// The whole axis, `:`.
    pub const FULL: SliceSpec = SliceSpec { start: None, stop: None, step: 1 };

    /// `start:stop:step` with explicit values.
    pub fn new(start: Option<i64>, stop: Option<i64>, step: i64) -> SliceSpec {
        SliceSpec { start, stop, step }
    }

    /// `start:stop` with step 1.
    pub fn range(start: i64, stop: i64) -> SliceSpec {
        SliceSpec { start: Some(start), stop: Some(stop), step: 1 }
    }

    /// Python's `slice.indices(len)`: the first index and the count taken
    /// (a count of 0 means the slice is empty). Exact for any bounds and
    /// steps, with no overflow.
    fn span(&self, len: usize) -> Result<(i128, usize), String> {
        if self.step == 0 {
            return Err("slice step cannot be zero".into());
        }
        let (len, step) = (len as i128, self.step as i128);
        let resolve = |v: i64, lo: i128, hi: i128| {
            let v = v as i128;
            (if v < 0 { v + len } else { v }).clamp(lo, hi)
        };
        let (start, stop) = if step > 0 {
            (self.start.map_or(0, |v| resolve(v, 0, len)), self.stop.map_or(len, |v| resolve(v, 0, len)))
        } else {
            (self.start.map_or(len - 1, |v| resolve(v, -1, len - 1)), self.stop.map_or(-1, |v| resolve(v, -1, len - 1)))
        };
        let gap = if step > 0 { stop - start } else { start - stop };
        let count = if gap > 0 { (gap - 1) / step.abs() + 1 } else { 0 };
        Ok((start, count as usize))
    }

    /// How many indices this slice takes from an axis of length `len`.
    pub fn count(&self, len: usize) -> Result<usize, String> {
        self.span(len).map(|(_, n)| n)
    }

    /// The indices this slice takes from an axis of length `len`, in order,
    /// following Python's `slice.indices`.
    pub fn indices(&self, len: usize) -> Result<Vec<usize>, String> {
        let (start, count) = self.span(len)?;
        Ok((0..count as i128).map(|k| (start + k * self.step as i128) as usize).collect())
    }

    /// True for `:` (the whole axis in order).
    pub fn is_full(&self) -> bool {
        *self == SliceSpec::FULL
    }
}

impl fmt::Display for SliceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.start {
            write!(f, "{s}")?;
        }
        f.write_str(":")?;
        if let Some(s) = self.stop {
            write!(f, "{s}")?;
        }
        if self.step != 1 {
            write!(f, ":{}", self.step)?;
        }
        Ok(())
    }
}

/// Attributes of [`Op::Conv2d`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2d {
    /// Step between windows, (height, width).
    pub stride: [usize; 2],
    /// Zero padding on each side, (height, width).
    pub padding: [usize; 2],
    /// Spacing between kernel taps, (height, width).
    pub dilation: [usize; 2],
    /// Channel groups; input and output channels must both divide by it.
    pub groups: usize,
}

impl Default for Conv2d {
    fn default() -> Conv2d {
        Conv2d { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

/// Attributes of [`Op::MaxPool2d`] and [`Op::AvgPool2d`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pool2d {
    /// Window size, (height, width).
    pub kernel: [usize; 2],
    /// Step between windows, (height, width).
    pub stride: [usize; 2],
    /// Padding on each side, (height, width); at most half the kernel.
    pub padding: [usize; 2],
    /// Average pooling only: divide by the whole window including padding
    /// (PyTorch's default, and the default in graph files) rather than by
    /// the valid elements.
    #[serde(default = "yes")]
    pub count_include_pad: bool,
}

fn yes() -> bool {
    true
}

impl Pool2d {
    /// A `k`x`k` window with stride `k` and no padding (the usual 2x2 pool).
    pub fn square(k: usize) -> Pool2d {
        Pool2d { kernel: [k, k], stride: [k, k], padding: [0, 0], count_include_pad: true }
    }
}

/// Attributes of the convolution gradients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvGrad {
    /// The forward convolution.
    pub conv: Conv2d,
    /// Spatial size of the result: the input's `[H, W]` or the kernel's `[KH, KW]`.
    pub size: [usize; 2],
}

/// Attributes of [`Op::AvgPool2dGrad`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolGrad {
    /// The forward pooling.
    pub pool: Pool2d,
    /// The forward input's `[H, W]`.
    pub size: [usize; 2],
}

/// Attributes of [`Op::RandomUniform`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Uniform {
    /// Output shape.
    pub shape: Shape,
    /// Output dtype (a float).
    pub dtype: DType,
    /// Lower bound, included.
    pub low: F64,
    /// Upper bound, excluded.
    pub high: F64,
    /// Seed.
    pub seed: u64,
}

/// Attributes of [`Op::RandomNormal`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Normal {
    /// Output shape.
    pub shape: Shape,
    /// Output dtype (a float).
    pub dtype: DType,
    /// Mean.
    pub mean: F64,
    /// Standard deviation.
    pub std: F64,
    /// Seed.
    pub seed: u64,
}

impl Op {
    /// The op's name as printed in dumps (`exp`, `dot`, `sum`...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Shared { .. } => "shared",
            Op::Const { .. } => "const",
            Op::Unary { fun } => fun.name(),
            Op::Binary { fun } => fun.name(),
            Op::Where => "where",
            Op::Cast { .. } => "cast",
            Op::Reduce { fun, .. } => fun.name(),
            Op::ArgReduce { fun, .. } => fun.name(),
            Op::Dot => "dot",
            Op::Gemm { .. } => "gemm",
            Op::Reshape { .. } => "reshape",
            Op::DimShuffle { .. } => "dimshuffle",
            Op::BroadcastTo { .. } => "broadcast_to",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Gather { .. } => "gather",
            Op::OneHot { .. } => "one_hot",
            Op::Pad { .. } => "pad",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Conv2d(_) => "conv2d",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::Conv2dInputGrad(_) => "conv2d_input_grad",
            Op::Conv2dWeightGrad(_) => "conv2d_weight_grad",
            Op::MaxPool2dGrad(_) => "max_pool2d_grad",
            Op::MaxPool2dGather(_) => "max_pool2d_gather",
            Op::AvgPool2dGrad(_) => "avg_pool2d_grad",
            Op::StopGradient => "stop_gradient",
            Op::Dropout { .. } => "dropout",
            Op::RandomUniform(_) => "random_uniform",
            Op::RandomNormal(_) => "random_normal",
        }
    }

    /// True for inputs, shared variables and constants.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Shared { .. } | Op::Const { .. })
    }

    /// The attributes as they appear in a text dump, e.g. `axes=[1], keepdims`.
    pub fn attrs(&self) -> String {
        fn list<T: fmt::Display>(xs: &[T]) -> String {
            let items: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
            format!("[{}]", items.join(","))
        }
        match self {
            Op::Input { name } | Op::Shared { name } => format!("{name:?}"),
            Op::Const { value } => value.to_string(),
            Op::Unary { .. } | Op::Binary { .. } | Op::Where | Op::Dot | Op::StopGradient => String::new(),
            Op::Cast { to } => to.to_string(),
            Op::Gemm { alpha, beta, trans_a, trans_b } => format!(
                "alpha={alpha}, beta={beta}{}{}",
                if *trans_a { ", trans_a" } else { "" },
                if *trans_b { ", trans_b" } else { "" }
            ),
            Op::Reduce { axes, keepdims, .. } => {
                format!("axes={}{}", list(axes), if *keepdims { ", keepdims" } else { "" })
            }
            Op::ArgReduce { axis, keepdims, .. } => {
                format!("axis={axis}{}", if *keepdims { ", keepdims" } else { "" })
            }
            Op::Reshape { shape } | Op::BroadcastTo { shape } => shape.to_string(),
            Op::DimShuffle { pattern } => {
                let items: Vec<String> =
                    pattern.iter().map(|p| p.map_or_else(|| "x".to_string(), |a| a.to_string())).collect();
                format!("[{}]", items.join(","))
            }
            Op::Concat { axis } | Op::Gather { axis } | Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                format!("axis={axis}")
            }
            Op::Slice { specs } => list(specs),
            Op::OneHot { depth, dtype } => format!("depth={depth}, {dtype}"),
            Op::Pad { widths, value } => {
                let items: Vec<String> = widths.iter().map(|(a, b)| format!("({a},{b})")).collect();
                format!("widths=[{}], value={value}", items.join(","))
            }
            Op::Conv2d(c) => conv_attrs(c),
            Op::Conv2dInputGrad(g) | Op::Conv2dWeightGrad(g) => {
                format!("{}, size={}", conv_attrs(&g.conv), pair(g.size))
            }
            Op::MaxPool2d(p) | Op::MaxPool2dGrad(p) | Op::MaxPool2dGather(p) => {
                format!("kernel={}, stride={}, padding={}", pair(p.kernel), pair(p.stride), pair(p.padding))
            }
            Op::AvgPool2d(p) => pool_attrs(p),
            Op::AvgPool2dGrad(g) => format!("{}, size={}", pool_attrs(&g.pool), pair(g.size)),
            Op::Dropout { rate, seed, training } => {
                format!("rate={rate}, seed={seed}{}", if *training { ", training" } else { "" })
            }
            Op::RandomUniform(u) => format!("{}{}, low={}, high={}, seed={}", u.dtype, u.shape, u.low, u.high, u.seed),
            Op::RandomNormal(n) => format!("{}{}, mean={}, std={}, seed={}", n.dtype, n.shape, n.mean, n.std, n.seed),
        }
    }
}

fn pair(p: [usize; 2]) -> String {
    format!("{}x{}", p[0], p[1])
}

fn conv_attrs(c: &Conv2d) -> String {
    format!(
        "stride={}, padding={}, dilation={}, groups={}",
        pair(c.stride),
        pair(c.padding),
        pair(c.dilation),
        c.groups
    )
}

fn pool_attrs(p: &Pool2d) -> String {
    format!(
        "kernel={}, stride={}, padding={}{}",
        pair(p.kernel),
        pair(p.stride),
        pair(p.padding),
        if p.count_include_pad { ", count_include_pad" } else { "" }
    )
}

/// `name{attrs}`, or just `name` when there are none.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attrs = self.attrs();
        if attrs.is_empty() { f.write_str(self.name()) } else { write!(f, "{}{{{attrs}}}", self.name()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_python() {
        let idx = |s: SliceSpec, n| s.indices(n).unwrap();
        assert_eq!(idx(SliceSpec::FULL, 4), vec![0, 1, 2, 3]);
        assert_eq!(idx(SliceSpec::new(None, None, -1), 4), vec![3, 2, 1, 0]);
        assert_eq!(idx(SliceSpec::new(Some(-1), None, -2), 5), vec![4, 2, 0]);
        assert_eq!(idx(SliceSpec::new(Some(1), Some(-1), 1), 5), vec![1, 2, 3]);
        assert_eq!(idx(SliceSpec::new(Some(10), Some(20), 1), 5), Vec::<usize>::new());
        assert_eq!(idx(SliceSpec::new(Some(-10), Some(2), 1), 5), vec![0, 1]);
        assert_eq!(idx(SliceSpec::new(Some(3), Some(0), -1), 5), vec![3, 2, 1]);
        assert_eq!(idx(SliceSpec::new(None, Some(-10), -1), 3), vec![2, 1, 0]);
        assert_eq!(idx(SliceSpec::new(None, None, 2), 0), Vec::<usize>::new());
        assert!(SliceSpec::new(None, None, 0).indices(3).is_err());
        // Huge steps and bounds neither overflow nor allocate.
        assert_eq!(idx(SliceSpec::new(Some(1), None, i64::MAX), 5), vec![1]);
        assert_eq!(idx(SliceSpec::new(Some(i64::MIN), Some(i64::MAX), i64::MIN), 5), Vec::<usize>::new());
        assert_eq!(idx(SliceSpec::new(None, None, i64::MIN), 5), vec![4]);
        assert_eq!(SliceSpec::new(None, None, 2).count(usize::MAX).unwrap(), usize::MAX / 2 + 1);
    }

    #[test]
    fn ops_serialize_tagged_by_name() {
        let op = Op::Reduce { fun: ReduceOp::Sum, axes: vec![0, 2].into(), keepdims: true };
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(json, r#"{"op":"reduce","fun":"sum","axes":[0,2],"keepdims":true}"#);
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
        assert_eq!(op.to_string(), "sum{axes=[0,2], keepdims}");
        let conv = Op::Conv2d(Box::default());
        let back: Op = serde_json::from_str(&serde_json::to_string(&conv).unwrap()).unwrap();
        assert_eq!(back, conv);
    }

    #[test]
    fn file_names_are_dump_names() {
        let tag = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for u in UnaryOp::ALL {
            assert_eq!(tag(serde_json::to_value(u).unwrap()), u.name());
        }
        for b in BinaryOp::ALL {
            assert_eq!(tag(serde_json::to_value(b).unwrap()), b.name());
        }
        for r in ReduceOp::ALL {
            assert_eq!(tag(serde_json::to_value(r).unwrap()), r.name());
        }
        let ds = serde_json::to_value(Op::DimShuffle { pattern: [Some(0)].into() }).unwrap();
        assert_eq!(ds["op"], "dimshuffle");
    }

    #[test]
    fn every_unary_and_binary_name_is_distinct() {
        let mut names: Vec<&str> = UnaryOp::ALL.iter().map(|u| u.name()).collect();
        names.extend(BinaryOp::ALL.iter().map(|b| b.name()));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
