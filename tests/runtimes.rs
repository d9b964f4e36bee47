//! Privileged end-to-end tests against real runtimes: bare runc and a private dockerd +
//! containerd run real containers, the tests kill them or let them fail, and compare what
//! `clawtrace run --output json` reports with what the tests know (pids, cgroups, exit codes,
//! who sent the signal).
//!
//! Needs root and the Debian packages runc, busybox-static, docker.io and containerd; without
//! them the tests skip, unless CLAWTRACE_REQUIRE_PRIVILEGED=1.
//!
//! What the runtimes themselves do is asserted at once (a test that cannot set up its ground
//! truth stops there); what clawtrace reports is gathered in [`Findings`], so one failing run
//! lists every field clawtrace got wrong, with the containers' event timelines.

mod support;

#[path = "support/runtimes.rs"]
mod runtimes;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use support::{free_port, http_get, sample};

use runtimes::{
    cgroup_id, cgroup_of, run_ok, runtime_tools, DockerDaemon, Findings, Podman, Runc,
    RuncContainer, TempDir,
};
use support::Clawtrace;

/// The tests of this file take turns: each counts what the metrics say of every container the
/// built-in recognition claims, which a runtime test running beside it would add to.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A container id that the tests' own cgroup pattern (`clawtrace-test-…`) does not claim, so
/// the built-in runtime recognition has to.
fn test_name(tag: &str) -> String {
    format!("ctrt-{}-{tag}", std::process::id())
}

/// `runc kill ID KILL` is an orchestrator kill whose sender is that runc process.
#[test]
fn runc_kill_is_an_orchestrator_kill() {
    require_privileged!();
    let _turn = turn();
    let Some(tools) = runtime_tools(module_path!(), &["runc", "busybox"]) else {
        return;
    };
    let started = Instant::now();
    let dir = TempDir::new("runc");
    let runc = Runc::new(tools.get("runc"), dir.path().join("state"));
    let id = test_name("kill");
    let bundle_dir = dir.path().join("bundle");
    let bundle = runc.bundle(&bundle_dir, tools.get("busybox"), &id, &["sleep", "1000"]);
    let root = runc.root.to_str().expect("utf-8 runc root").to_string();
    let trace = Clawtrace::start(&["--runc-root", &root]);
    let mut found = Findings::default();

    let mut ctr = RuncContainer::start(&runc, &bundle, &id, &dir.path().join("runc-run.log"));
    let init = ctr.pid;
    let path = cgroup_of(init);
    assert_eq!(
        path,
        format!("/{id}"),
        "runc put the container's init elsewhere"
    );
    let cgid = cgroup_id(&path);

    let create = trace.wait_event("container_create", &id, |_| true);
    found.check_event(
        "container_create of the runc container",
        &create,
        &[
            ("/runtime", json!("runc")),
            ("/cgroup_path", json!(path)),
            ("/cgroup_id", json!(cgid)),
            ("/preexisting", json!(false)),
        ],
    );
    let exec = trace.wait_event("process_exec", &id, |v| v["pid"] == init);
    found.check_event(
        &format!("process_exec of the runc container's init (pid {init}, runc's --pid-file)"),
        &exec,
        &[
            ("/is_container_init", json!(true)),
            ("/comm", json!("sleep")),
            ("/filename", json!("/bin/sleep")),
        ],
    );

    let mut killer = runc
        .cmd()
        .args(["kill", &id, "KILL"])
        .spawn()
        .expect("spawn runc kill");
    let killer_pid = killer.id();
    let status = killer.wait().expect("wait runc kill");
    assert!(status.success(), "runc kill failed: {status}");
    // Ground truth: SIGKILL cannot be caught, so the init died of it (shell style 137).
    ctr.wait_status("stopped", Duration::from_secs(10));

    let exit = trace.wait_event("process_exit", &id, |v| v["pid"] == init);
    found.check_event(
        &format!("process_exit of the runc container's init (pid {init}) after `runc kill KILL`"),
        &exit,
        &[
            ("/runtime", json!("runc")),
            ("/cgroup_id", json!(cgid)),
            ("/is_container_init", json!(true)),
            ("/comm", json!("sleep")),
            ("/cause", json!("orchestrator_kill")),
            ("/signal", json!("SIGKILL")),
            ("/exit_code", json!(137)),
            ("/core_dumped", json!(false)),
            ("/escalated_from", Value::Null),
            ("/sender/pid", json!(killer_pid)),
            ("/sender/comm", json!("runc")),
            ("/sender/container_id", Value::Null),
        ],
    );
    let signal = trace.wait_event("signal", &id, |v| {
        v["target_pid"] == init && v["signal"] == "SIGKILL"
    });
    found.check_event(
        &format!("signal event of `runc kill KILL` (runc kill was pid {killer_pid})"),
        &signal,
        &[
            ("/sender/pid", json!(killer_pid)),
            ("/sender/comm", json!("runc")),
            ("/sender/container_id", Value::Null),
            ("/sender_kind", json!("outside")),
            ("/si_code", json!(0)),
        ],
    );

    ctr.delete();
    let delete = trace.wait_event("container_delete", &id, |_| true);
    found.check_event(
        "container_delete after `runc delete` (init was SIGKILLed: 137)",
        &delete,
        &[
            ("/runtime", json!("runc")),
            ("/cgroup_path", json!(path)),
            ("/cgroup_id", json!(cgid)),
            ("/exit_code", json!(137)),
            ("/was_lingering", json!(false)),
            ("/cause", json!("orchestrator_kill")),
        ],
    );
    found.check_verdict(
        "the verdict of the killed container",
        &delete,
        "orchestrator_kill",
        json!(init),
        "sleep",
    );
    found.finish(&trace, &[&id]);
    trace.stop();
    eprintln!("runc test took {:.1?}", started.elapsed());
}

