//! The mount system calls (`syscalls:sys_enter_*` / `sys_exit_*` of mount, umount2,
//! mount_setattr, open_tree, move_mount, fsmount, fsconfig) made in followed cgroups: the entry
//! keeps the arguments (strings read from the caller's memory while they are valid) in a
//! per-thread pending entry, the exit adds the result and the duration and emits one record.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::bpf_probe_read_user_str,
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use tracer_common::{
    mount_call, tp::syscalls, Kind, Miss, MountRecord, MOUNT_PATH_LEN, MOUNT_TYPE_LEN,
};

use crate::{
    follow::current_followed,
    ring::{counted, header, now_ns, reserve, submit, Done},
};

/// Calls between entry and exit, keyed by thread id (a thread makes one system call at a time).
#[map]
static MOUNT_PENDING: HashMap<u32, MountRecord> = HashMap::with_max_entries(4096, 0);

/// Room to build a pending entry: larger than the BPF stack allows.
#[map]
static MOUNT_SCRATCH: PerCpuArray<MountRecord> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: reads one argument slot of the record through bpf_probe_read; the slots each
    // system call has are checked against its format file by the loader.
    unsafe { ctx.read_at::<u64>(syscalls::arg_offset(i)) }.unwrap_or(0)
}

/// Copies the user string at `src` into `dst` (`len` bytes, NUL-terminated); empty on failure.
#[inline(always)]
fn user_str(dst: *mut u8, len: usize, src: u64) {
    if src == 0 {
        return;
    }
    // SAFETY: `dst` points into this CPU's scratch entry with `len` bytes of room; the helper
    // bounds the copy and reads the caller's memory safely.
    unsafe {
        bpf_probe_read_user_str(dst.cast(), len as u32, src as *const core::ffi::c_void);
    }
}

/// A zeroed scratch entry for `call`, if the caller is in a followed cgroup.
#[inline(always)]
fn begin(call: u32) -> Option<*mut MountRecord> {
    // The clock first: the duration should be the call's, not this program's.
    let start = now_ns();
    current_followed()?;
    let entry = MOUNT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, used by nothing else while the program runs.
    unsafe {
        core::ptr::write_bytes(entry, 0, 1);
        (*entry).call = call;
        (*entry).start_ns = start;
    }
    Some(entry)
}

/// Keeps the filled scratch entry until the call's exit (counted as missed when the table of
/// calls in flight is full).
#[inline(always)]
fn keep(entry: *mut MountRecord) {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: `entry` is the scratch slot filled by the caller.
    // By reference: a copy of the value would not fit the 512-byte stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let kept = MOUNT_PENDING
        .insert(tid, unsafe { &*entry }, 0)
        .map_err(|_| Miss::TableFull);
    counted(Kind::Mount, kept);
}

macro_rules! source {
    ($e:expr) => {
        // SAFETY: a field of the scratch entry `$e`.
        unsafe { core::ptr::addr_of_mut!((*$e).source).cast::<u8>() }
    };
}
macro_rules! target {
    ($e:expr) => {
        // SAFETY: a field of the scratch entry `$e`.
        unsafe { core::ptr::addr_of_mut!((*$e).target).cast::<u8>() }
    };
}
macro_rules! fstype {
    ($e:expr) => {
        // SAFETY: a field of the scratch entry `$e`.
        unsafe { core::ptr::addr_of_mut!((*$e).fstype).cast::<u8>() }
    };
}

#[tracepoint]
pub fn sys_enter_mount(ctx: TracePointContext) -> u32 {
    if let Some(e) = begin(mount_call::MOUNT) {
        user_str(source!(e), MOUNT_PATH_LEN, arg(&ctx, 0));
        user_str(target!(e), MOUNT_PATH_LEN, arg(&ctx, 1));
        user_str(fstype!(e), MOUNT_TYPE_LEN, arg(&ctx, 2));
        // SAFETY: a field of the scratch entry.
        unsafe { (*e).flags = arg(&ctx, 3) };
        keep(e);
    }
    0
}

#[tracepoint]
pub fn sys_enter_umount(ctx: TracePointContext) -> u32 {
    if let Some(e) = begin(mount_call::UMOUNT) {
        user_str(target!(e), MOUNT_PATH_LEN, arg(&ctx, 0));
        // SAFETY: a field of the scratch entry.
        unsafe { (*e).flags = arg(&ctx, 1) };
        keep(e);
    }
    0
}

/// `struct mount_attr`'s first two fields.
#[repr(C)]
#[derive(Clone, Copy)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
}

