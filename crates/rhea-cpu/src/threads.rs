//! The CPU backend's worker threads: rayon's global pool, started once,
//! explicitly, before any kernel runs.
//!
//! Left to itself, rayon starts its pool on first use and panics if a
//! thread cannot be created (a process limit, a container's pid limit, an
//! address-space limit too small for the stacks), and after such a failure
//! the pool can never be started again. So [`start`] creates the threads
//! itself, as many as the system gives up to the number wanted, and hands
//! exactly those to rayon (its `spawn_handler`): no thread is asked for
//! twice, so none can be refused between a count and its use.
//!
//! When the system gives none, the pool is the calling thread alone
//! (rayon's `use_current_thread`): everything runs, on one core, but only
//! from that thread; [`check_caller`] turns a call from any other thread
//! into an error instead of a wait that would never end.

use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::ThreadId;

/// How the pool started.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pool {
    /// With this many worker threads.
    Threads(usize),
    /// On this thread alone: no worker thread could be created.
    Alone(ThreadId),
    /// Not at all, and why.
    Failed(String),
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Starts the worker pool if it is not running: returns its thread count,
/// or an error saying why it could not start.
pub fn start() -> Result<usize, String> {
    match POOL.get_or_init(start_pool) {
        Pool::Threads(n) => Ok(*n),
        Pool::Alone(_) => Ok(1),
        Pool::Failed(why) => Err(why.clone()),
    }
}

/// An error if this thread cannot run CPU work: the pool is another
/// thread alone (no worker could be created), which is not waiting for it.
pub fn check_caller() -> Result<(), String> {
    match POOL.get() {
        Some(Pool::Alone(owner)) if *owner != std::thread::current().id() => {
            Err("the system gave the CPU backend no worker thread, so it runs only on the thread that first compiled \
             a function; this call came from another thread"
                .into())
        }
        _ => Ok(()),
    }
}

/// The number of threads wanted: `RAYON_NUM_THREADS`, else one per core.
fn wanted() -> usize {
    match std::env::var("RAYON_NUM_THREADS").ok().and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn start_pool() -> Pool {
    // Threads that wait to be given a rayon worker to run.
    let (give, take) = mpsc::channel::<rayon::ThreadBuilder>();
    let take = Arc::new(Mutex::new(take));
    let mut started = 0;
    for i in 0..wanted() {
        let take = Arc::clone(&take);
        let spawned = std::thread::Builder::new().name(format!("rhea-cpu-{i}")).spawn(move || {
            let worker = take.lock().ok().and_then(|t| t.recv().ok());
            if let Some(worker) = worker {
                crate::denormals::Flush::forever();
                worker.run();
            }
        });
        match spawned {
            Ok(_) => started += 1,
            Err(_) => break,
        }
    }
    let builder = rayon::ThreadPoolBuilder::new();
    let result = match started {
        0 => builder.num_threads(1).use_current_thread().build_global(),
        n => builder
            .num_threads(n)
            .spawn_handler(move |worker| give.send(worker).map_err(|_| std::io::Error::other("a waiting thread ended")))
            .build_global(),
    };
    // Threads not handed a worker (someone else's pool was running) end
    // when the last sender is dropped, with the builder above.
    match (result, started) {
        (Ok(()), 0) => Pool::Alone(std::thread::current().id()),
        (Ok(()), n) => Pool::Threads(n),
        // Someone (a test, an embedding program) started it first: use theirs.
        (Err(e), _) if e.to_string().contains("already been initialized") => {
            Pool::Threads(rayon::current_num_threads())
        }
        (Err(e), _) => Pool::Failed(format!(
            "cannot start the CPU worker threads: {e}; raise the process's thread or memory limit (ulimit -u, ulimit -v)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn starts_once_with_at_least_one_thread() {
        let n = super::start().unwrap();
        assert!(n >= 1);
        assert_eq!(super::start(), Ok(n));
        assert_eq!(rayon::current_num_threads(), n);
        assert!(super::check_caller().is_ok());
        // The pool runs work handed to it.
        let sum: u64 = rayon::iter::ParallelIterator::sum(rayon::iter::IntoParallelIterator::into_par_iter(0..1000u64));
        assert_eq!(sum, 499_500);
    }
}
