//! The `clawtrace` binary as a user meets it: the preflight check with and without privilege,
//! one-line errors for bad input, the readable output, and a clean stop on SIGTERM.

mod support;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::*;

fn clawtrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clawtrace"))
}

/// The same command run as user `nobody` with no capabilities.
fn as_nobody(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ])
    .arg(env!("CARGO_BIN_EXE_clawtrace"))
    .args(args);
    cmd
}

#[test]
fn bad_flags_and_values_fail_with_one_line() {
    for args in [
        &["run", "--no-such-flag"][..],
        &["run", "--ring-buffer-size", "1000"],
        &["run", "--output", "yaml"],
        &["run", "--linger-after", "whenever"],
        &["run", "--gpu-device", "195:9-3"],
        &["run", "--no-mount-tracking"],
        // `top` takes the tracing flags, not the output ones.
        &["top", "--output", "json"],
        &["top", "-v"],
        &["top", "--ring-buffer-size", "1000"],
        &["fly"],
    ] {
        let out = clawtrace().args(args).output().expect("run clawtrace");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("clawtrace: "), "{stderr}");
    }
}

/// `top` without a terminal says so in one line, before it loads anything (so as any user).
#[test]
fn top_without_a_terminal_fails_with_one_line() {
    let out = clawtrace()
        .args(["top"])
        .stdin(Stdio::null())
        .output()
        .expect("run clawtrace");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("output is not one"), "{stderr}");
}

#[test]
fn bad_pattern_fails_with_one_line() {
    require_privileged!();
    let out = clawtrace()
        .args(["run", "--container-cgroup-pattern", "(unclosed"])
        .output()
        .expect("run clawtrace");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("invalid --container-cgroup-pattern"),
        "{stderr}"
    );
}

#[test]
fn check_passes_as_root() {
    require_privileged!();
    let out = clawtrace()
        .arg("check")
        .output()
        .expect("run clawtrace check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for required in [
        "privileges",
        "kernel BTF",
        "tracefs",
        "tracepoint cgroup:cgroup_mkdir",
        "tracepoint cgroup:cgroup_rmdir",
        "tracepoint sched:sched_process_exit",
        "tracepoint signal:signal_generate",
        "tracepoint oom:mark_victim",
        "tracepoint syscalls:sys_enter_mount",
        "tracepoint syscalls:sys_exit_mount_setattr",
        "tracepoint syscalls:sys_enter_move_mount",
        "cgroup v2",
        "ring buffer",
        "programs load and attach",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!(" {required}")))
            .unwrap_or_else(|| panic!("no line for {required}: {stdout}"));
        assert!(line.starts_with("ok "), "{line}");
    }
}

#[test]
fn check_and_run_name_the_missing_privilege() {
    require_privileged!(); // setpriv needs root to become nobody
    let out = as_nobody(&["check"])
        .output()
        .expect("setpriv clawtrace check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("privileges"))
        .expect("privileges line");
    assert!(line.starts_with("missing "), "{line}");
    assert!(
        line.contains("CAP_BPF") && line.contains("CAP_PERFMON") && line.contains("root"),
        "{line}"
    );

    let out = as_nobody(&["run"]).output().expect("setpriv clawtrace run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("missing privileges: CAP_BPF, CAP_PERFMON"),
        "{stderr}"
    );
}

/// Ids of the BPF programs process `pid` holds, from its file descriptors' fdinfo (a program
/// may be held by more than one descriptor).
fn programs_of(pid: u32) -> std::collections::BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Default::default();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// Whether the kernel still has program `id` loaded.
fn program_loaded(id: u32) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bpftool (installed by cargo xtask setup)")
        .success()
}

/// A running clawtrace, killed on drop if the test ends (or fails) before it exited.
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads clawtrace's stderr until its "tracing:" line (all programs attached). Returns the line
/// and the stderr reader, which the caller keeps open until clawtrace has exited.
fn await_tracing_line(
    child: &mut std::process::Child,
) -> (String, BufReader<std::process::ChildStderr>) {
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("tracing:") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "clawtrace exited early"
        );
    }
    (line, stderr)
}

