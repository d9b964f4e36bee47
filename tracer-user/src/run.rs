//! `clawtrace run`: the composition of the data path. Load the programs, find the containers
//! already running, then carry records one way until told to stop:
//! source → model → enrich (in the export worker) → sinks.

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
    model::{containers::Recognizer, Event, Model, ModelConfig, Note, Output},
    sinks::{
        export::{ExportConfig, Watcher},
        otlp::OtlpConfig,
        terminal::{Format, TextStyle},
        Sinks,
    },
    source::{
        decode::{KindCounts, Record},
        loader::{Missed, Tracer, TracerConfig},
        pods::PodNames,
        scan, HostFacts, RecordSource,
    },
    sys,
};

/// Everything `clawtrace run` is told.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub format: Format,
    /// Which text lines, and whether in colour.
    pub text: TextStyle,
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
    /// Sees every event with its agent_name (`clawtrace top`); starts the export worker.
    pub watch: Option<Watch>,
}

/// A [`Watcher`] of the run's events.
#[derive(Clone)]
pub struct Watch(pub Arc<dyn Watcher>);

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
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
            text: TextStyle::default(),
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
            watch: None,
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
    // Everything that can fail on bad settings fails before anything is loaded.
    let recognizer = Recognizer::new(&options.patterns, options.runc_root.clone())?;
    let listener = match options.prometheus_listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("--prometheus-listen {addr}: cannot listen"))?,
        ),
        None => None,
    };
    let clock = sys::WallClock::now();
    let audit = options.audit.as_ref();
    let audit = audit.map(|a| (a.path.as_path(), a.max_bytes, a.keep));
    let mut sinks = Sinks::open(out, options.format, options.text, clock, audit)?;
    let mut tracer = Tracer::start(&options.tracer_config())?;
    let mut model = Model::new(recognizer, options.model_config());
    let mut facts = HostFacts::new();
    facts.pods = PodNames::new(
        options.agent.containerd_root.clone(),
        options.agent.crio_root.clone(),
    );
    let mut step = Output::default();
    adopt_running(&mut tracer, &mut model, &mut facts, &mut step)?;
    // Attached and scanned: from here on only what the sinks need is kept. Capabilities are per
    // thread, so this comes before the export threads start.
    sys::drop_privileges()?;
    if listener.is_some() || options.otlp.is_some() || options.watch.is_some() {
        sinks.start_export(options.export_config(listener))?;
    }
    log_start(&tracer, &model);
    let summary = drive(
        &mut tracer,
        &mut model,
        &mut facts,
        &mut sinks,
        &mut step,
        stop,
    );
    // Detach first, then flush the sinks.
    drop(tracer);
    sinks.shutdown();
    summary
}

/// Carries records from `source` through the model to the sinks until `stop` is set (then
/// drains what is left). Any record source will do: a recorded stream drives the whole path.
pub fn drive<W: Write>(
    source: &mut impl RecordSource,
    model: &mut Model<Recognizer>,
    facts: &mut HostFacts,
    sinks: &mut Sinks<W>,
    step: &mut Output,
    stop: &AtomicBool,
) -> Result<RunSummary> {
    let mut missed = Missed::default();
    let mut last_housekeeping = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut counts = KindCounts::default();
        source.poll_each(
            if stopping { Duration::ZERO } else { POLL },
            &mut |record| {
                counts.add(&record);
                if let Record::DeviceAccess(r) = &record {
                    if !model.knows_device(r.major, r.minor) {
                        if let Some(path) = facts.devices.lookup(r.major, r.minor) {
                            model.name_device(r.major, r.minor, path);
                        }
                    }
                }
                model.handle(&record, step);
            },
        )?;
        sinks.records(&counts);
        if stopping || last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            model.tick(sys::monotonic_ns(), step);
            if let Ok(now) = source.missed() {
                sinks.missed(&now, &missed);
                missed = now;
            }
        }
        for id in step.untrack.drain(..) {
            source.untrack(id);
        }
        name_pods(model, facts, step);
        follow_mount_tables(model, facts, step);
        sinks.take(step)?;
        if stopping {
            break;
        }
    }
    Ok(RunSummary {
        events: sinks.events,
        missed,
        decode_errors: source.decode_errors(),
        audit_errors: sinks.audit_errors,
    })
}

