//! The tracepoints clawtrace attaches to, the record fields its programs read, and the check that
//! the running kernel lays them out where the programs expect them (the programs read fixed
//! offsets; a kernel that moved a field must be refused, not misread). The hot hooks that need a
//! task as argument are BTF tracepoints (`tp_btf`): for those the kernel's BTF prototype is
//! checked instead of a record layout.

use std::{
    fs,
    path::{Path, PathBuf},
};

use tracer_common::{
    feature,
    tp::{cgroup_rmdir, sched_process_exec, sched_process_exit, syscalls},
    TpField,
};

/// One field a program reads (its layout, from [`tracer_common::tp`], which the programs read
/// too), and which kernels' programs read it.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub field: TpField,
    /// The [`feature`] bit whose fast path reads it, 0 if every kernel's program does: the
    /// field is checked only where the kernel has the feature.
    pub feature: u64,
}

/// Which kernels a hook's program is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// Kernels with the [`feature`] bit.
    Has(u64),
    /// Kernels without it (the program is another's fallback on the same tracepoint).
    Lacks(u64),
}

impl When {
    pub fn holds(self, features: u64) -> bool {
        match self {
            When::Always => true,
            When::Has(bit) => features & bit != 0,
            When::Lacks(bit) => features & bit == 0,
        }
    }
}

/// A tracepoint, the program attached to it, and the fields the program reads.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    pub category: &'static str,
    pub name: &'static str,
    /// Name of the eBPF program (the function in tracer-ebpf).
    pub program: &'static str,
    pub fields: &'static [Field],
    /// For a BTF tracepoint (`tp_btf`): the C types of the arguments the program reads, in
    /// order, as the kernel's BTF prototype `btf_trace_<name>` must give them (`a|b`: either).
    pub btf_args: Option<&'static [&'static str]>,
    /// The feature the hook serves; only [`HookGroup::Core`] hooks are always attached.
    pub group: HookGroup,
    /// The kernels the program is for.
    pub when: When,
}

/// What a hook serves. The system-call hooks are attached only when asked for: while any
/// syscall tracepoint is attached, every system call of every task takes the kernel's traced
/// path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookGroup {
    /// Container, process and signal lifecycles.
    Core,
    /// Mount system calls (`--trace-mount-syscalls`: mount durations and `mount` events).
    MountSyscalls,
}

const fn f(field: TpField) -> Field {
    Field { field, feature: 0 }
}

/// Argument `i` of a system call's `sys_enter_*` record, named `name` there.
const fn arg(name: &'static str, i: usize) -> Field {
    f(syscalls::arg(name, i))
}

