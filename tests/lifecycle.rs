//! Container lifecycles and kill attribution, end to end: each test makes its own container (a
//! real cgroup v2 sub-cgroup with processes placed in it), runs the real `clawtrace` binary, and
//! checks its JSON events against the ground truth the test holds: the status `waitpid`
//! returned, the pid that sent a signal, the times it sent them.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// Debian's python3 (installed by `cargo xtask setup`) rather than a version manager's shim,
/// which would run extra processes in the container.
fn python(code: &str) -> Command {
    let python = if have("/usr/bin/python3") {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.args(["-c", code]);
    cmd
}

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    cmd
}

/// The `SigCgt`/`SigIgn`/… mask of `pid` from /proc.
fn signal_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn has_signal(mask: u64, signal: i32) -> bool {
    mask & (1 << (signal - 1)) != 0
}

/// The exit event of the container's init.
fn init_exit(ct: &Clawtrace, cgroup: &TestCgroup, pid: u32) -> Value {
    ct.wait_event("process_exit", &cgroup.container_id(), |v| v["pid"] == pid)
}

/// Asserts the parts of an exit that follow from the wait status alone.
fn assert_status(exit: &Value, status: i32) {
    if libc::WIFEXITED(status) {
        assert_eq!(exit["exit_code"], libc::WEXITSTATUS(status), "{exit}");
        assert_eq!(exit["signal"], Value::Null, "{exit}");
    } else {
        assert!(libc::WIFSIGNALED(status));
        assert_eq!(exit["exit_code"], 128 + libc::WTERMSIG(status), "{exit}");
        assert_eq!(exit["core_dumped"], libc::WCOREDUMP(status), "{exit}");
    }
    assert_eq!(exit["wait_status"], status, "{exit}");
}

#[test]
fn clean_exit_zero() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("exit0");
    let mut child = cgroup.spawn(&mut Command::new("true"));
    let status = wait_status(&mut child);
    assert_eq!(status, 0);
    cgroup.remove();

    let id = cgroup.container_id();
    let create = ct.wait_event("container_create", &id, |_| true);
    assert_eq!(create["cgroup_id"], cgroup.id());
    assert_eq!(create["cgroup_path"], format!("/{}", cgroup.name));
    assert_eq!(create["preexisting"], false);
    let exit = init_exit(&ct, &cgroup, child.id());
    assert_status(&exit, status);
    assert_eq!(exit["is_container_init"], true);
    assert_eq!(exit["cause"], "exited");
    assert_eq!(exit["sender"], Value::Null);
    assert_eq!(exit["comm"], "true");
    let delete = ct.wait_event("container_delete", &id, |_| true);
    assert_eq!(delete["exit_code"], 0);
    assert_eq!(delete["cause"], "exited");
    ct.stop();
}

#[test]
fn exit_three_is_failed() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("exit3");
    let mut child = cgroup.spawn(&mut sh("exit 3"));
    let status = wait_status(&mut child);
    assert_eq!(libc::WEXITSTATUS(status), 3);
    cgroup.remove();
    let exit = init_exit(&ct, &cgroup, child.id());
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "failed");
    assert_eq!(exit["exit_code"], 3);
    ct.stop();
}

#[test]
fn sigkill_from_outside_is_an_orchestrator_kill() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("kill");
    let mut child = cgroup.spawn(Command::new("sleep").arg("1000"));
    kill(child.id(), libc::SIGKILL);
    let status = wait_status(&mut child);
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, child.id());
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "orchestrator_kill");
    assert_eq!(exit["signal"], "SIGKILL");
    assert_eq!(exit["exit_code"], 137);
    let sender = &exit["sender"];
    assert_eq!(sender["pid"], std::process::id(), "{exit}");
    assert_eq!(sender["container_id"], Value::Null);
    assert_eq!(exit["escalated_from"], Value::Null);
    let signal = ct.wait_event("signal", &cgroup.container_id(), |v| {
        v["target_pid"] == child.id()
    });
    assert_eq!(signal["sender_kind"], "outside");
    assert_eq!(signal["signal"], "SIGKILL");
    ct.stop();
}

