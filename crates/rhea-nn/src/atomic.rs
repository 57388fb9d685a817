//! Atomic file writes: a file rhea writes is either the whole new file or
//! the previous file byte for byte, never a partial one under its name.
//!
//! The bytes go to a temporary file in the target's own directory (so the
//! final rename stays on one file system), are flushed and `fsync`ed, and
//! the temporary file is renamed over the target; then the directory is
//! `fsync`ed so the rename itself survives a crash. A failed write (a full
//! disk, `ulimit -f`, a signal) removes the temporary file and leaves the
//! target as it was. A process killed with SIGKILL mid-write can leave a
//! `.NAME.*.tmp` file beside the target, but never touches the target.
//!
//! Targets that are not regular files (`/dev/null`, `/dev/stdout`, a FIFO)
//! cannot be replaced by a rename; they are written in place.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (see the module docs). The error is
/// the operating system's; the caller names the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes what `fill` writes to `path` atomically (see the module docs).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
    let existing = std::fs::metadata(path).ok();
    if existing.as_ref().is_some_and(|m| !m.is_file()) {
        // A device or a pipe: there is nothing to keep, and a rename would
        // replace the special file itself.
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        fill(&mut file)?;
        return file.flush();
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut out)?;
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    // The temporary file is private (0600); the result gets the target's
    // permissions, or those of a newly created file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = existing.map_or(0o644, |m| m.permissions().mode());
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable once the directory is; some file systems
    // refuse to sync a directory, which loses nothing already written.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_keeps_it_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        // A writer that fails halfway leaves the previous file and no temporary.
        let e = write_atomic_with(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("out.bin")]);
        // A missing directory is an error, not a panic.
        assert!(write_atomic(&dir.path().join("no/such/dir/x"), b"x").is_err());
        // A device is written in place.
        write_atomic(Path::new("/dev/null"), b"gone").unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn keeps_the_targets_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        write_atomic(&path, b"a").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_atomic(&path, b"b").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
    }
}