/// The Kubernetes names of the CRI containers that appeared in this step, read from their
/// bundles once; a container whose bundle did not give them is asked for again at its init's
/// exec. Before the step's events are handed on, so that they carry the names too.
fn name_pods(model: &mut Model<Recognizer>, facts: &HostFacts, step: &mut Output) {
    let created = step.events.iter().filter_map(|e| match &e.event {
        Event::ContainerCreate(c) => Some(c.container.cgroup_id),
        _ => None,
    });
    let init_execs = step.notes.iter().filter_map(|n| match n {
        Note::InitExec { cgroup_id, .. } => Some(*cgroup_id),
        _ => None,
    });
    let asked: Vec<u64> = created.chain(init_execs).collect();
    for cgroup_id in asked {
        let Some(query) = model.pod_query(cgroup_id) else {
            continue;
        };
        match facts.pods.lookup(query.runtime, &query.id) {
            Some(names) => model.name_pod(cgroup_id, names, step),
            None => log::debug!(
                "no Kubernetes names in the {} bundle of {} (yet)",
                query.runtime,
                query.id
            ),
        }
    }
}

/// An exec of a container's init: its mount table is as the runtime made it (a wrapper such
/// as `unshare -m` may have moved it to a namespace of its own since the first). A
/// container's end: its table is no longer followed. And the tables that changed, to the model.
fn follow_mount_tables(model: &mut Model<Recognizer>, facts: &mut HostFacts, step: &mut Output) {
    for note in &step.notes {
        if let Note::InitExec {
            cgroup_id,
            pid,
            mnt_ns,
            ..
        } = note
        {
            facts.mounts.watch(*cgroup_id, *pid, *mnt_ns);
        }
    }
    for event in &step.events {
        if let Event::ContainerDelete(d) = &event.event {
            facts.mounts.unwatch(d.container.cgroup_id);
        }
    }
    for table in facts.mounts.tables() {
        model.on_mount_table(table.cgroup_id, table.binds, table.ts_ns, step);
    }
}

/// Follows the containers that already run: the programs are attached before the scan, so
/// nothing created meanwhile is missed; the model ignores a container it already knows.
fn adopt_running(
    tracer: &mut Tracer,
    model: &mut Model<Recognizer>,
    facts: &mut HostFacts,
    step: &mut Output,
) -> Result<()> {
    let Some(root) = sys::cgroup2_mount() else {
        log::warn!("no cgroup v2 mount found: containers already running are not followed");
        return Ok(());
    };
    let found = scan::scan(&root, model.recognizer());
    let now = sys::monotonic_ns();
    for container in found.containers {
        for &id in std::iter::once(&container.cgroup_id).chain(&container.sub_cgroups) {
            tracer.track_cgroup(id)?;
        }
        if let Some(init) = container.init {
            facts.mounts.watch_running(container.cgroup_id, init);
        }
        model.adopt(container, now, step);
    }
    Ok(())
}

/// What the kernel lacks, and the `tracing:` line that says tracing has begun.
fn log_start(tracer: &Tracer, model: &Model<Recognizer>) {
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
}

impl RunOptions {
    fn tracer_config(&self) -> TracerConfig {
        let env_source = self.agent.sources.contains(&AgentSource::Env);
        TracerConfig {
            ring_buffer_bytes: self.ring_buffer_bytes,
            init_env_var: env_source.then(|| self.agent.env_var.clone()),
            devices: self.gpu_devices.clone(),
            trace_mount_syscalls: self.trace_mount_syscalls,
            trace_devices: self.trace_devices,
        }
    }

