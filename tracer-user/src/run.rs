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

use anyhow::{Context as _, Result};
use tracer_common::{Kind, Miss};

use crate::{
    defaults,
    enrich::{
        agent::{AgentConfig, AgentSource},
        labels::LabelPolicy,
    },
    model::{containers::Recognizer, Event, Model, ModelConfig, Output},
    sinks::{
        audit::AuditLog,
        export::{ExportConfig, Exporter},
        otlp::OtlpConfig,
        terminal::{self, Format, Printer},
    },
    source::{
        decode::KindCounts,
        loader::{Missed, Tracer, TracerConfig},
        scan,
    },
    sys,
};

/// Everything `clawtrace run` is told.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub format: Format,
    pub patterns: Vec<String>,
    pub runc_root: Option<PathBuf>,
    pub linger_after: Duration,
    pub ring_buffer_bytes: u32,
    pub read_only_volumes: Vec<String>,
    pub gpu_devices: Vec<tracer_common::DeviceRange>,
    /// Trace mount system calls (mount durations, `mount` events).
    pub trace_mount_syscalls: bool,
    /// Attach the cgroup device hook (GPU device accesses).
    pub trace_devices: bool,
    pub gpu_poll: Duration,
    pub prometheus_listen: Option<std::net::SocketAddr>,
    pub otlp: Option<OtlpConfig>,
    pub audit: Option<AuditSettings>,
    pub agent: AgentConfig,
    pub labels: LabelPolicy,
}

/// Where and how the audit log is written.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: usize,
}

impl RunOptions {
    /// Options with every sink off, for a terminal-only run.
    pub fn terminal(format: Format, patterns: Vec<String>) -> RunOptions {
        RunOptions {
            format,
            patterns,
            runc_root: None,
            linger_after: defaults::LINGER_AFTER_VALUE,
            ring_buffer_bytes: defaults::RING_BUFFER_BYTES,
            read_only_volumes: Vec::new(),
            gpu_devices: crate::source::devices::default_gpu_devices(),
            trace_mount_syscalls: false,
            trace_devices: true,
            gpu_poll: defaults::GPU_POLL_VALUE,
            prometheus_listen: None,
            otlp: None,
            audit: None,
            agent: AgentConfig::default(),
            labels: LabelPolicy::default(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub events: u64,
    /// What the probes missed, as last reported.
    pub missed: Missed,
    pub decode_errors: u64,
    pub audit_errors: u64,
}

impl RunSummary {
    /// Records lost to a full ring buffer, all probes together.
    pub fn records_lost(&self) -> u64 {
        Kind::ALL
            .iter()
            .map(|&kind| self.missed.get(kind, Miss::RingFull))
            .sum()
    }
}

const POLL: Duration = Duration::from_millis(100);
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Runs until `stop` is set; writes events to `out`.
pub fn run(options: &RunOptions, stop: &Arc<AtomicBool>, out: impl Write) -> Result<RunSummary> {
    let recognizer = Recognizer::new(&options.patterns, options.runc_root.clone())?;
    // Everything that can fail on bad settings fails before anything is loaded.
    let listener = match options.prometheus_listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("--prometheus-listen {addr}: cannot listen"))?,
        ),
        None => None,
    };
    let mut audit = match &options.audit {
        Some(a) => Some(
            AuditLog::open(&a.path, a.max_bytes, a.keep)
                .with_context(|| format!("--audit-log {}", a.path.display()))?,
        ),
        None => None,
    };
    let env_source = options.agent.sources.contains(&AgentSource::Env);
    let mut tracer = Tracer::start(&TracerConfig {
        ring_buffer_bytes: options.ring_buffer_bytes,
        init_env_var: env_source.then(|| options.agent.env_var.clone()),
        devices: options.gpu_devices.clone(),
        trace_mount_syscalls: options.trace_mount_syscalls,
        trace_devices: options.trace_devices,
    })?;
    let devices_v1_controller = sys::cgroup_v1_devices_mounted();
    if devices_v1_controller && options.trace_devices {
        log::info!(
            "a cgroup v1 devices hierarchy is mounted: it decides device accesses after the \
             device programs, so a GPU access they allow is reported undecided"
        );
    }
    let clock = sys::WallClock::now();
    let mut printer = Printer::new(out, options.format, clock);
    let mut model = Model::new(
        recognizer,
        ModelConfig {
            // A duration past u64 nanoseconds (585 years) means never.
            linger_after_ns: u64::try_from(options.linger_after.as_nanos()).unwrap_or(u64::MAX),
            read_only_volumes: options
                .read_only_volumes
                .iter()
                .map(|p| crate::model::volumes::normalize(p))
                .collect(),
            host_ns_level: crate::sys::pid_ns_level(),
            devices_v1_controller,
            mount_syscalls: options.trace_mount_syscalls,
        },
    );
    let mut summary = RunSummary::default();
    let mut step = Output::default();
    let mut device_names = crate::source::devices::DeviceNames::new(std::path::Path::new("/dev"));

    let mut adopted_inits = Vec::new();
    // The programs are attached before the scan, so nothing created meanwhile is missed; the
    // model ignores a container it already knows.
    if let Some(root) = sys::cgroup2_mount() {
        let found = scan::scan(&root, model.recognizer());
        let now = sys::monotonic_ns();
        for container in found.containers {
            for &id in std::iter::once(&container.cgroup_id).chain(&container.sub_cgroups) {
                tracer.track_cgroup(id)?;
            }
            if let Some(init) = container.init {
                adopted_inits.push((container.cgroup_id, init));
            }
            model.adopt(container, now, &mut step);
        }
    } else {
        log::warn!("no cgroup v2 mount found: containers already running are not followed");
    }

