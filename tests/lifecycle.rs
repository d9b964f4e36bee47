//! Container lifecycles and kill attribution, end to end: each test makes its own container (a
//! real cgroup v2 sub-cgroup with processes placed in it), runs the real `clawtrace` binary, and
//! checks its JSON events against the ground truth the test holds: the status `waitpid`
//! returned, the pid that sent a signal, the times it sent them. (The basic causes, exit 0 to
//! the OOM kill, are in the kernel-compatibility set, `compat.rs`.)

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use support::*;

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

#[test]
fn the_kernel_killing_at_the_cpu_hard_limit_is_an_rlimit_policy_kill() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("rlimit-cpu");
    // One second of CPU, soft and hard: the kernel sends SIGKILL when the process has used it.
    let mut child = cgroup.spawn(&mut python(
        "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (1, 1))\nwhile True: pass",
    ));
    let status = wait_status(&mut child);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "status {status:#x}"
    );
    cgroup.remove();
    let exit = init_exit(&ct, &cgroup, child.id());
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "policy_kill", "{exit}");
    assert_eq!(exit["policy"], "rlimit", "{exit}");
    assert_eq!(exit["limit"], "cpu", "{exit}");
    assert_eq!(
        exit["sender"]["pid"],
        child.id(),
        "sent in its own context: {exit}"
    );
    ct.stop();
}

#[test]
fn a_kill_through_bpf_send_signal_is_a_kernel_policy_kill() {
    require_privileged!();
    if !have("/usr/bin/bpftrace") {
        panic!("bpftrace is missing: `cargo xtask setup` installs it");
    }
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("bpf-signal");
    // The victim asks for its parent's pid in a loop; an eBPF program of bpftrace's, on that
    // system call, kills it with bpf_send_signal (bpftrace's signal()), as enforcers do.
    let mut child = cgroup.spawn(
        python("import os, sys\nprint(os.getpid(), flush=True)\nsys.stdin.readline()\nwhile True: os.getppid()")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the victim's pid");
    assert_eq!(line.trim(), pid.to_string());
    let script = format!(
        "tracepoint:syscalls:sys_enter_getppid /pid == {pid}/ {{ signal(\"SIGKILL\"); exit(); }} \
         BEGIN {{ printf(\"attached\\n\"); }}"
    );
    let mut enforcer = Command::new("bpftrace")
        .args(["--unsafe", "-e", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bpftrace");
    // bpftrace says "Attaching N probes..." first; BEGIN runs once they are attached.
    let attached = BufReader::new(enforcer.stdout.take().expect("bpftrace stdout"))
        .lines()
        .map_while(Result::ok)
        .any(|l| l.trim() == "attached");
    assert!(attached, "bpftrace did not attach");
    // Go: the first getppid is the victim's last.
    drop(child.stdin.take());
    let status = wait_status(&mut child);
    let _ = enforcer.kill();
    let _ = enforcer.wait();
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "status {status:#x}"
    );
    cgroup.remove();
    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    assert_eq!(exit["cause"], "policy_kill", "{exit}");
    assert_eq!(exit["policy"], "kernel", "{exit}");
    assert_eq!(exit["sender"]["pid"], pid, "{exit}");
    ct.stop();
}

/// The command line of `pid`, its arguments joined by spaces.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn processes_killed_when_their_pid_namespace_init_exits_name_that_init() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("pidns");
    // A pid namespace of its own whose init (the shell) leaves a child behind, then exits 0 when
    // told to: the kernel then kills the child.
    let mut unshare = cgroup.spawn(
        Command::new("unshare")
            .args(["--pid", "--fork", "sh", "-c", "sleep 1001 & read x; exit 0"])
            .stdin(Stdio::piped()),
    );
    let mut found = (None, None);
    wait_until(
        "the namespace's init and its child",
        Duration::from_secs(5),
        || {
            for pid in cgroup.procs() {
                match cmdline(pid).as_str() {
                    "sh -c sleep 1001 & read x; exit 0" => found.0 = Some(pid),
                    "sleep 1001" => found.1 = Some(pid),
                    _ => {}
                }
            }
            found.0.is_some() && found.1.is_some()
        },
    );
    let (init, child) = (found.0.unwrap_or(0), found.1.unwrap_or(0));
    drop(unshare.stdin.take());
    assert_eq!(wait_status(&mut unshare), 0);
    wait_until("the child gone", Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{child}")).exists()
    });
    cgroup.kill_all();
    cgroup.remove();
    let id = cgroup.container_id();
    let exit = ct.wait_event("process_exit", &id, |v| v["pid"] == child);
    assert_eq!(exit["cause"], "init_exited", "{exit}");
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
    assert_eq!(exit["sender"]["pid"], init, "{exit}");
    assert_eq!(exit["init"]["pid"], init, "{exit}");
    assert_eq!(exit["init"]["comm"], "sh", "{exit}");
    // Pid 1 of the container's pid namespace is its init, not `unshare`, which exec'd first in
    // the cgroup and is a helper, as a runtime's are: its exit is no process of the container.
    assert_eq!(exit["init"]["cause"], "exited", "{exit}");
    let init_exit = ct.wait_event("process_exit", &id, |v| v["pid"] == init);
    assert_eq!(init_exit["is_container_init"], true, "{init_exit}");
    let delete = ct.wait_event("container_delete", &id, |_| true);
    assert_eq!(
        (delete["exit_code"].clone(), delete["cause"].clone()),
        (0.into(), "exited".into())
    );
    let helper = unshare.id();
    assert!(
        ct.matching(|v| v["event"] == "process_exit" && v["pid"] == helper)
            .is_empty(),
        "unshare, the helper, reported as a process of the container"
    );
    ct.stop();
}

