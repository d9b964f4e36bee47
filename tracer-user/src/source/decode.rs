//! Ring-buffer records to typed values. The decoder trusts nothing: it checks the length before
//! reading any record and returns a typed error for a short or unknown one.

use std::mem::size_of;

use tracer_common::{
    CgroupRecord, CgroupRmdirRecord, DeviceAccessRecord, ExecEnvRecord, ExecRecord, ExitRecord,
    Header, Kind, MountRecord, OomRecord, SignalRecord,
};

use crate::model::events::Comm;

/// One decoded record.
#[derive(Debug, Clone, Copy)]
pub enum Record {
    CgroupMkdir(CgroupRecord),
    CgroupRmdir(CgroupRmdirRecord),
    Exec(ExecRecord),
    /// The first exec in a container, with the agent-name variable of its environment.
    ExecEnv(ExecEnvRecord),
    Exit(ExitRecord),
    Signal(SignalRecord),
    Oom(OomRecord),
    Mount(MountRecord),
    DeviceAccess(DeviceAccessRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need}-byte header")]
    ShortHeader { got: usize, need: usize },
    #[error("record of kind {kind} has {got} bytes, needs {need}")]
    Short { kind: u32, got: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// Records counted by kind: how `clawtrace_events_total{kind}` is fed, one poll at a time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCounts([u64; Kind::COUNT]);

impl KindCounts {
    pub fn add(&mut self, record: &Record) {
        self.0[record.kind().index()] += 1;
    }

    /// The kinds with records and their counts, in [`Kind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL
            .iter()
            .zip(self.0)
            .filter(|&(_, n)| n > 0)
            .map(|(&kind, n)| (kind, n))
    }
}

/// Reads a `T` from the front of `bytes` after checking the length.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            kind,
            got: bytes.len(),
            need,
        });
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes (checked above); T is one of the
    // tracer-common wire types, plain-old-data for which every bit pattern is valid; the read is
    // unaligned because ring-buffer samples are only 8-aligned and slices may be anything.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// An exec record: bare, or with the environment value after it. Bytes after a bare record that
/// do not make a whole value are ignored, as after any record.
fn read_exec(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < size_of::<ExecEnvRecord>() {
        return Ok(Record::Exec(read(bytes, Kind::ProcessExec as u32)?));
    }
    let mut record: ExecEnvRecord = read(bytes, Kind::ProcessExec as u32)?;
    // Only `value_len` bytes are the value; the kernel leaves the rest of the field as the ring
    // held it, and nothing of that is kept.
    let len = (record.env.value_len as usize).min(record.env.value.len());
    record.env.value[len..].fill(0);
    Ok(Record::ExecEnv(record))
}

