//! Privileged end-to-end test of Kubernetes names: a private containerd with its CRI plugin,
//! driven the way kubelet drives it (RunPodSandbox, CreateContainer, StartContainer,
//! StopContainer with a timeout, RemoveContainer, StopPodSandbox, RemovePodSandbox) on the host
//! network with the cgroupfs driver. What clawtrace reports of the pod's containers (every JSON
//! event, the audit log, the container spans, the metrics) is compared with the pod config the
//! test sent, and the stopped container's kill with what the kernel shows of containerd's shim.
//!
//! Needs root and the Debian packages containerd, runc, podman and busybox-static (no kubelet,
//! no registry: the image is built here); without them the test skips, unless
//! CLAWTRACE_REQUIRE_PRIVILEGED=1.

mod support;

#[path = "support/cri.rs"]
mod cri;
#[path = "support/runtimes.rs"]
#[allow(dead_code)] // The Kubernetes test uses a part of the runtimes' support.
mod runtimes;

use std::{
    collections::HashSet,
    process::Command,
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use serde_json::{json, Value};

use cri::{CriContainerd, IMAGE};
use runtimes::{run_ok, runtime_tools};
use support::{
    free_port, http_get,
    otlp::{self, Protocol, Receiver},
    wait_until, Clawtrace,
};

/// The pod the test asks for (kubelet's words: metadata.name, metadata.namespace, metadata.uid).
struct Pod {
    name: String,
    namespace: String,
    uid: String,
    container: String,
}

impl Pod {
    fn new() -> Pod {
        // A uid unique to this run, in the form kubelet writes (lower-case hex and dashes).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let hex = format!("{:08x}{nanos:024x}", std::process::id());
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        Pod {
            name: "research-agent-0".into(),
            namespace: "clawtrace-e2e".into(),
            uid,
            container: "agent".into(),
        }
    }

    /// kubelet's cgroup parent for a BestEffort pod (cgroupfs driver).
    fn cgroup_parent(&self) -> String {
        format!("/kubepods/besteffort/pod{}", self.uid)
    }

    /// The `k8s` object clawtrace must print for the pod's container, or for its sandbox.
    fn names(&self, sandbox: bool) -> Value {
        let mut names = json!({
            "pod_name": self.name,
            "namespace": self.namespace,
            "pod_uid": self.uid,
        });
        if !sandbox {
            names["container_name"] = json!(self.container);
        }
        names
    }

    fn sandbox_config(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The pid of the task of container `id`, as containerd's `ctr tasks ls` tells it.
fn task_pid(ctr: &std::path::Path, sock: &std::path::Path, id: &str) -> Option<u32> {
    let out = run_ok(Command::new(ctr).arg("--address").arg(sock).args([
        "--namespace",
        "k8s.io",
        "tasks",
        "ls",
    ]));
    out.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == id).then(|| fields.next()?.parse().ok())?
    })
}

/// The containerd shim serving the pod: a `containerd-shim-runc-v2` of this containerd whose
/// `-id` is the sandbox's (one shim per pod), as /proc shows it.
fn shim_of(sandbox: &str, sock: &std::path::Path) -> Option<u32> {
    let sock = sock.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && args.windows(2).any(|w| w[0] == "-id" && w[1] == sandbox)
                && args.iter().any(|a| a.starts_with(&sock))
        })
}

/// Every event of container `id` must carry `names`; returns the kinds seen.
fn assert_names(events: &[Value], id: &str, names: &Value, source: &str) -> HashSet<String> {
    let mine: Vec<&Value> = events.iter().filter(|e| e["container_id"] == id).collect();
    assert!(!mine.is_empty(), "{source}: no events of {id}");
    for event in &mine {
        assert_eq!(
            &event["k8s"], names,
            "{source}: a {} event of {id} does not name the pod: {event:#}",
            event["event"]
        );
        assert_eq!(event["runtime"], "containerd", "{source}: {event:#}");
    }
    mine.iter()
        .filter_map(|e| e["event"].as_str().map(String::from))
        .collect()
}

