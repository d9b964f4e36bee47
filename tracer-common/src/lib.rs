//! Wire types shared by clawtrace's eBPF programs and its user-space loader.
//!
//! Every record the kernel side writes into the ring buffer starts with the same [`Header`];
//! the header's `kind` says which record follows. All types are `#[repr(C)]`, `Copy`, made of
//! fixed-size integers and byte arrays, and laid out so that there is no implicit padding (every
//! gap is an explicit `_reserved` field): the kernel writes them with plain stores and the user
//! side reads them with an unaligned copy after checking the length.
//!
//! The `user` feature adds `aya::Pod` impls so user space can read and write these types in maps.
#![no_std]

/// Length of a task's `comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of a cgroup path carried in a record; longer paths are truncated (see `path_len`).
pub const CGROUP_PATH_LEN: usize = 256;
/// Bytes of an exec'd file name carried in a record; longer names are truncated.
pub const FILENAME_LEN: usize = 128;
/// Bytes of a path argument of a mount system call carried in a [`MountRecord`].
pub const MOUNT_PATH_LEN: usize = 160;
/// Bytes of a filesystem type (or `fsconfig` key) carried in a [`MountRecord`].
pub const MOUNT_TYPE_LEN: usize = 32;
/// Device-number ranges the kernel side reports accesses to at most (`--gpu-device`).
pub const DEVICE_RANGES: u32 = 8;
/// Bytes of an environment variable's value carried in an [`EnvValue`].
pub const ENV_VALUE_LEN: usize = 256;
/// Bytes of the `NAME=` prefix of the environment variable the kernel looks for.
pub const ENV_KEY_LEN: usize = 64;
/// Bytes read at once while scanning an environment: the longest prefix plus the longest value.
pub const ENV_SCAN_LEN: usize = ENV_KEY_LEN + ENV_VALUE_LEN;

/// Hierarchy id of the cgroup v2 (default) hierarchy in the `cgroup:*` tracepoints.
pub const CGROUP_V2_HIERARCHY: i32 = 0;

/// Record kinds: [`Header::kind`] is one of these as `u32`. Fixed numbers; never reuse one.
/// Each kind is written by one probe (program or family of programs), so the kind also names
/// the probe in the kernel's counters of what it missed ([`Miss`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    CgroupMkdir = 1,
    CgroupRmdir = 2,
    // 3 was a task moved into a followed cgroup (`cgroup_attach_task`): its evidence, the
    // runtime's bootstrap stages, is told by their names and pid namespace instead.
    ProcessExec = 4,
    ProcessExit = 5,
    Signal = 6,
    OomMark = 7,
    // 8 was a separate record for the init's environment variable, now an exec record's tail
    // ([`ExecEnvRecord`]).
    Mount = 9,
    // 10 was an `openat` of a device path, seen on the system-call path.
    DeviceAccess = 11,
}

