//! Maps shared by the programs, and the small helpers every program uses: the record header,
//! ring-buffer reservation with loss accounting, and `__data_loc` string reads.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_probe_read_kernel_str,
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext, Global,
};
use tracer_common::{
    probe, task_flags, EnvKey, Header, KernelOffsets, SignalTrack, TrackedTask, ENV_SCAN_LEN,
};

/// Records for user space. The loader sets the real size (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU count of records each probe could not reserve room for, indexed by [`probe`].
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(probe::COUNT, 0);

/// Per-CPU counts of what could not be followed because its map was full: cgroups
/// (`CGROUPS`, slot 0) and tasks (`TASKS`, slot 1).
#[map]
pub static UNTRACKED: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// v2 cgroups whose processes are followed, keyed by cgroup id. Every new v2 cgroup is added at
/// mkdir (so a container's first process is never missed while user space decides), then user
/// space removes those that turn out not to be containers, and adds the containers that existed
/// before the tracer started.
#[map]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(65536, 0);

/// Tasks followed, keyed by thread id: their process and last known cgroup. Lets
/// `signal_generate`, which runs in the sender's context, recognise a tracked target and key
/// what it remembers by process. A plain (preallocated) hash rather than an LRU: every followed
/// thread's exit removes its entry, and an LRU's insert and delete take its global lists' locks,
/// which made them the costliest operations of the fork, exec and exit programs. When it is
/// full a new task is counted in `UNTRACKED` instead.
#[map]
pub static TASKS: HashMap<u32, TrackedTask> = HashMap::with_max_entries(131072, 0);

/// Signals sent to tracked processes (and OOM marks), keyed by tgid, until the process exits.
#[map]
pub static SIGNALS: LruHashMap<u32, SignalTrack> = LruHashMap::with_max_entries(32768, 0);

/// Scratch space to build a [`SignalTrack`] before inserting it: too large for the BPF stack
/// beside everything else.
#[map]
pub static SCRATCH: PerCpuArray<SignalTrack> = PerCpuArray::with_max_entries(1, 0);

/// Offsets of kernel structure fields, read from BTF by the loader.
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_exit_code: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_mm: 0,
    mm_env_start: 0,
    mm_env_end: 0,
});

/// The `NAME=` prefix of the environment variable read from a container's init (one entry,
/// written by the loader; a map rather than a global so it is read in place, not copied onto
/// the small BPF stack).
#[map]
pub static ENV_KEY: Array<EnvKey> = Array::with_max_entries(1, 0);

/// Scratch space for one environment string while scanning.
#[map]
pub static ENV_SCRATCH: PerCpuArray<[u8; ENV_SCAN_LEN]> = PerCpuArray::with_max_entries(1, 0);

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

#[inline(always)]
pub fn header(kind: u32) -> Header {
    header_in(kind, current_cgroup_id())
}

/// The header of a record about the current task, whose cgroup the caller already looked up.
#[inline(always)]
pub fn header_in(kind: u32, cgroup_id: u64) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    Header {
        kind,
        _reserved: 0,
        ts_ns: now_ns(),
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        cgroup_id,
    }
}

#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: helper without arguments, callable from any tracepoint program.
    unsafe { bpf_get_current_cgroup_id() }
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

/// Slots of `UNTRACKED`.
pub const UNTRACKED_CGROUP: u32 = 0;
pub const UNTRACKED_TASK: u32 = 1;

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
    // SAFETY: a u32 of the tracepoint's record, read directly; the offset comes from the
    // tracepoint's format, checked by the loader.
    let loc = unsafe { field::<u32>(ctx, field_offset) };
    // __data_loc: low 16 bits are the offset from the record's start, high 16 bits the length.
    let src = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
    // SAFETY: the caller guarantees `dst` holds `len` bytes; the helper bounds the copy by `len`
    // and NUL-terminates.
    let copied = unsafe { bpf_probe_read_kernel_str(dst.cast(), len, src.cast()) };
    if copied > 0 {
        (copied - 1) as u32
    } else {
        0
    }
}

/// Starts following thread `pid` of process `tgid` in cgroup `cgroup_id`.
#[inline(always)]
pub fn track_task(pid: u32, tgid: u32, cgroup_id: u64) {
    track_task_with(pid, tgid, cgroup_id, 0);
}

/// [`track_task`] keeping [`task_flags`](tracer_common::task_flags) `flags`.
#[inline(always)]
pub fn track_task_with(pid: u32, tgid: u32, cgroup_id: u64, flags: u32) {
    let task = TrackedTask {
        tgid,
        flags,
        cgroup_id,
    };
    if TASKS.insert(pid, task, 0).is_err() {
        count_untracked(UNTRACKED_TASK);
    }
}

/// Notes on the followed thread `task` (thread id `pid`, process `tgid`) and on its process's
/// leader that a [`SignalTrack`] now exists for the process, so that its exit looks it up.
#[inline(always)]
pub fn mark_signaled(task: *mut TrackedTask, pid: u32, tgid: u32) {
    // SAFETY: `task` points to a live value of `TASKS`; a racing update on another CPU can at
    // worst set the same bit.
    unsafe { (*task).flags |= task_flags::SIGNALED };
    if pid != tgid {
        if let Some(leader) = TASKS.get_ptr_mut(tgid) {
            // SAFETY: as above.
            unsafe { (*leader).flags |= task_flags::SIGNALED };
        }
    }
}

/// The [`SignalTrack`] of process `tgid`, created empty if there is none yet.
#[inline(always)]
pub fn signal_track(tgid: u32) -> Option<*mut SignalTrack> {
    if let Some(track) = SIGNALS.get_ptr_mut(tgid) {
        return Some(track);
    }
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, valid for the program's run and used by nothing else
    // while the program runs (programs on one CPU do not nest for tracepoints).
    unsafe {
        core::ptr::write_bytes(scratch, 0, 1);
        // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
        let _ = SIGNALS.insert(tgid, &*scratch, 1);
    }
    SIGNALS.get_ptr_mut(tgid)
}
