//! rhea's neural-network layer: layers, losses and metrics as graph
//! builders, optimizers as update rules over shared variables, tabular data
//! loading, and a small Keras-like training loop.
//!
//! ```
//! use rhea_graph::{Builder, DType};
//! use rhea_nn::{Activation, Adam, Dense, Optimizer, binary_crossentropy_with_logits};
//!
//! let g = Builder::new();
//! let batch = g.dim("batch")?;
//! let x = g.input("x", DType::F32, [batch, 60.into()])?;
//! let y = g.input("y", DType::F32, [batch, 1.into()])?;
//! let l1 = Dense::new(&g, "dense_1", 60, 8, 1)?;
//! let l2 = Dense::new(&g, "dense_2", 8, 1, 2)?;
//! let logits = l2.forward(&Activation::Relu.apply(&l1.forward(&x)?)?)?;
//! let loss = binary_crossentropy_with_logits(&logits, &y)?;
//! let params = [l1.params(), l2.params()].concat();
//! let updates = Adam::default().updates(&loss, &params)?;
//! assert_eq!(updates.len(), 1 + 3 * params.len()); // step count, then m, v, param each
//! # Ok::<(), rhea_nn::NnError>(())
//! ```
#![warn(missing_docs)]

mod atomic;
pub mod console;
pub mod data;
mod error;
pub mod images;
pub mod init;
pub mod io;
mod layers;
mod losses;
pub mod models;
mod optimizers;
mod recurrent;
mod train;

pub use error::{NnError, Result};

/// `println!` that never panics: after a closed pipe (`| head -1`) the
/// output is dropped and the program carries on ([`console`]); other
/// write errors are returned as a `std::io::Result`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::write_line(::std::format_args!($($arg)*))
    };
}
pub use layers::{Activation, Conv2d, Dense, dropout, flatten, max_pool2d};
pub use losses::{
    binary_accuracy_from_logits, binary_crossentropy, binary_crossentropy_with_logits, categorical_accuracy,
    categorical_crossentropy, categorical_crossentropy_with_logits,
};
pub use optimizers::{Adam, Optimizer, Sgd};
pub use recurrent::{Lstm, SimpleRnn};
pub use train::{Callable, EpochLog, FitOptions, evaluate, fit, predict};
