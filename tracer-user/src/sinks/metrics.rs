//! The metrics operators chart, kept in two backends at once: a prometheus-client registry for
//! clawtrace's own `/metrics` endpoint, and OpenTelemetry instruments exported over OTLP. Names
//! are chosen so that both show the same names in Prometheus: the OTLP names carry no `_total`
//! or unit suffix, which the Collector's standard translation adds.
//!
//! All handles are thread-safe (prometheus-client metrics are atomics behind an `Arc`, OTel
//! instruments are `Send + Sync`), so one `Metrics` is shared by the event pipeline, the HTTP
//! endpoint and the OTLP exporters' error accounting.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex, OnceLock},
};

// The series index is looked up on every exit and signal: foldhash, randomly seeded per process,
// as the model's tables.
use foldhash::{HashMap, HashSet};

use opentelemetry::{
    metrics::{Counter as OtelCounter, Histogram as OtelHistogram, Meter, UpDownCounter},
    KeyValue, Value,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

/// An `agent_name` label value, shared with the export worker's containers: finding a series
/// copies no text. (Every other label value is static text, or nearly always so.)
pub type AgentName = Arc<str>;

/// A signal's name: static, but for numbers without a name.
pub type SignalName = Cow<'static, str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    operation: &'static str,
    agent_name: AgentName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    agent_name: AgentName,
    cause: &'static str,
    signal: SignalName,
    exit_code: u32,
}

/// A container's end: its verdict and the exit code the runtime reports (`none` when the
/// init's exit was not seen).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerExitLabels {
    agent_name: AgentName,
    verdict: &'static str,
    exit_code: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    agent_name: AgentName,
    signal: SignalName,
    sender: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent_name: AgentName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifetimeLabels {
    agent_name: AgentName,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    agent_name: AgentName,
    writable: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    agent_name: AgentName,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabel {
    gpu: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuMemoryLabels {
    agent_name: String,
    gpu: String,
    gpu_uuid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabel {
    probe: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// How a metric is kept (and its Prometheus type).
#[derive(Debug, Clone, Copy)]
pub enum MetricKind {
    /// Only goes up (Prometheus: a counter, named `…_total`).
    Counter,
    /// Goes up and down by steps (Prometheus: a gauge; OTLP: an up-down counter).
    UpDown,
    /// Set to a reading (Prometheus and OTLP: a gauge).
    Gauge,
    /// Observations in the buckets `bounds` gives.
    Histogram { bounds: fn() -> Vec<f64> },
}

/// A metric's unit: Prometheus adds it to the name (`_seconds`, `_bytes`), OTLP carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUnit {
    Seconds,
    Bytes,
}

impl MetricUnit {
    fn prometheus(self) -> Unit {
        match self {
            MetricUnit::Seconds => Unit::Seconds,
            MetricUnit::Bytes => Unit::Bytes,
        }
    }

    fn otlp(self) -> &'static str {
        match self {
            MetricUnit::Seconds => "s",
            MetricUnit::Bytes => "By",
        }
    }
}

/// One metric, as both backends register it: the only place its name, help, unit, kind and
/// labels are written.
#[derive(Debug, Clone, Copy)]
pub struct MetricDesc {
    /// The name without type or unit suffix (OTLP's name; the Collector's translation adds
    /// the same suffixes Prometheus does).
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<MetricUnit>,
    pub kind: MetricKind,
    /// Its labels (OTLP attributes), in exposition order.
    pub labels: &'static [&'static str],
}

impl MetricDesc {
    /// The family's name in Prometheus: with `_total` for a counter, the unit's suffix.
    pub fn prometheus_name(&self) -> String {
        let unit = match self.unit {
            Some(MetricUnit::Seconds) => "_seconds",
            Some(MetricUnit::Bytes) => "_bytes",
            None => "",
        };
        let total = if matches!(self.kind, MetricKind::Counter) {
            "_total"
        } else {
            ""
        };
        format!("{}{unit}{total}", self.name)
    }

    /// The family's `# TYPE` in Prometheus.
    pub fn prometheus_type(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => "counter",
            MetricKind::UpDown | MetricKind::Gauge => "gauge",
            MetricKind::Histogram { .. } => "histogram",
        }
    }

    fn bounds(&self) -> Vec<f64> {
        match self.kind {
            MetricKind::Histogram { bounds } => bounds(),
            _ => Vec::new(),
        }
    }
}

const fn desc(
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
) -> MetricDesc {
    MetricDesc {
        name,
        help,
        unit: None,
        kind,
        labels,
    }
}

const fn with_unit(d: MetricDesc, unit: MetricUnit) -> MetricDesc {
    MetricDesc {
        unit: Some(unit),
        ..d
    }
}

/// 1 ms .. ~65 s: container starts range from a fork to a slow image mount.
fn start_bounds() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 17).collect()
}

/// 10 ms .. ~11 days in factors of 4.
fn lifetime_bounds() -> Vec<f64> {
    exponential_buckets(0.01, 4.0, 14).collect()
}