impl Kind {
    /// How many kinds there are.
    pub const COUNT: usize = 8;
    /// Every kind, in [`Kind::index`] order.
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::CgroupMkdir,
        Kind::CgroupRmdir,
        Kind::ProcessExec,
        Kind::ProcessExit,
        Kind::Signal,
        Kind::OomMark,
        Kind::Mount,
        Kind::DeviceAccess,
    ];

    /// The kind a header's `kind` names, if any.
    pub const fn from_wire(value: u32) -> Option<Kind> {
        Some(match value {
            1 => Kind::CgroupMkdir,
            2 => Kind::CgroupRmdir,
            4 => Kind::ProcessExec,
            5 => Kind::ProcessExit,
            6 => Kind::Signal,
            7 => Kind::OomMark,
            9 => Kind::Mount,
            11 => Kind::DeviceAccess,
            _ => return None,
        })
    }

    /// Where the kind is in [`Kind::ALL`]: 0 to `COUNT - 1`.
    pub const fn index(self) -> usize {
        match self {
            Kind::CgroupMkdir => 0,
            Kind::CgroupRmdir => 1,
            Kind::ProcessExec => 2,
            Kind::ProcessExit => 3,
            Kind::Signal => 4,
            Kind::OomMark => 5,
            Kind::Mount => 6,
            Kind::DeviceAccess => 7,
        }
    }

    /// The name of the kind, as metrics (`clawtrace_events_total{kind}`) and logs give it.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::CgroupMkdir => "cgroup_mkdir",
            Kind::CgroupRmdir => "cgroup_rmdir",
            Kind::ProcessExec => "exec",
            Kind::ProcessExit => "exit",
            Kind::Signal => "signal",
            Kind::OomMark => "oom_mark",
            Kind::Mount => "mount",
            Kind::DeviceAccess => "device_access",
        }
    }

    /// The probe that writes records of the kind, as losses are reported
    /// (`clawtrace_events_lost_total{probe}`).
    pub const fn probe(self) -> &'static str {
        match self {
            Kind::CgroupMkdir => "cgroup_mkdir",
            Kind::CgroupRmdir => "cgroup_rmdir",
            Kind::ProcessExec => "sched_process_exec",
            Kind::ProcessExit => "sched_process_exit",
            Kind::Signal => "signal_generate",
            Kind::OomMark => "mark_victim",
            Kind::Mount => "mount_syscalls",
            Kind::DeviceAccess => "device_access",
        }
    }
}

/// What a probe could not do, counted per probe (its [`Kind`]) and reason in the kernel's
/// per-CPU `MISSED` map ([`Miss::slot`]), and reported by user space: never silent.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The ring buffer had no room for the record: the record is lost.
    RingFull = 0,
    /// A table of the probe was full: for `cgroup_mkdir` the cgroup table (the cgroup is not
    /// followed), for the mount calls the table of calls in flight (the call is not reported).
    TableFull = 1,
}

impl Miss {
    /// How many reasons there are.
    pub const COUNT: usize = 2;
    pub const ALL: [Miss; Miss::COUNT] = [Miss::RingFull, Miss::TableFull];

    /// Where `kind`'s count of this reason is in `MISSED`.
    pub const fn slot(self, kind: Kind) -> u32 {
        (kind.index() * Miss::COUNT + self as usize) as u32
    }
}

/// Entries of the `MISSED` map.
pub const MISSED_SLOTS: u32 = (Kind::COUNT * Miss::COUNT) as u32;

/// Names the loader looks up in the eBPF object: they must be the names of the statics in
/// tracer-ebpf (a unit test of the loader opens the embedded object and checks each one).
pub mod object {
    /// The ring buffer of records.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU counts of what each probe missed ([`super::Miss`]).
    pub const MISSED: &str = "MISSED";
    /// Followed cgroups by id (values: [`super::cgroup_state`]).
    pub const CGROUPS: &str = "CGROUPS";
    /// The `NAME=` prefix of the agent-name variable ([`super::EnvKey`]).
    pub const ENV_KEY: &str = "ENV_KEY";
    /// The device ranges the device program reports ([`super::DeviceRange`]).
    pub const DEVICE_RANGE: &str = "DEVICE_RANGE";
    /// Exits claimed, on kernels without [`super::feature::EXIT_GROUP_DEAD`].
    pub const EXIT_CLAIMS: &str = "EXIT_CLAIMS";
    /// Every map the loader touches.
    pub const MAPS: &[&str] = &[EVENTS, MISSED, CGROUPS, ENV_KEY, DEVICE_RANGE, EXIT_CLAIMS];

    /// The [`super::feature`] bits of the running kernel.
    pub const KERNEL_FEATURES: &str = "KERNEL_FEATURES";
    /// Unread bytes past which a record wakes the reader.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// Every global the loader sets besides the BTF offsets ([`super::BTF_FIELDS`] and the
    /// three named beside them).
    pub const GLOBALS: &[&str] = &[KERNEL_FEATURES, WAKEUP_BYTES];

    /// The cgroup device program.
    pub const DEVICE_PROGRAM: &str = "device_access";
}

