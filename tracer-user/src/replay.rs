//! Builders of wire records, for replaying made-up streams through the decoder and the model:
//! the model's tests, the pipeline benchmark and the fuzz targets build their streams here.

use tracer_common::{
    Ancestor, CgroupRecord, CgroupRmdirRecord, EnvValue, ExecEnvRecord, ExecRecord, ExitRecord,
    Header, Kind, OomRecord, SignalRecord, ANCESTRY_LEN, CGROUP_PATH_LEN, COMM_LEN, ENV_VALUE_LEN,
    FILENAME_LEN,
};

use crate::{model::attribution::SignalOrigin, source::decode::Record};

/// The pid of "the runtime" in made-up streams.
pub const RUNTIME_PID: u32 = 4000;
/// The host's cgroup (the v2 root) in made-up streams.
pub const HOST_CGROUP: u64 = 1;

pub fn header(kind: Kind, ts_ns: u64, pid: u32, cgroup_id: u64) -> Header {
    Header {
        kind: kind as u32,
        _reserved: 0,
        ts_ns,
        pid,
        tgid: pid,
        cgroup_id,
    }
}

/// A `comm`: at most 15 bytes and a NUL, as the kernel keeps it.
pub fn comm(name: &str) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    let n = name.len().min(COMM_LEN - 1);
    c[..n].copy_from_slice(&name.as_bytes()[..n]);
    c
}

/// A mkdir (`Kind::CgroupMkdir`) or rmdir of cgroup `id` at `path`, made by the runtime.
pub fn cgroup(record_kind: Kind, ts_ns: u64, id: u64, path: &str) -> Record {
    let level = path.matches('/').count() as u32;
    if record_kind != Kind::CgroupMkdir {
        return Record::CgroupRmdir(CgroupRmdirRecord {
            header: header(record_kind, ts_ns, RUNTIME_PID, HOST_CGROUP),
            id,
            level,
            _reserved: 0,
        });
    }
    let mut p = [0u8; CGROUP_PATH_LEN];
    let n = path.len().min(CGROUP_PATH_LEN);
    p[..n].copy_from_slice(&path.as_bytes()[..n]);
    Record::CgroupMkdir(CgroupRecord {
        header: header(record_kind, ts_ns, RUNTIME_PID, HOST_CGROUP),
        id,
        level,
        path_len: n as u32,
        path: p,
    })
}

/// `pid` exec'ing `file` in cgroup `cgroup_id`.
pub fn exec(ts_ns: u64, cgroup_id: u64, pid: u32, file: &str) -> Record {
    Record::Exec(exec_record(ts_ns, cgroup_id, pid, file))
}

/// As [`exec`], by a process that is `ns_pid` in a pid namespace `level` deep.
pub fn exec_in_ns(
    ts_ns: u64,
    cgroup_id: u64,
    pid: u32,
    file: &str,
    ns_pid: u32,
    level: u32,
) -> Record {
    let mut r = exec_record(ts_ns, cgroup_id, pid, file);
    r.ns_pid = ns_pid;
    r.ns_level = level;
    Record::Exec(r)
}

/// `record` (an exec or an exit) of a process named `name`.
pub fn named(record: Record, name: &str) -> Record {
    match record {
        Record::Exec(mut r) => {
            r.comm = comm(name);
            Record::Exec(r)
        }
        Record::Exit(mut r) => {
            r.comm = comm(name);
            Record::Exit(r)
        }
        other => other,
    }
}

/// As [`exit`], of a process in a pid namespace `level` deep.
pub fn exit_in_ns(
    ts_ns: u64,
    cgroup_id: u64,
    pid: u32,
    parent: u32,
    status: u32,
    level: u32,
) -> Record {
    let Record::Exit(mut r) = exit(ts_ns, cgroup_id, pid, parent, status) else {
        unreachable!("exit makes an exit record")
    };
    r.ns_level = level;
    Record::Exit(r)
}

fn exec_record(ts_ns: u64, cgroup_id: u64, pid: u32, file: &str) -> ExecRecord {
    let mut filename = [0u8; FILENAME_LEN];
    let n = file.len().min(FILENAME_LEN);
    filename[..n].copy_from_slice(&file.as_bytes()[..n]);
    ExecRecord {
        header: header(Kind::ProcessExec, ts_ns, pid, cgroup_id),
        old_pid: pid,
        filename_len: n as u32,
        // In the host's pid namespace, as a container that shares it.
        ns_pid: pid,
        ns_level: 0,
        mnt_ns: 0,
        _reserved: 0,
        comm: comm(file.rsplit('/').next().unwrap_or(file)),
        filename,
    }
}

