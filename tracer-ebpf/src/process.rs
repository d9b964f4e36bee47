//! `sched:sched_process_exec` and `sched:sched_process_exit`: what the processes of followed
//! cgroups run, and how each of them ends. A process is followed while its cgroup is: no program
//! runs at fork, and nothing is kept per task.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, generated::bpf_probe_read_user_str},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    cgroup_state, exit_flags, kind, probe, EnvValue, ExecEnvRecord, ExecRecord, ExitRecord,
    ENV_KEY_LEN, ENV_SCAN_LEN, ENV_VALUE_LEN, EXIT_RECORD_SHORT_LEN, FILENAME_LEN,
};

use crate::state::{
    btf_read, current_task, field, followed_cgroup, header_of, process_start, read_data_loc_str,
    reserve, task_cgroup, task_comm, wakeup, Task, ENV_KEY, ENV_SCRATCH, MM_ENV_END, MM_ENV_START,
    SIGNALS, TASK_EXIT_CODE, TASK_MM, TASK_REAL_PARENT, TASK_TGID,
};

const EXEC_FILENAME: usize = 8;
const EXEC_OLD_PID: usize = 16;
const EXIT_GROUP_DEAD: usize = 32;

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exec(&ctx);
    0
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), i32> {
    // Every exec on the host passes here: its cgroup decides, by its mark and then the table.
    let task = current_task();
    // SAFETY: `task` is the running task's BTF pointer, and the cgroup read from it a BTF
    // cgroup pointer.
    let Some((cgroup_id, state)) = (unsafe { followed_cgroup(task_cgroup(task)) }) else {
        return Ok(());
    };
    // SAFETY: an int of sched_process_exec's record at this (aligned) offset.
    let old_pid = unsafe { field::<i32>(ctx, EXEC_OLD_PID) } as u32;
    // SAFETY: `task` is the running task's BTF pointer.
    let head = unsafe { header_of(kind::PROCESS_EXEC, task, cgroup_id) };

    // The first exec in a cgroup is its container's init: read the agent-name variable from the
    // new image's environment now, while the process surely exists.
    // SAFETY: a live map value of this program's map; a racing exec on another CPU could at
    // worst scan a second environment, which user space ignores.
    let first = unsafe {
        let first = *state == cgroup_state::NEW;
        *state = cgroup_state::STARTED;
        first
    };
    let found = first && scan_init_env();

    if found {
        // The value travels in the exec record: one ring-buffer record per container start.
        let Some(mut entry) = reserve::<ExecEnvRecord>(probe::PROCESS_EXEC) else {
            return Ok(());
        };
        let record = entry.as_mut_ptr();
        // SAFETY: `record` points to reserved ring-buffer space of the record's size; every
        // field is written before submit.
        unsafe {
            fill_exec(
                ctx,
                task,
                core::ptr::addr_of_mut!((*record).exec),
                &head,
                old_pid,
            );
            fill_env(core::ptr::addr_of_mut!((*record).env));
        }
        entry.submit(wakeup::<ExecEnvRecord>());
        return Ok(());
    }
    let Some(mut entry) = reserve::<ExecRecord>(probe::PROCESS_EXEC) else {
        return Ok(());
    };
    // SAFETY: as above.
    unsafe { fill_exec(ctx, task, entry.as_mut_ptr(), &head, old_pid) };
    entry.submit(wakeup::<ExecRecord>());
    Ok(())
}

/// Writes every field of an [`ExecRecord`] about the running task, `task`.
///
/// # Safety
/// `record` must be valid for writes of an `ExecRecord`; `task` must be the running task's BTF
/// pointer.
#[inline(always)]
unsafe fn fill_exec(
    ctx: &TracePointContext,
    task: Task,
    record: *mut ExecRecord,
    head: &tracer_common::Header,
    old_pid: u32,
) {
    // SAFETY: per the contract.
    unsafe {
        (*record).header = *head;
        (*record).old_pid = old_pid;
        (*record).comm = task_comm(task);
        let filename = core::ptr::addr_of_mut!((*record).filename).cast::<u8>();
        (*record).filename_len =
            read_data_loc_str(ctx, EXEC_FILENAME, filename, FILENAME_LEN as u32);
    }
}

/// Environment strings looked at, at most.
const MAX_ENV_STRINGS: u32 = 128;