impl Record {
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < size_of::<Header>() {
            return Err(DecodeError::ShortHeader {
                got: bytes.len(),
                need: size_of::<Header>(),
            });
        }
        let header: Header = read(bytes, 0)?;
        let k = header.kind;
        let Some(kind) = Kind::from_wire(k) else {
            return Err(DecodeError::UnknownKind(k));
        };
        Ok(match kind {
            Kind::CgroupMkdir => Record::CgroupMkdir(read(bytes, k)?),
            Kind::CgroupRmdir => Record::CgroupRmdir(read(bytes, k)?),
            Kind::ProcessExec => read_exec(bytes)?,
            Kind::ProcessExit => Record::Exit(read(bytes, k)?),
            Kind::Signal => Record::Signal(read(bytes, k)?),
            Kind::OomMark => Record::Oom(read(bytes, k)?),
            Kind::Mount => Record::Mount(read(bytes, k)?),
            Kind::DeviceAccess => Record::DeviceAccess(read(bytes, k)?),
        })
    }

    pub fn header(&self) -> &Header {
        match self {
            Record::CgroupMkdir(r) => &r.header,
            Record::CgroupRmdir(r) => &r.header,
            Record::Exec(r) => &r.header,
            Record::ExecEnv(r) => &r.exec.header,
            Record::Exit(r) => &r.header,
            Record::Signal(r) => &r.header,
            Record::Oom(r) => &r.header,
            Record::Mount(r) => &r.header,
            Record::DeviceAccess(r) => &r.header,
        }
    }

    /// The exec record, bare or with the environment value after it.
    pub fn exec(&self) -> Option<&ExecRecord> {
        match self {
            Record::Exec(r) => Some(r),
            Record::ExecEnv(r) => Some(&r.exec),
            _ => None,
        }
    }

    /// The record's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Record::CgroupMkdir(_) => Kind::CgroupMkdir,
            Record::CgroupRmdir(_) => Kind::CgroupRmdir,
            Record::Exec(_) | Record::ExecEnv(_) => Kind::ProcessExec,
            Record::Exit(_) => Kind::ProcessExit,
            Record::Signal(_) => Kind::Signal,
            Record::Oom(_) => Kind::OomMark,
            Record::Mount(_) => Kind::Mount,
            Record::DeviceAccess(_) => Kind::DeviceAccess,
        }
    }

    /// The record's wire bytes, exactly as the kernel side writes them. Used to record and replay
    /// streams in tests and benchmarks.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
            // SAFETY: T is a tracer-common wire type: #[repr(C)] with no implicit padding, so all
            // size_of::<T>() bytes are initialised.
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
                .to_vec()
        }
        match self {
            Record::CgroupMkdir(r) => bytes_of(r),
            Record::CgroupRmdir(r) => bytes_of(r),
            Record::Exec(r) => bytes_of(r),
            Record::ExecEnv(r) => bytes_of(r),
            Record::Exit(r) => bytes_of(r),
            Record::Signal(r) => bytes_of(r),
            Record::Oom(r) => bytes_of(r),
            Record::Mount(r) => bytes_of(r),
            Record::DeviceAccess(r) => bytes_of(r),
        }
    }
}

/// The text of a fixed-size, NUL-padded kernel string (`comm`), lossily decoded.
pub fn c_str(bytes: &[u8]) -> String {
    String::from_utf8_lossy(before_nul(bytes)).into_owned()
}

/// `bytes` up to its first NUL (all of it when there is none).
fn before_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// A process name (a kernel `comm`, at most 15 bytes before its NUL), lossily decoded and kept
/// inline: no allocation.
pub fn comm_str(bytes: &[u8]) -> Comm {
    let name = before_nul(bytes);
    // Nearly every name is valid UTF-8 (ASCII): checked once, then copied in place.
    match std::str::from_utf8(name) {
        Ok(name) => Comm::new(name),
        Err(_) => Comm::from_utf8_lossy(name),
    }
}

