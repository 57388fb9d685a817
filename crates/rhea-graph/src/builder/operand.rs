//! What stands next to a [`Var`] in an operation: another var, or a Rust
//! scalar made a constant of the var's dtype.

use super::{Result, Var};
use crate::{GraphError, Loc, Value};

/// Something usable as an operand next to a [`Var`]: another var, or a Rust
/// scalar that becomes a constant of the var's dtype.
pub trait Operand {
    /// The operand as a var of `like`'s graph.
    fn to_var(self, like: &Var, loc: &Loc) -> Result<Var>;
}

impl Operand for &Var {
    fn to_var(self, like: &Var, _: &Loc) -> Result<Var> {
        like.builder.own(self)?;
        Ok(self.clone())
    }
}

impl Operand for Var {
    fn to_var(self, like: &Var, loc: &Loc) -> Result<Var> {
        (&self).to_var(like, loc)
    }
}

pub(super) fn scalar_like(x: f64, like: &Var, loc: &Loc) -> Result<Var> {
    let dtype = like.dtype();
    let v = Value::scalar(x, dtype);
    // Floats round to the nearest value, as a literal in source does; an
    // integer or bool var must not silently truncate the scalar.
    if !dtype.is_float() && v.to_f64_vec()[0] != x {
        return Err(GraphError::Mismatch(format!("scalar {x} cannot be a {dtype} without loss (at {loc})")));
    }
    let id = like.builder.0.borrow_mut().add_const(v, Some(loc.clone()));
    Ok(like.builder.var(id))
}

macro_rules! scalar_operand {
    ($($t:ty),*) => {$(
        impl Operand for $t {
            fn to_var(self, like: &Var, loc: &Loc) -> Result<Var> {
                scalar_like(self as f64, like, loc)
            }
        }
    )*};
}
scalar_operand!(f64, f32, i32, i64);

impl Operand for bool {
    fn to_var(self, like: &Var, loc: &Loc) -> Result<Var> {
        let id = like.builder.0.borrow_mut().add_const(Value::from(self), Some(loc.clone()));
        Ok(like.builder.var(id))
    }
}