#[test]
fn sigterm_handled_then_exit_zero() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("term");
    let mut child = cgroup.spawn(&mut sh("trap 'exit 0' TERM; while :; do sleep 0.05; done"));
    let pid = child.id();
    wait_until("the TERM trap", Duration::from_secs(5), || {
        has_signal(signal_mask(pid, "SigCgt"), libc::SIGTERM)
    });
    kill(pid, libc::SIGTERM);
    let status = wait_status(&mut child);
    assert_eq!(status, 0);
    cgroup.kill_all();
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "exited");
    let signal = ct.wait_event("signal", &cgroup.container_id(), |v| v["target_pid"] == pid);
    assert_eq!(signal["signal"], "SIGTERM");
    assert_eq!(signal["sender"]["pid"], std::process::id());
    ct.stop();
}

#[test]
fn sigterm_ignored_then_sigkill_is_an_escalation() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("escalate");
    // sleep inherits the ignored SIGTERM across exec.
    let mut child = cgroup.spawn(&mut sh("trap '' TERM; exec sleep 1000"));
    let pid = child.id();
    wait_until("sleep with SIGTERM ignored", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            == "sleep"
            && has_signal(signal_mask(pid, "SigIgn"), libc::SIGTERM)
    });
    kill(pid, libc::SIGTERM);
    let term_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    kill(pid, libc::SIGKILL);
    let grace = term_at.elapsed().as_secs_f64();
    let status = wait_status(&mut child);
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "orchestrator_kill");
    assert_eq!(exit["escalated_from"], "SIGTERM");
    let reported = exit["grace_seconds"].as_f64().expect("grace_seconds");
    assert!(
        (reported - grace).abs() < 0.05,
        "grace {reported} s, measured {grace} s"
    );
    ct.stop();
}

#[test]
fn segmentation_fault_is_a_crash() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("segv");
    let mut child = cgroup.spawn(&mut python(
        "import ctypes, resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); ctypes.string_at(0)",
    ));
    let status = wait_status(&mut child);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV);
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, child.id());
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "crash");
    assert_eq!(exit["signal"], "SIGSEGV");
    assert_eq!(
        exit["sender"]["pid"],
        child.id(),
        "the fault is raised in the process itself"
    );
    ct.stop();
}

#[test]
fn abort_is_a_self_signal() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("abort");
    let mut child = cgroup.spawn(&mut python(
        "import os, resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); os.abort()",
    ));
    let status = wait_status(&mut child);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT);
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, child.id());
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "self_signal");
    assert_eq!(exit["signal"], "SIGABRT");
    assert_eq!(exit["sender"]["pid"], child.id());
    ct.stop();
}

#[test]
fn sigkill_from_a_peer_in_the_same_container() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("peer");
    let mut child = cgroup.spawn(
        sh("sleep 1000 & p=$!; echo $p; sleep 0.2; kill -KILL $p; wait $p 2>/dev/null; exit 0")
            .stdout(Stdio::piped()),
    );
    let shell = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("victim pid");
    let victim: u32 = line.trim().parse().expect("pid");
    assert_eq!(wait_status(&mut child), 0);
    cgroup.remove();

    let exit = ct.wait_event("process_exit", &cgroup.container_id(), |v| {
        v["pid"] == victim
    });
    assert_eq!(exit["is_container_init"], false);
    assert_eq!(exit["cause"], "peer_kill");
    assert_eq!(exit["signal"], "SIGKILL");
    assert_eq!(exit["sender"]["pid"], shell);
    assert_eq!(exit["sender"]["container_id"], cgroup.container_id());
    let init = init_exit(&ct, &cgroup, shell);
    assert_eq!(
        (init["is_container_init"].clone(), init["cause"].clone()),
        (Value::Bool(true), "exited".into())
    );
    ct.stop();
}

/// A memory limit on a test container. Where the memory controller is bound to cgroup v1 (as
/// on this kind of host) it is a v1 memory cgroup below the one this process is in, which the
/// container's process joins itself; where v2 holds the controller, `memory.max` of the
/// container's own cgroup.
enum MemoryLimit {
    V1 { dir: std::path::PathBuf },
    V2,
}