/// The exec of a container's init whose environment has the agent-name variable, `value`.
pub fn exec_with_env(ts_ns: u64, cgroup_id: u64, pid: u32, file: &str, value: &str) -> Record {
    let exec = exec_record(ts_ns, cgroup_id, pid, file);
    let mut env = EnvValue {
        value_len: value.len().min(ENV_VALUE_LEN) as u32,
        _reserved: 0,
        value: [0; ENV_VALUE_LEN],
    };
    env.value[..env.value_len as usize]
        .copy_from_slice(&value.as_bytes()[..env.value_len as usize]);
    Record::ExecEnv(ExecEnvRecord { exec, env })
}

/// `from` (in `from_cgroup`) sending `sig` with si_code `code` to `to` (in `to_cgroup`).
pub fn signal(
    ts_ns: u64,
    from: u32,
    from_cgroup: u64,
    to: u32,
    to_cgroup: u64,
    sig: u32,
    code: i32,
) -> Record {
    Record::Signal(SignalRecord {
        header: header(Kind::Signal, ts_ns, from, from_cgroup),
        target_pid: to,
        target_tgid: to,
        target_cgroup_id: to_cgroup,
        target_start_ns: 0,
        signal: sig,
        code,
        result: 0,
        group: 1,
        sender_comm: comm("runc"),
        target_comm: comm("agent"),
        ancestry_len: 1,
        evidence: 0,
        syscall: 0,
        _reserved: 0,
        ancestry: {
            let mut chain = [Ancestor::default(); ANCESTRY_LEN];
            chain[0] = Ancestor {
                tgid: 1,
                comm: comm("systemd"),
            };
            chain
        },
    })
}

/// One send of `sig` with si_code `code` from `from` (in `from_cgroup`), for [`sent`].
pub fn origin(ts_ns: u64, from: u32, from_cgroup: u64, sig: u32, code: i32) -> SignalOrigin {
    SignalOrigin {
        first_ns: ts_ns,
        last_ns: ts_ns,
        sender_cgroup_id: from_cgroup,
        sender_pid: from,
        sender_tgid: from,
        signal: sig,
        code,
        count: 1,
        result: 0,
        syscall: 0,
        evidence: 0,
        sender_comm: comm("runc"),
    }
}

/// The signal record of `send` to process `to` in cgroup `to_cgroup`.
pub fn sent(send: &SignalOrigin, to: u32, to_cgroup: u64) -> Record {
    let Record::Signal(mut r) = signal(
        send.first_ns,
        send.sender_tgid,
        send.sender_cgroup_id,
        to,
        to_cgroup,
        send.signal,
        send.code,
    ) else {
        unreachable!("signal makes a signal record")
    };
    r.header.pid = send.sender_pid;
    r.result = send.result;
    r.syscall = send.syscall;
    r.evidence = send.evidence;
    r.sender_comm = send.sender_comm;
    Record::Signal(r)
}

/// The OOM killer (run by `killer`) choosing process `victim` in cgroup `cgroup_id`.
pub fn oom(ts_ns: u64, killer: u32, victim: u32, cgroup_id: u64) -> Record {
    Record::Oom(OomRecord {
        header: header(Kind::OomMark, ts_ns, killer, HOST_CGROUP),
        victim_pid: victim,
        victim_tgid: victim,
        victim_cgroup_id: cgroup_id,
        victim_start_ns: 0,
        anon_rss_kb: 0,
        total_vm_kb: 0,
    })
}

/// Process `pid` (child of `parent`) ending with wait status `status` in cgroup `cgroup_id`.
pub fn exit(ts_ns: u64, cgroup_id: u64, pid: u32, parent: u32, status: u32) -> Record {
    Record::Exit(ExitRecord {
        header: header(Kind::ProcessExit, ts_ns, pid, cgroup_id),
        exit_status: status,
        _reserved: 0,
        parent_tgid: parent,
        ns_level: 0,
        start_ns: 0,
        comm: comm("agent"),
    })
}

