//! Sections 1 and 3, one run: the lifecycle storm, and the per-probe kernel cost measured
//! during it (with two more intervals, see [`probe_costs`](super::probe_costs)).

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};
use serde_json::Value;

use super::{
    cpu_seconds,
    probe_costs::{self, ProbeCosts},
    stopped_line, wait_caught_up, Check, JSON,
};
use crate::bench::{
    machine::settle,
    probes::{self, StatsEnabled},
    tracer::{scrape, Tracer},
    workload::{self, Outcome, Truth, Until},
    Env,
};

/// Targets of issues 7 and 18, for a 2-core machine.
const TARGET_LIFECYCLES_PER_S: f64 = 2_000.0;
/// The storm's rate traced, as a share of the untraced workers' own, at least.
const TARGET_STORM_SHARE_PERCENT: f64 = 97.0;
/// clawtrace's own CPU per kernel record in the storm, at most.
const TARGET_CPU_US_PER_RECORD: f64 = 1.5;

/// What clawtrace reported about one run's containers, from its JSON lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub created: u64,
    pub deleted: u64,
    pub execs: u64,
    pub exited: u64,
    pub failed: u64,
    pub killed: u64,
    pub other_exits: u64,
    pub signals: u64,
}

impl Reported {
    /// Counts the events of containers whose id starts with `<tag>-` in a JSON-lines file.
    fn from_json_lines(path: &Path, tag: &str) -> Result<Reported> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let prefix = format!("{tag}-");
        let mut r = Reported::default();
        for line in text.lines() {
            // Cheap filter before parsing: only this run's containers.
            if !line.contains(&prefix) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let ours = v
                .get("container_id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.starts_with(&prefix));
            if !ours {
                continue;
            }
            match v.get("event").and_then(Value::as_str).unwrap_or("") {
                "container_create" => r.created += 1,
                "container_delete" => r.deleted += 1,
                "process_exec" => r.execs += 1,
                "signal" if v.get("signal").and_then(Value::as_str) == Some("SIGKILL") => {
                    r.signals += 1
                }
                "process_exit" => match v.get("cause").and_then(Value::as_str).unwrap_or("") {
                    "exited" => r.exited += 1,
                    "failed" => r.failed += 1,
                    "orchestrator_kill" => r.killed += 1,
                    _ => r.other_exits += 1,
                },
                _ => {}
            }
        }
        Ok(r)
    }

    fn matches(&self, truth: &Truth) -> bool {
        self.created == truth.cgroups_made
            && self.deleted == truth.cgroups_removed
            && self.execs == truth.execs
            && self.exited == truth.exited
            && self.failed == truth.failed
            && self.killed == truth.killed
            && self.other_exits == 0
            && self.signals == truth.signals
    }

    /// (what, ground truth, reported) rows.
    pub fn rows(&self, truth: &Truth) -> Vec<(&'static str, u64, u64)> {
        vec![
            ("containers created", truth.cgroups_made, self.created),
            ("containers deleted", truth.cgroups_removed, self.deleted),
            ("execs", truth.execs, self.execs),
            ("exits, code 0 (`exited`)", truth.exited, self.exited),
            ("exits, non-zero code (`failed`)", truth.failed, self.failed),
            (
                "exits, SIGKILL from outside (`orchestrator_kill`)",
                truth.killed,
                self.killed,
            ),
            ("exits with another cause", 0, self.other_exits),
            ("SIGKILLs sent", truth.signals, self.signals),
        ]
    }
}

/// Section 1's figures.
pub struct StormFigures {
    pub workers: usize,
    /// The traced storm's wall time.
    pub seconds: f64,
    /// What the workers did, by their own count.
    pub truth: Truth,
    /// What clawtrace printed about the same containers.
    pub reported: Reported,
    pub lifecycles_per_s: f64,
    /// The untraced workers' rate at the traced run's time: [`at_time`] of the untraced runs
    /// just before and just after it, for as long each (this VM's speed drifts over minutes).
    pub untraced_per_s: f64,
    /// The untraced runs' own rates: before the tracer started, after it stopped.
    pub untraced_before_per_s: f64,
    pub untraced_after_per_s: f64,
    pub share_of_untraced: f64,
    /// Kernel records clawtrace received over the storm (its metrics).
    pub records: f64,
    pub records_per_s: f64,
    pub records_by_kind: BTreeMap<String, f64>,
    pub lost: u64,
    pub queue_drops: f64,
    pub undecodable: u64,
    /// Events clawtrace printed over its whole run (its `stopped:` line).
    pub events: u64,
    /// clawtrace's CPU seconds over the storm and its catching up.
    pub cpu: f64,
    pub cpu_us_per_record: f64,
    /// Whether clawtrace counted every deletion within 60 s of the storm.
    pub caught_up: bool,
    /// `reported` equals `truth` and clawtrace caught up.
    pub exact: bool,
}

