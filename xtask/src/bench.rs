//! `cargo xtask bench`: clawtrace's performance, measured on this machine, written to
//! `target/bench/report.md` and `target/bench/report.json`.
//!
//! 1. **Lifecycle storm**: parallel workers run real container lifecycles (cgroup v2 mkdir, a
//!    process placed in it, exit or SIGKILL, rmdir) flat out for a fixed time while the release
//!    clawtrace traces them; lifecycles/s, records/s, records lost, and clawtrace's counts (from
//!    its JSON output) against the ground truth the workers kept. The same storm untraced, as
//!    long, just before the tracer starts and just after it stops gives the workers' own rate,
//!    read at the traced run's time on the line through the two (the machine's drift cancels).
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
//!
//! Layout: this file holds the options, the sections and the run loop. `measure` (one module
//! per section) measures and returns typed figures with their [`measure::Check`]s against the
//! targets; `report` renders them (every markdown table and the console summary through one
//! table writer) into `report.md`, `report.json` and the summary; `machine` tells how quiet
//! the machine is; `workload`, `tracer` and `probes` are the instruments.

mod machine;
mod measure;
mod probes;
mod report;
mod tracer;
mod workload;

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::Ctx;
use report::Section;
use workload::{Spec, Until};

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

/// How one section is measured and rendered.
type SectionFn = fn(&Env, &Ctx) -> Result<Vec<Section>>;

/// The sections in the order they run: the part `--only` picks, the name the console shows,
/// and what runs. The storm's run also gives section 3, the per-probe cost.
const SECTIONS: [(Part, &str, SectionFn); 4] = [
    (Part::Storm, "storm and per-probe cost", |env, _| {
        let (storm, probes) = measure::storm::measure(env)?;
        Ok(vec![report::storm(&storm), report::probes(&probes)])
    }),
    (Part::Overhead, "overhead", |env, _| {
        Ok(vec![report::overhead(&measure::overhead::measure(env)?)])
    }),
    (Part::Memory, "memory", |env, _| {
        Ok(vec![report::memory(&measure::memory::measure(env)?)])
    }),
    (Part::Pipeline, "user-space pipeline", |env, ctx| {
        Ok(vec![report::pipeline(&measure::pipeline::measure(
            env, ctx,
        )?)])
    }),
];

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

    let load_before = machine::quietness();
    println!("bench: before: {}", report::load_text(&load_before));
    let mut sections = Vec::new();
    let mut errors = Vec::new();
    for (part, name, step) in SECTIONS {
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
    let load_after = machine::quietness();
    println!("bench: after: {}", report::load_text(&load_after));
    let duration = started.elapsed();
    let load = [("before", load_before), ("after", load_after)];
    report::write(&env, &command, duration, &load, &sections, &errors)?;
    report::print_summary(&sections, &errors, &out, duration);
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("bench: {} section(s) failed (see above)", errors.len())
    }
}

// ----- paths -----

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
