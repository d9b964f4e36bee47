//! Section 3: each clawtrace program's kernel cost (`run_time_ns / run_cnt` with
//! `kernel.bpf_stats_enabled=1`) during the storm, then on a host's processes outside any
//! container, and beside a bpftrace script that writes a record per event.

use std::{collections::BTreeMap, fs, time::Duration};

use anyhow::{bail, Context as _, Result};

use super::Check;
use crate::bench::{
    probes::{self, ProgStats, StatsEnabled},
    tracer::{self, Tracer},
    workload::{self, Until},
    Env,
};

const TARGET_HOT_PROBE_NS: f64 = 150.0;
/// Program time per container lifecycle in the storm, at most.
const TARGET_PROGRAM_NS_PER_LIFECYCLE: f64 = 3_000.0;

/// The hot probes: they run for every fork, exec, exit and signal on the host.
const HOT_PROBES: &[(&str, &str)] = &[
    ("sched_process_exec", "exec"),
    ("sched_process_exit", "exit"),
    ("signal_generate", "signal"),
];

/// Hot hooks clawtrace attaches nothing to (it follows processes by their cgroup, so a fork
/// needs no program): reported as such, at no cost per run.
const UNHOOKED: &[(&str, &str)] = &[("task_newtask", "fork")];

/// The target of a hot probe's ns/run, as the report writes it.
pub fn hot_probe_target() -> String {
    format!("≤ {TARGET_HOT_PROBE_NS:.0}")
}

/// Nanoseconds per run; 0 without runs.
pub fn average(runs: u64, ns: u64) -> f64 {
    if runs > 0 {
        ns as f64 / runs as f64
    } else {
        0.0
    }
}

/// One clawtrace program in the storm and in the host interval.
pub struct ProgramCost {
    pub name: String,
    pub storm_runs: u64,
    pub storm_ns: u64,
    pub host_runs: u64,
    pub host_ns: u64,
    /// What the program is for (`exec`, …) when it is one of the hot probes.
    pub hot: Option<&'static str>,
}

impl ProgramCost {
    pub fn storm_average_ns(&self) -> f64 {
        average(self.storm_runs, self.storm_ns)
    }

    pub fn host_average_ns(&self) -> f64 {
        average(self.host_runs, self.host_ns)
    }
}

/// One of bpftrace's reference programs in the host interval.
pub struct ReferenceCost {
    /// The program's name (its hook).
    pub name: String,
    /// What it stands for.
    pub what: String,
    pub runs: u64,
    pub ns: u64,
}

/// One hook in the side-by-side interval: clawtrace's program and bpftrace's `printf` one.
pub struct SideBySide {
    pub what: &'static str,
    pub clawtrace_runs: u64,
    pub clawtrace_ns: u64,
    pub bpftrace_runs: u64,
    pub bpftrace_ns: u64,
}

/// Section 3's figures.
pub struct ProbeCosts {
    /// Length of the host interval and how many processes ran in it.
    pub host_seconds: f64,
    pub host_processes: u64,
    /// The programs that ran in either interval, busiest in the storm first.
    pub programs: Vec<ProgramCost>,
    /// Lifecycles of the storm, and every program's run time over them.
    pub lifecycles: u64,
    pub ns_per_lifecycle: f64,
    /// Programs that ran in neither interval.
    pub silent: Vec<String>,
    pub references: Vec<ReferenceCost>,
    /// Length of the side-by-side interval, and its hooks.
    pub side_by_side_seconds: f64,
    pub side_by_side: Vec<SideBySide>,
    /// Hot hooks with no clawtrace program: (hook, what, whether that is by design).
    pub unloaded: Vec<(&'static str, &'static str, bool)>,
}

