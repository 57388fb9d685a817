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
//! Targets that are not regular files (`/dev/null`, a FIFO), and anything
//! under `/dev` or `/proc` (`/dev/stdout` redirected to a file), cannot be
//! replaced by a rename; they are written in place. A symbolic link is
//! followed: the file it points to is replaced and the link stays. A new
//! file gets the permissions the umask gives; a replaced one keeps its own.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (see the module docs). The error is
/// the operating system's; the caller names the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes what `fill` writes to `path` atomically (see the module docs).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
    // A device, a pipe, or `/dev/stdout` (a link to a pipe, or to a file
    // the shell opened): nothing to keep, and a rename would replace the
    // special file, or the shell's own file, behind the writer's back.
    let special = (path.starts_with("/dev") && !path.starts_with("/dev/shm")) || path.starts_with("/proc");
    if special || std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(path)?;
        fill(&mut file)?;
        return file.flush();
    }
    // Replace what a link points to (even one not there yet), not the link.
    let mut resolved = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&resolved) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&resolved)?;
                resolved = match resolved.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => break,
        }
    }
    let path = resolved.as_path();
    let existing = std::fs::metadata(path).ok();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut options = tempfile::Builder::new();
    options.prefix(&prefix).suffix(".tmp");
    // A new file is made as `File::create` makes one (0666 less the umask);
    // a replaced one keeps its permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = existing.as_ref().map_or(0o666, |m| m.permissions().mode());
        options.permissions(std::fs::Permissions::from_mode(mode));
    }
    let mut tmp = options.tempfile_in(dir)?;
    #[cfg(unix)]
    if let Some(m) = &existing {
        // The umask applied at creation; a replaced file keeps its own mode.
        tmp.as_file().set_permissions(m.permissions())?;
    }
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut out)?;
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
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
    fn a_link_is_followed_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.bin");
        let link = dir.path().join("link.bin");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A link to a file not there yet makes it, relative to the link.
        std::os::unix::fs::symlink("later.bin", dir.path().join("dangling.bin")).unwrap();
        write_atomic(&dir.path().join("dangling.bin"), b"made").unwrap();
        assert_eq!(std::fs::read(dir.path().join("later.bin")).unwrap(), b"made");
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
