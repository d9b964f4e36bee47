//! Offsets of kernel structure fields the programs read, found in the running kernel's BTF.
//! aya emits no CO-RE relocations from Rust, so the loader resolves them here and hands them to
//! the programs as a load-time global.

use std::path::Path;

use btf_rs::{Btf, BtfType, Type};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Clone, thiserror::Error)]
pub enum BtfError {
    #[error(
        "kernel BTF not readable at {path} ({reason}); clawtrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y"
    )]
    Unreadable { path: String, reason: String },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no field {1}")]
    NoField(String, String),
    #[error("kernel BTF: field {0}.{1} is a bit field, which the programs cannot read")]
    BitField(String, String),
    #[error("kernel BTF: struct {0} is {1} bytes, not a power of two as the programs need")]
    Size(String, u32),
    #[error(
        "kernel BTF has no prototype for tracepoint {0} (btf_trace_{0}); clawtrace needs BTF \
         tracepoints (tp_btf, Linux 5.5 or later)"
    )]
    NoTracepoint(String),
    #[error("kernel BTF: tracepoint {name} has arguments ({got}), the programs expect ({want})")]
    TracepointArgs {
        name: String,
        got: String,
        want: String,
    },
}

/// Checks that BTF tracepoint `name` passes the arguments `want` (C types, in order, `a|b` for
/// either; the program may read only the first ones).
pub fn check_tracepoint_args(btf: &Btf, name: &str, want: &[&str]) -> Result<(), BtfError> {
    let got = tracepoint_args(btf, name)?;
    let matches = |got: &String, want: &&str| want.split('|').any(|w| w == got);
    if got.len() < want.len() || got.iter().zip(want).any(|(g, w)| !matches(g, w)) {
        return Err(BtfError::TracepointArgs {
            name: name.to_string(),
            got: got.join(", "),
            want: want.join(", "),
        });
    }
    Ok(())
}

/// The C types of BTF tracepoint `name`'s arguments, from the kernel's `btf_trace_<name>`
/// prototype (whose first parameter, the context, is left out).
pub fn tracepoint_args(btf: &Btf, name: &str) -> Result<Vec<String>, BtfError> {
    let missing = || BtfError::NoTracepoint(name.to_string());
    let types = btf
        .resolve_types_by_name(&format!("btf_trace_{name}"))
        .map_err(|_| missing())?;
    let proto = types
        .iter()
        .find_map(|t| match t {
            Type::Typedef(td) => btf.resolve_chained_type(td).ok(),
            _ => None,
        })
        .and_then(|ptr| match ptr {
            Type::Ptr(p) => btf.resolve_chained_type(&p).ok(),
            _ => None,
        })
        .and_then(|f| match f {
            Type::FuncProto(proto) => Some(proto),
            _ => None,
        })
        .ok_or_else(missing)?;
    Ok(proto
        .parameters
        .iter()
        .skip(1)
        .map(|p| type_name(btf, p, 0))
        .collect())
}

/// The C spelling of the type `t` refers to (`struct task_struct *`, `const char *`, `u64`).
fn type_name(btf: &Btf, t: &dyn BtfType, depth: u32) -> String {
    if depth > 8 {
        return "?".to_string();
    }
    let name = |t: &dyn BtfType| btf.resolve_name(t).unwrap_or_default();
    match btf.resolve_chained_type(t) {
        Ok(Type::Ptr(p)) => format!("{} *", type_name(btf, &p, depth + 1)),
        Ok(Type::Const(c)) => format!("const {}", type_name(btf, &c, depth + 1)),
        Ok(Type::Volatile(v)) => format!("volatile {}", type_name(btf, &v, depth + 1)),
        Ok(Type::Struct(s)) => format!("struct {}", name(&s)),
        Ok(Type::Union(u)) => format!("union {}", name(&u)),
        Ok(Type::Enum(e)) => format!("enum {}", name(&e)),
        Ok(Type::Int(i)) => name(&i),
        Ok(Type::Typedef(td)) => name(&td),
        Ok(Type::Void) => "void".to_string(),
        _ => "?".to_string(),
    }
}

/// Parses the BTF at `path`. The file is read whole first: parsing through a buffered reader
/// makes a system call per few fields, which some kernels answer slowly for sysfs files.
pub fn open(path: &Path) -> Result<Btf, BtfError> {
    let unreadable = |reason: String| BtfError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    Btf::from_bytes(&bytes).map_err(|e| unreadable(e.to_string()))
}