/// The kernel's name and type of each program clawtrace `pid` holds (names cut to 15 bytes).
fn program_names(pid: u32) -> Vec<(String, String)> {
    programs_of(pid)
        .into_iter()
        .map(|id| {
            let out = Command::new("bpftool")
                .args(["-j", "prog", "show", "id", &id.to_string()])
                .output()
                .expect("bpftool (installed by cargo xtask setup)");
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The programs (name, kernel program type) `clawtrace run` attaches without flags: the
/// lifecycle hooks (BTF tracepoints are `tracing` programs, the others `tracepoint`), the OOM
/// mark's program for this kernel's `mark_victim` prototype, and the cgroup device program.
fn core_programs() -> Vec<(String, String)> {
    let bits = clawtrace::source::features::probe_running_kernel()
        .expect("probe the kernel")
        .bits;
    let oom = if bits & tracer_common::feature::OOM_VICTIM_TASK != 0 {
        "mark_victim"
    } else {
        "mark_victim_pid"
    };
    [
        ("cgroup_mkdir", "tracing"),
        ("cgroup_rmdir", "tracepoint"),
        ("sched_process_exec", "tracepoint"),
        ("sched_process_exit", "tracepoint"),
        ("signal_generate", "tracing"),
        (oom, "tracing"),
        ("device_access", "cgroup_device"),
    ]
    .into_iter()
    .map(|(name, kind)| (name.to_string(), kind.to_string()))
    .collect()
}

fn start_and_list(extra: &[&str]) -> Vec<(String, String)> {
    let pattern = test_pattern();
    let mut args = vec!["run", "--container-cgroup-pattern", &pattern];
    args.extend_from_slice(extra);
    let mut child = Running(
        clawtrace()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clawtrace"),
    );
    let pid = child.id();
    let (line, _stderr) = await_tracing_line(&mut child);
    let programs = program_names(pid);
    assert!(
        line.contains(&format!("tracing: {} programs attached", programs.len())),
        "{line} {programs:?}"
    );
    kill(pid, libc::SIGTERM);
    assert!(child.wait().expect("wait").success());
    programs
}

#[test]
fn by_default_no_syscall_hook_is_loaded() {
    require_privileged!();
    // What the kernel holds for the process: no syscall tracepoint program by default; the
    // cgroup device program sees GPU accesses.
    let mut programs = start_and_list(&[]);
    programs.sort();
    let mut want = core_programs();
    want.sort();
    assert_eq!(programs, want);
    assert!(
        !programs.iter().any(|(name, _)| name.starts_with("sys_")),
        "{programs:?}"
    );
    assert!(
        programs.contains(&("device_access".to_string(), "cgroup_device".to_string())),
        "{programs:?}"
    );
    // The mount system calls only when asked for; the device hook can be left out.
    let mut programs = start_and_list(&["--trace-mount-syscalls", "--no-gpu-tracking"]);
    programs.sort();
    let mut want: Vec<(String, String)> = core_programs()
        .into_iter()
        .filter(|(name, _)| name != "device_access")
        .collect();
    let bits = clawtrace::source::features::probe_running_kernel()
        .expect("probe the kernel")
        .bits;
    let mut calls = vec![
        "mount",
        "umount",
        "open_tree",
        "move_mount",
        "fsmount",
        "fsconfig",
    ];
    if bits & tracer_common::feature::MOUNT_SETATTR != 0 {
        calls.push("mount_setattr");
    }
    for call in calls {
        for side in ["enter", "exit"] {
            want.push((format!("sys_{side}_{call}"), "tracepoint".to_string()));
        }
    }
    want.sort();
    assert_eq!(programs, want);
    assert!(
        programs
            .iter()
            .any(|(name, kind)| name == "sys_enter_mount" && kind == "tracepoint"),
        "{programs:?}"
    );
    assert!(
        !programs.iter().any(|(name, _)| name == "device_access"),
        "{programs:?}"
    );
}

#[test]
fn text_output_and_clean_stop_on_sigterm() {
    require_privileged!();
    let pattern = test_pattern();
    let mut child = Running(
        clawtrace()
            .args(["run", "--container-cgroup-pattern", &pattern])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clawtrace"),
    );
    let pid = child.id();
    let (line, _stderr) = await_tracing_line(&mut child);
    // What the kernel holds for the process, by name and type: the core tracepoints and the
    // cgroup device program, nothing else (no mount system call hook without its flag).
    let mut attached = program_names(pid);
    attached.sort();
    let mut want = core_programs();
    want.sort();
    assert_eq!(attached, want, "{line}");
    assert!(
        line.contains(&format!("tracing: {} programs attached", want.len())),
        "{line}"
    );
    let programs = programs_of(pid);
    assert_eq!(programs.len(), want.len(), "{attached:?}");
    assert!(programs.iter().all(|&id| program_loaded(id)));

    let mut cgroup = TestCgroup::new("text");
    let mut victim = cgroup.spawn(Command::new("sleep").arg("1000"));
    kill(victim.id(), libc::SIGKILL);
    wait_status(&mut victim);
    cgroup.remove();
    // Give the events time to be printed, then stop.
    std::thread::sleep(Duration::from_millis(500));

    kill(pid, libc::SIGTERM);
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "no exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    wait_until("the programs unloaded", Duration::from_secs(5), || {
        programs.iter().all(|&id| !program_loaded(id))
    });

    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("stdout");
    // The sender is this thread: its comm is the test thread's name.
    let me = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
    let id = cgroup.container_id();
    // By default, what an operator acts on: the creation, the kill with who sent it, the end.
    // A process's exec and exit come with -v.
    let created = format!("container {id} created (custom, cgroup /{})", cgroup.name);
    assert!(
        stdout.lines().any(|l| l == created),
        "no {created:?} in:\n{stdout}"
    );
    let (exec, exit) = (
        format!("container {id} exec "),
        format!("container {id} exited "),
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with(&exec) || l.starts_with(&exit)),
        "exec and exit lines without -v:\n{stdout}"
    );
    // Then who started this process, as /proc says, nearest first, and the sender's class.
    let kill_line = format!(
        "container {id} SIGKILL to sleep[{}] from {}[{}] ← ",
        victim.id(),
        me.trim(),
        std::process::id()
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&kill_line))
        .unwrap_or_else(|| panic!("no line starting {kill_line:?} in:\n{stdout}"));
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(str::trim)
        .expect("PPid");
    let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).expect("parent comm");
    assert!(
        line[kill_line.len()..].starts_with(&format!("{}[{ppid}]", parent.trim())),
        "{line}"
    );
    assert!(line.ends_with(", outside the container)"), "{line}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("container {id} deleted after "))),
        "{stdout}"
    );
}