#[tracepoint]
pub fn sys_enter_mount_setattr(ctx: TracePointContext) -> u32 {
    if let Some(e) = begin(mount_call::MOUNT_SETATTR) {
        user_str(target!(e), MOUNT_PATH_LEN, arg(&ctx, 1));
        let uattr = arg(&ctx, 3);
        // SAFETY: reads the caller's struct mount_attr through bpf_probe_read_user; the scratch
        // entry's fields are written in place.
        unsafe {
            (*e).fd_from = arg(&ctx, 0) as i32;
            (*e).flags = arg(&ctx, 2);
            if uattr != 0 {
                if let Ok(attr) = bpf_probe_read_user(uattr as *const MountAttr) {
                    (*e).attr_set = attr.attr_set;
                    (*e).attr_clr = attr.attr_clr;
                }
            }
        }
        keep(e);
    }
    0
}

#[tracepoint]
pub fn sys_enter_open_tree(ctx: TracePointContext) -> u32 {
    if let Some(e) = begin(mount_call::OPEN_TREE) {
        user_str(source!(e), MOUNT_PATH_LEN, arg(&ctx, 1));
        // SAFETY: fields of the scratch entry.
        unsafe {
            (*e).fd_from = arg(&ctx, 0) as i32;
            (*e).flags = arg(&ctx, 2);
        }
        keep(e);
    }
    0
}

#[tracepoint]
pub fn sys_enter_move_mount(ctx: TracePointContext) -> u32 {
    if let Some(e) = begin(mount_call::MOVE_MOUNT) {
        user_str(source!(e), MOUNT_PATH_LEN, arg(&ctx, 1));
        user_str(target!(e), MOUNT_PATH_LEN, arg(&ctx, 3));
        // SAFETY: fields of the scratch entry.
        unsafe {
            (*e).fd_from = arg(&ctx, 0) as i32;
            (*e).fd_to = arg(&ctx, 2) as i32;
            (*e).flags = arg(&ctx, 4);
        }
        keep(e);
    }
    0
}

#[tracepoint]
pub fn sys_enter_fsmount(ctx: TracePointContext) -> u32 {
    if let Some(e) = begin(mount_call::FSMOUNT) {
        // SAFETY: fields of the scratch entry.
        unsafe {
            (*e).fd_from = arg(&ctx, 0) as i32;
            (*e).flags = arg(&ctx, 1);
            (*e).attr_set = arg(&ctx, 2);
        }
        keep(e);
    }
    0
}

/// `FSCONFIG_SET_STRING`: the value is a string.
const FSCONFIG_SET_STRING: u64 = 1;

#[tracepoint]
pub fn sys_enter_fsconfig(ctx: TracePointContext) -> u32 {
    if let Some(e) = begin(mount_call::FSCONFIG) {
        let cmd = arg(&ctx, 1);
        user_str(fstype!(e), MOUNT_TYPE_LEN, arg(&ctx, 2));
        if cmd == FSCONFIG_SET_STRING {
            user_str(source!(e), MOUNT_PATH_LEN, arg(&ctx, 3));
        }
        // SAFETY: fields of the scratch entry.
        unsafe {
            (*e).fd_from = arg(&ctx, 0) as i32;
            (*e).flags = cmd;
            (*e).attr_set = arg(&ctx, 4);
        }
        keep(e);
    }
    0
}

/// The exit of any of the calls: result, duration, one record. The duration runs from the first
/// instruction of the entry program to the header's time here, after the record is filled: the
/// time the caller spent in the call, tracing included.
#[inline(always)]
fn finish(ctx: &TracePointContext) -> Done {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(pending) = MOUNT_PENDING.get_ptr(tid) else {
        return Ok(());
    };
    // SAFETY: sys_exit_*'s return value, read through bpf_probe_read.
    let ret = unsafe { ctx.read_at::<i64>(syscalls::RET.offset) }.unwrap_or(0);
    let done = reserve::<MountRecord>().map(|mut entry| {
        let record = entry.as_mut_ptr();
        // SAFETY: `record` is reserved ring-buffer space of the record's size, filled from the
        // pending map value (live for this program's run) before submit.
        unsafe {
            core::ptr::copy_nonoverlapping(pending, record, 1);
            (*record).header = header(Kind::Mount);
            (*record).ret = ret;
            (*record).comm = bpf_get_current_comm().unwrap_or_default();
        }
        submit(entry);
    });
    // The call is over, reported or not.
    let _ = MOUNT_PENDING.remove(tid);
    done
}

macro_rules! exit_program {
    ($name:ident) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            counted(Kind::Mount, finish(&ctx));
            0
        }
    };
}

exit_program!(sys_exit_mount);
exit_program!(sys_exit_umount);
exit_program!(sys_exit_mount_setattr);
exit_program!(sys_exit_open_tree);
exit_program!(sys_exit_move_mount);
exit_program!(sys_exit_fsmount);
exit_program!(sys_exit_fsconfig);
