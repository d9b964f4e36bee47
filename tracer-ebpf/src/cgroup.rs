//! `cgroup:cgroup_mkdir`, `cgroup:cgroup_rmdir` and `cgroup:cgroup_attach_task` on the v2
//! hierarchy: where containers begin and end, and how their first process gets in.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    cgroup_state, kind, probe, AttachRecord, CgroupRecord, CGROUP_PATH_LEN, CGROUP_V2_HIERARCHY,
    COMM_LEN,
};

use crate::state::{
    count_untracked, field, header, is_tracked_cgroup, read_data_loc_str, reserve, track_task,
    wakeup, CGROUPS, TASKS, UNTRACKED_CGROUP,
};

// Field offsets in the tracepoints' records (see events/cgroup/*/format); the loader checks them
// against the running kernel before it loads anything.
const ROOT: usize = 8;
const LEVEL: usize = 12;
const ID: usize = 16;
const PATH: usize = 24;
const ATTACH_PID: usize = 24;
const ATTACH_COMM: usize = 32;

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
            count_untracked(UNTRACKED_CGROUP);
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

#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_attach_task(&ctx);
    0
}

fn try_cgroup_attach_task(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: fields of cgroup_attach_task's record at these (aligned) offsets.
    let (root, dst_id, pid) = unsafe {
        (
            field::<i32>(ctx, ROOT),
            field::<u64>(ctx, ID),
            field::<i32>(ctx, ATTACH_PID) as u32,
        )
    };
    if root != CGROUP_V2_HIERARCHY || !is_tracked_cgroup(dst_id) {
        return Ok(());
    }
    // The writer runs here, not the task moved, so the task's process is not known; a task
    // already followed keeps its process, a new one is taken as its own process (runtimes move
    // a container's single-threaded init before it execs).
    // SAFETY: the map value is read once, by copy.
    let tgid = unsafe { TASKS.get(pid) }.map(|t| t.tgid).unwrap_or(pid);
    track_task(pid, tgid, dst_id);

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
        let comm = core::ptr::addr_of_mut!((*record).target_comm).cast::<u8>();
        core::ptr::write_bytes(comm, 0, COMM_LEN);
        read_data_loc_str(ctx, ATTACH_COMM, comm, COMM_LEN as u32);
    }
    entry.submit(wakeup::<AttachRecord>());
    Ok(())
}
