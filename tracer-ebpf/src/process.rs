//! `sched:sched_process_exec` and `sched:sched_process_exit`: what the processes of followed
//! cgroups run, and how each of them ends. A process is followed while its cgroup is: no program
//! runs at fork, and nothing is kept per task.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, generated::bpf_probe_read_user_str},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    cgroup_state, feature,
    tp::{sched_process_exec, sched_process_exit},
    EnvKey, EnvValue, ExecEnvRecord, ExecRecord, ExitRecord, Kind, ENV_KEY_LEN, ENV_SCAN_LEN,
    ENV_VALUE_LEN, FILENAME_LEN,
};

use crate::{
    follow::current_followed,
    kernel::{has, Task},
    maps::{ENV_KEY, ENV_SCRATCH},
    ring::{counted, header_of, reserve, send, submit, Done},
    tp::{data_loc, field, read_kernel_str},
};

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    counted(Kind::ProcessExec, try_sched_process_exec(&ctx));
    0
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Done {
    // Every exec on the host passes here: its cgroup decides, by its mark and then the table.
    let Some((task, cgroup_id, state)) = current_followed() else {
        return Ok(());
    };
    // SAFETY: an int of sched_process_exec's record.
    let old_pid = unsafe { field::<i32>(ctx, sched_process_exec::OLD_PID) } as u32;
    let head = header_of(Kind::ProcessExec, task, cgroup_id);

    // The container's init is pid 1 of its own pid namespace, or, where it shares the host's,
    // the first exec in its cgroup: read the agent-name variable from the new image's
    // environment at either, while the process surely exists (user space prefers pid 1's).
    // SAFETY: a live map value of this program's map; a racing exec on another CPU could at
    // worst scan a second environment, which user space ignores.
    let first = unsafe {
        let first = *state == cgroup_state::NEW;
        *state = cgroup_state::STARTED;
        first
    };
    // Read once: the record carries it too.
    let (ns_level, ns_pid) = task.pid_ns();
    let found = (first || (ns_level > 0 && ns_pid == 1)) && scan_init_env();

    if found {
        // The value travels in the exec record: one ring-buffer record per container start.
        let mut entry = reserve::<ExecEnvRecord>()?;
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
                (ns_level, ns_pid),
            );
            fill_env(core::ptr::addr_of_mut!((*record).env));
        }
        submit(entry);
        return Ok(());
    }
    let mut entry = reserve::<ExecRecord>()?;
    // SAFETY: as above.
    unsafe {
        fill_exec(
            ctx,
            task,
            entry.as_mut_ptr(),
            &head,
            old_pid,
            (ns_level, ns_pid),
        )
    };
    submit(entry);
    Ok(())
}

/// Writes every field of an [`ExecRecord`] about the running task, `task`, whose pid namespace
/// depth and pid there are `ns`.
///
/// # Safety
/// `record` must be valid for writes of an `ExecRecord`.
#[inline(always)]
unsafe fn fill_exec(
    ctx: &TracePointContext,
    task: Task,
    record: *mut ExecRecord,
    head: &tracer_common::Header,
    old_pid: u32,
    (ns_level, ns_pid): (u32, u32),
) {
    // SAFETY: per the contract.
    unsafe {
        (*record).header = *head;
        (*record).old_pid = old_pid;
        (*record).ns_level = ns_level;
        (*record).ns_pid = ns_pid;
        (*record).mnt_ns = task.mnt_ns();
        (*record)._reserved = 0;
        (*record).comm = task.comm();
        let filename = core::ptr::addr_of_mut!((*record).filename).cast::<u8>();
        let from = data_loc(ctx, sched_process_exec::FILENAME);
        (*record).filename_len = read_kernel_str(filename, FILENAME_LEN as u32, from);
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
    let Some(mm) = Task::current().mm() else {
        return false;
    };
    let (mut at, end) = mm.env();
    let Some(scan) = ENV_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot, valid for the program's run.
    let buf = unsafe { core::ptr::addr_of_mut!((*scan).buf) };
    // A string longer than the buffer is read in pieces; only a piece that starts a string can
    // be the variable. The body decides with arithmetic, not branches, so that every way
    // through one string is one state for the verifier, whatever the string.
    let key_len = key_len as u64;
    let mut continuing = 0u64;
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
        // 1 ≤ n ≤ ENV_SCAN_LEN, and 1 ≤ key_len ≤ ENV_KEY_LEN: the differences below stay
        // small, so their top bit is their sign.
        let n = n as u64;
        let longer = key_len.wrapping_sub(n) >> 63; // n > key_len
        let found = (continuing ^ 1) & longer & is_zero(mismatch(buf, key));
        if found != 0 {
            // SAFETY: as above.
            unsafe {
                (*scan).key_len = key_len as u32;
                (*scan).len = (n - 1) as u32;
            }
            return true;
        }
        // `n` counts the NUL; a full buffer means the string goes on past it.
        continuing = is_zero(n ^ ENV_SCAN_LEN as u64);
        at += n - continuing;
    }
    false
}

