//! The export sinks end to end: the real clawtrace against a real OTLP receiver (gRPC and
//! HTTP/protobuf), its Prometheus endpoint, the audit log and hashed labels, each checked
//! against the containers, processes and signals the test itself made.

mod support;

use std::{
    collections::HashSet,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    process::Command,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value as AnyValue, KeyValue},
    logs::v1::LogRecord,
    trace::v1::{status::StatusCode, Span},
};
use support::otlp::{self, Protocol, Receiver};
use support::*;

/// Starts a process in `cgroup` with AGENT_NAME set to `agent` (raw bytes: may be hostile).
fn spawn_agent(cgroup: &TestCgroup, agent: &[u8], args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .env("AGENT_NAME", std::ffi::OsStr::from_bytes(agent));
    cgroup.spawn(&mut cmd)
}

fn otel_env(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            match receiver.protocol {
                Protocol::Grpc => "grpc".to_string(),
                Protocol::HttpProtobuf => "http/protobuf".to_string(),
            },
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500".to_string()),
        ("OTEL_SERVICE_NAME", "clawtrace-under-test".to_string()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=ci".to_string(),
        ),
    ]
}

fn start_with(scope: &str, receiver: &Receiver, extra: &[&str]) -> Clawtrace {
    let env = otel_env(receiver);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Clawtrace::start_scoped(scope, extra, &env)
}

/// Three containers of one agent: exit 3, killed from outside after SIGTERM, a segfault.
/// Returns (container id, init pid) of each, in that order.
fn scripted_lifecycles(scope: &str, agent: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();

    let mut failed = TestCgroup::new(&format!("{scope}fail"));
    let mut child = spawn_agent(&failed, agent.as_bytes(), &["sh", "-c", "exit 3"]);
    wait_status(&mut child);
    failed.remove();
    out.push((failed.container_id(), child.id()));

    let mut killed = TestCgroup::new(&format!("{scope}kill"));
    let mut child = spawn_agent(&killed, agent.as_bytes(), &["sleep", "1000"]);
    wait_until("sleep running", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
            .is_ok_and(|c| c.trim() == "sleep")
    });
    kill(child.id(), libc::SIGKILL);
    wait_status(&mut child);
    killed.remove();
    out.push((killed.container_id(), child.id()));

    let mut crashed = TestCgroup::new(&format!("{scope}segv"));
    let mut child = spawn_agent(
        &crashed,
        agent.as_bytes(),
        &[
            "/usr/bin/python3",
            "-c",
            "import ctypes, resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); ctypes.string_at(0)",
        ],
    );
    wait_status(&mut child);
    crashed.remove();
    out.push((crashed.container_id(), child.id()));
    out
}

