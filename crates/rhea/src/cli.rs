//! What rhea's command-line programs (the `rhea` tool and the examples)
//! share: exit statuses, usage errors, and quiet ends on a closed pipe.
//!
//! - `Ok` exits 0; an error prints `error: ...` with its causes and exits 1;
//!   a [`Usage`] error (a flag out of range) exits 2, as clap's own do.
//! - A closed standard output (`rhea run g.json | head -1`) never panics:
//!   print with [`outln!`], after which output is dropped and the program
//!   still writes the files it was asked for, then exits 0, as ripgrep
//!   does. A closed pipe given as a file (`-o fifo`) is an error like any
//!   other failed write.
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

/// A size in bytes as people write it: `1000`, `300M`, `1.5G`, `2GiB`,
/// `512k` (k, M, G, T are powers of 1000; Ki, Mi, Gi, Ti of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().trim_end_matches(['B', 'b']) {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" | "m" => 1e6,
        "G" | "g" => 1e9,
        "T" | "t" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return Err(format!("{text:?} is not a size (write it as 300M, 1.5G, 2GiB or a number of bytes)")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (write it as 300M, 1.5G, 2GiB or a number of bytes)"))?;
    let bytes = n * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is not a usable memory size"));
    }
    Ok(bytes as u64)
}

/// The exit status for a program's result, printing the error if any.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
    fn usage_errors_exit_2_and_others_1() {
        assert_eq!(exit_code(Ok(())), ExitCode::SUCCESS);
        assert_eq!(exit_code(Err(usage("--batch-size must be at least 1"))), ExitCode::from(2));
        let wrapped = usage("--lr must be positive").context("reading the flags");
        assert_eq!(exit_code(Err(wrapped)), ExitCode::from(2));
        assert_eq!(exit_code(Err(anyhow::anyhow!("bad file"))), ExitCode::FAILURE);
        // A pipe given as a file is a failed write, not a quiet end.
        let pipe = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("writing out.bin");
        assert_eq!(exit_code(Err(pipe)), ExitCode::FAILURE);
    }

    #[test]
    fn sizes_parse_as_written() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("300M"), Ok(300_000_000));
        assert_eq!(parse_bytes("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512k"), Ok(512_000));
        for bad in ["", "abc", "-1G", "0", "1Q", "1e400"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
