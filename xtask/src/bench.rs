//! `cargo xtask bench`: clawtrace's performance, measured on this machine, written to
//! `target/bench/report.md` and `target/bench/report.json`.
//!
//! 1. **Lifecycle storm**: parallel workers run real container lifecycles (cgroup v2 mkdir, a
//!    process placed in it, exit or SIGKILL, rmdir) flat out for a fixed time while the release
//!    clawtrace traces them; lifecycles/s, records/s, records lost, and clawtrace's counts (from
//!    its JSON output) against the ground truth the workers kept.
//! 2. **Workload overhead**: the same workload, a fixed number of lifecycles, with no tracer,
//!    with clawtrace (default flags, and with `--trace-mount-syscalls`), with a bpftrace script
//!    on the same tracepoints, and with libbpf-tools' `exitsnoop` and `sigsnoop`, interleaved
//!    round by round; medians and slowdowns.
//! 3. **Per-probe kernel cost**: during the storm, with `kernel.bpf_stats_enabled=1`, each
//!    clawtrace program's `run_time_ns / run_cnt` (bpftool).
//! 4. **User-space pipeline**: the criterion benchmark `tracer-user/benches/pipeline.rs`
//!    (decode, model, aggregation on a recorded stream, one core), in records/s.
//! 5. **Memory**: peak RSS (VmHWM) of the real clawtrace while 10,000 real containers are alive
//!    and 100,000 distinct hostile agent names have been offered through the init's environment.
//!
//! A missed target is a finding, written to the report; only errors make the command fail. Each
//! section cleans up its cgroups and processes whatever happens, and the BPF statistics sysctl
//! is put back as it was.

mod probes;
mod tracer;
mod workload;

use std::{
    collections::BTreeMap,
    env,
    ffi::OsString,
    fmt::Write as _,
    fs,
    os::unix::ffi::OsStringExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{first_line, show, Ctx};
use probes::StatsEnabled;
use tracer::{memory_kib, scrape, Metrics, Tracer};
use workload::{Outcome, Spec, Truth, Until};

/// Targets of issues 7 and 18, for a 2-core machine.
const TARGET_LIFECYCLES_PER_S: f64 = 2_000.0;
const TARGET_OVERHEAD_PERCENT: f64 = 1.5;
/// The storm's rate traced, as a share of the untraced workers' own, at least.
const TARGET_STORM_SHARE_PERCENT: f64 = 97.0;
/// Nanoseconds clawtrace's default flags may add to a system call, either way (noise).
const TARGET_SYSCALL_ADDED_NS: f64 = 3.0;
/// Program time per container lifecycle in the storm, at most.
const TARGET_PROGRAM_NS_PER_LIFECYCLE: f64 = 3_000.0;
/// clawtrace's own CPU per kernel record in the storm, at most.
const TARGET_CPU_US_PER_RECORD: f64 = 1.5;
const TARGET_HOT_PROBE_NS: f64 = 150.0;
const TARGET_RECORDS_PER_S: f64 = 1_000_000.0;
const TARGET_PEAK_RSS_MIB: f64 = 64.0;

/// The hot probes: they run for every fork, exec, exit and signal on the host.
const HOT_PROBES: &[(&str, &str)] = &[
    ("sched_process_exec", "exec"),
    ("sched_process_exit", "exit"),
    ("signal_generate", "signal"),
];

/// Hot hooks clawtrace attaches nothing to (it follows processes by their cgroup, so a fork
/// needs no program): reported as such, at no cost per run.
const UNHOOKED: &[(&str, &str)] = &[("task_newtask", "fork")];

/// The criterion benchmarks of `pipeline`, in report order, and the headline one.
const PIPELINE_BENCHES: &[(&str, &str)] = &[
    ("decode", "decode only"),
    ("decode_model", "decode + model"),
    (
        "decode_model_aggregate",
        "decode + model + aggregation (labels, metrics)",
    ),
    (
        "decode_model_aggregate_json",
        "… + a JSON line per event (`--output json`)",
    ),
    (
        "decode_model_aggregate_10k_live",
        "decode + model + aggregation, 10,000 other containers alive",
    ),
];
const PIPELINE_HEADLINE: &str = "decode_model_aggregate";

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Seconds the lifecycle storm runs.
    #[arg(long, default_value_t = 10)]
    storm_seconds: u64,
    /// Parallel workload workers (storm, overhead, memory).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Interleaved rounds of the overhead comparison (each configuration once per round, the
    /// order rotating by one each round and reversed every other cycle of four: a multiple of
    /// 4 puts each configuration in each place equally often).
    #[arg(long, default_value_t = 12)]
    rounds: usize,
    /// Lifecycles per worker in each overhead run (about 4.5 s per run here). Half as many
    /// made runs of about 2 s, whose per-round slowdowns spread two to three times as wide.
    #[arg(long, default_value_t = 3000)]
    overhead_lifecycles: u64,
    /// Containers kept alive in the memory section.
    #[arg(long, default_value_t = 10_000)]
    live_containers: u64,
    /// Distinct hostile agent names offered in the memory section (the live containers' count).
    #[arg(long, default_value_t = 100_000)]
    hostile_names: u64,
    /// A scaled-down smoke run of every section (its figures are not the targets' figures).
    #[arg(long)]
    quick: bool,
    /// Run only these sections (storm includes the per-probe cost).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Part>,
    /// The clawtrace binary to measure (default: the release build of this workspace, built
    /// first).
    #[arg(long)]
    clawtrace: Option<PathBuf>,
}

/// Parts of the benchmark that `--only` can pick.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Storm,
    Overhead,
    Memory,
    Pipeline,
}

impl Options {
    fn scaled(mut self) -> Options {
        if self.quick {
            self.storm_seconds = self.storm_seconds.min(3);
            self.rounds = self.rounds.min(2);
            self.overhead_lifecycles = self.overhead_lifecycles.min(100);
            self.live_containers = self.live_containers.min(500);
            self.hostile_names = self.hostile_names.min(2_000);
        }
        self.workers = self.workers.max(1);
        self.rounds = self.rounds.max(1);
        self.hostile_names = self.hostile_names.max(self.live_containers);
        self
    }
}

/// One figure of the summary: what, how much, the target and whether it was met.
struct Check {
    section: &'static str,
    figure: String,
    value: String,
    target: String,
    /// None: reported without a target.
    pass: Option<bool>,
}

impl Check {
    fn new(
        section: &'static str,
        figure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        pass: Option<bool>,
    ) -> Check {
        Check {
            section,
            figure: figure.into(),
            value: value.into(),
            target: target.into(),
            pass,
        }
    }

    fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "",
        }
    }

    fn json(&self) -> Value {
        json!({
            "section": self.section,
            "figure": self.figure,
            "value": self.value,
            "target": self.target,
            "pass": self.pass,
        })
    }
}

/// What one section produced.
struct Section {
    /// 1 to 5, as in the issue.
    number: u8,
    key: &'static str,
    title: &'static str,
    json: Value,
    markdown: String,
    checks: Vec<Check>,
}

/// Paths and settings every section uses.
struct Env {
    clawtrace: PathBuf,
    cgroup_root: PathBuf,
    out: PathBuf,
    scratch: PathBuf,
    options: Options,
    stop: Arc<AtomicBool>,
    pid: u32,
}

impl Env {
    fn spec(&self, tag: String, until: Until, kinds: &'static [workload::Kind]) -> Spec {
        Spec {
            root: self.cgroup_root.clone(),
            tag,
            workers: self.options.workers,
            until,
            kinds,
            agent_name: Arc::new(|w, _| OsString::from(format!("agent-{w}"))),
            stop: Arc::clone(&self.stop),
        }
    }