fn check_otlp(protocol: Protocol) {
    let receiver = Receiver::start(protocol);
    let agent = match protocol {
        Protocol::Grpc => "nemo_claw_grpc",
        Protocol::HttpProtobuf => "nemo_claw_http",
    };
    let ct = start_with(agent, &receiver, &[]);
    let containers = scripted_lifecycles(agent, agent);
    let deleted_at = Instant::now();
    for (id, _) in &containers {
        ct.wait_event("container_delete", id, |_| true);
    }

    // Spans: one per container, within a few seconds of its deletion.
    let ids: HashSet<&str> = containers.iter().map(|(id, _)| id.as_str()).collect();
    let spans = receiver.wait_for("three container spans", Duration::from_secs(10), |r| {
        let spans: Vec<_> = otlp::spans(r)
            .into_iter()
            .filter(|(_, s)| {
                otlp::attr_str(&s.attributes, "container.id")
                    .is_some_and(|id| ids.contains(id.as_str()))
            })
            .collect();
        (spans.len() == 3).then_some(spans)
    });
    assert!(
        deleted_at.elapsed() < Duration::from_secs(5),
        "spans took {:?}",
        deleted_at.elapsed()
    );
    for (resource, span) in &spans {
        assert_eq!(span.name, "container");
        assert_eq!(
            otlp::attr_str(resource, "service.name").as_deref(),
            Some("clawtrace-under-test")
        );
        assert_eq!(
            otlp::attr_str(resource, "deployment.environment").as_deref(),
            Some("ci")
        );
        assert_eq!(
            otlp::attr_str(&span.attributes, "clawtrace.agent_name").as_deref(),
            Some(agent)
        );
        assert_eq!(
            otlp::attr_str(&span.attributes, "container.runtime").as_deref(),
            Some("custom")
        );
        assert!(span.end_time_unix_nano > span.start_time_unix_nano);
        let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert!(
            names.contains(&"exec") && names.contains(&"process_exit"),
            "{names:?}"
        );
    }
    let span_of = |i: usize| {
        &spans
            .iter()
            .find(|(_, s)| {
                otlp::attr_str(&s.attributes, "container.id").as_deref() == Some(&containers[i].0)
            })
            .expect("span")
            .1
    };
    let failed = span_of(0);
    assert_eq!(
        otlp::attr_int(&failed.attributes, "process.exit.code"),
        Some(3)
    );
    assert_eq!(
        otlp::attr_str(&failed.attributes, "clawtrace.cause").as_deref(),
        Some("failed")
    );
    assert_eq!(
        otlp::attr_int(&failed.attributes, "process.pid"),
        Some(containers[0].1 as i64)
    );
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let killed = span_of(1);
    assert_eq!(
        otlp::attr_int(&killed.attributes, "process.exit.code"),
        Some(137)
    );
    assert_eq!(
        otlp::attr_str(&killed.attributes, "clawtrace.cause").as_deref(),
        Some("orchestrator_kill")
    );
    assert_eq!(
        otlp::attr_str(&killed.attributes, "clawtrace.signal").as_deref(),
        Some("SIGKILL")
    );
    assert_eq!(
        otlp::attr_int(&killed.attributes, "clawtrace.sender.pid"),
        Some(std::process::id() as i64)
    );
    assert_ne!(
        killed.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let signal = killed
        .events
        .iter()
        .find(|e| e.name == "signal")
        .expect("signal event");
    assert_eq!(
        otlp::attr_str(&signal.attributes, "clawtrace.signal").as_deref(),
        Some("SIGKILL")
    );
    assert_eq!(
        otlp::attr_str(&signal.attributes, "clawtrace.sender.kind").as_deref(),
        Some("outside")
    );
    let crashed = span_of(2);
    assert_eq!(
        otlp::attr_str(&crashed.attributes, "clawtrace.cause").as_deref(),
        Some("crash")
    );
    assert_eq!(
        crashed.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    // Log records: each container's audit records, joined to its span.
    check_log_records(&receiver, agent, &containers, &spans);

    // Metrics: the counts the test made, under the agent's label.
    receiver.wait_for(
        "the metrics of three containers",
        Duration::from_secs(10),
        |r| {
            let deletes = otlp::latest_sum(
                r,
                "container_changes",
                &[("operation", "delete"), ("agent_name", agent)],
            )?;
            (otlp::point_value(&deletes) == 3.0).then_some(())
        },
    );
    receiver.with(|r| {
        let creates = otlp::latest_sum(
            r,
            "container_changes",
            &[("operation", "create"), ("agent_name", agent)],
        );
        assert_eq!(creates.map(|p| otlp::point_value(&p)), Some(3.0));
        for (cause, signal, code) in [
            ("failed", "none", "3"),
            ("orchestrator_kill", "SIGKILL", "137"),
            ("crash", "SIGSEGV", "139"),
        ] {
            let exits = otlp::latest_sum(
                r,
                "container_process_exits",
                &[
                    ("agent_name", agent),
                    ("cause", cause),
                    ("signal", signal),
                    ("exit_code", code),
                ],
            );
            assert_eq!(exits.map(|p| otlp::point_value(&p)), Some(1.0), "{cause}");
            // Each container has one process: its verdict is that process's cause.
            let containers = otlp::latest_sum(
                r,
                "container_exits",
                &[
                    ("agent_name", agent),
                    ("verdict", cause),
                    ("exit_code", code),
                ],
            );
            assert_eq!(
                containers.map(|p| otlp::point_value(&p)),
                Some(1.0),
                "container verdict {cause}"
            );
        }
        let signals = otlp::latest_sum(
            r,
            "container_signals",
            &[
                ("agent_name", agent),
                ("signal", "SIGKILL"),
                ("sender", "outside"),
            ],
        );
        assert_eq!(signals.map(|p| otlp::point_value(&p)), Some(1.0));
        let live = otlp::latest_sum(r, "containers_live", &[("agent_name", agent)]);
        assert_eq!(live.map(|p| otlp::point_value(&p)), Some(0.0));
        let names: HashSet<String> = otlp::metrics(r).into_iter().map(|(_, m)| m.name).collect();
        for name in [
            "container_start_duration",
            "container_lifetime",
            "clawtrace_events",
            "containers_lingering",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        let (resource, _) = otlp::metrics(r).into_iter().next().expect("a metric");
        assert_eq!(
            otlp::attr_str(&resource, "service.name").as_deref(),
            Some("clawtrace-under-test")
        );
    });
    ct.stop();
}

/// The audit records of the scripted containers (exit 3, SIGKILL from this test, segfault) as
/// OTLP log records: the record's fields as attributes, the container span's ids.
fn check_log_records(
    receiver: &Receiver,
    agent: &str,
    containers: &[(String, u32)],
    spans: &[(Vec<KeyValue>, Span)],
) {
    let of = |r: &otlp::Received, id: &str| -> Vec<LogRecord> {
        otlp::logs(r)
            .into_iter()
            .map(|(_, l)| l)
            .filter(|l| otlp::attr_str(&l.attributes, "container_id").as_deref() == Some(id))
            .collect()
    };
    let ids: Vec<&str> = containers.iter().map(|(id, _)| id.as_str()).collect();
    receiver.wait_for(
        "the containers' deletes as log records",
        Duration::from_secs(10),
        |r| {
            ids.iter()
                .all(|id| of(r, id).iter().any(|l| l.event_name == "container_delete"))
                .then_some(())
        },
    );
    receiver.with(|r| {
        let (resource, _) = otlp::logs(r).into_iter().next().expect("a log record");
        assert_eq!(
            otlp::attr_str(&resource, "service.name").as_deref(),
            Some("clawtrace-under-test")
        );
        for (i, (id, init)) in containers.iter().enumerate() {
            let records = of(r, id);
            let names: Vec<&str> = records.iter().map(|l| l.event_name.as_str()).collect();
            let mut want = vec![
                "container_create",
                "process_exec",
                "process_exit",
                "container_delete",
            ];
            // The SIGKILL this test sends, the SIGSEGV the kernel sends.
            if i > 0 {
                want.insert(2, "signal");
            }
            assert_eq!(names, want, "container {id}");
            let span = &spans
                .iter()
                .find(|(_, s)| otlp::attr_str(&s.attributes, "container.id").as_deref() == Some(id))
                .expect("span")
                .1;
            for record in &records {
                assert_eq!(record.trace_id, span.trace_id, "{}", record.event_name);
                assert_eq!(record.span_id, span.span_id, "{}", record.event_name);
                assert_eq!(
                    otlp::attr_str(&record.attributes, "agent_name").as_deref(),
                    Some(agent)
                );
                assert!(record.time_unix_nano > 0);
            }
            let exit = records
                .iter()
                .find(|l| l.event_name == "process_exit")
                .expect("exit record");
            assert_eq!(
                otlp::attr_int(&exit.attributes, "pid"),
                Some(i64::from(*init))
            );
            let delete = records
                .iter()
                .find(|l| l.event_name == "container_delete")
                .expect("delete record");
            let (verdict, severity) = [
                ("failed", "WARN"),
                ("orchestrator_kill", "INFO"),
                ("crash", "WARN"),
            ][i];
            assert_eq!(
                otlp::attr_str(&delete.attributes, "verdict").as_deref(),
                Some(verdict)
            );
            assert_eq!(delete.severity_text, severity, "{verdict}");
        }
        // Who killed the second: this test, as a map of the sender's fields.
        let killed = of(r, &containers[1].0);
        let exit = killed
            .iter()
            .find(|l| l.event_name == "process_exit")
            .expect("exit record");
        let Some(AnyValue::KvlistValue(sender)) = otlp::attr(&exit.attributes, "sender") else {
            panic!("no sender map in {:?}", exit.attributes);
        };
        assert_eq!(
            otlp::attr_int(&sender.values, "pid"),
            Some(i64::from(std::process::id()))
        );
        let body = match exit.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(AnyValue::StringValue(text)) => text.clone(),
            other => panic!("body {other:?}"),
        };
        assert!(body.contains("SIGKILL"), "{body}");
    });
}

#[test]
fn otlp_grpc_metrics_and_container_spans() {
    require_privileged!();
    check_otlp(Protocol::Grpc);
}

#[test]
fn otlp_http_protobuf_metrics_and_container_spans() {
    require_privileged!();
    check_otlp(Protocol::HttpProtobuf);
}

#[test]
fn collector_outage_does_not_stop_tracing_and_counters_stay_continuous() {
    require_privileged!();
    let mut receiver = Receiver::start(Protocol::Grpc);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = "outage_claw";
    let ct = start_with(agent, &receiver, &["--prometheus-listen", &listen]);
    let lifecycle = |tag: &str| {
        let mut cgroup = TestCgroup::new(&format!("{agent}{tag}"));
        let mut child = spawn_agent(&cgroup, agent.as_bytes(), &["true"]);
        wait_status(&mut child);
        cgroup.remove();
        cgroup.container_id()
    };
    let first = lifecycle("before");
    ct.wait_event("container_delete", &first, |_| true);
    let deletes = |r: &otlp::Received| {
        otlp::latest_sum(
            r,
            "container_changes",
            &[("operation", "delete"), ("agent_name", agent)],
        )
    };
    let before = receiver.wait_for("the first delete", Duration::from_secs(10), |r| deletes(r));
    assert_eq!(otlp::point_value(&before), 1.0);

    receiver.stop();
    let rss_before = ct.rss_kb();
    let outage = Instant::now();
    let mut during = Vec::new();
    while outage.elapsed() < Duration::from_secs(30) {
        let id = lifecycle("during");
        // Tracing goes on: each container is reported at once, collector or not.
        let reported = Instant::now();
        ct.wait_event("container_delete", &id, |_| true);
        assert!(reported.elapsed() < Duration::from_secs(2));
        during.push(id);
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = http_get(&listen, "/metrics").expect("scrape");
    let errors = sample(
        &metrics,
        r#"clawtrace_export_errors_total{sink="otlp_metrics"}"#,
    )
    .unwrap_or(0.0);
    assert!(errors > 0.0, "export failures were not counted:\n{metrics}");
    let rss_after = ct.rss_kb();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB during the outage"
    );

    receiver.restart();
    // Held spans go out with the next batch: the next container's.
    let after_outage = lifecycle("after");
    ct.wait_event("container_delete", &after_outage, |_| true);
    let total = 2.0 + during.len() as f64;
    let after = receiver.wait_for(
        "the deletes after the outage",
        Duration::from_secs(15),
        |r| deletes(r).filter(|p| otlp::point_value(p) == total),
    );
    // Cumulative and continuous: the same series, started at the same time, counting on.
    assert_eq!(after.start_time_unix_nano, before.start_time_unix_nano);
    // Spans of containers deleted during the outage were held and sent once it was back (the
    // bound is far above what this test made, so none was dropped).
    let ids: HashSet<&str> = during.iter().map(String::as_str).collect();
    receiver.wait_for("the spans of the outage", Duration::from_secs(15), |r| {
        let seen: HashSet<String> = otlp::spans(r)
            .into_iter()
            .filter_map(|(_, s)| otlp::attr_str(&s.attributes, "container.id"))
            .filter(|id| ids.contains(id.as_str()))
            .collect();
        (seen.len() == ids.len()).then_some(())
    });
    // So were their log records.
    receiver.wait_for(
        "the log records of the outage",
        Duration::from_secs(15),
        |r| {
            let seen: HashSet<String> = otlp::logs(r)
                .into_iter()
                .filter(|(_, l)| l.event_name == "container_delete")
                .filter_map(|(_, l)| otlp::attr_str(&l.attributes, "container_id"))
                .filter(|id| ids.contains(id.as_str()))
                .collect();
            (seen.len() == ids.len()).then_some(())
        },
    );
    let metrics = http_get(&listen, "/metrics").expect("scrape");
    for dropped in [
        "clawtrace_spans_dropped_total",
        "clawtrace_log_records_dropped_total",
    ] {
        assert_eq!(
            sample(&metrics, dropped),
            Some(0.0),
            "{dropped}:\n{metrics}"
        );
    }
    let errors = sample(
        &metrics,
        r#"clawtrace_export_errors_total{sink="otlp_logs"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        errors > 0.0,
        "failed log exports were not counted:\n{metrics}"
    );
    ct.stop();
}

fn label_values(exposition: &str) -> HashSet<String> {
    exposition
        .lines()
        .filter(|l| l.starts_with("container_changes_total{"))
        .filter_map(|l| {
            l.split("agent_name=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn hostile_agent_names_stay_within_the_cap_and_are_all_counted() {
    require_privileged!();
    const CONTAINERS: usize = 160;
    const CAP: usize = 16;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cap = CAP.to_string();
    let ct = Clawtrace::start_scoped(
        "hostile",
        &[
            "--prometheus-listen",
            &listen,
            "--label-max-values",
            &cap,
            "--agent-sources",
            "env",
        ],
        &[],
    );
    let hostile = |i: usize| -> Vec<u8> {
        let mut name = match i % 8 {
            0 => format!("agent\"{i}\"}} evil{{x=\"1\"}}").into_bytes(),
            1 => format!("line\nbreak{i}\r\n# HELP fake").into_bytes(),
            2 => [b"bad\xff\xfeutf8-".as_slice(), i.to_string().as_bytes()].concat(),
            3 => format!("{}{i}", "x".repeat(100_000)).into_bytes(),
            4 => format!("emoji🦀{i}\\back\\slash").into_bytes(),
            5 => format!("  spaced  name {i} ").into_bytes(),
            6 => format!("-_.{i}._-").into_bytes(),
            _ => format!("ok_name_{i}").into_bytes(),
        };
        name.retain(|&b| b != 0);
        name
    };
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in (w..CONTAINERS).step_by(4) {
                    let mut cgroup = TestCgroup::new(&format!("hostile{i}"));
                    let mut child = spawn_agent(&cgroup, &hostile(i), &["true"]);
                    wait_status(&mut child);
                    cgroup.remove();
                    ids.push(cgroup.container_id());
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    for id in &ids {
        ct.wait_event("container_delete", id, |_| true);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = http_get(&listen, "/metrics").expect("scrape");
        let creates: f64 = m
            .lines()
            .filter(|l| l.starts_with("container_changes_total{operation=\"create\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if creates >= CONTAINERS as f64 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The exposition stays well formed: every line is a comment or `name{labels} value`.
    for line in metrics.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        assert!(
            series.chars().all(|c| c.is_ascii_graphic()),
            "unsafe characters in {line:?}"
        );
    }
    let values = label_values(&metrics);
    let ordinary: Vec<&String> = values
        .iter()
        .filter(|v| *v != "_overflow" && *v != "unknown")
        .collect();
    assert!(
        ordinary.len() <= CAP,
        "{} label values: {values:?}",
        ordinary.len()
    );
    for value in &values {
        assert!(
            !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
            "unsafe label value {value:?}"
        );
    }
    // Every container was counted, under a real value or _overflow.
    let creates: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("container_changes_total{operation=\"create\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(creates, CONTAINERS as f64);
    let overflow = sample(&metrics, "clawtrace_label_overflow_total").expect("overflow counter");
    let under_overflow: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("container_changes_total{operation=\"create\",agent_name=\"_overflow\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(overflow > 0.0);
    assert_eq!(overflow, under_overflow);
    ct.stop();
}

#[test]
fn audit_log_has_one_line_per_exit() {
    require_privileged!();
    let dir = std::env::temp_dir().join(format!("clawtrace-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("audit.jsonl");
    let log_arg = log.to_string_lossy().to_string();
    let ct = Clawtrace::start_scoped(
        "audit",
        &[
            "--audit-log",
            &log_arg,
            "--audit-log-max-bytes",
            "4096",
            "--audit-log-keep",
            "2",
        ],
        &[],
    );
    let mut pids = Vec::new();
    let mut cgroup = TestCgroup::new("audit");
    for code in 0..12 {
        let mut child = cgroup.spawn(Command::new("sh").args(["-c", &format!("exit {code}")]));
        wait_status(&mut child);
        pids.push(child.id());
    }
    cgroup.remove();
    ct.wait_event("container_delete", &cgroup.container_id(), |_| true);
    ct.stop();

    let mut lines = Vec::new();
    for file in [
        dir.join("audit.jsonl.2"),
        dir.join("audit.jsonl.1"),
        log.clone(),
    ] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{} ends mid-line",
                file.display()
            );
            assert!(text.len() <= 4096, "{} over the cap", file.display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
            lines.extend(text.lines().map(str::to_string));
        }
    }
    // The container's process exits (its creation and deletion are records too).
    let exits: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|v: &serde_json::Value| v["container_id"] == cgroup.container_id())
        .filter(|v: &serde_json::Value| v["event"] == "process_exit")
        .collect();
    // Rotation keeps two old files; the newest exits are all there, in order.
    assert!(!exits.is_empty());
    let tail = &pids[pids.len() - exits.len()..];
    for (exit, pid) in exits.iter().zip(tail) {
        assert_eq!(exit["event"], "process_exit");
        assert_eq!(exit["pid"], *pid);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `clawtrace explain` tells a real container's life from the audit log: its creation, its
/// init, the SIGTERM and the SIGKILL this test sent (with this test as the sender), and the
/// verdict in one sentence; by a prefix of its id, and as JSON.
#[test]
fn explain_tells_a_container_from_the_audit_log() {
    require_privileged!();
    let dir = std::env::temp_dir().join(format!("clawtrace-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("audit.jsonl");
    let log_arg = log.to_string_lossy().to_string();
    let ct = Clawtrace::start_scoped("explain", &["--audit-log", &log_arg], &[]);
    let mut cgroup = TestCgroup::new("explain");
    // An init that ignores SIGTERM: the kill needs the SIGKILL after it.
    let mut child = cgroup.spawn(Command::new("sh").args(["-c", "trap '' TERM; exec sleep 1000"]));
    let pid = child.id();
    let id = cgroup.container_id();
    ct.wait_event("process_exec", &id, |v| v["filename"] == "/usr/bin/sleep");
    kill(pid, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    kill(pid, libc::SIGKILL);
    let status = wait_status(&mut child);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    cgroup.remove();
    ct.wait_event("container_delete", &id, |_| true);
    ct.stop();

    let prefix = &id[..id.len() - 3];
    let explain = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clawtrace"))
            .args(["explain", prefix, "--audit-log", &log_arg])
            .args(extra)
            .output()
            .expect("clawtrace explain")
    };
    let out = explain(&[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let me = std::process::id();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("container {id}"), "{text}");
    for want in [
        format!("created by custom (cgroup /{})", cgroup.name),
        format!("init sleep[{pid}] /usr/bin/sleep"),
        format!("SIGTERM to sleep[{pid}] from "),
        format!("SIGKILL to sleep[{pid}] from "),
        format!("sleep[{pid}] exited 137 (orchestrator_kill)"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&want)),
            "no {want:?} in\n{text}"
        );
    }
    let verdict = lines.last().expect("a verdict line");
    let sent = format!("killed from outside the container: SIGKILL to sleep[{pid}] from ");
    assert!(
        verdict.starts_with(&format!("verdict: {sent}")),
        "{verdict}"
    );
    assert!(
        verdict.contains(&format!("[{me}]")),
        "the sender is this test: {verdict}"
    );
    assert!(verdict.contains(" s after SIGTERM"), "{verdict}");
    // As JSON: the same verdict, and the records are the audit log's own.
    let out = explain(&["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["container_id"], id.as_str());
    assert_eq!(
        format!(
            "verdict: {}",
            report["verdict"].as_str().unwrap_or_default()
        ),
        *verdict
    );
    // A prefix of no container is one line on stderr, and a failure.
    let out = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
        .args(["explain", "no-such-container", "--audit-log", &log_arg])
        .output()
        .expect("clawtrace explain");
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn hashed_labels_map_back_with_labels_lookup() {
    require_privileged!();
    let dir = std::env::temp_dir().join(format!("clawtrace-labels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.to_string_lossy().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let ct = Clawtrace::start_scoped(
        "hash",
        &[
            "--prometheus-listen",
            &listen,
            "--label-mode",
            "hash",
            "--state-dir",
            &state,
        ],
        &[],
    );
    let mut cgroup = TestCgroup::new("hash");
    let mut child = spawn_agent(&cgroup, b"nemo_claw", &["true"]);
    wait_status(&mut child);
    cgroup.remove();
    ct.wait_event("container_delete", &cgroup.container_id(), |_| true);
    let hashed = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = http_get(&listen, "/metrics").expect("scrape");
            if let Some(h) = label_values(&metrics)
                .into_iter()
                .find(|v| v.starts_with("h_"))
            {
                assert!(
                    !metrics.contains("nemo_claw"),
                    "plaintext leaked:\n{metrics}"
                );
                break h;
            }
            assert!(Instant::now() < deadline, "no hashed label in\n{metrics}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ct.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
        .args(["labels", "lookup", &hashed, "--state-dir", &state])
        .output()
        .expect("labels lookup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "nemo_claw");
    for file in ["label-key", "label-lookup.jsonl"] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
        .args([
            "labels",
            "lookup",
            "h_0000000000000000",
            "--state-dir",
            &state,
        ])
        .output()
        .expect("labels lookup");
    assert!(!missing.status.success());
    std::fs::remove_dir_all(dir).unwrap();
}
