//! Rendering: each section's figures as markdown and JSON, the summary of every check, and
//! the report files `report.md` and `report.json`. Every table, in the report and on the
//! console, is written by [`Table`].

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use super::{
    machine::{self, Load},
    measure::{
        memory::{mib, MemoryFigures},
        overhead::{median, OverheadFigures, Traced, SYSCALL_LOOP},
        pipeline::{PipelineFigures, PIPELINE_HEADLINE},
        probe_costs::{average, hot_probe_target, ProbeCosts},
        storm::StormFigures,
        Check,
    },
    workload::Truth,
    Env,
};

/// A table: a heading and rows of cells, written as markdown or as aligned text.
pub struct Table {
    heading: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(heading: [&str; N]) -> Table {
        Table {
            heading: heading.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<const N: usize>(&mut self, cells: [String; N]) -> &mut Table {
        self.rows.push(cells.into());
        self
    }

    /// The markdown table, each line ending in a newline. An empty heading cell is written
    /// `| |`; an empty cell of a row `|  |`.
    pub fn markdown(&self) -> String {
        let mut out = String::from("|");
        for h in &self.heading {
            if h.is_empty() {
                out.push_str(" |");
            } else {
                let _ = write!(out, " {h} |");
            }
        }
        out.push_str("\n|");
        out.push_str(&"---|".repeat(self.heading.len()));
        out.push('\n');
        for row in &self.rows {
            out.push('|');
            for cell in row {
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out
    }

    /// The table as columns of plain text two spaces apart, each line ending in a newline:
    /// every column but the last padded to the widest cell of the rows (the heading does not
    /// count), the columns in `right` aligned right.
    pub fn text(&self, right: &[usize]) -> String {
        let widths: Vec<usize> = (0..self.heading.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let last = cells.len().saturating_sub(1);
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let w = widths[i];
                match (i == last, right.contains(&i)) {
                    (true, _) => out.push_str(cell),
                    (false, true) => {
                        let _ = write!(out, "{cell:>w$}  ");
                    }
                    (false, false) => {
                        let _ = write!(out, "{cell:<w$}  ");
                    }
                }
            }
            out.push('\n');
            out
        };
        let mut out = line(&self.heading);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// One section of the report, rendered.
pub struct Section {
    /// 1 to 5, as in the issue.
    pub number: u8,
    key: &'static str,
    title: &'static str,
    json: Value,
    markdown: String,
    checks: Vec<Check>,
}

// ----- 1: lifecycle storm -----

pub fn storm(f: &StormFigures) -> Section {
    let mut md = format!(
        "{} workers ran container lifecycles flat out for {:.1} s (cgroup v2 mkdir, `busybox` \
         placed in it via `cgroup.procs` before exec, exit / SIGKILL / a forked subshell then \
         exit 3 in turn, rmdir) under the release clawtrace (`--output json` to a file, \
         `/metrics` on).\n\n",
        f.workers, f.seconds
    );
    let mut figures = Table::new(["figure", "value"]);
    figures
        .row(["lifecycles".into(), f.truth.lifecycles.to_string()])
        .row(["lifecycles/s".into(), format!("{:.0}", f.lifecycles_per_s)])
        .row([
            "lifecycles/s untraced, as long, before the tracer and after it".into(),
            format!(
                "{:.0}, {:.0}",
                f.untraced_before_per_s, f.untraced_after_per_s
            ),
        ])
        .row([
            "the same at the traced run's time (on the line through both)".into(),
            format!(
                "{:.0} ({:.1} % kept)",
                f.untraced_per_s, f.share_of_untraced
            ),
        ])
        .row([
            "kernel records received".into(),
            format!("{:.0}", f.records),
        ])
        .row(["records/s".into(), format!("{:.0}", f.records_per_s)])
        .row(["records lost (ring buffer full)".into(), f.lost.to_string()])
        .row([
            "events dropped by the export queue".into(),
            format!("{:.0}", f.queue_drops),
        ])
        .row(["undecodable records".into(), f.undecodable.to_string()])
        .row([
            "events printed by clawtrace (whole run)".into(),
            f.events.to_string(),
        ])
        .row([
            "rmdir retried while the cgroup was still busy".into(),
            f.truth.rmdir_retries.to_string(),
        ])
        .row([
            "clawtrace CPU time".into(),
            format!("{:.2} s ({:.1} µs per record)", f.cpu, f.cpu_us_per_record),
        ]);
    md.push_str(&figures.markdown());
    let _ = writeln!(
        md,
        "\nRecords by kind: {}\n",
        kinds_text(&f.records_by_kind)
    );
    let mut counts = Table::new(["count", "ground truth", "clawtrace", ""]);
    for (what, want, got) in f.reported.rows(&f.truth) {
        counts.row([
            what.into(),
            want.to_string(),
            got.to_string(),
            if want == got { "=" } else { "≠" }.into(),
        ]);
    }
    md.push_str(&counts.markdown());
    if !f.caught_up {
        let _ = writeln!(md, "\nclawtrace had not caught up 60 s after the storm.");
    }
    let r = &f.reported;
    Section {
        number: 1,
        key: "storm",
        title: "Lifecycle storm",
        json: json!({
            "workers": f.workers,
            "seconds": f.seconds,
            "lifecycles": f.truth.lifecycles,
            "lifecycles_per_second": f.lifecycles_per_s,
            "untraced_lifecycles_per_second": f.untraced_per_s,
            "untraced_before_lifecycles_per_second": f.untraced_before_per_s,
            "untraced_after_lifecycles_per_second": f.untraced_after_per_s,
            "share_of_untraced_percent": f.share_of_untraced,
            "clawtrace_cpu_us_per_record": f.cpu_us_per_record,
            "records": f.records,
            "records_per_second": f.records_per_s,
            "records_by_kind": f.records_by_kind,
            "records_lost": f.lost,
            "export_queue_drops": f.queue_drops,
            "undecodable": f.undecodable,
            "clawtrace_cpu_seconds": f.cpu,
            "caught_up": f.caught_up,
            "exact": f.exact,
            "ground_truth": truth_json(&f.truth),
            "clawtrace": {
                "created": r.created, "deleted": r.deleted, "execs": r.execs,
                "exited": r.exited, "failed": r.failed, "killed": r.killed,
                "other_exits": r.other_exits, "sigkills": r.signals,
            },
        }),
        markdown: md,
        checks: f.checks(),
    }
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

// ----- 3: per-probe kernel cost -----

pub fn probes(c: &ProbeCosts) -> Section {
    let mut md = format!(
        "`kernel.bpf_stats_enabled=1` (restored after); `run_time_ns / run_cnt` of each clawtrace \
         program (`bpftool -j prog show`; programs found through clawtrace's own file \
         descriptors), difference over the measured interval. *Storm*: during section 1, where \
         nearly every exec, exit and signal is in a followed container and writes a record (clawtrace runs nothing at a fork). \
         *Host*: then {:.0} s of processes outside any container ({} `busybox true` / `sleep` + \
         SIGKILL), the programs' filtering fast path. The statistics add two clock reads to every \
         run; the reference programs below show what this kernel charges for next to nothing.\n\n",
        c.host_seconds, c.host_processes
    );
    let shown = |runs: u64, a: f64| {
        if runs > 0 {
            format!("{a:.0}")
        } else {
            "–".into()
        }
    };
    let mut programs = Table::new([
        "program",
        "storm runs",
        "storm ns/run",
        "host runs",
        "host ns/run",
        "target",
    ]);
    for p in &c.programs {
        programs.row([
            p.name.clone(),
            p.storm_runs.to_string(),
            shown(p.storm_runs, p.storm_average_ns()),
            p.host_runs.to_string(),
            shown(p.host_runs, p.host_average_ns()),
            if p.hot.is_some() {
                hot_probe_target()
            } else {
                String::new()
            },
        ]);
    }
    md.push_str(&programs.markdown());
    let _ = writeln!(
        md,
        "\nProgram time per container lifecycle in the storm (every program's run time over \
         the lifecycles): {:.0} ns.",
        c.ns_per_lifecycle
    );
    if !c.silent.is_empty() {
        let _ = writeln!(md, "\nNot run in either interval: {}.", c.silent.join(", "));
    }
    let _ = write!(
        md,
        "\nReference programs (bpftrace, same interval as *host*):\n\n"
    );
    let mut references = Table::new(["reference", "runs", "ns/run"]);
    for r in &c.references {
        references.row([
            r.what.clone(),
            r.runs.to_string(),
            format!("{:.0}", average(r.runs, r.ns)),
        ]);
    }
    md.push_str(&references.markdown());
    let _ = write!(
        md,
        "\nWriting records, side by side: {:.0} s more of the storm with bpftrace also attached, \
         running a script that prints one line per fork, exit and signal (`printf`, bpftrace's \
         usual way to report an event). Both tools' programs, same interval:\n\n",
        c.side_by_side_seconds
    );
    let mut side_by_side = Table::new([
        "hook",
        "clawtrace runs",
        "clawtrace ns/run",
        "bpftrace `printf` runs",
        "bpftrace ns/run",
    ]);
    for s in &c.side_by_side {
        side_by_side.row([
            s.what.into(),
            s.clawtrace_runs.to_string(),
            if s.clawtrace_runs > 0 {
                format!("{:.0}", average(s.clawtrace_runs, s.clawtrace_ns))
            } else {
                "– (no program)".to_string()
            },
            s.bpftrace_runs.to_string(),
            format!("{:.0}", average(s.bpftrace_runs, s.bpftrace_ns)),
        ]);
    }
    md.push_str(&side_by_side.markdown());
    Section {
        number: 3,
        key: "probes",
        title: "Per-probe kernel cost",
        json: json!({
            "host_seconds": c.host_seconds,
            "host_processes": c.host_processes,
            "programs": c.programs.iter().map(|p| json!({
                "program": p.name,
                "storm_runs": p.storm_runs, "storm_run_time_ns": p.storm_ns,
                "storm_average_ns": p.storm_average_ns(),
                "host_runs": p.host_runs, "host_run_time_ns": p.host_ns,
                "host_average_ns": p.host_average_ns(),
            })).collect::<Vec<_>>(),
            "references": c.references.iter().map(|r| json!({
                "reference": r.what, "runs": r.runs, "run_time_ns": r.ns,
                "average_ns": average(r.runs, r.ns),
            })).collect::<Vec<_>>(),
            "storm_side_by_side": {
                "seconds": c.side_by_side_seconds,
                "hooks": c.side_by_side.iter().map(|s| json!({
                    "hook": s.what,
                    "clawtrace_runs": s.clawtrace_runs,
                    "clawtrace_average_ns": average(s.clawtrace_runs, s.clawtrace_ns),
                    "bpftrace_printf_runs": s.bpftrace_runs,
                    "bpftrace_printf_average_ns": average(s.bpftrace_runs, s.bpftrace_ns),
                })).collect::<Vec<_>>(),
            },
        }),
        markdown: md,
        checks: c.checks(),
    }
}

// ----- 2: workload overhead -----

pub fn overhead(f: &OverheadFigures) -> Section {
    let settle = median(&f.settled);
    let mut md = format!(
        "Each run: {} workers × {} lifecycles (the storm's mix: exit, SIGKILL, fork+exit; \
         {} containers, wall time measured). Tracers are started before the run and \
         stopped after it, once attached; {} rounds of none, clawtrace, clawtrace with \
         `--output json`, clawtrace with `--trace-mount-syscalls`, bpftrace, and exitsnoop + \
         sigsnoop after one discarded warm-up run, each round starting one configuration \
         further along and every other cycle of six rounds in reverse order (so \
         no configuration always runs first, or after the same one). Before each run, and \
         again once its tracer is attached, the bench waits for a quiet machine (at most 5 % \
         busy over 300 ms; median wait {settle:.1} s): a stopped tracer's programs and maps \
         are freed by kernel workers after it exits. clawtrace: the release \
         build with its default flags (text output to a file: one line per event an operator \
         acts on), `/metrics` on; the third configuration prints every event as a JSON line \
         (as the peers print every event), the fourth adds `--trace-mount-syscalls` to the \
         default flags, which attaches the mount system calls' tracepoints (the default \
         attaches no syscall tracepoint). \
         bpftrace: `target/bench/peer.bt`, clawtrace's five tracepoints and two more \
         that follow tasks into the cgroups, cgroups and tasks followed in maps keyed by id \
         and pid, last signal and sender kept per process, \
         exit status read from the task, one line printed per event to a file. \
         exitsnoop + sigsnoop: Debian's libbpf-tools (CO-RE, ring or perf buffer, one line per \
         process exit and per signal, node-wide), both running, output to a file. Slowdown: the \
         median over rounds of each run against the untraced run of its round (this VM's speed \
         drifts over a minute); \"median against median\" compares medians across rounds instead. \
         Tracer \
         CPU: the tracer's own process (user space: for clawtrace its tracing loop and export \
         worker; its programs run in the workload's tasks and are not in it), as a share of \
         the machine's time over the run ({} cores × the run's wall time), median over \
         rounds. Spread: the middle half of the per-round slowdowns (how much one round \
         moves).\n\n",
        f.workers, f.lifecycles_per_worker, f.lifecycles, f.rounds, f.cores,
    );
    // The untraced run is no tracer's: no slowdown, spread or CPU of its own.
    let traced = |c: &Traced, text: String| {
        if *c == Traced::Nothing {
            "–".to_string()
        } else {
            text
        }
    };
    let mut runs = Table::new([
        "tracer",
        "runs (s)",
        "median (s)",
        "lifecycles/s",
        "slowdown",
        "spread",
        "median against median",
        "tracer CPU",
    ]);
    for c in &f.configs {
        let (low, high) = c.hinges;
        runs.row([
            c.traced.name().into(),
            c.runs
                .iter()
                .map(|t| format!("{t:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            format!("{:.3}", c.median),
            format!("{:.0}", c.rate),
            traced(&c.traced, format!("{:+.1} %", c.slowdown)),
            traced(&c.traced, format!("{low:+.1} … {high:+.1} %")),
            traced(&c.traced, format!("{:+.1} %", c.of_medians)),
            c.cpu_median
                .map_or("–".to_string(), |cpu| format!("{cpu:.2} %")),
        ]);
    }
    md.push_str(&runs.markdown());
    let _ = write!(
        md,
        "\nAfter each run's workload, with the tracer still attached, {SYSCALL_LOOP} `getppid(2)` \
         calls in a loop: what a tracer adds to every system call of every task on the node \
         (syscall tracepoints, which clawtrace attaches only with `--trace-mount-syscalls`, put every \
         system call on the kernel's traced path).\n\n"
    );
    let mut syscalls = Table::new(["tracer", "ns per system call (median)", "added"]);
    for c in &f.configs {
        syscalls.row([
            c.traced.name().into(),
            format!("{:.0}", c.syscall_median),
            traced(&c.traced, format!("{:+.0} ns", c.syscall_added)),
        ]);
    }
    md.push_str(&syscalls.markdown());
    if f.lost > 0 {
        let _ = writeln!(md, "\nclawtrace lost {} record(s) over these runs.", f.lost);
    }
    let nothing = |c: &Traced, v: Value| {
        if *c == Traced::Nothing {
            Value::Null
        } else {
            v
        }
    };
    Section {
        number: 2,
        key: "overhead",
        title: "Workload overhead",
        json: json!({
            "workers": f.workers,
            "lifecycles_per_run": f.lifecycles,
            "rounds": f.rounds,
            "settle_seconds_median": settle,
            "settle_seconds_max": f.settled.iter().copied().fold(0.0, f64::max),
            "configs": f.configs.iter().map(|c| json!({
                "tracer": c.traced.name(),
                "runs_seconds": c.runs,
                "median_seconds": c.median,
                "lifecycles_per_second": c.rate,
                "slowdown_percent": nothing(&c.traced, json!(c.slowdown)),
                "paired_slowdowns_percent": c.paired,
                "paired_slowdowns_middle_half_percent": [c.hinges.0, c.hinges.1],
                "slowdown_of_medians_percent": nothing(&c.traced, json!(c.of_medians)),
                "syscall_ns_runs": c.syscall_runs,
                "syscall_ns_median": c.syscall_median,
                "tracer_cpu_percent_of_machine_runs": c.cpu_runs,
                "tracer_cpu_percent_of_machine_median": c.cpu_median,
            })).collect::<Vec<_>>(),
            "clawtrace_slowdown_percent": f.slowdown(Traced::Clawtrace),
            "clawtrace_json_slowdown_percent": f.slowdown(Traced::ClawtraceJson),
            "clawtrace_mount_syscalls_slowdown_percent": f.slowdown(Traced::ClawtraceSyscalls),
            "bpftrace_slowdown_percent": f.slowdown(Traced::Bpftrace),
            "snoops_slowdown_percent": f.slowdown(Traced::Snoops),
            "clawtrace_records_lost": f.lost,
            "syscall_ns_added": {
                "clawtrace": f.syscall_added(Traced::Clawtrace),
                "clawtrace_json": f.syscall_added(Traced::ClawtraceJson),
                "clawtrace_mount_syscalls": f.syscall_added(Traced::ClawtraceSyscalls),
                "bpftrace": f.syscall_added(Traced::Bpftrace),
                "snoops": f.syscall_added(Traced::Snoops),
            },
        }),
        markdown: md,
        checks: f.checks(),
    }
}

// ----- 5: memory -----

pub fn memory(f: &MemoryFigures) -> Section {
    let mut md = format!(
        "The real clawtrace (release, `--output json` to /dev/null, `/metrics` on, default \
         `--label-max-values 256`) traced {} real containers kept alive (`busybox sleep` in its \
         own cgroup v2 sub-cgroup) while {} more came and went; each container's init carried \
         a distinct hostile `AGENT_NAME` (quotes and braces, newlines and `# TYPE` lines, \
         invalid UTF-8 and escape sequences, 4 KiB names, bidi and emoji, `_overflow…`, \
         `../../`), read by the kernel side at exec and put through the label guard: {} \
         distinct names offered in all. VmHWM and VmRSS from /proc/PID/status.\n\n",
        f.live_containers, f.churned, f.offered
    );
    let mut figures = Table::new(["figure", "value"]);
    figures
        .row([
            "peak RSS over the whole run (VmHWM, start-up included)".into(),
            format!("**{:.1} MiB**", f.peak_mib),
        ])
        .row([
            "RSS idle after start / start-up peak".into(),
            format!("{:.1} MiB / {:.1} MiB", mib(f.idle_rss), mib(f.idle_hwm)),
        ])
        .row([
            "of which the ring buffer's mapping (`--ring-buffer-size` 8 MiB, data mapped twice)"
                .into(),
            format!("{:.1} MiB", mib(f.ring_rss)),
        ])
        .row([
            format!(
                "peak RSS under load (VmHWM reset after start), {} live + {} names",
                f.live_containers, f.offered
            ),
            format!("{:.1} MiB", mib(f.load_peak)),
        ])
        .row([
            "RSS at the peak of live containers".into(),
            format!("{:.1} MiB", mib(f.peak_rss)),
        ])
        .row([
            "RSS after every container was deleted".into(),
            format!("{:.1} MiB", mib(f.final_rss)),
        ])
        .row([
            "live containers in `containers_live` at the peak".into(),
            format!("{:.0}", f.live_gauge),
        ])
        .row([
            "agent_name values exported at the peak".into(),
            f.label_values.to_string(),
        ])
        .row([
            "containers labelled `_overflow`".into(),
            format!("{:.0}", f.overflow),
        ])
        .row([
            "containers created / deleted (ground truth)".into(),
            format!("{} / {}", f.created, f.deleted),
        ])
        .row([
            "clawtrace caught up (creates / deletes counted)".into(),
            format!("{} / {}", f.caught_up_creates, f.caught_up_deletes),
        ])
        .row([
            "records lost / export-queue drops".into(),
            format!("{} / {:.0}", f.lost, f.queue_drops),
        ])
        .row([
            "wall time: live containers made / all".into(),
            format!("{:.1} s / {:.1} s", f.live_seconds, f.seconds),
        ])
        .row(["clawtrace CPU time".into(), format!("{:.1} s", f.cpu)]);
    md.push_str(&figures.markdown());
    Section {
        number: 5,
        key: "memory",
        title: "Memory",
        json: json!({
            "live_containers": f.live_containers,
            "churned_containers": f.churned,
            "hostile_names_offered": f.offered,
            "idle_rss_kib": f.idle_rss,
            "idle_hwm_kib": f.idle_hwm,
            "peak_hwm_kib": f.peak_hwm,
            "rss_at_peak_kib": f.peak_rss,
            "final_rss_kib": f.final_rss,
            "final_hwm_kib": f.final_hwm,
            "peak_rss_mib": f.peak_mib,
            "load_peak_hwm_kib": f.load_peak,
            "ring_buffer_rss_kib": f.ring_rss,
            "live_gauge_at_peak": f.live_gauge,
            "label_values_at_peak": f.label_values,
            "label_overflow_total": f.overflow,
            "caught_up_creates": f.caught_up_creates,
            "caught_up_deletes": f.caught_up_deletes,
            "records_lost": f.lost,
            "export_queue_drops": f.queue_drops,
            "seconds": f.seconds,
            "clawtrace_cpu_seconds": f.cpu,
        }),
        markdown: md,
        checks: f.checks(),
    }
}

// ----- 4: user-space pipeline -----

pub fn pipeline(f: &PipelineFigures) -> Section {
    let mut md = String::from(
        "`cargo bench -p tracer-user --bench pipeline` (criterion, pinned to one CPU): a \
         recorded stream of 2,000 Docker-layout container lifecycles (mkdir, attach, agent-name \
         record, exec, child exec/exit or SIGTERM+SIGKILL, exit with the kernel's signal \
         memory, rmdir; ~100 alive at once, 16 agent names) as wire bytes, replayed through \
         `Record::decode`, the lifecycle `Model`, and the export worker itself driven in the same \
         thread (agent labels from the init's variable, every metric, `clawtrace_events_total` \
         per 128-record poll; no OTLP). Mean time per pass over the stream.\n\n",
    );
    let mut benches = Table::new(["benchmark", "records/pass", "mean per pass", "records/s"]);
    for b in &f.benches {
        benches.row([
            b.what.into(),
            b.records.to_string(),
            format!("{:.2} ms", b.mean_ns / 1e6),
            if b.id == PIPELINE_HEADLINE {
                format!("**{:.0}**", b.records_per_s)
            } else {
                format!("{:.0}", b.records_per_s)
            },
        ]);
    }
    md.push_str(&benches.markdown());
    let _ = writeln!(md, "\nFull criterion output: `target/bench/criterion.log`.");
    Section {
        number: 4,
        key: "pipeline",
        title: "User-space pipeline",
        json: json!({
            "benchmarks": f.benches.iter().map(|b| json!({
                "benchmark": b.id, "what": b.what, "records": b.records,
                "mean_ns": b.mean_ns, "records_per_second": b.records_per_s,
            })).collect::<Vec<_>>(),
        }),
        markdown: md,
        checks: f.checks(),
    }
}

// ----- the report and the summary -----

/// How busy the machine was, in a line.
pub fn load_text(q: &Load) -> String {
    let busiest: Vec<String> = q
        .busiest
        .iter()
        .map(|(comm, percent)| format!("{comm} {percent:.0} %"))
        .collect();
    format!(
        "CPU {:.0} % busy{}, {} tracing program(s) of other tracers listed by bpftool{}",
        q.cpu_busy_percent,
        if busiest.is_empty() {
            String::new()
        } else {
            format!(" ({})", busiest.join(", "))
        },
        q.tracing_programs,
        if q.quiet {
            ""
        } else {
            " — NOT QUIET: other load skews these figures"
        }
    )
}

fn load_json(q: &Load) -> Value {
    json!({
        "cpu_busy_percent": q.cpu_busy_percent,
        "busiest": q.busiest.iter().map(|(c, p)| json!({"comm": c, "cpu_percent": p})).collect::<Vec<_>>(),
        "tracing_programs_listed": q.tracing_programs,
        "quiet": q.quiet,
    })
}

fn check_json(c: &Check) -> Value {
    json!({
        "section": c.section,
        "figure": c.figure,
        "value": c.value,
        "target": c.target,
        "pass": c.pass,
    })
}

/// Every section's checks, in section order, as a table.
fn summary_table(checks: &[&Check], last: &str) -> Table {
    let mut table = Table::new(["section", "figure", "measured", "target", last]);
    for c in checks {
        table.row([
            c.section.into(),
            c.figure.clone(),
            c.value.clone(),
            c.target.clone(),
            c.verdict().into(),
        ]);
    }
    table
}

/// Writes `report.json` and `report.md` into the bench's output folder.
pub fn write(
    env: &Env,
    command: &str,
    duration: Duration,
    load: &[(&str, Load)],
    sections: &[Section],
    errors: &[String],
) -> Result<()> {
    let m = machine::machine();
    let mut machine = json!({
        "kernel": m.kernel,
        "cores": m.cores,
        "cpu": m.cpu,
        "memory_gib": m.memory_gib,
        "bpftrace": m.bpftrace,
        "bpftool": m.bpftool,
        "commit": m.commit,
    });
    machine["load"] = load
        .iter()
        .map(|(when, q)| ((*when).to_string(), load_json(q)))
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
        "date": machine::utc_now(),
        "duration_seconds": duration.as_secs_f64(),
        "quick": env.options.quick,
        "machine": machine,
        "targets": checks.iter().map(|c| check_json(c)).collect::<Vec<_>>(),
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
        let _ = writeln!(md, "- load {when} the run: {}", load_text(q));
    }
    let _ = write!(
        md,
        "\n## Summary\n\n{} of {} targets met.\n\n{}",
        checks.iter().filter(|c| c.pass == Some(true)).count(),
        checks.iter().filter(|c| c.pass.is_some()).count(),
        summary_table(&checks, "").markdown()
    );
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

/// Prints every check, the errors, and where the report is.
pub fn print_summary(sections: &[Section], errors: &[String], out: &Path, duration: Duration) {
    let checks: Vec<&Check> = sections.iter().flat_map(|s| &s.checks).collect();
    println!();
    // The measured column is aligned right.
    print!("{}", summary_table(&checks, "result").text(&[2]));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(["what", "value", ""]);
        t.row(["lifecycles".into(), "12".into(), "pass".into()])
            .row(["µs".into(), "3456".into(), "".into()]);
        t
    }

    #[test]
    fn markdown_tables_keep_empty_cells_apart() {
        assert_eq!(
            sample().markdown(),
            "| what | value | |\n|---|---|---|\n| lifecycles | 12 | pass |\n| µs | 3456 |  |\n"
        );
    }

    #[test]
    fn text_tables_align_to_their_rows() {
        // Widths come from the rows, by characters; the last column is not padded.
        assert_eq!(
            sample().text(&[1]),
            "what        value  \nlifecycles    12  pass\nµs          3456  \n"
        );
    }
}