/// 1 when `x` is 0, else 0, without a branch.
#[inline(always)]
fn is_zero(x: u64) -> u64 {
    ((x | x.wrapping_neg()) >> 63) ^ 1
}

/// The bits in which `bytes` differs from `key`'s prefix (0: it starts with it): whole words
/// compared under the key's masks, with no branch at all.
#[inline(always)]
fn mismatch(bytes: *const [u8; ENV_SCAN_LEN], key: &EnvKey) -> u64 {
    let words = bytes.cast::<u64>();
    let prefix = key.prefix.as_ptr().cast::<u64>();
    let mut diff = 0u64;
    for i in 0..ENV_KEY_LEN / 8 {
        // SAFETY: `bytes` is an 8-aligned `EnvScan::buf` of ENV_SCAN_LEN (> ENV_KEY_LEN) bytes
        // and `prefix` the 8-aligned ENV_KEY_LEN bytes of an `EnvKey` (it holds u64s), so word
        // `i` of each is inside it and aligned. (Both little-endian, as the masks are.)
        let (word, want) = unsafe {
            (
                core::ptr::read(words.add(i)),
                core::ptr::read(prefix.add(i)),
            )
        };
        diff |= (word ^ want) & key.mask[i];
    }
    diff
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
    counted(Kind::ProcessExit, try_sched_process_exit(&ctx));
    0
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Done {
    if has(feature::EXIT_GROUP_DEAD) {
        // SAFETY: `group_dead`, a bool of sched_process_exit's record on kernels that have the
        // field (checked by the loader).
        let group_dead = unsafe { field::<u8>(ctx, sched_process_exit::GROUP_DEAD) } != 0;
        if !group_dead {
            // Not the last thread of its process: the process goes on, nothing to report.
            return Ok(());
        }
    }
    // Every process exit on the host passes here: its cgroup decides, by its mark first.
    let Some((task, cgroup_id, _)) = current_followed() else {
        return Ok(());
    };
    let start = task.process_start();
    if !has(feature::EXIT_GROUP_DEAD) {
        // The last thread is the one whose exit counted the process's live threads down to 0;
        // threads that exit at the same moment can see 0 too, so the first to claim the
        // process reports it.
        if !task.group_dead() {
            return Ok(());
        }
        let key = ProcessKey {
            tgid: task.ids().1,
            _reserved: 0,
            start_ns: start,
        };
        // BPF_NOEXIST: only one thread of the process inserts it.
        if EXIT_CLAIMS.insert(key, 0, 1).is_err() {
            return Ok(());
        }
    }
    // do_exit() stores the wait status in task->exit_code before this tracepoint fires, and for
    // a group exit every thread carries the group's code.
    send(ExitRecord {
        header: header_of(Kind::ProcessExit, task, cgroup_id),
        exit_status: task.exit_code() as u32,
        _reserved: 0,
        parent_tgid: task.parent_tgid(),
        ns_level: task.pid_ns().0,
        start_ns: start,
        comm: task.comm(),
    })
}

/// A process: its id and when it started (ids are reused).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessKey {
    tgid: u32,
    _reserved: u32,
    start_ns: u64,
}

/// Processes whose exit was reported, on kernels without [`feature::EXIT_GROUP_DEAD`]: a claim
/// needs to outlive only the moments in which the process's threads exit.
#[map]
static EXIT_CLAIMS: LruHashMap<ProcessKey, u8> = LruHashMap::with_max_entries(4096, 0);
