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