/// A field of a tracepoint's record that the programs read (or whose place they rely on):
/// its name in the tracepoint's `format` file, its offset and size. The loader checks each
/// against the running kernel before it loads anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpField {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

const fn tp_field(name: &'static str, offset: usize, size: usize) -> TpField {
    TpField { name, offset, size }
}

/// The record layouts of the classic tracepoints the programs read by offset.
pub mod tp {
    use super::{tp_field, TpField};

    pub mod cgroup_rmdir {
        use super::*;
        pub const ROOT: TpField = tp_field("root", 8, 4);
        pub const LEVEL: TpField = tp_field("level", 12, 4);
        pub const ID: TpField = tp_field("id", 16, 8);
        pub const FIELDS: &[TpField] = &[ROOT, LEVEL, ID];
    }

    pub mod sched_process_exec {
        use super::*;
        /// `__data_loc char[] filename`.
        pub const FILENAME: TpField = tp_field("filename", 8, 4);
        pub const PID: TpField = tp_field("pid", 12, 4);
        pub const OLD_PID: TpField = tp_field("old_pid", 16, 4);
        pub const FIELDS: &[TpField] = &[FILENAME, PID, OLD_PID];
    }

    pub mod sched_process_exit {
        use super::*;
        pub const COMM: TpField = tp_field("comm", 8, 16);
        pub const PID: TpField = tp_field("pid", 24, 4);
        /// Only on kernels with [`crate::feature::EXIT_GROUP_DEAD`].
        pub const GROUP_DEAD: TpField = tp_field("group_dead", 32, 1);
    }

    /// `syscalls:sys_enter_*` and `sys_exit_*`.
    pub mod syscalls {
        use super::*;
        /// Where argument `i` (from 0) of a `sys_enter_*` record is.
        pub const fn arg_offset(i: usize) -> usize {
            16 + 8 * i
        }
        /// Argument `i` of a `sys_enter_*` record, named `name` there.
        pub const fn arg(name: &'static str, i: usize) -> TpField {
            tp_field(name, arg_offset(i), 8)
        }
        /// The return value of a `sys_exit_*` record.
        pub const RET: TpField = tp_field("ret", 16, 8);
    }
}

/// Which mount system call a [`MountRecord`] describes.
pub mod mount_call {
    pub const MOUNT: u32 = 1;
    pub const UMOUNT: u32 = 2;
    pub const MOUNT_SETATTR: u32 = 3;
    pub const OPEN_TREE: u32 = 4;
    pub const MOVE_MOUNT: u32 = 5;
    pub const FSMOUNT: u32 = 6;
    pub const FSCONFIG: u32 = 7;
}

/// Values of the `CGROUPS` map: whether a followed cgroup has seen its first exec.
pub mod cgroup_state {
    /// Followed, no process has exec'd in it yet: the next exec is the container's init.
    pub const NEW: u32 = 1;
    /// Its first exec has happened.
    pub const STARTED: u32 = 2;
}

/// The `si_code` a record carries when the kernel's siginfo could not be read (a probe read
/// that failed): no sender kind is derived from it.
pub const SI_CODE_UNREADABLE: i32 = i32::MIN;

/// Value of `signal_generate`'s `result` field (`enum trace_signal_result`).
pub mod signal_result {
    pub const DELIVERED: u32 = 0;
    pub const IGNORED: u32 = 1;
    pub const ALREADY_PENDING: u32 = 2;
    pub const OVERFLOW_FAIL: u32 = 3;
    pub const LOSE_INFO: u32 = 4;
}

/// The header every record starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// A [`Kind`], as `u32`.
    pub kind: u32,
    /// Explicit padding so `ts_ns` is 8-aligned without hidden bytes. Always 0.
    pub _reserved: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread id of the task the probe ran in.
    pub pid: u32,
    /// Process id (thread-group id) of the task the probe ran in.
    pub tgid: u32,
    /// cgroup v2 id of the task the probe ran in (`bpf_get_current_cgroup_id()`).
    pub cgroup_id: u64,
}

