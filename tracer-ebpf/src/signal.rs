//! `signal:signal_generate` and `oom:mark_victim`: who sent which signal to a tracked process,
//! and whether the OOM killer chose it. Each is a record naming the process by its tgid and start
//! time; user space joins them with the process's exit.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use tracer_common::{
    feature, signal_evidence, Ancestor, Kind, OomRecord, SignalRecord, ANCESTRY_LEN,
    SI_CODE_UNREADABLE,
};

use crate::{
    follow::followed,
    kernel::{has, Task, SIGINFO_CODE, SIGINFO_SYSCALL},
    ring::{counted, header, header_of, now_ns, reserve, send, submit, Done},
};

/// `si_code` of a signal sent without a siginfo (`SEND_SIG_NOINFO`, as by kill(2)).
const SI_USER: i32 = 0;
/// `si_code` of a signal the kernel sends (`SEND_SIG_PRIV`).
const SI_KERNEL: i32 = 0x80;

/// `SIGKILL`.
const SIGKILL: u32 = 9;
/// `SIGSYS`, and its `si_code` when a seccomp filter raised it.
const SIGSYS: u32 = 31;
const SYS_SECCOMP: i32 = 1;

/// The latest SIGKILL the kernel sent (`SEND_SIG_PRIV`) to a followed task on this CPU, for
/// kernels whose `oom:mark_victim` passes only the victim's pid: the OOM killer sends the victim
/// SIGKILL and marks it right after, on the same CPU under the victim's task lock, so the mark
/// is matched to this send by the pid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PrivKill {
    /// Thread id of the target (0: none waiting).
    tid: u32,
    tgid: u32,
    cgroup_id: u64,
    start_ns: u64,
    at_ns: u64,
    total_vm_kb: u64,
    anon_rss_kb: u64,
}

#[map]
static PRIV_KILL: PerCpuArray<PrivKill> = PerCpuArray::with_max_entries(1, 0);

/// A mark this long after the kill is not the OOM killer's right after it.
const PRIV_KILL_MATCH_NS: u64 = 10_000_000;

/// Signals whose default action neither terminates nor dumps core (SIGCHLD, SIGCONT, SIGSTOP,
/// SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH): they can never be why a process died.
#[inline(always)]
fn never_fatal(sig: u32) -> bool {
    (17..=23).contains(&sig) || sig == 28
}

/// Runs in the sender's context, with the target task as argument.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate(ctx: BtfTracePointContext) -> u32 {
    counted(Kind::Signal, try_signal_generate(&ctx));
    0
}

fn try_signal_generate(ctx: &BtfTracePointContext) -> Done {
    // Every signal on the host passes here: the signal number and the target's cgroup decide.
    let sig: i32 = ctx.arg(0);
    let sig = sig as u32;
    if never_fatal(sig) {
        return Ok(());
    }
    // SAFETY: the third argument is the target `struct task_struct *`.
    let target = unsafe { Task::from_arg(ctx.arg(2)) };
    let Some((target_cgroup_id, _)) = followed(target.cgroup()) else {
        return Ok(());
    };
    let ((target_pid, target_tgid), start) = (target.ids(), target.process_start());
    let info: *const u8 = ctx.arg(1);
    let group: i32 = ctx.arg(3);
    let result: i32 = ctx.arg(4);
    // As the tracepoint itself reports it: no siginfo (SEND_SIG_NOINFO, 0) reads SI_USER, a
    // private one (SEND_SIG_PRIV, 1) SI_KERNEL. No siginfo at all is the kernel's own plain
    // send (system calls that send always pass one): kept as evidence.
    let no_info = if info.is_null() {
        signal_evidence::NO_SIGINFO
    } else {
        0
    };
    let code = match info as usize {
        0 => SI_USER,
        1 => SI_KERNEL,
        // Newer verifiers treat this argument as a scalar, since it may carry one of those two
        // constants: the field is read with a probe read, not a typed load.
        // SAFETY: the helper reads kernel memory safely; a bad address reads as an error.
        _ => unsafe {
            bpf_probe_read_kernel(
                info.wrapping_add(SIGINFO_CODE.load() as usize)
                    .cast::<i32>(),
            )
        }
        .unwrap_or(SI_CODE_UNREADABLE),
    };
    if sig == SIGKILL && info as usize == 1 && !has(feature::OOM_VICTIM_TASK) {
        remember_priv_kill(target, target_cgroup_id, start);
    }
    // This runs in the sender's context.
    let sender = Task::current();
    let head = header_of(Kind::Signal, sender, sender.cgroup().id());
    let syscall = if sig == SIGSYS && code == SYS_SECCOMP {
        // SAFETY: `info` is a real siginfo (its code was read from it); the helper reads kernel
        // memory safely.
        unsafe {
            bpf_probe_read_kernel(
                info.wrapping_add(SIGINFO_SYSCALL.load() as usize)
                    .cast::<u32>(),
            )
        }
        .unwrap_or(0)
    } else {
        0
    };
    // Only for the kernel's own sends, which are rare: what it held when it sent.
    let evidence = if code == SI_KERNEL {
        evidence(sender, head.tgid == target_tgid, sig, target)
    } else {
        no_info
    };

    let mut entry = reserve::<SignalRecord>()?;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit.
    unsafe {
        (*record).header = head;
        (*record).target_pid = target_pid;
        (*record).target_tgid = target_tgid;
        (*record).target_cgroup_id = target_cgroup_id;
        (*record).target_start_ns = start;
        (*record).signal = sig;
        (*record).code = code;
        (*record).result = result as u32;
        (*record).group = group as u32;
        (*record).sender_comm = sender.comm();
        (*record).target_comm = target.comm();
        (*record).evidence = evidence;
        (*record).syscall = syscall;
        (*record)._reserved = 0;
        // The kill chain: who started the sender, nearest first, up to the host's init.
        let mut task = sender;
        let mut len = 0u32;
        for i in 0..ANCESTRY_LEN {
            task = task.parent();
            let tgid = task.ids().1;
            if tgid == 0 {
                break;
            }
            // The process's name (its leader's): the parent may be one of its threads.
            (*record).ancestry[i] = Ancestor {
                tgid,
                comm: task.leader().comm(),
            };
            len += 1;
            if tgid == 1 {
                break;
            }
        }
        (*record).ancestry_len = len;
    }
    submit(entry);
    Ok(())
}

