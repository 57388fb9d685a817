//! Checking generated PTX with NVIDIA's assembler, where one is installed
//! (the CUDA toolkit, or the pip package `nvidia-cuda-nvcc-cu12`). The
//! tests assemble every kernel they generate; nothing at run time needs it.

use std::path::PathBuf;
use std::process::Command;

use crate::ptx::Target;

/// `ptxas`: `$RHEA_PTXAS`, else on `PATH`, else inside the Python package
/// `nvidia-cuda-nvcc-cu12` of `python3`.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RHEA_PTXAS") {
        return Some(PathBuf::from(p));
    }
    if Command::new("ptxas").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("ptxas"));
    }
    let out = Command::new("python3")
        .args(["-c", "import nvidia.cuda_nvcc as m; print(list(m.__path__)[0])"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(dir.trim()).join("bin").join("ptxas");
    path.is_file().then_some(path)
}

/// Assembles `ptx` for `target` with `ptxas`, giving its complaints on failure.
pub fn assemble(ptxas: &std::path::Path, ptx: &str, target: Target) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("rhea-ptxas-{}-{}", std::process::id(), target.sm));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join(format!("module-{}.ptx", unique()));
    std::fs::write(&src, ptx).map_err(|e| format!("{}: {e}", src.display()))?;
    let out = Command::new(ptxas)
        .arg(format!("-arch={}", target.arch()))
        .arg(&src)
        .arg("-o")
        .arg(src.with_extension("cubin"))
        .output()
        .map_err(|e| format!("running {}: {e}", ptxas.display()))?;
    let _ = std::fs::remove_file(src.with_extension("cubin"));
    if out.status.success() {
        let _ = std::fs::remove_file(&src);
        Ok(())
    } else {
        Err(format!(
            "ptxas -arch={} rejected {}:\n{}",
            target.arch(),
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
