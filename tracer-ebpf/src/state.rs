//! Maps shared by the programs, and the small helpers every program uses: the record header,
//! ring-buffer reservation with loss accounting, and `__data_loc` string reads.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_kernel_str},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext, Global,
};
use tracer_common::{probe, untracked, EnvKey, Header, ENV_SCAN_LEN};

use crate::kernel::{Cgroup, Task};

/// Records for user space. The loader sets the real size (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU count of records each probe could not reserve room for, indexed by [`probe`].
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(probe::COUNT, 0);

/// Per-CPU counts of what could not be followed, by [`untracked`] slot: cgroups because
/// `CGROUPS` was full.
#[map]
pub static UNTRACKED: PerCpuArray<u64> = PerCpuArray::with_max_entries(untracked::COUNT, 0);

/// v2 cgroups whose processes are followed, keyed by cgroup id. Every new v2 cgroup is added at
/// mkdir (so a container's first process is never missed while user space decides), then user
/// space removes those that turn out not to be containers, and adds the containers that existed
/// before the tracer started.
#[map]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(65536, 0);

/// If `cgroup` is followed: its id and its `CGROUPS` state.
#[inline(always)]
pub fn followed(cgroup: Cgroup) -> Option<(u64, *mut u32)> {
    let id = cgroup.id();
    CGROUPS.get_ptr_mut(id).map(|state| (id, state))
}

/// Whether the running task's cgroup is followed.
#[inline(always)]
pub fn current_followed() -> Option<(Task, u64, *mut u32)> {
    let task = Task::current();
    let (id, state) = followed(task.cgroup())?;
    Some((task, id, state))
}

/// The `NAME=` prefix of the environment variable read from a container's init (one entry,
/// written by the loader; a map rather than a global so it is read in place, not copied onto
/// the small BPF stack).
#[map]
pub static ENV_KEY: Array<EnvKey> = Array::with_max_entries(1, 0);

/// One environment string while scanning, and where the variable's value is in it once found.
/// (8-aligned: the scan compares `buf` a word at a time.)
#[repr(C, align(8))]
pub struct EnvScan {
    /// Bytes of the `NAME=` prefix, then of the whole string (without its NUL), in `buf`.
    pub key_len: u32,
    pub len: u32,
    pub buf: [u8; ENV_SCAN_LEN],
}

/// This CPU's [`EnvScan`].
#[map]
pub static ENV_SCRATCH: PerCpuArray<EnvScan> = PerCpuArray::with_max_entries(1, 0);

/// Reads a `T` at `offset` of a tracepoint's record directly (no helper call): for the hot
/// programs' first fields, with offsets checked by the loader against the format files.
///
/// # Safety
/// `offset` must be a field of type `T` inside the tracepoint's record, aligned for `T`.
#[inline(always)]
pub unsafe fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: per the contract, the read stays inside the record; the verifier checks the
    // access against the tracepoint's record size.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// The header of a record about the running task.
#[inline(always)]
pub fn header(kind: u32) -> Header {
    let task = Task::current();
    header_of(kind, task, task.cgroup().id())
}

/// The header of a record about `task`, the running task, whose cgroup the caller already
/// knows.
#[inline(always)]
pub fn header_of(kind: u32, task: Task, cgroup_id: u64) -> Header {
    let (pid, tgid) = task.ids();
    Header {
        kind,
        _reserved: 0,
        ts_ns: now_ns(),
        pid,
        tgid,
        cgroup_id,
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments, callable from any tracepoint program.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn is_tracked_cgroup(id: u64) -> bool {
    CGROUPS.get_ptr(id).is_some()
}

/// Counts a record `probe` could not write. Per-CPU, so a plain increment is race-free.
#[inline(always)]
pub fn count_lost(probe: u32) {
    if let Some(counter) = LOST.get_ptr_mut(probe) {
        // SAFETY: the pointer is this CPU's slot of a map value, valid for the program's run.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_untracked(what: u32) {
    if let Some(counter) = UNTRACKED.get_ptr_mut(what) {
        // SAFETY: as in `count_lost`.
        unsafe { *counter += 1 };
    }
}

/// Unread bytes past which a record wakes the reader; set by the loader from the ring size.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: Global<u64> = Global::new(64 << 10);

/// Flags for submitting a record of `T`. Waking the reader costs an interrupt (and, in a VM, an
/// exit) in the context of whatever task the record is about; so records wait for the reader's
/// next timed poll (every 100 ms), and only the record that brings the waiting data past
/// `WAKEUP_BYTES` wakes it, once.
#[inline(always)]
pub fn wakeup<T>() -> u64 {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    // The waiting data includes this record, reserved but not yet submitted (plus its 8-byte
    // ring-buffer header).
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    let threshold = WAKEUP_BYTES.load();
    let this = (core::mem::size_of::<T>() + 8) as u64;
    if waiting >= threshold && waiting < threshold + this {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Reserves room for a `T` in the ring buffer; on failure counts the loss against `probe`.
#[inline(always)]
pub fn reserve<T: 'static>(probe: u32) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_lost(probe);
    }
    entry
}

/// Reads the `__data_loc` string field at `field_offset` of a tracepoint's record into `dst`
/// (`len` bytes). Returns the bytes copied without the NUL, 0 on failure.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
#[inline(always)]
pub unsafe fn read_data_loc_str(
    ctx: &TracePointContext,
    field_offset: usize,
    dst: *mut u8,
    len: u32,
) -> u32 {
    // SAFETY: per the contract.
    unsafe { read_kernel_str(dst, len, data_loc(ctx, field_offset)) }
}

/// Where the `__data_loc` field at `field_offset` of a tracepoint's record points: its string,
/// inside the record.
///
/// # Safety
/// `field_offset` must be a `__data_loc` field of the tracepoint's record.
#[inline(always)]
pub unsafe fn data_loc(ctx: &TracePointContext, field_offset: usize) -> *const u8 {
    // SAFETY: a u32 of the tracepoint's record, read directly; the offset comes from the
    // tracepoint's format, checked by the loader.
    let loc = unsafe { field::<u32>(ctx, field_offset) };
    // __data_loc: low 16 bits are the offset from the record's start, high 16 bits the length.
    (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize)
}

/// Copies the kernel string at `src` into `dst` (`len` bytes, NUL-terminated). Returns the
/// bytes copied without the NUL, 0 on failure.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
#[inline(always)]
pub unsafe fn read_kernel_str(dst: *mut u8, len: u32, src: *const u8) -> u32 {
    // SAFETY: the caller guarantees `dst` holds `len` bytes; the helper bounds the copy by `len`,
    // reads kernel memory safely and NUL-terminates.
    let copied = unsafe { bpf_probe_read_kernel_str(dst.cast(), len, src.cast()) };
    if copied > 0 {
        (copied - 1) as u32
    } else {
        0
    }
}