    fn interrupted(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}

/// `cargo xtask bench`: builds what it needs, runs the five sections, writes the report and
/// prints the summary.
pub fn run(ctx: &Ctx, options: Options) -> Result<ExitCode> {
    if !ctx.is_root() {
        bail!(
            "bench: must run as root (it makes cgroups, loads eBPF programs and sets \
             kernel.bpf_stats_enabled): sudo -E cargo xtask bench"
        );
    }
    let started = Instant::now();
    let options = options.scaled();
    let command = command_line();
    let only = options.only.clone();
    let wants = |part: Part| only.is_empty() || only.contains(&part);
    ctx.setup_toolchain()?;
    ctx.setup_packages()?;
    if options.clawtrace.is_none() {
        ctx.build(true)?;
    }
    if wants(Part::Pipeline) {
        // Built up front so that a build failure shows before minutes of measuring.
        crate::run(ctx.cargo().args([
            "bench",
            "-p",
            "tracer-user",
            "--bench",
            "pipeline",
            "--no-run",
        ]))
        .context("bench: building the criterion benchmark")?;
    }

    let target = target_dir(ctx);
    let out = target.join("bench");
    let scratch = out.join("scratch");
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("installing a SIGINT handler")?;
    let env = Env {
        clawtrace: options
            .clawtrace
            .clone()
            .unwrap_or_else(|| target.join("release").join("clawtrace")),
        cgroup_root: workload::cgroup2_root()?,
        out: out.clone(),
        scratch,
        options,
        stop,
        pid: std::process::id(),
    };
    for tool in [
        "bpftrace",
        "bpftool",
        tracer::EXITSNOOP,
        tracer::SIGSNOOP,
        workload::BUSYBOX,
    ] {
        if ctx.which(tool).is_none() && !Path::new(tool).exists() {
            bail!("bench: {tool} not found (cargo xtask setup installs it)");
        }
    }
    // Leftovers of an interrupted earlier run.
    let stale = workload::sweep(&env.cgroup_root, None)?;
    if stale > 0 {
        println!("bench: removed {stale} cgroup(s) left by an earlier run");
    }

    let load_before = quietness();
    println!("bench: before: {}", quietness_text(&load_before));
    let mut sections = Vec::new();
    let mut errors = Vec::new();
    type SectionFn = fn(&Env, &Ctx) -> Result<Vec<Section>>;
    let steps: [(Part, &str, SectionFn); 4] = [
        (Part::Storm, "storm and per-probe cost", storm),
        (Part::Overhead, "overhead", overhead),
        (Part::Memory, "memory", memory),
        (Part::Pipeline, "user-space pipeline", pipeline),
    ];
    for (part, name, step) in steps {
        if !wants(part) {
            continue;
        }
        if env.stop.load(Ordering::Relaxed) {
            errors.push(format!("{name}: not run (interrupted)"));
            continue;
        }
        println!("bench: {name} …");
        let section_started = Instant::now();
        match step(&env, ctx) {
            Ok(found) => {
                println!(
                    "bench: {name}: done in {:.1}s",
                    section_started.elapsed().as_secs_f64()
                );
                sections.extend(found);
            }
            Err(e) => {
                eprintln!("bench: {name}: error: {e:#}");
                errors.push(format!("{name}: {e:#}"));
            }
        }
    }
    sections.sort_by_key(|s| s.number);
    // Whatever happened, nothing of the benchmark's stays behind.
    if let Err(e) = workload::sweep(&env.cgroup_root, None) {
        errors.push(format!("cleanup: {e:#}"));
    }
    let load_after = quietness();
    println!("bench: after: {}", quietness_text(&load_after));
    let duration = started.elapsed();
    let load = [("before", load_before), ("after", load_after)];
    write_report(&env, &command, duration, &load, &sections, &errors)?;
    print_summary(&sections, &errors, &out, duration);
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("bench: {} section(s) failed (see above)", errors.len())
    }
}

// ----- 1 and 3: lifecycle storm, per-probe cost -----

/// What clawtrace reported about one run's containers, from its JSON lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Reported {
    created: u64,
    deleted: u64,
    execs: u64,
    exited: u64,
    failed: u64,
    killed: u64,
    other_exits: u64,
    signals: u64,
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
    fn rows(&self, truth: &Truth) -> Vec<(&'static str, u64, u64)> {
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

/// What clawtrace's `stopped:` line says: (events, records lost, undecodable).
fn stopped_line(stderr: &str) -> Option<(u64, u64, u64)> {
    let line = stderr.lines().rev().find_map(|l| {
        let at = l.find("stopped: ")?;
        Some(&l[at + "stopped: ".len()..])
    })?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [events, lost, undecodable, ..] => Some((events, lost, undecodable)),
        _ => None,
    }
}

/// User + system CPU seconds process `pid` has used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// Scrapes until clawtrace has counted `want` more container deletions than `base` and its
/// record count has stopped moving, or `timeout` passes. Returns the last scrape and whether
/// it caught up.
fn wait_caught_up(
    addr: std::net::SocketAddr,
    base: &Metrics,
    operation: &str,
    want: u64,
    timeout: Duration,
) -> Result<(Metrics, bool)> {
    let label = format!("operation=\"{operation}\"");
    let base_count = base.sum("container_changes_total", &[&label]);
    let started = Instant::now();
    let mut last_records = -1.0;
    loop {
        let now = scrape(addr)?;
        let done = now.sum("container_changes_total", &[&label]) - base_count >= want as f64;
        let records = now.sum("clawtrace_events_total", &[]);
        if done && records == last_records {
            return Ok((now, true));
        }
        if started.elapsed() > timeout {
            return Ok((now, false));
        }
        last_records = records;
        thread::sleep(Duration::from_millis(300));
    }
}