/// `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir` on the v2 hierarchy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupRecord {
    pub header: Header,
    /// Id of the cgroup made or removed (its inode number in cgroupfs).
    pub id: u64,
    /// Depth below the root (a child of the root is level 1).
    pub level: u32,
    /// Bytes of `path` in use, without the terminating NUL; `CGROUP_PATH_LEN` means truncated.
    pub path_len: u32,
    /// Path relative to the hierarchy's root, e.g. `/docker/3f2a…`.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// `cgroup:cgroup_rmdir` of a followed v2 cgroup. Its path is not read again: user space knows
/// it from the cgroup's mkdir, or from the scan that found it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupRmdirRecord {
    /// The header describes the task that removed the cgroup.
    pub header: Header,
    /// Id of the cgroup removed.
    pub id: u64,
    /// Depth below the root.
    pub level: u32,
    pub _reserved: u32,
}

/// `sched:sched_process_exec` in a tracked cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: Header,
    /// Thread id before the exec (differs from `header.pid` when a non-leader thread exec'd).
    pub old_pid: u32,
    /// Bytes of `filename` in use; `FILENAME_LEN` means truncated.
    pub filename_len: u32,
    /// The process's pid in its own pid namespace (1: that namespace's init).
    pub ns_pid: u32,
    /// The depth of its pid namespace (0: the initial one).
    pub ns_level: u32,
    /// Its mount namespace's inode number (`nsproxy->mnt_ns->ns.inum`): a container with a
    /// table of its own has one other than the tracer's.
    pub mnt_ns: u32,
    pub _reserved: u32,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; FILENAME_LEN],
}

/// What the kernel held when it sent a signal: the bits of [`SignalRecord::evidence`].
pub mod signal_evidence {
    /// The sender was exiting (`PF_EXITING`): a pid namespace's init taking its namespace down.
    pub const SENDER_EXITING: u32 = 1 << 0;
    /// A SIGKILL to a process from its own context, when its CPU time (user + system, the
    /// process CPU timer's sample) had reached its RLIMIT_CPU hard limit.
    pub const OVER_CPU_LIMIT: u32 = 1 << 1;
    /// The send came with no siginfo at all (`SEND_SIG_NOINFO`): the kernel's own
    /// `send_sig(sig, task, 0)`, run in the sender's context, as for SIGXFSZ past RLIMIT_FSIZE
    /// and SIGPIPE on a write to a broken pipe or socket. kill(2), tgkill(2), rt_sigqueueinfo(2)
    /// and pidfd_send_signal(2) always pass one (SI_USER, SI_TKILL, SI_QUEUE…).
    pub const NO_SIGINFO: u32 = 1 << 2;
}

/// `sched:sched_process_exit` of the last thread of a process (`group_dead`) in a tracked cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    /// The header is the exiting thread; `header.tgid` is the process.
    pub header: Header,
    /// The wait status exactly as `waitpid()` reports it to the parent (`task->exit_code`):
    /// `(code << 8)` for an exit, `signal | 0x80 if core dumped` for a signal death.
    pub exit_status: u32,
    pub _reserved: u32,
    /// The process's parent (`real_parent->tgid`) when it exited.
    pub parent_tgid: u32,
    /// The depth of its pid namespace (0: the initial one).
    pub ns_level: u32,
    /// When the process started (its leader's `task_struct.start_time`): with the tgid, which
    /// process this is, since tgids are reused. The signal and OOM records name it the same way.
    pub start_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// `signal:signal_generate` aimed at a tracked task. The header is the sender.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SignalRecord {
    pub header: Header,
    /// Thread id the signal was aimed at.
    pub target_pid: u32,
    /// Process of that thread.
    pub target_tgid: u32,
    /// cgroup v2 id of the target as last seen by the tracer.
    pub target_cgroup_id: u64,
    /// When the target's process started (see [`ExitRecord::start_ns`]).
    pub target_start_ns: u64,
    pub signal: u32,
    pub code: i32,
    /// [`signal_result`].
    pub result: u32,
    /// Non-zero when the signal was sent to the whole process rather than one thread.
    pub group: u32,
    pub sender_comm: [u8; COMM_LEN],
    pub target_comm: [u8; COMM_LEN],
    /// Entries of `ancestry` in use.
    pub ancestry_len: u32,
    /// [`signal_evidence`] bits.
    pub evidence: u32,
    /// For SIGSYS from a seccomp filter (`si_code` SYS_SECCOMP): the refused system call's
    /// number, from the siginfo; else 0.
    pub syscall: u32,
    pub _reserved: u32,
    /// The sender's parent, its parent, and so on (`real_parent`), nearest first: up to
    /// [`ANCESTRY_LEN`] processes, ending early at the host's init.
    pub ancestry: [Ancestor; ANCESTRY_LEN],
}

