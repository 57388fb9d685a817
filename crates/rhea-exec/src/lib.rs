//! rhea's one executor. The optimizer's plan ([`rhea_opt::Program`], its
//! [`rhea_opt::MemoryPlan`] and the [`rhea_opt::Decisions`] made for one
//! backend) becomes a [`Layout`]: every step's operands resolved to a feed,
//! a shared variable, a constant or a buffer, at one set of sizes. The
//! executor ([`run`]) carries the layout out on any [`Device`]: it runs the
//! steps in order, times them, runs what the plan put on the host through
//! the interpreter's semantics, applies the NaN guard, and stages the
//! updates with Theano's semantics (every update computed from the values
//! before the call, all landing together after the last step, unless the
//! plan let a kernel write one in place).
//!
//! A device only allocates, copies, launches and runs library ops. The
//! interpreter is the device with nothing native ([`host::Interp`]); the
//! CPU and CUDA backends implement [`Device`] in their crates, and each
//! gives the facade one [`Engine`].
#![warn(missing_docs)]

mod engine;
mod error;
pub mod host;
mod ids;
mod layout;
mod looping;
mod run;

pub use engine::{Engine, Io, Plan, SharedValues};
pub use error::{ErrorKind, ExecError};
pub use host::{Interp, SharedSlot};
pub use ids::{BufferId, ConstId, FeedId, IdVec, SharedId, StepId};
pub use layout::{Epilogue, FeedSlot, Layout, Operand, PlanStep, SharedVar, Source, Update, Work};
pub use looping::{BodyPlan, Engines, LoopStep};
pub use run::{Control, Device, Prepped, outputs, run_steps, write_updates};

pub use rhea_opt::NanCheck;