/// A runc container whose config.json binds one host folder `ro` and another `rw`: runc makes
/// the read-only one with a recursive bind and a read-only remount of the top mount only
/// (through /proc/self/fd paths), so a filesystem mounted inside the host folder stays writable
/// in the container. clawtrace, from the container's mount table, reports each bind's
/// effective state as runc really leaves it.
#[test]
fn runc_read_only_and_writable_binds() {
    require_privileged!();
    let _turn = turn();
    let Some(tools) = runtime_tools(module_path!(), &["runc", "busybox"]) else {
        return;
    };
    let dir = TempDir::new("runc-binds");
    let runc = Runc::new(tools.get("runc"), dir.path().join("state"));
    let id = test_name("binds");
    let host_ro = dir.path().join("host-ro");
    let host_rw = dir.path().join("host-rw");
    std::fs::create_dir_all(&host_ro).expect("mkdir host-ro");
    std::fs::create_dir_all(&host_rw).expect("mkdir host-rw");
    std::fs::create_dir_all(host_ro.join("sub")).expect("mkdir host-ro/sub");
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(host_ro.join("sub")),
    );
    let bundle = runc.bundle(
        &dir.path().join("bundle"),
        tools.get("busybox"),
        &id,
        &["sleep", "1000"],
    );
    let config_path = bundle.join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("config.json")).expect("json");
    let mounts = config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/data-ro", "type": "bind", "source": host_ro, "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/data-rw", "type": "bind", "source": host_rw, "options": ["rbind", "rw"]}));
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(&config).expect("json"),
    )
    .expect("write config.json");
    let root = runc.root.to_str().expect("utf-8 runc root").to_string();
    let trace = Clawtrace::start(&["--runc-root", &root, "--trace-mount-syscalls"]);

    let mut ctr = RuncContainer::start(&runc, &bundle, &id, &dir.path().join("runc-run.log"));
    // Ground truth from inside: the kernel's view of the two mounts in the container.
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", ctr.pid)).expect("mountinfo");
    let options_of = |target: &str| {
        mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .and_then(|l| l.split(' ').nth(5))
            .unwrap_or_else(|| panic!("{target} not mounted:\n{mountinfo}"))
            .to_string()
    };
    assert!(options_of("/data-ro").split(',').any(|o| o == "ro"));
    assert!(options_of("/data-ro/sub").split(',').any(|o| o == "rw"));
    assert!(options_of("/data-rw").split(',').any(|o| o == "rw"));

    let ro = trace.wait_event("volume_mount", &id, |v| {
        v["source"] == host_ro.to_string_lossy().as_ref()
    });
    assert_eq!(ro["read_only"], "yes", "{ro}");
    let rw = trace.wait_event("volume_mount", &id, |v| {
        v["source"] == host_rw.to_string_lossy().as_ref()
    });
    assert_eq!(rw["read_only"], "no", "{rw}");
    // The calls runc made, as it made them.
    let calls = trace.matching(|v| {
        v["event"] == "mount"
            && v["container_id"] == id.as_str()
            && v["source"] == host_ro.to_string_lossy().as_ref()
    });
    assert!(calls.len() >= 2, "{calls:#?}");
    assert!(calls
        .iter()
        .any(|c| c["writable"] == false && c["flags"].as_u64().unwrap() & 32 != 0));
    run_ok(runc.cmd().args(["kill", &id, "KILL"]));
    ctr.wait_status("stopped", Duration::from_secs(10));
    ctr.delete();
    trace.wait_event("container_delete", &id, |_| true);
    trace.stop();
}