/// Processes of a sender's ancestry a [`SignalRecord`] carries at most.
pub const ANCESTRY_LEN: usize = 8;

/// One process of a sender's ancestry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ancestor {
    pub tgid: u32,
    pub comm: [u8; COMM_LEN],
}

/// `oom:mark_victim` for a tracked task. The header is the task that ran the OOM killer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomRecord {
    pub header: Header,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_cgroup_id: u64,
    /// When the victim's process started (see [`ExitRecord::start_ns`]).
    pub victim_start_ns: u64,
    /// Resident anonymous memory of the victim, in KiB.
    pub anon_rss_kb: u64,
    /// Total virtual memory of the victim, in KiB.
    pub total_vm_kb: u64,
}

/// One mount-related system call made in a followed cgroup, from its entry to its exit. The
/// header is the caller at exit. Which fields are used depends on `call`:
///
/// | call | source | target | fstype | flags | attr_set / attr_clr | fd_from / fd_to |
/// |---|---|---|---|---|---|---|
/// | mount | dev_name | dir_name | type | flags | | |
/// | umount | | name | | flags | | |
/// | mount_setattr | | path | | flags | attr_set / attr_clr | dfd |
/// | open_tree | filename | | | flags | | dfd |
/// | move_mount | from_pathname | to_pathname | | flags | | from_dfd / to_dfd |
/// | fsmount | | | | flags | attr_flags | fs_fd |
/// | fsconfig | value (strings) | | key | cmd | aux | fd |
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MountRecord {
    pub header: Header,
    /// One of [`mount_call`].
    pub call: u32,
    pub _reserved: u32,
    /// The system call's return value (negative errno on failure; a file descriptor for
    /// open_tree and fsmount).
    pub ret: i64,
    /// Time of the system call's entry.
    pub start_ns: u64,
    pub flags: u64,
    pub attr_set: u64,
    pub attr_clr: u64,
    pub fd_from: i32,
    pub fd_to: i32,
    /// The caller's command name.
    pub comm: [u8; COMM_LEN],
    pub source: [u8; MOUNT_PATH_LEN],
    pub target: [u8; MOUNT_PATH_LEN],
    pub fstype: [u8; MOUNT_TYPE_LEN],
}

/// A device access a process in a followed cgroup asked the kernel for (an open for reading or
/// writing, `access(2)`, or a `mknod`), of a device in one of the [`DeviceRange`]s, seen by the
/// cgroup device hook. The header's `pid` and `tgid` are the caller's where the kernel lets
/// device programs read them ([`feature::DEVICE_CALLER`]), else 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DeviceAccessRecord {
    pub header: Header,
    /// `bpf_cgroup_dev_ctx.access_type`: the device type ([`device_access`]`::BLOCK`, `CHAR`)
    /// in the low 16 bits, the access bits (`MKNOD`, `READ`, `WRITE`) in the high 16.
    pub access_type: u32,
    pub major: u32,
    pub minor: u32,
    /// The decision of the device programs that ran before this one (the container's own, the
    /// runtime's): one of [`device_access`]`::ALLOWED`, `DENIED`, `UNDECIDED`.
    pub decision: u32,
    /// The caller's command name, where the kernel lets device programs read it; else zeros.
    pub comm: [u8; COMM_LEN],
}