/// The rate at time `t` on the line through the untraced runs' (time, rate) points `before`
/// and `after`: linear drift of the machine's speed cancels out.
fn at_time(before: (f64, f64), after: (f64, f64), t: f64) -> f64 {
    let ((t0, r0), (t1, r1)) = (before, after);
    if t1 <= t0 {
        return (r0 + r1) / 2.0;
    }
    r0 + (r1 - r0) * (t - t0) / (t1 - t0)
}

/// The workers' own rate untraced, for as long as the storm: lifecycles/s, and the run's
/// middle in seconds since `origin`.
fn untraced_run(env: &Env, tag: &str, origin: Instant) -> Result<(f64, f64)> {
    settle();
    let started = origin.elapsed().as_secs_f64();
    let run = workload::run(&env.spec(
        tag.to_string(),
        Until::Elapsed(Duration::from_secs(env.options.storm_seconds)),
        workload::MIX,
    ));
    workload::sweep(&env.cgroup_root, Some(tag))?;
    let run = run?;
    let seconds = run.elapsed.as_secs_f64();
    env.interrupted()?;
    Ok((
        started + seconds / 2.0,
        run.truth.lifecycles as f64 / seconds,
    ))
}

/// Runs the storm (untraced, traced with the BPF statistics on, untraced again) and section 3's
/// two further intervals beside bpftrace; returns the figures of sections 1 and 3.
pub fn measure(env: &Env) -> Result<(StormFigures, ProbeCosts)> {
    let o = &env.options;
    // The workers' own rate untraced, for as long, before and after: what tracing takes from
    // them, at the traced run's time.
    let origin = Instant::now();
    let untraced_before = untraced_run(env, &format!("u{}", env.pid), origin)?;
    settle();
    let tag = format!("s{}", env.pid);
    let events_path = env.out.join("storm-events.jsonl");
    // Every event printed: the counts against the ground truth come from them.
    let tracer = Tracer::clawtrace(&env.clawtrace, &events_path, &JSON)?;
    let addr = tracer
        .metrics
        .ok_or_else(|| anyhow!("clawtrace has no metrics address"))?;
    let ids = probes::prog_ids_of(tracer.pid())?;
    let base = scrape(addr)?;
    let cpu_before = cpu_seconds(tracer.pid())?;

    let stats = StatsEnabled::on()?;
    let before = probes::snapshot(&ids);
    let traced_started = origin.elapsed().as_secs_f64();
    let outcome = workload::run(&env.spec(
        tag.clone(),
        Until::Elapsed(Duration::from_secs(o.storm_seconds)),
        workload::MIX,
    ));
    let after = probes::snapshot(&ids);
    drop(stats);
    let swept = workload::sweep(&env.cgroup_root, Some(&tag));
    let Outcome { truth, elapsed } = outcome?;
    swept?;
    let (before, after) = (before?, after?);
    env.interrupted()?;

    let (metrics, caught_up) = wait_caught_up(
        addr,
        &base,
        "delete",
        truth.cgroups_removed,
        Duration::from_secs(60),
    )?;
    let cpu = cpu_seconds(tracer.pid())? - cpu_before;
    let host = probe_costs::host_interval(env, &ids)?;
    let reference = probe_costs::storm_reference_interval(env, &ids, &format!("r{}", env.pid))?;
    let stopped = tracer.stop_ok()?;
    let (events, lost_stderr, undecodable) = stopped_line(&stopped.stderr)
        .ok_or_else(|| anyhow!("clawtrace printed no `stopped:` line"))?;
    let reported = Reported::from_json_lines(&events_path, &tag)?;
    let untraced_after = untraced_run(env, &format!("v{}", env.pid), origin)?;

    let seconds = elapsed.as_secs_f64();
    let untraced_per_s = at_time(
        untraced_before,
        untraced_after,
        traced_started + seconds / 2.0,
    );
    let records =
        metrics.sum("clawtrace_events_total", &[]) - base.sum("clawtrace_events_total", &[]);
    let lost_metric = metrics.sum("clawtrace_events_lost_total", &[]);
    let queue_drops = metrics.sum("clawtrace_export_errors_total", &["sink=\"queue\""]);
    let lost = lost_stderr.max(lost_metric as u64);
    let lifecycles_per_s = truth.lifecycles as f64 / seconds;
    let share_of_untraced = if untraced_per_s > 0.0 {
        lifecycles_per_s / untraced_per_s * 100.0
    } else {
        0.0
    };
    let cpu_us_per_record = if records > 0.0 {
        cpu * 1e6 / records
    } else {
        0.0
    };
    let records_by_kind: BTreeMap<String, f64> = metrics
        .by_label("clawtrace_events_total", "kind")
        .into_iter()
        .map(|(kind, n)| {
            let before = base
                .by_label("clawtrace_events_total", "kind")
                .into_iter()
                .find(|(k, _)| *k == kind)
                .map_or(0.0, |(_, v)| v);
            (kind, n - before)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let storm = StormFigures {
        workers: o.workers,
        seconds,
        truth,
        reported,
        lifecycles_per_s,
        untraced_per_s,
        untraced_before_per_s: untraced_before.1,
        untraced_after_per_s: untraced_after.1,
        share_of_untraced,
        records,
        records_per_s: records / seconds,
        records_by_kind,
        lost,
        queue_drops,
        undecodable,
        events,
        cpu,
        cpu_us_per_record,
        caught_up,
        exact: reported.matches(&truth) && caught_up,
    };
    let costs = ProbeCosts::new(&before, &after, &host, &reference, truth.lifecycles);
    Ok((storm, costs))
}

impl StormFigures {
    /// Section 1's figures against their targets.
    pub fn checks(&self) -> Vec<Check> {
        let f = self;
        vec![
            Check::new(
                "1 storm",
                "lifecycles/s",
                format!("{:.0}", f.lifecycles_per_s),
                format!("≥ {TARGET_LIFECYCLES_PER_S:.0}"),
                Some(f.lifecycles_per_s >= TARGET_LIFECYCLES_PER_S),
            ),
            Check::new(
                "1 storm",
                "share of the untraced workers' rate",
                format!("{:.1} %", f.share_of_untraced),
                format!("≥ {TARGET_STORM_SHARE_PERCENT:.0} %"),
                Some(f.share_of_untraced >= TARGET_STORM_SHARE_PERCENT),
            ),
            Check::new(
                "1 storm",
                "records/s",
                format!("{:.0}", f.records_per_s),
                "",
                None,
            ),
            Check::new(
                "1 storm",
                "clawtrace CPU per kernel record",
                format!("{:.2} µs", f.cpu_us_per_record),
                format!("≤ {TARGET_CPU_US_PER_RECORD} µs"),
                Some(f.records > 0.0 && f.cpu_us_per_record <= TARGET_CPU_US_PER_RECORD),
            ),
            Check::new(
                "1 storm",
                "records lost",
                f.lost.to_string(),
                "0",
                Some(f.lost == 0 && f.queue_drops == 0.0),
            ),
            Check::new(
                "1 storm",
                "counts equal ground truth",
                if f.exact { "exact" } else { "differ" },
                "exact",
                Some(f.exact),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::env;

    use super::*;

    #[test]
    fn only_this_runs_containers_are_counted() {
        let dir = env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let lines = [
            r#"{"event":"container_create","container_id":"s1-w0-0"}"#,
            r#"{"event":"process_exec","container_id":"s1-w0-0"}"#,
            r#"{"event":"signal","container_id":"s1-w0-0","signal":"SIGKILL"}"#,
            r#"{"event":"signal","container_id":"s1-w0-0","signal":"SIGTERM"}"#,
            r#"{"event":"process_exit","container_id":"s1-w0-0","cause":"orchestrator_kill"}"#,
            r#"{"event":"container_delete","container_id":"s1-w0-0"}"#,
            r#"{"event":"container_create","container_id":"s10-w0-0"}"#,
            r#"{"event":"container_create","container_id":"other"}"#,
        ];
        fs::write(&path, lines.join("\n")).unwrap();
        let r = Reported::from_json_lines(&path, "s1").unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let truth = Truth {
            lifecycles: 1,
            cgroups_made: 1,
            cgroups_removed: 1,
            execs: 1,
            killed: 1,
            signals: 1,
            ..Truth::default()
        };
        assert!(r.matches(&truth), "{r:?}");
    }

    #[test]
    fn the_untraced_rate_is_read_at_the_traced_runs_time() {
        // 2,000/s at 5 s, 1,800/s at 45 s: 1,950/s at 15 s.
        assert_eq!(at_time((5.0, 2000.0), (45.0, 1800.0), 15.0), 1950.0);
        assert_eq!(at_time((5.0, 2000.0), (5.0, 1800.0), 15.0), 1900.0);
    }
}