impl MemoryLimit {
    fn new(cgroup: &TestCgroup, limit: u64) -> MemoryLimit {
        let v2_root = cgroup2_root();
        let v2_has_memory = std::fs::read_to_string(v2_root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "memory");
        if v2_has_memory {
            std::fs::write(v2_root.join("cgroup.subtree_control"), "+memory")
                .expect("enable memory");
            std::fs::write(cgroup.dir.join("memory.max"), limit.to_string()).expect("memory.max");
            let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
            return MemoryLimit::V2;
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let path = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .expect("no memory controller in v1 or v2");
        let base = std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        let dir = base.join(format!("clawtrace-oom-{}", cgroup.name));
        std::fs::create_dir_all(&dir).expect("v1 memory cgroup");
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).expect("limit");
        MemoryLimit::V1 { dir }
    }

    /// Shell commands that put the shell under the limit.
    fn join_command(&self) -> String {
        match self {
            MemoryLimit::V1 { dir } => format!("echo $$ > {};", dir.join("tasks").display()),
            MemoryLimit::V2 => String::new(),
        }
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let MemoryLimit::V1 { dir } = self {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&*dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn oom_kill_in_a_memory_limited_cgroup() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("oom");
    let memory = MemoryLimit::new(&cgroup, 64 << 20);
    // Join the limit from inside the child, then allocate and touch 512 MiB.
    let script = format!(
        "{} exec /usr/bin/python3 -c 'b = bytearray(512 << 20); b[::4096] = b\"x\" * (len(b) // 4096); print(len(b))'",
        memory.join_command()
    );
    let mut child = cgroup.spawn(&mut sh(&script));
    let status = wait_status(&mut child);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the OOM killer did not kill the child: status {status:#x}"
    );
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, child.id());
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "oom_kill");
    assert_eq!(exit["signal"], "SIGKILL");
    let mark = ct.wait_event("oom_mark", &cgroup.container_id(), |_| true);
    assert_eq!(mark["pid"], child.id());
    // What the victim held when chosen, read from its mm as the kernel's own tracepoint does:
    // it had touched more than the 64 MiB it may keep, and python's own heap is a few MiB.
    let rss = mark["anon_rss_kb"].as_u64().expect("anon_rss_kb");
    assert!((16 << 10..=80 << 10).contains(&rss), "{mark}");
    ct.stop();
    drop(memory);
}

/// `struct clone_args` of clone3(2), up to `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[test]
fn a_process_cloned_straight_into_the_cgroup_is_followed() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("clone3");
    // clone3(CLONE_INTO_CGROUP) places the child in the cgroup as it is created, from a parent
    // outside it: no cgroup.procs write, so no attach record announces it.
    // The child never execs, so only the fork tells the kernel side to follow it.
    let dir = std::fs::File::open(&cgroup.dir).expect("open the cgroup");
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: std::os::fd::AsRawFd::as_raw_fd(&dir) as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a valid clone_args of the size given; without CLONE_VM the child has
    // its own copy of memory and only calls pause (async-signal-safe) until it is killed.
    let pid = unsafe {
        let pid = libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        );
        if pid == 0 {
            loop {
                libc::pause();
            }
        }
        pid
    };
    assert!(pid > 0, "clone3: {}", std::io::Error::last_os_error());
    let pid = pid as u32;
    wait_until("the child in the cgroup", Duration::from_secs(5), || {
        cgroup.procs().contains(&pid)
    });
    kill(pid, libc::SIGKILL);
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    let waited = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    assert_eq!(waited, pid as i32);
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "orchestrator_kill", "{exit}");
    assert_eq!(exit["sender"]["pid"], std::process::id(), "{exit}");
    let signal = ct.wait_event("signal", &cgroup.container_id(), |v| v["target_pid"] == pid);
    assert_eq!(signal["sender_kind"], "outside");
    // The child is a copy of this (test) thread, with its name.
    let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("own comm");
    assert_eq!(signal["target_comm"], comm.trim(), "{signal}");
    ct.stop();
}

