//! The host facts clawtrace depends on: privileges, tracefs, the cgroup v2 mount, clocks.

use std::{
    ffi::CString,
    fs,
    os::fd::{FromRawFd, OwnedFd},
    path::PathBuf,
};

use anyhow::{bail, Context as _, Result};
use caps::{CapSet, Capability};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const TRACEFS_DEBUGFS: &str = "/sys/kernel/debug/tracing";

/// Which capabilities loading and attaching the programs needs and the process lacks (empty
/// when it may load them): CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, which covers both.
pub fn missing_bpf_caps() -> Vec<Capability> {
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    if effective.contains(&Capability::CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [Capability::CAP_BPF, Capability::CAP_PERFMON]
        .into_iter()
        .filter(|c| !effective.contains(c))
        .collect()
}

pub fn privilege_hint(missing: &[Capability]) -> String {
    let names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
    format!(
        "{} not held; run as root, or grant them: setcap cap_bpf,cap_perfmon,cap_sys_admin+ep $(which clawtrace)",
        names.join(", ")
    )
}

/// Capabilities kept once the programs are attached, and why:
/// - CAP_BPF: the maps stay in use (containers found at start are added, cgroups that are not
///   containers are removed from the kernel's table);
/// - CAP_SYS_PTRACE: reading /proc/<pid>/environ of processes of other users (the agent-name
///   variable of containers found at start);
/// - CAP_DAC_READ_SEARCH: reading runtime metadata (runc state, OCI bundles) that is not
///   readable by its owner bits alone.
///
/// Everything else (CAP_SYS_ADMIN, CAP_PERFMON, CAP_NET_*, CAP_SETUID, …) is dropped from the
/// effective, permitted, inheritable, ambient and bounding sets, and no_new_privs is set.
pub const KEPT_CAPS: [Capability; 3] = [
    Capability::CAP_BPF,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
];

/// Drops every capability but [`KEPT_CAPS`] for this thread and those it starts later. Call it
/// before starting any thread: capabilities are per thread.
pub fn drop_privileges() -> Result<()> {
    use std::collections::HashSet;
    let keep: HashSet<Capability> = KEPT_CAPS.into_iter().collect();
    let permitted = caps::read(None, CapSet::Permitted)?;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next. Without it
    // (a binary granted only what loading needs) the bounding set stays as it is.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap)
                    .with_context(|| format!("dropping {cap} from the bounding set"))?;
            }
        }
    } else {
        log::warn!("CAP_SETPCAP not held: the capability bounding set is left as it is");
    }
    let kept: HashSet<Capability> = permitted.intersection(&keep).copied().collect();
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &kept).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("setting permitted capabilities")?;
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        bail!("setting no_new_privs: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Returns the tracefs mount, mounting it at /sys/kernel/tracing when no tracefs is mounted.
pub fn ensure_tracefs() -> Result<PathBuf> {
    if let Some(path) = mounted_tracefs() {
        return Ok(path);
    }
    mount_tracefs()?;
    match mounted_tracefs() {
        Some(path) => Ok(path),
        None => bail!("tracefs mounted at {TRACEFS} but its events are not visible"),
    }
}

/// The tracefs mount, if one is mounted.
pub fn mounted_tracefs() -> Option<PathBuf> {
    [TRACEFS, TRACEFS_DEBUGFS]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

fn mount_tracefs() -> Result<()> {
    if let Err(err) = mount_fs("nodev", std::path::Path::new(TRACEFS), "tracefs", 0, None) {
        bail!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({err}); \
             mount it with: mount -t tracefs nodev {TRACEFS}"
        );
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}

/// mount(2) of a file system of type `fstype` from `source` at `target`.
pub fn mount_fs(
    source: &str,
    target: &std::path::Path,
    fstype: &str,
    flags: libc::c_ulong,
    options: Option<&str>,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let source = CString::new(source).map_err(invalid)?;
    let target = CString::new(target.as_os_str().as_bytes()).map_err(invalid)?;
    let fstype = CString::new(fstype).map_err(invalid)?;
    let options = options.map(CString::new).transpose().map_err(invalid)?;
    // SAFETY: all pointers are valid NUL-terminated strings (or null for no options) that
    // outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            options
                .as_ref()
                .map_or(std::ptr::null(), |o| o.as_ptr().cast()),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF memory to it. Never fatal: recent
/// kernels charge the memory cgroup instead, and the hard limit may not be raisable.
pub fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels that charge BPF memory to cgroups",
            std::io::Error::last_os_error()
        );
    }
}

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount_in(&text)
}

fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    crate::model::volumes::parse_mountinfo(mountinfo)
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| PathBuf::from(m.mount_point))
}

/// Loads `insns` as a cgroup device program for the `BPF_CGROUP_DEVICE` attach type (the
/// kernel offers some helpers by attach type) and returns it; the verifier's log goes to `log`.
/// For probes and tests; the tracer's own program is loaded by aya.
pub fn load_device_program(insns: &[u64], log: &mut [u8]) -> std::io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    let license = b"GPL\0";
    // The leading fields of `union bpf_attr` for BPF_PROG_LOAD, up to expected_attach_type.
    let mut attr = [0u8; 72];
    let mut put = |at: usize, bytes: &[u8]| attr[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    put(4, &(insns.len() as u32).to_ne_bytes());
    put(8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(16, &(license.as_ptr() as u64).to_ne_bytes());
    put(24, &u32::from(!log.is_empty()).to_ne_bytes());
    put(28, &(log.len() as u32).to_ne_bytes());
    // No log: no buffer at all (the kernel refuses a buffer without a log level).
    let buffer = if log.is_empty() {
        0
    } else {
        log.as_mut_ptr() as u64
    };
    put(32, &buffer.to_ne_bytes());
    put(68, &BPF_CGROUP_DEVICE.to_ne_bytes());
    // SAFETY: `attr` is a bpf_attr prefix of the size passed, whose pointers (instructions,
    // license, log buffer with its length) stay valid for the call; the kernel writes only into
    // the log.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether a cgroup v1 hierarchy with the `devices` controller is mounted (a hybrid host): it
/// decides device accesses after the cgroup v2 device programs.
pub fn cgroup_v1_devices_mounted() -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|text| cgroup_v1_devices_in(&text))
        .unwrap_or(false)
}

fn cgroup_v1_devices_in(mountinfo: &str) -> bool {
    crate::model::volumes::parse_mountinfo(mountinfo)
        .iter()
        .any(|m| m.fstype == "cgroup" && m.super_option("devices"))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC now, in the kernel records' time base (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Converts the records' monotonic timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> WallClock {
        let mono = monotonic_ns() as i128;
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        WallClock {
            offset_ns: real - mono,
        }
    }

    /// A clock whose wall time equals monotonic time plus `offset_ns` (for tests).
    pub fn with_offset(offset_ns: i128) -> WallClock {
        WallClock { offset_ns }
    }

    /// Unix time in nanoseconds of monotonic instant `mono_ns`.
    pub fn unix_ns(&self, mono_ns: u64) -> i128 {
        mono_ns as i128 + self.offset_ns
    }
}

/// The depth of this process's pid namespace (0: the initial one), from the `NSpid:` line of
/// /proc/self/status (one pid per level); 0 when the kernel does not say.
pub fn pid_ns_level() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
            let levels = line.split_whitespace().count() as u32;
            levels.checked_sub(1)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_mountinfo() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup2_mount_in(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount_in("30 25 0:26 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }

    #[test]
    fn wall_clock_offsets_monotonic_time() {
        let clock = WallClock::with_offset(1_000);
        assert_eq!(clock.unix_ns(5), 1_005);
        let now = WallClock::now();
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        // The conversion of "now" lands within a second of the real clock.
        assert!((now.unix_ns(monotonic_ns()) - real).abs() < 1_000_000_000);
    }

    #[test]
    fn a_v1_devices_hierarchy_is_found() {
        let hybrid =
            "30 25 0:26 / /sys/fs/cgroup/devices rw,relatime shared:9 - cgroup cgroup rw,devices
31 25 0:27 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
";
        assert!(cgroup_v1_devices_in(hybrid));
        let unified = "31 25 0:27 / /sys/fs/cgroup rw,relatime shared:10 - cgroup2 cgroup2 rw
32 25 0:28 / /sys/fs/cgroup/pids rw shared:11 - cgroup cgroup rw,pids
";
        assert!(!cgroup_v1_devices_in(unified));
    }
}
