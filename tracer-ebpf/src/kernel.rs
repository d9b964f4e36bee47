//! The kernel objects the programs read (tasks, cgroups, a task's memory), as typed wrappers
//! whose methods are safe: the contract is stated once, where a wrapper is made.
//!
//! Every field is read at an offset the loader found in the running kernel's BTF (aya emits no
//! CO-RE relocations from Rust). How it is read depends on the kernel ([`feature::TASK_BTF`]):
//! where the current task is a BTF pointer (`bpf_get_current_task_btf`, 5.11), by one typed
//! load, which the verifier checks against the kernel's types and the JIT guards (a faulting
//! address reads as 0); elsewhere with `bpf_probe_read_kernel`, which reads any address safely
//! (0 on failure). The choice is a read-only global, a constant to the verifier, so a kernel
//! only ever verifies the way it can take.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel},
    Global,
};
use tracer_common::{feature, COMM_LEN};

/// The [`feature`] bits of the running kernel, set by the loader.
#[unsafe(no_mangle)]
pub static KERNEL_FEATURES: Global<u64> = Global::new(0);

/// Whether the running kernel offers `bit` (one of [`feature`]).
#[inline(always)]
pub fn has(bit: u64) -> bool {
    KERNEL_FEATURES.load() & bit != 0
}

/// Declares the read-only `u64` globals of [`tracer_common::BTF_FIELDS`]: field offsets the
/// loader sets from the kernel's BTF. Being read-only, their values are constants to the
/// verifier, which then checks each typed load against the field it reads.
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
    TASK_SIGNAL,
    SIGNAL_LIVE,
    CSS_SET_DFL_CGRP,
    CGROUP_KN,
    CGROUP_ROOT,
    CGROUP_LEVEL,
    CGROUP_ROOT_HIERARCHY_ID,
    KERNFS_NODE_ID,
    SIGINFO_CODE,
    SIGINFO_SYSCALL,
    TASK_FLAGS,
    SIGNAL_RLIM,
    SIGNAL_CPUTIMER,
    TASK_MM,
    MM_ENV_START,
    MM_ENV_END,
    MM_TOTAL_VM,
    // rss_stat[MM_ANONPAGES] in mm_struct: a percpu_counter's count, or an atomic_long_t.
    MM_ANON_RSS,
    // Not an offset: log2 of the page size in KiB.
    PAGE_KB_SHIFT,
    TASK_THREAD_PID,
    PID_LEVEL,
    PID_NUMBERS,
    // Not an offset: log2 of the size of `struct upid`.
    UPID_SHIFT,
    TASK_NSPROXY,
    NSPROXY_MNT_NS,
    MNT_NS_INUM,
);

/// Reads the `T` at `offset` (one of the globals above) of the kernel object at `base`.
///
/// # Safety
/// `base` must be a kernel pointer to the structure `offset` belongs to (a BTF pointer when the
/// kernel has [`feature::TASK_BTF`]: a BTF tracepoint's argument, the current task, or a pointer
/// read by this function), and `T` the field's type or a part of it, so that the address is
/// aligned for `T`. (A pointer must be read whole, by one load, for the verifier to know what
/// it points to.) `T` must be valid when all zero.
#[inline(always)]
pub unsafe fn read<T: Copy>(base: *const u8, offset: &Global<u64>) -> T {
    let at = base.wrapping_add(offset.load() as usize).cast::<T>();
    if has(feature::TASK_BTF) {
        // SAFETY: per the contract; the verifier refuses any load that does not match the BTF.
        unsafe { core::ptr::read(at) }
    } else {
        probe_read(at)
    }
}

/// Reads the `T` at `at` with `bpf_probe_read_kernel`, which zeroes what it could not read: the
/// result needs no test, so a program that reads many fields this way does not fork the
/// verifier's walk at every one of them. `T` must be valid when all zero.
#[inline(always)]
fn probe_read<T: Copy>(at: *const T) -> T {
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes all `size_of::<T>()` bytes of `value`: what it read, or zeroes
    // on failure; it reads any address safely.
    unsafe {
        bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            at.cast(),
        );
        value.assume_init()
    }
}

/// A kernel task (`struct task_struct`).
#[derive(Clone, Copy)]
pub struct Task(*const u8);

impl Task {
    /// The running task.
    #[inline(always)]
    pub fn current() -> Task {
        if has(feature::TASK_BTF) {
            // SAFETY: helper without arguments, callable from any tracing program.
            Task(unsafe { bpf_get_current_task_btf() } as *const u8)
        } else {
            // SAFETY: as above; the address is read only through `read`'s probe reads.
            Task(unsafe { bpf_get_current_task() } as *const u8)
        }
    }

    /// The task a BTF tracepoint passes as its argument.
    ///
    /// # Safety
    /// `arg` must be a `struct task_struct *` argument of a BTF tracepoint.
    #[inline(always)]
    pub unsafe fn from_arg(arg: *const u8) -> Task {
        Task(arg)
    }