#[test]
fn multithreaded_process_killed_is_reported_once() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("threads");
    let mut child = cgroup.spawn(&mut python(
        "import threading, time\n\
         for _ in range(4): threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n\
         time.sleep(1000)",
    ));
    let pid = child.id();
    wait_until("5 threads", Duration::from_secs(10), || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 5
    });
    kill(pid, libc::SIGKILL);
    let status = wait_status(&mut child);
    cgroup.remove();

    let id = cgroup.container_id();
    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "orchestrator_kill");
    // The deletion comes after every thread's exit: by then a second exit would have shown.
    ct.wait_event("container_delete", &id, |_| true);
    let exits = ct.matching(|v| {
        v["event"] == "process_exit" && v["container_id"] == id.as_str() && v["pid"] == pid
    });
    assert_eq!(exits.len(), 1, "{exits:#?}");
    ct.stop();
}

#[test]
fn sigkill_aimed_at_a_worker_thread_names_its_sender() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("tgkill");
    // The process prints a worker thread's id; that thread, not the leader, gets the SIGKILL.
    let mut child = cgroup.spawn(
        python(
            "import threading, time\n\
             ready = threading.Event()\n\
             def work():\n    print(threading.get_native_id(), flush=True); ready.set(); time.sleep(1000)\n\
             threading.Thread(target=work, daemon=True).start()\n\
             ready.wait(); time.sleep(1000)",
        )
        .stdout(Stdio::piped()),
    );
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("thread id");
    let tid: i32 = line.trim().parse().expect("a thread id");
    assert_ne!(tid as u32, pid, "the worker thread is not the leader");
    // SAFETY: tgkill has no memory-safety preconditions.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid as i32, tid, libc::SIGKILL) };
    assert_eq!(rc, 0, "tgkill: {}", std::io::Error::last_os_error());
    let status = wait_status(&mut child);
    cgroup.remove();

    // Whichever thread exits last reports the process, with what the kernel kept of the send.
    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "orchestrator_kill", "{exit}");
    assert_eq!(exit["signal"], "SIGKILL");
    assert_eq!(exit["sender"]["pid"], std::process::id(), "{exit}");
    let signal = ct.wait_event("signal", &cgroup.container_id(), |v| {
        v["target_pid"] == pid && v["target_tid"] == tid
    });
    assert_eq!(signal["sender_kind"], "outside");
    ct.stop();
}

#[test]
fn a_thread_that_execs_in_place_of_its_leader_is_still_followed() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("dethread");
    // A worker thread execs: the kernel ends the other threads, the worker takes over the
    // leader's pid, and the old leader's task is gone. The process is then killed from outside.
    let mut child = cgroup.spawn(&mut python(
        "import os, threading, time\n\
         threading.Thread(target=os.execv, args=('/bin/sleep', ['sleep', '1000'])).start()\n\
         time.sleep(1000)",
    ));
    let pid = child.id();
    wait_until("sleep to run", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    ct.wait_event("process_exec", &cgroup.container_id(), |v| {
        v["pid"] == pid && v["filename"] == "/bin/sleep"
    });
    kill(pid, libc::SIGKILL);
    let status = wait_status(&mut child);
    cgroup.remove();

    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "orchestrator_kill", "{exit}");
    assert_eq!(exit["comm"], "sleep", "{exit}");
    let signal = ct.wait_event("signal", &cgroup.container_id(), |v| {
        v["signal"] == "SIGKILL"
    });
    assert_eq!(signal["target_pid"], pid, "{signal}");
    assert_eq!(signal["target_tid"], pid, "{signal}");
    ct.stop();
}

