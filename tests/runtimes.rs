//! Privileged end-to-end tests against real runtimes: bare runc and a private dockerd +
//! containerd run real containers, the tests kill them or let them fail, and compare what
//! `clawtrace run --output json` reports with what the tests know (pids, cgroups, exit codes,
//! who sent the signal).
//!
//! Needs root and the Debian packages runc, busybox-static, docker.io and containerd; without
//! them the tests skip, unless CLAWTRACE_REQUIRE_PRIVILEGED=1.
//!
//! What the runtimes themselves do is asserted with plain asserts (a test that cannot set up
//! its ground truth stops there); what clawtrace reports is checked with the typed checkers of
//! `support/checkers.rs` (`ExitChecker::of(pid).code(137)…`), whose failure lists every field
//! of the event that clawtrace got wrong, with the container's events.

mod support;

#[path = "support/checkers.rs"]
mod checkers;
#[path = "support/runtimes.rs"]
mod runtimes;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use support::{free_port, http_get, sample};

use checkers::{
    of_container, CreateChecker, DeleteChecker, ExecChecker, ExitChecker, MountCallsChecker,
    ProcessesChecker, SignalChecker, VolumeMountChecker,
};
use runtimes::{
    cgroup_id, cgroup_of, run_ok, runtime_tools, DockerDaemon, Podman, Runc, RuncContainer, TempDir,
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

    let mut ctr = RuncContainer::start(&runc, &bundle, &id, &dir.path().join("runc-run.log"));
    let init = ctr.pid;
    let path = cgroup_of(init);
    assert_eq!(
        path,
        format!("/{id}"),
        "runc put the container's init elsewhere"
    );
    let cgid = cgroup_id(&path);

    CreateChecker::of(&id)
        .runtime("runc")
        .cgroup_path(&path)
        .cgroup_id(cgid)
        .preexisting(false)
        .check_in(&trace, &id);
    // The init's pid is runc's --pid-file.
    ExecChecker::of(init)
        .init(true)
        .comm("sleep")
        .filename("/bin/sleep")
        .check_in(&trace, &id);

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

    ExitChecker::of(init)
        .runtime("runc")
        .cgroup_id(cgid)
        .init(true)
        .comm("sleep")
        .cause("orchestrator_kill")
        .signal("SIGKILL")
        .code(137)
        .core_dumped(false)
        .not_escalated()
        .sender_pid(killer_pid)
        .sender_comm("runc")
        .sender_outside()
        .check_in(&trace, &id);
    SignalChecker::of(init, "SIGKILL")
        .sender_pid(killer_pid)
        .sender_comm("runc")
        .sender_outside()
        .sender_kind("outside")
        .si_code(0)
        .check_in(&trace, &id);

    ctr.delete();
    // After `runc delete`; the init was SIGKILLed: 137.
    DeleteChecker::of(&id)
        .runtime("runc")
        .cgroup_path(&path)
        .cgroup_id(cgid)
        .exit_code(137)
        .was_lingering(false)
        .cause("orchestrator_kill")
        .verdict("orchestrator_kill")
        .verdict_process(init, "sleep")
        .check_in(&trace, &id);
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

    VolumeMountChecker::of_source(&host_ro.to_string_lossy())
        .read_only("yes")
        .check_in(&trace, &id);
    VolumeMountChecker::of_source(&host_rw.to_string_lossy())
        .read_only("no")
        .check_in(&trace, &id);
    // The calls runc made, as it made them.
    MountCallsChecker::of_source(&host_ro.to_string_lossy())
        .at_least(2)
        .some_read_only_remount()
        .check(&of_container(&trace, &id));
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
    let create = CreateChecker::of(id)
        .runtime("docker")
        .cgroup_path(&path)
        .cgroup_id(cgid)
        .preexisting(false)
        .check_in(&trace, id);
    eprintln!(
        "container_create of a container labelled agent_name=nemo_claw: agent {}",
        create["agent"]
    );
    // The init's pid is docker inspect's State.Pid.
    ExecChecker::of(init)
        .init(true)
        .comm("sleep")
        .filename("/bin/sleep")
        .check_in(&trace, id);

    daemon.docker(&["kill", id]);
    assert_eq!(
        daemon.docker(&["wait", id]),
        "137",
        "docker wait after docker kill"
    );
    assert_eq!(daemon.inspect(id, "{{.State.ExitCode}}"), "137");
    // Docker 20.10 asks containerd, whose shim runs `runc kill`: that runc process sends it,
    // from outside the container. The kill chain: the runtime, started by the shim
    // (containerd's), nearest first.
    let exit = ExitChecker::of(init)
        .runtime("docker")
        .cgroup_id(cgid)
        .init(true)
        .comm("sleep")
        .cause("orchestrator_kill")
        .signal("SIGKILL")
        .code(137)
        .core_dumped(false)
        .not_escalated()
        .sender_outside()
        .sender_comm_where("runc or a containerd shim", |comm| {
            comm == "runc" || comm.starts_with("containerd-shim")
        })
        .sender_pid_not(init)
        .sender_class("runtime")
        .sender_ancestor("named containerd-shim…", |comm| {
            comm.starts_with("containerd-shim")
        })
        .sender_cgroup_id_not(cgid)
        .check_in(&trace, id);
    let sender = &exit["sender"];
    eprintln!("docker kill: SIGKILL sent by {sender}");
    let chain: Vec<&str> = sender["ancestry"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["comm"].as_str()).collect())
        .unwrap_or_default();
    eprintln!("docker kill: kill chain {chain:?}");
    SignalChecker::of(init, "SIGKILL")
        .sender_pid(sender["pid"].clone())
        .sender_comm(sender["comm"].clone())
        .sender_outside()
        .sender_kind("outside")
        .check_in(&trace, id);
    daemon.docker(&["rm", id]);
    // After `docker rm` of the killed container (137).
    DeleteChecker::of(id)
        .runtime("docker")
        .cgroup_path(&path)
        .cgroup_id(cgid)
        .exit_code(137)
        .was_lingering(false)
        .cause("orchestrator_kill")
        .verdict("orchestrator_kill")
        .verdict_process(init, "sleep")
        .check_in(&trace, id);

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
    let create = CreateChecker::of(id)
        .runtime("docker")
        .cgroup_path(&path)
        .preexisting(false)
        .check_in(&trace, id);
    // Its init is the only `sh` (busybox sh runs the builtin `exit` itself); its host pid is
    // gone from docker inspect once it has exited.
    let exit = ExitChecker::of_comm("sh")
        .runtime("docker")
        .cgroup_id(create["cgroup_id"].clone())
        .init(true)
        .cause("failed")
        .code(3)
        .no_signal()
        .core_dumped(false)
        .no_sender()
        .check_in(&trace, id);
    daemon.docker(&["rm", id]);
    // After `docker rm` of the failed container (3).
    DeleteChecker::of(id)
        .runtime("docker")
        .cgroup_path(&path)
        .cgroup_id(create["cgroup_id"].clone())
        .exit_code(3)
        .was_lingering(false)
        .cause("failed")
        .verdict("failed")
        .verdict_process(exit["pid"].clone(), "sh")
        .check_in(&trace, id);

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
    // The kernel raises SIGSYS in the process's own context.
    let exit = ExitChecker::of_comm("mkdir")
        .cause("policy_kill")
        .policy("seccomp")
        .signal("SIGSYS")
        .code(159)
        .syscall_one_of(&[(83, "mkdir"), (258, "mkdirat")])
        .sender_is_itself()
        .check_in(&trace, id);
    eprintln!(
        "seccomp profile kill: {} refused {}",
        exit["comm"], exit["syscall"]
    );
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
    // The grace lies between the 2 s asked for and the time the command took.
    let exit = ExitChecker::of(init)
        .cause("orchestrator_kill")
        .signal("SIGKILL")
        .escalated_from("SIGTERM")
        .code(137)
        .grace_within(2.0..took)
        .check_in(&trace, id);
    eprintln!(
        "docker stop -t 2: grace {:.3} s, the command took {took:.3} s",
        exit["grace_seconds"].as_f64().unwrap_or(-1.0)
    );
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
    ExitChecker::of(payload)
        .cause("crash")
        .signal("SIGSEGV")
        .init(false)
        .check_in(&trace, id);
    // docker-init forwards 139.
    ExitChecker::of(init)
        .cause("failed")
        .code(139)
        .init(true)
        .check_in(&trace, id);
    daemon.docker(&["rm", id]);
    DeleteChecker::of(id)
        .exit_code(139)
        .cause("failed")
        .verdict("crash")
        .verdict_process(payload, runtimes::PAYLOAD)
        .check_in(&trace, id);

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
    ExitChecker::of(hog)
        .cause("oom_kill")
        .signal("SIGKILL")
        .check_in(&trace, id);
    daemon.docker(&["rm", id]);
    DeleteChecker::of(id)
        .exit_code(137)
        .verdict("oom_kill")
        .verdict_process(hog, runtimes::PAYLOAD)
        .check_in(&trace, id);

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
    CreateChecker::of(id)
        .runtime("podman")
        .cgroup_path(&path)
        .cgroup_id(cgroup_id(&path))
        .check_in(&trace, id);
    // The init's pid is podman inspect's State.Pid.
    ExecChecker::of(init)
        .init(true)
        .comm(runtimes::PAYLOAD)
        .check_in(&trace, id);
    runtimes::release_payload(init, go);
    assert_eq!(podman.podman(&["wait", id]), "3", "podman wait of exit 3");
    assert_eq!(podman.inspect(id, "{{.State.ExitCode}}"), "3");
    ExitChecker::of(init)
        .init(true)
        .cause("failed")
        .code(3)
        .check_in(&trace, id);
    podman.podman(&["rm", id]);
    DeleteChecker::of(id)
        .exit_code(3)
        .verdict("failed")
        .verdict_process(init, runtimes::PAYLOAD)
        .check_in(&trace, id);

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
    // Sent by the runc that podman runs.
    ExitChecker::of(init)
        .init(true)
        .cause("orchestrator_kill")
        .signal("SIGKILL")
        .sender_comm("runc")
        .sender_class("runtime")
        .sender_ancestor("named podman", |comm| comm == "podman")
        .check_in(&trace, id);
    podman.podman(&["rm", id]);
    DeleteChecker::of(id)
        .exit_code(137)
        .verdict("orchestrator_kill")
        .verdict_process(init, "sleep")
        .check_in(&trace, id);

    // runc's re-exec and its stages, and conmon, are no process of either container.
    for id in [&failed, &killed] {
        ProcessesChecker::none_of("runtime helpers (runc…, conmon, exe)", |comm| {
            comm.starts_with("runc") || comm == "conmon" || comm == "exe"
        })
        .check(&of_container(&trace, id));
    }

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
