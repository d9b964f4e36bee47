//! The probes against the real kernel, through the library's loader: records of a real cgroup,
//! process, signal and exit, compared with what the test itself did. (Losses when the ring
//! buffer overflows are in the kernel-compatibility set, `compat.rs`.)

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use clawtrace::source::{
    decode::{c_str, sized_str, Record},
    loader::{Tracer, TracerConfig},
};
use support::*;
use tracer_common::{signal_result, ENV_VALUE_LEN};

/// The tests of this file count records exactly, so they take turns: a test's processes would
/// otherwise land in the other test's ring buffer.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Polls `tracer` until `done` says the records collected so far are enough.
fn collect(tracer: &mut Tracer, mut done: impl FnMut(&[Record]) -> bool) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut records = Vec::new();
    while !done(&records) {
        assert!(
            Instant::now() < deadline,
            "timed out; have {} records",
            records.len()
        );
        tracer
            .poll(Duration::from_millis(50), &mut records)
            .expect("poll");
    }
    records
}

/// Polls until the exit record of process `tgid` has come.
fn collect_until_exit_of(tracer: &mut Tracer, tgid: u32) -> Vec<Record> {
    collect(tracer, |rs| {
        rs.iter()
            .any(|r| matches!(r, Record::Exit(e) if e.header.tgid == tgid))
    })
}

#[test]
fn records_mkdir_signal_exit_rmdir_of_a_real_cgroup() {
    require_privileged!();
    let _turn = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut tracer = Tracer::start(&TracerConfig {
        ring_buffer_bytes: 1 << 20,
        ..TracerConfig::default()
    })
    .expect("load and attach");

    let mut cgroup = TestCgroup::new("probes");
    let cgroup_id = cgroup.id();
    let mut child = cgroup.spawn(Command::new("sleep").arg("1000"));
    let child_pid = child.id();
    assert!(cgroup.procs().contains(&child_pid));
    // When the child started, in clock ticks since boot, as /proc says (field 22).
    let stat = std::fs::read_to_string(format!("/proc/{child_pid}/stat")).expect("stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    let start_ticks: u64 = after_comm
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("starttime");
    kill(child_pid, libc::SIGKILL);
    let status = wait_status(&mut child);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    cgroup.remove();

    let me = std::process::id();
    let is_mkdir = |r: &Record| matches!(r, Record::CgroupMkdir(c) if c.id == cgroup_id);
    let is_rmdir = |r: &Record| matches!(r, Record::CgroupRmdir(c) if c.id == cgroup_id);
    let is_signal = |r: &Record| matches!(r, Record::Signal(s) if s.target_pid == child_pid);
    let is_exit = |r: &Record| matches!(r, Record::Exit(e) if e.header.tgid == child_pid);
    let records = collect(&mut tracer, |rs| {
        let wanted: [&dyn Fn(&Record) -> bool; 4] = [&is_mkdir, &is_rmdir, &is_signal, &is_exit];
        wanted.iter().all(|pred| rs.iter().any(pred))
    });

    let Some(Record::CgroupMkdir(mkdir)) = records.iter().find(|r| is_mkdir(r)) else {
        unreachable!()
    };
    assert_eq!(
        sized_str(&mkdir.path, mkdir.path_len),
        format!("/{}", cgroup.name)
    );
    assert_eq!(mkdir.level, 1);

    let Some(Record::Signal(signal)) = records.iter().find(|r| is_signal(r)) else {
        unreachable!()
    };
    // signal_generate runs in the sender's context: the sender is this test process.
    assert_eq!(signal.header.tgid, me, "sender");
    assert_eq!(signal.target_pid, child_pid);
    assert_eq!(signal.target_tgid, child_pid);
    assert_eq!(signal.target_cgroup_id, cgroup_id);
    assert_eq!(signal.signal, libc::SIGKILL as u32);
    assert_eq!(signal.code, 0, "kill() sends SI_USER");
    assert_eq!(signal.result, signal_result::DELIVERED);
    assert_eq!(c_str(&signal.target_comm), "sleep");

    let Some(Record::Exit(exit)) = records.iter().find(|r| is_exit(r)) else {
        unreachable!()
    };
    assert_eq!(exit.header.pid, child_pid);
    assert_eq!(exit.header.cgroup_id, cgroup_id);
    // The wait status exactly as waitpid() gave it to this test.
    assert_eq!(exit.exit_status, status as u32);
    assert_eq!(c_str(&exit.comm), "sleep");
    assert_eq!(exit.parent_tgid, me, "the child's parent is this test");
    // Both name the process by its start time, which is the one /proc gave (in ticks of
    // 1/CLK_TCK s; the kernel's is in ns since boot).
    assert_eq!(signal.target_start_ns, exit.start_ns, "the same process");
    // SAFETY: sysconf reads a constant.
    let tick_ns = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        (exit.start_ns / tick_ns).abs_diff(start_ticks) <= 1,
        "start {} ns, /proc {start_ticks} ticks",
        exit.start_ns
    );

    // Every record carries this cgroup only where it should: the exit ran inside it, the
    // signal was sent from outside it.
    assert_ne!(signal.header.cgroup_id, cgroup_id);
    assert!(records.iter().any(is_rmdir));
}

