//! What can go wrong while a plan runs, by kind.

use rhea_graph::Loc;

/// The kind of an [`ExecError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The call's inputs or shared variables do not fit the plan.
    Input,
    /// An op failed on the values it was given (an index out of range).
    Op,
    /// The plan is inconsistent (a compiler bug).
    Plan,
    /// The device failed.
    Device,
    /// A buffer could not be allocated.
    OutOfMemory,
    /// The NaN guard stopped the call.
    NanGuard,
}

/// What went wrong while a backend ran a plan, and where.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ExecError {
    /// What kind of failure it is.
    pub kind: ErrorKind,
    /// The op or kernel that failed (`None`: the call as a whole).
    pub op: Option<String>,
    /// Where the user built it.
    pub loc: Option<Loc>,
    /// What happened.
    pub msg: String,
}

impl ExecError {
    /// An error of `kind` about the call as a whole.
    pub fn new(kind: ErrorKind, msg: impl ToString) -> ExecError {
        ExecError { kind, op: None, loc: None, msg: msg.to_string() }
    }

    /// The call's inputs do not fit.
    pub fn input(msg: impl ToString) -> ExecError {
        ExecError::new(ErrorKind::Input, msg)
    }

    /// A compiler bug in the plan.
    pub fn plan(msg: impl ToString) -> ExecError {
        ExecError::new(ErrorKind::Plan, format!("plan: {}", msg.to_string()))
    }

    /// The device failed.
    pub fn device(msg: impl ToString) -> ExecError {
        ExecError::new(ErrorKind::Device, msg)
    }

    /// This error as step `op`'s (built at `loc`).
    pub fn at(mut self, op: &str, loc: Option<&Loc>) -> ExecError {
        self.op = Some(op.to_string());
        self.loc = loc.cloned();
        self
    }

    fn render(&self) -> String {
        match (&self.op, &self.loc) {
            (Some(op), Some(loc)) => format!("{op} at {loc}: {}", self.msg),
            (Some(op), None) => format!("{op}: {}", self.msg),
            _ => self.msg.clone(),
        }
    }
}