    #[inline(always)]
    fn read<T: Copy>(self, offset: &Global<u64>) -> T {
        // SAFETY: `self` is a task (made by `current` or `from_arg`), and every caller reads a
        // task_struct field of its type.
        unsafe { read(self.0, offset) }
    }

    /// Thread id and process id.
    #[inline(always)]
    pub fn ids(self) -> (u32, u32) {
        (
            self.read::<i32>(&TASK_PID) as u32,
            self.read::<i32>(&TASK_TGID) as u32,
        )
    }

    #[inline(always)]
    pub fn comm(self) -> [u8; COMM_LEN] {
        self.read(&TASK_COMM)
    }

    /// The leader of the task's process.
    #[inline(always)]
    pub fn leader(self) -> Task {
        Task(self.read(&TASK_GROUP_LEADER))
    }

    /// When the task's process started: its leader's `start_time`, the same for all its threads.
    #[inline(always)]
    pub fn process_start(self) -> u64 {
        self.leader().read(&TASK_START_TIME)
    }

    /// `exit_code`: the wait status once the task is exiting.
    #[inline(always)]
    pub fn exit_code(self) -> i32 {
        self.read(&TASK_EXIT_CODE)
    }

    /// The process id of the task's parent (`real_parent->tgid`).
    #[inline(always)]
    pub fn parent_tgid(self) -> u32 {
        self.parent().read::<i32>(&TASK_TGID) as u32
    }

    /// The task's pid namespace depth (0: the initial namespace) and its pid there:
    /// `thread_pid->level` and `thread_pid->numbers[level].nr`.
    #[inline(always)]
    pub fn pid_ns(self) -> (u32, u32) {
        /// MAX_PID_NS_LEVEL.
        const MAX_LEVEL: u32 = 32;
        let pid: *const u8 = self.read(&TASK_THREAD_PID);
        // SAFETY: `pid` is the task's `struct pid *`, read whole as such; `level` is its
        // unsigned int field.
        let level = unsafe { read::<u32>(pid, &PID_LEVEL) }.min(MAX_LEVEL);
        // numbers[] is indexed by the level: a probe read, which takes any address.
        let at = PID_NUMBERS.load() as usize + ((level as usize) << UPID_SHIFT.load());
        let nr: i32 = probe_read(pid.wrapping_add(at).cast::<i32>());
        (level, nr as u32)
    }

    /// The inode number of the task's mount namespace (0 once it has let go of its
    /// namespaces, exiting).
    #[inline(always)]
    pub fn mnt_ns(self) -> u32 {
        let nsproxy: *const u8 = self.read(&TASK_NSPROXY);
        if nsproxy.is_null() {
            return 0;
        }
        // SAFETY: `nsproxy` is the task's `struct nsproxy *` (not null), `mnt_ns` its
        // `struct mnt_namespace *`; `ns.inum` is an unsigned int of the latter.
        unsafe {
            let mnt_ns: *const u8 = read(nsproxy, &NSPROXY_MNT_NS);
            if mnt_ns.is_null() {
                return 0;
            }
            read::<u32>(mnt_ns, &MNT_NS_INUM)
        }
    }

    /// The task's parent (`real_parent`).
    #[inline(always)]
    pub fn parent(self) -> Task {
        Task(self.read(&TASK_REAL_PARENT))
    }

    /// Whether no thread of the task's process is left alive (`signal->live` is 0): true for
    /// the last thread to exit, from the moment it is counted out in `do_exit`.
    #[inline(always)]
    pub fn group_dead(self) -> bool {
        let signal: *const u8 = self.read(&TASK_SIGNAL);
        // SAFETY: `signal` is the task's `struct signal_struct *`, read whole as such; `live`
        // is an atomic_t, whose counter is its first int.
        unsafe { read::<i32>(signal, &SIGNAL_LIVE) == 0 }
    }

    /// Whether the task is exiting (`PF_EXITING` in `task->flags`).
    #[inline(always)]
    pub fn exiting(self) -> bool {
        /// `PF_EXITING`.
        const PF_EXITING: u32 = 0x4;
        self.read::<u32>(&TASK_FLAGS) & PF_EXITING != 0
    }

