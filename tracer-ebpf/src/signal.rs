//! `signal:signal_generate` and `oom:mark_victim`: who sent which signal to a tracked process,
//! and whether the OOM killer chose it. Both are remembered per process in `SIGNALS` until the
//! process exits, when `sched_process_exit` copies them into the exit record.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use tracer_common::{
    kind, probe, OomRecord, SignalRecord, COMM_LEN, SIGNAL_SLOTS, SI_CODE_UNREADABLE,
};

use crate::state::{
    btf_read, current_task, followed_cgroup, header, header_for, now_ns, process_start, reserve,
    signal_track, task_cgroup, task_comm, task_ids, wakeup, Task, MM_ANON_RSS, MM_TOTAL_VM,
    PAGE_KB_SHIFT, SIGINFO_CODE, TASK_MM,
};

/// `si_code` of a signal sent without a siginfo (`SEND_SIG_NOINFO`, as by kill(2)).
const SI_USER: i32 = 0;
/// `si_code` of a signal the kernel sends (`SEND_SIG_PRIV`).
const SI_KERNEL: i32 = 0x80;

/// Signals whose default action neither terminates nor dumps core (SIGCHLD, SIGCONT, SIGSTOP,
/// SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH): they can never be why a process died.
#[inline(always)]
fn never_fatal(sig: u32) -> bool {
    (17..=23).contains(&sig) || sig == 28
}

/// Runs in the sender's context, with the target task as argument.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate(ctx: BtfTracePointContext) -> u32 {
    let _ = try_signal_generate(&ctx);
    0
}

fn try_signal_generate(ctx: &BtfTracePointContext) -> Result<(), i32> {
    // Every signal on the host passes here: the signal number and the target's cgroup decide.
    let sig: i32 = ctx.arg(0);
    let sig = sig as u32;
    if never_fatal(sig) {
        return Ok(());
    }
    let target: Task = ctx.arg(2);
    // SAFETY: `target` is the argument's BTF task pointer, and the cgroup read from it a BTF
    // cgroup pointer.
    let Some((target_cgroup_id, _)) = (unsafe { followed_cgroup(task_cgroup(target)) }) else {
        return Ok(());
    };
    // SAFETY: as above.
    let ((target_pid, target_tgid), start) = unsafe { (task_ids(target), process_start(target)) };
    let info: *const u8 = ctx.arg(1);
    let group: i32 = ctx.arg(3);
    let result: i32 = ctx.arg(4);
    // As the tracepoint itself reports it: no siginfo (SEND_SIG_NOINFO, 0) means a plain send
    // from user space, a private one (SEND_SIG_PRIV, 1) the kernel.
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
    // SAFETY: `target` is the argument's BTF task pointer.
    let target_comm = unsafe { task_comm(target) };
    // This runs in the sender's context.
    let sender = current_task();
    // SAFETY: `sender` is the running task's BTF pointer.
    let (head, sender_comm) = unsafe { (header_for(kind::SIGNAL, sender), task_comm(sender)) };

    if let Some(track) = signal_track(target_tgid, start) {
        // SAFETY: `track` points to a live map value; concurrent senders to the same process on
        // other CPUs may interleave, which can at worst blur a counter.
        unsafe { remember(&mut *track, sig, code, result as u32, &head, sender_comm) };
    }

    let Some(mut entry) = reserve::<SignalRecord>(probe::SIGNAL_GENERATE) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit.
    unsafe {
        (*record).header = head;
        (*record).target_pid = target_pid;
        (*record).target_tgid = target_tgid;
        (*record).target_cgroup_id = target_cgroup_id;
        (*record).signal = sig;
        (*record).code = code;
        (*record).result = result as u32;
        (*record).group = group as u32;
        (*record).sender_comm = sender_comm;
        (*record).target_comm = target_comm;
    }
    entry.submit(wakeup::<SignalRecord>());
    Ok(())
}

/// Keeps the first send of each distinct signal (the one that takes effect) and counts repeats.
/// When every slot is taken, the oldest gives way.
#[inline(always)]
fn remember(
    track: &mut tracer_common::SignalTrack,
    sig: u32,
    code: i32,
    result: u32,
    head: &tracer_common::Header,
    sender_comm: [u8; COMM_LEN],
) {
    let mut victim = 0usize;
    let mut oldest = u64::MAX;
    for i in 0..SIGNAL_SLOTS {
        let slot = &mut track.slots[i];
        if slot.signal == sig {
            slot.count = slot.count.wrapping_add(1);
            slot.last_ns = head.ts_ns;
            return;
        }
        // An empty slot has first_ns 0, so it is always the oldest.
        if slot.first_ns < oldest {
            oldest = slot.first_ns;
            victim = i;
        }
    }
    if let Some(slot) = track.slots.get_mut(victim) {
        slot.first_ns = head.ts_ns;
        slot.last_ns = head.ts_ns;
        slot.sender_cgroup_id = head.cgroup_id;
        slot.sender_pid = head.pid;
        slot.sender_tgid = head.tgid;
        slot.signal = sig;
        slot.code = code;
        slot.count = 1;
        slot.result = result;
        slot.sender_comm = sender_comm;
    }
}

/// Runs in the context of whichever task's allocation invoked the OOM killer, with the
/// victim as argument.
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(ctx: BtfTracePointContext) -> u32 {
    let _ = try_mark_victim(&ctx);
    0
}

fn try_mark_victim(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let victim: Task = ctx.arg(0);
    // SAFETY: `victim` is the argument's BTF task pointer, and the cgroup read from it a BTF
    // cgroup pointer.
    let Some((victim_cgroup_id, _)) = (unsafe { followed_cgroup(task_cgroup(victim)) }) else {
        return Ok(());
    };
    // SAFETY: as above.
    let ((victim_pid, victim_tgid), start) = unsafe { (task_ids(victim), process_start(victim)) };
    if let Some(track) = signal_track(victim_tgid, start) {
        // SAFETY: `track` points to a live map value.
        unsafe { (*track).oom_ns = now_ns() };
    }
    // The figures the tracepoint's own record gives: task->mm's total_vm and anonymous pages,
    // in KiB.
    // SAFETY: typed loads: the victim's `mm` (null once it has let go of its memory), and
    // its `total_vm` and `rss_stat[MM_ANONPAGES].count`.
    let (total_vm, anon_rss) = unsafe {
        let mm: *const u8 = btf_read(victim, &TASK_MM);
        if mm.is_null() {
            (0, 0)
        } else {
            (
                btf_read::<u64, _>(mm, &MM_TOTAL_VM),
                btf_read::<i64, _>(mm, &MM_ANON_RSS).max(0) as u64,
            )
        }
    };
    let shift = PAGE_KB_SHIFT.load();
    let Some(mut entry) = reserve::<OomRecord>(probe::OOM_MARK_VICTIM) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit.
    unsafe {
        (*record).header = header(kind::OOM_MARK);
        (*record).victim_pid = victim_pid;
        (*record).victim_tgid = victim_tgid;
        (*record).victim_cgroup_id = victim_cgroup_id;
        (*record).total_vm_kb = total_vm << shift;
        (*record).anon_rss_kb = anon_rss << shift;
    }
    entry.submit(wakeup::<OomRecord>());
    Ok(())
}
