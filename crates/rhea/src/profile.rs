//! Per-step profiles of compiled functions, like Theano's `ProfileMode`:
//! where the time of a function's calls went, step by step.

use std::fmt;
use std::time::Duration;

/// Time spent in a function's calls, in total and per step of its plan.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// Calls measured.
    pub calls: u64,
    /// Their total wall time.
    pub total: Duration,
    /// Wall time per step, in plan order (empty on the interpreter, which
    /// only measures whole calls).
    pub steps: Vec<Duration>,
    /// What each step runs: `kernel k3 (fuses %12, %13)`, `gemm %47`, with
    /// the line that built it.
    pub labels: Vec<String>,
    /// Updates of shared variables, and how many of them the CPU backend
    /// writes in place (with no copy after the call).
    pub updates: (usize, usize),
}

/// True if `RHEA_PROFILE` asks for profiles (set and not `0`).
pub(crate) fn profiling_requested() -> bool {
    env_flag("RHEA_PROFILE")
}

/// True if the environment variable is set to something other than `0`.
pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_call = |d: Duration| if self.calls == 0 { Duration::ZERO } else { d / self.calls as u32 };
        writeln!(
            f,
            "rhea profile: {} call(s), {:.3} ms in all, {:.1} us per call",
            self.calls,
            self.total.as_secs_f64() * 1e3,
            per_call(self.total).as_secs_f64() * 1e6
        )?;
        if self.updates.0 > 0 {
            writeln!(f, "  {} of {} update(s) written in place", self.updates.1, self.updates.0)?;
        }
        if self.steps.is_empty() {
            return writeln!(f, "  (per-step times are measured on the cpu backend)");
        }
        let in_steps: Duration = self.steps.iter().sum();
        let total = self.total.as_secs_f64().max(f64::MIN_POSITIVE);
        writeln!(f, "  share   cumul   us/call  step")?;
        let mut order: Vec<usize> = (0..self.steps.len()).collect();
        order.sort_by(|&a, &b| self.steps[b].cmp(&self.steps[a]));
        let mut cumulative = 0.0;
        for s in order {
            let share = self.steps[s].as_secs_f64() / total * 100.0;
            cumulative += share;
            let label = self.labels.get(s).map_or("?", String::as_str);
            writeln!(
                f,
                "  {share:5.1}%  {cumulative:5.1}%  {:8.2}  {label}",
                per_call(self.steps[s]).as_secs_f64() * 1e6
            )?;
        }
        let overhead = self.total.saturating_sub(in_steps);
        writeln!(
            f,
            "  {:5.1}%  100.0%  {:8.2}  (outside the steps: input checks, copies of outputs and updates)",
            overhead.as_secs_f64() / total * 100.0,
            per_call(overhead).as_secs_f64() * 1e6
        )
    }
}
