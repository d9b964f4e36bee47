//! The maps the programs share. Maps that one hook family alone uses live with it (the mount
//! calls in flight, the exit claims, the OOM killer's last send, the device ranges).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use tracer_common::{EnvKey, ENV_SCAN_LEN, MISSED_SLOTS};

/// Records for user space. The loader sets the real size (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counts of what each probe missed, by [`tracer_common::Miss::slot`].
#[map]
pub static MISSED: PerCpuArray<u64> = PerCpuArray::with_max_entries(MISSED_SLOTS, 0);

/// v2 cgroups whose processes are followed, keyed by cgroup id, with their
/// [`tracer_common::cgroup_state`]. Every new v2 cgroup is added at mkdir (so a container's
/// first process is never missed while user space decides), then user space removes those that
/// turn out not to be containers, and adds the containers that existed before it started.
#[map]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(65536, 0);

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