    fn model_config(&self) -> ModelConfig {
        let devices_v1_controller = sys::cgroup_v1_devices_mounted();
        if devices_v1_controller && self.trace_devices {
            log::info!(
                "a cgroup v1 devices hierarchy is mounted: it decides device accesses after the \
                 device programs, so a GPU access they allow is reported undecided"
            );
        }
        ModelConfig {
            // A duration past u64 nanoseconds (585 years) means never.
            linger_after_ns: u64::try_from(self.linger_after.as_nanos()).unwrap_or(u64::MAX),
            read_only_volumes: self
                .read_only_volumes
                .iter()
                .map(|p| crate::model::volumes::normalize(p))
                .collect(),
            host_ns_level: sys::pid_ns_level(),
            devices_v1_controller,
            mount_syscalls: self.trace_mount_syscalls,
        }
    }

    fn export_config(&self, prometheus: Option<std::net::TcpListener>) -> ExportConfig {
        ExportConfig {
            prometheus,
            otlp: self.otlp.clone(),
            agent: self.agent.clone(),
            labels: self.labels.clone(),
            queue: defaults::EXPORT_QUEUE,
            settle_after: defaults::SETTLE_AFTER,
            gpu_poll: self.gpu_poll,
            watch: self.watch.as_ref().map(|w| w.0.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use tracer_common::Kind;

    use super::*;
    use crate::{
        replay::{cgroup, exec, exit, origin, sent, Recorded, HOST_CGROUP, RUNTIME_PID},
        test_dir::TempDir,
    };

    const SECOND: u64 = 1_000_000_000;

    /// A recorded stream through the whole path: model, terminal (JSON) and audit log.
    #[test]
    fn a_recorded_stream_drives_the_path_to_the_sinks() {
        let id = "a".repeat(64);
        let path = format!("/docker/{id}");
        let (cg, init) = (100, 4_100_000);
        let kill = origin(2 * SECOND, RUNTIME_PID, HOST_CGROUP, 9, 0);
        let mut source = Recorded::new(vec![
            cgroup(Kind::CgroupMkdir, SECOND, cg, &path),
            // Not a container: the path tells the source to stop following it.
            cgroup(Kind::CgroupMkdir, SECOND, 7, "/system.slice/cron.service"),
            exec(SECOND + 10, cg, init, "/bin/agent"),
            sent(&kill, init, cg),
            exit(2 * SECOND + 10, cg, init, 1, 9),
            cgroup(Kind::CgroupRmdir, 3 * SECOND, cg, &path),
        ]);
        let dir = TempDir::new("drive");
        let audit = dir.0.join("audit.log");
        let mut out = Vec::new();
        let clock = sys::WallClock::now();
        let mut sinks = Sinks::open(
            &mut out,
            Format::Json,
            TextStyle::default(),
            clock,
            Some((&audit, 1 << 20, 1)),
        )
        .unwrap();
        let mut model = Model::new(Recognizer::new(&[], None).unwrap(), ModelConfig::default());
        let stop = AtomicBool::new(true);
        let summary = drive(
            &mut source,
            &mut model,
            &mut HostFacts::new(),
            &mut sinks,
            &mut Output::default(),
            &stop,
        )
        .unwrap();
        drop(sinks);
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "container_create",
                "process_exec",
                "signal",
                "process_exit",
                "container_delete"
            ]
        );
        assert_eq!(summary.events, 5);
        assert_eq!(source.untracked, [7]);
        let exit = &lines[3];
        assert_eq!(
            (&exit["pid"], &exit["cause"], &exit["sender"]["pid"]),
            (
                &Value::from(init),
                &Value::from("orchestrator_kill"),
                &Value::from(RUNTIME_PID)
            )
        );
        assert_eq!(lines[4]["verdict"], "orchestrator_kill");
        // The audit log holds the container's life, as printed: every one of these events is
        // an audited kind (the exec is its init's).
        let audited: Vec<Value> = std::fs::read_to_string(&audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(audited, lines);
    }
}
