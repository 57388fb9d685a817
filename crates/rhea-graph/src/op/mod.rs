//! The closed set of operations. Every `match` on [`Op`] is exhaustive, so
//! adding an op shows each place (shape rule, interpreter, gradient,
//! lowering) that needs work.

use std::fmt;

use serde::{Deserialize, Serialize};

mod attrs;
mod funs;

pub use attrs::{Conv2d, ConvGrad, Normal, Pool2d, PoolGrad, SliceSpec, Uniform};
pub use funs::{ArgReduceOp, BinaryKind, BinaryOp, ReduceOp, UnaryKind, UnaryOp};

use crate::{DType, F64, Literal, Scan, Shape};

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
    /// A loop (Theano's `scan`, see [`crate::scan`]): inputs are the
    /// sequences, the initial states and the non-sequences; its value is
    /// the number of steps run (`i64`).
    Scan(Box<Scan>),
    /// Result `index` of the scan that is its input: a state or per-step
    /// output stacked over the steps, or a state's final value
    /// ([`Scan::part`]).
    ScanResult {
        /// Which result.
        index: usize,
    },
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
            Op::Scan(_) => "scan",
            Op::ScanResult { .. } => "scan_result",
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
            Op::Scan(s) => scan_attrs(s),
            Op::ScanResult { index } => format!("index={index}"),
        }
    }
}

fn scan_attrs(s: &Scan) -> String {
    let taps: Vec<String> = s.taps.iter().map(|t| format!("{t:?}").replace(' ', "")).collect();
    let mut out = format!(
        "n_steps={}, sequences={}, taps=[{}], outputs={}, non_sequences={}",
        s.n_steps,
        s.sequences,
        taps.join(","),
        s.outputs,
        s.non_sequences
    );
    if s.go_backwards {
        out.push_str(", go_backwards");
    }
    if let Some(k) = s.truncate_gradient {
        out.push_str(&format!(", truncate_gradient={k}"));
    }
    if s.until {
        out.push_str(", until");
    }
    out
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
