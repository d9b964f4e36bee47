//! Section 2: a fixed workload with no tracer, with clawtrace (default flags, with every event
//! printed as JSON, and with `--trace-mount-syscalls`), bpftrace, and exitsnoop + sigsnoop,
//! interleaved round by round.

use std::{collections::BTreeMap, fs, path::Path, thread, time::Instant};

use anyhow::{Context as _, Result};

use super::{cpu_seconds, stopped_line, Check, JSON};
use crate::bench::{
    machine::settle,
    tracer::{self, Tracer},
    workload::{self, Until},
    Env,
};

const TARGET_OVERHEAD_PERCENT: f64 = 1.5;
/// Nanoseconds clawtrace's default flags may add to a system call, either way (noise).
const TARGET_SYSCALL_ADDED_NS: f64 = 3.0;

/// Plain system calls timed in each overhead run, while the tracer is attached.
pub const SYSCALL_LOOP: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traced {
    Nothing,
    /// clawtrace with its default flags: text output, one line per event an operator acts on.
    Clawtrace,
    /// clawtrace printing every event as a JSON line (as the peers print every event).
    ClawtraceJson,
    /// clawtrace with `--trace-mount-syscalls`: the mount system calls' tracepoints too.
    ClawtraceSyscalls,
    Bpftrace,
    /// libbpf-tools' `exitsnoop` and `sigsnoop`, side by side.
    Snoops,
}

