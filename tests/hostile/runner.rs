//! Runs one case as a child process and judges it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which program a case runs.
#[derive(Clone, Copy)]
pub enum Prog {
    Rhea,
    Example(&'static str),
}

/// What a case must end with.
pub enum Expect {
    /// Exit 0, no error printed.
    Success,
    /// This exit status, and every one of these words in standard error.
    Fails(i32, Vec<String>),
    /// Either exit 0, or exit 1 with these words (a limit that may or may
    /// not be enough, depending on the machine).
    SucceedsOr(Vec<String>),
    /// Stopped by the fault the case injects: killed by one of these
    /// signals, or exited with one of these statuses (an error that said
    /// so, or done before the fault came); the file check says what matters.
    Stopped { signals: Vec<i32>, codes: Vec<i32> },
}

/// What a file the case writes must be afterwards.
pub enum FileCheck {
    /// Byte for byte what it was before.
    Unchanged(PathBuf, Vec<u8>),
    /// What it was before, or a complete, loadable safetensors file.
    OldOrComplete(PathBuf, Vec<u8>),
    /// Written: not empty, and loadable if it is a safetensors file.
    Written(PathBuf),
}

/// One hostile case.
pub struct Case {
    pub name: String,
    pub prog: Prog,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    /// `ulimit` options applied through `sh -c` (`-v KB`, `-f BLOCKS`).
    pub ulimit: Option<String>,
    /// Run as user `nobody` with at most this many processes and threads
    /// (`ulimit -u`, which binds only users other than root).
    pub max_threads: Option<u32>,
    /// Standard output is a pipe whose reader is already closed.
    pub closed_stdout: bool,
    /// SIGKILL the program after this long.
    pub kill_after: Option<Duration>,
    pub expect: Expect,
    pub file: Option<FileCheck>,
}

impl Case {
    pub fn new(name: impl Into<String>, prog: Prog, args: &[&str], expect: Expect) -> Case {
        Case {
            name: name.into(),
            prog,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            ulimit: None,
            max_threads: None,
            closed_stdout: false,
            kill_after: None,
            expect,
            file: None,
        }
    }

    pub fn env(mut self, key: &'static str, value: &str) -> Case {
        self.env.push((key, value.to_string()));
        self
    }

    pub fn ulimit(mut self, opts: &str) -> Case {
        self.ulimit = Some(opts.to_string());
        self
    }

    pub fn max_threads(mut self, n: u32) -> Case {
        self.max_threads = Some(n);
        self
    }

    pub fn closed_stdout(mut self) -> Case {
        self.closed_stdout = true;
        self
    }

    pub fn kill_after(mut self, after: Duration) -> Case {
        self.kill_after = Some(after);
        self
    }

