//! How a process died and who caused it, from its wait status and the signals sent to it.
//! Pure functions and values: no I/O.

use std::borrow::Cow;

use serde::Serialize;
use tracer_common::{signal_evidence, ExitRecord, SignalRecord, COMM_LEN};

/// The first send of one signal to a process (the one that takes effect), and how often it was
/// sent again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalOrigin {
    /// Time of the first send.
    pub first_ns: u64,
    /// Time of the latest send.
    pub last_ns: u64,
    /// cgroup v2 id of the sender at the first send.
    pub sender_cgroup_id: u64,
    pub sender_pid: u32,
    pub sender_tgid: u32,
    pub signal: u32,
    /// `si_code` of the first send (see [`SignalRecord::code`]).
    pub code: i32,
    pub count: u32,
    /// [`tracer_common::signal_result`] of the first send.
    pub result: u32,
    /// For SIGSYS from a seccomp filter: the refused system call's number.
    pub syscall: u32,
    /// [`signal_evidence`] bits the kernel held at the first send.
    pub evidence: u32,
    pub sender_comm: [u8; COMM_LEN],
}

impl SignalOrigin {
    /// The send a signal record describes.
    pub fn of(r: &SignalRecord) -> SignalOrigin {
        SignalOrigin {
            first_ns: r.header.ts_ns,
            last_ns: r.header.ts_ns,
            sender_cgroup_id: r.header.cgroup_id,
            sender_pid: r.header.pid,
            sender_tgid: r.header.tgid,
            signal: r.signal,
            code: r.code,
            count: 1,
            result: r.result,
            syscall: r.syscall,
            evidence: r.evidence,
            sender_comm: r.sender_comm,
        }
    }
}

/// What was sent to one process until it exited: the first send of each signal, and when the
/// OOM killer chose it. A process is its tgid and its start time (tgids are reused).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignalTrack {
    /// When the process started (the records' `start_ns`).
    pub start_ns: u64,
    /// When `oom:mark_victim` chose it; 0 if never.
    pub oom_ns: u64,
    /// One entry per distinct signal, in the order first sent.
    pub slots: Vec<SignalOrigin>,
}

impl SignalTrack {
    /// Adds a send: the first of its signal is kept, a repeat bumps its count and latest time.
    /// Returns whether it was the first.
    pub fn add(&mut self, send: SignalOrigin) -> bool {
        match self.slots.iter_mut().find(|s| s.signal == send.signal) {
            Some(slot) => {
                slot.count = slot.count.saturating_add(1);
                slot.last_ns = send.last_ns;
                false
            }
            None => {
                self.slots.push(send);
                true
            }
        }
    }
}

/// Signal numbers this module names (x86-64 / generic Linux numbering).
pub mod sig {
    pub const SIGHUP: u32 = 1;
    pub const SIGINT: u32 = 2;
    pub const SIGQUIT: u32 = 3;
    pub const SIGILL: u32 = 4;
    pub const SIGTRAP: u32 = 5;
    pub const SIGABRT: u32 = 6;
    pub const SIGBUS: u32 = 7;
    pub const SIGFPE: u32 = 8;
    pub const SIGKILL: u32 = 9;
    pub const SIGSEGV: u32 = 11;
    pub const SIGPIPE: u32 = 13;
    pub const SIGTERM: u32 = 15;
    pub const SIGXCPU: u32 = 24;
    pub const SIGXFSZ: u32 = 25;
    pub const SIGSYS: u32 = 31;
}

/// `si_code` of a SIGSYS a seccomp filter raised (`SECCOMP_RET_KILL_*`, `SECCOMP_RET_TRAP`).
pub const SYS_SECCOMP: i32 = 1;

/// `si_code` the kernel uses for signals it sends on its own behalf (OOM killer, namespace teardown).
pub const SI_KERNEL: i32 = 0x80;