impl Traced {
    pub const ALL: [Traced; 6] = [
        Traced::Nothing,
        Traced::Clawtrace,
        Traced::ClawtraceJson,
        Traced::ClawtraceSyscalls,
        Traced::Bpftrace,
        Traced::Snoops,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Traced::Nothing => "none",
            Traced::Clawtrace => "clawtrace",
            Traced::ClawtraceJson => "clawtrace, --output json",
            Traced::ClawtraceSyscalls => "clawtrace, --trace-mount-syscalls",
            Traced::Bpftrace => "bpftrace",
            Traced::Snoops => "exitsnoop + sigsnoop",
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The medians of the lower and upper halves of `values` (Tukey's hinges): where the middle
/// half lies.
fn hinges(values: &[f64]) -> (f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let half = v.len().div_ceil(2);
    (median(&v[..half]), median(&v[v.len() - half..]))
}

/// Nanoseconds per `getppid(2)` over [`SYSCALL_LOOP`] calls: what a tracer adds to every
/// system call of every task (syscall tracepoints put all of them on the kernel's traced path).
fn syscall_ns() -> f64 {
    let started = Instant::now();
    for _ in 0..SYSCALL_LOOP {
        // SAFETY: getppid takes no arguments and touches no memory.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    started.elapsed().as_nanos() as f64 / f64::from(SYSCALL_LOOP)
}

/// The result of one overhead run.
struct OverheadRun {
    /// The workload's wall time.
    seconds: f64,
    /// Records clawtrace lost.
    lost: u64,
    /// [`syscall_ns`] with the tracer attached.
    syscall_ns: f64,
    /// CPU seconds the tracer's process used while attached (none for the untraced run).
    tracer_cpu: Option<f64>,
    /// Seconds spent waiting for a quiet machine before the workload ([`settle`]).
    settled: f64,
}

/// One overhead run: starts the tracer (if any), runs the fixed workload, then the system-call
/// loop, stops the tracer.
fn overhead_run(env: &Env, traced: Traced, tag: String, script: &Path) -> Result<OverheadRun> {
    let out = env
        .scratch
        .join(format!("overhead-{}.out", traced as usize));
    let mut settled = settle();
    let tracer = match traced {
        Traced::Nothing => None,
        Traced::Clawtrace => Some(Tracer::clawtrace(&env.clawtrace, &out, &[])?),
        Traced::ClawtraceJson => Some(Tracer::clawtrace(&env.clawtrace, &out, &JSON)?),
        Traced::ClawtraceSyscalls => Some(Tracer::clawtrace(
            &env.clawtrace,
            &out,
            &["--trace-mount-syscalls"],
        )?),
        Traced::Bpftrace => Some(Tracer::bpftrace(script, &out)?),
        Traced::Snoops => Some(Tracer::snoops(&out)?),
    };
    if tracer.is_some() {
        settled += settle();
    }
    let cpu_before = tracer.as_ref().map(|t| cpu_seconds(t.pid())).transpose()?;
    let outcome = workload::run(&env.spec(
        tag.clone(),
        Until::Lifecycles(env.options.overhead_lifecycles),
        workload::MIX,
    ));
    let swept = workload::sweep(&env.cgroup_root, Some(&tag));
    let syscall_ns = syscall_ns();
    let mut lost = 0;
    let mut tracer_cpu = None;
    if let Some(tracer) = tracer {
        // Its work on the workload's events is done by now: the system-call loop took longer
        // than its poll interval.
        if let Some(before) = cpu_before {
            tracer_cpu = Some(cpu_seconds(tracer.pid())? - before);
        }
        let stopped = tracer.stop_ok()?;
        if matches!(
            traced,
            Traced::Clawtrace | Traced::ClawtraceJson | Traced::ClawtraceSyscalls
        ) {
            lost = stopped_line(&stopped.stderr).map_or(0, |(_, lost, _)| lost);
        }
    }
    let outcome = outcome?;
    swept?;
    env.interrupted()?;
    Ok(OverheadRun {
        seconds: outcome.elapsed.as_secs_f64(),
        lost,
        syscall_ns,
        tracer_cpu,
        settled,
    })
}

/// One configuration's figures over all rounds.
pub struct ConfigFigures {
    pub traced: Traced,
    /// The workload's wall time in each round.
    pub runs: Vec<f64>,
    pub median: f64,
    /// Lifecycles per second at the median.
    pub rate: f64,
    /// Each round against the untraced run of its round, in %.
    pub paired: Vec<f64>,
    /// The median of `paired`.
    pub slowdown: f64,
    /// Where the middle half of `paired` lies.
    pub hinges: (f64, f64),
    /// The median against the untraced median, in %.
    pub of_medians: f64,
    /// ns per system call in each round, and their median.
    pub syscall_runs: Vec<f64>,
    pub syscall_median: f64,
    /// `syscall_median` less the untraced one.
    pub syscall_added: f64,
    /// The tracer's CPU as a share of the machine's time over each run, and their median (none
    /// untraced).
    pub cpu_runs: Vec<f64>,
    pub cpu_median: Option<f64>,
}

/// Section 2's figures.
pub struct OverheadFigures {
    pub workers: usize,
    pub lifecycles_per_worker: u64,
    /// Lifecycles of each run, all workers.
    pub lifecycles: u64,
    pub rounds: usize,
    pub cores: usize,
    /// Seconds each run waited for a quiet machine.
    pub settled: Vec<f64>,
    /// In [`Traced::ALL`]'s order.
    pub configs: Vec<ConfigFigures>,
    /// Records clawtrace lost over all runs.
    pub lost: u64,
}

impl OverheadFigures {
    pub fn config(&self, traced: Traced) -> &ConfigFigures {
        self.configs
            .iter()
            .find(|c| c.traced == traced)
            .expect("every configuration is measured")
    }

    pub fn slowdown(&self, traced: Traced) -> f64 {
        self.config(traced).slowdown
    }

    pub fn syscall_added(&self, traced: Traced) -> f64 {
        self.config(traced).syscall_added
    }

    /// Section 2's figures against their targets.
    pub fn checks(&self) -> Vec<Check> {
        let claw = self.slowdown(Traced::Clawtrace);
        let json = self.slowdown(Traced::ClawtraceJson);
        let core = self.slowdown(Traced::ClawtraceSyscalls);
        let peer = self.slowdown(Traced::Bpftrace);
        let snoops = self.slowdown(Traced::Snoops);
        let added = self.syscall_added(Traced::Clawtrace);
        vec![
            Check::new(
                "2 overhead",
                "ns added per system call, clawtrace's default flags",
                format!("{added:+.1} ns"),
                format!("within ±{TARGET_SYSCALL_ADDED_NS:.0} ns"),
                Some(added.abs() <= TARGET_SYSCALL_ADDED_NS),
            ),
            Check::new(
                "2 overhead",
                "slowdown with clawtrace",
                format!("{claw:+.1} %"),
                format!("≤ {TARGET_OVERHEAD_PERCENT:.1} %"),
                Some(claw <= TARGET_OVERHEAD_PERCENT),
            ),
            Check::new(
                "2 overhead",
                "slowdown, clawtrace printing every event (--output json)",
                format!("{json:+.1} %"),
                "",
                None,
            ),
            Check::new(
                "2 overhead",
                "slowdown, clawtrace with --trace-mount-syscalls",
                format!("{core:+.1} %"),
                "",
                None,
            ),
            Check::new(
                "2 overhead",
                "slowdown with bpftrace",
                format!("{peer:+.1} %"),
                "",
                None,
            ),
            Check::new(
                "2 overhead",
                "slowdown with exitsnoop + sigsnoop",
                format!("{snoops:+.1} %"),
                "",
                None,
            ),
            Check::new(
                "2 overhead",
                "clawtrace below bpftrace and exitsnoop + sigsnoop",
                format!("{claw:+.1} % vs {peer:+.1} %, {snoops:+.1} %"),
                "clawtrace < both",
                Some(claw < peer && claw < snoops),
            ),
            Check::new(
                "2 overhead",
                "ns added per system call: clawtrace, with --trace-mount-syscalls, bpftrace",
                format!(
                    "{:+.0}, {:+.0}, {:+.0}",
                    self.syscall_added(Traced::Clawtrace),
                    self.syscall_added(Traced::ClawtraceSyscalls),
                    self.syscall_added(Traced::Bpftrace)
                ),
                "",
                None,
            ),
        ]
    }
}

/// Runs the rounds (after one discarded warm-up run) and returns section 2's figures.
pub fn measure(env: &Env) -> Result<OverheadFigures> {
    let o = &env.options;
    let script = env.out.join("peer.bt");
    fs::write(&script, tracer::BPFTRACE_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    let lifecycles = o.overhead_lifecycles * o.workers as u64;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    // A discarded warm-up run: page cache, cgroup and pid allocations.
    overhead_run(env, Traced::Nothing, format!("o{}-warm", env.pid), &script)?;
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut syscalls: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut settled: Vec<f64> = Vec::new();
    let mut lost_total = 0;
    for round in 0..o.rounds {
        // Each round starts one configuration further along, so that none always runs in the
        // same place, and every other cycle of rounds runs backwards, so that none always
        // follows the same one.
        let mut order = Traced::ALL;
        order.rotate_left(round % Traced::ALL.len());
        if (round / Traced::ALL.len()) % 2 == 1 {
            order.reverse();
        }
        for traced in order {
            let tag = format!("o{}-r{round}t{}", env.pid, traced as usize);
            let run = overhead_run(env, traced, tag, &script)?;
            lost_total += run.lost;
            println!(
                "bench: overhead round {}/{}: {:<27} {:.3} s, {:.0} ns per system call",
                round + 1,
                o.rounds,
                traced.name(),
                run.seconds,
                run.syscall_ns
            );
            times.entry(traced.name()).or_default().push(run.seconds);
            settled.push(run.settled);
            if let Some(seconds) = run.tracer_cpu {
                // As a share of the machine's time over the run: what the tracer's own
                // process took from the workload, directly.
                let machine = run.seconds * cores as f64;
                if machine > 0.0 {
                    cpu.entry(traced.name())
                        .or_default()
                        .push(seconds / machine * 100.0);
                }
            }
            syscalls
                .entry(traced.name())
                .or_default()
                .push(run.syscall_ns);
        }
    }
    let runs_of = |t: Traced| times.get(t.name()).cloned().unwrap_or_default();
    let syscalls_of = |t: Traced| syscalls.get(t.name()).cloned().unwrap_or_default();
    let none = median(&runs_of(Traced::Nothing));
    let syscall_none = median(&syscalls_of(Traced::Nothing));
    let configs = Traced::ALL
        .into_iter()
        .map(|traced| {
            let runs = runs_of(traced);
            let m = median(&runs);
            // Each run against the untraced run of its own round, seconds away from it: this
            // VM's speed drifts by several percent over a minute, which a comparison of
            // medians across rounds takes for tracer cost.
            let paired: Vec<f64> = runs
                .iter()
                .zip(&runs_of(Traced::Nothing))
                .filter(|(_, b)| **b > 0.0)
                .map(|(r, b)| (r / b - 1.0) * 100.0)
                .collect();
            let syscall_runs = syscalls_of(traced);
            let syscall_median = median(&syscall_runs);
            let cpu_runs = cpu.get(traced.name()).cloned().unwrap_or_default();
            ConfigFigures {
                traced,
                median: m,
                rate: if m > 0.0 { lifecycles as f64 / m } else { 0.0 },
                slowdown: median(&paired),
                hinges: hinges(&paired),
                paired,
                of_medians: if none > 0.0 {
                    (m / none - 1.0) * 100.0
                } else {
                    0.0
                },
                runs,
                syscall_added: syscall_median - syscall_none,
                syscall_median,
                syscall_runs,
                cpu_median: (!cpu_runs.is_empty()).then(|| median(&cpu_runs)),
                cpu_runs,
            }
        })
        .collect();
    Ok(OverheadFigures {
        workers: o.workers,
        lifecycles_per_worker: o.overhead_lifecycles,
        lifecycles,
        rounds: o.rounds,
        cores,
        settled,
        configs,
        lost: lost_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hinges_bound_the_middle_half() {
        // Eight values: the halves are 1..4 and 5..8.
        assert_eq!(
            hinges(&[8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0]),
            (2.5, 6.5)
        );
        // Odd: the median belongs to both halves.
        assert_eq!(hinges(&[5.0, 1.0, 3.0, 2.0, 4.0]), (2.0, 4.0));
        assert_eq!(hinges(&[7.0]), (7.0, 7.0));
        assert_eq!(hinges(&[]), (0.0, 0.0));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
