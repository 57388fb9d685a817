//! The meaning of every elementwise function on one element: the single
//! definition that the graph interpreter and the kernel evaluator share.
//! Float functions are computed in `f64` and rounded once to the element
//! type; integer arithmetic wraps.

use rhea_graph::{BinaryOp, DType, UnaryOp};

use crate::num::{Num, Prim, float};

/// One element of any dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Scalar {
    F32(f32),
    F64(f64),
    I32(i32),
    I64(i64),
    Bool(bool),
}

impl Scalar {
    /// The element's dtype.
    pub fn dtype(self) -> DType {
        match self {
            Scalar::F32(_) => DType::F32,
            Scalar::F64(_) => DType::F64,
            Scalar::I32(_) => DType::I32,
            Scalar::I64(_) => DType::I64,
            Scalar::Bool(_) => DType::Bool,
        }
    }

    /// The value as `f64` (`true` is 1).
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::F32(x) => x as f64,
            Scalar::F64(x) => x,
            Scalar::I32(x) => x as f64,
            Scalar::I64(x) => x as f64,
            Scalar::Bool(x) => x as u8 as f64,
        }
    }

    /// Converts like Rust's `as` (see [`Prim`]).
    pub fn cast(self, to: DType) -> Scalar {
        fn conv<T: Prim>(x: T, to: DType) -> Scalar {
            match to {
                DType::F32 => Scalar::F32(x.as_f32()),
                DType::F64 => Scalar::F64(x.as_f64()),
                DType::I32 => Scalar::I32(x.as_i32()),
                DType::I64 => Scalar::I64(x.as_i64()),
                DType::Bool => Scalar::Bool(x.as_bool()),
            }
        }
        match self {
            Scalar::F32(x) => conv(x, to),
            Scalar::F64(x) => conv(x, to),
            Scalar::I32(x) => conv(x, to),
            Scalar::I64(x) => conv(x, to),
            Scalar::Bool(x) => conv(x, to),
        }
    }

    /// A float of `dtype` from an `f64` result, rounded once.
    fn float(x: f64, dtype: DType) -> Scalar {
        if dtype == DType::F32 { Scalar::F32(x as f32) } else { Scalar::F64(x) }
    }
}

/// Every unary function on an `f64` (floats compute through this, then
/// round once to their dtype).
pub fn unary_f64(op: UnaryOp, x: f64) -> f64 {
    use UnaryOp::*;
    match op {
        Neg => -x,
        Abs => x.abs(),
        Sign => Num::sign(x),
        Square => x * x,
        Relu => x.max_nan(0.0),
        Exp => x.exp(),
        Log => x.ln(),
        Log1p => x.ln_1p(),
        Expm1 => x.exp_m1(),
        Sqrt => x.sqrt(),
        Rsqrt => 1.0 / x.sqrt(),
        Reciprocal => 1.0 / x,
        Tanh => x.tanh(),
        Sigmoid => float::sigmoid(x),
        Softplus => float::softplus(x),
        Sin => x.sin(),
        Cos => x.cos(),
        Floor => x.floor(),
        Ceil => x.ceil(),
        Round => x.round_ties_even(),
        // Predicates and `not` are handled by `unary`; as floats they are 0/1.
        IsNan => x.is_nan() as u8 as f64,
        IsInf => x.is_infinite() as u8 as f64,
        Not => (x == 0.0) as u8 as f64,
    }
}

/// An integer's value under one of the numeric unary functions.
pub fn unary_int<T: Num>(op: UnaryOp, x: T) -> T {
    use UnaryOp::*;
    match op {
        Neg => x.neg(),
        Abs => x.abs(),
        Sign => x.sign(),
        Square => x.mul(x),
        Relu => x.max_nan(T::ZERO),
        // The type rules allow no other unary function on integers.
        _ => x,
    }
}

/// A unary function of one element (the type rule has been checked).
pub fn unary(op: UnaryOp, x: Scalar) -> Scalar {
    match (op, x) {
        (UnaryOp::IsNan, s) => Scalar::Bool(s.to_f64().is_nan()),
        (UnaryOp::IsInf, s) => Scalar::Bool(s.to_f64().is_infinite()),
        (UnaryOp::Not, Scalar::Bool(b)) => Scalar::Bool(!b),
        (op, Scalar::F32(v)) => Scalar::F32(unary_f64(op, v as f64) as f32),
        (op, Scalar::F64(v)) => Scalar::F64(unary_f64(op, v)),
        (op, Scalar::I32(v)) => Scalar::I32(unary_int(op, v)),
        (op, Scalar::I64(v)) => Scalar::I64(unary_int(op, v)),
        (_, s) => s,
    }
}

