//! What rhea's command-line programs (the `rhea` tool and the examples)
//! share: exit statuses, usage errors, and quiet ends on a closed pipe.
//!
//! - `Ok` exits 0; an error prints `error: ...` with its causes and exits 1;
//!   a [`Usage`] error (a flag out of range) exits 2, as clap's own do.
//! - A closed standard output (`rhea run g.json | head -1`) ends the program
//!   quietly with status 0, as ripgrep does: print with [`outln!`], which
//!   returns the write's error instead of panicking.
//!
//! [`outln!`]: crate::outln

use std::process::ExitCode;

/// A command line that asks for something impossible: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A usage error, as an `anyhow::Error` to return.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

/// Whether the error, or any of its causes, is a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The exit status for a program's result, printing the error if any.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            // Standard error may be closed too; there is no one left to tell.
            let _ = writeln!(std::io::stderr().lock(), "error: {e:#}");
            if e.chain().any(|c| c.is::<Usage>()) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipes_anywhere_in_the_chain_exit_quietly() {
        let pipe = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("printing");
        assert!(is_broken_pipe(&pipe));
        let nn = anyhow::Error::from(crate::nn::NnError::Output(std::io::ErrorKind::BrokenPipe.into()));
        assert!(is_broken_pipe(&nn));
        assert_eq!(exit_code(Err(pipe)), ExitCode::SUCCESS);
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
        assert_eq!(exit_code(Err(usage("--batch-size must be at least 1"))), ExitCode::from(2));
        assert_eq!(exit_code(Err(anyhow::anyhow!("bad file"))), ExitCode::FAILURE);
    }
}
