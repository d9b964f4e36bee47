//! What clawtrace needs from the host, as one table of requirement probes: `clawtrace check`
//! runs them all and reports each, and the loader runs those it needs before it loads
//! anything, failing on the first one missing with the same words (`missing NAME: what, and the
//! fix`).

use std::path::{Path, PathBuf};

use aya::maps::MapType;
use btf_rs::Btf;

use super::{
    features::{self, KernelFeatures},
    kernel_btf,
    tracepoints::{self, Hook},
};
use crate::sys;

/// What the probes found on the way, for those after them (and for the loader).
#[derive(Default)]
pub struct Host {
    /// CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) are held.
    pub privileged: bool,
    pub tracefs: Option<PathBuf>,
    pub btf: Option<Btf>,
    /// What the kernel offers; probing it needs privilege, tracefs and BTF.
    pub features: Option<KernelFeatures>,
    /// The offsets and sizes the programs read from the kernel's BTF, as their globals, for
    /// the features found.
    pub globals: Vec<(&'static str, u64)>,
}

impl Host {
    /// The feature bits found, or every bit when they could not be probed (so that every
    /// field and hook is checked).
    pub fn bits(&self) -> u64 {
        self.features.as_ref().map_or(u64::MAX, |f| f.bits)
    }
}

/// One requirement: its name as reports give it, whether the loader needs it, and its probe
/// (what was found, or what is wrong and how to fix it).
pub struct Requirement {
    pub name: &'static str,
    /// The loader runs it before loading (the others are for `clawtrace check` alone).
    pub for_loader: bool,
    pub probe: fn(&mut Host) -> Result<String, String>,
}

/// The requirements, in the order they are checked; the probes after one may use what it
/// found. Each tracepoint the programs use is a requirement too ([`hook`]), after these.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        name: "privileges",
        for_loader: true,
        probe: privileges,
    },
    Requirement {
        name: "tracefs",
        for_loader: true,
        probe: tracefs,
    },
    Requirement {
        name: "kernel BTF",
        for_loader: true,
        probe: kernel_btf,
    },
    Requirement {
        name: "cgroup v2",
        for_loader: false,
        probe: cgroup_v2,
    },
    Requirement {
        name: "ring buffer",
        for_loader: false,
        probe: ring_buffer,
    },
];

fn privileges(host: &mut Host) -> Result<String, String> {
    let missing = sys::missing_bpf_caps();
    host.privileged = missing.is_empty();
    if !host.privileged {
        return Err(sys::privilege_hint(&missing));
    }
    // SAFETY: geteuid has no preconditions.
    Ok(if unsafe { libc::geteuid() } == 0 {
        "running as root".to_string()
    } else {
        "CAP_BPF and CAP_PERFMON held".to_string()
    })
}

/// Mounts tracefs when it is absent and the process may (as `clawtrace run` would).
fn tracefs(host: &mut Host) -> Result<String, String> {
    let found = if host.privileged {
        sys::ensure_tracefs().map_err(|e| e.to_string())
    } else {
        sys::mounted_tracefs().ok_or_else(|| {
            if Path::new(sys::TRACEFS).exists() {
                format!(
                    "{} not readable without privilege (run as root)",
                    sys::TRACEFS
                )
            } else {
                format!(
                    "tracefs not mounted (mount it as root: mount -t tracefs nodev {})",
                    sys::TRACEFS
                )
            }
        })
    }?;
    host.tracefs = Some(found.clone());
    Ok(found.display().to_string())
}

/// The kernel's BTF, every field the programs read in it (for the features found), and, with
/// tracefs and privilege, what the kernel offers.
fn kernel_btf(host: &mut Host) -> Result<String, String> {
    let btf = kernel_btf::open(Path::new(kernel_btf::VMLINUX_BTF)).map_err(|e| e.to_string())?;
    if let (Some(tracefs), true) = (&host.tracefs, host.privileged) {
        host.features = Some(features::probe(tracefs, &btf));
    }
    host.globals = kernel_btf::globals(&btf, host.bits()).map_err(|e| e.to_string())?;
    let at =
        kernel_btf::field_offset(&btf, "task_struct", "exit_code").map_err(|e| e.to_string())?;
    host.btf = Some(btf);
    Ok(format!(
        "{} (task_struct.exit_code at offset {at})",
        kernel_btf::VMLINUX_BTF
    ))
}

fn cgroup_v2(_: &mut Host) -> Result<String, String> {
    sys::cgroup2_mount()
        .map(|p| format!("mounted at {}", p.display()))
        .ok_or_else(|| {
            "no cgroup2 mount found; mount it with: mount -t cgroup2 none /sys/fs/cgroup/unified"
                .to_string()
        })
}

fn ring_buffer(host: &mut Host) -> Result<String, String> {
    if !host.privileged {
        return Err("cannot probe BPF_MAP_TYPE_RINGBUF without privilege".to_string());
    }
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(true) => Ok("BPF_MAP_TYPE_RINGBUF supported".to_string()),
        Ok(false) => Err(
            "BPF_MAP_TYPE_RINGBUF not supported; clawtrace needs Linux 5.8 or later".to_string(),
        ),
        Err(e) => Err(format!("probing BPF_MAP_TYPE_RINGBUF failed: {e}")),
    }
}

/// The requirement that `hook`'s tracepoint exists with the layout (or, for a BTF tracepoint,
/// the arguments) its program expects. Named `tracepoint CATEGORY:NAME`.
pub fn hook(host: &Host, hook: &Hook) -> Result<String, String> {
    let Some(tracefs) = &host.tracefs else {
        return Err("cannot check without tracefs".to_string());
    };
    tracepoints::check_hook(tracefs, hook, host.bits())
        .map_err(|e| {
            if !host.privileged && !tracepoints::format_path(tracefs, hook).exists() {
                format!("cannot read its format without privilege ({e})")
            } else {
                e.to_string()
            }
        })
        .and_then(|()| match (hook.btf_args, &host.btf) {
            (None, _) => Ok("present, layout as expected".to_string()),
            (Some(args), Some(btf)) => kernel_btf::check_tracepoint_args(btf, hook.name, args)
                .map(|()| "present, BTF arguments as expected".to_string())
                .map_err(|e| e.to_string()),
            (Some(_), None) => Err("cannot check its arguments without the kernel's BTF".into()),
        })
}

/// The name of [`hook`]'s requirement.
pub fn hook_name(hook: &Hook) -> String {
    format!("tracepoint {}:{}", hook.category, hook.name)
}

/// The loader's requirements, and then those of the hooks `wanted` picks for the kernel's
/// features: the host as found, or the first one missing, as one line.
pub fn for_loader(wanted: impl Fn(&Hook, u64) -> bool) -> anyhow::Result<Host> {
    let mut host = Host::default();
    for r in REQUIREMENTS.iter().filter(|r| r.for_loader) {
        (r.probe)(&mut host).map_err(|why| anyhow::anyhow!("missing {}: {why}", r.name))?;
    }
    let bits = host.bits();
    for h in tracepoints::HOOKS.iter().filter(|h| wanted(h, bits)) {
        hook(&host, h).map_err(|why| anyhow::anyhow!("missing {}: {why}", hook_name(h)))?;
    }
    Ok(host)
}