/// 10 µs .. ~10 s: a mount is fast unless a lock is contended.
fn mount_bounds() -> Vec<f64> {
    exponential_buckets(0.00001, 2.0, 21).collect()
}

use MetricKind::{Counter as C, Gauge as G, UpDown as U};

pub const CONTAINER_CHANGES: MetricDesc = desc(
    "container_changes",
    "Containers created and deleted",
    C,
    &["operation", "agent_name"],
);
pub const CONTAINER_EXITS: MetricDesc = desc(
    "container_exits",
    "Containers that ended, one per container, by verdict",
    C,
    &["agent_name", "verdict", "exit_code"],
);
pub const CONTAINER_PROCESS_EXITS: MetricDesc = desc(
    "container_process_exits",
    "Processes of containers' payloads that ended, by cause",
    C,
    &["agent_name", "cause", "signal", "exit_code"],
);
pub const CONTAINER_SIGNALS: MetricDesc = desc(
    "container_signals",
    "Signals sent to processes in containers, by sender",
    C,
    &["agent_name", "signal", "sender"],
);
pub const CONTAINERS_LIVE: MetricDesc = desc(
    "containers_live",
    "Containers that exist now",
    U,
    &["agent_name"],
);
pub const CONTAINERS_LINGERING: MetricDesc = desc(
    "containers_lingering",
    "Containers whose init exited but whose cgroup remains",
    U,
    &["agent_name"],
);
pub const CONTAINER_START_DURATION: MetricDesc = with_unit(
    desc(
        "container_start_duration",
        "From cgroup creation to the first exec of the payload",
        MetricKind::Histogram {
            bounds: start_bounds,
        },
        &["agent_name"],
    ),
    MetricUnit::Seconds,
);
pub const CONTAINER_LIFETIME: MetricDesc = with_unit(
    desc(
        "container_lifetime",
        "From cgroup creation to deletion",
        MetricKind::Histogram {
            bounds: lifetime_bounds,
        },
        &["agent_name", "verdict"],
    ),
    MetricUnit::Seconds,
);
pub const CLAWTRACE_EVENTS: MetricDesc = desc(
    "clawtrace_events",
    "Kernel records received, by kind",
    C,
    &["kind"],
);
pub const CLAWTRACE_EVENTS_LOST: MetricDesc = desc(
    "clawtrace_events_lost",
    "Kernel records lost because the ring buffer was full, by probe",
    C,
    &["probe"],
);
pub const CLAWTRACE_LABEL_OVERFLOW: MetricDesc = desc(
    "clawtrace_label_overflow",
    "Containers labelled _overflow because the agent_name cap was reached",
    C,
    &[],
);
pub const CLAWTRACE_EXPORT_ERRORS: MetricDesc = desc(
    "clawtrace_export_errors",
    "Failed exports, by sink",
    C,
    &["sink"],
);
pub const CLAWTRACE_AGENT_NAME_MISSES: MetricDesc = desc(
    "clawtrace_agent_name_misses",
    "Containers whose agent name fell short of what its sources could give, by reason",
    C,
    &["reason"],
);
pub const CLAWTRACE_SPANS_DROPPED: MetricDesc = desc(
    "clawtrace_spans_dropped",
    "Container spans dropped while the collector was unreachable",
    C,
    &[],
);
pub const CLAWTRACE_LOG_RECORDS_DROPPED: MetricDesc = desc(
    "clawtrace_log_records_dropped",
    "Audit records for OTLP logs dropped while the collector was unreachable",
    C,
    &[],
);
pub const CONTAINER_MOUNT_DURATION: MetricDesc = with_unit(
    desc(
        "container_mount_duration",
        "Mount system calls made in containers",
        MetricKind::Histogram {
            bounds: mount_bounds,
        },
        &["agent_name", "writable"],
    ),
    MetricUnit::Seconds,
);
pub const CONTAINER_VOLUME_VIOLATIONS: MetricDesc = desc(
    "container_volume_violations",
    "Writable binds that break the volume policy",
    C,
    &["agent_name", "kind"],
);
pub const CONTAINER_VOLUME_VIOLATIONS_CURRENT: MetricDesc = desc(
    "container_volume_violations_current",
    "Writable binds that break the volume policy now",
    U,
    &["agent_name", "kind"],
);
pub const GPU_CONTAINERS: MetricDesc = desc(
    "gpu_containers",
    "Live containers that opened each GPU device",
    G,
    &["gpu"],
);
pub const GPU_SHARED_DEVICES: MetricDesc = desc(
    "gpu_shared_devices",
    "GPU devices used by more than one live container",
    G,
    &[],
);
pub const GPU_SHARING: MetricDesc = desc(
    "gpu_sharing",
    "Containers that began using a GPU device another live container was using",
    C,
    &["agent_name"],
);
pub const CONTAINER_GPU_MEMORY: MetricDesc = with_unit(
    desc(
        "container_gpu_memory",
        "GPU memory held by a container's processes (NVML)",
        G,
        &["agent_name", "gpu", "gpu_uuid"],
    ),
    MetricUnit::Bytes,
);