/// Values of a [`DeviceAccessRecord`].
pub mod device_access {
    pub const BLOCK: u32 = 1;
    pub const CHAR: u32 = 2;
    pub const MKNOD: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 4;
    /// The programs before clawtrace's allowed the access.
    pub const ALLOWED: u32 = 1;
    /// A program before clawtrace's denied it: the caller got EPERM.
    pub const DENIED: u32 = 2;
    /// The kernel does not tell device programs the decision so far (`bpf_get_retval`,
    /// [`super::feature::DEVICE_DECISION`]).
    pub const UNDECIDED: u32 = 3;
}

/// One range of device numbers whose accesses are reported: character devices of `major` with
/// minors `minor_first..=minor_last` (`major` 0: unused slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRange {
    pub major: u32,
    pub minor_first: u32,
    pub minor_last: u32,
    pub _reserved: u32,
}

/// The value of one environment variable (the agent name, `AGENT_NAME` by default) of the first
/// process to exec in a followed cgroup, read from its new image's environment by the kernel
/// side at the exec, so it is known even when the process exits at once.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvValue {
    /// Bytes of `value` in use; `ENV_VALUE_LEN` means truncated.
    pub value_len: u32,
    pub _reserved: u32,
    pub value: [u8; ENV_VALUE_LEN],
}

/// `sched:sched_process_exec` of the first process in a followed cgroup whose new image has the
/// variable: the exec record with the value after it, in one ring-buffer record. (Every other
/// exec travels as a bare [`ExecRecord`]; the length tells them apart.)
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEnvRecord {
    pub exec: ExecRecord,
    pub env: EnvValue,
}

/// The `NAME=` prefix of the environment variable to look for, set by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvKey {
    /// Bytes of `prefix` in use; 0 turns the lookup off.
    pub len: u32,
    pub _reserved: u32,
    pub prefix: [u8; ENV_KEY_LEN],
    /// Per little-endian word of `prefix`, the bits in use (all ones up to `len`): the kernel
    /// compares whole words without a branch per byte. Made by [`EnvKey::new`].
    pub mask: [u64; ENV_KEY_LEN / 8],
}

impl EnvKey {
    /// The key for `prefix` (at most [`ENV_KEY_LEN`] bytes; longer is cut).
    pub fn new(prefix: &[u8]) -> Self {
        let len = prefix.len().min(ENV_KEY_LEN);
        let mut key = EnvKey {
            len: len as u32,
            _reserved: 0,
            prefix: [0; ENV_KEY_LEN],
            mask: [0; ENV_KEY_LEN / 8],
        };
        key.prefix[..len].copy_from_slice(&prefix[..len]);
        for (i, word) in key.mask.iter_mut().enumerate() {
            let used = len.saturating_sub(i * 8).min(8);
            *word = if used == 8 {
                u64::MAX
            } else {
                (1u64 << (used * 8)) - 1
            };
        }
        key
    }
}

