//! The event schema: what the model reports, as every sink receives it. An event is a
//! container reference plus a kind; serialized as one JSON object with an `event` tag (see
//! README, JSON output). Only what users see is here: what the model tells the rest of
//! clawtrace besides events travels as [`super::Note`]s.

use std::{borrow::Cow, sync::Arc};

use serde::Serialize;

use super::{
    attribution::{ExitCause, SenderClass, SenderKind},
    volumes::{ReadOnly, ViolationKind},
};

/// A process name as events carry it: a kernel `comm` (at most 15 bytes), held inline, so that
/// an event about a process allocates nothing for its name. Reads as a `str`, serializes as a
/// string.
pub type Comm = compact_str::CompactString;

/// The fields every container event carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerRef {
    pub container_id: Arc<str>,
    pub cgroup_id: u64,
    pub cgroup_path: Arc<str>,
    pub runtime: &'static str,
    /// For a container a Kubernetes CRI runtime made (containerd's CRI plugin, CRI-O): its
    /// pod's and its own names, from the OCI annotations the runtime wrote. Absent for other
    /// containers, and when the annotations could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<Arc<K8sNames>>,
}

/// A CRI container's Kubernetes names, as its runtime's OCI annotations tell them (values
/// the pod's author chose: sanitized, see `source::pods`). Serialized as the `k8s` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K8sNames {
    /// The pod's name (`metadata.name`).
    pub pod_name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's uid, when the runtime wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The container's name in the pod spec; absent for the pod's sandbox (pause) container
    /// under containerd, `POD` for CRI-O's infra container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// Who sent a signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sender {
    /// The sending process (tgid).
    pub pid: u32,
    /// The sending thread.
    pub tid: u32,
    pub comm: Comm,
    pub cgroup_id: u64,
    /// The sender's container, when it is in one.
    pub container_id: Option<Arc<str>>,
    /// Who started the sender, nearest first, as the kernel read it when the signal was sent
    /// (up to 8 processes, or up to the host's init); empty when that send was not seen.
    pub ancestry: Arc<[AncestorRef]>,
    /// What kind of sender it is, from its name and ancestry.
    pub class: SenderClass,
}

/// One process of a sender's ancestry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AncestorRef {
    pub pid: u32,
    pub comm: Comm,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerCreate {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub preexisting: bool,
    /// The `agent` capture of a user pattern, when there was one.
    pub agent: Option<String>,
    /// The init's pid, when already known (a container found at start).
    pub init_pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerDelete {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub lifetime_seconds: f64,
    /// The init's exit code (shell style, as the runtime reports it) and cause.
    pub exit_code: Option<u32>,
    pub cause: Option<ExitCause>,
    /// Why the container ended: the init's cause, except where the init only reports another
    /// death (an init wrapper, or a shell exiting 128+N after its child died of signal N: that
    /// child's cause), or where the OOM killer killed a process of the container and the
    /// init's exit followed from it (`oom_kill`). Null when the init's exit was not seen.
    pub verdict: Option<ExitCause>,
    /// The process the verdict is about.
    pub verdict_process: Option<ProcessRef>,
    pub was_lingering: bool,
    /// Its agent name as the kernel's records tell it: a pattern's `agent` group, else the
    /// init's agent-name variable, sanitized as labels are (Docker labels and OCI annotations
    /// are read later, by the export worker, and are not here).
    pub agent: Option<String>,
}

/// A process, by pid and command name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub comm: Comm,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessExec {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub pid: u32,
    pub comm: Comm,
    pub filename: String,
    pub is_container_init: bool,
    /// For the container's first exec: seconds since the cgroup was created.
    pub start_seconds: Option<f64>,
    /// For the container's first exec: seconds of that start spent in mount system calls.
    pub mount_seconds: Option<f64>,
}

