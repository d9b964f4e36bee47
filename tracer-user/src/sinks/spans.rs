//! One span per container lifetime, creation to deletion, with a span event for each exec,
//! signal received, OOM mark and process exit. Attributes follow the OpenTelemetry semantic
//! conventions where they exist (`container.*`, `process.*`) and use `clawtrace.*` for the rest.
//! The span is assembled from the container's events and handed to the SDK at deletion, so a
//! container that lives for days costs only its bounded event list meanwhile.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::{
    trace::{Span as _, SpanId, SpanKind, Status, TraceId, Tracer as _},
    KeyValue,
};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, SdkTracer};

use super::metrics::AgentName;
use crate::{
    model::attribution::ExitCause,
    model::{ContainerRef, DeviceDecision, Event, Sender},
    sys::WallClock,
};

/// Span events kept per container; later ones are counted in `clawtrace.events_dropped`.
pub const MAX_SPAN_EVENTS: usize = 128;

struct SpanEvent {
    name: &'static str,
    at: SystemTime,
    attributes: Vec<KeyValue>,
}

/// What is known of one container's span so far.
pub struct ContainerSpan {
    /// Chosen at creation, so that what is said of the container meanwhile (its log records)
    /// names the span it will be.
    trace_id: TraceId,
    span_id: SpanId,
    container: ContainerRef,
    agent_name: AgentName,
    start: SystemTime,
    events: Vec<SpanEvent>,
    dropped: u64,
    /// The init's pid, executable name and exit.
    init_pid: Option<u32>,
    init_exe: Option<String>,
    init_exit: Option<Vec<KeyValue>>,
    init_cause: Option<ExitCause>,
    /// The container's verdict, and the pid and name of the process it is about.
    verdict: Option<(ExitCause, u32, String)>,
    start_seconds: Option<f64>,
    /// Of that start, the seconds spent in mount system calls.
    mount_seconds: Option<f64>,
    /// Device nodes it opened.
    devices: Vec<String>,
}

pub fn system_time(clock: &WallClock, mono_ns: u64) -> SystemTime {
    let unix = clock.unix_ns(mono_ns).max(0) as u64;
    UNIX_EPOCH + Duration::from_nanos(unix)
}

fn sender_attributes(prefix: &'static str, sender: &Sender, out: &mut Vec<KeyValue>) {
    out.push(KeyValue::new(
        format!("{prefix}.pid"),
        i64::from(sender.pid),
    ));
    out.push(KeyValue::new(
        format!("{prefix}.comm"),
        sender.comm.to_string(),
    ));
    out.push(KeyValue::new(
        format!("{prefix}.cgroup_id"),
        sender.cgroup_id as i64,
    ));
    if let Some(id) = &sender.container_id {
        out.push(KeyValue::new(format!("{prefix}.container_id"), id.clone()));
    }
}

impl ContainerSpan {
    pub fn new(container: ContainerRef, agent_name: AgentName, start: SystemTime) -> ContainerSpan {
        let ids = RandomIdGenerator::default();
        ContainerSpan {
            trace_id: ids.new_trace_id(),
            span_id: ids.new_span_id(),
            container,
            agent_name,
            start,
            events: Vec::new(),
            dropped: 0,
            init_pid: None,
            init_exe: None,
            init_exit: None,
            init_cause: None,
            verdict: None,
            start_seconds: None,
            mount_seconds: None,
            devices: Vec::new(),
        }
    }

    /// The trace and span ids the span will have.
    pub fn ids(&self) -> (TraceId, SpanId) {
        (self.trace_id, self.span_id)
    }

    fn push(&mut self, name: &'static str, at: SystemTime, attributes: Vec<KeyValue>) {
        if self.events.len() < MAX_SPAN_EVENTS {
            self.events.push(SpanEvent {
                name,
                at,
                attributes,
            });
        } else {
            self.dropped += 1;
        }
    }