    /// Whether the task's process has used its RLIMIT_CPU hard limit: its CPU time as the
    /// process CPU timer samples it (`signal->cputimer`, user + system nanoseconds, which the
    /// kernel keeps running while the limit is set) against `signal->rlim[RLIMIT_CPU].rlim_max`
    /// seconds, as the kernel's own check does before it sends SIGKILL.
    #[inline(always)]
    pub fn over_cpu_limit(self) -> bool {
        let signal: *const u8 = self.read(&TASK_SIGNAL);
        // rlim[RLIMIT_CPU] (index 0) is `struct rlimit { rlim_cur, rlim_max }`.
        let hard: u64 = probe_read(
            signal
                .wrapping_add(SIGNAL_RLIM.load() as usize + 8)
                .cast::<u64>(),
        );
        // RLIM_INFINITY (and anything no CPU time could reach) is no limit.
        const NS_PER_S: u64 = 1_000_000_000;
        if hard == 0 || hard > u64::MAX / NS_PER_S {
            return false;
        }
        // cputimer.cputime_atomic: atomic64_t utime, stime, sum_exec_runtime (probe reads: older
        // verifiers do not walk atomic types).
        let timer = signal.wrapping_add(SIGNAL_CPUTIMER.load() as usize);
        let utime: u64 = probe_read(timer.cast::<u64>());
        let stime: u64 = probe_read(timer.wrapping_add(8).cast::<u64>());
        utime.saturating_add(stime) >= hard * NS_PER_S
    }

    /// The task's v2 (default hierarchy) cgroup: task->cgroups->dfl_cgrp.
    #[inline(always)]
    pub fn cgroup(self) -> Cgroup {
        let cset: *const u8 = self.read(&TASK_CGROUPS);
        // SAFETY: `cset` is the task's `struct css_set *`, read whole as such; `dfl_cgrp` is a
        // cgroup pointer field of it.
        Cgroup(unsafe { read(cset, &CSS_SET_DFL_CGRP) })
    }

    /// The task's memory (none for a kernel thread, or once it has let go of it).
    #[inline(always)]
    pub fn mm(self) -> Option<Mm> {
        let mm: *const u8 = self.read(&TASK_MM);
        (!mm.is_null()).then_some(Mm(mm))
    }
}

/// A cgroup (`struct cgroup`).
#[derive(Clone, Copy)]
pub struct Cgroup(*const u8);

impl Cgroup {
    /// The cgroup a BTF tracepoint passes as its argument.
    ///
    /// # Safety
    /// `arg` must be a `struct cgroup *` argument of a BTF tracepoint.
    #[inline(always)]
    pub unsafe fn from_arg(arg: *const u8) -> Cgroup {
        Cgroup(arg)
    }

    #[inline(always)]
    fn read<T: Copy>(self, offset: &Global<u64>) -> T {
        // SAFETY: `self` is a cgroup (an argument, or read from a task), and every caller reads
        // a field of struct cgroup of its type.
        unsafe { read(self.0, offset) }
    }

    /// The cgroup's id: cgroup->kn->id, its inode number in cgroupfs.
    #[inline(always)]
    pub fn id(self) -> u64 {
        let kn: *const u8 = self.read(&CGROUP_KN);
        // SAFETY: `kn` is the cgroup's `struct kernfs_node *`, read whole; `id` is a u64 of it.
        unsafe { read(kn, &KERNFS_NODE_ID) }
    }

    /// Depth below its hierarchy's root.
    #[inline(always)]
    pub fn level(self) -> i32 {
        self.read(&CGROUP_LEVEL)
    }

    /// The id of the hierarchy the cgroup belongs to (0: the v2 hierarchy).
    #[inline(always)]
    pub fn hierarchy(self) -> i32 {
        let root: *const u8 = self.read(&CGROUP_ROOT);
        // SAFETY: `root` is the cgroup's `struct cgroup_root *`, read whole; `hierarchy_id` is
        // an int of it.
        unsafe { read(root, &CGROUP_ROOT_HIERARCHY_ID) }
    }
}

/// A task's memory (`struct mm_struct`).
#[derive(Clone, Copy)]
pub struct Mm(*const u8);

impl Mm {
    #[inline(always)]
    fn read<T: Copy>(self, offset: &Global<u64>) -> T {
        // SAFETY: `self` was read from a task's `mm`, and every caller reads a field of struct
        // mm_struct of its type.
        unsafe { read(self.0, offset) }
    }

    /// Where the environment strings of the current image lie, in user memory.
    #[inline(always)]
    pub fn env(self) -> (u64, u64) {
        (self.read(&MM_ENV_START), self.read(&MM_ENV_END))
    }

    /// Total virtual memory, in KiB.
    #[inline(always)]
    pub fn total_vm_kb(self) -> u64 {
        self.read::<u64>(&MM_TOTAL_VM) << PAGE_KB_SHIFT.load()
    }

    /// Resident anonymous memory, in KiB: the count `get_mm_counter(mm, MM_ANONPAGES)` reads.
    /// Always a probe read: before 6.2 the counter is an element of an array of
    /// `atomic_long_t`, a typedef those verifiers cannot walk into.
    #[inline(always)]
    pub fn anon_rss_kb(self) -> u64 {
        let pages: i64 = probe_read(self.0.wrapping_add(MM_ANON_RSS.load() as usize).cast());
        (pages.max(0) as u64) << PAGE_KB_SHIFT.load()
    }
}