    // Attached and scanned: from here on only what the sinks need is kept. Capabilities are per
    // thread, so this comes before the export threads start.
    sys::drop_privileges()?;
    let mut mounts = crate::source::mountinfo::MountWatcher::new();
    for (cgroup_id, init) in adopted_inits {
        mounts.watch_running(cgroup_id, init);
    }
    let exporter = if listener.is_some() || options.otlp.is_some() {
        Some(Exporter::start(
            ExportConfig {
                prometheus: listener,
                otlp: options.otlp.clone(),
                agent: options.agent.clone(),
                labels: options.labels.clone(),
                queue: defaults::EXPORT_QUEUE,
                settle_after: defaults::SETTLE_AFTER,
                gpu_poll: options.gpu_poll,
            },
            clock,
        )?)
    } else {
        None
    };
    for (feature, why) in &tracer.features().missing {
        log::info!(
            "kernel feature {} ({}) absent: {why}; instead {}",
            feature.key,
            feature.name,
            feature.without
        );
    }
    let fallbacks = tracer.features().fallbacks();
    log::info!(
        "tracing: {} programs attached, {} running container(s) found, kernel fallbacks: {}",
        tracer.attached(),
        model.containers().count(),
        if fallbacks.is_empty() {
            "none".to_string()
        } else {
            fallbacks.join(",")
        }
    );
    let mut last_housekeeping = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut counts = KindCounts::default();
        tracer.poll_each(if stopping { Duration::ZERO } else { POLL }, |record| {
            counts.add(&record);
            if let crate::source::decode::Record::DeviceAccess(r) = &record {
                if !model.knows_device(r.major, r.minor) {
                    if let Some(path) = device_names.lookup(r.major, r.minor) {
                        model.name_device(r.major, r.minor, path);
                    }
                }
            }
            model.handle(&record, &mut step);
        })?;
        if let Some(exporter) = &exporter {
            for (kind, n) in counts.iter() {
                exporter.records(kind.name(), n);
            }
        }
        if stopping || last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            model.tick(sys::monotonic_ns(), &mut step);
            report_losses(&tracer, &mut summary, exporter.as_ref());
        }
        for id in step.untrack.drain(..) {
            tracer.untrack_cgroup(id);
        }
        // An exec of the container's init: its mount table is as the runtime made it (a
        // wrapper such as `unshare -m` may have moved it to a namespace of its own since the
        // first). A container's end: its table is no longer followed.
        for event in &step.events {
            match &event.event {
                Event::ProcessExec(e) if e.is_container_init => {
                    mounts.watch(e.container.cgroup_id, e.pid, e.mnt_ns)
                }
                Event::ContainerDelete(d) => mounts.unwatch(d.container.cgroup_id),
                _ => {}
            }
        }
        for table in mounts.tables() {
            model.on_mount_table(table.cgroup_id, table.binds, table.ts_ns, &mut step);
        }
        for event in &step.events {
            printer.print(event)?;
            let audited = matches!(
                event.event,
                Event::ProcessExit(_) | Event::VolumeViolation(_)
            );
            if let (Some(log), true) = (&mut audit, audited) {
                if let Err(err) = log.append(&terminal::json(event, &clock)) {
                    summary.audit_errors += 1;
                    if let Some(exporter) = &exporter {
                        exporter
                            .metrics()
                            .export_error(crate::sinks::metrics::sink::AUDIT_LOG);
                    }
                    if summary.audit_errors == 1 || summary.audit_errors.is_power_of_two() {
                        log::warn!(
                            "audit log write failed ({} so far): {err}",
                            summary.audit_errors
                        );
                    }
                }
            }
            summary.events += 1;
        }
        match &exporter {
            // The turn's events go to the worker as they are, in one hand-over. The next turn's
            // vector starts with room for half as many again: growing it event by event
            // reallocates and moves every event so far, and turns vary.
            Some(exporter) => {
                let n = step.events.len();
                let next = Vec::with_capacity(n + n / 2);
                exporter.events(std::mem::replace(&mut step.events, next));
            }
            None => step.events.clear(),
        }
        printer.flush()?;
        if stopping {
            break;
        }
    }
    summary.decode_errors = tracer.decode_errors();
    // Detach first, then flush the sinks.
    drop(tracer);
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    Ok(summary)
}

/// Logs what each probe missed since the last report; never silent.
fn report_losses(tracer: &Tracer, summary: &mut RunSummary, exporter: Option<&Exporter>) {
    let Ok(missed) = tracer.missed() else {
        return;
    };
    for kind in Kind::ALL {
        for miss in Miss::ALL {
            let (now, before) = (missed.get(kind, miss), summary.missed.get(kind, miss));
            if now <= before {
                continue;
            }
            let (probe, new) = (kind.probe(), now - before);
            match miss {
                Miss::RingFull => {
                    log::warn!(
                        "ring buffer full: {new} record(s) lost in probe {probe} ({now} in total); \
                         raise --ring-buffer-size"
                    );
                    if let Some(exporter) = exporter {
                        exporter.lost(probe, new);
                    }
                }
                Miss::TableFull if kind == Kind::CgroupMkdir => log::warn!(
                    "{now} cgroup(s) could not be followed: the kernel's cgroup table is full"
                ),
                Miss::TableFull => log::warn!(
                    "{new} {} missed in probe {probe} ({now} in total): its table is full",
                    kind.name()
                ),
            }
        }
    }
    summary.missed = missed;
}