const NAMES: [&str; 32] = [
    "SIG0",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// Real-time signals, 34 to 64.
const RT_NAMES: [&str; 31] = [
    "SIGRT0", "SIGRT1", "SIGRT2", "SIGRT3", "SIGRT4", "SIGRT5", "SIGRT6", "SIGRT7", "SIGRT8",
    "SIGRT9", "SIGRT10", "SIGRT11", "SIGRT12", "SIGRT13", "SIGRT14", "SIGRT15", "SIGRT16",
    "SIGRT17", "SIGRT18", "SIGRT19", "SIGRT20", "SIGRT21", "SIGRT22", "SIGRT23", "SIGRT24",
    "SIGRT25", "SIGRT26", "SIGRT27", "SIGRT28", "SIGRT29", "SIGRT30",
];

/// The signal's conventional name; real-time signals are `SIGRT<n>`. Static text (no
/// allocation per event) for every number the kernel can send.
pub fn signal_name(signal: u32) -> Cow<'static, str> {
    if let Some(name) = NAMES.get(signal as usize) {
        return Cow::Borrowed(name);
    }
    match signal
        .checked_sub(34)
        .and_then(|rt| RT_NAMES.get(rt as usize))
    {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("SIG{signal}")),
    }
}

/// Signals the kernel raises synchronously for a fault of the running task. (SIGSYS is not
/// one: the kernel raises it for a seccomp filter, a policy.)
pub fn is_fault_signal(signal: u32) -> bool {
    matches!(
        signal,
        sig::SIGSEGV | sig::SIGBUS | sig::SIGILL | sig::SIGFPE | sig::SIGTRAP
    )
}

/// Signals an orchestrator sends to ask for a graceful stop before it escalates to SIGKILL.
pub fn is_graceful_stop(signal: u32) -> bool {
    matches!(
        signal,
        sig::SIGTERM | sig::SIGINT | sig::SIGHUP | sig::SIGQUIT
    )
}

/// A wait status as `waitpid()` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(u8),
    Signaled { signal: u32, core_dumped: bool },
}

impl WaitStatus {
    pub fn from_raw(status: u32) -> WaitStatus {
        let signal = status & 0x7f;
        if signal == 0 {
            WaitStatus::Exited(((status >> 8) & 0xff) as u8)
        } else {
            WaitStatus::Signaled {
                signal,
                core_dumped: status & 0x80 != 0,
            }
        }
    }

    /// The shell-style code runtimes report: the exit code, or 128 + signal.
    pub fn shell_code(&self) -> u32 {
        match *self {
            WaitStatus::Exited(code) => code as u32,
            WaitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }

    pub fn signal(&self) -> Option<u32> {
        match *self {
            WaitStatus::Exited(_) => None,
            WaitStatus::Signaled { signal, .. } => Some(signal),
        }
    }
}

/// Why a process ended. One per exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// Exit code 0.
    Exited,
    /// Non-zero exit code, no signal.
    Failed,
    /// Killed by a signal sent from outside the container.
    OrchestratorKill,
    /// Killed by a signal from another process of the same container.
    PeerKill,
    /// Killed by a signal the process sent itself (abort, raise, kill of its own pid).
    SelfSignal,
    /// Killed by a synchronous fault the kernel raised.
    Crash,
    /// Chosen by the OOM killer.
    OomKill,
    /// Killed by the kernel to enforce a policy or a limit: see [`Policy`].
    PolicyKill,
    /// Killed by the kernel because the init of its pid namespace exited.
    InitExited,
    /// Killed by the SIGPIPE the kernel raised in its own context when it wrote to a pipe or
    /// socket whose reading end was closed.
    BrokenPipe,
    /// Killed by a signal whose origin could not be established.
    Unknown,
}

impl ExitCause {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExitCause::Exited => "exited",
            ExitCause::Failed => "failed",
            ExitCause::OrchestratorKill => "orchestrator_kill",
            ExitCause::PeerKill => "peer_kill",
            ExitCause::SelfSignal => "self_signal",
            ExitCause::Crash => "crash",
            ExitCause::OomKill => "oom_kill",
            ExitCause::PolicyKill => "policy_kill",
            ExitCause::InitExited => "init_exited",
            ExitCause::BrokenPipe => "broken_pipe",
            ExitCause::Unknown => "unknown",
        }
    }
}

/// The policy a [`ExitCause::PolicyKill`] enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A seccomp filter refused a system call (SIGSYS, `si_code` SYS_SECCOMP).
    Seccomp { syscall: u32 },
    /// A resource limit: RLIMIT_CPU (SIGXCPU at the soft limit, SIGKILL at the hard one, told
    /// by the process's CPU time against its limit when the kernel sent it) or RLIMIT_FSIZE
    /// (the SIGXFSZ the kernel raises, with no siginfo, in the writer's own context).
    Rlimit { limit: &'static str },
    /// Any other kill the kernel sent on its own behalf in the process's own context that is
    /// no fault, no OOM kill and none of the above: an eBPF enforcer's `bpf_send_signal`.
    Kernel,
}

