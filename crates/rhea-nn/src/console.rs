//! Standard output that a closed pipe cannot stop: once the reader has gone
//! (`rhea run g.json | head -1`), further output is dropped and the program
//! carries on, so that the files it was asked to write (a checkpoint, a
//! bench JSON, predictions) are still written, and it ends with status 0.
//! Print through [`crate::outln!`].

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output met a closed pipe.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output; after a closed pipe, nothing.
/// Other errors (a full disk behind a redirect) are returned.
pub fn write(text: &[u8]) -> std::io::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// [`write`] of a formatted line.
pub fn write_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    write(format!("{args}\n").as_bytes())
}