    /// Adds what `event` says about the container.
    pub fn record(&mut self, event: &Event, at: SystemTime) {
        // Kubernetes names found after the creation (at the init's exec) still name the span.
        if self.container.k8s.is_none() {
            if let Some(k8s) = event.container().and_then(|c| c.k8s.as_ref()) {
                self.container.k8s = Some(k8s.clone());
            }
        }
        match event {
            Event::ProcessExec(e) => {
                if e.is_container_init {
                    self.init_pid = Some(e.pid);
                    self.init_exe = Some(e.comm.to_string());
                }
                if e.start_seconds.is_some() {
                    self.start_seconds = e.start_seconds;
                    self.mount_seconds = e.mount_seconds;
                }
                self.push(
                    "exec",
                    at,
                    vec![
                        KeyValue::new("process.pid", i64::from(e.pid)),
                        KeyValue::new("process.executable.name", e.comm.to_string()),
                        KeyValue::new("process.executable.path", e.filename.clone()),
                        KeyValue::new("clawtrace.is_container_init", e.is_container_init),
                    ],
                );
            }
            Event::Signal(s) => {
                let mut attributes = vec![
                    KeyValue::new("clawtrace.signal", s.signal.clone()),
                    KeyValue::new("process.pid", i64::from(s.target_pid)),
                    KeyValue::new("clawtrace.sender.kind", s.sender_kind.as_str()),
                    KeyValue::new("clawtrace.si_code", i64::from(s.si_code)),
                ];
                sender_attributes("clawtrace.sender", &s.sender, &mut attributes);
                self.push("signal", at, attributes);
            }
            Event::OomMark(o) => self.push(
                "oom_mark",
                at,
                vec![
                    KeyValue::new("process.pid", i64::from(o.pid)),
                    KeyValue::new("clawtrace.anon_rss_kb", o.anon_rss_kb as i64),
                ],
            ),
            Event::ProcessExit(e) => {
                let mut attributes = vec![
                    KeyValue::new("process.pid", i64::from(e.pid)),
                    KeyValue::new("process.executable.name", e.comm.to_string()),
                    KeyValue::new("process.exit.code", i64::from(e.exit_code)),
                    KeyValue::new("clawtrace.cause", e.cause.as_str()),
                    KeyValue::new("clawtrace.is_container_init", e.is_container_init),
                    KeyValue::new("clawtrace.core_dumped", e.core_dumped),
                ];
                if let Some(signal) = &e.signal {
                    attributes.push(KeyValue::new("clawtrace.signal", signal.clone()));
                }
                if let Some(sender) = &e.sender {
                    sender_attributes("clawtrace.sender", sender, &mut attributes);
                }
                if let (Some(from), Some(grace)) = (&e.escalated_from, e.grace_seconds) {
                    attributes.push(KeyValue::new("clawtrace.escalated_from", from.clone()));
                    attributes.push(KeyValue::new("clawtrace.grace_seconds", grace));
                }
                if e.is_container_init {
                    self.init_exit = Some(attributes.clone());
                    self.init_cause = Some(e.cause);
                }
                self.push("process_exit", at, attributes);
            }
            Event::ContainerLingering(l) => self.push(
                "lingering",
                at,
                vec![KeyValue::new(
                    "clawtrace.processes_left",
                    l.processes_left as i64,
                )],
            ),
            Event::Mount(m) => {
                let attributes = vec![
                    KeyValue::new("process.pid", i64::from(m.pid)),
                    KeyValue::new("clawtrace.mount.call", m.call),
                    KeyValue::new("clawtrace.mount.source", m.source.clone()),
                    KeyValue::new("clawtrace.mount.target", m.target.clone()),
                    KeyValue::new("clawtrace.mount.result", m.result),
                    KeyValue::new("clawtrace.mount.duration_seconds", m.duration_seconds),
                    KeyValue::new("clawtrace.mount.writable", m.writable),
                ];
                self.push("mount", at, attributes);
            }
            Event::VolumeMount(v) => self.push(
                "volume",
                at,
                vec![
                    KeyValue::new("clawtrace.volume.source", v.bind.source.clone()),
                    KeyValue::new("clawtrace.volume.target", v.bind.target.clone()),
                    KeyValue::new("clawtrace.volume.read_only", v.bind.read_only.as_str()),
                ],
            ),
            Event::VolumeViolation(v) => self.push(
                if v.active {
                    "volume_violation"
                } else {
                    "volume_violation_end"
                },
                at,
                vec![
                    KeyValue::new("clawtrace.violation.kind", v.kind.as_str()),
                    KeyValue::new("clawtrace.volume.source", v.source.clone()),
                    KeyValue::new("clawtrace.violation.containers", v.containers.join(",")),
                ],
            ),
            Event::DeviceAccess(d) => {
                let denied = d.decision == DeviceDecision::Denied;
                if d.first_use || denied {
                    if d.first_use && !self.devices.contains(&d.device) {
                        self.devices.push(d.device.clone());
                    }
                    let mut attributes = vec![
                        KeyValue::new("clawtrace.device", d.device.clone()),
                        KeyValue::new("clawtrace.device.access", d.access.clone()),
                        KeyValue::new("clawtrace.device.decision", d.decision.as_str()),
                    ];
                    if let Some(pid) = d.pid {
                        attributes.push(KeyValue::new("process.pid", i64::from(pid)));
                    }
                    self.push("device_access", at, attributes);
                }
            }
            Event::GpuSharing(g) => self.push(
                "gpu_sharing",
                at,
                vec![
                    KeyValue::new("clawtrace.device", g.device.clone()),
                    KeyValue::new("clawtrace.gpu.containers", g.containers.join(",")),
                ],
            ),
            Event::ContainerDelete(d) => {
                if let (Some(cause), Some(p)) = (d.verdict, &d.verdict_process) {
                    self.verdict = Some((cause, p.pid, p.comm.to_string()));
                }
            }
            Event::ContainerCreate(_) => {}
        }
    }