/// Every metric clawtrace exports, in exposition order.
pub const METRICS: &[MetricDesc] = &[
    CONTAINER_CHANGES,
    CONTAINER_EXITS,
    CONTAINER_PROCESS_EXITS,
    CONTAINER_SIGNALS,
    CONTAINERS_LIVE,
    CONTAINERS_LINGERING,
    CONTAINER_START_DURATION,
    CONTAINER_LIFETIME,
    CLAWTRACE_EVENTS,
    CLAWTRACE_EVENTS_LOST,
    CLAWTRACE_LABEL_OVERFLOW,
    CLAWTRACE_EXPORT_ERRORS,
    CLAWTRACE_AGENT_NAME_MISSES,
    CLAWTRACE_SPANS_DROPPED,
    CLAWTRACE_LOG_RECORDS_DROPPED,
    CONTAINER_MOUNT_DURATION,
    CONTAINER_VOLUME_VIOLATIONS,
    CONTAINER_VOLUME_VIOLATIONS_CURRENT,
    GPU_CONTAINERS,
    GPU_SHARED_DEVICES,
    GPU_SHARING,
    CONTAINER_GPU_MEMORY,
];

/// The sinks whose failures `clawtrace_export_errors_total{sink}` counts.
pub mod sink {
    pub const OTLP_METRICS: &str = "otlp_metrics";
    pub const OTLP_TRACES: &str = "otlp_traces";
    pub const OTLP_LOGS: &str = "otlp_logs";
    pub const AUDIT_LOG: &str = "audit_log";
    /// The export worker's queue (events dropped because it was full).
    pub const QUEUE: &str = "queue";
    pub const ALL: &[&str] = &[OTLP_METRICS, OTLP_TRACES, OTLP_LOGS, AUDIT_LOG, QUEUE];
}

fn register(
    registry: &mut Registry,
    d: &MetricDesc,
    metric: impl prometheus_client::registry::Metric,
) {
    match d.unit {
        Some(unit) => registry.register_with_unit(d.name, d.help, unit.prometheus(), metric),
        None => registry.register(d.name, d.help, metric),
    }
}

fn counter(meter: &Meter, d: &MetricDesc) -> OtelCounter<u64> {
    meter.u64_counter(d.name).with_description(d.help).build()
}

fn up_down(meter: &Meter, d: &MetricDesc) -> UpDownCounter<i64> {
    meter
        .i64_up_down_counter(d.name)
        .with_description(d.help)
        .build()
}

fn histogram(meter: &Meter, d: &MetricDesc) -> OtelHistogram<f64> {
    let builder = meter
        .f64_histogram(d.name)
        .with_description(d.help)
        .with_boundaries(d.bounds());
    match d.unit {
        Some(unit) => builder.with_unit(unit.otlp()).build(),
        None => builder.build(),
    }
}

/// The verdict label of a container whose init's exit was not seen (it ended while clawtrace
/// was not running, or its records were lost).
pub const VERDICT_UNSEEN: &str = "init_exit_unseen";

/// The OpenTelemetry side of every metric.
struct Otel {
    changes: OtelCounter<u64>,
    exits: OtelCounter<u64>,
    process_exits: OtelCounter<u64>,
    signals: OtelCounter<u64>,
    live: UpDownCounter<i64>,
    lingering: UpDownCounter<i64>,
    start: OtelHistogram<f64>,
    lifetime: OtelHistogram<f64>,
    events: OtelCounter<u64>,
    lost: OtelCounter<u64>,
    overflow: OtelCounter<u64>,
    export_errors: OtelCounter<u64>,
    agent_name_misses: OtelCounter<u64>,
    spans_dropped: OtelCounter<u64>,
    log_records_dropped: OtelCounter<u64>,
    mount: OtelHistogram<f64>,
    violations: OtelCounter<u64>,
    violations_now: UpDownCounter<i64>,
    gpu_containers: opentelemetry::metrics::Gauge<i64>,
    gpu_shared: opentelemetry::metrics::Gauge<i64>,
    gpu_sharing: OtelCounter<u64>,
    gpu_memory: opentelemetry::metrics::Gauge<u64>,
}

