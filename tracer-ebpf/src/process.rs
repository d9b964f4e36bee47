//! `task:task_newtask`, `sched:sched_process_exec` and `sched:sched_process_exit`: which tasks
//! live in tracked cgroups, what they run, and how each process ends.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{exit_flags, kind, probe, ExecRecord, ExitRecord, FILENAME_LEN};

use crate::state::{
    current_cgroup_id, header, is_tracked_cgroup, read_data_loc_str, reserve, track_task, OFFSETS,
    SIGNALS, TASKS,
};

const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const EXEC_FILENAME: usize = 8;
const EXEC_OLD_PID: usize = 16;
const EXIT_GROUP_DEAD: usize = 32;

const CLONE_THREAD: u64 = 0x0001_0000;

/// Runs in the parent: a task created in a tracked cgroup is followed from birth, so a signal
/// aimed at it is recognised even before it execs.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_task_newtask(&ctx);
    0
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<(), i32> {
    let cgroup_id = current_cgroup_id();
    if !is_tracked_cgroup(cgroup_id) {
        return Ok(());
    }
    // SAFETY: fixed offsets of task_newtask's record, read through bpf_probe_read.
    let (child, flags) = unsafe {
        (
            ctx.read_at::<i32>(NEWTASK_PID)? as u32,
            ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS)?,
        )
    };
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let tgid = if flags & CLONE_THREAD != 0 {
        parent_tgid
    } else {
        child
    };
    track_task(child, tgid, cgroup_id);
    Ok(())
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exec(&ctx);
    0
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), i32> {
    let head = header(kind::PROCESS_EXEC);
    if !is_tracked_cgroup(head.cgroup_id) {
        return Ok(());
    }
    // SAFETY: fixed offset of sched_process_exec's record, read through bpf_probe_read.
    let old_pid = unsafe { ctx.read_at::<i32>(EXEC_OLD_PID)? } as u32;
    if old_pid != head.pid {
        // A non-leader thread exec'd and took over the leader's pid.
        let _ = TASKS.remove(old_pid);
    }
    // Also covers a task placed in the cgroup at clone time (CLONE_INTO_CGROUP), which no
    // attach record announces.
    track_task(head.pid, head.tgid, head.cgroup_id);

    let Some(mut entry) = reserve::<ExecRecord>(probe::PROCESS_EXEC) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit.
    unsafe {
        (*record).header = head;
        (*record).old_pid = old_pid;
        (*record).comm = bpf_get_current_comm().unwrap_or_default();
        let filename = core::ptr::addr_of_mut!((*record).filename).cast::<u8>();
        (*record).filename_len =
            read_data_loc_str(ctx, EXEC_FILENAME, filename, FILENAME_LEN as u32);
    }
    entry.submit(0);
    Ok(())
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exit(&ctx);
    0
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let head = header(kind::PROCESS_EXIT);
    // SAFETY: fixed offset of sched_process_exit's record, read through bpf_probe_read.
    let group_dead = unsafe { ctx.read_at::<u8>(EXIT_GROUP_DEAD)? } != 0;
    // A leader that leaves before its threads stays the target of signals sent to its process
    // (kill() aims at the leader), so it is forgotten only with the process.
    if group_dead || head.pid != head.tgid {
        let _ = TASKS.remove(head.pid);
    }
    if !group_dead {
        // Not the last thread of its process: the process goes on, nothing to report.
        return Ok(());
    }
    if head.pid != head.tgid {
        let _ = TASKS.remove(head.tgid);
    }
    let track = SIGNALS.get_ptr(head.tgid);
    if is_tracked_cgroup(head.cgroup_id) {
        report_exit(&head, track);
    }
    if track.is_some() {
        let _ = SIGNALS.remove(head.tgid);
    }
    Ok(())
}

fn report_exit(head: &tracer_common::Header, track: Option<*const tracer_common::SignalTrack>) {
    let offsets = OFFSETS.load();
    // SAFETY: bpf_get_current_task returns the running task; field offsets come from the running
    // kernel's BTF and every read goes through bpf_probe_read_kernel, which faults safely.
    let (exit_status, parent_tgid) = unsafe {
        let task = bpf_get_current_task() as *const u8;
        // do_exit() stores the wait status in task->exit_code before this tracepoint fires, and
        // for a group exit every thread carries the group's code.
        let status =
            bpf_probe_read_kernel(task.wrapping_add(offsets.task_exit_code as usize) as *const u32)
                .unwrap_or(0);
        let parent = bpf_probe_read_kernel(
            task.wrapping_add(offsets.task_real_parent as usize) as *const *const u8
        )
        .unwrap_or(core::ptr::null());
        let ppid = if parent.is_null() {
            0
        } else {
            bpf_probe_read_kernel(parent.wrapping_add(offsets.task_tgid as usize) as *const u32)
                .unwrap_or(0)
        };
        (status, ppid)
    };

    let Some(mut entry) = reserve::<ExitRecord>(probe::PROCESS_EXIT) else {
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size and every field
    // is written before submit; `track` points to a live map value.
    unsafe {
        (*record).header = *head;
        (*record).exit_status = exit_status;
        (*record).parent_tgid = parent_tgid;
        (*record)._reserved = 0;
        (*record).comm = bpf_get_current_comm().unwrap_or_default();
        match track {
            Some(track) => {
                (*record).flags = exit_flags::HAS_TRACK;
                core::ptr::copy_nonoverlapping(track, core::ptr::addr_of_mut!((*record).track), 1);
            }
            None => {
                (*record).flags = 0;
                core::ptr::write_bytes(core::ptr::addr_of_mut!((*record).track), 0, 1);
            }
        }
    }
    entry.submit(0);
}