impl Policy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Policy::Seccomp { .. } => "seccomp",
            Policy::Rlimit { .. } => "rlimit",
            Policy::Kernel => "kernel",
        }
    }
}

/// Where a signal came from, relative to the process and container it was aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderKind {
    /// A process outside the target's container.
    Outside,
    /// Another process of the same container.
    Peer,
    /// The target process itself.
    #[serde(rename = "self")]
    Own,
    /// The kernel, for a fault or on its own behalf.
    Kernel,
}

impl SenderKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SenderKind::Outside => "outside",
            SenderKind::Peer => "peer",
            SenderKind::Own => "self",
            SenderKind::Kernel => "kernel",
        }
    }

    /// Classifies one signal: `same_container` says whether the sender's cgroup belongs to the
    /// target's container; `evidence` holds the send's [`signal_evidence`] bits.
    pub fn of(
        signal: u32,
        code: i32,
        evidence: u32,
        sender_tgid: u32,
        target_tgid: u32,
        same_container: bool,
    ) -> SenderKind {
        let fault = code > 0 && is_fault_signal(signal);
        let raised = sender_tgid == target_tgid && evidence & signal_evidence::NO_SIGINFO != 0;
        if fault || raised || code == SI_KERNEL || (signal == sig::SIGSYS && code == SYS_SECCOMP) {
            SenderKind::Kernel
        } else if sender_tgid == target_tgid {
            SenderKind::Own
        } else if same_container {
            SenderKind::Peer
        } else {
            SenderKind::Outside
        }
    }
}

/// Who a signal's sender is, from its own name and its ancestry's (nearest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderClass {
    /// A container runtime: runc, crun, a containerd shim, conmon.
    Runtime,
    /// An orchestrator: dockerd, containerd, kubelet, podman, cri-o.
    Orchestrator,
    /// A person: a shell, sshd or a terminal in the ancestry, and no orchestrator.
    Operator,
    /// Another process of the same container.
    Peer,
    /// The process itself.
    #[serde(rename = "self")]
    Own,
    /// The kernel.
    Kernel,
    /// None of these.
    Other,
}

/// Command names (`comm`, at most 15 bytes) of each class.
pub(crate) fn is_runtime(comm: &str) -> bool {
    matches!(comm, "runc" | "crun" | "conmon" | "youki" | "runsc")
        || comm.starts_with("containerd-shim")
        || comm.starts_with("runc:[")
}

fn is_orchestrator(comm: &str) -> bool {
    matches!(
        comm,
        "dockerd" | "containerd" | "kubelet" | "podman" | "crio" | "cri-o" | "docker"
    )
}

fn is_operator(comm: &str) -> bool {
    matches!(
        comm,
        "sh" | "bash"
            | "dash"
            | "zsh"
            | "fish"
            | "ash"
            | "ksh"
            | "sshd"
            | "tmux"
            | "tmux: server"
            | "screen"
            | "login"
            | "su"
            | "sudo"
            | "gnome-terminal-"
            | "xterm"
            | "konsole"
    )
}

impl SenderClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            SenderClass::Runtime => "runtime",
            SenderClass::Orchestrator => "orchestrator",
            SenderClass::Operator => "operator",
            SenderClass::Peer => "peer",
            SenderClass::Own => "self",
            SenderClass::Kernel => "kernel",
            SenderClass::Other => "other",
        }
    }

    /// The class of a sender of `kind` named `comm`, started by `ancestry` (nearest first): the
    /// sender's own name decides first, then the nearest runtime or orchestrator above it; an
    /// operator is one whose ancestry holds a shell, sshd or a terminal and no orchestrator.
    pub fn of<'a>(
        kind: SenderKind,
        comm: &'a str,
        ancestry: impl IntoIterator<Item = &'a str> + Clone,
    ) -> SenderClass {
        match kind {
            SenderKind::Peer => return SenderClass::Peer,
            SenderKind::Own => return SenderClass::Own,
            SenderKind::Kernel => return SenderClass::Kernel,
            SenderKind::Outside => {}
        }
        let chain = std::iter::once(comm).chain(ancestry.clone());
        for name in chain {
            if is_runtime(name) {
                return SenderClass::Runtime;
            }
            if is_orchestrator(name) {
                return SenderClass::Orchestrator;
            }
        }
        if std::iter::once(comm).chain(ancestry).any(is_operator) {
            SenderClass::Operator
        } else {
            SenderClass::Other
        }
    }
}

