//! The graph crate's error type.

use std::fmt;

use crate::Loc;

/// What went wrong while building, changing or loading a graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// An op was given inputs its rule does not accept.
    #[error("{op}: {msg} (inputs: {inputs}){}", at(loc))]
    Type {
        /// The op's name.
        op: String,
        /// The input types, comma-separated.
        inputs: String,
        /// The rule broken.
        msg: String,
        /// Where the user built the node.
        loc: Option<Loc>,
    },
    /// Two inputs or shared variables with one name.
    #[error("the name {0:?} is already taken by another input or shared variable")]
    DuplicateName(String),
    /// Vars from two builders were combined.
    #[error("operands belong to different graphs: build every operand with the same Builder")]
    ForeignVar,
    /// A value does not match the type it is given for.
    #[error("{0}")]
    Mismatch(String),
    /// A graph file is malformed or inconsistent.
    #[error("graph file: {0}")]
    Format(String),
}

fn at(loc: &Option<Loc>) -> String {
    loc.as_ref().map_or_else(String::new, |l| format!(" at {l}"))
}

/// A list of displayable things joined by ", ".
pub(crate) fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}
