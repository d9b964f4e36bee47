//! Which cgroups, and so which processes, are followed: a process is followed while its
//! cgroup is in [`CGROUPS`]. Nothing is kept per task.

use tracer_common::{cgroup_state, Miss};

use crate::{
    kernel::{Cgroup, Task},
    maps::CGROUPS,
};

/// If `cgroup` is followed: its id and its `CGROUPS` state.
#[inline(always)]
pub fn followed(cgroup: Cgroup) -> Option<(u64, *mut u32)> {
    let id = cgroup.id();
    CGROUPS.get_ptr_mut(id).map(|state| (id, state))
}

/// Whether the running task's cgroup is followed.
#[inline(always)]
pub fn current_followed() -> Option<(Task, u64, *mut u32)> {
    let task = Task::current();
    let (id, state) = followed(task.cgroup())?;
    Some((task, id, state))
}

/// Whether cgroup `id` is followed.
#[inline(always)]
pub fn is_followed(id: u64) -> bool {
    CGROUPS.get_ptr(id).is_some()
}

/// Follows the new cgroup `id`, whose first exec is still to come.
#[inline(always)]
pub fn follow_new(id: u64) -> Result<(), Miss> {
    CGROUPS
        .insert(id, cgroup_state::NEW, 0)
        .map_err(|_| Miss::TableFull)
}

/// Stops following cgroup `id`; false if it was not followed.
#[inline(always)]
pub fn unfollow(id: u64) -> bool {
    CGROUPS.remove(id).is_ok()
}