/// Looks for the agent-name variable in the running task's environment. When found, its whole
/// string (`NAME=value`, up to `ENV_SCAN_LEN` bytes) and where the value starts are in this
/// CPU's `ENV_SCRATCH` slot. (A subprogram of its own; it answers a plain yes or no, so that
/// the verifier walks the caller's rest once for each, not once per way through the loop.)
#[inline(never)]
fn scan_init_env() -> bool {
    let Some(key) = ENV_KEY.get(0) else {
        return false;
    };
    let key_len = key.len as usize;
    if key_len == 0 || key_len > ENV_KEY_LEN {
        return false;
    }
    // SAFETY: typed loads from the running task: `mm` is its mm_struct pointer (null for a
    // kernel thread), `env_start` and `env_end` are unsigned longs of it.
    let (mut at, end) = unsafe {
        let mm: *const u8 = btf_read(current_task(), &TASK_MM);
        if mm.is_null() {
            return false;
        }
        (
            btf_read::<u64, _>(mm, &MM_ENV_START),
            btf_read::<u64, _>(mm, &MM_ENV_END),
        )
    };
    let Some(scan) = ENV_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot, valid for the program's run.
    let buf = unsafe { core::ptr::addr_of_mut!((*scan).buf) };
    // A string longer than the buffer is read in pieces; only a piece that starts a string can
    // be the variable.
    let mut continuing = false;
    for _ in 0..MAX_ENV_STRINGS {
        if at == 0 || at >= end {
            return false;
        }
        // SAFETY: `buf` is this CPU's scratch slot of ENV_SCAN_LEN bytes; the helper bounds the
        // copy by that size and reads user memory of the current (just exec'd) image safely.
        let n = unsafe {
            bpf_probe_read_user_str(
                buf.cast(),
                ENV_SCAN_LEN as u32,
                at as *const core::ffi::c_void,
            )
        };
        if n <= 0 {
            return false;
        }
        let n = n as usize;
        // SAFETY: as above; the helper wrote `n` bytes (with the NUL) into `buf`.
        let bytes = unsafe { &*buf };
        if !continuing && n > key_len && starts_with(bytes, &key.prefix, key_len) {
            // SAFETY: as above.
            unsafe {
                (*scan).key_len = key_len as u32;
                (*scan).len = (n - 1) as u32;
            }
            return true;
        }
        // `n` counts the NUL; a full buffer means the string goes on past it.
        continuing = n == ENV_SCAN_LEN;
        at += if continuing { (n - 1) as u64 } else { n as u64 };
    }
    false
}

#[inline(always)]
fn starts_with(bytes: &[u8; ENV_SCAN_LEN], prefix: &[u8; ENV_KEY_LEN], len: usize) -> bool {
    for i in 0..ENV_KEY_LEN {
        if i >= len {
            return true;
        }
        if bytes[i] != prefix[i] {
            return false;
        }
    }
    true
}

/// Writes the value [`scan_init_env`] found, from the scratch slot: the string's bytes after the
/// key.
///
/// # Safety
/// `env` must be valid for writes of an `EnvValue`.
#[inline(always)]
unsafe fn fill_env(env: *mut EnvValue) {
    // SAFETY: per the contract; the scratch slot is this CPU's, valid for the program's run. The
    // copy reads `value_len` <= ENV_VALUE_LEN bytes from offset key_len <= ENV_KEY_LEN of the
    // ENV_KEY_LEN + ENV_VALUE_LEN bytes of the buffer. Only the value's own bytes are copied:
    // nothing of the other variables the scan read leaves the kernel (the rest of `value` is
    // whatever the ring held; user space keeps `value_len` bytes).
    unsafe {
        (*env)._reserved = 0;
        (*env).value_len = 0;
        let Some(scan) = ENV_SCRATCH.get_ptr(0) else {
            return;
        };
        let key_len = ((*scan).key_len as usize).min(ENV_KEY_LEN);
        let len = ((*scan).len as usize).min(ENV_SCAN_LEN);
        // A longer value is cut to ENV_VALUE_LEN bytes, which says it was cut. (Spelled out for
        // the verifier, which must see the copy's size bounded.)
        let mut value_len = len.saturating_sub(key_len);
        if value_len > ENV_VALUE_LEN {
            value_len = ENV_VALUE_LEN;
        }
        if value_len == 0 {
            return;
        }
        let src = core::ptr::addr_of!((*scan).buf)
            .cast::<u8>()
            .wrapping_add(key_len);
        let dst = core::ptr::addr_of_mut!((*env).value).cast::<u8>();
        if bpf_probe_read_kernel_buf(src, core::slice::from_raw_parts_mut(dst, value_len)).is_ok() {
            (*env).value_len = value_len as u32;
        }
    }
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exit(&ctx);
    0
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: `group_dead` is a bool at this offset of sched_process_exit's record.
    let group_dead = unsafe { field::<u8>(ctx, EXIT_GROUP_DEAD) } != 0;
    if !group_dead {
        // Not the last thread of its process: the process goes on, nothing to report.
        return Ok(());
    }
    // Every process exit on the host passes here: its cgroup decides, by its mark first.
    let task = current_task();
    // SAFETY: `task` is the running task's BTF pointer, and the cgroup read from it a BTF
    // cgroup pointer.
    let Some((cgroup_id, _)) = (unsafe { followed_cgroup(task_cgroup(task)) }) else {
        return Ok(());
    };
    // SAFETY: as above.
    let head = unsafe { header_of(kind::PROCESS_EXIT, task, cgroup_id) };
    // What was remembered for the process (signals, the OOM mark), if it is this process's:
    // a track left by an earlier process with the same tgid started at another time.
    let track = SIGNALS.get_ptr(head.tgid);
    // SAFETY: a live map value, read in place; `task` as above.
    let own = track.filter(|&t| unsafe { (*t).start_ns == process_start(task) });
    report_exit(task, &head, own);
    if track.is_some() {
        let _ = SIGNALS.remove(head.tgid);
    }
    Ok(())
}