    /// Hands the finished span to the SDK, ending at `end`. `ended_by_shutdown`: the container
    /// still existed when clawtrace stopped.
    pub fn finish(self, tracer: &SdkTracer, end: SystemTime, ended_by_shutdown: bool) {
        let c = &self.container;
        let mut attributes = vec![
            KeyValue::new("container.id", c.container_id.clone()),
            KeyValue::new("container.runtime", c.runtime),
            KeyValue::new("clawtrace.agent_name", self.agent_name.clone()),
            KeyValue::new("clawtrace.cgroup.path", c.cgroup_path.clone()),
            KeyValue::new("clawtrace.cgroup.id", c.cgroup_id as i64),
        ];
        if let Some(k8s) = &c.k8s {
            attributes.push(KeyValue::new("k8s.pod.name", k8s.pod_name.clone()));
            attributes.push(KeyValue::new("k8s.namespace.name", k8s.namespace.clone()));
            if let Some(uid) = &k8s.pod_uid {
                attributes.push(KeyValue::new("k8s.pod.uid", uid.clone()));
            }
            if let Some(name) = &k8s.container_name {
                attributes.push(KeyValue::new("k8s.container.name", name.clone()));
            }
        }
        if let Some(pid) = self.init_pid {
            attributes.push(KeyValue::new("process.pid", i64::from(pid)));
        }
        if let Some(exe) = &self.init_exe {
            attributes.push(KeyValue::new("process.executable.name", exe.clone()));
        }
        if let Some(start) = self.start_seconds {
            attributes.push(KeyValue::new("clawtrace.start_seconds", start));
        }
        if !self.devices.is_empty() {
            attributes.push(KeyValue::new(
                "clawtrace.gpu.devices",
                self.devices.join(","),
            ));
        }
        if let Some(mounts) = self.mount_seconds {
            attributes.push(KeyValue::new("clawtrace.start.mount_seconds", mounts));
        }
        if let Some(exit) = &self.init_exit {
            // The container's outcome is its init's: lift its exit attributes to the span.
            attributes.extend(
                exit.iter()
                    .filter(|kv| kv.key.as_str() != "clawtrace.is_container_init")
                    .filter(|kv| {
                        kv.key.as_str() != "process.pid"
                            && kv.key.as_str() != "process.executable.name"
                    })
                    .cloned(),
            );
        }
        if let Some((cause, pid, comm)) = &self.verdict {
            attributes.push(KeyValue::new("clawtrace.verdict", cause.as_str()));
            attributes.push(KeyValue::new("clawtrace.verdict.pid", i64::from(*pid)));
            attributes.push(KeyValue::new("clawtrace.verdict.comm", comm.clone()));
        }
        if self.dropped > 0 {
            attributes.push(KeyValue::new(
                "clawtrace.events_dropped",
                self.dropped as i64,
            ));
        }
        if ended_by_shutdown {
            attributes.push(KeyValue::new("clawtrace.ended_by_shutdown", true));
        }
        let mut span = tracer
            .span_builder("container")
            .with_trace_id(self.trace_id)
            .with_span_id(self.span_id)
            .with_kind(SpanKind::Internal)
            .with_start_time(self.start)
            .with_attributes(attributes)
            .start(tracer);
        for event in self.events {
            span.add_event_with_timestamp(event.name, event.at, event.attributes);
        }
        match self.verdict.as_ref().map(|v| v.0).or(self.init_cause) {
            Some(
                cause @ (ExitCause::Crash
                | ExitCause::OomKill
                | ExitCause::PolicyKill
                | ExitCause::Failed),
            ) => {
                span.set_status(Status::error(cause.as_str()));
            }
            Some(_) => span.set_status(Status::Ok),
            None => {}
        }
        span.end_with_timestamp(end);
    }
}
