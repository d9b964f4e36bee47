//! `syscalls:sys_enter_openat` / `sys_exit_openat` in followed cgroups, for paths under the
//! configured device prefixes (GPU device nodes): which container opened which device, and
//! whether it could.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user_str},
    macros::{btf_map, map, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
};
use tracer_common::{
    feature, kind, probe, untracked, DeviceOpenRecord, DevicePrefix, DEVICE_PATH_LEN,
    DEVICE_PREFIXES, DEVICE_PREFIX_LEN,
};

use crate::{
    kernel::{has, Task},
    state::{count_untracked, current_followed, header_of, reserve, wakeup, TaskStorage},
};

/// The prefixes, written by the loader.
#[map]
pub static DEVICE_PREFIX: Array<DevicePrefix> = Array::with_max_entries(DEVICE_PREFIXES, 0);

/// The path of an open between its entry and exit, beside the thread that makes it (freed with
/// the thread if it dies inside the call). A thread without local storage has none, so the
/// exit of every open outside the containers costs one load. Only on kernels with
/// [`feature::TASK_STORAGE`]; elsewhere the loader puts an inert map in its place.
#[btf_map]
static DEVICE_PENDING: TaskStorage<[u8; DEVICE_PATH_LEN]> = TaskStorage::new();

/// The same on kernels without task storage, keyed by thread id (a thread makes one system
/// call at a time; an entry a thread left by dying inside the call is overwritten by the next
/// thread with its id, or stays until then).
#[map]
static DEVICE_PENDING_BY_TID: HashMap<u32, [u8; DEVICE_PATH_LEN]> =
    HashMap::with_max_entries(1024, 0);

#[map]
static DEVICE_SCRATCH: PerCpuArray<[u8; DEVICE_PATH_LEN]> = PerCpuArray::with_max_entries(1, 0);

const FILENAME: usize = 24;
const RET: usize = 16;

#[inline(always)]
fn matches(path: &[u8; DEVICE_PATH_LEN], prefix: &DevicePrefix) -> bool {
    let len = prefix.len as usize;
    if len == 0 || len > DEVICE_PREFIX_LEN {
        return false;
    }
    for (i, (byte, want)) in path.iter().zip(&prefix.prefix).enumerate() {
        if i >= len {
            return true;
        }
        if byte != want {
            return false;
        }
    }
    true
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // Every open on the host passes here: the cgroup test comes first, and outside the
    // containers it is one load past the cgroup (with cgroup storage).
    let Some((task, _, _)) = current_followed() else {
        return 0;
    };
    let Some(scratch) = DEVICE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot; the helper bounds the copy by its size and reads the
    // caller's memory safely.
    let path = unsafe {
        core::ptr::write_bytes(scratch, 0, 1);
        let Ok(filename) = ctx.read_at::<u64>(FILENAME) else {
            return 0;
        };
        if bpf_probe_read_user_str(scratch.cast(), DEVICE_PATH_LEN as u32, filename as *const _)
            <= 0
        {
            return 0;
        }
        &*scratch
    };
    for i in 0..DEVICE_PREFIXES {
        if let Some(prefix) = DEVICE_PREFIX.get(i) {
            if matches(path, prefix) {
                if !has(feature::TASK_STORAGE) {
                    let tid = bpf_get_current_pid_tgid() as u32;
                    if DEVICE_PENDING_BY_TID.insert(tid, path, 0).is_err() {
                        count_untracked(untracked::DEVICE_OPEN);
                    }
                    return 0;
                }
                // SAFETY: `scratch` is this CPU's slot (`path` is not used again), a whole value
                // the helper copies when it creates the entry; an entry left by an earlier call
                // is overwritten.
                unsafe {
                    match DEVICE_PENDING.get_or_insert(task, &mut *scratch) {
                        Some(pending) => core::ptr::copy_nonoverlapping(scratch, pending, 1),
                        None => count_untracked(untracked::DEVICE_OPEN),
                    }
                }
                return 0;
            }
        }
    }
    0
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    let task = Task::current();
    let by_tid = !has(feature::TASK_STORAGE);
    let tid = bpf_get_current_pid_tgid() as u32;
    let pending = if by_tid {
        DEVICE_PENDING_BY_TID.get_ptr(tid)
    } else {
        DEVICE_PENDING.get(task).map(|p| p.cast_const())
    };
    let Some(path) = pending else {
        return 0;
    };
    // SAFETY: fixed offset of sys_exit_openat's return value, read through bpf_probe_read.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(0);
    if let Some(mut entry) = reserve::<DeviceOpenRecord>(probe::DEVICE_OPEN) {
        let record = entry.as_mut_ptr();
        // SAFETY: reserved ring-buffer space of the record's size, filled before submit from the
        // pending map value, live for this program's run.
        unsafe {
            (*record).header = header_of(kind::DEVICE_OPEN, task, task.cgroup().id());
            (*record).ret = ret;
            (*record).comm = task.comm();
            core::ptr::copy_nonoverlapping(path, core::ptr::addr_of_mut!((*record).path), 1);
        }
        entry.submit(wakeup::<DeviceOpenRecord>());
    }
    if by_tid {
        let _ = DEVICE_PENDING_BY_TID.remove(tid);
    } else {
        DEVICE_PENDING.delete(task);
    }
    0
}
