//! The elementwise functions and reductions ops are parameterized by.

use serde::{Deserialize, Serialize};

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