fn storm(env: &Env, _ctx: &Ctx) -> Result<Vec<Section>> {
    let o = &env.options;
    // The workers' own rate first, untraced, for as long: what tracing takes from them.
    let untraced_tag = format!("u{}", env.pid);
    settle();
    let untraced = workload::run(&env.spec(
        untraced_tag.clone(),
        Until::Elapsed(Duration::from_secs(o.storm_seconds)),
        workload::MIX,
    ));
    workload::sweep(&env.cgroup_root, Some(&untraced_tag))?;
    let untraced = untraced?;
    let untraced_per_s = untraced.truth.lifecycles as f64 / untraced.elapsed.as_secs_f64();
    env.interrupted()?;
    settle();
    let tag = format!("s{}", env.pid);
    let events_path = env.out.join("storm-events.jsonl");
    let tracer = Tracer::clawtrace(&env.clawtrace, &events_path, &[])?;
    let addr = tracer
        .metrics
        .ok_or_else(|| anyhow!("clawtrace has no metrics address"))?;
    let ids = probes::prog_ids_of(tracer.pid())?;
    let base = scrape(addr)?;
    let cpu_before = cpu_seconds(tracer.pid())?;

    let stats = StatsEnabled::on()?;
    let before = probes::snapshot(&ids);
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
    let host = host_probe_costs(env, &ids)?;
    let reference = storm_reference_costs(env, &ids, &format!("r{}", env.pid))?;
    let stopped = tracer.stop()?;
    if !stopped.status.success() {
        bail!(
            "clawtrace exited with {}: {}",
            stopped.status,
            tracer::last_lines(&stopped.stderr, 5)
        );
    }
    let (events, lost_stderr, undecodable) = stopped_line(&stopped.stderr)
        .ok_or_else(|| anyhow!("clawtrace printed no `stopped:` line"))?;
    let reported = Reported::from_json_lines(&events_path, &tag)?;

    let seconds = elapsed.as_secs_f64();
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
    let records_per_s = records / seconds;
    let exact = reported.matches(&truth) && caught_up;
    let by_kind: BTreeMap<String, f64> = metrics
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

    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} workers ran container lifecycles flat out for {:.1} s (cgroup v2 mkdir, `busybox` \
         placed in it via `cgroup.procs` before exec, exit / SIGKILL / a forked subshell then \
         exit 3 in turn, rmdir) under the release clawtrace (`--output json` to a file, \
         `/metrics` on).\n",
        o.workers, seconds
    );
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let _ = writeln!(md, "| lifecycles | {} |", truth.lifecycles);
    let _ = writeln!(md, "| lifecycles/s | {lifecycles_per_s:.0} |");
    let _ = writeln!(
        md,
        "| lifecycles/s untraced, just before, as long | {untraced_per_s:.0} ({share_of_untraced:.1} % kept) |"
    );
    let _ = writeln!(md, "| kernel records received | {records:.0} |");
    let _ = writeln!(md, "| records/s | {records_per_s:.0} |");
    let _ = writeln!(
        md,
        "| records lost (ring buffer full) | {lost} |\n| events dropped by the export queue | {queue_drops:.0} |\n| undecodable records | {undecodable} |"
    );
    let _ = writeln!(md, "| events printed by clawtrace (whole run) | {events} |");
    let _ = writeln!(
        md,
        "| rmdir retried while the cgroup was still busy | {} |",
        truth.rmdir_retries
    );
    let _ = writeln!(
        md,
        "| clawtrace CPU time | {cpu:.2} s ({:.1} µs per record) |",
        if records > 0.0 {
            cpu * 1e6 / records
        } else {
            0.0
        }
    );
    let _ = writeln!(md, "\nRecords by kind: {}\n", kinds_text(&by_kind));
    let _ = writeln!(
        md,
        "| count | ground truth | clawtrace | |\n|---|---|---|---|"
    );
    for (what, want, got) in reported.rows(&truth) {
        let _ = writeln!(
            md,
            "| {what} | {want} | {got} | {} |",
            if want == got { "=" } else { "≠" }
        );
    }
    if !caught_up {
        let _ = writeln!(md, "\nclawtrace had not caught up 60 s after the storm.");
    }

    let storm_checks = vec![
        Check::new(
            "1 storm",
            "lifecycles/s",
            format!("{lifecycles_per_s:.0}"),
            format!("≥ {TARGET_LIFECYCLES_PER_S:.0}"),
            Some(lifecycles_per_s >= TARGET_LIFECYCLES_PER_S),
        ),
        Check::new(
            "1 storm",
            "share of the untraced workers' rate",
            format!("{share_of_untraced:.1} %"),
            format!("≥ {TARGET_STORM_SHARE_PERCENT:.0} %"),
            Some(share_of_untraced >= TARGET_STORM_SHARE_PERCENT),
        ),
        Check::new(
            "1 storm",
            "records/s",
            format!("{records_per_s:.0}"),
            "",
            None,
        ),
        Check::new(
            "1 storm",
            "clawtrace CPU per kernel record",
            format!("{cpu_us_per_record:.2} µs"),
            format!("≤ {TARGET_CPU_US_PER_RECORD} µs"),
            Some(records > 0.0 && cpu_us_per_record <= TARGET_CPU_US_PER_RECORD),
        ),
        Check::new(
            "1 storm",
            "records lost",
            lost.to_string(),
            "0",
            Some(lost == 0 && queue_drops == 0.0),
        ),
        Check::new(
            "1 storm",
            "counts equal ground truth",
            if exact { "exact" } else { "differ" },
            "exact",
            Some(exact),
        ),
    ];
    let storm = Section {
        number: 1,
        key: "storm",
        title: "Lifecycle storm",
        json: json!({
            "workers": o.workers,
            "seconds": seconds,
            "lifecycles": truth.lifecycles,
            "lifecycles_per_second": lifecycles_per_s,
            "untraced_lifecycles_per_second": untraced_per_s,
            "share_of_untraced_percent": share_of_untraced,
            "clawtrace_cpu_us_per_record": cpu_us_per_record,
            "records": records,
            "records_per_second": records_per_s,
            "records_by_kind": by_kind,
            "records_lost": lost,
            "export_queue_drops": queue_drops,
            "undecodable": undecodable,
            "clawtrace_cpu_seconds": cpu,
            "caught_up": caught_up,
            "exact": exact,
            "ground_truth": truth_json(&truth),
            "clawtrace": {
                "created": reported.created, "deleted": reported.deleted, "execs": reported.execs,
                "exited": reported.exited, "failed": reported.failed, "killed": reported.killed,
                "other_exits": reported.other_exits, "sigkills": reported.signals,
            },
        }),
        markdown: md,
        checks: storm_checks,
    };

    // Section 3 from the same run.
    let rows = probes::delta(&before, &after);
    let host_rows = probes::delta(&host.before, &host.after);
    let avg = |runs: u64, ns: u64| {
        if runs > 0 {
            ns as f64 / runs as f64
        } else {
            0.0
        }
    };
    let mut md = format!(
        "`kernel.bpf_stats_enabled=1` (restored after); `run_time_ns / run_cnt` of each clawtrace \
         program (`bpftool -j prog show`; programs found through clawtrace's own file \
         descriptors), difference over the measured interval. *Storm*: during section 1, where \
         nearly every exec, exit and signal is in a followed container and writes a record (clawtrace runs nothing at a fork). \
         *Host*: then {:.0} s of processes outside any container ({} `busybox true` / `sleep` + \
         SIGKILL), the programs' filtering fast path. The statistics add two clock reads to every \
         run; the reference programs below show what this kernel charges for next to nothing.\n\n\
         | program | storm runs | storm ns/run | host runs | host ns/run | target |\n|---|---|---|---|---|---|\n",
        host.seconds, host.work
    );
    let mut checks = Vec::new();
    let mut programs = Vec::new();
    for (name, runs, ns) in &rows {
        let (host_runs, host_ns) = host_rows
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or((0, 0), |(_, r, t)| (*r, *t));
        let storm_avg = avg(*runs, *ns);
        let host_avg = avg(host_runs, host_ns);
        let hot = HOT_PROBES.iter().find(|(p, _)| name == p);
        let target = if hot.is_some() {
            format!("≤ {TARGET_HOT_PROBE_NS:.0}")
        } else {
            String::new()
        };
        if *runs == 0 && host_runs == 0 {
            continue;
        }
        let shown = |runs: u64, a: f64| {
            if runs > 0 {
                format!("{a:.0}")
            } else {
                "–".into()
            }
        };
        let _ = writeln!(
            md,
            "| {name} | {runs} | {} | {host_runs} | {} | {target} |",
            shown(*runs, storm_avg),
            shown(host_runs, host_avg)
        );
        if let Some((_, what)) = hot {
            checks.push(Check::new(
                "3 probes",
                format!("{what} ({name}) ns/run, storm"),
                format!("{storm_avg:.0}"),
                target,
                Some(*runs > 0 && storm_avg <= TARGET_HOT_PROBE_NS),
            ));
        }
        programs.push(json!({
            "program": name,
            "storm_runs": runs, "storm_run_time_ns": ns, "storm_average_ns": storm_avg,
            "host_runs": host_runs, "host_run_time_ns": host_ns, "host_average_ns": host_avg,
        }));
    }
    let program_ns: u64 = rows.iter().map(|(_, _, ns)| *ns).sum();
    let per_lifecycle = if truth.lifecycles > 0 {
        program_ns as f64 / truth.lifecycles as f64
    } else {
        0.0
    };
    let _ = writeln!(
        md,
        "\nProgram time per container lifecycle in the storm (every program's run time over \
         the lifecycles): {per_lifecycle:.0} ns."
    );
    checks.push(Check::new(
        "3 probes",
        "program time per container lifecycle, storm",
        format!("{per_lifecycle:.0} ns"),
        format!("≤ {TARGET_PROGRAM_NS_PER_LIFECYCLE:.0} ns"),
        Some(truth.lifecycles > 0 && per_lifecycle <= TARGET_PROGRAM_NS_PER_LIFECYCLE),
    ));
    let silent: Vec<&str> = rows
        .iter()
        .filter(|(name, runs, _)| {
            *runs == 0 && !host_rows.iter().any(|(n, r, _)| n == name && *r > 0)
        })
        .map(|(name, _, _)| name.as_str())
        .collect();
    if !silent.is_empty() {
        let _ = writeln!(md, "\nNot run in either interval: {}.", silent.join(", "));
    }
    let mut references = Vec::new();
    let _ = writeln!(md, "\nReference programs (bpftrace, same interval as *host*):\n\n| reference | runs | ns/run |\n|---|---|---|");
    for (name, runs, ns) in probes::delta(&host.peer_before, &host.peer_after) {
        let what = tracer::CALIBRATION_PROGRAMS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(name.as_str(), |(_, w)| w);
        let _ = writeln!(md, "| {what} | {runs} | {:.0} |", avg(runs, ns));
        references.push(json!({"reference": what, "runs": runs, "run_time_ns": ns, "average_ns": avg(runs, ns)}));
        if name == "task_newtask" {
            checks.push(Check::new(
                "3 probes",
                "reference: empty program ns/run",
                format!("{:.0}", avg(runs, ns)),
                "",
                None,
            ));
        }
    }
    let _ = writeln!(
        md,
        "\nWriting records, side by side: {:.0} s more of the storm with bpftrace also attached, \
         running a script that prints one line per fork, exit and signal (`printf`, bpftrace's \
         usual way to report an event). Both tools' programs, same interval:\n\n\
         | hook | clawtrace runs | clawtrace ns/run | bpftrace `printf` runs | bpftrace ns/run |\n|---|---|---|---|---|",
        reference.seconds
    );
    let clawtrace_rows = probes::delta(&reference.before, &reference.after);
    let peer_rows = probes::delta(&reference.peer_before, &reference.peer_after);
    let mut side_by_side = Vec::new();
    for (peer_name, probe, what) in tracer::STORM_REFERENCE_PROGRAMS {
        let (ours_runs, ours_ns) = clawtrace_rows
            .iter()
            .find(|(n, _, _)| n == probe)
            .map_or((0, 0), |(_, r, t)| (*r, *t));
        let (peer_runs, peer_ns) = peer_rows
            .iter()
            .find(|(n, _, _)| n == peer_name)
            .map_or((0, 0), |(_, r, t)| (*r, *t));
        let ours = if ours_runs > 0 {
            format!("{:.0}", avg(ours_runs, ours_ns))
        } else {
            "– (no program)".to_string()
        };
        let _ = writeln!(
            md,
            "| {what} | {ours_runs} | {ours} | {peer_runs} | {:.0} |",
            avg(peer_runs, peer_ns)
        );
        checks.push(Check::new(
            "3 probes",
            format!("reference: bpftrace printf, {what} ns/run, storm"),
            format!("{:.0}", avg(peer_runs, peer_ns)),
            "",
            None,
        ));
        side_by_side.push(json!({
            "hook": what,
            "clawtrace_runs": ours_runs, "clawtrace_average_ns": avg(ours_runs, ours_ns),
            "bpftrace_printf_runs": peer_runs, "bpftrace_printf_average_ns": avg(peer_runs, peer_ns),
        }));
    }
    // A hook clawtrace attaches nothing to costs nothing per run; a hot probe it should have
    // and has not is a failure.
    let unhooked = UNHOOKED.iter().map(|p| (p, "no program (0 ns)", true));
    let hot = HOT_PROBES.iter().map(|p| (p, "not loaded", false));
    for ((probe, what), measured, verdict) in unhooked.chain(hot) {
        if !rows.iter().any(|(name, _, _)| name == probe) {
            checks.push(Check::new(
                "3 probes",
                format!("{what} ({probe}) ns/run, storm"),
                measured,
                format!("≤ {TARGET_HOT_PROBE_NS:.0}"),
                Some(verdict),
            ));
        }
    }
    let probes = Section {
        number: 3,
        key: "probes",
        title: "Per-probe kernel cost",
        json: json!({
            "host_seconds": host.seconds,
            "host_processes": host.work,
            "programs": programs,
            "references": references,
            "storm_side_by_side": {"seconds": reference.seconds, "hooks": side_by_side},
        }),
        markdown: md,
        checks,
    };
    Ok(vec![storm, probes])
}

