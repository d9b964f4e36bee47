//! Builders of wire records, for replaying made-up streams through the decoder and the model:
//! the model's tests, the pipeline benchmark and the fuzz targets build their streams here.

use tracer_common::{
    exit_flags, kind, Ancestor, AttachRecord, CgroupRecord, EnvValue, ExecEnvRecord, ExecRecord,
    ExitRecord, Header, SignalOrigin, SignalRecord, SignalTrack, ANCESTRY_LEN, CGROUP_PATH_LEN,
    COMM_LEN, ENV_VALUE_LEN, FILENAME_LEN,
};

use crate::decode::Record;

/// The pid of "the runtime" in made-up streams.
pub const RUNTIME_PID: u32 = 4000;
/// The host's cgroup (the v2 root) in made-up streams.
pub const HOST_CGROUP: u64 = 1;

pub fn header(kind: u32, ts_ns: u64, pid: u32, cgroup_id: u64) -> Header {
    Header {
        kind,
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

/// A mkdir (`kind::CGROUP_MKDIR`) or rmdir of cgroup `id` at `path`, made by the runtime.
pub fn cgroup(record_kind: u32, ts_ns: u64, id: u64, path: &str) -> Record {
    let mut p = [0u8; CGROUP_PATH_LEN];
    let n = path.len().min(CGROUP_PATH_LEN);
    p[..n].copy_from_slice(&path.as_bytes()[..n]);
    let r = CgroupRecord {
        header: header(record_kind, ts_ns, RUNTIME_PID, HOST_CGROUP),
        id,
        level: path.matches('/').count() as u32,
        path_len: n as u32,
        path: p,
    };
    if record_kind == kind::CGROUP_MKDIR {
        Record::CgroupMkdir(r)
    } else {
        Record::CgroupRmdir(r)
    }
}

/// The runtime moving `pid` into cgroup `cgroup_id`.
pub fn attach(ts_ns: u64, cgroup_id: u64, pid: u32) -> Record {
    Record::Attach(AttachRecord {
        header: header(kind::CGROUP_ATTACH, ts_ns, RUNTIME_PID, HOST_CGROUP),
        dst_cgroup_id: cgroup_id,
        target_pid: pid,
        _reserved: 0,
        target_comm: comm("runc:[2:INIT]"),
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
    let Record::Exit(mut r) = exit(ts_ns, cgroup_id, pid, parent, status, &[]) else {
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
        header: header(kind::PROCESS_EXEC, ts_ns, pid, cgroup_id),
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
        header: header(kind::SIGNAL, ts_ns, from, from_cgroup),
        target_pid: to,
        target_tgid: to,
        target_cgroup_id: to_cgroup,
        signal: sig,
        code,
        result: 0,
        group: 1,
        sender_comm: comm("runc"),
        target_comm: comm("agent"),
        ancestry_len: 1,
        evidence: 0,
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

/// What the kernel remembers of one send, for an exit record's track.
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

/// Process `pid` (child of `parent`) ending with wait status `status` in cgroup `cgroup_id`,
/// with the sends the kernel remembered.
pub fn exit(
    ts_ns: u64,
    cgroup_id: u64,
    pid: u32,
    parent: u32,
    status: u32,
    slots: &[SignalOrigin],
) -> Record {
    let mut track = SignalTrack::default();
    let n = slots.len().min(track.slots.len());
    track.slots[..n].copy_from_slice(&slots[..n]);
    Record::Exit(ExitRecord {
        header: header(kind::PROCESS_EXIT, ts_ns, pid, cgroup_id),
        exit_status: status,
        flags: if slots.is_empty() {
            0
        } else {
            exit_flags::HAS_TRACK
        },
        parent_tgid: parent,
        ns_level: 0,
        comm: comm("agent"),
        track,
    })
}