/// One private dockerd + containerd for both scenarios: `docker kill` is an orchestrator kill
/// sent by the runtime from outside the container, and `exit 3` is a failure with the same exit
/// code that `docker inspect` gives.
#[test]
fn docker_kill_and_failed_exit() {
    require_privileged!();
    let _turn = turn();
    let tools = [
        "containerd",
        "containerd-shim-runc-v2",
        "dockerd",
        "docker",
        "runc",
        "busybox",
        "tar",
        "gcc",
    ];
    let Some(tools) = runtime_tools(module_path!(), &tools) else {
        return;
    };
    let started = Instant::now();
    let daemon = DockerDaemon::start(&tools);
    let rootfs = daemon.dir().join("rootfs");
    runtimes::busybox_rootfs(&rootfs, tools.get("busybox"));
    runtimes::install_payload(&rootfs, tools.get("gcc"));
    let image = "clawtrace-busybox:test";
    daemon.import(&rootfs, tools.get("tar"), image);
    let socket = daemon.socket().to_string_lossy().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let trace = Clawtrace::start(&["--docker-socket", &socket, "--prometheus-listen", &listen]);
    let mut found = Findings::default();

    // (a) docker kill: SIGKILL from the runtime, outside the container.
    let name = test_name("kill");
    let killed = daemon.run_detached(&[
        "--name",
        &name,
        "--network",
        "none",
        "--label",
        "agent_name=nemo_claw",
        image,
        "sleep",
        "1000",
    ]);
    let id = killed.as_str();
    let init: u32 = daemon
        .inspect(id, "{{.State.Pid}}")
        .parse()
        .expect("State.Pid");
    let path = cgroup_of(init);
    assert_eq!(
        path,
        format!("/docker/{id}"),
        "dockerd put the container's init elsewhere"
    );
    let cgid = cgroup_id(&path);
    let create = trace.wait_event("container_create", id, |_| true);
    found.check_event(
        "container_create of the docker container",
        &create,
        &[
            ("/runtime", json!("docker")),
            ("/cgroup_path", json!(path)),
            ("/cgroup_id", json!(cgid)),
            ("/preexisting", json!(false)),
        ],
    );
    eprintln!(
        "container_create of a container labelled agent_name=nemo_claw: agent {}",
        create["agent"]
    );
    let exec = trace.wait_event("process_exec", id, |v| v["pid"] == init);
    found.check_event(
        &format!("process_exec of the docker container's init (pid {init}, State.Pid)"),
        &exec,
        &[
            ("/is_container_init", json!(true)),
            ("/comm", json!("sleep")),
            ("/filename", json!("/bin/sleep")),
        ],
    );

    daemon.docker(&["kill", id]);
    assert_eq!(
        daemon.docker(&["wait", id]),
        "137",
        "docker wait after docker kill"
    );
    assert_eq!(daemon.inspect(id, "{{.State.ExitCode}}"), "137");
    let exit = trace.wait_event("process_exit", id, |v| v["pid"] == init);
    found.check_event(
        &format!("process_exit of the docker container's init (pid {init}) after `docker kill`"),
        &exit,
        &[
            ("/runtime", json!("docker")),
            ("/cgroup_id", json!(cgid)),
            ("/is_container_init", json!(true)),
            ("/comm", json!("sleep")),
            ("/cause", json!("orchestrator_kill")),
            ("/signal", json!("SIGKILL")),
            ("/exit_code", json!(137)),
            ("/core_dumped", json!(false)),
            ("/escalated_from", Value::Null),
            ("/sender/container_id", Value::Null),
        ],
    );
    // Docker 20.10 asks containerd, whose shim runs `runc kill`: that runc process sends it.
    let sender = &exit["sender"];
    let sender_comm = sender["comm"].as_str().unwrap_or_default();
    eprintln!("docker kill: SIGKILL sent by {sender}");
    found.check(
        sender_comm == "runc" || sender_comm.starts_with("containerd-shim"),
        || format!("docker kill's SIGKILL should come from runc or the shim, not {sender}"),
    );
    found.check(sender["pid"] != init, || {
        format!("docker kill's sender is the container's init itself: {sender}")
    });
    // The kill chain: the runtime, started by the shim (containerd's), nearest first.
    found.check(sender["class"] == "runtime", || {
        format!("docker kill's sender should be classed runtime: {sender}")
    });
    let chain: Vec<&str> = sender["ancestry"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["comm"].as_str()).collect())
        .unwrap_or_default();
    eprintln!("docker kill: kill chain {chain:?}");
    found.check(
        chain.iter().any(|c| c.starts_with("containerd-shim")),
        || format!("docker kill's sender should descend from a containerd shim: {chain:?}"),
    );
    found.check(sender["cgroup_id"] != cgid, || {
        format!("docker kill's sender is inside the container: {sender}")
    });
    let signal = trace.wait_event("signal", id, |v| {
        v["target_pid"] == init && v["signal"] == "SIGKILL"
    });
    found.check_event(
        "signal event of `docker kill`",
        &signal,
        &[
            ("/sender/pid", sender["pid"].clone()),
            ("/sender/comm", sender["comm"].clone()),
            ("/sender/container_id", Value::Null),
            ("/sender_kind", json!("outside")),
        ],
    );
    daemon.docker(&["rm", id]);
    let delete = trace.wait_event("container_delete", id, |_| true);
    found.check_event(
        "container_delete after `docker rm` of the killed container (137)",
        &delete,
        &[
            ("/runtime", json!("docker")),
            ("/cgroup_path", json!(path)),
            ("/cgroup_id", json!(cgid)),
            ("/exit_code", json!(137)),
            ("/was_lingering", json!(false)),
            ("/cause", json!("orchestrator_kill")),
        ],
    );
    found.check_verdict(
        "the verdict of the killed container",
        &delete,
        "orchestrator_kill",
        json!(init),
        "sleep",
    );

    // (b) sh -c 'exit 3': a failure, exit code 3 as docker tells it.
    let name = test_name("exit3");
    let failed = daemon.run_detached(&[
        "--name",
        &name,
        "--network",
        "none",
        image,
        "sh",
        "-c",
        "exit 3",
    ]);
    let id = failed.as_str();
    assert_eq!(
        daemon.docker(&["wait", id]),
        "3",
        "docker wait of sh -c 'exit 3'"
    );
    assert_eq!(daemon.inspect(id, "{{.State.ExitCode}}"), "3");
    let path = format!("/docker/{id}");
    let create = trace.wait_event("container_create", id, |_| true);
    found.check_event(
        "container_create of the failing container",
        &create,
        &[
            ("/runtime", json!("docker")),
            ("/cgroup_path", json!(path)),
            ("/preexisting", json!(false)),
        ],
    );
    // Its init is the only `sh` (busybox sh runs the builtin `exit` itself); its host pid is
    // gone from docker inspect once it has exited.
    let exit = trace.wait_event("process_exit", id, |v| v["comm"] == "sh");
    found.check_event(
        "process_exit of the init of sh -c 'exit 3'",
        &exit,
        &[
            ("/runtime", json!("docker")),
            ("/cgroup_id", create["cgroup_id"].clone()),
            ("/is_container_init", json!(true)),
            ("/cause", json!("failed")),
            ("/exit_code", json!(3)),
            ("/signal", Value::Null),
            ("/core_dumped", json!(false)),
            ("/sender", Value::Null),
        ],
    );
    daemon.docker(&["rm", id]);
    let delete = trace.wait_event("container_delete", id, |_| true);
    found.check_event(
        "container_delete after `docker rm` of the failed container (3)",
        &delete,
        &[
            ("/runtime", json!("docker")),
            ("/cgroup_path", json!(path)),
            ("/cgroup_id", create["cgroup_id"].clone()),
            ("/exit_code", json!(3)),
            ("/was_lingering", json!(false)),
            ("/cause", json!("failed")),
        ],
    );
    found.check_verdict(
        "the verdict of the failed container",
        &delete,
        "failed",
        exit["pid"].clone(),
        "sh",
    );

    // (c) A seccomp profile whose kill action fires: `mkdir` (and `mkdirat`, whichever the
    // payload's libc calls) kill the process; docker reports 159 (128 + SIGSYS).
    let profile = daemon.dir().join("seccomp-kill-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
    )
    .expect("write the seccomp profile");
    let name = test_name("seccomp");
    let refused = daemon.run_detached(&[
        "--name",
        &name,
        "--network",
        "none",
        "--security-opt",
        &format!("seccomp={}", profile.display()),
        image,
        "mkdir",
        "/refused",
    ]);
    let id = refused.as_str();
    assert_eq!(
        daemon.docker(&["wait", id]),
        "159",
        "docker wait of the refused mkdir"
    );
    assert_eq!(daemon.inspect(id, "{{.State.ExitCode}}"), "159");
    let exit = trace.wait_event("process_exit", id, |v| v["comm"] == "mkdir");
    found.check_event(
        "process_exit of a payload a seccomp profile killed",
        &exit,
        &[
            ("/cause", json!("policy_kill")),
            ("/policy", json!("seccomp")),
            ("/signal", json!("SIGSYS")),
            ("/exit_code", json!(159)),
        ],
    );
    let call = &exit["syscall"];
    eprintln!("seccomp profile kill: {} refused {call}", exit["comm"]);
    let (number, name) = (call["number"].as_u64(), call["name"].as_str());
    found.check(
        matches!(
            (number, name),
            (Some(83), Some("mkdir")) | (Some(258), Some("mkdirat"))
        ),
        || format!("the refused call should be mkdir (83) or mkdirat (258): {call}"),
    );
    found.check(exit["sender"]["pid"] == exit["pid"], || {
        format!("the kernel raises SIGSYS in the process's own context: {exit}")
    });
    daemon.docker(&["rm", id]);

    // (d) docker stop -t 2 of a container whose init does not act on SIGTERM (a pid
    // namespace's init without a handler): SIGTERM, then SIGKILL from the runtime 2 s later.
    let name = test_name("stop");
    let stopped =
        daemon.run_detached(&["--name", &name, "--network", "none", image, "sleep", "1000"]);
    let id = stopped.as_str();
    let init: u32 = daemon
        .inspect(id, "{{.State.Pid}}")
        .parse()
        .expect("State.Pid");
    trace.wait_event("process_exec", id, |v| v["pid"] == init);
    let asked = Instant::now();
    daemon.docker(&["stop", "-t", "2", id]);
    let took = asked.elapsed().as_secs_f64();
    assert_eq!(daemon.inspect(id, "{{.State.ExitCode}}"), "137");
    let exit = trace.wait_event("process_exit", id, |v| v["pid"] == init);
    found.check_event(
        "process_exit of a container `docker stop -t 2` had to kill",
        &exit,
        &[
            ("/cause", json!("orchestrator_kill")),
            ("/signal", json!("SIGKILL")),
            ("/escalated_from", json!("SIGTERM")),
            ("/exit_code", json!(137)),
        ],
    );
    let grace = exit["grace_seconds"].as_f64().unwrap_or(-1.0);
    eprintln!("docker stop -t 2: grace {grace:.3} s, the command took {took:.3} s");
    found.check((2.0..took).contains(&grace), || {
        format!("docker stop -t 2: grace {grace} s, not within 2 s and the {took} s it took")
    });
    daemon.docker(&["rm", id]);

    // (e) docker run --init: tini (docker-init) is pid 1 and reports its child's SIGSEGV as
    // its own exit 139; the verdict looks through it to the child's crash.
    let go = "/tmp/go";
    let name = test_name("init-segv");
    let wrapped = daemon.run_detached(&[
        "--name",
        &name,
        "--network",
        "none",
        "--init",
        image,
        runtimes::PAYLOAD,
        "segv",
        go,
    ]);
    let id = wrapped.as_str();
    let init: u32 = daemon
        .inspect(id, "{{.State.Pid}}")
        .parse()
        .expect("State.Pid");
    assert_eq!(runtimes::comm_of(init), "docker-init", "--init's pid 1");
    let payload = runtimes::other_procs(&format!("/docker/{id}"), init);
    assert_eq!(payload.len(), 1, "docker-init's one child: {payload:?}");
    let payload = payload[0];
    assert_eq!(runtimes::comm_of(payload), runtimes::PAYLOAD);
    runtimes::release_payload(payload, go);
    assert_eq!(daemon.docker(&["wait", id]), "139", "docker wait of --init");
    assert_eq!(daemon.inspect(id, "{{.State.ExitCode}}"), "139");
    let exit = trace.wait_event("process_exit", id, |v| v["pid"] == payload);
    found.check_event(
        "process_exit of the payload that segfaulted under docker-init",
        &exit,
        &[
            ("/cause", json!("crash")),
            ("/signal", json!("SIGSEGV")),
            ("/is_container_init", json!(false)),
        ],
    );
    let exit = trace.wait_event("process_exit", id, |v| v["pid"] == init);
    found.check_event(
        "process_exit of docker-init, forwarding 139",
        &exit,
        &[
            ("/cause", json!("failed")),
            ("/exit_code", json!(139)),
            ("/is_container_init", json!(true)),
        ],
    );
    daemon.docker(&["rm", id]);
    let delete = trace.wait_event("container_delete", id, |_| true);
    let what = "the verdict of a container whose payload segfaulted under --init";
    found.check_event(
        what,
        &delete,
        &[("/exit_code", json!(139)), ("/cause", json!("failed"))],
    );
    found.check_verdict(what, &delete, "crash", json!(payload), runtimes::PAYLOAD);

    // (f) docker run -m: the OOM killer takes the shell's child; the shell exits 137, and
    // docker reports OOMKilled.
    let name = test_name("oom");
    let script = format!("{} hog {go}; exit $?", runtimes::PAYLOAD);
    let starved = daemon.run_detached(&[
        "--name",
        &name,
        "--network",
        "none",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        image,
        "sh",
        "-c",
        &script,
    ]);
    let id = starved.as_str();
    let init: u32 = daemon
        .inspect(id, "{{.State.Pid}}")
        .parse()
        .expect("State.Pid");
    let hog = runtimes::other_procs(&format!("/docker/{id}"), init);
    assert_eq!(hog.len(), 1, "the shell's one child: {hog:?}");
    let hog = hog[0];
    runtimes::release_payload(hog, go);
    assert_eq!(daemon.docker(&["wait", id]), "137", "docker wait of -m");
    assert_eq!(daemon.inspect(id, "{{.State.ExitCode}}"), "137");
    assert_eq!(daemon.inspect(id, "{{.State.OOMKilled}}"), "true");
    let exit = trace.wait_event("process_exit", id, |v| v["pid"] == hog);
    found.check_event(
        "process_exit of the payload the OOM killer took",
        &exit,
        &[("/cause", json!("oom_kill")), ("/signal", json!("SIGKILL"))],
    );
    daemon.docker(&["rm", id]);
    let delete = trace.wait_event("container_delete", id, |_| true);
    let what = "the verdict of a container docker reports OOMKilled";
    found.check_event(what, &delete, &[("/exit_code", json!(137))]);
    found.check_verdict(what, &delete, "oom_kill", json!(hog), runtimes::PAYLOAD);

    found.finish(
        &trace,
        &[&killed, &failed, &refused, &stopped, &wrapped, &starved],
    );
    // The container labelled agent_name=nemo_claw is counted under that label, read from
    // dockerd's API; the unlabelled one under `unknown`.
    let metrics = http_get(&listen, "/metrics").expect("scrape /metrics");
    for (series, want) in [
        (
            r#"container_changes_total{operation="create",agent_name="nemo_claw"}"#,
            1.0,
        ),
        (
            r#"container_changes_total{operation="delete",agent_name="nemo_claw"}"#,
            1.0,
        ),
        (
            r#"container_exits_total{agent_name="nemo_claw",verdict="orchestrator_kill",exit_code="137"}"#,
            1.0,
        ),
        (
            r#"container_process_exits_total{agent_name="nemo_claw",cause="orchestrator_kill",signal="SIGKILL",exit_code="137"}"#,
            1.0,
        ),
        (
            r#"container_exits_total{agent_name="unknown",verdict="failed",exit_code="3"}"#,
            1.0,
        ),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(want),
            "{series} in\n{metrics}"
        );
    }
    trace.stop();
    drop(daemon);
    eprintln!(
        "docker test took {:.1?} (daemons stopped and cleaned up)",
        started.elapsed()
    );
}