/// Kernel features the programs have a faster path for, as bits of the read-only global
/// [`object::KERNEL_FEATURES`] that the loader sets from what it probed on the running kernel. One object
/// serves every kernel: a program tests the bit, and since the global is read-only the verifier
/// sees a constant and never walks the path this kernel cannot take (a helper, map or field it
/// lacks). Each missing bit selects a fallback that produces the same records.
pub mod feature {
    /// `bpf_get_current_task_btf` (Linux 5.11): the current task is a BTF pointer, so kernel
    /// objects are read by typed loads. Without it every field is read with
    /// `bpf_probe_read_kernel`.
    pub const TASK_BTF: u64 = 1 << 0;
    // 1 << 1 was task-local storage, for device opens waiting between a system call's entry
    // and exit; device accesses come from the cgroup device hook now.
    // 1 << 2 was cgroup-local storage, for a mark on each followed cgroup: allocating it cost
    // more at every cgroup's creation (about 1 µs) than it saved on the lookups it spared.
    /// `sched_process_exit` has the `group_dead` field: the last thread of a process is told
    /// by the record. Without it, by the process's live-thread count, claimed once per process.
    pub const EXIT_GROUP_DEAD: u64 = 1 << 3;
    /// `oom:mark_victim` passes the victim task. Without it (it passes a pid), the victim is the
    /// target of the SIGKILL the OOM killer sent just before, on the same CPU.
    pub const OOM_VICTIM_TASK: u64 = 1 << 4;
    /// The `mount_setattr` system call (5.12) and its tracepoints. User space only: without it
    /// the call does not exist, and its hooks are not attached.
    pub const MOUNT_SETATTR: u64 = 1 << 5;
    /// `bpf_get_current_pid_tgid` and `bpf_get_current_comm` in cgroup device programs (6.1):
    /// a device access names its caller. Without it, only its container.
    pub const DEVICE_CALLER: u64 = 1 << 6;
    /// `bpf_get_retval` in cgroup device programs (5.18): a device access carries the decision
    /// of the device programs before clawtrace's (allowed, or denied with EPERM). Without it,
    /// the access is reported undecided.
    pub const DEVICE_DECISION: u64 = 1 << 7;
}

/// Maps only a [`feature`]'s fallback uses, by name: on kernels with the feature the loader
/// makes them one entry long, so the fast path costs no memory for them.
pub const FALLBACK_MAPS: &[(&str, u64)] = &[(object::EXIT_CLAIMS, feature::EXIT_GROUP_DEAD)];

/// A kernel structure field the programs read (typed loads through BTF pointers, which the
/// verifier checks against the kernel's BTF and which cost less than `bpf_probe_read_kernel`;
/// aya emits no CO-RE relocations from Rust, so the offsets come from the loader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BtfField {
    /// The read-only `u64` global of the eBPF object that holds the offset.
    pub global: &'static str,
    pub strukt: &'static str,
    /// The field, or a path of fields through nested members (`_sifields._sigsys._syscall`).
    pub field: &'static str,
    /// The [`feature`] bit that needs this field, 0 for every kernel: a kernel without the
    /// field lacks the feature, and the global stays 0 (the programs never read it).
    pub feature: u64,
}

const fn btf(global: &'static str, strukt: &'static str, field: &'static str) -> BtfField {
    BtfField {
        global,
        strukt,
        field,
        feature: 0,
    }
}

/// Every field the programs read, each offset in a global of its own (the verifier must see
/// them as constants, hence one global each rather than a struct). Besides these the loader
/// sets [`MM_ANON_RSS`], [`PAGE_KB_SHIFT`] and [`UPID_SHIFT`].
pub const BTF_FIELDS: &[BtfField] = &[
    btf("TASK_PID", "task_struct", "pid"),
    btf("TASK_TGID", "task_struct", "tgid"),
    btf("TASK_COMM", "task_struct", "comm"),
    btf("TASK_GROUP_LEADER", "task_struct", "group_leader"),
    btf("TASK_EXIT_CODE", "task_struct", "exit_code"),
    btf("TASK_REAL_PARENT", "task_struct", "real_parent"),
    btf("TASK_START_TIME", "task_struct", "start_time"),
    btf("TASK_CGROUPS", "task_struct", "cgroups"),
    btf("TASK_SIGNAL", "task_struct", "signal"),
    btf("SIGNAL_LIVE", "signal_struct", "live"),
    btf("CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp"),
    btf("CGROUP_KN", "cgroup", "kn"),
    btf("CGROUP_ROOT", "cgroup", "root"),
    btf("CGROUP_LEVEL", "cgroup", "level"),
    btf("CGROUP_ROOT_HIERARCHY_ID", "cgroup_root", "hierarchy_id"),
    btf("KERNFS_NODE_ID", "kernfs_node", "id"),
    btf("SIGINFO_CODE", "kernel_siginfo", "si_code"),
    btf(
        "SIGINFO_SYSCALL",
        "kernel_siginfo",
        "_sifields._sigsys._syscall",
    ),
    btf("TASK_FLAGS", "task_struct", "flags"),
    btf("SIGNAL_RLIM", "signal_struct", "rlim"),
    btf("SIGNAL_CPUTIMER", "signal_struct", "cputimer"),
    btf("TASK_MM", "task_struct", "mm"),
    btf("MM_ENV_START", "mm_struct", "env_start"),
    btf("MM_ENV_END", "mm_struct", "env_end"),
    btf("MM_TOTAL_VM", "mm_struct", "total_vm"),
    btf("TASK_THREAD_PID", "task_struct", "thread_pid"),
    btf("PID_LEVEL", "pid", "level"),
    btf("PID_NUMBERS", "pid", "numbers"),
    btf("TASK_NSPROXY", "task_struct", "nsproxy"),
    btf("NSPROXY_MNT_NS", "nsproxy", "mnt_ns"),
    btf("MNT_NS_INUM", "mnt_namespace", "ns.inum"),
];