/// One mount system call made in a container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MountCall {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub pid: u32,
    pub comm: Comm,
    /// `mount`, `umount2`, `mount_setattr`, `open_tree`, `move_mount`, `fsmount`, `fsconfig`.
    pub call: &'static str,
    pub source: String,
    pub target: String,
    pub fstype: String,
    /// The call's flags (mount flags, AT_* flags, or the fsconfig command), as passed.
    pub flags: u64,
    pub attr_set: u64,
    pub attr_clr: u64,
    /// 0 on success (or the new file descriptor), a negative errno on failure.
    pub result: i64,
    pub duration_seconds: f64,
    /// Whether what the call asked for can be written (the effective state is the mount
    /// table's: see `volume_mount`).
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindState {
    pub source: String,
    pub target: String,
    pub read_only: ReadOnly,
}

/// A process in a container asked for a GPU device (a device number under `--gpu-device`):
/// opened it for reading or writing, checked it with `access(2)`, or made a node of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceAccess {
    #[serde(flatten)]
    pub container: ContainerRef,
    /// The caller, on kernels that let device programs name it (absent elsewhere).
    pub pid: Option<u32>,
    pub comm: Option<Comm>,
    /// The node under /dev with this number, or `char MAJOR:MINOR` when /dev has none.
    pub device: String,
    pub major: u32,
    pub minor: u32,
    /// The device's name (`nvidia0`, `renderD128`, or `MAJOR:MINOR`): the `gpu` label of the
    /// metrics.
    pub gpu: String,
    /// What was asked: `read`, `write`, `mknod`, joined with `,`.
    pub access: String,
    /// What the device programs before clawtrace's decided (the runtime's).
    pub decision: DeviceDecision,
    /// The container's first access of this device that was not denied.
    pub first_use: bool,
    /// A GPU, as opposed to a control node such as `nvidiactl`; only these count for sharing.
    pub is_gpu: bool,
}

/// The decision on a device access, as the kernel told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceDecision {
    Allowed,
    /// Denied by a device program of the container's cgroups: the caller got EPERM.
    Denied,
    /// Not known: the kernel does not tell device programs the decision (before Linux 5.18),
    /// or the device programs allowed it and a cgroup v1 `devices` hierarchy decides after them.
    Undecided,
}

impl DeviceDecision {
    /// The name the JSON output gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceDecision::Allowed => "allowed",
            DeviceDecision::Denied => "denied",
            DeviceDecision::Undecided => "undecided",
        }
    }
}

/// A container began using a GPU device that other live containers use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSharing {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub device: String,
    pub gpu: String,
    /// Every live container using the device, this one included.
    pub containers: Vec<Arc<str>>,
}

/// A container's bind mount as it stands when the container starts (its first exec).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeMount {
    #[serde(flatten)]
    pub container: ContainerRef,
    #[serde(flatten)]
    pub bind: BindState,
}