impl ProbeCosts {
    /// The figures of the storm's statistics (`before`, `after`) and the two further intervals.
    pub fn new(
        before: &BTreeMap<u32, ProgStats>,
        after: &BTreeMap<u32, ProgStats>,
        host: &Interval<u64>,
        reference: &Interval<()>,
        lifecycles: u64,
    ) -> ProbeCosts {
        let rows = probes::delta(before, after);
        let host_rows = probes::delta(&host.before, &host.after);
        let programs = rows
            .iter()
            .filter_map(|(name, runs, ns)| {
                let (host_runs, host_ns) = host_rows
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .map_or((0, 0), |(_, r, t)| (*r, *t));
                if *runs == 0 && host_runs == 0 {
                    return None;
                }
                Some(ProgramCost {
                    name: name.clone(),
                    storm_runs: *runs,
                    storm_ns: *ns,
                    host_runs,
                    host_ns,
                    hot: HOT_PROBES.iter().find(|(p, _)| name == p).map(|(_, w)| *w),
                })
            })
            .collect();
        let program_ns: u64 = rows.iter().map(|(_, _, ns)| *ns).sum();
        let ns_per_lifecycle = if lifecycles > 0 {
            program_ns as f64 / lifecycles as f64
        } else {
            0.0
        };
        let silent = rows
            .iter()
            .filter(|(name, runs, _)| {
                *runs == 0 && !host_rows.iter().any(|(n, r, _)| n == name && *r > 0)
            })
            .map(|(name, _, _)| name.clone())
            .collect();
        let references = probes::delta(&host.peer_before, &host.peer_after)
            .into_iter()
            .map(|(name, runs, ns)| {
                let what = tracer::CALIBRATION_PROGRAMS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(name.as_str(), |(_, w)| w)
                    .to_string();
                ReferenceCost {
                    name,
                    what,
                    runs,
                    ns,
                }
            })
            .collect();
        let clawtrace_rows = probes::delta(&reference.before, &reference.after);
        let peer_rows = probes::delta(&reference.peer_before, &reference.peer_after);
        let side_by_side = tracer::STORM_REFERENCE_PROGRAMS
            .iter()
            .map(|(peer_name, probe, what)| {
                let (clawtrace_runs, clawtrace_ns) = clawtrace_rows
                    .iter()
                    .find(|(n, _, _)| n == probe)
                    .map_or((0, 0), |(_, r, t)| (*r, *t));
                let (bpftrace_runs, bpftrace_ns) = peer_rows
                    .iter()
                    .find(|(n, _, _)| n == peer_name)
                    .map_or((0, 0), |(_, r, t)| (*r, *t));
                SideBySide {
                    what,
                    clawtrace_runs,
                    clawtrace_ns,
                    bpftrace_runs,
                    bpftrace_ns,
                }
            })
            .collect();
        // A hook clawtrace attaches nothing to costs nothing per run; a hot probe it should
        // have and has not is a failure.
        let unhooked = UNHOOKED.iter().map(|(probe, what)| (*probe, *what, true));
        let hot = HOT_PROBES
            .iter()
            .map(|(probe, what)| (*probe, *what, false));
        let unloaded = unhooked
            .chain(hot)
            .filter(|(probe, _, _)| !rows.iter().any(|(name, _, _)| name == probe))
            .collect();
        ProbeCosts {
            host_seconds: host.seconds,
            host_processes: host.work,
            programs,
            lifecycles,
            ns_per_lifecycle,
            silent,
            references,
            side_by_side_seconds: reference.seconds,
            side_by_side,
            unloaded,
        }
    }

    /// Section 3's figures against their targets.
    pub fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for p in &self.programs {
            if let Some(what) = p.hot {
                let storm_avg = p.storm_average_ns();
                checks.push(Check::new(
                    "3 probes",
                    format!("{what} ({}) ns/run, storm", p.name),
                    format!("{storm_avg:.0}"),
                    hot_probe_target(),
                    Some(p.storm_runs > 0 && storm_avg <= TARGET_HOT_PROBE_NS),
                ));
            }
        }
        checks.push(Check::new(
            "3 probes",
            "program time per container lifecycle, storm",
            format!("{:.0} ns", self.ns_per_lifecycle),
            format!("≤ {TARGET_PROGRAM_NS_PER_LIFECYCLE:.0} ns"),
            Some(self.lifecycles > 0 && self.ns_per_lifecycle <= TARGET_PROGRAM_NS_PER_LIFECYCLE),
        ));
        for r in &self.references {
            if r.name == "task_newtask" {
                checks.push(Check::new(
                    "3 probes",
                    "reference: empty program ns/run",
                    format!("{:.0}", average(r.runs, r.ns)),
                    "",
                    None,
                ));
            }
        }
        for s in &self.side_by_side {
            checks.push(Check::new(
                "3 probes",
                format!("reference: bpftrace printf, {} ns/run, storm", s.what),
                format!("{:.0}", average(s.bpftrace_runs, s.bpftrace_ns)),
                "",
                None,
            ));
        }
        for (probe, what, by_design) in &self.unloaded {
            checks.push(Check::new(
                "3 probes",
                format!("{what} ({probe}) ns/run, storm"),
                if *by_design {
                    "no program (0 ns)"
                } else {
                    "not loaded"
                },
                hot_probe_target(),
                Some(*by_design),
            ));
        }
        checks
    }
}