/// Global holding the offset of `rss_stat[MM_ANONPAGES].count` in `struct mm_struct`: the
/// anonymous-pages count `get_mm_counter()` reads.
pub const MM_ANON_RSS: &str = "MM_ANON_RSS";
/// Global holding log2 of the page size in KiB (pages to KiB: `<< PAGE_KB_SHIFT`).
pub const PAGE_KB_SHIFT: &str = "PAGE_KB_SHIFT";
/// Global holding log2 of the size of `struct upid`, the entries of `struct pid`'s `numbers`
/// (a shift, which the verifier bounds, where a multiplication it may not).
pub const UPID_SHIFT: &str = "UPID_SHIFT";

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all these types are #[repr(C)], Copy, made only of integers and byte arrays, and
    // have no implicit padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for Header {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EnvKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DeviceRange {}
}

/// Layout checks: the kernel and user views cannot drift without failing the build.
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<Header>() == 32);
    assert!(size_of::<CgroupRecord>() == 32 + 16 + CGROUP_PATH_LEN);
    assert!(size_of::<ExecRecord>() == 32 + 24 + COMM_LEN + FILENAME_LEN);
    assert!(size_of::<CgroupRmdirRecord>() == 32 + 16);
    assert!(size_of::<ExitRecord>() == 32 + 24 + COMM_LEN);
    assert!(
        size_of::<SignalRecord>()
            == 32 + 40 + 2 * COMM_LEN + 16 + ANCESTRY_LEN * size_of::<Ancestor>()
    );
    assert!(size_of::<Ancestor>() == 4 + COMM_LEN);
    assert!(size_of::<OomRecord>() == 32 + 40);
    assert!(size_of::<EnvValue>() == 8 + ENV_VALUE_LEN);
    assert!(size_of::<ExecEnvRecord>() == size_of::<ExecRecord>() + size_of::<EnvValue>());
    assert!(size_of::<EnvKey>() == 8 + 2 * ENV_KEY_LEN);
    assert!(size_of::<DeviceAccessRecord>() == 32 + 16 + COMM_LEN);
    assert!(size_of::<DeviceRange>() == 16);
    assert!(size_of::<MountRecord>() == 32 + 56 + COMM_LEN + 2 * MOUNT_PATH_LEN + MOUNT_TYPE_LEN);
    // The ring buffer hands out 8-aligned space; records must not need more.
    assert!(align_of::<ExitRecord>() <= 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_index_in_order() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(Kind::from_wire(*kind as u32), Some(*kind));
            assert_eq!(kind.index(), i);
        }
        // Retired and unknown wire values.
        for value in [0, 8, 10, 12, u32::MAX] {
            assert_eq!(Kind::from_wire(value), None);
        }
    }

    #[test]
    fn every_probe_and_reason_has_its_own_slot() {
        let mut seen = [false; MISSED_SLOTS as usize];
        for kind in Kind::ALL {
            for miss in Miss::ALL {
                let slot = miss.slot(kind) as usize;
                assert!(!seen[slot], "{kind:?} {miss:?}");
                seen[slot] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
