//! `cgroup:cgroup_mkdir`, `cgroup:cgroup_rmdir` and `cgroup:cgroup_attach_task` on the v2
//! hierarchy: where containers begin and end, and how their first process gets in.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    cgroup_state, kind, probe, untracked, AttachRecord, CgroupRecord, CgroupRmdirRecord,
    CGROUP_PATH_LEN, CGROUP_V2_HIERARCHY,
};

use crate::{
    kernel::{Cgroup, Task},
    state::{count_untracked, field, followed, header, read_kernel_str, reserve, wakeup, CGROUPS},
};

// Field offsets in cgroup_rmdir's record (see events/cgroup/cgroup_rmdir/format); the loader
// checks them against the running kernel before it loads anything.
const ROOT: usize = 8;
const LEVEL: usize = 12;
const ID: usize = 16;

/// A BTF tracepoint, for the new cgroup itself.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> u32 {
    let _ = try_cgroup_mkdir(&ctx);
    0
}

fn try_cgroup_mkdir(ctx: &BtfTracePointContext) -> Result<(), i32> {
    // SAFETY: the first argument is the new `struct cgroup *`.
    let cgrp = unsafe { Cgroup::from_arg(ctx.arg(0)) };
    let path: *const u8 = ctx.arg(1);
    if cgrp.hierarchy() != CGROUP_V2_HIERARCHY {
        return Ok(());
    }
    let (level, id) = (cgrp.level(), cgrp.id());
    if CGROUPS.insert(id, cgroup_state::NEW, 0).is_err() {
        count_untracked(untracked::CGROUP);
    }
    let Some(mut entry) = reserve::<CgroupRecord>(probe::CGROUP_MKDIR) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit; `path` is the argument's kernel string (the helper reads it safely;
    // a bad one reads empty).
    unsafe {
        (*record).header = header(kind::CGROUP_MKDIR);
        (*record).id = id;
        (*record).level = level as u32;
        let dst = core::ptr::addr_of_mut!((*record).path).cast::<u8>();
        (*record).path_len = read_kernel_str(dst, CGROUP_PATH_LEN as u32, path);
    }
    entry.submit(wakeup::<CgroupRecord>());
    Ok(())
}

#[tracepoint]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_rmdir(&ctx);
    0
}

fn try_cgroup_rmdir(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: fields of cgroup_rmdir's record at these (aligned) offsets.
    let (root, level, id) = unsafe {
        (
            field::<i32>(ctx, ROOT),
            field::<i32>(ctx, LEVEL),
            field::<u64>(ctx, ID),
        )
    };
    // Only the removal of a cgroup that was followed is of interest: the one that leaves the
    // table.
    if root != CGROUP_V2_HIERARCHY || CGROUPS.remove(id).is_err() {
        return Ok(());
    }
    let Some(mut entry) = reserve::<CgroupRmdirRecord>(probe::CGROUP_RMDIR) else {
        return Ok(());
    };
    entry.write(CgroupRmdirRecord {
        header: header(kind::CGROUP_RMDIR),
        id,
        level: level as u32,
        _reserved: 0,
    });
    entry.submit(wakeup::<CgroupRmdirRecord>());
    Ok(())
}

/// Runs in the writer's context (who wrote to `cgroup.procs`), with the destination cgroup and
/// the task moved (a process's leader when the whole process moves) as arguments.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: BtfTracePointContext) -> u32 {
    let _ = try_cgroup_attach_task(&ctx);
    0
}

fn try_cgroup_attach_task(ctx: &BtfTracePointContext) -> Result<(), i32> {
    // SAFETY: the first argument is the destination `struct cgroup *`, the third the
    // `struct task_struct *` moved.
    let (dst, task) = unsafe { (Cgroup::from_arg(ctx.arg(0)), Task::from_arg(ctx.arg(2))) };
    if dst.hierarchy() != CGROUP_V2_HIERARCHY {
        return Ok(());
    }
    let Some((dst_id, _)) = followed(dst) else {
        return Ok(());
    };
    let ((pid, _), comm) = (task.ids(), task.comm());

    let Some(mut entry) = reserve::<AttachRecord>(probe::CGROUP_ATTACH) else {
        return Ok(());
    };
    entry.write(AttachRecord {
        header: header(kind::CGROUP_ATTACH),
        dst_cgroup_id: dst_id,
        target_pid: pid,
        _reserved: 0,
        target_comm: comm,
    });
    entry.submit(wakeup::<AttachRecord>());
    Ok(())
}