/// BPF statistics over one interval of section 3 for clawtrace's programs and for those of a
/// bpftrace script run beside them, and what the interval's work returned.
pub struct Interval<T> {
    seconds: f64,
    before: BTreeMap<u32, ProgStats>,
    after: BTreeMap<u32, ProgStats>,
    peer_before: BTreeMap<u32, ProgStats>,
    peer_after: BTreeMap<u32, ProgStats>,
    work: T,
}

/// Runs `work` for the interval's length with bpftrace running `script` (written to `name`)
/// beside clawtrace's programs `ids`, BPF statistics on.
fn beside_bpftrace<T>(
    env: &Env,
    ids: &[u32],
    name: &str,
    script: &str,
    work: impl FnOnce(Duration) -> Result<T>,
) -> Result<Interval<T>> {
    let path = env.out.join(name);
    fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    let peer = Tracer::bpftrace(&path, &env.scratch.join(name).with_extension("out"))?;
    let peer_ids = probes::prog_ids_of(peer.pid())?;
    let all: Vec<u32> = ids.iter().chain(&peer_ids).copied().collect();
    let seconds = if env.options.quick { 1.0 } else { 3.0 };
    let stats = StatsEnabled::on()?;
    let before = probes::snapshot(&all);
    let work = work(Duration::from_secs_f64(seconds));
    let after = probes::snapshot(&all);
    drop(stats);
    let stopped = peer.stop()?;
    let work = work?;
    if !stopped.status.success() {
        bail!("bpftrace exited with {}", stopped.status);
    }
    let (before, after) = (before?, after?);
    Ok(Interval {
        seconds,
        before: only(&before, ids),
        after: only(&after, ids),
        peer_before: only(&before, &peer_ids),
        peer_after: only(&after, &peer_ids),
        work,
    })
}

/// Section 3's second interval: processes outside any container come and go, with bpftrace's
/// reference programs beside clawtrace's. `work` is how many processes ran.
pub fn host_interval(env: &Env, ids: &[u32]) -> Result<Interval<u64>> {
    beside_bpftrace(
        env,
        ids,
        "calibration.bt",
        tracer::CALIBRATION_SCRIPT,
        |length| workload::run_host(env.options.workers, length, &env.stop),
    )
}

/// Section 3's third interval: more of the storm (workload tag `tag`) with bpftrace's
/// record-writing script beside clawtrace.
pub fn storm_reference_interval(env: &Env, ids: &[u32], tag: &str) -> Result<Interval<()>> {
    beside_bpftrace(
        env,
        ids,
        "storm-reference.bt",
        tracer::STORM_REFERENCE_SCRIPT,
        |length| {
            let outcome =
                workload::run(&env.spec(tag.to_string(), Until::Elapsed(length), workload::MIX));
            let swept = workload::sweep(&env.cgroup_root, Some(tag));
            outcome?;
            swept.map(drop)
        },
    )
}

/// The statistics of the programs `want` among `m`.
fn only(m: &BTreeMap<u32, ProgStats>, want: &[u32]) -> BTreeMap<u32, ProgStats> {
    m.iter()
        .filter(|(id, _)| want.contains(id))
        .map(|(id, s)| (*id, s.clone()))
        .collect()
}
