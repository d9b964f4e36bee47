//! Offsets of kernel structure fields the programs read, found in the running kernel's BTF.
//! aya emits no CO-RE relocations from Rust, so the loader resolves them here and hands them to
//! the programs as a load-time global.

use std::path::Path;

use btf_rs::{Btf, BtfType, Type};
use tracer_common::KernelOffsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
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
}

/// Reads every offset the programs need from the BTF at `path`.
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let btf = Btf::from_file(path).map_err(|e| BtfError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(KernelOffsets {
        task_exit_code: field_offset(&btf, "task_struct", "exit_code")?,
        task_real_parent: field_offset(&btf, "task_struct", "real_parent")?,
        task_tgid: field_offset(&btf, "task_struct", "tgid")?,
        task_mm: field_offset(&btf, "task_struct", "mm")?,
        mm_env_start: field_offset(&btf, "mm_struct", "env_start")?,
        mm_env_end: field_offset(&btf, "mm_struct", "env_end")?,
    })
}

/// Byte offset of `field` in `struct name`, looking through anonymous structs and unions.
pub fn field_offset(btf: &Btf, name: &str, field: &str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|_| BtfError::NoStruct(name.to_string()))?;
    let strukt = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
    let bits = find_member(btf, strukt, field, 0)
        .ok_or_else(|| BtfError::NoField(name.to_string(), field.to_string()))?;
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

    /// Reads the running kernel's BTF where there is one; this is a plain unit test because
    /// /sys/kernel/btf/vmlinux is world-readable.
    #[test]
    fn finds_task_exit_code_in_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipping: no kernel BTF at {VMLINUX_BTF}");
            return;
        }
        let offsets = kernel_offsets(path).expect("offsets");
        // exit_code sits well inside task_struct, past the scheduler fields.
        assert!(offsets.task_exit_code > 64, "{offsets:?}");
        let btf = Btf::from_file(path).unwrap();
        assert!(matches!(
            field_offset(&btf, "task_struct", "no_such_field"),
            Err(BtfError::NoField(..))
        ));
        assert_eq!(offsets.mm_env_end, offsets.mm_env_start + 8, "{offsets:?}");
        // `pid` and `tgid` are adjacent ints.
        let pid = field_offset(&btf, "task_struct", "pid").unwrap();
        let tgid = field_offset(&btf, "task_struct", "tgid").unwrap();
        assert_eq!(tgid, pid + 4);
    }
}
