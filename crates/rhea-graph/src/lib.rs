//! rhea's graph IR: dtypes, shapes, the closed [`Op`] set with one shape rule
//! each, the [`Graph`] (a petgraph `StableDiGraph` with hash-consing), the
//! [`Builder`]/[`Var`] API users build graphs with, and text, DOT and JSON
//! dumps.
//!
//! ```
//! use rhea_graph::{Builder, DType, TextOptions, to_text};
//!
//! let g = Builder::new();
//! let batch = g.dim("batch")?;
//! let x = g.input("x", DType::F32, [batch, 3.into()])?;
//! let w = g.shared("w", ndarray::array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]])?;
//! let y = x.dot(&w)?.relu()?.sum(&[1], false)?;
//! g.output("y", &y)?;
//! assert_eq!(
//!     to_text(&g.graph(), TextOptions::default()),
//!     "%0 = input \"x\" : f32[batch,3]\n\
//!      %1 = shared \"w\" : f32[3,2]\n\
//!      %2 = dot(%0, %1) : f32[batch,2]\n\
//!      %3 = relu(%2) : f32[batch,2]\n\
//!      %4 = sum{axes=[1]}(%3) : f32[batch]\n\
//!      output \"y\" = %4\n"
//! );
//! # Ok::<(), rhea_graph::GraphError>(())
//! ```
#![warn(missing_docs)]

mod builder;
mod dot;
mod dtype;
mod error;
mod grad;
mod graph;
mod infer;
mod json;
pub mod memory;
mod op;
mod print;
pub mod rng;
pub mod scan;
mod shape;
mod value;

pub use builder::{Builder, Operand, ScanArgs, ScanOut, State, Step, StepOut, Var, concat, stack, where_};
pub use dot::to_dot;
pub use dtype::DType;
pub use error::GraphError;
pub use grad::{
    Disconnected, GradOptions, grad, grad_nodes, grad_opts, grad_with, hessian, hessian_vector_product, jacobian,
    jacobian_nodes, jvp, jvp_nodes, lop,
};
pub use graph::{Fetch, Graph, Loc, Node, NodeId, check_value};
pub use infer::{infer, matmul_shape, reduced_shape, window_count};
pub use json::{FORMAT, INLINE_LIMIT, VERSION, from_json, to_json, to_json_with};
pub use op::{
    ArgReduceOp, BinaryKind, BinaryOp, Conv2d, ConvGrad, Normal, Op, Pool2d, PoolGrad, ReduceOp, SliceSpec, UnaryKind,
    UnaryOp, Uniform,
};
pub use print::{TextOptions, numbering, to_text};
pub use scan::{Body, Scan, ScanPart};
pub use shape::{Dim, Shape, Symbol, TensorType, broadcast_shapes, normalize_axis};
pub use value::{ElementsMut, F64, Literal, Value, nan_report};
