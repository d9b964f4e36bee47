//! Maps shared by the programs, and the small helpers every program uses: the record header,
//! ring-buffer reservation with loss accounting, and `__data_loc` string reads.

use aya_ebpf::{
    bindings::{bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, cgroup, task_struct, BPF_F_NO_PREALLOC},
    btf_maps::CgrpStorage,
    helpers::{
        bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_kernel_str, bpf_task_storage_delete,
            bpf_task_storage_get,
        },
    },
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext, Global,
};
use tracer_common::{probe, untracked, EnvKey, Header, SignalTrack, ENV_SCAN_LEN};

/// Records for user space. The loader sets the real size (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU count of records each probe could not reserve room for, indexed by [`probe`].
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(probe::COUNT, 0);

/// Per-CPU counts of what could not be followed, by [`untracked`] slot: cgroups because
/// `CGROUPS` was full or their mark could not be allocated, device opens because their
/// `DEVICE_PENDING` entry could not be.
#[map]
pub static UNTRACKED: PerCpuArray<u64> = PerCpuArray::with_max_entries(untracked::COUNT, 0);

/// v2 cgroups whose processes are followed, keyed by cgroup id. Every new v2 cgroup is added at
/// mkdir (so a container's first process is never missed while user space decides), then user
/// space removes those that turn out not to be containers, and adds the containers that existed
/// before the tracer started.
#[map]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(65536, 0);

/// A mark beside each cgroup that `CGROUPS` holds (set at mkdir by `cgroup_mkdir`, and by the
/// loader for the cgroups it adds), so that the hot programs' test "is the running task's
/// cgroup followed?" is, for a cgroup outside the containers, one load: a cgroup that no
/// cgroup-storage map has a value for has no local storage at all. A mark is only a hint: the
/// table decides. A cgroup the table no longer holds (user space found it is no container)
/// loses its mark the next time it is asked about.
#[btf_map]
pub static FOLLOWED: CgrpStorage<u64> = CgrpStorage::new();

/// A kernel task (`struct task_struct *`) as the verifier knows it: from
/// `bpf_get_current_task_btf()` or a BTF tracepoint's argument.
pub type Task = *mut task_struct;

/// A task-local storage map (`BPF_MAP_TYPE_TASK_STORAGE`), in the BTF form loaders read from
/// the `.maps` section (aya-ebpf 0.2 defines cgroup, inode and socket storage, not this one).
/// Its values live beside each task, are found from the task in a few pointer steps instead of
/// a hash-bucket walk, and are freed by the kernel when the task is.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders that only describe the map in BTF; they are never read.
unsafe impl<T> Sync for TaskStorage<T> {}

/// `BPF_LOCAL_STORAGE_GET_F_CREATE`.
const STORAGE_CREATE: u64 = 1;

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        TaskStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut core::ffi::c_void {
        (self as *const Self).cast_mut().cast()
    }

    /// `task`'s value, if it has one.
    #[inline(always)]
    pub fn get(&self, task: Task) -> Option<*mut T> {
        // A task that no task-storage map has a value for has no local storage at all (the
        // kernel clears the pointer when its last value goes): one load tells, where the helper
        // costs a call and its recursion guard. That is the fast path of the exit of every
        // open on the node that is not a device open (unless another tool keeps task storage).
        // SAFETY: `task` is a BTF task pointer and `bpf_storage` a pointer field of it, read
        // whole.
        if unsafe { btf_read::<u64, _>(task, &TASK_BPF_STORAGE) } == 0 {
            return None;
        }
        // SAFETY: the helper checks `task` (a BTF task pointer, or null) and returns null when
        // there is no value; a value stays valid for the program's run.
        let value = unsafe { bpf_task_storage_get(self.as_ptr(), task, core::ptr::null_mut(), 0) };
        (!value.is_null()).then_some(value.cast())
    }

    /// `task`'s value, created as a copy of `init` if it has none. None when the kernel cannot
    /// allocate it.
    #[inline(always)]
    pub fn get_or_insert(&self, task: Task, init: &mut T) -> Option<*mut T> {
        // SAFETY: as in `get`; `init` is a whole value on the stack, copied by the helper.
        let value = unsafe {
            bpf_task_storage_get(self.as_ptr(), task, (init as *mut T).cast(), STORAGE_CREATE)
        };
        (!value.is_null()).then_some(value.cast())
    }

    /// Forgets `task`'s value.
    #[inline(always)]
    pub fn delete(&self, task: Task) {
        // SAFETY: as in `get`; a missing value is not an error worth reporting.
        let _ = unsafe { bpf_task_storage_delete(self.as_ptr(), task) };
    }
}

/// Declares the read-only `u64` globals of [`tracer_common::BTF_FIELDS`]: field offsets the
/// loader sets from the kernel's BTF. Being read-only, their values are constants to the
/// verifier, which then checks each direct load from a BTF pointer against the field it reads.
macro_rules! btf_offsets {
    ($($name:ident),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            pub static $name: Global<u64> = Global::new(0);
        )*
    };
}