impl Otel {
    fn new(meter: &Meter) -> Otel {
        let i64_gauge = |d: &MetricDesc| meter.i64_gauge(d.name).with_description(d.help).build();
        Otel {
            changes: counter(meter, &CONTAINER_CHANGES),
            exits: counter(meter, &CONTAINER_EXITS),
            process_exits: counter(meter, &CONTAINER_PROCESS_EXITS),
            signals: counter(meter, &CONTAINER_SIGNALS),
            live: up_down(meter, &CONTAINERS_LIVE),
            lingering: up_down(meter, &CONTAINERS_LINGERING),
            start: histogram(meter, &CONTAINER_START_DURATION),
            lifetime: histogram(meter, &CONTAINER_LIFETIME),
            events: counter(meter, &CLAWTRACE_EVENTS),
            lost: counter(meter, &CLAWTRACE_EVENTS_LOST),
            overflow: counter(meter, &CLAWTRACE_LABEL_OVERFLOW),
            export_errors: counter(meter, &CLAWTRACE_EXPORT_ERRORS),
            agent_name_misses: counter(meter, &CLAWTRACE_AGENT_NAME_MISSES),
            spans_dropped: counter(meter, &CLAWTRACE_SPANS_DROPPED),
            log_records_dropped: counter(meter, &CLAWTRACE_LOG_RECORDS_DROPPED),
            mount: histogram(meter, &CONTAINER_MOUNT_DURATION),
            violations: counter(meter, &CONTAINER_VOLUME_VIOLATIONS),
            violations_now: up_down(meter, &CONTAINER_VOLUME_VIOLATIONS_CURRENT),
            gpu_containers: i64_gauge(&GPU_CONTAINERS),
            gpu_shared: i64_gauge(&GPU_SHARED_DEVICES),
            gpu_sharing: counter(meter, &GPU_SHARING),
            gpu_memory: meter
                .u64_gauge(CONTAINER_GPU_MEMORY.name)
                .with_unit(MetricUnit::Bytes.otlp())
                .with_description(CONTAINER_GPU_MEMORY.help)
                .build(),
        }
    }
}

struct Prom {
    changes: Family<ChangeLabels, Counter>,
    exits: Family<ContainerExitLabels, Counter>,
    process_exits: Family<ExitLabels, Counter>,
    signals: Family<SignalLabels, Counter>,
    live: Family<AgentLabel, Gauge>,
    lingering: Family<AgentLabel, Gauge>,
    start: Family<AgentLabel, Histogram, fn() -> Histogram>,
    lifetime: Family<LifetimeLabels, Histogram, fn() -> Histogram>,
    events: Family<KindLabel, Counter>,
    lost: Family<ProbeLabel, Counter>,
    overflow: Counter,
    export_errors: Family<SinkLabel, Counter>,
    agent_name_misses: Family<ReasonLabel, Counter>,
    spans_dropped: Counter,
    log_records_dropped: Counter,
    mount: Family<MountLabels, Histogram, fn() -> Histogram>,
    violations: Family<ViolationLabels, Counter>,
    violations_now: Family<ViolationLabels, Gauge>,
    gpu_containers: Family<GpuLabel, Gauge>,
    gpu_shared: Gauge,
    gpu_sharing: Family<AgentLabel, Counter>,
    gpu_memory: Family<GpuMemoryLabels, Gauge>,
}

/// Which label sets each agent_name has, so its series can be dropped when it is forgotten.
#[derive(Default)]
struct SeriesIndex {
    exits: HashMap<AgentName, HashSet<ContainerExitLabels>>,
    process_exits: HashMap<AgentName, HashSet<ExitLabels>>,
    signals: HashMap<AgentName, HashSet<SignalLabels>>,
    lifetime: HashMap<AgentName, HashSet<LifetimeLabels>>,
}

/// Notes that `agent` has the series `labels` in `index` (a lookup, and a copy only the first
/// time).
fn note<L: Clone + Eq + std::hash::Hash>(
    index: &mut HashMap<AgentName, HashSet<L>>,
    agent: &AgentName,
    labels: &L,
) {
    if index.get(agent).is_some_and(|known| known.contains(labels)) {
        return;
    }
    index
        .entry(agent.clone())
        .or_default()
        .insert(labels.clone());
}

/// Every metric clawtrace exports.
#[derive(Clone)]
pub struct Metrics {
    prom: Arc<Prom>,
    registry: Arc<Registry>,
    /// Set once the OTLP meter exists: the exporters that feed it count their failures here
    /// too, so the meter cannot exist before this.
    otel: Arc<OnceLock<Otel>>,
    index: Arc<Mutex<SeriesIndex>>,
}

fn kv(key: &'static str, value: impl Into<Value>) -> KeyValue {
    KeyValue::new(key, value)
}

