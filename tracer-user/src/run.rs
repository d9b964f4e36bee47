//! `clawtrace run`: load the programs, find the containers already running, then turn records
//! into events until told to stop.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use tracer_common::probe;

use crate::{
    containers::Recognizer,
    loader::{Tracer, TracerConfig},
    model::{Model, ModelConfig, Output},
    output::{Format, Printer},
    scan, sys,
};

/// Everything `clawtrace run` is told.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub format: Format,
    pub patterns: Vec<String>,
    pub runc_root: Option<PathBuf>,
    pub linger_after: Duration,
    pub ring_buffer_bytes: u32,
}

/// How a run ended.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub events: u64,
    pub lost: [u64; probe::COUNT as usize],
    pub decode_errors: u64,
    pub untracked_cgroups: u64,
}

const POLL: Duration = Duration::from_millis(100);
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Runs until `stop` is set; writes events to `out`.
pub fn run(options: &RunOptions, stop: &Arc<AtomicBool>, out: impl Write) -> Result<RunSummary> {
    let recognizer = Recognizer::new(&options.patterns, options.runc_root.clone())?;
    let mut tracer = Tracer::start(&TracerConfig {
        ring_buffer_bytes: options.ring_buffer_bytes,
    })?;
    let clock = sys::WallClock::now();
    let mut printer = Printer::new(out, options.format, clock);
    let mut model = Model::new(
        recognizer,
        ModelConfig {
            linger_after_ns: options.linger_after.as_nanos() as u64,
        },
    );
    let mut summary = RunSummary::default();
    let mut step = Output::default();

    // The programs are attached before the scan, so nothing created meanwhile is missed; the
    // model ignores a container it already knows.
    if let Some(root) = sys::cgroup2_mount() {
        let found = scan::scan(&root, model.recognizer());
        for &(tid, tgid, cgroup_id) in &found.threads {
            tracer.track_task(tid, tgid, cgroup_id)?;
        }
        let now = sys::monotonic_ns();
        for container in found.containers {
            tracer.track_cgroup(container.cgroup_id)?;
            for &sub in &container.sub_cgroups {
                tracer.track_cgroup(sub)?;
            }
            model.adopt(container, now, &mut step);
        }
    } else {
        log::warn!("no cgroup v2 mount found: containers already running are not followed");
    }

    log::info!(
        "tracing: {} programs attached, {} running container(s) found",
        crate::tracepoints::HOOKS.len(),
        model.containers().count()
    );
    let mut records = Vec::new();
    let mut last_housekeeping = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        records.clear();
        tracer.poll(if stopping { Duration::ZERO } else { POLL }, &mut records)?;
        for record in &records {
            model.handle(record, &mut step);
        }
        if stopping || last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            model.tick(sys::monotonic_ns(), &mut step);
            report_losses(&tracer, &mut summary);
        }
        for id in step.untrack.drain(..) {
            tracer.untrack_cgroup(id);
        }
        for event in step.events.drain(..) {
            printer.print(&event)?;
            summary.events += 1;
        }
        printer.flush()?;
        if stopping {
            break;
        }
    }
    summary.decode_errors = tracer.decode_errors();
    Ok(summary)
}

/// Logs each probe's losses since the last report; never silent.
fn report_losses(tracer: &Tracer, summary: &mut RunSummary) {
    let Ok(lost) = tracer.lost_records() else {
        return;
    };
    for (i, (&now, before)) in lost.iter().zip(summary.lost.iter_mut()).enumerate() {
        if now > *before {
            log::warn!(
                "ring buffer full: {} record(s) lost in probe {} ({} in total); raise --ring-buffer-size",
                now - *before,
                probe::NAMES[i],
                now
            );
            *before = now;
        }
    }
    if let Ok(n) = tracer.untracked_cgroups() {
        if n > summary.untracked_cgroups {
            log::warn!("{n} cgroup(s) could not be followed: the kernel's cgroup table is full");
            summary.untracked_cgroups = n;
        }
    }
}