/// `(pid, comm)` of `pid`'s parent, from /proc.
fn parent_of(pid: u32) -> Option<(u32, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ppid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
    (ppid != 0).then(|| (ppid, comm.trim().to_string()))
}

#[test]
fn a_kill_from_a_shell_names_the_senders_ancestry() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("chain");
    let mut victim = cgroup.spawn(Command::new("sleep").arg("1000"));
    let pid = victim.id();
    // The kill chain as /proc tells it now: this process, its parent, and so on.
    let me = std::process::id();
    let own_comm = std::fs::read_to_string(format!("/proc/{me}/comm")).expect("own comm");
    let mut chain = vec![(me, own_comm.trim().to_string())];
    while chain.len() < 7 {
        let Some(parent) = parent_of(chain[chain.len() - 1].0) else {
            break;
        };
        chain.push(parent);
    }
    let mut shell = Command::new("sh")
        .args(["-c", &format!("kill -KILL {pid}")])
        .spawn()
        .expect("sh");
    assert!(shell.wait().expect("wait sh").success());
    let status = wait_status(&mut victim);
    cgroup.remove();
    let exit = init_exit(&ct, &cgroup, pid);
    assert_status(&exit, status);
    let sender = &exit["sender"];
    assert_eq!(sender["pid"], shell.id(), "{exit}");
    assert_eq!(sender["comm"], "sh", "{exit}");
    let ancestry: Vec<(u32, String)> = sender["ancestry"]
        .as_array()
        .expect("ancestry")
        .iter()
        .map(|a| {
            (
                a["pid"].as_u64().unwrap_or(0) as u32,
                a["comm"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ancestry[..chain.len()],
        chain[..],
        "the sender's ancestry, nearest first"
    );
    // A shell started the kill and no runtime or orchestrator did (unless this test runs
    // under one).
    let managed = chain.iter().any(|(_, c)| {
        [
            "dockerd",
            "containerd",
            "kubelet",
            "podman",
            "crio",
            "runc",
            "conmon",
        ]
        .contains(&c.as_str())
            || c.starts_with("containerd-shim")
    });
    if !managed {
        assert_eq!(sender["class"], "operator", "{exit}");
    }
    let signal = ct.wait_event("signal", &cgroup.container_id(), |v| v["target_pid"] == pid);
    assert_eq!(signal["sender"]["ancestry"], sender["ancestry"]);
    ct.stop();
}

#[test]
fn a_shell_init_reporting_its_childs_segfault_gets_the_childs_verdict() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("verdict-shell");
    // The shell waits for its child (`; exit $?` keeps it from exec'ing it), then exits 139.
    let mut init = cgroup.spawn(&mut sh("/usr/bin/python3 -c 'import ctypes, resource; \
         resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); ctypes.string_at(0)'; exit $?"));
    let status = wait_status(&mut init);
    assert_eq!(
        libc::WEXITSTATUS(status),
        128 + libc::SIGSEGV,
        "{status:#x}"
    );
    cgroup.remove();
    let id = cgroup.container_id();
    let child = ct.wait_event("process_exit", &id, |v| v["comm"] == "python3");
    assert_eq!(child["cause"], "crash", "{child}");
    let delete = ct.wait_event("container_delete", &id, |_| true);
    // The runtime's view stays the init's: exit 139, failed; the verdict is the child's.
    assert_eq!(delete["exit_code"], 139, "{delete}");
    assert_eq!(delete["cause"], "failed", "{delete}");
    assert_eq!(delete["verdict"], "crash", "{delete}");
    assert_eq!(delete["verdict_process"]["pid"], child["pid"], "{delete}");
    assert_eq!(delete["verdict_process"]["comm"], "python3", "{delete}");
    ct.stop();
}

#[test]
fn an_init_failing_after_the_oom_killer_took_its_child_gets_an_oom_verdict() {
    require_privileged!();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("verdict-oom");
    let memory = MemoryLimit::new(&cgroup, 64 << 20);
    let script = format!("{} {}; exit $?", memory.join_command(), MemoryLimit::HOG);
    let mut init = cgroup.spawn(&mut sh(&script));
    let status = wait_status_within(&mut init, Duration::from_secs(15), "the OOM kill");
    assert_eq!(
        libc::WEXITSTATUS(status),
        128 + libc::SIGKILL,
        "{status:#x}"
    );
    cgroup.remove();
    let id = cgroup.container_id();
    let child = ct.wait_event("process_exit", &id, |v| v["comm"] == "python3");
    assert_eq!(child["cause"], "oom_kill", "{child}");
    let delete = ct.wait_event("container_delete", &id, |_| true);
    assert_eq!(delete["exit_code"], 137, "{delete}");
    assert_eq!(delete["verdict"], "oom_kill", "{delete}");
    assert_eq!(delete["verdict_process"]["pid"], child["pid"], "{delete}");
    ct.stop();
    drop(memory);
}