impl Metrics {
    /// `meter`: where to mirror the metrics over OTLP, if anywhere (see also [`Metrics::mirror_to`]).
    pub fn new(meter: Option<&Meter>) -> Metrics {
        let prom = Prom {
            changes: Family::default(),
            exits: Family::default(),
            process_exits: Family::default(),
            signals: Family::default(),
            live: Family::default(),
            lingering: Family::default(),
            start: Family::new_with_constructor(|| {
                Histogram::new(CONTAINER_START_DURATION.bounds())
            }),
            lifetime: Family::new_with_constructor(|| Histogram::new(CONTAINER_LIFETIME.bounds())),
            events: Family::default(),
            lost: Family::default(),
            overflow: Counter::default(),
            export_errors: Family::default(),
            agent_name_misses: Family::default(),
            spans_dropped: Counter::default(),
            log_records_dropped: Counter::default(),
            mount: Family::new_with_constructor(|| {
                Histogram::new(CONTAINER_MOUNT_DURATION.bounds())
            }),
            violations: Family::default(),
            violations_now: Family::default(),
            gpu_containers: Family::default(),
            gpu_shared: Gauge::default(),
            gpu_sharing: Family::default(),
            gpu_memory: Family::default(),
        };
        let mut r = Registry::default();
        register(&mut r, &CONTAINER_CHANGES, prom.changes.clone());
        register(&mut r, &CONTAINER_EXITS, prom.exits.clone());
        register(&mut r, &CONTAINER_PROCESS_EXITS, prom.process_exits.clone());
        register(&mut r, &CONTAINER_SIGNALS, prom.signals.clone());
        register(&mut r, &CONTAINERS_LIVE, prom.live.clone());
        register(&mut r, &CONTAINERS_LINGERING, prom.lingering.clone());
        register(&mut r, &CONTAINER_START_DURATION, prom.start.clone());
        register(&mut r, &CONTAINER_LIFETIME, prom.lifetime.clone());
        register(&mut r, &CLAWTRACE_EVENTS, prom.events.clone());
        register(&mut r, &CLAWTRACE_EVENTS_LOST, prom.lost.clone());
        register(&mut r, &CLAWTRACE_LABEL_OVERFLOW, prom.overflow.clone());
        register(&mut r, &CLAWTRACE_EXPORT_ERRORS, prom.export_errors.clone());
        register(
            &mut r,
            &CLAWTRACE_AGENT_NAME_MISSES,
            prom.agent_name_misses.clone(),
        );
        register(&mut r, &CLAWTRACE_SPANS_DROPPED, prom.spans_dropped.clone());
        register(
            &mut r,
            &CLAWTRACE_LOG_RECORDS_DROPPED,
            prom.log_records_dropped.clone(),
        );
        register(&mut r, &CONTAINER_MOUNT_DURATION, prom.mount.clone());
        register(
            &mut r,
            &CONTAINER_VOLUME_VIOLATIONS,
            prom.violations.clone(),
        );
        register(
            &mut r,
            &CONTAINER_VOLUME_VIOLATIONS_CURRENT,
            prom.violations_now.clone(),
        );
        register(&mut r, &GPU_CONTAINERS, prom.gpu_containers.clone());
        register(&mut r, &GPU_SHARED_DEVICES, prom.gpu_shared.clone());
        register(&mut r, &GPU_SHARING, prom.gpu_sharing.clone());
        register(&mut r, &CONTAINER_GPU_MEMORY, prom.gpu_memory.clone());
        let registry = r;
        let metrics = Metrics {
            prom: Arc::new(prom),
            registry: Arc::new(registry),
            otel: Arc::new(OnceLock::new()),
            index: Arc::new(Mutex::new(SeriesIndex::default())),
        };
        if let Some(meter) = meter {
            metrics.mirror_to(meter);
        }
        metrics
    }

    /// Mirrors every metric to `meter` from now on (once; later calls are ignored).
    pub fn mirror_to(&self, meter: &Meter) {
        let _ = self.otel.set(Otel::new(meter));
    }

