//! The interpreter's service to the optimizer: evaluating one op on
//! constants. (Optimized programs run on the one executor, `rhea-exec`,
//! whose interpreter engine uses this crate's op semantics.)

use rhea_graph::{Op, Value};

use crate::{Bindings, eval_op};

/// Evaluates one op on constants: the optimizer's constant folder.
pub fn fold_constant(op: &Op, inputs: &[&Value]) -> Result<Value, String> {
    eval_op(op, inputs, &Bindings::new())
}