/// BPF statistics over one interval of section 3 for clawtrace's programs and for those of a
/// bpftrace script run beside them, and what the interval's work returned.
struct Interval<T> {
    seconds: f64,
    before: BTreeMap<u32, probes::ProgStats>,
    after: BTreeMap<u32, probes::ProgStats>,
    peer_before: BTreeMap<u32, probes::ProgStats>,
    peer_after: BTreeMap<u32, probes::ProgStats>,
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
fn host_probe_costs(env: &Env, ids: &[u32]) -> Result<Interval<u64>> {
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
fn storm_reference_costs(env: &Env, ids: &[u32], tag: &str) -> Result<Interval<()>> {
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
fn only(m: &BTreeMap<u32, probes::ProgStats>, want: &[u32]) -> BTreeMap<u32, probes::ProgStats> {
    m.iter()
        .filter(|(id, _)| want.contains(id))
        .map(|(id, s)| (*id, s.clone()))
        .collect()
}

fn kinds_text(by_kind: &BTreeMap<String, f64>) -> String {
    by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn truth_json(t: &Truth) -> Value {
    json!({
        "lifecycles": t.lifecycles,
        "cgroups_made": t.cgroups_made,
        "cgroups_removed": t.cgroups_removed,
        "execs": t.execs,
        "exited": t.exited,
        "failed": t.failed,
        "killed": t.killed,
        "sigkills": t.signals,
        "rmdir_retries": t.rmdir_retries,
    })
}

// ----- 2: workload overhead -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Traced {
    Nothing,
    Clawtrace,
    /// clawtrace with `--trace-mount-syscalls`: the mount system calls' tracepoints too.
    ClawtraceSyscalls,
    Bpftrace,
    /// libbpf-tools' `exitsnoop` and `sigsnoop`, side by side.
    Snoops,
}

impl Traced {
    const ALL: [Traced; 5] = [
        Traced::Nothing,
        Traced::Clawtrace,
        Traced::ClawtraceSyscalls,
        Traced::Bpftrace,
        Traced::Snoops,
    ];

    fn name(self) -> &'static str {
        match self {
            Traced::Nothing => "none",
            Traced::Clawtrace => "clawtrace",
            Traced::ClawtraceSyscalls => "clawtrace, --trace-mount-syscalls",
            Traced::Bpftrace => "bpftrace",
            Traced::Snoops => "exitsnoop + sigsnoop",
        }
    }
}

fn median(values: &[f64]) -> f64 {
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

/// Plain system calls timed in each overhead run, while the tracer is attached.
const SYSCALL_LOOP: u32 = 1_000_000;

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
        let name = tracer.name;
        // Its work on the workload's events is done by now: the system-call loop took longer
        // than its poll interval.
        if let Some(before) = cpu_before {
            tracer_cpu = Some(cpu_seconds(tracer.pid())? - before);
        }
        let stopped = tracer.stop()?;
        if !stopped.status.success() {
            bail!(
                "{name} exited with {}: {}",
                stopped.status,
                tracer::last_lines(&stopped.stderr, 5)
            );
        }
        if matches!(traced, Traced::Clawtrace | Traced::ClawtraceSyscalls) {
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

fn overhead(env: &Env, _ctx: &Ctx) -> Result<Vec<Section>> {
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
    let med = |t: Traced| median(times.get(t.name()).map_or(&[][..], Vec::as_slice));
    let syscall_med = |t: Traced| median(syscalls.get(t.name()).map_or(&[][..], Vec::as_slice));
    let syscall_none = syscall_med(Traced::Nothing);
    let syscall_added = |t: Traced| syscall_med(t) - syscall_none;
    let none = med(Traced::Nothing);
    // Each run against the untraced run of its own round, seconds away from it: this VM's
    // speed drifts by several percent over a minute, which a comparison of medians across
    // rounds takes for tracer cost.
    let paired = |t: Traced| -> Vec<f64> {
        let runs = times.get(t.name()).map_or(&[][..], Vec::as_slice);
        let base = times
            .get(Traced::Nothing.name())
            .map_or(&[][..], Vec::as_slice);
        runs.iter()
            .zip(base)
            .filter(|(_, b)| **b > 0.0)
            .map(|(r, b)| (r / b - 1.0) * 100.0)
            .collect()
    };
    let slowdown = |t: Traced| median(&paired(t));
    let of_medians = |t: Traced| {
        if none > 0.0 {
            (med(t) / none - 1.0) * 100.0
        } else {
            0.0
        }
    };
    let claw = slowdown(Traced::Clawtrace);
    let core = slowdown(Traced::ClawtraceSyscalls);
    let peer = slowdown(Traced::Bpftrace);
    let snoops = slowdown(Traced::Snoops);

    let mut md = format!(
        "Each run: {} workers × {} lifecycles (the storm's mix: exit, SIGKILL, fork+exit; \
         {lifecycles} containers, wall time measured). Tracers are started before the run and \
         stopped after it, once attached; {} rounds of none, clawtrace, clawtrace with \
         `--trace-mount-syscalls`, bpftrace, and exitsnoop + sigsnoop after one discarded warm-up run, each \
         round starting one configuration further along and every other cycle of five rounds in \
         reverse order (so \
         no configuration always runs first, or after the same one). Before each run, and \
         again once its tracer is attached, the bench waits for a quiet machine (at most 5 % \
         busy over 300 ms; median wait {settle:.1} s): a stopped tracer's programs and maps \
         are freed by kernel workers after it exits. clawtrace: the release \
         build, `--output json` to a file, `/metrics` on; the third configuration adds \
         `--trace-mount-syscalls`, which attaches the mount system calls' tracepoints (the \
         default attaches no syscall tracepoint). \
         bpftrace: `target/bench/peer.bt`, the same six tracepoints, cgroups and \
         tasks followed in maps keyed by id and pid, last signal and sender kept per process, \
         exit status read from the task, one line printed per event to a file. \
         exitsnoop + sigsnoop: Debian's libbpf-tools (CO-RE, ring or perf buffer, one line per \
         process exit and per signal, node-wide), both running, output to a file. Slowdown: the \
         median over rounds of each run against the untraced run of its round (this VM's speed \
         drifts over a minute); \"median against median\" compares medians across rounds instead. \
         Tracer \
         CPU: the tracer's own process (user space: for clawtrace its tracing loop and export \
         worker; its programs run in the workload's tasks and are not in it), as a share of \
         the machine's time over the run ({cores} cores × the run's wall time), median over \
         rounds. Spread: the middle half of the per-round slowdowns (how much one round \
         moves).\n\n\
         | tracer | runs (s) | median (s) | lifecycles/s | slowdown | spread | median against median | tracer CPU |\n|---|---|---|---|---|---|---|---|\n",
        o.workers,
        o.overhead_lifecycles,
        o.rounds,
        settle = median(&settled),
    );
    let mut configs = Vec::new();
    for traced in Traced::ALL {
        let runs = times.get(traced.name()).cloned().unwrap_or_default();
        let m = med(traced);
        let rate = if m > 0.0 { lifecycles as f64 / m } else { 0.0 };
        let s = slowdown(traced);
        let cpu_runs = cpu.get(traced.name()).cloned().unwrap_or_default();
        let cpu_share = (!cpu_runs.is_empty()).then(|| median(&cpu_runs));
        let (low, high) = hinges(&paired(traced));
        let _ = writeln!(
            md,
            "| {} | {} | {m:.3} | {rate:.0} | {} | {} | {} | {} |",
            traced.name(),
            runs.iter()
                .map(|t| format!("{t:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            if traced == Traced::Nothing {
                "–".to_string()
            } else {
                format!("{s:+.1} %")
            },
            if traced == Traced::Nothing {
                "–".to_string()
            } else {
                format!("{low:+.1} … {high:+.1} %")
            },
            if traced == Traced::Nothing {
                "–".to_string()
            } else {
                format!("{:+.1} %", of_medians(traced))
            },
            cpu_share.map_or("–".to_string(), |c| format!("{c:.2} %"))
        );
        configs.push(json!({
            "tracer": traced.name(),
            "runs_seconds": runs,
            "median_seconds": m,
            "lifecycles_per_second": rate,
            "slowdown_percent": if traced == Traced::Nothing { Value::Null } else { json!(s) },
            "paired_slowdowns_percent": paired(traced),
            "paired_slowdowns_middle_half_percent": [low, high],
            "slowdown_of_medians_percent": if traced == Traced::Nothing { Value::Null } else { json!(of_medians(traced)) },
            "syscall_ns_runs": syscalls.get(traced.name()).cloned().unwrap_or_default(),
            "syscall_ns_median": syscall_med(traced),
            "tracer_cpu_percent_of_machine_runs": cpu_runs,
            "tracer_cpu_percent_of_machine_median": cpu_share,
        }));
    }
    let _ = writeln!(
        md,
        "\nAfter each run's workload, with the tracer still attached, {SYSCALL_LOOP} `getppid(2)` \
         calls in a loop: what a tracer adds to every system call of every task on the node \
         (syscall tracepoints, which clawtrace attaches only with `--trace-mount-syscalls`, put every \
         system call on the kernel's traced path).\n\n\
         | tracer | ns per system call (median) | added |\n|---|---|---|"
    );
    for traced in Traced::ALL {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} |",
            traced.name(),
            syscall_med(traced),
            if traced == Traced::Nothing {
                "–".to_string()
            } else {
                format!("{:+.0} ns", syscall_added(traced))
            }
        );
    }
    if lost_total > 0 {
        let _ = writeln!(
            md,
            "\nclawtrace lost {lost_total} record(s) over these runs."
        );
    }
    let added = syscall_added(Traced::Clawtrace);
    let checks = vec![
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
                syscall_added(Traced::Clawtrace),
                syscall_added(Traced::ClawtraceSyscalls),
                syscall_added(Traced::Bpftrace)
            ),
            "",
            None,
        ),
    ];
    Ok(vec![Section {
        number: 2,
        key: "overhead",
        title: "Workload overhead",
        json: json!({
            "workers": o.workers,
            "lifecycles_per_run": lifecycles,
            "rounds": o.rounds,
            "settle_seconds_median": median(&settled),
            "settle_seconds_max": settled.iter().copied().fold(0.0, f64::max),
            "configs": configs,
            "clawtrace_slowdown_percent": claw,
            "clawtrace_mount_syscalls_slowdown_percent": core,
            "bpftrace_slowdown_percent": peer,
            "snoops_slowdown_percent": snoops,
            "clawtrace_records_lost": lost_total,
            "syscall_ns_added": {
                "clawtrace": syscall_added(Traced::Clawtrace),
                "clawtrace_mount_syscalls": syscall_added(Traced::ClawtraceSyscalls),
                "bpftrace": syscall_added(Traced::Bpftrace),
                "snoops": syscall_added(Traced::Snoops),
            },
        }),
        markdown: md,
        checks,
    }])
}

// ----- 5: memory -----

/// The `i`-th hostile agent name: distinct for every `i` (the number comes first, inside the
/// 256 bytes the kernel side reads), built to break exposition formats, paths and terminals,
/// never containing NUL (an environment value cannot).
fn hostile_name(i: u64) -> OsString {
    let bytes: Vec<u8> = match i % 8 {
        0 => format!("{i}\"}} {{le=\"+Inf\"}} q").into_bytes(),
        1 => format!("{i}\n# TYPE x counter\nx 1").into_bytes(),
        2 => [i.to_string().as_bytes(), b"\xff\xfe\x80bin\x1b[2J"].concat(),
        3 => format!("{i}{}", "m".repeat(4096)).into_bytes(),
        4 => format!("{i} back\\slash \u{202e}rtl \u{1F600}").into_bytes(),
        5 => format!("_overflow{i}").into_bytes(),
        6 => format!("../../{i}/etc/passwd").into_bytes(),
        _ => format!("agent-{i}").into_bytes(),
    };
    OsString::from_vec(bytes)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory(env: &Env, _ctx: &Ctx) -> Result<Vec<Section>> {
    let o = &env.options;
    let workers = o.workers as u64;
    let live_tag = format!("m{}-live", env.pid);
    let churn_tag = format!("m{}-churn", env.pid);
    let churn_per_worker = (o.hostile_names - o.live_containers).div_ceil(workers);
    let offered = o.live_containers + churn_per_worker * workers;

    let tracer = Tracer::clawtrace(&env.clawtrace, Path::new("/dev/null"), &[])?;
    let addr = tracer
        .metrics
        .ok_or_else(|| anyhow!("clawtrace has no metrics address"))?;
    let pid = tracer.pid();
    thread::sleep(Duration::from_millis(500));
    let (idle_hwm, idle_rss) = memory_kib(pid)?;
    let ring_rss = tracer::bpf_map_rss_kib(pid)?;
    // From here VmHWM is the peak under load, apart from the start-up peak (BTF parsing,
    // program loading), which `idle_hwm` holds.
    tracer::reset_peak(pid)?;
    let base = scrape(addr)?;
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();

    // The live containers first (names 0..live), then the churn (names live..offered), so the
    // peak has both: every live container held, every name offered.
    let live_names: Arc<workload::NameFn> = Arc::new(|_, n| hostile_name(n));
    let live = workload::spawn_live(
        &env.cgroup_root,
        &live_tag,
        o.live_containers,
        o.workers,
        live_names.as_ref(),
    );
    let live = match live {
        Ok(live) => live,
        Err(e) => {
            let _ = workload::sweep(&env.cgroup_root, Some(&live_tag));
            return Err(e);
        }
    };
    let live_seconds = started.elapsed().as_secs_f64();
    let first = o.live_containers;
    let mut spec = env.spec(
        churn_tag.clone(),
        Until::Lifecycles(churn_per_worker),
        workload::EXIT_ONLY,
    );
    spec.agent_name = Arc::new(move |w, n| hostile_name(first + n * workers + w as u64));
    let churn = workload::run(&spec);
    let churn_swept = workload::sweep(&env.cgroup_root, Some(&churn_tag));
    let created = if churn.is_ok() {
        wait_caught_up(addr, &base, "create", offered, Duration::from_secs(120))
    } else {
        Err(anyhow!("churn failed"))
    };
    let peak = memory_kib(pid);
    let during = scrape(addr);
    let ended = workload::end_live(live);
    let live_swept = workload::sweep(&env.cgroup_root, Some(&live_tag));
    let churn = churn?;
    churn_swept?;
    let ended = ended?;
    live_swept?;
    let (_, created_all) = created?;
    let (peak_hwm, peak_rss) = peak?;
    let during = during?;
    env.interrupted()?;

    let (_, deleted_all) =
        wait_caught_up(addr, &base, "delete", offered, Duration::from_secs(120))?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    let (final_hwm, final_rss) = memory_kib(pid)?;
    let after = scrape(addr)?;
    let stopped = tracer.stop()?;
    if !stopped.status.success() {
        bail!(
            "clawtrace exited with {}: {}",
            stopped.status,
            tracer::last_lines(&stopped.stderr, 5)
        );
    }
    let lost = stopped_line(&stopped.stderr).map_or(0, |(_, lost, _)| lost);
    let queue_drops = after.sum("clawtrace_export_errors_total", &["sink=\"queue\""]);
    let label_values = during
        .by_label("containers_live", "agent_name")
        .iter()
        .filter(|(_, v)| *v > 0.0)
        .count();
    let live_gauge = during.sum("containers_live", &[]);
    let overflow = after.sum("clawtrace_label_overflow_total", &[]);
    let load_peak = peak_hwm.max(final_hwm);
    let peak_mib = mib(load_peak.max(idle_hwm));
    let made = ended.cgroups_removed + churn.truth.cgroups_removed;

    let mut md = format!(
        "The real clawtrace (release, `--output json` to /dev/null, `/metrics` on, default \
         `--label-max-values 256`) traced {} real containers kept alive (`busybox sleep` in its \
         own cgroup v2 sub-cgroup) while {} more came and went; each container's init carried \
         a distinct hostile `AGENT_NAME` (quotes and braces, newlines and `# TYPE` lines, \
         invalid UTF-8 and escape sequences, 4 KiB names, bidi and emoji, `_overflow…`, \
         `../../`), read by the kernel side at exec and put through the label guard: {offered} \
         distinct names offered in all. VmHWM and VmRSS from /proc/PID/status.\n\n\
         | figure | value |\n|---|---|\n",
        o.live_containers, churn.truth.lifecycles
    );
    let _ = writeln!(
        md,
        "| peak RSS over the whole run (VmHWM, start-up included) | **{peak_mib:.1} MiB** |"
    );
    let _ = writeln!(
        md,
        "| RSS idle after start / start-up peak | {:.1} MiB / {:.1} MiB |",
        mib(idle_rss),
        mib(idle_hwm)
    );
    let _ = writeln!(
        md,
        "| of which the ring buffer's mapping (`--ring-buffer-size` 8 MiB, data mapped twice) | {:.1} MiB |",
        mib(ring_rss)
    );
    let _ = writeln!(
        md,
        "| peak RSS under load (VmHWM reset after start), {} live + {offered} names | {:.1} MiB |",
        o.live_containers,
        mib(load_peak)
    );
    let _ = writeln!(
        md,
        "| RSS at the peak of live containers | {:.1} MiB |",
        mib(peak_rss)
    );
    let _ = writeln!(
        md,
        "| RSS after every container was deleted | {:.1} MiB |",
        mib(final_rss)
    );
    let _ = writeln!(
        md,
        "| live containers in `containers_live` at the peak | {live_gauge:.0} |"
    );
    let _ = writeln!(
        md,
        "| agent_name values exported at the peak | {label_values} |"
    );
    let _ = writeln!(md, "| containers labelled `_overflow` | {overflow:.0} |");
    let _ = writeln!(
        md,
        "| containers created / deleted (ground truth) | {} / {made} |",
        o.live_containers + churn.truth.cgroups_made
    );
    let _ = writeln!(
        md,
        "| clawtrace caught up (creates / deletes counted) | {created_all} / {deleted_all} |"
    );
    let _ = writeln!(
        md,
        "| records lost / export-queue drops | {lost} / {queue_drops:.0} |"
    );
    let _ = writeln!(
        md,
        "| wall time: live containers made / all | {live_seconds:.1} s / {elapsed:.1} s |"
    );
    let _ = writeln!(md, "| clawtrace CPU time | {cpu:.1} s |");

    let checks = vec![
        Check::new(
            "5 memory",
            format!(
                "peak RSS, {} live, {offered} hostile names",
                o.live_containers
            ),
            format!("{peak_mib:.1} MiB"),
            format!("≤ {TARGET_PEAK_RSS_MIB:.0} MiB"),
            Some(peak_mib <= TARGET_PEAK_RSS_MIB),
        ),
        Check::new(
            "5 memory",
            "records lost / queue drops",
            format!("{lost} / {queue_drops:.0}"),
            "0 / 0",
            Some(lost == 0 && queue_drops == 0.0),
        ),
    ];
    Ok(vec![Section {
        number: 5,
        key: "memory",
        title: "Memory",
        json: json!({
            "live_containers": o.live_containers,
            "churned_containers": churn.truth.lifecycles,
            "hostile_names_offered": offered,
            "idle_rss_kib": idle_rss,
            "idle_hwm_kib": idle_hwm,
            "peak_hwm_kib": peak_hwm,
            "rss_at_peak_kib": peak_rss,
            "final_rss_kib": final_rss,
            "final_hwm_kib": final_hwm,
            "peak_rss_mib": peak_mib,
            "load_peak_hwm_kib": load_peak,
            "ring_buffer_rss_kib": ring_rss,
            "live_gauge_at_peak": live_gauge,
            "label_values_at_peak": label_values,
            "label_overflow_total": overflow,
            "caught_up_creates": created_all,
            "caught_up_deletes": deleted_all,
            "records_lost": lost,
            "export_queue_drops": queue_drops,
            "seconds": elapsed,
            "clawtrace_cpu_seconds": cpu,
        }),
        markdown: md,
        checks,
    }])
}

// ----- 4: user-space pipeline (criterion) -----

fn pipeline(env: &Env, ctx: &Ctx) -> Result<Vec<Section>> {
    let log_path = env.out.join("criterion.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = ctx.cargo();
    cmd.args(["bench", "-p", "tracer-user", "--bench", "pipeline", "--"])
        .args(["--noplot", "--warm-up-time", "1", "--sample-size", "20"])
        .args([
            "--measurement-time",
            if env.options.quick { "1" } else { "3" },
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("criterion log")?)
        .stderr(log);
    println!("xtask: running: {} > {}", show(&cmd), log_path.display());
    let status = cmd.status().context("running cargo bench")?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        bail!(
            "cargo bench failed ({status}): {}",
            tracer::last_lines(&text, 5)
        );
    }
    let criterion = env
        .out
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", env.out.display()))?
        .join("criterion")
        .join("pipeline");
    let mut md = String::from(
        "`cargo bench -p tracer-user --bench pipeline` (criterion, pinned to one CPU): a \
         recorded stream of 2,000 Docker-layout container lifecycles (mkdir, attach, agent-name \
         record, exec, child exec/exit or SIGTERM+SIGKILL, exit with the kernel's signal \
         memory, rmdir; ~100 alive at once, 16 agent names) as wire bytes, replayed through \
         `Record::decode`, the lifecycle `Model`, and the export worker itself driven in the same \
         thread (agent labels from the init's variable, every metric, `clawtrace_events_total` \
         per 128-record poll; no OTLP). Mean time per pass over the stream.\n\n\
         | benchmark | records/pass | mean per pass | records/s |\n|---|---|---|---|\n",
    );
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for (id, what) in PIPELINE_BENCHES {
        let dir = criterion.join(id).join("new");
        let estimates = read_json(&dir.join("estimates.json"))?;
        let benchmark = read_json(&dir.join("benchmark.json"))?;
        let mean_ns = estimates
            .pointer("/mean/point_estimate")
            .and_then(Value::as_f64)
            .ok_or_else(|| anyhow!("{}: no mean", dir.display()))?;
        let elements = benchmark
            .pointer("/throughput/Elements")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{}: no element throughput", dir.display()))?;
        let per_s = elements as f64 / (mean_ns / 1e9);
        let _ = writeln!(
            md,
            "| {what} | {elements} | {:.2} ms | {} |",
            mean_ns / 1e6,
            if *id == PIPELINE_HEADLINE {
                format!("**{per_s:.0}**")
            } else {
                format!("{per_s:.0}")
            }
        );
        rows.push(json!({"benchmark": id, "what": what, "records": elements, "mean_ns": mean_ns, "records_per_second": per_s}));
        if *id == PIPELINE_HEADLINE {
            checks.push(Check::new(
                "4 user space",
                "decode + model + aggregate, records/s (1 core)",
                format!("{per_s:.0}"),
                format!("≥ {TARGET_RECORDS_PER_S:.0}"),
                Some(per_s >= TARGET_RECORDS_PER_S),
            ));
        } else if *id == "decode_model_aggregate_10k_live" {
            checks.push(Check::new(
                "4 user space",
                "same, 10,000 containers alive, records/s",
                format!("{per_s:.0}"),
                "",
                None,
            ));
        }
    }
    let _ = writeln!(md, "\nFull criterion output: `target/bench/criterion.log`.");
    Ok(vec![Section {
        number: 4,
        key: "pipeline",
        title: "User-space pipeline",
        json: json!({ "benchmarks": rows }),
        markdown: md,
        checks,
    }])
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

// ----- report -----

fn target_dir(ctx: &Ctx) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => ctx.root.join(dir),
        None => ctx.root.join("target"),
    }
}

/// `cargo xtask bench ARGS`, as it was asked for.
fn command_line() -> String {
    let args: Vec<String> = env::args_os()
        .skip_while(|a| a != "bench")
        .skip(1)
        .map(|a| crate::quote(&a))
        .collect();
    let mut line = String::from("cargo xtask bench");
    for a in args {
        line.push(' ');
        line.push_str(&a);
    }
    line
}

/// Facts about the machine the figures come from.
fn machine() -> Value {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let version = |program: &str, arg: &str| -> String {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| first_line(&String::from_utf8_lossy(&o.stdout)).to_string())
            .unwrap_or_default()
    };
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .map(|o| first_line(&String::from_utf8_lossy(&o.stdout)).to_string())
        .unwrap_or_default();
    json!({
        "kernel": kernel,
        "cores": cores,
        "cpu": cpu,
        "memory_gib": (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "bpftrace": version("bpftrace", "--version"),
        "bpftool": version("bpftool", "version"),
        "commit": commit,
    })
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| first_line(&String::from_utf8_lossy(&o.stdout)).to_string())
        .unwrap_or_default()
}

fn write_report(
    env: &Env,
    command: &str,
    duration: Duration,
    load: &[(&str, Value)],
    sections: &[Section],
    errors: &[String],
) -> Result<()> {
    let mut machine = machine();
    machine["load"] = load
        .iter()
        .map(|(when, q)| ((*when).to_string(), q.clone()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let checks: Vec<&Check> = sections.iter().flat_map(|s| &s.checks).collect();
    let missed = checks.iter().filter(|c| c.pass == Some(false)).count();
    let mut by_key = serde_json::Map::new();
    for s in sections {
        by_key.insert(s.key.to_string(), s.json.clone());
    }
    let report = json!({
        "command": command,
        "date": utc_now(),
        "duration_seconds": duration.as_secs_f64(),
        "quick": env.options.quick,
        "machine": machine,
        "targets": checks.iter().map(|c| c.json()).collect::<Vec<_>>(),
        "targets_missed": missed,
        "sections": by_key,
        "errors": errors,
    });
    let json_path = env.out.join("report.json");
    let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
    fs::write(&json_path, text + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;

    let mut md = String::from("# clawtrace benchmark report\n\n");
    let _ = writeln!(md, "- command: `{command}`");
    let _ = writeln!(
        md,
        "- date: {}; duration: {:.0} s{}",
        report["date"].as_str().unwrap_or(""),
        duration.as_secs_f64(),
        if env.options.quick {
            " (`--quick`: scaled down, not the targets' figures)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "- machine: Linux {}, {} cores ({}), {} GiB; {}; {}; clawtrace {}",
        machine["kernel"].as_str().unwrap_or(""),
        machine["cores"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["memory_gib"],
        machine["bpftrace"].as_str().unwrap_or(""),
        machine["bpftool"].as_str().unwrap_or(""),
        machine["commit"].as_str().unwrap_or("")
    );
    for (when, q) in load {
        let _ = writeln!(md, "- load {when} the run: {}", quietness_text(q));
    }
    let _ = writeln!(
        md,
        "\n## Summary\n\n{} of {} targets met.\n\n| section | figure | measured | target | |\n|---|---|---|---|---|",
        checks.iter().filter(|c| c.pass == Some(true)).count(),
        checks.iter().filter(|c| c.pass.is_some()).count()
    );
    for c in &checks {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            c.section,
            c.figure,
            c.value,
            c.target,
            c.verdict()
        );
    }
    for s in sections {
        let _ = write!(md, "\n## {}. {}\n\n{}", s.number, s.title, s.markdown);
    }
    if !errors.is_empty() {
        let _ = writeln!(md, "\n## Errors\n");
        for e in errors {
            let _ = writeln!(md, "- {e}");
        }
    }
    let md_path = env.out.join("report.md");
    fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    Ok(())
}

fn print_summary(sections: &[Section], errors: &[String], out: &Path, duration: Duration) {
    let checks: Vec<&Check> = sections.iter().flat_map(|s| &s.checks).collect();
    let width = |f: fn(&Check) -> usize| checks.iter().map(|c| f(c)).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (
        width(|c| c.section.chars().count()),
        width(|c| c.figure.chars().count()),
        width(|c| c.value.chars().count()),
        width(|c| c.target.chars().count()),
    );
    println!();
    println!(
        "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  result",
        "section", "figure", "measured", "target"
    );
    for c in &checks {
        println!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
            c.section,
            c.figure,
            c.value,
            c.target,
            c.verdict()
        );
    }
    let met = checks.iter().filter(|c| c.pass == Some(true)).count();
    let total = checks.iter().filter(|c| c.pass.is_some()).count();
    println!();
    for e in errors {
        println!("error: {e}");
    }
    println!(
        "bench: {met} of {total} targets met; report in {} and report.json ({:.0} s)",
        out.join("report.md").display(),
        duration.as_secs_f64()
    );
}

// ----- how quiet the machine is -----

/// (pid, comm, CPU ticks so far) of every process.
fn process_ticks() -> Vec<(u32, String, u64)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some((pid, comm, ticks))
        })
        .collect()
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Waits until the machine is quiet (at most 5 % busy over 300 ms), for at most 10 s; returns
/// the seconds waited. A stopped tracer leaves work to the kernel (its programs and maps are
/// freed by kernel workers after it exits), and a new one's start leaves some too: neither may
/// run during the next measured workload.
fn settle() -> f64 {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let (busy0, total0) = cpu_jiffies();
        thread::sleep(Duration::from_millis(300));
        let (busy1, total1) = cpu_jiffies();
        if total1 > total0 && (busy1 - busy0) * 100 <= 5 * (total1 - total0) {
            break;
        }
    }
    started.elapsed().as_secs_f64()
}

/// How busy the machine is over one second, who keeps it busy, and how many tracepoint
/// programs are loaded: other load or other tracers on the same tracepoints skew every figure.
fn quietness() -> Value {
    let before = process_ticks();
    let (busy0, total0) = cpu_jiffies();
    thread::sleep(Duration::from_secs(1));
    let (busy1, total1) = cpu_jiffies();
    let after = process_ticks();
    let busy = if total1 > total0 {
        (busy1 - busy0) as f64 * 100.0 / (total1 - total0) as f64
    } else {
        0.0
    };
    // SAFETY: sysconf has no memory side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut top: Vec<(String, f64)> = after
        .iter()
        .filter_map(|(pid, comm, ticks)| {
            let (_, _, was) = before.iter().find(|(p, c, _)| p == pid && c == comm)?;
            let percent = ticks.saturating_sub(*was) as f64 * 100.0 / hz;
            (percent >= 5.0).then(|| (comm.clone(), percent))
        })
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(5);
    let tracepoint_programs = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| {
            v.as_array().map(|progs| {
                progs
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("tracepoint"))
                    .count()
            })
        })
        .unwrap_or(0);
    json!({
        "cpu_busy_percent": busy,
        "busiest": top.iter().map(|(c, p)| json!({"comm": c, "cpu_percent": p})).collect::<Vec<_>>(),
        "tracepoint_programs_loaded": tracepoint_programs,
        "quiet": busy < 10.0 && tracepoint_programs == 0,
    })
}