/// Every global the programs need from the kernel's BTF, by name, for a kernel with the
/// [`feature`](tracer_common::feature) bits `features`: the offsets of
/// [`BTF_FIELDS`](tracer_common::BTF_FIELDS) (those of features the kernel lacks left out: the
/// programs never read them there), `MM_ANON_RSS` and `PAGE_KB_SHIFT`.
pub fn globals(btf: &Btf, features: u64) -> Result<Vec<(&'static str, u64)>, BtfError> {
    let mut globals = tracer_common::BTF_FIELDS
        .iter()
        .filter(|f| f.feature == 0 || features & f.feature != 0)
        .map(|f| Ok((f.global, u64::from(field_offset(btf, f.strukt, f.field)?))))
        .collect::<Result<Vec<_>, BtfError>>()?;
    globals.push((tracer_common::MM_ANON_RSS, u64::from(anon_rss_offset(btf)?)));
    globals.push((tracer_common::PAGE_KB_SHIFT, u64::from(page_kb_shift())));
    let upid = struct_size(btf, "upid")?;
    if !upid.is_power_of_two() {
        return Err(BtfError::Size("upid".to_string(), upid));
    }
    globals.push((tracer_common::UPID_SHIFT, u64::from(upid.trailing_zeros())));
    Ok(globals)
}

/// log2 of the page size in KiB.
fn page_kb_shift() -> u32 {
    // SAFETY: sysconf has no memory arguments.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    (page / 1024).max(1).trailing_zeros()
}

/// `MM_ANONPAGES` of `enum mm_counter_type`.
const MM_ANONPAGES: u32 = 1;

/// Where `mm_struct` keeps its count of anonymous pages, `rss_stat[MM_ANONPAGES]`: since Linux
/// 6.2 an array of `struct percpu_counter` (whose `count` is the sum so far), before that a
/// `struct mm_rss_stat` of `atomic_long_t count[]`.
fn anon_rss_offset(btf: &Btf) -> Result<u32, BtfError> {
    let rss_stat = field_offset(btf, "mm_struct", "rss_stat")?;
    let strukt = find_struct(btf, "mm_struct")?;
    let member = find_member_type(btf, &strukt, "rss_stat", 0)
        .ok_or_else(|| BtfError::NoField("mm_struct".to_string(), "rss_stat".to_string()))?;
    match member {
        Type::Array(_) => Ok(rss_stat
            + MM_ANONPAGES * struct_size(btf, "percpu_counter")?
            + field_offset(btf, "percpu_counter", "count")?),
        // atomic_long_t: 8 bytes on the 64-bit kernels clawtrace runs on.
        _ => Ok(rss_stat + field_offset(btf, "mm_rss_stat", "count")? + MM_ANONPAGES * 8),
    }
}

/// `sizeof(struct name)`.
pub fn struct_size(btf: &Btf, name: &str) -> Result<u32, BtfError> {
    Ok(find_struct(btf, name)?.size() as u32)
}

/// The (non-empty) definition of `struct name`.
fn find_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct, BtfError> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|_| BtfError::NoStruct(name.to_string()))?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(name.to_string()))
}

/// Byte offset of `field` in `struct name`, looking through anonymous structs and unions.
pub fn field_offset(btf: &Btf, name: &str, field: &str) -> Result<u32, BtfError> {
    let missing = || BtfError::NoField(name.to_string(), field.to_string());
    let mut strukt = find_struct(btf, name)?;
    let mut bits = 0;
    // A path (`a.b.c`) goes down through each named member's struct or union.
    let mut steps = field.split('.').peekable();
    while let Some(step) = steps.next() {
        bits = find_member(btf, &strukt, step, bits).ok_or_else(missing)?;
        if steps.peek().is_some() {
            strukt = match find_member_type(btf, &strukt, step, 0) {
                Some(Type::Struct(inner) | Type::Union(inner)) => inner,
                _ => return Err(missing()),
            };
        }
    }
    if bits % 8 != 0 {
        return Err(BtfError::BitField(name.to_string(), field.to_string()));
    }
    Ok(bits / 8)
}

/// Bit offset of `field` in `strukt`, plus `base`; recurses into anonymous members.
fn find_member(btf: &Btf, strukt: &btf_rs::Struct, field: &str, base: u32) -> Option<u32> {
    for member in &strukt.members {
        let name = btf.resolve_name(member).unwrap_or_default();
        if name == field && member.bitfield_size().unwrap_or(0) == 0 {
            return Some(base + member.bit_offset());
        }
        if name.is_empty() {
            if let Some(Type::Struct(inner) | Type::Union(inner)) =
                resolve_through_modifiers(btf, member)
            {
                if let Some(found) = find_member(btf, &inner, field, base + member.bit_offset()) {
                    return Some(found);
                }
            }
        }
    }
    None
}

/// The type of `field` in `strukt`, looking through anonymous members.
fn find_member_type(btf: &Btf, strukt: &btf_rs::Struct, field: &str, depth: u32) -> Option<Type> {
    if depth > 8 {
        return None;
    }
    for member in &strukt.members {
        let name = btf.resolve_name(member).unwrap_or_default();
        if name == field {
            return resolve_through_modifiers(btf, member);
        }
        if name.is_empty() {
            if let Some(Type::Struct(inner) | Type::Union(inner)) =
                resolve_through_modifiers(btf, member)
            {
                if let Some(found) = find_member_type(btf, &inner, field, depth + 1) {
                    return Some(found);
                }
            }
        }
    }
    None
}