/// The first `len` bytes of `bytes` (bounded by its size), lossily decoded.
pub fn sized_str(bytes: &[u8], len: u32) -> String {
    let len = (len as usize).min(bytes.len());
    c_str(&bytes[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{
        mount_call, Ancestor, EnvValue, ANCESTRY_LEN, CGROUP_PATH_LEN, COMM_LEN, ENV_VALUE_LEN,
        FILENAME_LEN, MOUNT_PATH_LEN, MOUNT_TYPE_LEN,
    };

    fn head(kind: Kind) -> Header {
        Header {
            kind: kind as u32,
            _reserved: 0,
            ts_ns: 123_456_789,
            pid: 42,
            tgid: 41,
            cgroup_id: 7,
        }
    }

    fn comm(s: &str) -> [u8; COMM_LEN] {
        let mut c = [0u8; COMM_LEN];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn samples() -> Vec<Record> {
        let mut path = [0u8; CGROUP_PATH_LEN];
        path[..9].copy_from_slice(b"/docker/x");
        let cg = |k| CgroupRecord {
            header: head(k),
            id: 99,
            level: 2,
            path_len: 9,
            path,
        };
        let mut filename = [0u8; FILENAME_LEN];
        filename[..8].copy_from_slice(b"/bin/sh\0");
        vec![
            Record::CgroupMkdir(cg(Kind::CgroupMkdir)),
            Record::CgroupRmdir(CgroupRmdirRecord {
                header: head(Kind::CgroupRmdir),
                id: 99,
                level: 2,
                _reserved: 0,
            }),
            Record::Exec(ExecRecord {
                header: head(Kind::ProcessExec),
                old_pid: 42,
                filename_len: 7,
                ns_pid: 1,
                ns_level: 1,
                mnt_ns: 4026531841,
                _reserved: 0,
                comm: comm("sh"),
                filename,
            }),
            Record::Exit(ExitRecord {
                header: head(Kind::ProcessExit),
                exit_status: 9,
                _reserved: 0,
                parent_tgid: 40,
                ns_level: 1,
                start_ns: 77,
                comm: comm("sleep"),
            }),
            Record::Signal(SignalRecord {
                header: head(Kind::Signal),
                target_pid: 50,
                target_tgid: 50,
                target_cgroup_id: 99,
                target_start_ns: 77,
                signal: 15,
                code: 0,
                result: 0,
                group: 1,
                sender_comm: comm("runc"),
                target_comm: comm("sleep"),
                ancestry_len: 2,
                evidence: 0,
                syscall: 0,
                _reserved: 0,
                ancestry: {
                    let mut chain = [Ancestor::default(); ANCESTRY_LEN];
                    chain[0].tgid = 40;
                    chain[0].comm = comm("containerd-shim");
                    chain[1].tgid = 1;
                    chain[1].comm = comm("systemd");
                    chain
                },
            }),
            Record::Oom(OomRecord {
                header: head(Kind::OomMark),
                victim_pid: 50,
                victim_tgid: 50,
                victim_cgroup_id: 99,
                victim_start_ns: 77,
                anon_rss_kb: 1024,
                total_vm_kb: 4096,
            }),
            Record::Mount(MountRecord {
                header: head(Kind::Mount),
                call: mount_call::MOUNT,
                _reserved: 0,
                ret: 0,
                start_ns: 123_000_000,
                flags: 4096,
                attr_set: 0,
                attr_clr: 0,
                fd_from: -100,
                fd_to: 0,
                comm: comm("mount"),
                source: [b's'; MOUNT_PATH_LEN],
                target: [b't'; MOUNT_PATH_LEN],
                fstype: [0; MOUNT_TYPE_LEN],
            }),
            Record::DeviceAccess(DeviceAccessRecord {
                header: head(Kind::DeviceAccess),
                access_type: tracer_common::device_access::CHAR
                    | (tracer_common::device_access::READ | tracer_common::device_access::WRITE)
                        << 16,
                major: 195,
                minor: 0,
                decision: tracer_common::device_access::ALLOWED,
                comm: comm("python3"),
            }),
            Record::ExecEnv(ExecEnvRecord {
                exec: ExecRecord {
                    header: head(Kind::ProcessExec),
                    old_pid: 42,
                    filename_len: 7,
                    ns_pid: 1,
                    ns_level: 1,
                    mnt_ns: 4026531841,
                    _reserved: 0,
                    comm: comm("sh"),
                    filename,
                },
                env: EnvValue {
                    value_len: 9,
                    _reserved: 0,
                    value: {
                        let mut v = [0u8; ENV_VALUE_LEN];
                        v[..9].copy_from_slice(b"nemo_claw");
                        v
                    },
                },
            }),
        ]
    }

    #[test]
    fn round_trips_every_kind() {
        let samples = samples();
        let mut kinds: Vec<u32> = samples.iter().map(|r| r.header().kind).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds,
            // 3, 8 and 10 are kinds no longer written.
            (1..=11)
                .filter(|k| ![3, 8, 10].contains(k))
                .collect::<Vec<_>>(),
            "a record kind lacks a sample"
        );
        for record in samples {
            let bytes = record.to_bytes();
            let back = Record::decode(&bytes).expect("decode");
            assert_eq!(back.to_bytes(), bytes, "{}", record.kind().name());
            assert_eq!(back.kind().name(), record.kind().name());
        }
    }

    #[test]
    fn decodes_fields_not_just_bytes() {
        let exit = samples()
            .into_iter()
            .find(|r| matches!(r, Record::Exit(_)))
            .unwrap();
        let Record::Exit(e) = Record::decode(&exit.to_bytes()).unwrap() else {
            panic!("not an exit")
        };
        assert_eq!(
            (e.header.pid, e.header.tgid, e.exit_status, e.parent_tgid),
            (42, 41, 9, 40)
        );
        assert_eq!(c_str(&e.comm), "sleep");
        assert_eq!(e.start_ns, 77);
    }

    #[test]
    fn an_exec_carries_the_init_env_value_and_nothing_past_it() {
        let Some(Record::ExecEnv(mut rec)) = samples()
            .into_iter()
            .find(|r| matches!(r, Record::ExecEnv(_)))
        else {
            panic!("no exec-with-env sample")
        };
        // The kernel copies a fixed window of its scan buffer: other variables' bytes follow.
        rec.env.value[9..20].copy_from_slice(b"\0SECRET=xyz");
        let bytes = Record::ExecEnv(rec).to_bytes();
        let Ok(Record::ExecEnv(back)) = Record::decode(&bytes) else {
            panic!("exec with env not decoded as such")
        };
        assert_eq!(sized_str(&back.env.value, back.env.value_len), "nemo_claw");
        assert!(back.env.value[9..].iter().all(|&b| b == 0), "tail kept");
        assert_eq!(back.exec.header.kind, Kind::ProcessExec as u32);
        assert_eq!(
            sized_str(&back.exec.filename, back.exec.filename_len),
            "/bin/sh"
        );
        // The bare exec (the record's first part) decodes as a plain exec.
        let bare = &bytes[..size_of::<ExecRecord>()];
        assert!(matches!(Record::decode(bare), Ok(Record::Exec(e)) if e.old_pid == 42));
        // The retired init-env kind is unknown.
        let mut retired = bytes.clone();
        retired[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(
            Record::decode(&retired).unwrap_err(),
            DecodeError::UnknownKind(8)
        );
    }

    #[test]
    fn refuses_short_and_unknown_records() {
        assert_eq!(
            Record::decode(&[0u8; 8]).unwrap_err(),
            DecodeError::ShortHeader { got: 8, need: 32 }
        );
        for record in samples() {
            let bytes = record.to_bytes();
            let cut = &bytes[..bytes.len() - 1];
            if let Record::ExecEnv(r) = record {
                // Without a whole value it is the bare exec it starts with.
                assert!(
                    matches!(Record::decode(cut), Ok(Record::Exec(e)) if e.filename == r.exec.filename)
                );
                continue;
            }
            assert!(
                matches!(Record::decode(cut), Err(DecodeError::Short { got, need, .. }) if got + 1 == need),
                "{}",
                record.kind().name()
            );
        }
        let mut unknown = samples()[0].to_bytes();
        unknown[..4].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(
            Record::decode(&unknown).unwrap_err(),
            DecodeError::UnknownKind(77)
        );
    }

    #[test]
    fn kernel_strings_stop_at_nul_and_bound() {
        assert_eq!(c_str(b"abc\0def"), "abc");
        assert_eq!(c_str(b"abcdef"), "abcdef");
        assert_eq!(sized_str(b"/docker/x\0\0", 9), "/docker/x");
        assert_eq!(sized_str(b"ab", 300), "ab");
    }

    #[test]
    fn counts_records_by_kind() {
        let samples = samples();
        // The samples hold one record of each kind, and two execs (bare, and with the agent
        // variable); three more execs and one more signal.
        let mut records = samples.clone();
        let exec = samples.iter().find(|r| matches!(r, Record::Exec(_)));
        let signal = samples.iter().find(|r| matches!(r, Record::Signal(_)));
        records.extend([exec, exec, exec, signal].into_iter().flatten().copied());
        let mut counts = KindCounts::default();
        for record in &records {
            counts.add(record);
        }
        let mut counted: Vec<(&str, u64)> = counts.iter().map(|(k, n)| (k.name(), n)).collect();
        counted.sort();
        let mut expected = vec![
            ("cgroup_mkdir", 1),
            ("cgroup_rmdir", 1),
            ("device_access", 1),
            ("exec", 5),
            ("exit", 1),
            ("mount", 1),
            ("oom_mark", 1),
            ("signal", 2),
        ];
        expected.sort();
        assert_eq!(counted, expected);
        assert!(KindCounts::default().iter().next().is_none());
    }
}
