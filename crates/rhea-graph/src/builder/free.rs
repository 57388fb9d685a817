//! The builder's free functions: joining vars (`concat`, `stack`) and
//! choosing between them (`where_`).

use std::panic::Location;

use super::{Operand, Result, Var};
use crate::{GraphError, Loc, Op};

/// Joins vars along an existing axis.
#[track_caller]
pub fn concat(vars: &[&Var], axis: isize) -> Result<Var> {
    let loc = Loc::from_caller(Location::caller());
    let first = vars.first().ok_or_else(|| GraphError::Mismatch("concat needs at least one input".into()))?;
    let axis = first.axis(axis, first.rank())?;
    first.builder.apply(Op::Concat { axis }, vars, loc)
}

/// Joins vars along a new axis.
#[track_caller]
pub fn stack(vars: &[&Var], axis: isize) -> Result<Var> {
    let loc = Loc::from_caller(Location::caller());
    let first = vars.first().ok_or_else(|| GraphError::Mismatch("stack needs at least one input".into()))?;
    let at = first.axis(axis, first.rank() + 1)?;
    let mut expanded = Vec::with_capacity(vars.len());
    for v in vars {
        let mut pattern: Vec<Option<usize>> = (0..v.rank()).map(Some).collect();
        pattern.insert(at.min(pattern.len()), None);
        expanded.push(v.builder.apply(Op::DimShuffle { pattern: pattern.into() }, &[v], loc.clone())?);
    }
    let refs: Vec<&Var> = expanded.iter().collect();
    first.builder.apply(Op::Concat { axis: at }, &refs, loc)
}

/// `where(cond, a, b)`.
#[track_caller]
pub fn where_(cond: &Var, a: impl Operand, b: impl Operand) -> Result<Var> {
    let loc = Loc::from_caller(Location::caller());
    let a = a.to_var(cond, &loc)?;
    let b = b.to_var(&a, &loc)?;
    cond.builder.apply(Op::Where, &[cond, &a, &b], loc)
}