#[test]
fn cri_pods_carry_their_kubernetes_names() {
    require_privileged!();
    let Some(tools) = runtime_tools(
        "cri_pods_carry_their_kubernetes_names",
        &["containerd", "ctr", "runc", "podman", "busybox", "tar"],
    ) else {
        return;
    };
    let started = Instant::now();
    let mut cri = CriContainerd::start(&tools);
    let pod = Pod::new();
    cri.pod_cgroup(&pod.cgroup_parent());

    let receiver = Receiver::start(Protocol::Grpc);
    let audit_dir = runtimes::TempDir::new("k8s-audit");
    let audit = audit_dir.path().join("audit.jsonl");
    let prometheus = format!("127.0.0.1:{}", free_port());
    let state = cri.state();
    let ct = Clawtrace::start_with_env(
        &[
            "--containerd-state",
            state.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
            "--prometheus-listen",
            &prometheus,
            "--otlp",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ],
    );

    // As kubelet: the sandbox, then the container, started, stopped with a grace period.
    let sandbox_config = pod.sandbox_config();
    let config = sandbox_config.clone();
    let sandbox = cri
        .call("RunPodSandbox", |mut c| async move {
            c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
        })
        .pod_sandbox_id;
    let sandbox_create = ct.wait_event("container_create", &sandbox, |_| true);
    let container_config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: pod.container.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.to_string(),
            ..Default::default()
        }),
        // SIGTERM is ignored, so the stop's grace period runs out and SIGKILL follows.
        command: vec!["sh".into(), "-c".into(), "trap '' TERM; sleep 1000".into()],
        ..Default::default()
    };
    let (id, config) = (sandbox.clone(), sandbox_config.clone());
    let container = cri
        .call("CreateContainer", |mut c| async move {
            c.create_container(CreateContainerRequest {
                pod_sandbox_id: id,
                config: Some(container_config),
                sandbox_config: Some(config),
            })
            .await
        })
        .container_id;
    let id = container.clone();
    cri.call("StartContainer", |mut c| async move {
        c.start_container(StartContainerRequest { container_id: id })
            .await
    });
    let exec = ct.wait_event("process_exec", &container, |e| {
        e["is_container_init"] == true
    });
    let ctr = tools.get("ctr");
    let sock = cri.socket();
    let init = task_pid(ctr, sock, &container).expect("the container's task in ctr tasks ls");
    let shim = shim_of(&sandbox, sock).expect("the pod's containerd-shim-runc-v2 in /proc");
    assert_eq!(exec["pid"], init, "the init clawtrace names: {exec:#}");
    assert_eq!(
        sandbox_create["cgroup_path"],
        format!("{}/{sandbox}", pod.cgroup_parent()),
        "the sandbox's cgroup, as kubelet's cgroup parent makes it"
    );

    let id = container.clone();
    let stop_sent = Instant::now();
    cri.call("StopContainer", |mut c| async move {
        c.stop_container(StopContainerRequest {
            container_id: id,
            timeout: 2,
        })
        .await
    });
    let stop_took = stop_sent.elapsed();
    let exit = ct.wait_event("process_exit", &container, |e| e["pid"] == init);
    let id = container.clone();
    cri.call("RemoveContainer", |mut c| async move {
        c.remove_container(RemoveContainerRequest { container_id: id })
            .await
    });
    let delete = ct.wait_event("container_delete", &container, |_| true);
    let id = sandbox.clone();
    cri.call("StopPodSandbox", |mut c| async move {
        c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
            .await
    });
    let id = sandbox.clone();
    cri.call("RemovePodSandbox", |mut c| async move {
        c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
    });
    let sandbox_delete = ct.wait_event("container_delete", &sandbox, |_| true);
    eprintln!(
        "clawtrace on the stopped container: {} by {} (pid {}, parent {:?}) after {}, {:.2} s; \
         the sandbox's verdict: {}",
        exit["cause"],
        exit["sender"]["comm"],
        exit["sender"]["pid"],
        exit["sender"]["ancestry"][0],
        exit["escalated_from"],
        exit["grace_seconds"].as_f64().unwrap_or(-1.0),
        sandbox_delete["verdict"],
    );

    // The stop, as the world saw it: SIGTERM ignored for the 2 s grace period, then SIGKILL,
    // sent by the runc that the pod's shim ran (the kernel's sender and its parent).
    assert!(
        stop_took >= Duration::from_millis(1900),
        "StopContainer returned after {stop_took:?}: SIGTERM was not ignored"
    );
    assert_eq!(exit["signal"], "SIGKILL", "{exit:#}");
    assert_eq!(exit["exit_code"], 137, "{exit:#}");
    assert_eq!(exit["cause"], "orchestrator_kill", "{exit:#}");
    assert_eq!(exit["escalated_from"], "SIGTERM", "{exit:#}");
    let grace = exit["grace_seconds"].as_f64().unwrap_or(-1.0);
    assert!((1.5..4.0).contains(&grace), "grace {grace}: {exit:#}");
    let sender = &exit["sender"];
    assert_eq!(sender["comm"], "runc", "the SIGKILL's sender: {exit:#}");
    assert_eq!(sender["container_id"], Value::Null, "{exit:#}");
    assert_eq!(
        sender["ancestry"][0]["pid"], shim,
        "the sender's parent is the pod's shim (pid {shim}): {exit:#}"
    );
    assert_eq!(delete["verdict"], "orchestrator_kill", "{delete:#}");
    assert_eq!(delete["verdict_process"]["pid"], init, "{delete:#}");

    // Every JSON event of the container and of its sandbox names the pod as the test sent it.
    let events = ct.matching(|_| true);
    let kinds = assert_names(&events, &container, &pod.names(false), "JSON output");
    for kind in [
        "container_create",
        "process_exec",
        "signal",
        "process_exit",
        "container_delete",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} event of {container}: {kinds:?}"
        );
    }
    assert_names(&events, &sandbox, &pod.names(true), "JSON output");

    // The container spans carry the names as OpenTelemetry's k8s.* attributes.
    let spans = receiver.wait_for("the pod's two spans", Duration::from_secs(10), |r| {
        let spans: Vec<_> = otlp::spans(r)
            .into_iter()
            .filter(|(_, s)| {
                otlp::attr_str(&s.attributes, "container.id")
                    .is_some_and(|id| id == container || id == sandbox)
            })
            .map(|(_, s)| s)
            .collect();
        (spans.len() == 2).then_some(spans)
    });
    for span in &spans {
        let attr = |key| otlp::attr_str(&span.attributes, key);
        let is_sandbox = attr("container.id").as_deref() == Some(sandbox.as_str());
        assert_eq!(attr("k8s.pod.name"), Some(pod.name.clone()), "{span:?}");
        assert_eq!(attr("k8s.namespace.name"), Some(pod.namespace.clone()));
        assert_eq!(attr("k8s.pod.uid"), Some(pod.uid.clone()));
        assert_eq!(
            attr("k8s.container.name"),
            (!is_sandbox).then(|| pod.container.clone())
        );
    }

    // Metrics keep agent_name only: no series names the pod, by label or by value.
    let exposition = http_get(&prometheus, "/metrics").expect("metrics served");
    for series in exposition.lines().filter(|l| !l.starts_with('#')) {
        for value in [&pod.name, &pod.uid, &pod.namespace] {
            assert!(
                !series.contains(value.as_str()),
                "the metrics name the pod: {series}"
            );
        }
        let labels = series
            .split_once('{')
            .and_then(|(_, rest)| rest.rsplit_once('}'))
            .map_or("", |(labels, _)| labels);
        for label in labels.split(',').filter_map(|l| l.split_once('=')) {
            assert!(
                !label.0.contains("pod") && !label.0.contains("k8s"),
                "a per-pod label: {series}"
            );
        }
    }

    ct.stop();
    // The audit log holds the same names for the container's life.
    wait_until("the audit log", Duration::from_secs(5), || audit.exists());
    let audited: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect();
    let kinds = assert_names(&audited, &container, &pod.names(false), "audit log");
    for kind in ["container_create", "process_exit", "container_delete"] {
        assert!(
            kinds.contains(kind),
            "audit log: no {kind} of {container}: {kinds:?}"
        );
    }
    // explain tells the container with its pod, as the test named it.
    let explained = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
        .args(["explain", &container, "--audit-log"])
        .arg(&audit)
        .output()
        .expect("run clawtrace explain");
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(explained.status.success(), "explain: {text}");
    let pod_line = format!(
        "  pod {}/{} (uid {}), container {}\n",
        pod.namespace, pod.name, pod.uid, pod.container
    );
    assert!(text.contains(&pod_line), "no {pod_line:?} in:\n{text}");
    eprintln!("kubernetes test took {:.1?}", started.elapsed());
}
