//! Faults and privilege, end to end: a ring buffer forced to overflow, a collector gone for a
//! minute, clawtrace killed mid-storm and started again, a stop that must flush every sink, and
//! the capabilities it keeps once attached. Each test counts against ground truth it keeps.

mod support;

use std::{
    collections::HashSet,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::otlp::{self, Protocol, Receiver};
use support::*;

/// Tests here count the kernel's records, so they take turns: another test's containers would
/// add records of their own.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A container whose init exits at once.
fn short_lived(tag: &str) -> (String, u32) {
    let mut cgroup = TestCgroup::new(tag);
    let mut child = cgroup.spawn(&mut Command::new("true"));
    wait_status(&mut child);
    cgroup.remove();
    (cgroup.container_id(), child.id())
}

fn scrape(listen: &str) -> String {
    http_get(listen, "/metrics").expect("scrape /metrics")
}

/// The sum of every sample of `family` (e.g. `clawtrace_events_total`) whose labels contain
/// `label` (e.g. `kind="exit"`).
fn total(exposition: &str, family: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn an_overflowing_ring_buffer_is_counted_exactly_and_tracing_goes_on() {
    require_privileged!();
    let _turn = turn();
    // Each container's init starts 200 processes, then SIGKILLs them all at once: 200 signal
    // records and 200 exits that each carry the kernel's signal memory, bursts far beyond what
    // a 4 KiB buffer holds between two reads.
    const CONTAINERS: usize = 5;
    const CHILDREN: usize = 200;
    let listen = format!("127.0.0.1:{}", free_port());
    // The smallest ring buffer clawtrace accepts.
    let ct = Clawtrace::start_scoped(
        "ovf",
        &["--ring-buffer-size", "4096", "--prometheus-listen", &listen],
        &[],
    );
    let before = scrape(&listen);
    let exits_before = total(&before, "clawtrace_events_total", r#"kind="exit""#);
    let lost_before = total(
        &before,
        "clawtrace_events_lost_total",
        r#"probe="sched_process_exit""#,
    );
    let script = format!(
        "i=0; pids=; while [ $i -lt {CHILDREN} ]; do sleep 60 & pids=\"$pids $!\"; i=$((i+1)); done; \
         kill -KILL $pids; wait"
    );
    for n in 0..CONTAINERS {
        let mut cgroup = TestCgroup::new(&format!("ovf{n}"));
        let mut child = cgroup.spawn(Command::new("sh").args(["-c", &script]));
        assert_eq!(wait_status(&mut child), 0);
        cgroup.remove();
    }
    // The processes that exited in the containers: every init and its children.
    let truth = (CONTAINERS * (CHILDREN + 1)) as f64;
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (exits, lost) = loop {
        let m = scrape(&listen);
        let exits = total(&m, "clawtrace_events_total", r#"kind="exit""#) - exits_before;
        let lost = total(
            &m,
            "clawtrace_events_lost_total",
            r#"probe="sched_process_exit""#,
        ) - lost_before;
        if exits + lost >= truth || Instant::now() > deadline {
            break (exits, lost);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // What arrived plus what was counted lost is exactly what happened.
    assert!(lost > 0.0, "the bursts did not overflow the buffer");
    assert_eq!(exits + lost, truth, "{exits} delivered + {lost} lost");
    // Still tracing: a container made now is reported in full.
    let (id, pid) = short_lived("ovf-after");
    ct.wait_event("process_exit", &id, |v| v["pid"] == pid);
    let stderr = ct.stop();
    assert!(
        stderr.iter().any(|l| l.contains("ring buffer full")),
        "losses must be logged: {stderr:?}"
    );
}

#[test]
fn a_collector_gone_for_a_minute_loses_only_what_exceeds_the_bound() {
    require_privileged!();
    let _turn = turn();
    const HELD: usize = 5;
    let mut receiver = Receiver::start(Protocol::Grpc);
    let listen = format!("127.0.0.1:{}", free_port());
    let held = HELD.to_string();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ct = Clawtrace::start_scoped(
        "out",
        &[
            "--prometheus-listen",
            &listen,
            "--otlp-max-queued-spans",
            &held,
        ],
        &env,
    );
    let (first, _) = short_lived("out-first");
    ct.wait_event("container_delete", &first, |_| true);
    let deletes = |r: &otlp::Received| {
        otlp::latest_sum(
            r,
            "container_changes",
            &[("operation", "delete"), ("agent_name", "unknown")],
        )
    };
    let before = receiver.wait_for("the first delete", Duration::from_secs(10), deletes);

    receiver.stop();
    let rss_before = ct.rss_kb();
    let outage = Instant::now();
    let mut during = Vec::new();
    while outage.elapsed() < Duration::from_secs(60) {
        let (id, _) = short_lived("out-during");
        ct.wait_event("container_delete", &id, |_| true);
        during.push(id);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let rss_after = ct.rss_kb();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    let m = scrape(&listen);
    assert!(
        total(
            &m,
            "clawtrace_export_errors_total",
            r#"sink="otlp_metrics""#
        ) > 0.0
    );

    receiver.restart();
    let (after, _) = short_lived("out-after");
    ct.wait_event("container_delete", &after, |_| true);
    let want = (2 + during.len()) as f64;
    let continued = receiver.wait_for(
        "the deletes after the outage",
        Duration::from_secs(15),
        |r| deletes(r).filter(|p| otlp::point_value(p) == want),
    );
    assert_eq!(
        continued.start_time_unix_nano, before.start_time_unix_nano,
        "one cumulative series"
    );
    // The newest spans were held; the older ones were dropped and counted.
    let outage_ids: HashSet<&str> = during.iter().map(String::as_str).collect();
    let delivered = receiver.wait_for("the held spans", Duration::from_secs(15), |r| {
        let ids: HashSet<String> = otlp::spans(r)
            .into_iter()
            .filter_map(|(_, s)| otlp::attr_str(&s.attributes, "container.id"))
            .collect();
        ids.contains(&after).then(|| {
            ids.into_iter()
                .filter(|id| outage_ids.contains(id.as_str()))
                .count()
        })
    });
    let dropped =
        sample(&scrape(&listen), "clawtrace_spans_dropped_total").expect("dropped counter");
    assert_eq!(delivered, HELD, "the bound's worth of spans is delivered");
    assert_eq!(
        dropped as usize,
        during.len() - HELD,
        "every other span is counted dropped"
    );
    ct.stop();
}

#[test]
fn killed_mid_storm_and_started_again_it_finds_the_live_containers() {
    require_privileged!();
    let _turn = turn();
    let dir = std::env::temp_dir().join(format!("clawtrace-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl").to_string_lossy().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--audit-log",
        audit.as_str(),
        "--prometheus-listen",
        listen.as_str(),
    ];

    // Long-lived containers exist across the restart.
    let mut live: Vec<(TestCgroup, std::process::Child)> = (0..5)
        .map(|i| {
            let cgroup = TestCgroup::new(&format!("rst-live{i}"));
            let child = cgroup.spawn(Command::new("sleep").arg("1000"));
            (cgroup, child)
        })
        .collect();
    let first = Clawtrace::start_scoped("rst", &args, &[]);
    // A storm of short-lived containers, with clawtrace SIGKILLed in the middle of it.
    let storm = std::thread::spawn(|| {
        (0..150)
            .map(|i| short_lived(&format!("rst-storm{i}")).0)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    kill(first.pid(), libc::SIGKILL);
    drop(first);
    let second = Clawtrace::start_scoped("rst", &args, &[]);
    storm.join().expect("storm");

    // Every live container is found again.
    for (cgroup, child) in &live {
        let create = second.wait_event("container_create", &cgroup.container_id(), |v| {
            v["preexisting"] == true
        });
        assert_eq!(create["cgroup_id"], cgroup.id());
        assert_eq!(create["init_pid"], child.id());
    }
    // Their deletions are counted.
    for (cgroup, child) in &mut live {
        kill(child.id(), libc::SIGKILL);
        wait_status(child);
        cgroup.remove();
    }
    for (cgroup, child) in &live {
        let exit = second.wait_event("process_exit", &cgroup.container_id(), |v| {
            v["pid"] == child.id()
        });
        assert_eq!(exit["cause"], "orchestrator_kill");
        assert_eq!(exit["is_container_init"], true);
        second.wait_event("container_delete", &cgroup.container_id(), |_| true);
    }
    // The export thread counts them after the events are printed: wait for it.
    let mut metrics = scrape(&listen);
    wait_until("the deletions counted", Duration::from_secs(5), || {
        metrics = scrape(&listen);
        total(&metrics, "container_changes_total", r#"operation="delete""#) >= 5.0
    });
    // No gauge goes negative.
    for line in metrics.lines().filter(|l| l.starts_with("containers_")) {
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 0.0, "{line}");
    }
    second.stop();
    // The audit log holds no broken line, whatever the SIGKILL interrupted.
    let text = std::fs::read_to_string(&audit).expect("audit log");
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("broken line {line:?}: {e}"));
        assert!(
            v["event"].is_string() && v["container_id"].is_string(),
            "{line}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigterm_flushes_every_sink_and_exits_within_five_seconds() {
    require_privileged!();
    let _turn = turn();
    let receiver = Receiver::start(Protocol::Grpc);
    let dir = std::env::temp_dir().join(format!("clawtrace-stop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl").to_string_lossy().to_string();
    // A long export interval: only the flush at exit can deliver the metrics.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ct = Clawtrace::start_scoped("stop", &["--audit-log", &audit], &env);
    let (id, pid) = short_lived("stop-one");
    ct.wait_event("container_delete", &id, |_| true);
    let pid_of_clawtrace = ct.pid();
    kill(pid_of_clawtrace, libc::SIGTERM);
    let stopped = Instant::now();
    // Gone (a zombie until reaped) within 5 s; `stop` then checks its exit status is 0.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid_of_clawtrace}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
    };
    while running() {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ct.stop();
    // The span and the metrics of that container reached the collector: flushed at exit.
    receiver.wait_for("the span flushed at exit", Duration::from_secs(2), |r| {
        otlp::spans(r)
            .iter()
            .any(|(_, s)| otlp::attr_str(&s.attributes, "container.id").as_deref() == Some(&id))
            .then_some(())
    });
    receiver.wait_for("the metrics flushed at exit", Duration::from_secs(2), |r| {
        otlp::latest_sum(r, "container_changes", &[("operation", "delete")]).map(|_| ())
    });
    let text = std::fs::read_to_string(&audit).expect("audit log");
    assert!(
        text.lines().any(|l| l.contains(&format!("\"pid\":{pid}"))),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn once_attached_it_keeps_only_the_capabilities_it_needs() {
    require_privileged!();
    let ct = Clawtrace::start_scoped("caps", &[], &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", ct.pid())).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
            .expect(name)
    };
    // CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_BPF (39).
    let kept = (1u64 << 2) | (1 << 19) | (1 << 39);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(field(set), kept, "{set}");
    }
    assert_eq!(field("CapInh"), 0);
    assert_eq!(field("CapAmb"), 0);
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"));
    // Every thread, not just the main one.
    for task in std::fs::read_dir(format!("/proc/{}/task", ct.pid()))
        .unwrap()
        .flatten()
    {
        let s = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(eff) = s.lines().find_map(|l| l.strip_prefix("CapEff:")) {
            assert_eq!(
                u64::from_str_radix(eff.trim(), 16).unwrap(),
                kept,
                "thread {:?}",
                task.path()
            );
        }
    }
    // And it still traces.
    let (id, pid) = short_lived("caps-one");
    ct.wait_event("process_exit", &id, |v| v["pid"] == pid);
    ct.stop();
}