/// Podman (with runc, as it runs on this machine kind): runc's `runc init` is moved into the
/// container's cgroup and re-executes itself there before its stages fork the payload, so the
/// first exec in the cgroup is runc's, not the container's. The init is pid 1 of the
/// container's pid namespace: a payload's exit 3 and a `podman kill` are told as `podman
/// inspect` tells them, and none of runc's stages is a process of the container.
#[test]
fn podman_exit_and_kill() {
    require_privileged!();
    let _turn = turn();
    let tools = ["podman", "conmon", "runc", "busybox", "tar", "gcc"];
    let Some(tools) = runtime_tools(module_path!(), &tools) else {
        return;
    };
    let started = Instant::now();
    let podman = Podman::new(&tools);
    let rootfs = podman.dir().join("rootfs");
    runtimes::busybox_rootfs(&rootfs, tools.get("busybox"));
    runtimes::install_payload(&rootfs, tools.get("gcc"));
    let image = "localhost/clawtrace-busybox:test";
    podman.import(&rootfs, tools.get("tar"), image);
    let listen = format!("127.0.0.1:{}", free_port());
    let trace = Clawtrace::start(&["--prometheus-listen", &listen]);
    let mut found = Findings::default();
    let go = "/tmp/go";

    // (a) The payload, the container's init, exits 3.
    let name = test_name("pm-exit3");
    let failed = podman.run_detached(&[
        "--name",
        &name,
        "--env",
        "AGENT_NAME=podman_claw",
        image,
        runtimes::PAYLOAD,
        "exit3",
        go,
    ]);
    let id = failed.as_str();
    let init: u32 = podman
        .inspect(id, "{{.State.Pid}}")
        .parse()
        .expect("State.Pid");
    let path = cgroup_of(init);
    assert_eq!(
        path,
        format!("/libpod_parent/libpod-{id}"),
        "podman put the container's init elsewhere"
    );
    let create = trace.wait_event("container_create", id, |_| true);
    found.check_event(
        "container_create of the podman container",
        &create,
        &[
            ("/runtime", json!("podman")),
            ("/cgroup_path", json!(path)),
            ("/cgroup_id", json!(cgroup_id(&path))),
        ],
    );
    let exec = trace.wait_event("process_exec", id, |v| v["pid"] == init);
    found.check_event(
        &format!("process_exec of the podman container's init (pid {init}, State.Pid)"),
        &exec,
        &[
            ("/is_container_init", json!(true)),
            ("/comm", json!(runtimes::PAYLOAD)),
        ],
    );
    runtimes::release_payload(init, go);
    assert_eq!(podman.podman(&["wait", id]), "3", "podman wait of exit 3");
    assert_eq!(podman.inspect(id, "{{.State.ExitCode}}"), "3");
    let exit = trace.wait_event("process_exit", id, |v| v["pid"] == init);
    found.check_event(
        "process_exit of the podman container's init",
        &exit,
        &[
            ("/is_container_init", json!(true)),
            ("/cause", json!("failed")),
            ("/exit_code", json!(3)),
        ],
    );
    podman.podman(&["rm", id]);
    let delete = trace.wait_event("container_delete", id, |_| true);
    let what = "the verdict of the podman container whose payload exited 3";
    found.check_event(what, &delete, &[("/exit_code", json!(3))]);
    found.check_verdict(what, &delete, "failed", json!(init), runtimes::PAYLOAD);

    // (b) podman kill: SIGKILL sent by the runc that podman runs, from outside.
    let name = test_name("pm-kill");
    let killed = podman.run_detached(&["--name", &name, image, "sleep", "1000"]);
    let id = killed.as_str();
    let init: u32 = podman
        .inspect(id, "{{.State.Pid}}")
        .parse()
        .expect("State.Pid");
    trace.wait_event("process_exec", id, |v| v["pid"] == init);
    podman.podman(&["kill", id]);
    assert_eq!(
        podman.podman(&["wait", id]),
        "137",
        "podman wait after kill"
    );
    assert_eq!(podman.inspect(id, "{{.State.ExitCode}}"), "137");
    let exit = trace.wait_event("process_exit", id, |v| v["pid"] == init);
    found.check_event(
        &format!("process_exit of the podman container's init (pid {init}) after podman kill"),
        &exit,
        &[
            ("/is_container_init", json!(true)),
            ("/cause", json!("orchestrator_kill")),
            ("/signal", json!("SIGKILL")),
            ("/sender/comm", json!("runc")),
            ("/sender/class", json!("runtime")),
        ],
    );
    let ancestry = exit["sender"]["ancestry"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    found.check(ancestry.iter().any(|a| a["comm"] == "podman"), || {
        format!("podman is not in the ancestry of the runc that killed: {ancestry:?}")
    });
    podman.podman(&["rm", id]);
    let delete = trace.wait_event("container_delete", id, |_| true);
    let what = "the verdict of the podman container that podman kill killed";
    found.check_event(what, &delete, &[("/exit_code", json!(137))]);
    found.check_verdict(what, &delete, "orchestrator_kill", json!(init), "sleep");

    // runc's re-exec and its stages, and conmon, are no process of either container.
    for id in [&failed, &killed] {
        let execs = trace.matching(|v| {
            (v["event"] == "process_exec" || v["event"] == "process_exit")
                && v["container_id"] == id.as_str()
        });
        let strays: Vec<&Value> = execs
            .iter()
            .filter(|v| {
                let comm = v["comm"].as_str().unwrap_or_default();
                comm.starts_with("runc") || comm == "conmon" || comm == "exe"
            })
            .collect();
        found.check(strays.is_empty(), || {
            format!("runtime helpers reported as the container's processes: {strays:#?}")
        });
    }
    found.finish(&trace, &[&failed, &killed]);

    // The agent-name variable is read from the init's environment, not from runc's.
    let metrics = http_get(&listen, "/metrics").expect("scrape /metrics");
    for series in [
        r#"container_changes_total{operation="create",agent_name="podman_claw"}"#,
        r#"container_exits_total{agent_name="podman_claw",verdict="failed",exit_code="3"}"#,
        r#"container_process_exits_total{agent_name="podman_claw",cause="failed",signal="none",exit_code="3"}"#,
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(1.0),
            "{series} in\n{metrics}"
        );
    }
    trace.stop();
    drop(podman);
    eprintln!(
        "podman test took {:.1?} (containers removed and cleaned up)",
        started.elapsed()
    );
}
