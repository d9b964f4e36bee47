//! What the running kernel offers the programs, found by probing it (helpers, map types, BTF
//! fields, tracepoint layouts and prototypes), never by its version. Each feature the kernel
//! lacks selects a fallback in the programs that produces the same records, at a cost this
//! module names; the loader hands the bits to the programs as one read-only global.

use std::path::Path;

use aya::{
    programs::ProgramType,
    sys::{is_helper_supported, BpfHelper},
};
use btf_rs::Btf;
use tracer_common::feature;

use super::{kernel_btf, tracepoints};

/// One feature: its bit, what it is, and what the user loses without it.
#[derive(Debug)]
pub struct Feature {
    pub bit: u64,
    /// A short stable name, for logs and tests (`exit-group-dead`).
    pub key: &'static str,
    /// What the kernel offers, as a user would look it up.
    pub name: &'static str,
    /// What runs without it, and what that costs (or, for an absent call, what is not seen).
    pub without: &'static str,
    how: Probe,
}

/// How a feature is found.
#[derive(Debug)]
enum Probe {
    /// A helper, callable from tracepoint programs.
    Helper(BpfHelper, &'static str),
    /// A helper, callable from cgroup device programs (loaded, as the real one is, for the
    /// `BPF_CGROUP_DEVICE` attach type: the kernel offers some helpers by attach type, and
    /// aya's probe loads without one).
    DeviceHelper(BpfHelper, &'static str),
    /// A field of a tracepoint's record.
    TracepointField(&'static str, &'static str, &'static str),
    /// The first argument type of a BTF tracepoint.
    FirstArg(&'static str, &'static str),
    /// A tracepoint.
    Tracepoint(&'static str, &'static str),
}

/// Every feature, in the order they are reported.
pub const FEATURES: &[Feature] = &[
    Feature {
        bit: feature::TASK_BTF,
        key: "task-btf",
        name: "bpf_get_current_task_btf (typed reads of kernel objects)",
        without: "every kernel field is read with bpf_probe_read_kernel, a helper call per read",
        how: Probe::Helper(
            BpfHelper::BPF_FUNC_get_current_task_btf,
            "bpf_get_current_task_btf",
        ),
    },
    Feature {
        bit: feature::EXIT_GROUP_DEAD,
        key: "exit-group-dead",
        name: "group_dead in sched_process_exit",
        without: "a process's last thread is told by its live-thread count, and its exit \
                  claimed in a table: one insert per process exit in the containers",
        how: Probe::TracepointField("sched", "sched_process_exit", "group_dead"),
    },
    Feature {
        bit: feature::OOM_VICTIM_TASK,
        key: "oom-victim-task",
        name: "mark_victim's task argument",
        without: "the OOM victim is the target of the SIGKILL the OOM killer sent just before; \
                  a process it picks while already exiting gets no OOM mark",
        how: Probe::FirstArg("mark_victim", "struct task_struct *"),
    },
    Feature {
        bit: feature::MOUNT_SETATTR,
        key: "mount-setattr",
        name: "the mount_setattr system call",
        without: "the kernel has no mount_setattr: no process can call it, nothing is missed",
        how: Probe::Tracepoint("syscalls", "sys_enter_mount_setattr"),
    },
    Feature {
        bit: feature::DEVICE_CALLER,
        key: "device-caller",
        name: "bpf_get_current_pid_tgid in cgroup device programs",
        without: "a GPU device access names its container, not the process that made it",
        how: Probe::DeviceHelper(
            BpfHelper::BPF_FUNC_get_current_pid_tgid,
            "bpf_get_current_pid_tgid (cgroup device programs)",
        ),
    },
    Feature {
        bit: feature::DEVICE_DECISION,
        key: "device-decision",
        name: "bpf_get_retval in cgroup device programs",
        without: "a GPU device access is reported without the runtime's decision (allowed or \
                  denied), and counts as a use of the device either way",
        how: Probe::DeviceHelper(
            BpfHelper::BPF_FUNC_get_retval,
            "bpf_get_retval (cgroup device programs)",
        ),
    },
];

/// What was found: the bits the kernel offers, and for each feature it lacks, why.
#[derive(Debug, Clone, Default)]
pub struct KernelFeatures {
    pub bits: u64,
    pub missing: Vec<(&'static Feature, String)>,
}

impl KernelFeatures {
    pub fn has(&self, bit: u64) -> bool {
        self.bits & bit != 0
    }

    /// Every feature: whether the kernel has it, else why not.
    pub fn report(&self) -> impl Iterator<Item = (&'static Feature, Result<(), &str>)> + '_ {
        FEATURES.iter().map(
            |f| match self.missing.iter().find(|(m, _)| m.bit == f.bit) {
                Some((_, why)) => (f, Err(why.as_str())),
                None => (f, Ok(())),
            },
        )
    }

    /// Keys of the features the kernel lacks, for one line.
    pub fn fallbacks(&self) -> Vec<&'static str> {
        self.missing.iter().map(|(f, _)| f.key).collect()
    }
}

/// Probes the running kernel. Helper probes load a program, so they need the privileges
/// loading does.
pub fn probe(tracefs: &Path, btf: &Btf) -> KernelFeatures {
    let mut found = KernelFeatures::default();
    for f in FEATURES {
        match probe_one(f, tracefs, btf) {
            Ok(()) => found.bits |= f.bit,
            Err(why) => found.missing.push((f, why)),
        }
    }
    found
}

/// Probes the running kernel through its tracefs and BTF (mounting tracefs if needed).
pub fn probe_running_kernel() -> anyhow::Result<KernelFeatures> {
    let tracefs = crate::sys::ensure_tracefs()?;
    let btf = kernel_btf::open(Path::new(kernel_btf::VMLINUX_BTF))?;
    Ok(probe(&tracefs, &btf))
}

fn probe_one(f: &Feature, tracefs: &Path, btf: &Btf) -> Result<(), String> {
    match f.how {
        Probe::DeviceHelper(helper, name) => device_helper(helper as i32)
            .map_err(|why| format!("the kernel has no helper {name}: {why}")),
        Probe::Helper(helper, name) => match is_helper_supported(ProgramType::TracePoint, helper) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("the kernel has no helper {name}")),
            Err(e) => Err(format!("probing helper {name} failed: {e}")),
        },
        Probe::TracepointField(category, name, field) => {
            let hook = tracepoints::find(category, name)
                .ok_or_else(|| format!("no hook for {category}:{name}"))?;
            let fields = tracepoints::read_format(tracefs, hook).map_err(|e| e.to_string())?;
            if fields.iter().any(|(n, _, _)| n == field) {
                Ok(())
            } else {
                Err(format!(
                    "tracepoint {category}:{name} has no field `{field}`"
                ))
            }
        }
        Probe::FirstArg(name, want) => {
            let args = kernel_btf::tracepoint_args(btf, name).map_err(|e| e.to_string())?;
            match args.first() {
                Some(first) if first == want => Ok(()),
                _ => Err(format!(
                    "tracepoint {name} has arguments ({})",
                    args.join(", ")
                )),
            }
        }
        Probe::Tracepoint(category, name) => {
            let dir = tracefs.join("events").join(category).join(name);
            if dir.join("format").exists() {
                Ok(())
            } else {
                Err(format!("the kernel has no tracepoint {category}:{name}"))
            }
        }
    }
}

/// Whether a cgroup device program for `BPF_CGROUP_DEVICE` may call helper `id`: loads one that
/// calls it and allows everything. Err: why not (the verifier's first line, or the error).
fn device_helper(id: i32) -> Result<(), String> {
    // call id; r0 = 1; exit (a device program must return 0 or 1).
    let insns: [u64; 3] = [0x85 | (u64::from(id as u32) << 32), 0xb7 | (1 << 32), 0x95];
    let mut log = vec![0u8; 4096];
    let err = match crate::sys::load_device_program(&insns, &mut log) {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    let text = String::from_utf8_lossy(&log);
    match text.trim_matches('\0').lines().next() {
        Some(first) if !first.is_empty() => Err(first.to_string()),
        _ => Err(err.to_string()),
    }
}
