//! The cgroup device hook (`BPF_PROG_TYPE_CGROUP_DEVICE`), attached once at the cgroup v2 root
//! with `BPF_F_ALLOW_MULTI`: the kernel runs it only when a process asks for a device (opens a
//! device node for reading or writing, checks it with `access(2)`, or makes one with `mknod`),
//! after the device programs of the caller's own cgroups (the runtime's). It reports accesses
//! to the configured device numbers (GPUs) from followed cgroups, and always allows: the
//! decision is the other programs', never this one's.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::bpf_get_retval,
    },
    macros::{cgroup_device, map},
    maps::Array,
    programs::DeviceContext,
};
use tracer_common::{
    device_access, feature, DeviceAccessRecord, DeviceRange, Header, Kind, DEVICE_RANGES,
};

use crate::{
    follow::is_followed,
    kernel::has,
    ring::{counted, now_ns, send, Done},
};

/// The device-number ranges, written by the loader.
#[map]
pub static DEVICE_RANGE: Array<DeviceRange> = Array::with_max_entries(DEVICE_RANGES, 0);

/// A device program's verdict that lets the access through.
const ALLOW: i32 = 1;

#[cgroup_device]
pub fn device_access(ctx: DeviceContext) -> i32 {
    counted(Kind::DeviceAccess, report(&ctx));
    ALLOW
}

#[inline(always)]
fn wanted(major: u32, minor: u32) -> bool {
    for i in 0..DEVICE_RANGES {
        match DEVICE_RANGE.get(i) {
            Some(r) if r.major == 0 => return false,
            Some(r) if r.major == major && r.minor_first <= minor && minor <= r.minor_last => {
                return true
            }
            Some(_) => {}
            None => return false,
        }
    }
    false
}

#[inline(always)]
fn report(ctx: &DeviceContext) -> Done {
    // SAFETY: the context the kernel passes a device program, valid for its run; its fields are
    // plain u32 the verifier lets the program read.
    let (access_type, major, minor) = unsafe {
        let dev = &*ctx.device;
        (dev.access_type, dev.major, dev.minor)
    };
    // Every device access on the node passes here (each open of /dev/null): the device test is
    // a few array loads and comes first.
    if access_type & 0xffff != device_access::CHAR || !wanted(major, minor) {
        return Ok(());
    }
    // SAFETY: helper without arguments, callable from every program type.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if !is_followed(cgroup_id) {
        return Ok(());
    }
    let decision = if has(feature::DEVICE_DECISION) {
        // SAFETY: helper without arguments; on kernels with the feature it is offered to
        // device programs (elsewhere the verifier never walks this branch).
        match unsafe { bpf_get_retval() } {
            0 => device_access::ALLOWED,
            _ => device_access::DENIED,
        }
    } else {
        device_access::UNDECIDED
    };
    let (pid, tgid, comm) = if has(feature::DEVICE_CALLER) {
        let ids = bpf_get_current_pid_tgid();
        (
            ids as u32,
            (ids >> 32) as u32,
            bpf_get_current_comm().unwrap_or_default(),
        )
    } else {
        (0, 0, [0; tracer_common::COMM_LEN])
    };
    send(DeviceAccessRecord {
        header: Header {
            kind: Kind::DeviceAccess as u32,
            _reserved: 0,
            ts_ns: now_ns(),
            pid,
            tgid,
            cgroup_id,
        },
        access_type,
        major,
        minor,
        decision,
        comm,
    })
}