fn resolve_through_modifiers(btf: &Btf, member: &dyn BtfType) -> Option<Type> {
    let mut ty = btf.resolve_chained_type(member).ok()?;
    // const/volatile/typedef wrappers around an anonymous aggregate.
    for _ in 0..8 {
        match &ty {
            Type::Const(_) | Type::Volatile(_) | Type::Typedef(_) | Type::Restrict(_) => {
                let next = ty
                    .as_btf_type()
                    .and_then(|t| btf.resolve_chained_type(t).ok())?;
                ty = next;
            }
            _ => return Some(ty),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variable of the privileged tests (tests/support) that turns a skip into a failure.
    const REQUIRE_PRIVILEGED: &str = "CLAWTRACE_REQUIRE_PRIVILEGED";

    /// The running kernel's BTF where there is one. These are plain unit tests because
    /// /sys/kernel/btf/vmlinux is world-readable. Without it, `test` says why it skips, or
    /// fails under CLAWTRACE_REQUIRE_PRIVILEGED=1 (every check must run).
    fn running_kernel_btf(test: &str) -> Option<Btf> {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            let reason = format!("no kernel BTF at {}", path.display());
            if std::env::var(REQUIRE_PRIVILEGED).as_deref() == Ok("1") {
                panic!("{test}: cannot run: {reason}, and {REQUIRE_PRIVILEGED}=1");
            }
            eprintln!("skipping {test}: {reason}");
            return None;
        }
        Some(open(path).expect("kernel BTF"))
    }

    #[test]
    fn finds_task_exit_code_in_running_kernel() {
        let Some(btf) = running_kernel_btf("finds_task_exit_code_in_running_kernel") else {
            return;
        };
        let globals = globals(&btf, u64::MAX).expect("globals");
        let get = |name: &str| {
            globals
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, v)| v)
                .unwrap_or_else(|| panic!("{name} missing from {globals:?}"))
        };
        // The fields, plus MM_ANON_RSS, PAGE_KB_SHIFT and UPID_SHIFT.
        assert_eq!(globals.len(), tracer_common::BTF_FIELDS.len() + 3);
        // struct upid { int nr; struct pid_namespace *ns; } on 64-bit kernels.
        assert_eq!(get("UPID_SHIFT"), 4);
        // The seccomp syscall sits in the siginfo's union after its three ints.
        assert!(get("SIGINFO_SYSCALL") > get("SIGINFO_CODE"));
        // exit_code sits well inside task_struct, past the scheduler fields.
        assert!(get("TASK_EXIT_CODE") > 64);
        assert!(matches!(
            field_offset(&btf, "task_struct", "no_such_field"),
            Err(BtfError::NoField(..))
        ));
        assert_eq!(get("MM_ENV_END"), get("MM_ENV_START") + 8);
        // `pid` and `tgid` are adjacent ints.
        assert_eq!(get("TASK_TGID"), get("TASK_PID") + 4);
        // si_code follows si_signo and si_errno on x86 and arm64.
        assert_eq!(get("SIGINFO_CODE"), 8);
        // rss_stat[1].count lies past rss_stat[0] inside mm_struct.
        let rss = u64::from(field_offset(&btf, "mm_struct", "rss_stat").unwrap());
        let counter = u64::from(struct_size(&btf, "percpu_counter").unwrap());
        assert!(get("MM_ANON_RSS") > rss + counter - 1, "{globals:?}");
        assert!(get("MM_ANON_RSS") < u64::from(struct_size(&btf, "mm_struct").unwrap()));
        // 4 KiB pages here.
        assert_eq!(get("PAGE_KB_SHIFT"), 2);
    }

    #[test]
    fn reads_btf_tracepoint_prototypes() {
        let Some(btf) = running_kernel_btf("reads_btf_tracepoint_prototypes") else {
            return;
        };
        assert_eq!(
            tracepoint_args(&btf, "sched_process_exit").unwrap()[0],
            "struct task_struct *"
        );
        // Where programs for kernels with and without a feature share a tracepoint, exactly one
        // of them fits this kernel's prototype.
        for hook in crate::source::tracepoints::HOOKS
            .iter()
            .filter(|h| h.btf_args.is_some())
        {
            let fitting = crate::source::tracepoints::HOOKS
                .iter()
                .filter(|h| h.name == hook.name)
                .filter_map(|h| h.btf_args)
                .filter(|want| check_tracepoint_args(&btf, hook.name, want).is_ok())
                .count();
            assert_eq!(fitting, 1, "{}", hook.name);
        }
        assert!(matches!(
            check_tracepoint_args(&btf, "task_newtask", &["struct task_struct *", "int"]),
            Err(BtfError::TracepointArgs { .. })
        ));
        check_tracepoint_args(&btf, "task_newtask", &["struct task_struct *", "int|u64"])
            .expect("an alternative matches");
        assert!(matches!(
            tracepoint_args(&btf, "no_such_tracepoint"),
            Err(BtfError::NoTracepoint(_))
        ));
    }
}