#[test]
fn init_exits_while_a_child_lingers() {
    require_privileged!();
    let ct = Clawtrace::start(&["--linger-after", "500ms"]);
    let mut cgroup = TestCgroup::new("linger");
    // The shell leaves a sleeping child behind and exits 0.
    let mut child =
        cgroup.spawn(sh("sleep 1000 </dev/null >/dev/null 2>&1 & echo $!").stdout(Stdio::piped()));
    let shell = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("child pid");
    let orphan: u32 = line.trim().parse().expect("pid");
    assert_eq!(wait_status(&mut child), 0);
    let id = cgroup.container_id();

    let exit = init_exit(&ct, &cgroup, shell);
    assert_eq!(exit["is_container_init"], true);
    let lingering = ct.wait_event("container_lingering", &id, |_| true);
    assert!(
        lingering["processes_left"].as_u64().unwrap() >= 1,
        "{lingering}"
    );
    assert!(lingering["init_exited_seconds_ago"].as_f64().unwrap() >= 0.5);
    assert!(cgroup.procs().contains(&orphan));

    kill(orphan, libc::SIGKILL);
    wait_until("the orphan gone", Duration::from_secs(5), || {
        !cgroup.procs().contains(&orphan)
    });
    cgroup.remove();
    let orphan_exit = ct.wait_event("process_exit", &id, |v| v["pid"] == orphan);
    assert_eq!(orphan_exit["is_container_init"], false);
    assert_eq!(orphan_exit["cause"], "orchestrator_kill");
    let delete = ct.wait_event("container_delete", &id, |_| true);
    assert_eq!(delete["was_lingering"], true);
    assert_eq!(
        delete["exit_code"], 0,
        "the container's outcome is its init's"
    );
    ct.stop();
}

#[test]
fn fifty_parallel_containers_are_all_reported_once() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    const N: usize = 50;
    let workers: Vec<_> = (0..N)
        .map(|i| {
            std::thread::spawn(move || {
                let mut cgroup = TestCgroup::new(&format!("par{i}"));
                let id = cgroup.id();
                let mut child = cgroup.spawn(&mut sh("exit 7"));
                let status = wait_status(&mut child);
                cgroup.remove();
                (cgroup.container_id(), id, child.id(), status)
            })
        })
        .collect();
    let truth: Vec<_> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    for (id, _, _, _) in &truth {
        ct.wait_event("container_delete", id, |_| true);
    }
    for (id, cgroup_id, pid, status) in &truth {
        let of =
            |event: &str| ct.matching(|v| v["event"] == event && v["container_id"] == id.as_str());
        let creates = of("container_create");
        assert_eq!(creates.len(), 1, "{id}: {creates:#?}");
        assert_eq!(creates[0]["cgroup_id"], *cgroup_id);
        assert_eq!(of("container_delete").len(), 1, "{id}");
        let exits = of("process_exit");
        assert_eq!(exits.len(), 1, "{id}: {exits:#?}");
        assert_eq!(exits[0]["pid"], *pid);
        assert_status(&exits[0], *status);
        assert_eq!(exits[0]["cause"], "failed");
    }
    let stderr = ct.stop();
    assert!(
        !stderr.iter().any(|l| l.contains("ring buffer full")),
        "{stderr:?}"
    );
}

#[test]
fn containers_running_before_start_are_followed() {
    require_privileged!();
    let mut cgroup = TestCgroup::new("before");
    let mut child = cgroup.spawn(Command::new("sleep").arg("1000"));
    let pid = child.id();
    let ct = Clawtrace::start(&[]);
    let id = cgroup.container_id();
    let create = ct.wait_event("container_create", &id, |_| true);
    assert_eq!(create["preexisting"], true);
    assert_eq!(create["cgroup_id"], cgroup.id());

    // A process started in it now is followed from its move into the cgroup through its exec
    // (the kernel programs find the cgroup by the mark the start-up scan set on it).
    let mut late = cgroup.spawn(&mut sh("exit 5"));
    let late_status = wait_status(&mut late);
    assert_eq!(libc::WEXITSTATUS(late_status), 5);
    let late_exit = ct.wait_event("process_exit", &id, |v| v["pid"] == late.id());
    assert_status(&late_exit, late_status);
    assert_eq!(late_exit["comm"], "sh", "{late_exit}");
    assert_eq!(late_exit["cause"], "failed", "{late_exit}");

    kill(pid, libc::SIGKILL);
    let status = wait_status(&mut child);
    cgroup.remove();
    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["is_container_init"], true);
    assert_eq!(exit["cause"], "orchestrator_kill");
    assert_eq!(exit["sender"]["pid"], std::process::id());
    ct.wait_event("container_delete", &id, |_| true);
    ct.stop();
}