    pub fn file(mut self, check: FileCheck) -> Case {
        self.file = Some(check);
        self
    }
}

/// SIGKILL, or done first.
pub fn killed() -> Expect {
    Expect::Stopped { signals: vec![9], codes: vec![0] }
}

/// Over the file-size limit: SIGXFSZ, or an error for the failed write.
pub fn over_file_limit() -> Expect {
    Expect::Stopped { signals: vec![25], codes: vec![1] }
}

/// An exit status and error words, as `Expect::Fails` wants them.
pub fn fails(status: i32, words: &[&str]) -> Expect {
    Expect::Fails(status, words.iter().map(|w| w.to_string()).collect())
}

fn program(prog: Prog) -> PathBuf {
    match prog {
        Prog::Rhea => PathBuf::from(env!("CARGO_BIN_EXE_rhea")),
        Prog::Example(name) => {
            let exe = std::env::current_exe().expect("the test binary has a path");
            let dir = exe.parent().and_then(|deps| deps.parent()).expect("tests run from target/<profile>/deps");
            dir.join("examples").join(name)
        }
    }
}

/// The longest any case may take before it counts as hung.
const HANG: Duration = Duration::from_secs(180);

/// Runs `case`: `Err` says what was wrong.
fn run(case: &Case) -> Result<(), String> {
    let exe = program(case.prog);
    let mut cmd = match (&case.ulimit, case.max_threads) {
        (_, Some(n)) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c"]);
            c.arg(format!("ulimit -u {n} && exec \"$0\" \"$@\"")).arg(&exe).args(&case.args);
            c
        }
        (Some(opts), None) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("ulimit {opts} && exec \"$0\" \"$@\"")).arg(&exe).args(&case.args);
            c
        }
        (None, None) => {
            let mut c = Command::new(&exe);
            c.args(&case.args);
            c
        }
    };
    cmd.envs(case.env.iter().map(|(k, v)| (*k, v.as_str()))).stdin(Stdio::null()).stderr(Stdio::piped());
    if case.closed_stdout {
        let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        drop(reader);
        cmd.stdout(writer);
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    drop(cmd);
    let started = Instant::now();
    if let Some(after) = case.kill_after {
        std::thread::sleep(after);
        let _ = child.kill();
    }
    // Drain both pipes on threads, so a chatty child never blocks on them.
    let out = child.stdout.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut buf);
            buf
        })
    });
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut buf);
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            return Err(format!("still running after {HANG:?}: hung"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    let stdout = out.map(|t| String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned()).unwrap_or_default();
    let shown = || format!("status {status}\nstderr:\n{stderr}\nstdout (end):\n{}", tail(&stdout));
    for bad in ["panicked", "memory allocation of", "RUST_BACKTRACE", "stack backtrace"] {
        if stderr.contains(bad) {
            return Err(format!("printed {bad:?}: {}", shown()));
        }
    }
    let code = status.code();
    if matches!(code, Some(101) | Some(134)) {
        return Err(format!("exited {code:?} (a panic or an abort): {}", shown()));
    }
    match &case.expect {
        Expect::Success => {
            if code != Some(0) {
                return Err(format!("should succeed: {}", shown()));
            }
        }
        Expect::Fails(want, words) => {
            if code != Some(*want) {
                return Err(format!("should exit {want}: {}", shown()));
            }
            if !stderr.lines().any(|l| l.starts_with("error: ")) && *want != 2 {
                return Err(format!("no `error: ` line: {}", shown()));
            }
            if let Some(w) = words.iter().find(|w| !stderr.contains(w.as_str())) {
                return Err(format!("the message lacks {w:?}: {}", shown()));
            }
        }
        Expect::SucceedsOr(words) => {
            if code != Some(0) {
                if code != Some(1) {
                    return Err(format!("should succeed or exit 1: {}", shown()));
                }
                if let Some(w) = words.iter().find(|w| !stderr.contains(w.as_str())) {
                    return Err(format!("the message lacks {w:?}: {}", shown()));
                }
            }
        }
        Expect::Stopped { signals, codes } => {
            use std::os::unix::process::ExitStatusExt;
            let by_signal = status.signal().is_some_and(|sig| signals.contains(&sig));
            let by_code = code.is_some_and(|c| codes.contains(&c));
            if !(by_signal || by_code) {
                return Err(format!("should end by signal {signals:?} or status {codes:?}: {}", shown()));
            }
        }
    }
    match &case.file {
        None => Ok(()),
        Some(FileCheck::Unchanged(path, before)) => match std::fs::read(path) {
            Ok(now) if &now == before => Ok(()),
            Ok(now) => {
                Err(format!("{} changed ({} bytes, was {}): {}", path.display(), now.len(), before.len(), shown()))
            }
            Err(e) => Err(format!("{} is gone ({e}): {}", path.display(), shown())),
        },
        Some(FileCheck::Written(path)) => match std::fs::metadata(path) {
            Ok(m) if m.len() > 0 => match path.extension().is_some_and(|e| e == "safetensors") {
                true => rhea::io::load_safetensors(path).map(|_| ()).map_err(|e| format!("{}: {e}", path.display())),
                false => Ok(()),
            },
            Ok(_) => Err(format!("{} is empty: {}", path.display(), shown())),
            Err(e) => Err(format!("{} was not written ({e}): {}", path.display(), shown())),
        },
        Some(FileCheck::OldOrComplete(path, before)) => match std::fs::read(path) {
            Ok(now) if &now == before => Ok(()),
            Ok(_) => rhea::io::load_safetensors(path)
                .map(|_| ())
                .map_err(|e| format!("{} is neither the old file nor a complete one: {e}", path.display())),
            Err(e) => Err(format!("{} is gone ({e})", path.display())),
        },
    }
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(600);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    &text[start..]
}

/// Runs every case, a few at a time; the failures by case name.
pub fn run_all(cases: &[Case]) -> Vec<(String, String)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    if let Err(why) = run(case) {
                        failures.lock().unwrap().push((case.name.clone(), why));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    failures
}