btf_offsets!(
    TASK_PID,
    TASK_TGID,
    TASK_COMM,
    TASK_GROUP_LEADER,
    TASK_EXIT_CODE,
    TASK_REAL_PARENT,
    TASK_START_TIME,
    TASK_CGROUPS,
    CSS_SET_DFL_CGRP,
    CGROUP_KN,
    CGROUP_ROOT,
    CGROUP_LEVEL,
    CGROUP_BPF_STORAGE,
    CGROUP_ROOT_HIERARCHY_ID,
    KERNFS_NODE_ID,
    SIGINFO_CODE,
    TASK_MM,
    TASK_BPF_STORAGE,
    MM_ENV_START,
    MM_ENV_END,
    MM_TOTAL_VM,
    // rss_stat[MM_ANONPAGES].count in mm_struct.
    MM_ANON_RSS,
    // Not an offset: log2 of the page size in KiB.
    PAGE_KB_SHIFT,
);

/// Reads the `T` at `offset` (one of the globals above) of the kernel object `base`, a BTF
/// pointer (a BTF tracepoint's argument, the current task, or a pointer read this way): one
/// load, which the verifier checks against the kernel's BTF and the JIT guards (a faulting
/// address reads as 0).
///
/// # Safety
/// `base` must be a BTF pointer to the structure `offset` belongs to, and `T` the field's type
/// (or a part of it), so that the address is aligned for `T`. (A pointer must be read whole, by
/// one load, for the verifier to know what it points to.)
#[inline(always)]
pub unsafe fn btf_read<T: Copy, B>(base: *const B, offset: &Global<u64>) -> T {
    // SAFETY: per the contract; the verifier refuses any load that does not match the BTF.
    unsafe { core::ptr::read((base as *const u8).wrapping_add(offset.load() as usize) as *const T) }
}

/// The leader of `task`'s process, as a BTF pointer (task storage wants one; a pointer read
/// with `bpf_probe_read_kernel` would not do).
///
/// # Safety
/// `task` must be a BTF task pointer (the current task or a tracepoint's task argument).
#[inline(always)]
pub unsafe fn group_leader(task: Task) -> Task {
    // SAFETY: per the contract; `group_leader` is a task pointer field.
    unsafe { btf_read(task, &TASK_GROUP_LEADER) }
}

/// The v2 (default hierarchy) cgroup of `task`: task->cgroups->dfl_cgrp, a BTF
/// `struct cgroup *`.
///
/// # Safety
/// As for [`group_leader`].
#[inline(always)]
pub unsafe fn task_cgroup(task: Task) -> *const u8 {
    // SAFETY: per the contract; each pointer is read from a field of its BTF type and read
    // from as such.
    unsafe {
        let cset: *const u8 = btf_read(task, &TASK_CGROUPS);
        btf_read(cset, &CSS_SET_DFL_CGRP)
    }
}

/// The v2 (default hierarchy) cgroup id of `task`: task->cgroups->dfl_cgrp->kn->id.
///
/// # Safety
/// As for [`group_leader`].
#[inline(always)]
pub unsafe fn task_cgroup_id(task: Task) -> u64 {
    // SAFETY: per the contract.
    unsafe { cgroup_id(task_cgroup(task)) }
}

/// If `cgroup` is followed: its id and its `CGROUPS` state. A cgroup without local storage
/// (every cgroup outside the containers, unless another tool keeps cgroup storage) is told
/// apart by one load, without the table's lookup.
///
/// # Safety
/// `cgroup` must be a BTF `struct cgroup *` (a tracepoint's argument, or read as such).
#[inline(always)]
pub unsafe fn followed_cgroup(cgroup: *const u8) -> Option<(u64, *mut u32)> {
    // SAFETY: per the contract; `bpf_cgrp_storage` is a pointer field of the cgroup, read whole.
    if unsafe { btf_read::<u64, _>(cgroup, &CGROUP_BPF_STORAGE) } == 0 {
        return None;
    }
    // SAFETY: per the contract.
    let id = unsafe { cgroup_id(cgroup) };
    match CGROUPS.get_ptr_mut(id) {
        Some(state) => Some((id, state)),
        None => {
            // Marked, but no longer followed (or the storage is another tool's): drop the mark,
            // so that the next ask is one load again.
            // SAFETY: the helper checks `cgroup`, a BTF cgroup pointer; deleting a missing
            // value is a harmless error.
            let _ = unsafe { FOLLOWED.delete(cgroup.cast_mut().cast::<cgroup>()) };
            None
        }
    }
}

/// Marks `cgroup` as followed (see [`FOLLOWED`]); false if the kernel could not allocate the
/// mark.
///
/// # Safety
/// As for [`followed_cgroup`].
#[inline(always)]
pub unsafe fn mark_followed(cgroup: *const u8) -> bool {
    let mut mark = 1u64;
    // SAFETY: per the contract; the helper checks the pointer and copies `mark`.
    let value = unsafe {
        FOLLOWED.get_or_insert_ptr_mut(cgroup.cast_mut().cast::<cgroup>(), Some(&mut mark))
    };
    !value.is_null()
}

