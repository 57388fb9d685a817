//! `&x * &w + &b`: the operator overloads of [`Var`], which panic at the
//! caller's line with the message their `Result` forms return.

use std::panic::Location;

use super::{Operand, Result, Var, scalar_like};
use crate::{BinaryOp, Loc, UnaryOp};

macro_rules! operator {
    ($trait:ident, $method:ident, $fun:ident) => {
        impl<R: Operand> std::ops::$trait<R> for &Var {
            type Output = Var;
            #[track_caller]
            fn $method(self, rhs: R) -> Var {
                match self.binary(BinaryOp::$fun, rhs, Loc::from_caller(Location::caller())) {
                    Ok(v) => v,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        impl<R: Operand> std::ops::$trait<R> for Var {
            type Output = Var;
            #[track_caller]
            fn $method(self, rhs: R) -> Var {
                match self.binary(BinaryOp::$fun, rhs, Loc::from_caller(Location::caller())) {
                    Ok(v) => v,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        impl std::ops::$trait<&Var> for f64 {
            type Output = Var;
            #[track_caller]
            fn $method(self, rhs: &Var) -> Var {
                let loc = Loc::from_caller(Location::caller());
                match scalar_like(self, rhs, &loc).and_then(|l| l.binary(BinaryOp::$fun, rhs, loc)) {
                    Ok(v) => v,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        impl std::ops::$trait<Var> for f64 {
            type Output = Var;
            #[track_caller]
            fn $method(self, rhs: Var) -> Var {
                let loc = Loc::from_caller(Location::caller());
                match scalar_like(self, &rhs, &loc).and_then(|l| l.binary(BinaryOp::$fun, &rhs, loc)) {
                    Ok(v) => v,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    };
}
operator!(Add, add, Add);
operator!(Sub, sub, Sub);
operator!(Mul, mul, Mul);
operator!(Div, div, Div);

impl Var {
    /// `self + other`, the `Result` form of the `+` operator.
    #[track_caller]
    pub fn try_add(&self, other: impl Operand) -> Result<Var> {
        self.binary(BinaryOp::Add, other, Loc::from_caller(Location::caller()))
    }

    /// `self - other`, the `Result` form of the `-` operator.
    #[track_caller]
    pub fn try_sub(&self, other: impl Operand) -> Result<Var> {
        self.binary(BinaryOp::Sub, other, Loc::from_caller(Location::caller()))
    }

    /// `self * other`, the `Result` form of the `*` operator.
    #[track_caller]
    pub fn try_mul(&self, other: impl Operand) -> Result<Var> {
        self.binary(BinaryOp::Mul, other, Loc::from_caller(Location::caller()))
    }

    /// `self / other`, the `Result` form of the `/` operator.
    #[track_caller]
    pub fn try_div(&self, other: impl Operand) -> Result<Var> {
        self.binary(BinaryOp::Div, other, Loc::from_caller(Location::caller()))
    }

    /// `-self`, the `Result` form of unary `-`.
    #[track_caller]
    pub fn try_neg(&self) -> Result<Var> {
        self.unary(UnaryOp::Neg, Loc::from_caller(Location::caller()))
    }
}

impl std::ops::Neg for &Var {
    type Output = Var;
    #[track_caller]
    fn neg(self) -> Var {
        match self.unary(UnaryOp::Neg, Loc::from_caller(Location::caller())) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }
}

impl std::ops::Neg for Var {
    type Output = Var;
    #[track_caller]
    fn neg(self) -> Var {
        -&self
    }
}
