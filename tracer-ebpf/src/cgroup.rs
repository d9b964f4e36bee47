//! `cgroup:cgroup_mkdir`, `cgroup:cgroup_rmdir` and `cgroup:cgroup_attach_task` on the v2
//! hierarchy: where containers begin and end, and how their first process gets in.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    cgroup_state, kind, probe, untracked, AttachRecord, CgroupRecord, CGROUP_PATH_LEN,
    CGROUP_V2_HIERARCHY,
};

use crate::state::{
    btf_read, cgroup_id, count_untracked, field, header, is_tracked_cgroup, read_data_loc_str,
    reserve, task_comm, task_ids, track_task, wakeup, Task, CGROUPS, CGROUP_ROOT,
    CGROUP_ROOT_HIERARCHY_ID, TASK_STATE,
};

// Field offsets in the tracepoints' records (see events/cgroup/*/format); the loader checks them
// against the running kernel before it loads anything.
const ROOT: usize = 8;
const LEVEL: usize = 12;
const ID: usize = 16;
const PATH: usize = 24;

#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_dir(&ctx, kind::CGROUP_MKDIR, probe::CGROUP_MKDIR);
    0
}

#[tracepoint]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_dir(&ctx, kind::CGROUP_RMDIR, probe::CGROUP_RMDIR);
    0
}

fn try_cgroup_dir(ctx: &TracePointContext, kind: u32, probe: u32) -> Result<(), i32> {
    // SAFETY: fields of the cgroup tracepoints' records at these (aligned) offsets.
    let (root, level, id) = unsafe {
        (
            field::<i32>(ctx, ROOT),
            field::<i32>(ctx, LEVEL),
            field::<u64>(ctx, ID),
        )
    };
    if root != CGROUP_V2_HIERARCHY {
        return Ok(());
    }
    if kind == kind::CGROUP_MKDIR {
        if CGROUPS.insert(id, cgroup_state::NEW, 0).is_err() {
            count_untracked(untracked::CGROUP);
        }
    } else {
        // Only the removal of a cgroup that was followed is of interest.
        if !is_tracked_cgroup(id) {
            return Ok(());
        }
        let _ = CGROUPS.remove(id);
    }
    let Some(mut entry) = reserve::<CgroupRecord>(probe) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit.
    unsafe {
        (*record).header = header(kind);
        (*record).id = id;
        (*record).level = level as u32;
        let path = core::ptr::addr_of_mut!((*record).path).cast::<u8>();
        (*record).path_len = read_data_loc_str(ctx, PATH, path, CGROUP_PATH_LEN as u32);
    }
    entry.submit(wakeup::<CgroupRecord>());
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
    let dst: *const u8 = ctx.arg(0);
    let task: Task = ctx.arg(2);
    // SAFETY: `dst` is the argument's BTF `struct cgroup *`; `root` points to its hierarchy,
    // whose `hierarchy_id` is an int.
    let hierarchy: i32 = unsafe {
        let root: *const u8 = btf_read(dst, &CGROUP_ROOT);
        btf_read(root, &CGROUP_ROOT_HIERARCHY_ID)
    };
    if hierarchy != CGROUP_V2_HIERARCHY {
        return Ok(());
    }
    // SAFETY: `dst` is the argument's BTF `struct cgroup *`.
    let dst_id = unsafe { cgroup_id(dst) };
    if !is_tracked_cgroup(dst_id) {
        // A followed task that leaves the containers is no longer followed.
        if TASK_STATE.get(task).is_some() {
            TASK_STATE.delete(task);
        }
        return Ok(());
    }
    // SAFETY: `task` is the argument's BTF task pointer.
    let ((pid, tgid), comm) = unsafe { (task_ids(task), task_comm(task)) };
    track_task(task, pid, tgid, dst_id);

    let Some(mut entry) = reserve::<AttachRecord>(probe::CGROUP_ATTACH) else {
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: as in `try_cgroup_dir`.
    unsafe {
        (*record).header = header(kind::CGROUP_ATTACH);
        (*record).dst_cgroup_id = dst_id;
        (*record).target_pid = pid;
        (*record)._reserved = 0;
        (*record).target_comm = comm;
    }
    entry.submit(wakeup::<AttachRecord>());
    Ok(())
}
