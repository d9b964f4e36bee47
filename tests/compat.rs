//! The kernel-compatibility set: what every kernel clawtrace supports (Linux 5.10 and newer)
//! must show, whichever path each kernel feature takes there. `cargo xtask test` runs it on the
//! host kernel and `cargo xtask vm-test` inside VMs booting other kernels. Each test makes its
//! own container (a real cgroup v2 sub-cgroup with processes placed in it), runs the real
//! `clawtrace` binary or the library's loader, and checks what it reports against the ground
//! truth the test holds: the status `waitpid` returned, the pid that sent a signal, the times it
//! sent them, the records it caused, the maps the kernel holds for the running tracer.
//!
//! The tests take turns: the overflow test counts every record its programs lose, and the
//! others' containers would add records of their own.

mod support;

use std::{
    collections::BTreeSet,
    ffi::CString,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clawtrace::source::{
    decode::Record,
    loader::{Tracer, TracerConfig},
};
use serde_json::{json, Value};
use support::*;
use tracer_common::{Kind, Miss};

/// The fallbacks this kernel is expected to need, comma-separated feature keys (empty: none).
/// Set by `cargo xtask vm-test` per kernel, and by CI for the host; unset, the test only checks
/// that what `clawtrace check` finds is what the running tracer does.
const EXPECT_FALLBACKS: &str = "CLAWTRACE_EXPECT_FALLBACKS";

/// Where to write the fallbacks found (one line, comma-separated keys), for vm-test's summary.
const COMPAT_REPORT: &str = "CLAWTRACE_COMPAT_REPORT";

static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every feature key `clawtrace check` reports, each as present (`ok`) or `fallback`.
fn checked_features() -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
        .arg("check")
        .output()
        .expect("run clawtrace check");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut present, mut fallback) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines() {
        let Some((status, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("kernel feature ") else {
            continue;
        };
        let key = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        match status {
            "ok" => present.insert(key),
            "fallback" => fallback.insert(key),
            other => panic!("kernel feature line with status {other}: {line}\n{text}"),
        };
    }
    (present, fallback)
}

/// The maps (name, type, max_entries) and program names the process `pid` holds, from the
/// kernel: map and program ids from its file descriptors' fdinfo, names and types from bpftool.
fn bpf_objects_of(pid: u32) -> (Vec<(String, String, u64)>, Vec<String>) {
    let (mut map_ids, mut prog_ids) = (BTreeSet::new(), BTreeSet::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let info = std::fs::read_to_string(entry.expect("fdinfo entry").path()).unwrap_or_default();
        for line in info.lines() {
            if let Some(id) = line.strip_prefix("map_id:") {
                map_ids.insert(id.trim().parse::<u64>().expect("map id"));
            } else if let Some(id) = line.strip_prefix("prog_id:") {
                prog_ids.insert(id.trim().parse::<u64>().expect("prog id"));
            }
        }
    }
    let show = |what: &str| -> Vec<Value> {
        let out = Command::new("bpftool")
            .args(["-j", what, "show"])
            .output()
            .expect("run bpftool (cargo xtask setup installs it)");
        assert!(out.status.success(), "bpftool {what} show: {out:?}");
        serde_json::from_slice(&out.stdout).expect("bpftool's JSON")
    };
    let maps = show("map")
        .into_iter()
        .filter(|m| map_ids.contains(&m["id"].as_u64().unwrap_or(0)))
        .map(|m| {
            // bpftool names the types it knows; older ones print the number.
            let kind = match &m["type"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                kind,
                m["max_entries"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let progs = show("prog")
        .into_iter()
        .filter(|p| prog_ids.contains(&p["id"].as_u64().unwrap_or(0)))
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    (maps, progs)
}

/// The map the kernel names `name` (names are cut to 15 bytes).
fn map<'a>(maps: &'a [(String, String, u64)], name: &str) -> &'a (String, String, u64) {
    let short = &name[..name.len().min(15)];
    let found: Vec<_> = maps.iter().filter(|m| m.0 == short).collect();
    assert_eq!(found.len(), 1, "map {name}: {maps:?}");
    found[0]
}

#[test]
fn each_kernel_feature_takes_the_path_the_kernel_allows() {
    require_privileged!();
    let _turn = turn();
    let (present, fallback) = checked_features();
    let all: BTreeSet<String> = present.union(&fallback).cloned().collect();
    let keys = [
        "task-btf",
        "exit-group-dead",
        "oom-victim-task",
        "mount-setattr",
        "device-caller",
        "device-decision",
    ];
    assert_eq!(
        all,
        keys.iter().map(|k| k.to_string()).collect(),
        "check's feature lines"
    );
    let found = fallback.iter().cloned().collect::<Vec<_>>().join(",");
    if let Some(path) = std::env::var_os(COMPAT_REPORT) {
        std::fs::write(&path, format!("{found}\n")).expect("write the compatibility report");
    }
    eprintln!(
        "kernel fallbacks: {}",
        if found.is_empty() { "none" } else { &found }
    );
    if let Ok(want) = std::env::var(EXPECT_FALLBACKS) {
        let want: BTreeSet<String> = want
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect();
        assert_eq!(
            fallback, want,
            "fallbacks found, and those {EXPECT_FALLBACKS} expects"
        );
    }

    // The running tracer says the same, and holds the maps of the paths it took.
    let ct = Clawtrace::start(&[]);
    let stderr = ct.stderr();
    let tracing = stderr
        .iter()
        .find(|l| l.contains("tracing:"))
        .expect("tracing line");
    let logged = tracing
        .rsplit("kernel fallbacks: ")
        .next()
        .unwrap_or_default();
    let logged: BTreeSet<String> = match logged {
        "none" => BTreeSet::new(),
        list => list.split(',').map(String::from).collect(),
    };
    assert_eq!(logged, fallback, "{tracing}");
    for key in &fallback {
        assert!(
            stderr
                .iter()
                .any(|l| l.contains(&format!("kernel feature {key} (")) && l.contains("instead")),
            "no start-up line says what {key} costs: {stderr:?}"
        );
    }
    let (maps, progs) = bpf_objects_of(ct.pid());
    let has = |key: &str| present.contains(key);
    // Followed cgroups are told by the cgroup table alone; what signals and OOM marks a
    // process got travels in their own records: no per-process map in the kernel.
    assert!(
        !maps.iter().any(|m| m.0 == "FOLLOWED" || m.0 == "SIGNALS"),
        "{maps:?}"
    );
    assert_eq!(map(&maps, "CGROUPS").1, "hash", "{maps:?}");
    // Process exits told by group_dead, else claimed once per process in a table.
    let claims = map(&maps, "EXIT_CLAIMS");
    if has("exit-group-dead") {
        assert_eq!(claims.2, 1, "{claims:?}");
    } else {
        assert!(claims.2 > 1, "{claims:?}");
    }
    // With the default flags, no system-call tracepoint: nothing on every task's system-call
    // path. Device accesses come from the cgroup device hook.
    assert!(
        !progs.iter().any(|p| p.starts_with("sys_")),
        "default flags attach no syscall program: {progs:?}"
    );
    assert!(progs.iter().any(|p| p == "device_access"), "{progs:?}");
    ct.stop();

    // mount_setattr's programs only where the call exists (names may be cut to 15 bytes:
    // `sys_enter_mount` and `sys_enter_mount_setattr` both start so).
    let ct = Clawtrace::start(&["--trace-mount-syscalls"]);
    let (_, progs) = bpf_objects_of(ct.pid());
    let mount_enters = progs
        .iter()
        .filter(|p| p.starts_with("sys_enter_mount"))
        .count();
    let want = if has("mount-setattr") { 2 } else { 1 };
    assert_eq!(mount_enters, want, "{progs:?}");
    ct.stop();
}

#[test]
fn clean_exit_zero() {
    require_privileged!();
    let _turn = turn();
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
    let _turn = turn();
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
    let _turn = turn();
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
    let _turn = turn();
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
    let _turn = turn();
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
    // Both times are taken just after each kill returns; a slow machine may be descheduled
    // between the call and the clock read.
    let tolerance = scaled(Duration::from_millis(50)).as_secs_f64().min(0.5);
    assert!(
        (reported - grace).abs() < tolerance,
        "grace {reported} s, measured {grace} s"
    );
    ct.stop();
}

#[test]
fn segmentation_fault_is_a_crash() {
    require_privileged!();
    let _turn = turn();
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
    let _turn = turn();
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

/// SIGXFSZ past RLIMIT_FSIZE and SIGPIPE on a broken pipe are raised by the kernel in the
/// writer's own context, as if it had sent them itself; the same signals sent by kill(2) of its
/// own pid are the process's doing. Each pair is made for real, and told apart.
#[test]
fn the_kernels_sigxfsz_and_sigpipe_are_told_from_a_self_kill() {
    require_privileged!();
    let _turn = turn();
    let ct = Clawtrace::start(&[]);
    let file = std::env::temp_dir().join(format!("clawtrace-fsize-{}", std::process::id()));
    // Python ignores both signals by default: the default action is put back first.
    let prelude = "import os, resource, signal\n\
                   resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n\
                   signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n\
                   signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n";
    let cases = [
        (
            "fsize",
            format!(
                "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n\
                 fd = os.open({:?}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n\
                 os.write(fd, b'x' * 4096)\n\
                 os.write(fd, b'x')",
                file.display().to_string()
            ),
            libc::SIGXFSZ,
            ("policy_kill", json!("rlimit"), json!("fsize")),
        ),
        (
            "pipe",
            "r, w = os.pipe()\nos.close(r)\nos.write(w, b'x')".to_string(),
            libc::SIGPIPE,
            ("broken_pipe", Value::Null, Value::Null),
        ),
        (
            "xfsz-self",
            "os.kill(os.getpid(), signal.SIGXFSZ)".to_string(),
            libc::SIGXFSZ,
            ("self_signal", Value::Null, Value::Null),
        ),
        (
            "pipe-self",
            "os.kill(os.getpid(), signal.SIGPIPE)".to_string(),
            libc::SIGPIPE,
            ("self_signal", Value::Null, Value::Null),
        ),
    ];
    for (tag, code, signal, (cause, policy, limit)) in cases {
        let mut cgroup = TestCgroup::new(tag);
        let mut child = cgroup.spawn(&mut python(&format!("{prelude}{code}")));
        let status = wait_status(&mut child);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == signal,
            "{tag}: status {status:#x}"
        );
        cgroup.remove();
        let exit = init_exit(&ct, &cgroup, child.id());
        assert_status(&exit, status);
        assert_eq!(exit["cause"], cause, "{tag}: {exit}");
        assert_eq!(exit["policy"], policy, "{tag}: {exit}");
        assert_eq!(exit["limit"], limit, "{tag}: {exit}");
        assert_eq!(exit["sender"]["pid"], child.id(), "{tag}: {exit}");
    }
    let _ = std::fs::remove_file(&file);
    ct.stop();
}

#[test]
fn sigkill_from_a_peer_in_the_same_container() {
    require_privileged!();
    let _turn = turn();
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

#[test]
fn oom_kill_in_a_memory_limited_cgroup() {
    require_privileged!();
    let _turn = turn();
    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("oom");
    let memory = MemoryLimit::new(&cgroup, 64 << 20);
    // Join the limit from inside the child, then allocate and touch 512 MiB.
    let script = format!("{} exec {}", memory.join_command(), MemoryLimit::HOG);
    let mut child = cgroup.spawn(&mut sh(&script));
    let status = wait_status_within(&mut child, Duration::from_secs(15), "the OOM kill");
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

#[test]
fn a_full_ring_buffer_loses_records_and_counts_each_one() {
    require_privileged!();
    let _turn = turn();
    // The smallest ring buffer, not read while the workload runs: most records cannot fit.
    let mut tracer = Tracer::start(&TracerConfig {
        ring_buffer_bytes: 4096,
        ..TracerConfig::default()
    })
    .expect("load and attach");
    let lost_before = tracer.missed().expect("lost counters");

    const PROCESSES: u32 = 60;
    let mut cgroup = TestCgroup::new("overflow");
    let cgroup_id = cgroup.id();
    let mut pids = Vec::new();
    for _ in 0..PROCESSES {
        let mut child = cgroup.spawn(&mut Command::new("true"));
        pids.push(child.id());
        assert_eq!(wait_status(&mut child), 0);
    }
    cgroup.remove();

    let mut records = Vec::new();
    // Drain until the ring buffer stays empty.
    loop {
        let before = records.len();
        tracer
            .poll(scaled(Duration::from_millis(200)), &mut records)
            .expect("poll");
        if records.len() == before {
            break;
        }
    }
    let lost = tracer.missed().expect("lost counters");
    let execs = records
        .iter()
        .filter_map(Record::exec)
        .filter(|e| pids.contains(&e.header.tgid) && e.header.cgroup_id == cgroup_id)
        .count() as u64;
    let exits = records
        .iter()
        .filter(|r| matches!(r, Record::Exit(e) if pids.contains(&e.header.tgid)))
        .count() as u64;
    let lost_in = |kind| lost.get(kind, Miss::RingFull) - lost_before.get(kind, Miss::RingFull);
    let (lost_execs, lost_exits) = (lost_in(Kind::ProcessExec), lost_in(Kind::ProcessExit));
    assert!(
        lost_execs + lost_exits > 0,
        "nothing was lost; the test did not overflow"
    );
    // Each process exec'd once and exited once in the cgroup, the only one followed now: what
    // arrived plus what was counted lost is exactly that.
    assert_eq!(
        execs + lost_execs,
        PROCESSES as u64,
        "execs {execs} + lost {lost_execs}"
    );
    assert_eq!(
        exits + lost_exits,
        PROCESSES as u64,
        "exits {exits} + lost {lost_exits}"
    );
}

/// Folders under the temporary directory (or another base), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str, subdirs: &[&str]) -> Scratch {
        Scratch::new_under(std::env::temp_dir(), tag, subdirs)
    }

    fn new_under(base: PathBuf, tag: &str, subdirs: &[&str]) -> Scratch {
        let dir = base.join(format!("clawtrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in subdirs {
            std::fs::create_dir_all(dir.join(sub)).expect("scratch folder");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Scratch(dir)
    }

    fn path(&self, sub: &str) -> String {
        self.0.join(sub).to_string_lossy().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// The mount options (`ro`/`rw`, …) of the mount at `target` in the mount namespace of `pid`.
fn mount_options(pid: u32, target: &str) -> String {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (fields.get(4) == Some(&target)).then(|| fields[5].to_string())
        })
        .unwrap_or_else(|| panic!("{target} is not mounted for {pid}:\n{info}"))
}

#[test]
fn a_bind_mount_made_read_only_by_remount_is_reported_read_only() {
    require_privileged!();
    let _turn = turn();
    let dirs = Scratch::new("binds", &["rw", "ro", "mnt/rw", "mnt/ro"]);
    let ct = Clawtrace::start(&[]);
    let cgroup = TestCgroup::new("binds");
    // As runtimes set up a container where there is no mount_setattr (and runc still does): in
    // the container, before the payload's exec, a private mount namespace, a bind, and a bind
    // remounted read-only.
    let procs = cstring(&cgroup.dir.join("cgroup.procs").to_string_lossy());
    let root = cstring("/");
    let (rw, mrw) = (cstring(&dirs.path("rw")), cstring(&dirs.path("mnt/rw")));
    let (ro, mro) = (cstring(&dirs.path("ro")), cstring(&dirs.path("mnt/ro")));
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (open, write, close, unshare, mount) on memory prepared before fork; it allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let null = std::ptr::null::<libc::c_char>();
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    null,
                    root.as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && libc::mount(
                    rw.as_ptr(),
                    mrw.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == 0
                && libc::mount(
                    ro.as_ptr(),
                    mro.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == 0
                && libc::mount(
                    null,
                    mro.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    std::ptr::null(),
                ) == 0;
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().expect("start the container");
    let pid = child.id();
    // What the kernel made of it, as the payload sees it.
    wait_until("the payload's exec", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            == "sleep"
    });
    let kernel_says = |sub: &str| mount_options(pid, &dirs.path(sub));
    assert!(
        kernel_says("mnt/rw").starts_with("rw"),
        "{}",
        kernel_says("mnt/rw")
    );
    assert!(
        kernel_says("mnt/ro").starts_with("ro"),
        "{}",
        kernel_says("mnt/ro")
    );
    // Nothing is mounted beneath the read-only bind: all under it is read-only (`recursive`).
    for (source, want) in [("rw", "no"), ("ro", "recursive")] {
        let path = dirs.path(source);
        let v = ct.wait_event("volume_mount", &cgroup.container_id(), |v| {
            v["source"] == path.as_str()
        });
        assert_eq!(v["read_only"], want, "{source}: {v}");
        assert_eq!(v["target"], dirs.path(&format!("mnt/{source}")), "{v}");
    }
    kill(pid, libc::SIGKILL);
    wait_status(&mut child);
    let mut cgroup = cgroup;
    cgroup.remove();
    ct.stop();
}

#[test]
fn a_device_access_is_reported_with_the_decision_the_runtime_made() {
    require_privileged!();
    let _turn = turn();
    // Under /dev: its devtmpfs takes device nodes where /dev/shm and temporary folders may be
    // mounted nodev. clawtrace then names them from /dev.
    let dirs = Scratch::new_under(PathBuf::from("/dev"), "devices", &["dev"]);
    let allowed = dirs.path("dev/gpu0");
    let denied = dirs.path("dev/gpu1");
    mknod(Path::new(&allowed), 195, 100);
    mknod(Path::new(&denied), 195, 101);
    // What the payload gets: no driver serves 195:100 (ENXIO after the device check passes);
    // the cgroup's own device program, as a runtime attaches one, denies 195:101 (EPERM).
    let payload = format!("cat '{allowed}'; cat '{denied}'; exit 0");
    let run = |cgroup: &TestCgroup| -> String {
        let out = cgroup
            .spawn(sh(&payload).stderr(std::process::Stdio::piped()))
            .wait_with_output()
            .expect("payload");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let mut before = TestCgroup::new("device-before");
    deny_device(&before.dir, 195, 101);
    let untraced = run(&before);
    before.remove();
    assert!(untraced.contains("No such device or address"), "{untraced}");
    assert!(untraced.contains("Operation not permitted"), "{untraced}");

    let ct = Clawtrace::start(&[]);
    let mut cgroup = TestCgroup::new("device");
    deny_device(&cgroup.dir, 195, 101);
    let traced = run(&cgroup);
    // The hook observes and never decides: the same errors, denied stays denied.
    assert_eq!(traced, untraced);
    let id = cgroup.container_id();
    let first = ct.wait_event("device_access", &id, |v| v["minor"] == 100);
    let second = ct.wait_event("device_access", &id, |v| v["minor"] == 101);
    let (present, _) = checked_features();
    for (event, want) in [(&first, "allowed"), (&second, "denied")] {
        let node = if event["minor"] == 100 {
            &allowed
        } else {
            &denied
        };
        assert_eq!(event["device"], node.as_str(), "{event}");
        assert_eq!(event["access"], "read", "{event}");
        let v1_devices = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" - cgroup ") && l.split(',').any(|o| o.trim() == "devices"));
        let expect = if !present.contains("device-decision") || (want == "allowed" && v1_devices) {
            "undecided"
        } else {
            want
        };
        assert_eq!(event["decision"], expect, "{event}");
        if present.contains("device-caller") {
            assert_eq!(event["comm"], "cat", "{event}");
            assert!(event["pid"].as_u64().is_some(), "{event}");
        } else {
            assert_eq!(event["pid"], Value::Null, "{event}");
        }
    }
    // A denied access is no use of the device; where the kernel does not tell the decision,
    // every access counts as one.
    assert_eq!(
        second["first_use"],
        !present.contains("device-decision"),
        "{second}"
    );
    cgroup.remove();
    ct.stop();
}