#[test]
fn reads_the_agent_variable_of_the_first_exec_even_if_it_exits_at_once() {
    require_privileged!();
    let _turn = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut tracer = Tracer::start(&TracerConfig {
        ring_buffer_bytes: 1 << 20,
        init_env_var: Some("AGENT_NAME".to_string()),
        ..TracerConfig::default()
    })
    .expect("load and attach");
    let mut cgroup = TestCgroup::new("env");
    let cgroup_id = cgroup.id();
    // A long variable sorts before it: longer than one read of the scan, and with a decoy that
    // starts exactly where the second read of that string begins (the scan reads 320 bytes,
    // NUL included), which must not be taken for the variable.
    let filler = format!(
        "{}AGENT_NAME=decoy{}",
        "f".repeat(319 - "AAAA_FILLER=".len()),
        "f".repeat(5000)
    );
    let mut first = cgroup.spawn(
        Command::new("true")
            .env_clear()
            .env("AAAA_FILLER", &filler)
            .env("AGENT_NAME", "nemo_claw \"quoted\"")
            .env("PATH", "/usr/bin:/bin"),
    );
    assert_eq!(wait_status(&mut first), 0);
    let mut second = cgroup.spawn(Command::new("true").env("AGENT_NAME", "second"));
    assert_eq!(wait_status(&mut second), 0);
    cgroup.remove();

    let second_pid = second.id();
    let records = collect_until_exit_of(&mut tracer, second_pid);
    let execs: Vec<_> = records
        .iter()
        .filter(|r| r.exec().is_some_and(|e| e.header.cgroup_id == cgroup_id))
        .collect();
    assert_eq!(execs.len(), 2, "one exec record per process");
    // The value travels in the first process's exec record; the second exec is bare.
    let Record::ExecEnv(env) = execs[0] else {
        panic!("the first exec carries no value: {:?}", execs[0])
    };
    assert_eq!(env.exec.header.tgid, first.id());
    assert_eq!(
        sized_str(&env.env.value, env.env.value_len),
        "nemo_claw \"quoted\""
    );
    assert!(
        matches!(execs[1], Record::Exec(e) if e.header.tgid == second_pid),
        "only the first exec in the cgroup is read: {:?}",
        execs[1]
    );

    // A value longer than the record holds arrives cut to ENV_VALUE_LEN bytes, which says so.
    let mut long = TestCgroup::new("env-long");
    let long_id = long.id();
    let value: String = (0..300)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut init = long.spawn(Command::new("true").env_clear().env("AGENT_NAME", &value));
    assert_eq!(wait_status(&mut init), 0);
    long.remove();
    let init_pid = init.id();
    let records = collect_until_exit_of(&mut tracer, init_pid);
    let Some(Record::ExecEnv(cut)) = records
        .iter()
        .find(|r| r.exec().is_some_and(|e| e.header.cgroup_id == long_id))
    else {
        panic!("no exec with the value in {records:?}")
    };
    assert_eq!(cut.env.value_len as usize, ENV_VALUE_LEN);
    assert_eq!(
        sized_str(&cut.env.value, cut.env.value_len),
        value[..ENV_VALUE_LEN]
    );
}
