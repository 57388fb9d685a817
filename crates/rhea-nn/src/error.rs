//! The nn crate's error type.

use std::path::PathBuf;

/// What went wrong while building a model, loading data or training.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// Building the graph failed.
    #[error(transparent)]
    Graph(#[from] rhea_graph::GraphError),
    /// A data file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (part of the message, so not also a `source`).
        error: std::io::Error,
    },
    /// A CSV row is malformed.
    #[error("{path}:{line}: {msg}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
        /// What is wrong, naming the field.
        msg: String,
    },
    /// Data that does not fit what was asked (sizes, splits, labels).
    #[error("{0}")]
    Data(String),
    /// A model asked for with options that do not make one.
    #[error("{0}")]
    Invalid(String),
    /// Progress could not be written to standard output (a closed pipe).
    #[error("cannot write to standard output: {0}")]
    Output(#[source] std::io::Error),
    /// A compiled function failed while training or evaluating.
    #[error("{0}")]
    Run(String),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, NnError>;