/// One round of a made-up workload's metrics: every metric of
/// [`crate::sinks::metrics::METRICS`] gets series with all its labels, counters grow by the
/// same amount each round, and histograms get observations across their buckets. For tests
/// that need a realistic exposition (the dashboard's queries against a real Prometheus).
pub fn metrics_round(m: &crate::sinks::metrics::Metrics) {
    use crate::sinks::metrics::{sink, AgentName};
    let (nemo, openclaw): (AgentName, AgentName) = ("nemo".into(), "openclaw".into());
    m.declare(&Kind::ALL.map(Kind::probe), sink::ALL);
    for agent in [&nemo, &nemo, &nemo, &openclaw, &openclaw] {
        m.container_created(agent);
    }
    for (seconds, agent) in [
        (0.005, &nemo),
        (0.02, &nemo),
        (0.3, &openclaw),
        (2.0, &openclaw),
    ] {
        m.start_duration(agent, seconds);
    }
    m.container_lingering(&nemo);
    m.container_deleted(&nemo, 12.0, Some("exited"), Some(0), false);
    m.container_deleted(&nemo, 0.5, Some("oom_kill"), Some(137), false);
    m.container_deleted(&openclaw, 90.0, Some("crash"), Some(139), false);
    m.container_deleted(&openclaw, 3600.0, None, None, false);
    for (agent, cause, signal, code) in [
        (&nemo, "exited", "none", 0),
        (&nemo, "failed", "none", 3),
        (&nemo, "oom_kill", "SIGKILL", 137),
        (&openclaw, "orchestrator_kill", "SIGKILL", 137),
        (&openclaw, "crash", "SIGSEGV", 139),
    ] {
        m.process_exit(agent, cause, signal.into(), code);
    }
    for (agent, signal, sender) in [
        (&nemo, "SIGTERM", "outside"),
        (&nemo, "SIGKILL", "kernel"),
        (&openclaw, "SIGKILL", "peer"),
        (&openclaw, "SIGSEGV", "self"),
    ] {
        m.signal(agent, signal.into(), sender);
    }
    for (kind, n) in [
        (Kind::CgroupMkdir, 3),
        (Kind::ProcessExec, 7),
        (Kind::Signal, 5),
    ] {
        m.events(kind.name(), n);
    }
    m.label_overflow(0);
    m.spans_dropped(0);
    for (agent, writable, seconds) in [
        (&nemo, true, 0.00005),
        (&nemo, true, 0.0005),
        (&nemo, false, 0.002),
        (&openclaw, true, 0.00002),
    ] {
        m.mount(agent, writable, seconds);
    }
    m.volume_violation(&nemo, "shared_writable", true);
    m.volume_violation(&openclaw, "read_only_volume_writable", true);
    m.volume_violation(&openclaw, "read_only_volume_writable", false);
    m.gpu_users("nvidia0", 2, 1);
    m.gpu_users("nvidia1", 1, 1);
    m.gpu_sharing(&nemo);
    m.gpu_memory(
        &[
            (("nemo".to_string(), 0, "GPU-0b1c".to_string()), 2u64 << 30),
            (
                ("openclaw".to_string(), 1, "GPU-7e2d".to_string()),
                512 << 20,
            ),
        ]
        .into_iter()
        .collect(),
    );
}

/// A recorded stream as a record source: the whole path, sinks included, driven without a
/// kernel ([`crate::run::drive`]).
pub struct Recorded {
    records: std::vec::IntoIter<Record>,
    /// The cgroups the path told the source to stop following.
    pub untracked: Vec<u64>,
}

impl Recorded {
    pub fn new(records: Vec<Record>) -> Recorded {
        Recorded {
            records: records.into_iter(),
            untracked: Vec::new(),
        }
    }
}

impl crate::source::RecordSource for Recorded {
    /// Every record left, at once.
    fn poll_each(
        &mut self,
        _timeout: std::time::Duration,
        each: &mut dyn FnMut(Record),
    ) -> anyhow::Result<()> {
        for record in self.records.by_ref() {
            each(record);
        }
        Ok(())
    }

    fn missed(&self) -> anyhow::Result<crate::source::loader::Missed> {
        Ok(Default::default())
    }

    fn untrack(&mut self, id: u64) {
        self.untracked.push(id);
    }

    fn decode_errors(&self) -> u64 {
        0
    }
}