fn quietness_text(q: &Value) -> String {
    let busiest: Vec<String> = q["busiest"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    format!(
                        "{} {:.0} %",
                        p["comm"].as_str().unwrap_or("?"),
                        p["cpu_percent"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "CPU {:.0} % busy{}, {} tracepoint program(s) of other tracers loaded{}",
        q["cpu_busy_percent"].as_f64().unwrap_or(0.0),
        if busiest.is_empty() {
            String::new()
        } else {
            format!(" ({})", busiest.join(", "))
        },
        q["tracepoint_programs_loaded"],
        if q["quiet"].as_bool() == Some(true) {
            ""
        } else {
            " — NOT QUIET: other load skews these figures"
        }
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_stopped_line_gives_events_lost_and_undecodable() {
        let stderr = "[x INFO ] tracing: 22 programs attached\n\
                      [x INFO ] stopped: 1234 events, 5 records lost, 0 undecodable\n";
        assert_eq!(stopped_line(stderr), Some((1234, 5, 0)));
        assert_eq!(stopped_line("nothing here"), None);
    }

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

    #[test]
    fn hostile_names_are_distinct_and_never_hold_nul() {
        let names: HashSet<Vec<u8>> = (0..10_000)
            .map(|i| hostile_name(i).into_vec())
            .inspect(|n| assert!(!n.contains(&0)))
            .collect();
        assert_eq!(names.len(), 10_000);
    }

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
}
