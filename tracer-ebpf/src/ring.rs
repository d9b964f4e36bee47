//! Writing records: the header every record starts with, room in the ring buffer, the reader's
//! wake-up, and the count of what a probe missed.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::ring_buf::RingBufEntry, Global};
use tracer_common::{Header, Kind, Miss};

use crate::{
    kernel::Task,
    maps::{EVENTS, MISSED},
};

/// The header of a record about the running task.
#[inline(always)]
pub fn header(kind: Kind) -> Header {
    let task = Task::current();
    header_of(kind, task, task.cgroup().id())
}

/// The header of a record about `task`, the running task, whose cgroup the caller already
/// knows.
#[inline(always)]
pub fn header_of(kind: Kind, task: Task, cgroup_id: u64) -> Header {
    let (pid, tgid) = task.ids();
    Header {
        kind: kind as u32,
        _reserved: 0,
        ts_ns: now_ns(),
        pid,
        tgid,
        cgroup_id,
    }
}

/// CLOCK_MONOTONIC nanoseconds, the records' time base.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments, callable from any tracepoint program.
    unsafe { bpf_ktime_get_ns() }
}

/// Counts what the probe writing `kind` missed, and why. Per-CPU, so a plain increment is
/// race-free.
#[inline(always)]
pub fn count(kind: Kind, miss: Miss) {
    if let Some(counter) = MISSED.get_ptr_mut(miss.slot(kind)) {
        // SAFETY: the pointer is this CPU's slot of a map value, valid for the program's run.
        unsafe { *counter += 1 };
    }
}

/// What a program's body returns: done (or nothing to do), or what it missed. Each program
/// counts its `Err` against its kind with [`counted`].
pub type Done = Result<(), Miss>;

/// Counts `done`'s miss, if any, against `kind`.
#[inline(always)]
pub fn counted(kind: Kind, done: Done) {
    if let Err(miss) = done {
        count(kind, miss);
    }
}

/// Room for a `T` in the ring buffer.
#[inline(always)]
pub fn reserve<T: 'static>() -> Result<RingBufEntry<T>, Miss> {
    EVENTS.reserve::<T>(0).ok_or(Miss::RingFull)
}

/// Writes `record` to the ring buffer.
#[inline(always)]
pub fn send<T: 'static>(record: T) -> Done {
    let mut entry = reserve::<T>()?;
    entry.write(record);
    submit(entry);
    Ok(())
}

/// Hands a filled entry to the reader.
#[inline(always)]
pub fn submit<T: 'static>(entry: RingBufEntry<T>) {
    entry.submit(wakeup::<T>());
}

/// Unread bytes past which a record wakes the reader; set by the loader from the ring size.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: Global<u64> = Global::new(64 << 10);

/// Flags for submitting a record of `T`. Waking the reader costs an interrupt (and, in a VM, an
/// exit) in the context of whatever task the record is about; so records wait for the reader's
/// next timed poll (every 100 ms), and only the record that brings the waiting data past
/// `WAKEUP_BYTES` wakes it, once.
#[inline(always)]
fn wakeup<T>() -> u64 {
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
