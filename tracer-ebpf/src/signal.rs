//! `signal:signal_generate` and `oom:mark_victim`: who sent which signal to a tracked process,
//! and whether the OOM killer chose it. Both are remembered per process in `SIGNALS` until the
//! process exits, when `sched_process_exit` copies them into the exit record.

use aya_ebpf::{helpers::bpf_get_current_comm, macros::tracepoint, programs::TracePointContext};
use tracer_common::{kind, probe, OomRecord, SignalRecord, COMM_LEN, SIGNAL_SLOTS};

use crate::state::{field, header, mark_signaled, now_ns, reserve, signal_track, wakeup, TASKS};

const GEN_SIG: usize = 8;
const GEN_CODE: usize = 16;
const GEN_COMM: usize = 20;
const GEN_PID: usize = 36;
const GEN_GROUP: usize = 40;
const GEN_RESULT: usize = 44;
const OOM_PID: usize = 8;
const OOM_TOTAL_VM: usize = 16;
const OOM_ANON_RSS: usize = 24;

/// Signals whose default action neither terminates nor dumps core (SIGCHLD, SIGCONT, SIGSTOP,
/// SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH): they can never be why a process died.
#[inline(always)]
fn never_fatal(sig: u32) -> bool {
    (17..=23).contains(&sig) || sig == 28
}

/// A `comm` field of a tracepoint's record at `offset` (4-aligned), as four u32 loads.
///
/// # Safety
/// `offset` must be a `char[16]` field of the tracepoint's record, 4-aligned.
#[inline(always)]
unsafe fn comm_at(ctx: &TracePointContext, offset: usize) -> [u8; COMM_LEN] {
    // SAFETY: per the contract; each load has a constant offset from the context.
    let words: [u32; 4] = unsafe {
        [
            field::<u32>(ctx, offset),
            field::<u32>(ctx, offset + 4),
            field::<u32>(ctx, offset + 8),
            field::<u32>(ctx, offset + 12),
        ]
    };
    // SAFETY: plain bytes of the same size.
    unsafe { core::mem::transmute::<[u32; 4], [u8; COMM_LEN]>(words) }
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let _ = try_signal_generate(&ctx);
    0
}

fn try_signal_generate(ctx: &TracePointContext) -> Result<(), i32> {
    // Every signal on the host passes here: read the two fields that decide directly.
    // SAFETY: `sig` and `pid` are ints at these offsets of signal_generate's record.
    let (sig, target) = unsafe {
        (
            field::<i32>(ctx, GEN_SIG) as u32,
            field::<i32>(ctx, GEN_PID) as u32,
        )
    };
    if never_fatal(sig) {
        return Ok(());
    }
    let Some(task_ptr) = TASKS.get_ptr_mut(target) else {
        return Ok(());
    };
    // SAFETY: a live map value, read once by copy.
    let task = unsafe { *task_ptr };
    // SAFETY: fields of signal_generate's record at these offsets; `comm` (at 20) is read as
    // four aligned u32s, since the context allows only loads aligned to their size.
    let (code, group, result, target_comm) = unsafe {
        (
            field::<i32>(ctx, GEN_CODE),
            field::<i32>(ctx, GEN_GROUP) as u32,
            field::<i32>(ctx, GEN_RESULT) as u32,
            comm_at(ctx, GEN_COMM),
        )
    };
    // This runs in the sender's context.
    let head = header(kind::SIGNAL);
    let sender_comm = bpf_get_current_comm().unwrap_or_default();

    if let Some(track) = signal_track(task.tgid) {
        // SAFETY: `track` points to a live map value; concurrent senders to the same process on
        // other CPUs may interleave, which can at worst blur a counter.
        unsafe { remember(&mut *track, sig, code, result, &head, sender_comm) };
        mark_signaled(task_ptr, target, task.tgid);
    }

    let Some(mut entry) = reserve::<SignalRecord>(probe::SIGNAL_GENERATE) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit.
    unsafe {
        (*record).header = head;
        (*record).target_pid = target;
        (*record).target_tgid = task.tgid;
        (*record).target_cgroup_id = task.cgroup_id;
        (*record).signal = sig;
        (*record).code = code;
        (*record).result = result;
        (*record).group = group;
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

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_mark_victim(&ctx);
    0
}

fn try_mark_victim(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: fixed offset of mark_victim's record, read through bpf_probe_read.
    let victim = unsafe { ctx.read_at::<i32>(OOM_PID)? } as u32;
    let Some(task_ptr) = TASKS.get_ptr_mut(victim) else {
        return Ok(());
    };
    // SAFETY: a live map value, read once by copy.
    let task = unsafe { *task_ptr };
    if let Some(track) = signal_track(task.tgid) {
        // SAFETY: `track` points to a live map value.
        unsafe { (*track).oom_ns = now_ns() };
        mark_signaled(task_ptr, victim, task.tgid);
    }
    let Some(mut entry) = reserve::<OomRecord>(probe::OOM_MARK_VICTIM) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: as in `try_signal_generate`; fixed offsets of mark_victim's record.
    unsafe {
        (*record).header = header(kind::OOM_MARK);
        (*record).victim_pid = victim;
        (*record).victim_tgid = task.tgid;
        (*record).victim_cgroup_id = task.cgroup_id;
        (*record).total_vm_kb = ctx.read_at::<u64>(OOM_TOTAL_VM).unwrap_or(0);
        (*record).anon_rss_kb = ctx.read_at::<u64>(OOM_ANON_RSS).unwrap_or(0);
    }
    entry.submit(wakeup::<OomRecord>());
    Ok(())
}