/// A bind mount that breaks the volume policy, or stopped breaking it (`active` false).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeViolation {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub kind: ViolationKind,
    pub source: String,
    pub active: bool,
    /// Every live container that binds the source.
    pub containers: Vec<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalSent {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub signal: Cow<'static, str>,
    pub target_pid: u32,
    pub target_tid: u32,
    pub target_comm: Comm,
    pub sender: Sender,
    pub sender_kind: SenderKind,
    pub si_code: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomMark {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub pid: u32,
    pub anon_rss_kb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessExit {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub pid: u32,
    pub comm: Comm,
    pub is_container_init: bool,
    /// Shell-style: the exit code, or 128 + signal.
    pub exit_code: u32,
    pub signal: Option<Cow<'static, str>>,
    pub core_dumped: bool,
    pub cause: ExitCause,
    /// For a `policy_kill`: `seccomp`, `rlimit` or `kernel`.
    pub policy: Option<&'static str>,
    /// For a seccomp kill: the system call the filter refused.
    pub syscall: Option<SyscallRef>,
    /// For an rlimit kill: which limit (`cpu`, `fsize`).
    pub limit: Option<&'static str>,
    /// For `init_exited`: the init whose exit took the pid namespace down, with its own cause
    /// and sender.
    pub init: Option<InitRef>,
    pub sender: Option<Sender>,
    pub escalated_from: Option<Cow<'static, str>>,
    pub grace_seconds: Option<f64>,
    /// The raw wait status.
    pub wait_status: u32,
}

/// A system call, by the number the kernel reported and its name on this architecture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyscallRef {
    pub number: u32,
    /// None for a number this architecture has no call for.
    pub name: Option<&'static str>,
}

impl SyscallRef {
    pub fn of(number: u32) -> SyscallRef {
        SyscallRef {
            number,
            name: syscalls::Sysno::new(number as usize).map(|s| s.name()),
        }
    }
}

/// A pid namespace's init that exited, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitRef {
    pub pid: u32,
    pub comm: Comm,
    /// Its own cause and sender, when it is the container's init the tracer saw exit.
    pub cause: Option<ExitCause>,
    pub sender: Option<Sender>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerLingering {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub init_exited_seconds_ago: f64,
    /// Processes the tracer knows to be still alive in the container.
    pub processes_left: usize,
}

/// What the model reports. Serialized as one JSON object with an `event` tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ContainerCreate(ContainerCreate),
    ContainerDelete(ContainerDelete),
    ProcessExec(ProcessExec),
    Signal(SignalSent),
    OomMark(OomMark),
    // Boxed: the largest kind, twice the size of the next; unboxed, every event would be as big.
    ProcessExit(Box<ProcessExit>),
    ContainerLingering(ContainerLingering),
    Mount(MountCall),
    VolumeMount(VolumeMount),
    VolumeViolation(VolumeViolation),
    DeviceAccess(DeviceAccess),
    GpuSharing(GpuSharing),
}

/// An event and when it happened (CLOCK_MONOTONIC ns, the records' time base).
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub ts_ns: u64,
    pub event: Event,
}

impl Event {
    /// The kind's name: the JSON object's `event` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ContainerCreate(_) => "container_create",
            Event::ContainerDelete(_) => "container_delete",
            Event::ProcessExec(_) => "process_exec",
            Event::Signal(_) => "signal",
            Event::OomMark(_) => "oom_mark",
            Event::ProcessExit(_) => "process_exit",
            Event::ContainerLingering(_) => "container_lingering",
            Event::Mount(_) => "mount",
            Event::VolumeMount(_) => "volume_mount",
            Event::VolumeViolation(_) => "volume_violation",
            Event::DeviceAccess(_) => "device_access",
            Event::GpuSharing(_) => "gpu_sharing",
        }
    }

    /// The container the event is about (every kind has one).
    pub fn container(&self) -> Option<&ContainerRef> {
        Some(match self {
            Event::ContainerCreate(e) => &e.container,
            Event::ContainerDelete(e) => &e.container,
            Event::ProcessExec(e) => &e.container,
            Event::Signal(e) => &e.container,
            Event::OomMark(e) => &e.container,
            Event::ProcessExit(e) => &e.container,
            Event::ContainerLingering(e) => &e.container,
            Event::Mount(e) => &e.container,
            Event::VolumeMount(e) => &e.container,
            Event::VolumeViolation(e) => &e.container,
            Event::DeviceAccess(e) => &e.container,
            Event::GpuSharing(e) => &e.container,
        })
    }

    /// The container the event is about, to amend.
    pub fn container_mut(&mut self) -> Option<&mut ContainerRef> {
        Some(match self {
            Event::ContainerCreate(e) => &mut e.container,
            Event::ContainerDelete(e) => &mut e.container,
            Event::ProcessExec(e) => &mut e.container,
            Event::Signal(e) => &mut e.container,
            Event::OomMark(e) => &mut e.container,
            Event::ProcessExit(e) => &mut e.container,
            Event::ContainerLingering(e) => &mut e.container,
            Event::Mount(e) => &mut e.container,
            Event::VolumeMount(e) => &mut e.container,
            Event::VolumeViolation(e) => &mut e.container,
            Event::DeviceAccess(e) => &mut e.container,
            Event::GpuSharing(e) => &mut e.container,
        })
    }
}