/// The verdict on one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution {
    pub status: WaitStatus,
    pub cause: ExitCause,
    /// The signal send that killed the process, when there was one.
    pub killer: Option<SignalOrigin>,
    /// For a SIGKILL after a graceful stop signal: that earlier send.
    pub escalated_from: Option<SignalOrigin>,
    /// For a [`ExitCause::PolicyKill`]: which policy.
    pub policy: Option<Policy>,
}

impl Attribution {
    /// Nanoseconds between the graceful stop signal and the kill, for an escalation.
    pub fn grace_ns(&self) -> Option<u64> {
        let (term, kill) = (self.escalated_from?, self.killer?);
        Some(kill.first_ns.saturating_sub(term.first_ns))
    }
}

/// Attributes an exit, given what was sent to the process (`track`; empty if nothing was).
/// `same_container(cgroup_id)` says whether a cgroup belongs to the exiting process's container.
pub fn attribute(
    exit: &ExitRecord,
    track: &SignalTrack,
    same_container: impl Fn(u64) -> bool,
) -> Attribution {
    let status = WaitStatus::from_raw(exit.exit_status);
    let tgid = exit.header.tgid;
    let slots: &[SignalOrigin] = &track.slots;
    let find = |signal: u32| {
        slots
            .iter()
            .find(|s| s.signal == signal && s.first_ns != 0)
            .copied()
    };

    let WaitStatus::Signaled { signal, .. } = status else {
        let cause = if status == WaitStatus::Exited(0) {
            ExitCause::Exited
        } else {
            ExitCause::Failed
        };
        return Attribution {
            status,
            cause,
            killer: None,
            escalated_from: None,
            policy: None,
        };
    };

    let killer = find(signal);
    let oom = track.oom_ns != 0;
    let mut policy = None;
    let cause = if oom && signal == sig::SIGKILL {
        ExitCause::OomKill
    } else if let Some(k) = killer {
        let from_self = k.sender_tgid == tgid;
        let fault = k.code > 0 && is_fault_signal(signal);
        let kernel_sent = k.code == SI_KERNEL || fault;
        if signal == sig::SIGSYS && k.code == SYS_SECCOMP {
            policy = Some(Policy::Seccomp { syscall: k.syscall });
            ExitCause::PolicyKill
        } else if from_self && fault {
            ExitCause::Crash
        } else if k.code == SI_KERNEL && k.evidence & signal_evidence::SENDER_EXITING != 0 {
            // zap_pid_ns_processes: the exiting init of the pid namespace kills what is left.
            ExitCause::InitExited
        } else if from_self && k.code == SI_KERNEL {
            policy = Some(match signal {
                sig::SIGXCPU => Policy::Rlimit { limit: "cpu" },
                sig::SIGKILL if k.evidence & signal_evidence::OVER_CPU_LIMIT != 0 => {
                    Policy::Rlimit { limit: "cpu" }
                }
                _ => Policy::Kernel,
            });
            ExitCause::PolicyKill
        } else if from_self && k.evidence & signal_evidence::NO_SIGINFO != 0 {
            // The kernel's own send_sig(sig, current, 0), in the process's context: a write past
            // RLIMIT_FSIZE, or to a pipe or socket with no reader.
            match signal {
                sig::SIGXFSZ => {
                    policy = Some(Policy::Rlimit { limit: "fsize" });
                    ExitCause::PolicyKill
                }
                sig::SIGPIPE => ExitCause::BrokenPipe,
                _ => {
                    policy = Some(Policy::Kernel);
                    ExitCause::PolicyKill
                }
            }
        } else if from_self {
            ExitCause::SelfSignal
        } else if same_container(k.sender_cgroup_id) {
            ExitCause::PeerKill
        } else if kernel_sent {
            // The kernel acting on its own behalf from outside, and not the OOM killer: the
            // sender is reported, the cause is not guessed.
            ExitCause::Unknown
        } else {
            ExitCause::OrchestratorKill
        }
    } else {
        ExitCause::Unknown
    };

    let escalated_from = match (cause, killer) {
        (ExitCause::OrchestratorKill | ExitCause::PeerKill, Some(k)) if signal == sig::SIGKILL => {
            slots
                .iter()
                .filter(|s| {
                    s.first_ns != 0 && is_graceful_stop(s.signal) && s.first_ns < k.first_ns
                })
                .min_by_key(|s| s.first_ns)
                .copied()
        }
        _ => None,
    };
    Attribution {
        status,
        cause,
        killer,
        escalated_from,
        policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{Header, Kind};

    const CHILD: u32 = 500;
    const CONTAINER_CG: u64 = 77;
    const HOST_CG: u64 = 1;

    fn origin(signal: u32, code: i32, sender: u32, cgroup: u64, at: u64) -> SignalOrigin {
        SignalOrigin {
            first_ns: at,
            last_ns: at,
            sender_cgroup_id: cgroup,
            sender_pid: sender,
            sender_tgid: sender,
            signal,
            code,
            count: 1,
            result: 0,
            syscall: 0,
            evidence: 0,
            sender_comm: [0; 16],
        }
    }

    /// An exit with the wait status `status` and what was sent to the process.
    fn exit(status: u32, slots: &[SignalOrigin], oom_ns: u64) -> (ExitRecord, SignalTrack) {
        let track = SignalTrack {
            start_ns: 0,
            oom_ns,
            slots: slots.to_vec(),
        };
        let exit = ExitRecord {
            header: Header {
                kind: Kind::ProcessExit as u32,
                _reserved: 0,
                ts_ns: 10_000_000_000,
                pid: CHILD,
                tgid: CHILD,
                cgroup_id: CONTAINER_CG,
            },
            exit_status: status,
            _reserved: 0,
            parent_tgid: 1,
            ns_level: 0,
            start_ns: 0,
            comm: [0; 16],
        };
        (exit, track)
    }

    fn verdict((e, track): &(ExitRecord, SignalTrack)) -> Attribution {
        attribute(e, track, |cg| cg == CONTAINER_CG)
    }

    #[test]
    fn exit_codes() {
        let a = verdict(&exit(0, &[], 0));
        assert_eq!(
            (a.status, a.cause),
            (WaitStatus::Exited(0), ExitCause::Exited)
        );
        let a = verdict(&exit(3 << 8, &[], 0));
        assert_eq!((a.status.shell_code(), a.cause), (3, ExitCause::Failed));
        // A SIGTERM that was handled and followed by exit 0 is still a clean exit.
        let a = verdict(&exit(0, &[origin(sig::SIGTERM, 0, 1, HOST_CG, 5)], 0));
        assert_eq!(a.cause, ExitCause::Exited);
    }

    #[test]
    fn kill_from_outside_names_the_sender() {
        let a = verdict(&exit(9, &[origin(sig::SIGKILL, 0, 4121, HOST_CG, 5)], 0));
        assert_eq!(a.cause, ExitCause::OrchestratorKill);
        assert_eq!(a.status.shell_code(), 137);
        assert_eq!(a.killer.unwrap().sender_tgid, 4121);
        assert_eq!(a.escalated_from, None);
    }

    #[test]
    fn escalation_reports_grace() {
        let term = origin(sig::SIGTERM, 0, 4121, HOST_CG, 1_000_000_000);
        let kill = origin(sig::SIGKILL, 0, 4121, HOST_CG, 11_000_000_000);
        let a = verdict(&exit(9, &[term, kill], 0));
        assert_eq!(a.cause, ExitCause::OrchestratorKill);
        assert_eq!(a.escalated_from.unwrap().signal, sig::SIGTERM);
        assert_eq!(a.grace_ns(), Some(10_000_000_000));
        // A SIGTERM sent after the kill is not an escalation.
        let late = origin(sig::SIGTERM, 0, 4121, HOST_CG, 12_000_000_000);
        assert_eq!(verdict(&exit(9, &[kill, late], 0)).escalated_from, None);
    }

    #[test]
    fn peer_self_crash_oom() {
        let a = verdict(&exit(
            9,
            &[origin(sig::SIGKILL, 0, 600, CONTAINER_CG, 5)],
            0,
        ));
        assert_eq!(a.cause, ExitCause::PeerKill);
        // abort(): SIGABRT via tgkill (SI_TKILL) from itself, core dumped.
        let a = verdict(&exit(
            6 | 0x80,
            &[origin(sig::SIGABRT, -6, CHILD, CONTAINER_CG, 5)],
            0,
        ));
        assert_eq!(a.cause, ExitCause::SelfSignal);
        assert_eq!(
            a.status,
            WaitStatus::Signaled {
                signal: 6,
                core_dumped: true
            }
        );
        // A segmentation fault: SIGSEGV with SEGV_MAPERR raised in the task's own context.
        let a = verdict(&exit(
            11,
            &[origin(sig::SIGSEGV, 1, CHILD, CONTAINER_CG, 5)],
            0,
        ));
        assert_eq!(a.cause, ExitCause::Crash);
        // kill(getpid(), SIGSEGV) is a self signal, not a crash.
        let a = verdict(&exit(
            11,
            &[origin(sig::SIGSEGV, 0, CHILD, CONTAINER_CG, 5)],
            0,
        ));
        assert_eq!(a.cause, ExitCause::SelfSignal);
        // OOM: the SIGKILL comes from whichever task ran the OOM killer, with SI_KERNEL.
        let a = verdict(&exit(
            9,
            &[origin(sig::SIGKILL, SI_KERNEL, 42, HOST_CG, 5)],
            4,
        ));
        assert_eq!(a.cause, ExitCause::OomKill);
    }

    fn with(mut o: SignalOrigin, syscall: u32, evidence: u32) -> SignalOrigin {
        o.syscall = syscall;
        o.evidence = evidence;
        o
    }

    #[test]
    fn sender_classes_follow_the_kill_chain() {
        let of = |comm: &str, chain: &[&str]| {
            SenderClass::of(SenderKind::Outside, comm, chain.iter().copied())
        };
        // docker kill: runc started by the shim, started by containerd.
        assert_eq!(
            of("runc", &["containerd-shim", "containerd"]),
            SenderClass::Runtime
        );
        assert_eq!(of("dockerd", &["systemd"]), SenderClass::Orchestrator);
        // kill from a terminal.
        assert_eq!(
            of("kill", &["bash", "sshd", "systemd"]),
            SenderClass::Operator
        );
        // A script run by kubelet is the orchestrator's, shell or not.
        assert_eq!(of("sh", &["kubelet", "systemd"]), SenderClass::Orchestrator);
        assert_eq!(of("cron-job", &["cron", "systemd"]), SenderClass::Other);
        assert_eq!(
            SenderClass::of(SenderKind::Peer, "runc", std::iter::empty()),
            SenderClass::Peer
        );
    }

    #[test]
    fn the_kernels_own_sends_without_siginfo() {
        let raised = signal_evidence::NO_SIGINFO;
        // A write past RLIMIT_FSIZE: send_sig(SIGXFSZ, current, 0), core dumped.
        let xfsz = with(origin(sig::SIGXFSZ, 0, CHILD, CONTAINER_CG, 5), 0, raised);
        let a = verdict(&exit(25 | 0x80, &[xfsz], 0));
        assert_eq!(
            (a.cause, a.policy),
            (
                ExitCause::PolicyKill,
                Some(Policy::Rlimit { limit: "fsize" })
            )
        );
        // A write to a pipe with no reader.
        let pipe = with(origin(sig::SIGPIPE, 0, CHILD, CONTAINER_CG, 5), 0, raised);
        assert_eq!(verdict(&exit(13, &[pipe], 0)).cause, ExitCause::BrokenPipe);
        // The same signals by kill(2) of its own pid come with a siginfo: the process's doing.
        for signal in [sig::SIGXFSZ, sig::SIGPIPE] {
            let own = origin(signal, 0, CHILD, CONTAINER_CG, 5);
            let a = verdict(&exit(signal, &[own], 0));
            assert_eq!((a.cause, a.policy), (ExitCause::SelfSignal, None));
        }
        // Sent so by the kernel in another's context (a dying parent's pdeath_signal).
        let pdeath = with(origin(sig::SIGPIPE, 0, 600, CONTAINER_CG, 5), 0, raised);
        assert_eq!(verdict(&exit(13, &[pdeath], 0)).cause, ExitCause::PeerKill);
        assert_eq!(
            SenderKind::of(sig::SIGPIPE, 0, raised, CHILD, CHILD, true),
            SenderKind::Kernel
        );
        assert_eq!(
            SenderKind::of(sig::SIGPIPE, 0, 0, CHILD, CHILD, true),
            SenderKind::Own
        );
    }
    #[test]
    fn policy_kills_and_namespace_teardown() {
        // A seccomp filter's kill: SIGSYS with SYS_SECCOMP, raised in the process, core dumped.
        let seccomp = with(
            origin(sig::SIGSYS, SYS_SECCOMP, CHILD, CONTAINER_CG, 5),
            83,
            0,
        );
        let a = verdict(&exit(31 | 0x80, &[seccomp], 0));
        assert_eq!(a.cause, ExitCause::PolicyKill);
        assert_eq!(a.policy, Some(Policy::Seccomp { syscall: 83 }));
        // kill(getpid(), SIGSYS) is the process's own doing.
        let a = verdict(&exit(
            31,
            &[origin(sig::SIGSYS, 0, CHILD, CONTAINER_CG, 5)],
            0,
        ));
        assert_eq!(a.cause, ExitCause::SelfSignal);
        // RLIMIT_CPU: the kernel's SIGKILL in the process's context, over its hard limit.
        let over = signal_evidence::OVER_CPU_LIMIT;
        let cpu = with(
            origin(sig::SIGKILL, SI_KERNEL, CHILD, CONTAINER_CG, 5),
            0,
            over,
        );
        let a = verdict(&exit(9, &[cpu], 0));
        assert_eq!(
            (a.cause, a.policy),
            (ExitCause::PolicyKill, Some(Policy::Rlimit { limit: "cpu" }))
        );
        // The soft limit's SIGXCPU.
        let xcpu = origin(sig::SIGXCPU, SI_KERNEL, CHILD, CONTAINER_CG, 5);
        let a = verdict(&exit(24 | 0x80, &[xcpu], 0));
        assert_eq!(a.policy, Some(Policy::Rlimit { limit: "cpu" }));
        // The same SIGKILL under the limit: the kernel on another's behalf (bpf_send_signal).
        let ebpf = origin(sig::SIGKILL, SI_KERNEL, CHILD, CONTAINER_CG, 5);
        let a = verdict(&exit(9, &[ebpf], 0));
        assert_eq!(
            (a.cause, a.policy),
            (ExitCause::PolicyKill, Some(Policy::Kernel))
        );
        // The exiting init of the pid namespace kills the rest: not a peer's kill.
        let exiting = signal_evidence::SENDER_EXITING;
        let zap = with(
            origin(sig::SIGKILL, SI_KERNEL, 600, CONTAINER_CG, 5),
            0,
            exiting,
        );
        let a = verdict(&exit(9, &[zap], 0));
        assert_eq!((a.cause, a.policy), (ExitCause::InitExited, None));
        assert_eq!(a.killer.map(|k| k.sender_tgid), Some(600));
        // A peer's plain kill stays a peer kill, exiting or not.
        let peer = with(origin(sig::SIGKILL, 0, 600, CONTAINER_CG, 5), 0, 0);
        assert_eq!(verdict(&exit(9, &[peer], 0)).cause, ExitCause::PeerKill);
    }

    #[test]
    fn unknown_only_without_evidence() {
        assert_eq!(verdict(&exit(9, &[], 0)).cause, ExitCause::Unknown);
        // The kernel killing on its own behalf, from outside, without an OOM mark.
        let a = verdict(&exit(
            9,
            &[origin(sig::SIGKILL, SI_KERNEL, 42, HOST_CG, 5)],
            0,
        ));
        assert_eq!(a.cause, ExitCause::Unknown);
        // The record of another signal does not explain a SIGKILL.
        let a = verdict(&exit(9, &[origin(10, 0, 42, HOST_CG, 5)], 0));
        assert_eq!(a.cause, ExitCause::Unknown);
    }

    #[test]
    fn sender_kinds() {
        assert_eq!(SenderKind::of(9, 0, 0, 1, 2, false), SenderKind::Outside);
        assert_eq!(SenderKind::of(9, 0, 0, 1, 2, true), SenderKind::Peer);
        assert_eq!(SenderKind::of(6, -6, 0, 2, 2, true), SenderKind::Own);
        assert_eq!(SenderKind::of(11, 1, 0, 2, 2, true), SenderKind::Kernel);
        assert_eq!(
            SenderKind::of(9, SI_KERNEL, 0, 1, 2, false),
            SenderKind::Kernel
        );
    }

    #[test]
    fn names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(34), "SIGRT0");
        assert_eq!(signal_name(50), "SIGRT16");
        assert_eq!(signal_name(64), "SIGRT30");
        assert_eq!(signal_name(32), "SIG32");
        assert_eq!(signal_name(65), "SIG65");
        assert_eq!(signal_name(99), "SIG99");
        for n in 34..=64 {
            assert_eq!(signal_name(n), format!("SIGRT{}", n - 34));
        }
    }
}