/// The id of `cgroup`: cgroup->kn->id.
///
/// # Safety
/// `cgroup` must be a BTF `struct cgroup *` (a tracepoint's argument, or read as such).
#[inline(always)]
pub unsafe fn cgroup_id(cgroup: *const u8) -> u64 {
    // SAFETY: per the contract; `kn` is a kernfs_node pointer, `id` a u64 of it.
    unsafe {
        let kn: *const u8 = btf_read(cgroup, &CGROUP_KN);
        btf_read(kn, &KERNFS_NODE_ID)
    }
}

/// Thread id and process id of `task`.
///
/// # Safety
/// As for [`group_leader`].
#[inline(always)]
pub unsafe fn task_ids(task: Task) -> (u32, u32) {
    // SAFETY: per the contract; `pid` and `tgid` are pid_t fields of the task.
    unsafe {
        (
            btf_read::<i32, _>(task, &TASK_PID) as u32,
            btf_read::<i32, _>(task, &TASK_TGID) as u32,
        )
    }
}

/// The comm of `task`.
///
/// # Safety
/// As for [`group_leader`].
#[inline(always)]
pub unsafe fn task_comm(task: Task) -> [u8; tracer_common::COMM_LEN] {
    // SAFETY: per the contract; `comm` is a char[16] field of the task.
    unsafe { btf_read(task, &TASK_COMM) }
}

/// The running task, as a BTF pointer (for task storage).
#[inline(always)]
pub fn current_task() -> Task {
    // SAFETY: helper without arguments, callable from any tracing program.
    unsafe { bpf_get_current_task_btf() }
}

/// Signals sent to tracked processes (and OOM marks), keyed by tgid, until the process exits.
#[map]
pub static SIGNALS: LruHashMap<u32, SignalTrack> = LruHashMap::with_max_entries(32768, 0);

/// Scratch space to build a [`SignalTrack`] before inserting it: too large for the BPF stack
/// beside everything else.
#[map]
pub static SCRATCH: PerCpuArray<SignalTrack> = PerCpuArray::with_max_entries(1, 0);

/// The `NAME=` prefix of the environment variable read from a container's init (one entry,
/// written by the loader; a map rather than a global so it is read in place, not copied onto
/// the small BPF stack).
#[map]
pub static ENV_KEY: Array<EnvKey> = Array::with_max_entries(1, 0);

/// One environment string while scanning, and where the variable's value is in it once found.
#[repr(C)]
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

/// The header of a record about the running task. (Its ids and cgroup are read from the task
/// by typed loads: one helper call where there were three.)
#[inline(always)]
pub fn header(kind: u32) -> Header {
    // SAFETY: `current_task()` is the running task's BTF pointer.
    unsafe { header_for(kind, current_task()) }
}

/// The header of a record about `task`, the running task.
///
/// # Safety
/// `task` must be the running task's BTF pointer ([`current_task`]).
#[inline(always)]
pub unsafe fn header_for(kind: u32, task: Task) -> Header {
    // SAFETY: per the contract.
    unsafe { header_of(kind, task, task_cgroup_id(task)) }
}

/// The header of a record about `task`, the running task, whose cgroup the caller already
/// knows.
///
/// # Safety
/// `task` must be the running task's BTF pointer ([`current_task`]).
#[inline(always)]
pub unsafe fn header_of(kind: u32, task: Task, cgroup_id: u64) -> Header {
    // SAFETY: per the contract.
    let (pid, tgid) = unsafe { task_ids(task) };
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

/// The [`SignalTrack`] of process `tgid`, which started at `start_ns`: created empty if there is
/// none yet, emptied if the one there was left by an earlier process with the same tgid.
#[inline(always)]
pub fn signal_track(tgid: u32, start_ns: u64) -> Option<*mut SignalTrack> {
    if let Some(track) = SIGNALS.get_ptr_mut(tgid) {
        // SAFETY: a live map value, valid for the program's run.
        unsafe {
            if (*track).start_ns != start_ns {
                core::ptr::write_bytes(track, 0, 1);
                (*track).start_ns = start_ns;
            }
        }
        return Some(track);
    }
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, valid for the program's run and used by nothing else
    // while the program runs (programs on one CPU do not nest for tracepoints).
    unsafe {
        core::ptr::write_bytes(scratch, 0, 1);
        (*scratch).start_ns = start_ns;
        // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
        let _ = SIGNALS.insert(tgid, &*scratch, 1);
    }
    SIGNALS.get_ptr_mut(tgid)
}

/// When the process of `task` started: its leader's `start_time`, the same for all its threads.
///
/// # Safety
/// `task` must be a BTF task pointer.
#[inline(always)]
pub unsafe fn process_start(task: Task) -> u64 {
    // SAFETY: per the contract; `start_time` is a u64 of the leader's task_struct.
    unsafe { btf_read(group_leader(task), &TASK_START_TIME) }
}