/// `task`: the running task's BTF pointer.
fn report_exit(
    task: Task,
    head: &tracer_common::Header,
    track: Option<*const tracer_common::SignalTrack>,
) {
    // SAFETY: typed loads from the running task: `exit_code` is an int, `real_parent` a task
    // pointer, `tgid` a pid_t.
    let (exit_status, parent_tgid) = unsafe {
        // do_exit() stores the wait status in task->exit_code before this tracepoint fires, and
        // for a group exit every thread carries the group's code.
        let status: i32 = btf_read(task, &TASK_EXIT_CODE);
        let parent: Task = btf_read(task, &TASK_REAL_PARENT);
        let ppid: i32 = btf_read(parent, &TASK_TGID);
        (status as u32, ppid as u32)
    };

    // SAFETY: as above.
    let comm = unsafe { task_comm(task) };
    match track {
        Some(track) => {
            let Some(mut entry) = reserve::<ExitRecord>(probe::PROCESS_EXIT) else {
                return;
            };
            let record = entry.as_mut_ptr();
            // SAFETY: `record` points to reserved ring-buffer space of the record's size; every
            // field is written before submit; `track` points to a live map value.
            unsafe {
                fill_exit(
                    record,
                    head,
                    exit_status,
                    parent_tgid,
                    exit_flags::HAS_TRACK,
                    comm,
                );
                core::ptr::copy_nonoverlapping(track, core::ptr::addr_of_mut!((*record).track), 1);
            }
            entry.submit(wakeup::<ExitRecord>());
        }
        None => {
            // No signal or OOM mark remembered: the record without its track.
            let Some(mut entry) = reserve::<ShortExit>(probe::PROCESS_EXIT) else {
                return;
            };
            let record = entry.as_mut_ptr().cast::<ExitRecord>();
            // SAFETY: the reserved space holds the ExitRecord fields before `track`
            // (EXIT_RECORD_SHORT_LEN bytes), which are the only ones written.
            unsafe { fill_exit(record, head, exit_status, parent_tgid, 0, comm) };
            entry.submit(wakeup::<ShortExit>());
        }
    }
}

/// Room for an [`ExitRecord`] without its `track`.
#[repr(C)]
struct ShortExit([u64; EXIT_RECORD_SHORT_LEN / 8]);

const _: () = assert!(core::mem::size_of::<ShortExit>() == EXIT_RECORD_SHORT_LEN);

/// Writes the fields of an [`ExitRecord`] that come before `track`.
///
/// # Safety
/// `record` must be valid for writes of [`EXIT_RECORD_SHORT_LEN`] bytes.
#[inline(always)]
unsafe fn fill_exit(
    record: *mut ExitRecord,
    head: &tracer_common::Header,
    exit_status: u32,
    parent_tgid: u32,
    flags: u32,
    comm: [u8; tracer_common::COMM_LEN],
) {
    // SAFETY: per the contract, every field written lies in the first EXIT_RECORD_SHORT_LEN
    // bytes.
    unsafe {
        core::ptr::addr_of_mut!((*record).header).write(*head);
        core::ptr::addr_of_mut!((*record).exit_status).write(exit_status);
        core::ptr::addr_of_mut!((*record).flags).write(flags);
        core::ptr::addr_of_mut!((*record).parent_tgid).write(parent_tgid);
        core::ptr::addr_of_mut!((*record)._reserved).write(0);
        core::ptr::addr_of_mut!((*record).comm).write(comm);
    }
}
