//! The export worker: events from the tracing loop go through a bounded queue to one worker
//! thread that has them enriched with each container's agent_name ([`crate::enrich`]), keeps
//! the metrics, assembles container spans, and serves `/metrics`. Nothing here can stall tracing: the queue never blocks the
//! sender (events that do not fit are counted as export errors), and slow metadata lookups,
//! HTTP scrapes and OTLP exports all happen on the worker's side. Events travel in batches, one
//! per turn of the tracing loop: one hand-over (and at most one wake-up of the worker) per
//! batch, not per event.

use std::{
    borrow::Cow,
    collections::HashMap,
    net::TcpListener,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::{logs::LoggerProvider as _, trace::TracerProvider as _};
use opentelemetry_sdk::{logs::SdkLogger, trace::SdkTracer};

use super::{
    audit, logs,
    metrics::{AgentName, Metrics, CONTENT_TYPE},
    otlp::{OtlpConfig, Protocol, Providers},
    spans::{system_time, ContainerSpan},
};
use crate::{
    enrich::{
        agent::{AgentConfig, AgentResolver},
        labels::{AgentLabels, LabelPolicy},
        pending::{Pending, Ready},
    },
    model::{Event, Note, Timed},
    source::nvml::{cgroup_path_of, memory_by_container, GpuSource, NvmlSource},
    sys::WallClock,
};

/// Settings of the export pipeline.
pub struct ExportConfig {
    /// Where `/metrics` is served, already bound (so a bad address fails at start).
    pub prometheus: Option<TcpListener>,
    pub otlp: Option<OtlpConfig>,
    pub agent: AgentConfig,
    pub labels: LabelPolicy,
    /// Events waiting for the worker at most (a batch that would go past it is dropped, unless
    /// nothing waits).
    pub queue: usize,
    /// How long a new container waits for its init's exec before its agent_name is settled.
    pub settle_after: Duration,
    /// How often NVML is read, when it is there.
    pub gpu_poll: Duration,
    /// Sees every event of a settled container with its agent_name (`clawtrace top`'s board).
    pub watch: Option<Arc<dyn Watcher>>,
}

/// Something that sees each event of a settled container, with the container's agent_name as
/// the metrics label it, in the export worker's thread: its `container_create` first (once the
/// name is settled), its `container_delete` last.
pub trait Watcher: Send + Sync {
    fn event(&self, agent: &AgentName, event: &Timed);
}

enum Message {
    Events(Vec<Timed>, Vec<Note>),
    Records(&'static str, u64),
    Lost(&'static str, u64),
    Stop,
}

/// Events handed to the worker and not yet handled, against the queue's bound.
#[derive(Debug)]
struct Backlog {
    waiting: AtomicUsize,
    limit: usize,
}

impl Backlog {
    fn new(limit: usize) -> Backlog {
        Backlog {
            waiting: AtomicUsize::new(0),
            limit,
        }
    }

    /// Counts `n` more events in, if they fit (or if nothing waits: a batch larger than the
    /// whole bound still goes through an empty queue). False if they must be dropped.
    fn admit(&self, n: usize) -> bool {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting == 0 || waiting.saturating_add(n) <= self.limit).then(|| waiting + n)
            })
            .is_ok()
    }

    /// `n` events handled (or never sent).
    fn done(&self, n: usize) {
        self.waiting.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The sending side, used by the tracing loop.
pub struct Exporter {
    tx: Sender<Message>,
    backlog: Arc<Backlog>,
    worker: Option<JoinHandle<()>>,
    metrics: Metrics,
}

impl Exporter {
    pub fn start(mut config: ExportConfig, clock: WallClock) -> Result<Exporter> {
        // Unbounded as a channel: the bound is on events, kept by `Backlog`; the few other
        // messages (counts, once per turn of the tracing loop, and the stop) always get through.
        let (tx, rx) = mpsc::channel();
        let backlog = Arc::new(Backlog::new(config.queue));
        let labels = AgentLabels::open(config.labels.clone()).context("agent labels")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("clawtrace-export")
            .enable_all()
            .build()
            .context("starting the export runtime")?;
        let metrics = Metrics::new(None);
        let providers = match &config.otlp {
            Some(otlp) => {
                let providers = {
                    // gRPC channels need a runtime context; the HTTP client must not be built
                    // inside one.
                    let _guard = (otlp.metrics_protocol == Protocol::Grpc
                        || otlp.traces_protocol == Protocol::Grpc
                        || otlp.logs_protocol == Some(Protocol::Grpc))
                    .then(|| rt.enter());
                    Providers::build(otlp, &metrics)?
                };
                metrics.mirror_to(&providers.meter.meter("clawtrace"));
                Some(providers)
            }
            None => None,
        };
        metrics.declare(
            &tracer_common::Kind::ALL.map(tracer_common::Kind::probe),
            super::metrics::sink::ALL,
        );
        if let Some(listener) = config.prometheus.take() {
            listener
                .set_nonblocking(true)
                .context("prometheus listener")?;
            let _guard = rt.enter();
            let listener =
                tokio::net::TcpListener::from_std(listener).context("prometheus listener")?;
            let served = metrics.clone();
            rt.spawn(async move {
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let m = served.clone();
                        async move {
                            (
                                [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                                m.encode(),
                            )
                        }
                    }),
                );
                if let Err(err) = axum::serve(listener, app).await {
                    log::error!("the /metrics endpoint stopped: {err}");
                }
            });
        }
        let tracer = providers.as_ref().map(|p| p.tracer.tracer("clawtrace"));
        let logger = providers
            .as_ref()
            .and_then(|p| p.logger.as_ref())
            .map(|l| l.logger("clawtrace"));
        // NVML is optional: without it, device-open tracking still works and nothing complains
        // (`clawtrace check` says it is not available).
        let gpu: Option<Box<dyn GpuSource>> = match NvmlSource::init() {
            Ok(nvml) => {
                log::info!("NVML: {}", nvml.describe());
                Some(Box::new(nvml))
            }
            Err(reason) => {
                log::debug!("NVML: not available ({reason})");
                None
            }
        };
        let mut worker = Worker::new(config, labels, metrics.clone(), tracer, gpu, clock);
        worker.logger = logger;
        let handled = backlog.clone();
        let handle = std::thread::Builder::new()
            .name("clawtrace-export".into())
            .spawn(move || {
                worker.run(&rt, rx, &handled);
                if let Some(providers) = providers {
                    providers.shutdown();
                }
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .context("starting the export thread")?;
        Ok(Exporter {
            tx,
            backlog,
            worker: Some(handle),
            metrics,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn send(&self, message: Message) {
        if self.tx.send(message).is_err() {
            self.metrics.export_error(super::metrics::sink::QUEUE);
        }
    }

    /// Hands a turn's events, and the model's notes, to the worker; events that do not fit in
    /// the queue are counted as export errors and dropped.
    pub fn events(&self, events: Vec<Timed>, notes: Vec<Note>) {
        let n = events.len();
        if n == 0 && notes.is_empty() {
            return;
        }
        if !self.backlog.admit(n) {
            self.metrics
                .export_errors(super::metrics::sink::QUEUE, n as u64);
            return;
        }
        if self.tx.send(Message::Events(events, notes)).is_err() {
            self.backlog.done(n);
            self.metrics
                .export_errors(super::metrics::sink::QUEUE, n as u64);
        }
    }

    /// `n` more kernel records of `kind` received.
    pub fn records(&self, kind: &'static str, n: u64) {
        self.send(Message::Records(kind, n));
    }

    /// `n` more records lost in `probe`.
    pub fn lost(&self, probe: &'static str, n: u64) {
        self.send(Message::Lost(probe, n));
    }

    /// Ends the open container spans, flushes every sink and stops the worker.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The export worker driven in the caller's thread: no queue, no OTLP, no NVML, no `/metrics`
/// server. For benchmarks that measure what the worker does per event.
pub struct InlineWorker {
    worker: Worker,
    rt: tokio::runtime::Runtime,
}

impl InlineWorker {
    /// `config.prometheus`, `otlp`, `queue` and `gpu_poll` are not used.
    pub fn new(config: ExportConfig, clock: WallClock) -> Result<InlineWorker> {
        let labels = AgentLabels::open(config.labels.clone()).context("agent labels")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the export runtime")?;
        let worker = Worker::new(config, labels, Metrics::new(None), None, None, clock);
        Ok(InlineWorker { worker, rt })
    }

    /// What the worker does with an event the tracing loop hands over.
    pub fn event(&mut self, event: Timed) {
        self.worker.on_event(&self.rt, event);
    }

    /// What the worker does with a note of the model.
    pub fn note(&mut self, note: &Note) {
        self.worker.on_note(note);
    }

    /// `n` more kernel records of `kind` received.
    pub fn records(&self, kind: &'static str, n: u64) {
        self.worker.metrics.events(kind, n);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.worker.metrics
    }
}

struct Worker {
    /// Each container's agent name, and the events waiting for it.
    pending: Pending,
    metrics: Metrics,
    tracer: Option<SdkTracer>,
    /// Audited events as OTLP log records.
    logger: Option<SdkLogger>,
    /// The open span of each settled container, by cgroup id.
    spans: foldhash::HashMap<u64, ContainerSpan>,
    clock: WallClock,
    overflow_seen: u64,
    gpu: Option<Box<dyn GpuSource>>,
    gpu_poll: Duration,
    gpu_polled: Instant,
    /// What `pending` hands on, reused.
    ready: Vec<Ready>,
    watch: Option<Arc<dyn Watcher>>,
}

const TICK: Duration = Duration::from_millis(250);

impl Worker {
    fn new(
        config: ExportConfig,
        labels: AgentLabels,
        metrics: Metrics,
        tracer: Option<SdkTracer>,
        gpu: Option<Box<dyn GpuSource>>,
        clock: WallClock,
    ) -> Worker {
        Worker {
            pending: Pending::new(
                AgentResolver::new(config.agent),
                labels,
                config.settle_after,
            ),
            metrics,
            tracer,
            logger: None,
            spans: foldhash::HashMap::default(),
            clock,
            overflow_seen: 0,
            gpu,
            gpu_poll: config.gpu_poll,
            gpu_polled: Instant::now(),
            ready: Vec::new(),
            watch: config.watch,
        }
    }

    fn run(mut self, rt: &tokio::runtime::Runtime, rx: Receiver<Message>, backlog: &Backlog) {
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Message::Events(events, notes)) => {
                    let n = events.len();
                    // Notes first: the init's environment is noted at its exec, which settles.
                    for note in &notes {
                        self.on_note(note);
                    }
                    for event in events {
                        self.on_event(rt, event);
                    }
                    backlog.done(n);
                }
                Ok(Message::Records(kind, n)) => self.metrics.events(kind, n),
                Ok(Message::Lost(probe, n)) => self.metrics.lost(probe, n),
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Housekeeping walks every container: on the tick, not after every message.
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.housekeeping(rt);
            }
        }
        // Containers still there: settle them and end their spans as they stand.
        let mut ready = std::mem::take(&mut self.ready);
        self.pending.settle_all(rt, &mut ready);
        self.hand_on(&mut ready);
        let now = SystemTime::now();
        for (_, span) in self.spans.drain() {
            if let Some(tracer) = &self.tracer {
                span.finish(tracer, now, true);
            }
        }
    }

    fn housekeeping(&mut self, rt: &tokio::runtime::Runtime) {
        let now = Instant::now();
        let mut ready = std::mem::take(&mut self.ready);
        self.pending.expire(rt, now, &mut ready);
        self.hand_on(&mut ready);
        for gone in self.pending.expired_agents(now) {
            self.metrics.forget_agent(&gone);
        }
        for (miss, n) in self.pending.take_misses() {
            self.metrics.agent_name_misses(miss.as_str(), n);
        }
        if self.gpu.is_some() && self.gpu_polled.elapsed() >= self.gpu_poll {
            self.gpu_polled = now;
            self.poll_gpus();
        }
    }

    /// Reads GPU processes through NVML and sets each container's GPU memory.
    fn poll_gpus(&mut self) {
        let Some(source) = &mut self.gpu else {
            return;
        };
        let processes = match source.processes() {
            Ok(p) => p,
            Err(err) => {
                log::debug!("NVML: {err}");
                return;
            }
        };
        let containers: Vec<(u64, Arc<str>, AgentName)> = self
            .pending
            .settled()
            .map(|(id, c, agent)| (id, c.cgroup_path.clone(), agent.clone()))
            .collect();
        let by_container = memory_by_container(&processes, |pid| {
            let path = cgroup_path_of(pid)?;
            containers
                .iter()
                .find(|(_, root, _)| *path == **root || path.starts_with(&format!("{root}/")))
                .map(|(id, _, _)| *id)
        });
        let readings = by_container
            .into_iter()
            .filter_map(|((id, gpu, uuid), bytes)| {
                let agent = containers.iter().find(|(c, _, _)| *c == id)?.2.to_string();
                Some(((agent, gpu, uuid), bytes))
            })
            .fold(HashMap::new(), |mut acc, (key, bytes)| {
                *acc.entry(key).or_insert(0) += bytes;
                acc
            });
        self.metrics.gpu_memory(&readings);
    }

    fn on_note(&mut self, note: &Note) {
        match note {
            Note::InitExec { .. } => self.pending.note(note),
            Note::GpuUsers(users) => {
                self.metrics
                    .gpu_users(&users.gpu, users.containers, users.shared)
            }
        }
    }

    fn on_event(&mut self, rt: &tokio::runtime::Runtime, event: Timed) {
        let mut ready = std::mem::take(&mut self.ready);
        self.pending.push(rt, event, &mut ready);
        self.hand_on(&mut ready);
    }

    /// What enrichment handed on, to the metrics and spans.
    fn hand_on(&mut self, ready: &mut Vec<Ready>) {
        for item in ready.drain(..) {
            match item {
                Ready::Settled {
                    container,
                    created_ns,
                    agent,
                } => {
                    let overflow = self.pending.overflow_total();
                    if overflow > self.overflow_seen {
                        self.metrics.label_overflow(overflow - self.overflow_seen);
                        self.overflow_seen = overflow;
                    }
                    self.metrics.container_created(&agent);
                    if self.tracer.is_some() {
                        let start = system_time(&self.clock, created_ns);
                        let id = container.cgroup_id;
                        self.spans
                            .insert(id, ContainerSpan::new(container, agent, start));
                    }
                }
                Ready::Event { agent, event } => self.apply(&agent, &event),
            }
        }
        // Reused: its room stays for the next turn.
        self.ready = std::mem::take(ready);
    }

    /// Metrics and span for one event of a settled container of `agent`.
    fn apply(&mut self, agent: &AgentName, event: &Timed) {
        let Some(id) = event.event.container().map(|c| c.cgroup_id) else {
            return;
        };
        if let Some(watch) = &self.watch {
            watch.event(agent, event);
        }
        let at = system_time(&self.clock, event.ts_ns);
        if let (Some(logger), true) = (&self.logger, audit::audited(&event.event)) {
            let span = self.spans.get(&id).map(ContainerSpan::ids);
            logs::emit(logger, event, agent, at, span);
        }
        if let Some(span) = self.spans.get_mut(&id) {
            span.record(&event.event, at);
        }
        match &event.event {
            Event::ProcessExec(e) => {
                if let Some(seconds) = e.start_seconds {
                    self.metrics.start_duration(agent, seconds);
                }
            }
            Event::Signal(s) => {
                self.metrics
                    .signal(agent, s.signal.clone(), s.sender_kind.as_str())
            }
            Event::ProcessExit(e) => self.metrics.process_exit(
                agent,
                e.cause.as_str(),
                e.signal.clone().unwrap_or(Cow::Borrowed("none")),
                e.exit_code,
            ),
            Event::ContainerLingering(_) => self.metrics.container_lingering(agent),
            Event::ContainerDelete(d) => {
                self.metrics.container_deleted(
                    agent,
                    d.lifetime_seconds,
                    d.verdict.map(|v| v.as_str()),
                    d.exit_code,
                    d.was_lingering,
                );
                if let (Some(span), Some(tracer)) = (self.spans.remove(&id), &self.tracer) {
                    span.finish(tracer, at, false);
                }
            }
            Event::Mount(m) => self.metrics.mount(agent, m.writable, m.duration_seconds),
            Event::GpuSharing(_) => self.metrics.gpu_sharing(agent),
            Event::VolumeViolation(v) => {
                self.metrics
                    .volume_violation(agent, v.kind.as_str(), v.active)
            }
            Event::OomMark(_)
            | Event::ContainerCreate(_)
            | Event::VolumeMount(_)
            | Event::DeviceAccess(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::otlp::OtlpConfig;

    /// Every mix of OTLP protocols starts: a gRPC exporter is built inside the worker's
    /// runtime, whichever signal it is for (a gRPC one built outside panics). No collector
    /// listens: the exports fail and are counted, and nothing waits for them at shutdown.
    #[test]
    fn every_mix_of_otlp_protocols_starts() {
        use super::super::otlp::Protocol::{Grpc, HttpProtobuf};
        for (metrics, traces, logs) in [
            (HttpProtobuf, HttpProtobuf, Some(Grpc)),
            (HttpProtobuf, Grpc, Some(HttpProtobuf)),
            (Grpc, HttpProtobuf, None),
            (HttpProtobuf, HttpProtobuf, Some(HttpProtobuf)),
        ] {
            let config = ExportConfig {
                prometheus: None,
                otlp: Some(OtlpConfig {
                    metrics_protocol: metrics,
                    traces_protocol: traces,
                    logs_protocol: logs,
                    metric_interval: Duration::from_secs(60),
                    max_queued_spans: 16,
                }),
                agent: AgentConfig::default(),
                labels: LabelPolicy::default(),
                queue: 16,
                settle_after: Duration::from_secs(2),
                gpu_poll: Duration::from_secs(60),
                watch: None,
            };
            let exporter = Exporter::start(config, WallClock::now())
                .unwrap_or_else(|e| panic!("{metrics:?}/{traces:?}/{logs:?}: {e:#}"));
            exporter.shutdown();
        }
    }

    #[test]
    fn backlog_bounds_waiting_events_and_lets_a_batch_through_an_empty_queue() {
        let backlog = Backlog::new(10);
        assert!(backlog.admit(6));
        assert!(backlog.admit(4), "exactly at the bound");
        assert!(!backlog.admit(1), "past the bound");
        backlog.done(6);
        assert!(!backlog.admit(7));
        assert!(backlog.admit(6));
        backlog.done(10);
        // Nothing waits: even a batch larger than the bound goes through, once.
        assert!(backlog.admit(25));
        assert!(!backlog.admit(1));
        backlog.done(25);
        assert!(backlog.admit(1));
    }
}