/// Every hook, in attach order.
pub const HOOKS: &[Hook] = &[
    Hook {
        category: "cgroup",
        name: "cgroup_mkdir",
        program: "cgroup_mkdir",
        fields: &[],
        // A BTF tracepoint, for the new cgroup itself.
        btf_args: Some(&["struct cgroup *", "const char *"]),
        group: HookGroup::Core,
        when: When::Always,
    },
    Hook {
        category: "cgroup",
        name: "cgroup_rmdir",
        program: "cgroup_rmdir",
        fields: &[
            f(cgroup_rmdir::ROOT),
            f(cgroup_rmdir::LEVEL),
            f(cgroup_rmdir::ID),
        ],
        btf_args: None,
        group: HookGroup::Core,
        when: When::Always,
    },
    Hook {
        category: "sched",
        name: "sched_process_exec",
        program: "sched_process_exec",
        fields: &[
            f(sched_process_exec::FILENAME),
            f(sched_process_exec::PID),
            f(sched_process_exec::OLD_PID),
        ],
        btf_args: None,
        group: HookGroup::Core,
        when: When::Always,
    },
    Hook {
        category: "sched",
        name: "sched_process_exit",
        program: "sched_process_exit",
        fields: &[
            f(sched_process_exit::COMM),
            f(sched_process_exit::PID),
            Field {
                feature: feature::EXIT_GROUP_DEAD,
                ..f(sched_process_exit::GROUP_DEAD)
            },
        ],
        btf_args: None,
        group: HookGroup::Core,
        when: When::Always,
    },
    Hook {
        category: "signal",
        name: "signal_generate",
        program: "signal_generate",
        fields: &[],
        btf_args: Some(&[
            "int",
            "struct kernel_siginfo *",
            "struct task_struct *",
            "int",
            "int",
        ]),
        group: HookGroup::Core,
        when: When::Always,
    },
    Hook {
        category: "oom",
        name: "mark_victim",
        program: "mark_victim",
        fields: &[],
        btf_args: Some(&["struct task_struct *", "uid_t"]),
        group: HookGroup::Core,
        when: When::Has(feature::OOM_VICTIM_TASK),
    },
    Hook {
        category: "oom",
        name: "mark_victim",
        program: "mark_victim_pid",
        fields: &[],
        btf_args: Some(&["int"]),
        group: HookGroup::Core,
        when: When::Lacks(feature::OOM_VICTIM_TASK),
    },
    syscall(
        "sys_enter_mount",
        &[
            arg("dev_name", 0),
            arg("dir_name", 1),
            arg("type", 2),
            arg("flags", 3),
        ],
    ),
    syscall("sys_exit_mount", EXIT),
    syscall("sys_enter_umount", &[arg("name", 0), arg("flags", 1)]),
    syscall("sys_exit_umount", EXIT),
    Hook {
        when: When::Has(feature::MOUNT_SETATTR),
        ..syscall(
            "sys_enter_mount_setattr",
            &[
                arg("dfd", 0),
                arg("path", 1),
                arg("flags", 2),
                arg("uattr", 3),
            ],
        )
    },
    Hook {
        when: When::Has(feature::MOUNT_SETATTR),
        ..syscall("sys_exit_mount_setattr", EXIT)
    },
    syscall(
        "sys_enter_open_tree",
        &[arg("dfd", 0), arg("filename", 1), arg("flags", 2)],
    ),
    syscall("sys_exit_open_tree", EXIT),
    syscall(
        "sys_enter_move_mount",
        &[
            arg("from_dfd", 0),
            arg("from_pathname", 1),
            arg("to_dfd", 2),
            arg("to_pathname", 3),
            arg("flags", 4),
        ],
    ),
    syscall("sys_exit_move_mount", EXIT),
    syscall(
        "sys_enter_fsmount",
        &[arg("fs_fd", 0), arg("flags", 1), arg("attr_flags", 2)],
    ),
    syscall("sys_exit_fsmount", EXIT),
    syscall(
        "sys_enter_fsconfig",
        &[
            arg("fd", 0),
            arg("cmd", 1),
            arg("_key", 2),
            arg("_value", 3),
            arg("aux", 4),
        ],
    ),
    syscall("sys_exit_fsconfig", EXIT),
];

/// The return value every `sys_exit_*` record has.
const EXIT: &[Field] = &[f(syscalls::RET)];

const fn syscall(name: &'static str, fields: &'static [Field]) -> Hook {
    Hook {
        category: "syscalls",
        name,
        program: name,
        fields,
        btf_args: None,
        group: HookGroup::MountSyscalls,
        when: When::Always,
    }
}

/// Why a tracepoint cannot be used as the programs expect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("tracepoint {0}:{1} not found ({2} missing); the kernel lacks it")]
    Missing(&'static str, &'static str, String),
    #[error("tracepoint {category}:{name} has no field `{field}`")]
    NoField {
        category: &'static str,
        name: &'static str,
        field: &'static str,
    },
    #[error(
        "tracepoint {category}:{name} field `{field}` is at offset {offset} size {size}, \
         the programs expect offset {want_offset} size {want_size}"
    )]
    Moved {
        category: &'static str,
        name: &'static str,
        field: &'static str,
        offset: usize,
        size: usize,
        want_offset: usize,
        want_size: usize,
    },
}

