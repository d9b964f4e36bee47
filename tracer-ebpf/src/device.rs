//! `syscalls:sys_enter_openat` / `sys_exit_openat` in followed cgroups, for paths under the
//! configured device prefixes (GPU device nodes): which container opened which device, and
//! whether it could.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_probe_read_user_str},
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
};
use tracer_common::{
    kind, probe, DeviceOpenRecord, DevicePrefix, DEVICE_PATH_LEN, DEVICE_PREFIXES,
    DEVICE_PREFIX_LEN,
};

use crate::state::{current_cgroup_id, header, is_tracked_cgroup, reserve, wakeup};

/// The prefixes, written by the loader.
#[map]
pub static DEVICE_PREFIX: Array<DevicePrefix> = Array::with_max_entries(DEVICE_PREFIXES, 0);

/// Paths of opens between entry and exit, keyed by thread id.
#[map]
static DEVICE_PENDING: HashMap<u32, [u8; DEVICE_PATH_LEN]> = HashMap::with_max_entries(4096, 0);

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
    for i in 0..DEVICE_PREFIX_LEN {
        if i >= len {
            return true;
        }
        if path[i] != prefix.prefix[i] {
            return false;
        }
    }
    true
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // Every open on the host passes here: the cgroup test comes first and is one lookup.
    if !is_tracked_cgroup(current_cgroup_id()) {
        return 0;
    }
    let Some(path) = DEVICE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot; the helper bounds the copy by its size and reads the
    // caller's memory safely.
    let path = unsafe {
        core::ptr::write_bytes(path, 0, 1);
        let Ok(filename) = ctx.read_at::<u64>(FILENAME) else {
            return 0;
        };
        if bpf_probe_read_user_str(path.cast(), DEVICE_PATH_LEN as u32, filename as *const _) <= 0 {
            return 0;
        }
        &*path
    };
    for i in 0..DEVICE_PREFIXES {
        if let Some(prefix) = DEVICE_PREFIX.get(i) {
            if matches(path, prefix) {
                let tid = bpf_get_current_pid_tgid() as u32;
                let _ = DEVICE_PENDING.insert(tid, path, 0);
                return 0;
            }
        }
    }
    0
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(path) = DEVICE_PENDING.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: fixed offset of sys_exit_openat's return value, read through bpf_probe_read.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(0);
    if let Some(mut entry) = reserve::<DeviceOpenRecord>(probe::DEVICE_OPEN) {
        let record = entry.as_mut_ptr();
        // SAFETY: reserved ring-buffer space of the record's size, filled before submit from the
        // pending map value, live for this program's run.
        unsafe {
            (*record).header = header(kind::DEVICE_OPEN);
            (*record).ret = ret;
            (*record).comm = bpf_get_current_comm().unwrap_or_default();
            core::ptr::copy_nonoverlapping(path, core::ptr::addr_of_mut!((*record).path), 1);
        }
        entry.submit(wakeup::<DeviceOpenRecord>());
    }
    let _ = DEVICE_PENDING.remove(tid);
    0
}
