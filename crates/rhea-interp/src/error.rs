//! The interpreter's error type.

use rhea_graph::{Loc, NodeId, TensorType};

/// What went wrong while evaluating a graph.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    /// A graph input was not fed.
    #[error("input {0:?} was not given")]
    MissingInput(String),
    /// A feed names no input of the graph.
    #[error("{0:?} is not an input of the graph (inputs: {1})")]
    UnknownInput(String, String),
    /// A fed value has the wrong dtype or shape.
    #[error("input {name:?}: expected {expected}, got {got}")]
    InputMismatch {
        /// The input's name.
        name: String,
        /// Its declared type.
        expected: TensorType,
        /// What was given, as `dtype[dims]`.
        got: String,
    },
    /// Two inputs disagree on the size of a symbolic dim.
    #[error("symbolic dim {sym} is {first} from input {first_input:?} but {second} from input {second_input:?}")]
    SymbolConflict {
        /// The symbol.
        sym: String,
        /// Its size according to the first input.
        first: usize,
        /// That input.
        first_input: String,
        /// Its size according to a later input.
        second: usize,
        /// That input.
        second_input: String,
    },
    /// A symbolic dim used by an op is bound by no input.
    #[error("symbolic dim {0} is not bound by any input")]
    UnboundSymbol(String),
    /// A shared variable has no value (a graph file that left it out).
    #[error("shared variable {0:?} has no value: give it in the inputs file")]
    MissingShared(String),
    /// An op failed on the values it was given.
    #[error("{op}{}: {msg}", loc.as_ref().map_or_else(String::new, |l| format!(" at {l}")))]
    Op {
        /// The op's name.
        op: String,
        /// Where the user built the node.
        loc: Option<Loc>,
        /// What went wrong.
        msg: String,
    },
    /// A value would not fit in memory (or in the budget asked for).
    #[error("{op} ({node}){}: {msg}", loc.as_ref().map_or_else(String::new, |l| format!(" at {l}")))]
    OutOfMemory {
        /// The node whose value it is.
        node: NodeId,
        /// Its op's name.
        op: String,
        /// Where the user built it.
        loc: Option<Loc>,
        /// How much, and why it does not fit.
        msg: String,
    },
    /// The NaN guard stopped a program at a step (the message names the op).
    #[error("{0}")]
    Guard(String),
    /// The NaN guard found the first value that is not finite.
    #[error("NaN guard: {op} ({node}){} made {report}", loc.as_ref().map_or_else(String::new, |l| format!(" at {l}")))]
    NonFinite {
        /// The node that made it.
        node: NodeId,
        /// Its op's name.
        op: String,
        /// Where the user built it.
        loc: Option<Loc>,
        /// The first bad element and the inputs' statistics.
        report: String,
    },
}