    fn index(&self) -> std::sync::MutexGuard<'_, SeriesIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn container_created(&self, agent: &AgentName) {
        self.change("create", agent);
        let label = AgentLabel {
            agent_name: agent.clone(),
        };
        self.prom.live.get_or_create(&label).inc();
        // The lingering series starts at 0, so panels show 0 rather than nothing.
        let _ = self.prom.lingering.get_or_create(&label);
        if let Some(o) = self.otel.get() {
            o.live.add(1, &[kv("agent_name", agent.clone())]);
            o.lingering.add(0, &[kv("agent_name", agent.clone())]);
        }
    }

    pub fn container_deleted(
        &self,
        agent: &AgentName,
        lifetime_seconds: f64,
        verdict: Option<&'static str>,
        exit_code: Option<u32>,
        was_lingering: bool,
    ) {
        self.change("delete", agent);
        let verdict = verdict.unwrap_or(VERDICT_UNSEEN);
        let exits = ContainerExitLabels {
            agent_name: agent.clone(),
            verdict,
            exit_code: exit_code.map_or(Cow::Borrowed("none"), |c| Cow::Owned(c.to_string())),
        };
        self.prom.exits.get_or_create(&exits).inc();
        note(&mut self.index().exits, agent, &exits);
        let label = AgentLabel {
            agent_name: agent.clone(),
        };
        self.prom.live.get_or_create(&label).dec();
        if was_lingering {
            self.prom.lingering.get_or_create(&label).dec();
        }
        let lifetime = LifetimeLabels {
            agent_name: agent.clone(),
            verdict,
        };
        self.prom
            .lifetime
            .get_or_create(&lifetime)
            .observe(lifetime_seconds);
        note(&mut self.index().lifetime, agent, &lifetime);
        if let Some(o) = self.otel.get() {
            o.live.add(-1, &[kv("agent_name", agent.clone())]);
            if was_lingering {
                o.lingering.add(-1, &[kv("agent_name", agent.clone())]);
            }
            o.exits.add(
                1,
                &[
                    kv("agent_name", agent.clone()),
                    kv("verdict", verdict),
                    kv("exit_code", exits.exit_code),
                ],
            );
            o.lifetime.record(
                lifetime_seconds,
                &[kv("agent_name", agent.clone()), kv("verdict", verdict)],
            );
        }
    }

    fn change(&self, operation: &'static str, agent: &AgentName) {
        self.prom
            .changes
            .get_or_create(&ChangeLabels {
                operation,
                agent_name: agent.clone(),
            })
            .inc();
        if let Some(o) = self.otel.get() {
            o.changes.add(
                1,
                &[kv("operation", operation), kv("agent_name", agent.clone())],
            );
        }
    }

    pub fn container_lingering(&self, agent: &AgentName) {
        self.prom
            .lingering
            .get_or_create(&AgentLabel {
                agent_name: agent.clone(),
            })
            .inc();
        if let Some(o) = self.otel.get() {
            o.lingering.add(1, &[kv("agent_name", agent.clone())]);
        }
    }

    pub fn process_exit(
        &self,
        agent: &AgentName,
        cause: &'static str,
        signal: SignalName,
        exit_code: u32,
    ) {
        let labels = ExitLabels {
            agent_name: agent.clone(),
            cause,
            signal,
            exit_code,
        };
        self.prom.process_exits.get_or_create(&labels).inc();
        note(&mut self.index().process_exits, agent, &labels);
        if let Some(o) = self.otel.get() {
            o.process_exits.add(
                1,
                &[
                    kv("agent_name", agent.clone()),
                    kv("cause", cause),
                    kv("signal", labels.signal),
                    kv("exit_code", exit_code.to_string()),
                ],
            );
        }
    }

    pub fn signal(&self, agent: &AgentName, signal: SignalName, sender: &'static str) {
        let labels = SignalLabels {
            agent_name: agent.clone(),
            signal,
            sender,
        };
        self.prom.signals.get_or_create(&labels).inc();
        note(&mut self.index().signals, agent, &labels);
        if let Some(o) = self.otel.get() {
            o.signals.add(
                1,
                &[
                    kv("agent_name", agent.clone()),
                    kv("signal", labels.signal),
                    kv("sender", sender),
                ],
            );
        }
    }

    pub fn start_duration(&self, agent: &AgentName, seconds: f64) {
        self.prom
            .start
            .get_or_create(&AgentLabel {
                agent_name: agent.clone(),
            })
            .observe(seconds);
        if let Some(o) = self.otel.get() {
            o.start.record(seconds, &[kv("agent_name", agent.clone())]);
        }
    }

    /// `n` more kernel records of `kind` received.
    pub fn events(&self, kind: &'static str, n: u64) {
        self.prom
            .events
            .get_or_create(&KindLabel { kind })
            .inc_by(n);
        if let Some(o) = self.otel.get() {
            o.events.add(n, &[kv("kind", kind)]);
        }
    }

    /// `n` more records lost in `probe`.
    pub fn lost(&self, probe: &'static str, n: u64) {
        self.prom
            .lost
            .get_or_create(&ProbeLabel { probe })
            .inc_by(n);
        if let Some(o) = self.otel.get() {
            o.lost.add(n, &[kv("probe", probe)]);
        }
    }

    /// `n` more containers labelled `_overflow`.
    pub fn label_overflow(&self, n: u64) {
        self.prom.overflow.inc_by(n);
        if let Some(o) = self.otel.get() {
            o.overflow.add(n, &[]);
        }
    }

    /// One failed export to `sink` (`otlp_metrics`, `otlp_traces`, `audit_log`, `queue`, …).
    pub fn export_error(&self, sink: &'static str) {
        self.export_errors(sink, 1);
    }

    /// `n` things `sink` could not export (or, for `queue`, events that did not fit).
    pub fn export_errors(&self, sink: &'static str, n: u64) {
        self.prom
            .export_errors
            .get_or_create(&SinkLabel { sink })
            .inc_by(n);
        if let Some(o) = self.otel.get() {
            o.export_errors.add(n, &[kv("sink", sink)]);
        }
    }

    /// One mount system call of `seconds` in a container of `agent`.
    pub fn mount(&self, agent: &AgentName, writable: bool, seconds: f64) {
        self.prom
            .mount
            .get_or_create(&MountLabels {
                agent_name: agent.clone(),
                writable,
            })
            .observe(seconds);
        if let Some(o) = self.otel.get() {
            let writable = if writable { "true" } else { "false" };
            o.mount.record(
                seconds,
                &[kv("agent_name", agent.clone()), kv("writable", writable)],
            );
        }
    }

    /// A volume-policy violation began (`active`) or ended.
    pub fn volume_violation(&self, agent: &AgentName, kind: &'static str, active: bool) {
        let labels = ViolationLabels {
            agent_name: agent.clone(),
            kind,
        };
        if active {
            self.prom.violations.get_or_create(&labels).inc();
            self.prom.violations_now.get_or_create(&labels).inc();
        } else {
            self.prom.violations_now.get_or_create(&labels).dec();
        }
        if let Some(o) = self.otel.get() {
            let attrs = [kv("agent_name", agent.clone()), kv("kind", kind)];
            if active {
                o.violations.add(1, &attrs);
            }
            o.violations_now.add(if active { 1 } else { -1 }, &attrs);
        }
    }

    /// `containers` live containers use GPU device `gpu` now; `shared` devices are used by more
    /// than one.
    pub fn gpu_users(&self, gpu: &str, containers: usize, shared: usize) {
        let label = GpuLabel { gpu: gpu.into() };
        if containers == 0 {
            self.prom.gpu_containers.remove(&label);
        } else {
            self.prom
                .gpu_containers
                .get_or_create(&label)
                .set(containers as i64);
        }
        self.prom.gpu_shared.set(shared as i64);
        if let Some(o) = self.otel.get() {
            o.gpu_containers
                .record(containers as i64, &[kv("gpu", gpu.to_string())]);
            o.gpu_shared.record(shared as i64, &[]);
        }
    }

    /// A container of `agent` began using a GPU another live container was using.
    pub fn gpu_sharing(&self, agent: &AgentName) {
        self.prom
            .gpu_sharing
            .get_or_create(&AgentLabel {
                agent_name: agent.clone(),
            })
            .inc();
        if let Some(o) = self.otel.get() {
            o.gpu_sharing.add(1, &[kv("agent_name", agent.clone())]);
        }
    }

    /// GPU memory of every container now, replacing the previous reading: `(agent, gpu index,
    /// gpu uuid) → bytes`.
    pub fn gpu_memory(&self, readings: &std::collections::HashMap<(String, u32, String), u64>) {
        self.prom.gpu_memory.clear();
        for ((agent, gpu, uuid), bytes) in readings {
            let labels = GpuMemoryLabels {
                agent_name: agent.clone(),
                gpu: gpu.to_string(),
                gpu_uuid: uuid.clone(),
            };
            self.prom
                .gpu_memory
                .get_or_create(&labels)
                .set(*bytes as i64);
            if let Some(o) = self.otel.get() {
                o.gpu_memory.record(
                    *bytes,
                    &[
                        kv("agent_name", agent.clone()),
                        kv("gpu", gpu.to_string()),
                        kv("gpu_uuid", uuid.clone()),
                    ],
                );
            }
        }
    }

    /// `n` more containers whose agent name fell short, for `reason`.
    pub fn agent_name_misses(&self, reason: &'static str, n: u64) {
        self.prom
            .agent_name_misses
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
        if let Some(o) = self.otel.get() {
            o.agent_name_misses.add(n, &[kv("reason", reason)]);
        }
    }

    /// `n` container spans given up on.
    pub fn spans_dropped(&self, n: u64) {
        self.prom.spans_dropped.inc_by(n);
        if let Some(o) = self.otel.get() {
            o.spans_dropped.add(n, &[]);
        }
    }

    /// `n` audit records for OTLP logs given up on.
    pub fn log_records_dropped(&self, n: u64) {
        self.prom.log_records_dropped.inc_by(n);
        if let Some(o) = self.otel.get() {
            o.log_records_dropped.add(n, &[]);
        }
    }

    /// Makes sure a series exists for every probe and sink, so dashboards show 0 rather than
    /// nothing before the first loss or error.
    pub fn declare(&self, probes: &[&'static str], sinks: &[&'static str]) {
        for &probe in probes {
            let _ = self.prom.lost.get_or_create(&ProbeLabel { probe });
        }
        for &sink in sinks {
            let _ = self.prom.export_errors.get_or_create(&SinkLabel { sink });
        }
        for miss in crate::enrich::pending::SettleMiss::ALL {
            let _ = self.prom.agent_name_misses.get_or_create(&ReasonLabel {
                reason: miss.as_str(),
            });
        }
    }

    /// Drops every series of an agent_name that has no container any more. (The OTLP side keeps
    /// cumulative series until restart; the label cap bounds them.)
    pub fn forget_agent(&self, agent: &str) {
        let agent: AgentName = agent.into();
        let label = AgentLabel {
            agent_name: agent.clone(),
        };
        self.prom.live.remove(&label);
        self.prom.lingering.remove(&label);
        self.prom.start.remove(&label);
        self.prom.gpu_sharing.remove(&label);
        for writable in [true, false] {
            self.prom.mount.remove(&MountLabels {
                agent_name: agent.clone(),
                writable,
            });
        }
        for kind in ["shared_writable", "read_only_volume_writable"] {
            let labels = ViolationLabels {
                agent_name: agent.clone(),
                kind,
            };
            self.prom.violations.remove(&labels);
            self.prom.violations_now.remove(&labels);
        }
        for operation in ["create", "delete"] {
            self.prom.changes.remove(&ChangeLabels {
                operation,
                agent_name: agent.clone(),
            });
        }
        let mut index = self.index();
        for labels in index.exits.remove(&agent).unwrap_or_default() {
            self.prom.exits.remove(&labels);
        }
        for labels in index.process_exits.remove(&agent).unwrap_or_default() {
            self.prom.process_exits.remove(&labels);
        }
        for labels in index.signals.remove(&agent).unwrap_or_default() {
            self.prom.signals.remove(&labels);
        }
        for labels in index.lifetime.remove(&agent).unwrap_or_default() {
            self.prom.lifetime.remove(&labels);
        }
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_dashboard_names() {
        let m = Metrics::new(None);
        let agent: AgentName = "nemo_claw".into();
        m.container_created(&agent);
        m.container_created(&agent);
        m.container_lingering(&agent);
        m.start_duration(&agent, 0.25);
        m.process_exit(&agent, "orchestrator_kill", "SIGKILL".into(), 137);
        m.signal(&agent, "SIGTERM".into(), "outside");
        m.container_deleted(&agent, 12.0, Some("orchestrator_kill"), Some(137), true);
        m.container_deleted(&agent, 1.0, None, None, false);
        m.events("exit", 3);
        m.lost("signal_generate", 2);
        m.label_overflow(1);
        m.export_error("otlp_traces");
        let text = m.encode();
        for line in [
            r#"container_changes_total{operation="create",agent_name="nemo_claw"} 2"#,
            r#"container_changes_total{operation="delete",agent_name="nemo_claw"} 2"#,
            r#"container_process_exits_total{agent_name="nemo_claw",cause="orchestrator_kill",signal="SIGKILL",exit_code="137"} 1"#,
            r#"container_exits_total{agent_name="nemo_claw",verdict="orchestrator_kill",exit_code="137"} 1"#,
            r#"container_exits_total{agent_name="nemo_claw",verdict="init_exit_unseen",exit_code="none"} 1"#,
            r#"container_signals_total{agent_name="nemo_claw",signal="SIGTERM",sender="outside"} 1"#,
            r#"containers_live{agent_name="nemo_claw"} 0"#,
            r#"containers_lingering{agent_name="nemo_claw"} 0"#,
            r#"container_start_duration_seconds_count{agent_name="nemo_claw"} 1"#,
            r#"container_lifetime_seconds_count{agent_name="nemo_claw",verdict="orchestrator_kill"} 1"#,
            r#"clawtrace_events_total{kind="exit"} 3"#,
            r#"clawtrace_events_lost_total{probe="signal_generate"} 2"#,
            r#"clawtrace_label_overflow_total 1"#,
            r#"clawtrace_export_errors_total{sink="otlp_traces"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// Every metric of the table is in the exposition under its Prometheus name and type, and
    /// its series carry exactly the table's labels: the label sets cannot drift from it.
    #[test]
    fn the_exposition_follows_the_table() {
        let m = Metrics::new(None);
        crate::replay::metrics_round(&m);
        let text = m.encode();
        for d in METRICS {
            let (name, kind) = (d.prometheus_name(), d.prometheus_type());
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n"))
                    // OpenMetrics names a counter's family without `_total`.
                    || text.contains(&format!(
                        "# TYPE {} {kind}\n",
                        name.trim_end_matches("_total")
                    )),
                "no {name} {kind} in\n{text}"
            );
            let series: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| {
                    let series = l.split(['{', ' ']).next().unwrap_or_default();
                    series == name
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| series == format!("{name}{suffix}"))
                })
                .collect();
            assert!(!series.is_empty(), "no {name} series in\n{text}");
            for line in series {
                let labels: Vec<&str> = line
                    .split_once('{')
                    .map(|(_, rest)| rest.split_once('}').map_or("", |(l, _)| l))
                    .unwrap_or("")
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| l.split_once('=').map(|(k, _)| k))
                    .filter(|&k| k != "le")
                    .collect();
                assert_eq!(labels, d.labels, "{line}");
            }
        }
    }

    #[test]
    fn forgetting_an_agent_drops_its_series() {
        let m = Metrics::new(None);
        let gone: AgentName = "gone".into();
        m.container_created(&gone);
        m.process_exit(&gone, "exited", "none".into(), 0);
        m.process_exit(&gone, "exited", "none".into(), 0);
        m.signal(&gone, "SIGTERM".into(), "outside");
        m.mount(&gone, true, 0.001);
        m.volume_violation(&gone, "shared_writable", true);
        m.gpu_sharing(&gone);
        m.container_deleted(&gone, 1.0, Some("exited"), Some(0), false);
        let kept: AgentName = "kept".into();
        m.container_created(&kept);
        assert!(m.encode().contains("\"gone\""));
        m.forget_agent("gone");
        let text = m.encode();
        assert!(!text.contains("\"gone\""), "{text}");
        assert!(
            text.contains(r#"containers_live{agent_name="kept"} 1"#),
            "{text}"
        );
    }
}
