//! `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir` on the v2 hierarchy: where containers begin
//! and end.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    tp::cgroup_rmdir, CgroupRecord, CgroupRmdirRecord, Kind, CGROUP_PATH_LEN, CGROUP_V2_HIERARCHY,
};

use crate::{
    follow::{follow_new, unfollow},
    kernel::Cgroup,
    ring::{counted, header, reserve, send, submit, Done},
    tp::{field, read_kernel_str},
};

/// A BTF tracepoint, for the new cgroup itself.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> u32 {
    counted(Kind::CgroupMkdir, try_cgroup_mkdir(&ctx));
    0
}

fn try_cgroup_mkdir(ctx: &BtfTracePointContext) -> Done {
    // SAFETY: the first argument is the new `struct cgroup *`.
    let cgrp = unsafe { Cgroup::from_arg(ctx.arg(0)) };
    let path: *const u8 = ctx.arg(1);
    if cgrp.hierarchy() != CGROUP_V2_HIERARCHY {
        return Ok(());
    }
    let (level, id) = (cgrp.level(), cgrp.id());
    // Reported whether or not the table had room, so that user space knows the cgroup exists;
    // a full table is counted below.
    let followed = follow_new(id);
    let mut entry = reserve::<CgroupRecord>()?;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer space of the record's size; every field is
    // written before submit; `path` is the argument's kernel string (the helper reads it safely;
    // a bad one reads empty).
    unsafe {
        (*record).header = header(Kind::CgroupMkdir);
        (*record).id = id;
        (*record).level = level as u32;
        let dst = core::ptr::addr_of_mut!((*record).path).cast::<u8>();
        (*record).path_len = read_kernel_str(dst, CGROUP_PATH_LEN as u32, path);
    }
    submit(entry);
    followed
}

#[tracepoint]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    counted(Kind::CgroupRmdir, try_cgroup_rmdir(&ctx));
    0
}

fn try_cgroup_rmdir(ctx: &TracePointContext) -> Done {
    // SAFETY: fields of cgroup_rmdir's record, of these types.
    let (root, level, id) = unsafe {
        (
            field::<i32>(ctx, cgroup_rmdir::ROOT),
            field::<i32>(ctx, cgroup_rmdir::LEVEL),
            field::<u64>(ctx, cgroup_rmdir::ID),
        )
    };
    // Only the removal of a cgroup that was followed is of interest: the one that leaves the
    // table.
    if root != CGROUP_V2_HIERARCHY || !unfollow(id) {
        return Ok(());
    }
    send(CgroupRmdirRecord {
        header: header(Kind::CgroupRmdir),
        id,
        level: level as u32,
        _reserved: 0,
    })
}