/// Parses a tracepoint `format` file into `(name, offset, size)` per field.
pub fn parse_format(text: &str) -> Vec<(String, usize, usize)> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse().ok();
            } else if decl.is_none() && !part.is_empty() && !part.contains(':') {
                decl = Some(part);
            }
        }
        // The declaration's last word is the field name, minus any array suffix: `char comm[16]`.
        let name = decl
            .and_then(|d| d.split_whitespace().last())
            .map(|n| n.split('[').next().unwrap_or(n).to_string());
        if let (Some(name), Some(offset), Some(size)) = (name, offset, size) {
            fields.push((name, offset, size));
        }
    }
    fields
}

/// The first hook on tracepoint `category:name`.
pub fn find(category: &str, name: &str) -> Option<&'static Hook> {
    HOOKS
        .iter()
        .find(|h| h.category == category && h.name == name)
}

/// The fields of `hook`'s tracepoint, from its format file under `tracefs`.
pub fn read_format(
    tracefs: &Path,
    hook: &Hook,
) -> Result<Vec<(String, usize, usize)>, LayoutError> {
    let path = format_path(tracefs, hook);
    let text = fs::read_to_string(&path)
        .map_err(|_| LayoutError::Missing(hook.category, hook.name, path.display().to_string()))?;
    Ok(parse_format(&text))
}

/// Checks one hook against the format file under `tracefs`, for a kernel with the
/// [`feature`] bits `features`.
pub fn check_hook(tracefs: &Path, hook: &Hook, features: u64) -> Result<(), LayoutError> {
    check_fields(hook, &read_format(tracefs, hook)?, features)
}

fn check_fields(
    hook: &Hook,
    fields: &[(String, usize, usize)],
    features: u64,
) -> Result<(), LayoutError> {
    for want in hook
        .fields
        .iter()
        .filter(|f| f.feature == 0 || features & f.feature != 0)
        .map(|f| f.field)
    {
        let Some((_, offset, size)) = fields.iter().find(|(n, _, _)| n == want.name) else {
            return Err(LayoutError::NoField {
                category: hook.category,
                name: hook.name,
                field: want.name,
            });
        };
        if *offset != want.offset || *size != want.size {
            return Err(LayoutError::Moved {
                category: hook.category,
                name: hook.name,
                field: want.name,
                offset: *offset,
                size: *size,
                want_offset: want.offset,
                want_size: want.size,
            });
        }
    }
    Ok(())
}

pub fn format_path(tracefs: &Path, hook: &Hook) -> PathBuf {
    tracefs
        .join("events")
        .join(hook.category)
        .join(hook.name)
        .join("format")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_FORMAT: &str = "name: sched_process_exit
ID: 321
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;

print fmt: \"comm=%s pid=%d prio=%d group_dead=%s\"
";

    fn exit_hook() -> &'static Hook {
        HOOKS
            .iter()
            .find(|h| h.name == "sched_process_exit")
            .unwrap()
    }

    #[test]
    fn parses_fields_with_array_suffix() {
        let fields = parse_format(EXIT_FORMAT);
        assert!(fields.contains(&("comm".to_string(), 8, 16)));
        assert!(fields.contains(&("group_dead".to_string(), 32, 1)));
        assert!(fields.contains(&("common_type".to_string(), 0, 2)));
    }

    #[test]
    fn accepts_matching_layout() {
        assert_eq!(
            check_fields(exit_hook(), &parse_format(EXIT_FORMAT), u64::MAX),
            Ok(())
        );
    }

    #[test]
    fn refuses_moved_and_missing_fields() {
        let moved = EXIT_FORMAT.replace("offset:32;\tsize:1", "offset:36;\tsize:1");
        assert!(matches!(
            check_fields(exit_hook(), &parse_format(&moved), u64::MAX),
            Err(LayoutError::Moved {
                field: "group_dead",
                offset: 36,
                ..
            })
        ));
        let old_kernel = EXIT_FORMAT.replace("bool group_dead", "bool other");
        assert!(matches!(
            check_fields(exit_hook(), &parse_format(&old_kernel), u64::MAX),
            Err(LayoutError::NoField {
                field: "group_dead",
                ..
            })
        ));
        // A kernel without the feature is not asked for the field its fast path reads.
        assert_eq!(
            check_fields(
                exit_hook(),
                &parse_format(&old_kernel),
                !feature::EXIT_GROUP_DEAD
            ),
            Ok(())
        );
    }
}