/// Comparisons, any dtype.
pub fn compare<T: PartialOrd + PartialEq>(op: BinaryOp, a: T, b: T) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        BinaryOp::Ge => a >= b,
        _ => false,
    }
}

/// The arithmetic binary functions on one numeric type.
pub fn arith<T: Num>(op: BinaryOp, a: T, b: T) -> T {
    match op {
        BinaryOp::Add => a.add(b),
        BinaryOp::Sub => a.sub(b),
        BinaryOp::Mul => a.mul(b),
        BinaryOp::Maximum => a.max_nan(b),
        BinaryOp::Minimum => a.min_nan(b),
        BinaryOp::Div => T::from_f64(a.to_f64() / b.to_f64()),
        BinaryOp::Pow => T::from_f64(a.to_f64().powf(b.to_f64())),
        _ => a,
    }
}

/// A binary function of two elements of one dtype (the type rule has been
/// checked).
pub fn binary(op: BinaryOp, a: Scalar, b: Scalar) -> Scalar {
    use BinaryOp::*;
    match op {
        Eq | Ne | Lt | Le | Gt | Ge => Scalar::Bool(match (a, b) {
            (Scalar::F32(x), Scalar::F32(y)) => compare(op, x, y),
            (Scalar::F64(x), Scalar::F64(y)) => compare(op, x, y),
            (Scalar::I32(x), Scalar::I32(y)) => compare(op, x, y),
            (Scalar::I64(x), Scalar::I64(y)) => compare(op, x, y),
            (Scalar::Bool(x), Scalar::Bool(y)) => compare(op, x, y),
            _ => false,
        }),
        And | Or => match (a, b) {
            (Scalar::Bool(x), Scalar::Bool(y)) => Scalar::Bool(if op == And { x && y } else { x || y }),
            _ => a,
        },
        _ => match (a, b) {
            (Scalar::F32(x), Scalar::F32(y)) => Scalar::float(arith(op, x as f64, y as f64), DType::F32),
            (Scalar::F64(x), Scalar::F64(y)) => Scalar::F64(arith(op, x, y)),
            (Scalar::I32(x), Scalar::I32(y)) => Scalar::I32(arith(op, x, y)),
            (Scalar::I64(x), Scalar::I64(y)) => Scalar::I64(arith(op, x, y)),
            _ => a,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantics_match_numpy_corners() {
        assert_eq!(unary(UnaryOp::Round, Scalar::F32(2.5)), Scalar::F32(2.0));
        assert_eq!(unary(UnaryOp::Sign, Scalar::F64(-0.0)), Scalar::F64(0.0));
        assert!(matches!(unary(UnaryOp::Relu, Scalar::F64(f64::NAN)), Scalar::F64(x) if x.is_nan()));
        assert_eq!(unary(UnaryOp::Abs, Scalar::I32(i32::MIN)), Scalar::I32(i32::MIN));
        assert_eq!(binary(BinaryOp::Add, Scalar::I32(i32::MAX), Scalar::I32(1)), Scalar::I32(i32::MIN));
        assert!(
            matches!(binary(BinaryOp::Maximum, Scalar::F32(f32::NAN), Scalar::F32(1.0)), Scalar::F32(x) if x.is_nan())
        );
        assert_eq!(binary(BinaryOp::Lt, Scalar::F64(f64::NAN), Scalar::F64(1.0)), Scalar::Bool(false));
        assert_eq!(binary(BinaryOp::Ne, Scalar::F64(f64::NAN), Scalar::F64(f64::NAN)), Scalar::Bool(true));
        assert_eq!(unary(UnaryOp::IsInf, Scalar::I64(3)), Scalar::Bool(false));
        assert_eq!(Scalar::F32(-2.7).cast(DType::I32), Scalar::I32(-2));
        assert_eq!(Scalar::F64(f64::NAN).cast(DType::I64), Scalar::I64(0));
        assert_eq!(Scalar::I32(0).cast(DType::Bool), Scalar::Bool(false));
    }
}