/// [`signal_evidence`] bits for a signal the kernel sends on its own behalf.
#[inline(always)]
fn evidence(sender: Task, from_target: bool, sig: u32, target: Task) -> u32 {
    let mut bits = 0;
    if sender.exiting() {
        bits |= signal_evidence::SENDER_EXITING;
    }
    // The RLIMIT_CPU kill runs in the process's own context (its CPU timer's work).
    if sig == SIGKILL && from_target && target.over_cpu_limit() {
        bits |= signal_evidence::OVER_CPU_LIMIT;
    }
    bits
}

/// Keeps this CPU's latest kernel SIGKILL to a followed task, for `mark_victim_pid`.
#[inline(always)]
fn remember_priv_kill(target: Task, cgroup_id: u64, start_ns: u64) {
    let Some(slot) = PRIV_KILL.get_ptr_mut(0) else {
        return;
    };
    let (tid, tgid) = target.ids();
    let (total_vm_kb, anon_rss_kb) = target
        .mm()
        .map_or((0, 0), |mm| (mm.total_vm_kb(), mm.anon_rss_kb()));
    // SAFETY: this CPU's slot, valid for the program's run.
    unsafe {
        *slot = PrivKill {
            tid,
            tgid,
            cgroup_id,
            start_ns,
            at_ns: now_ns(),
            total_vm_kb,
            anon_rss_kb,
        };
    }
}

/// Runs in the context of whichever task's allocation invoked the OOM killer, with the
/// victim as argument (kernels with [`feature::OOM_VICTIM_TASK`]).
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(ctx: BtfTracePointContext) -> u32 {
    // SAFETY: the first argument is the victim's `struct task_struct *`.
    let victim = unsafe { Task::from_arg(ctx.arg(0)) };
    let Some((cgroup_id, _)) = followed(victim.cgroup()) else {
        return 0;
    };
    let (total_vm_kb, anon_rss_kb) = victim
        .mm()
        .map_or((0, 0), |mm| (mm.total_vm_kb(), mm.anon_rss_kb()));
    let (tid, tgid) = victim.ids();
    counted(
        Kind::OomMark,
        mark_oom_victim(&PrivKill {
            tid,
            tgid,
            cgroup_id,
            start_ns: victim.process_start(),
            at_ns: 0,
            total_vm_kb,
            anon_rss_kb,
        }),
    );
    0
}

/// The same for kernels whose `mark_victim` passes only the victim's pid: the victim is the
/// target of the SIGKILL the OOM killer sent just before on this CPU (see [`PRIV_KILL`]). A
/// process the OOM killer picks while it is already exiting gets no SIGKILL, and no mark here.
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_pid(ctx: BtfTracePointContext) -> u32 {
    let pid: i32 = ctx.arg(0);
    let Some(slot) = PRIV_KILL.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, valid for the program's run.
    let kill = unsafe { *slot };
    if kill.tid == 0
        || kill.tid != pid as u32
        || now_ns().wrapping_sub(kill.at_ns) > PRIV_KILL_MATCH_NS
    {
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*slot).tid = 0 };
    counted(Kind::OomMark, mark_oom_victim(&kill));
    0
}

/// Reports the OOM killer's choice of `victim`.
#[inline(always)]
fn mark_oom_victim(victim: &PrivKill) -> Done {
    send(OomRecord {
        header: header(Kind::OomMark),
        victim_pid: victim.tid,
        victim_tgid: victim.tgid,
        victim_cgroup_id: victim.cgroup_id,
        victim_start_ns: victim.start_ns,
        anon_rss_kb: victim.anon_rss_kb,
        total_vm_kb: victim.total_vm_kb,
    })
}
