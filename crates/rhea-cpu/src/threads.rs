//! The CPU backend's worker threads: rayon's global pool, started once,
//! explicitly, before any kernel runs.
//!
//! Left to itself, rayon starts its pool on first use and panics if a
//! thread cannot be created (a process limit, a container's pid limit, an
//! address-space limit too small for the stacks), and after such a failure
//! the pool can never be started again. So [`start`] first tries to create
//! the threads the pool would want, and starts the pool with as many as the
//! system gave. When it gives none, the pool is the calling thread alone
//! (rayon's `use_current_thread`): everything runs, on one core. That
//! thread should then outlive the work, as `main`'s does.

use std::sync::OnceLock;

/// How the pool was started: with how many threads, or why it could not be.
static POOL: OnceLock<Result<usize, String>> = OnceLock::new();

/// Starts the worker pool if it is not running: returns its thread count,
/// or an error saying why no worker thread could be created.
pub fn start() -> Result<usize, String> {
    POOL.get_or_init(|| {
        let wanted = match std::env::var("RAYON_NUM_THREADS").ok().and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let granted = probe(wanted);
        let builder = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("rhea-cpu-{i}"));
        let builder = match granted {
            0 => builder.num_threads(1).use_current_thread(),
            n => builder.num_threads(n),
        };
        match builder.build_global() {
            Ok(()) => Ok(granted.max(1)),
            // Someone (a test, an embedding program) started it first: use theirs.
            Err(e) if rayon_already_running(&e) => Ok(rayon::current_num_threads()),
            Err(e) => Err(format!("cannot start the CPU worker threads: {e}; raise the process's thread or memory limit (ulimit -u, ulimit -v)")),
        }
    })
    .clone()
}

/// Whether `build_global` failed because a pool is already running
/// (rayon's error says so only in its message).
fn rayon_already_running(e: &rayon::ThreadPoolBuildError) -> bool {
    e.to_string().contains("already been initialized")
}

/// Creates up to `wanted` threads at once (as the pool would), then lets
/// them go: how many the system allowed.
fn probe(wanted: usize) -> usize {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    let mut started = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        let wait = std::sync::Arc::clone(&wait);
        // Each blocks until the release below hangs up.
        match std::thread::Builder::new().spawn(move || drop(wait.lock().map(|w| w.recv()))) {
            Ok(handle) => started.push(handle),
            Err(_) => break,
        }
    }
    drop(release);
    let granted = started.len();
    for handle in started {
        let _ = handle.join();
    }
    granted
}

#[cfg(test)]
mod tests {
    #[test]
    fn starts_once_with_at_least_one_thread() {
        let n = super::start().unwrap();
        assert!(n >= 1);
        assert_eq!(super::start(), Ok(n));
        assert_eq!(rayon::current_num_threads(), n);
    }
}
