//! The bind mounts each container makes and their effective read-only state, followed through
//! the mount system calls the way runtimes really make them:
//!
//! - runc's way: `mount(src, dst, MS_BIND|MS_REC)`, then `mount(src, dst, MS_REMOUNT|MS_BIND|MS_RDONLY)`:
//!   read-only, but only the mount itself; the mounts beneath it stay writable.
//! - `mount_setattr(…, AT_RECURSIVE, {attr_set: MOUNT_ATTR_RDONLY})`: recursively read-only.
//! - the new mount API: `open_tree(src, OPEN_TREE_CLONE)`, `mount_setattr` on the detached tree,
//!   `move_mount` to the destination.
//!
//! and the shared-volume policy over live containers. Pure: no I/O.

use std::collections::HashMap;

use serde::Serialize;

/// `mount(2)` flags.
pub mod ms {
    pub const RDONLY: u64 = 1;
    pub const REMOUNT: u64 = 32;
    pub const BIND: u64 = 4096;
    pub const MOVE: u64 = 8192;
    pub const REC: u64 = 16384;
}
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const AT_RECURSIVE: u64 = 0x8000;
pub const AT_EMPTY_PATH: u64 = 0x1000;
pub const OPEN_TREE_CLONE: u64 = 1;
pub const MOVE_MOUNT_F_EMPTY_PATH: u64 = 0x4;
pub const FSCONFIG_SET_FLAG: u64 = 0;

/// A bind mount's effective read-only state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadOnly {
    /// Writable.
    No,
    /// The mount is read-only; mounts beneath it may not be.
    Yes,
    /// The mount and every mount beneath it are read-only.
    Recursive,
}

impl ReadOnly {
    pub fn writable(self) -> bool {
        self == ReadOnly::No
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReadOnly::No => "no",
            ReadOnly::Yes => "yes",
            ReadOnly::Recursive => "recursive",
        }
    }
}

/// One bind mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: ReadOnly,
}

/// A tree cloned by `open_tree` and not attached yet.
#[derive(Debug, Clone)]
struct Detached {
    source: String,
    read_only: ReadOnly,
}

/// One mount system call as the model sees it.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub call: u32,
    pub tgid: u32,
    pub ret: i64,
    pub source: &'a str,
    pub target: &'a str,
    pub flags: u64,
    pub attr_set: u64,
    pub attr_clr: u64,
    pub fd_from: i32,
}

/// Normalises a path for comparison: no repeated or trailing slashes.
pub fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() && path.starts_with('/') {
        out.push('/');
    }
    if !path.starts_with('/') {
        // A relative path stays relative (it cannot be compared with absolute ones).
        return out.trim_start_matches('/').to_string();
    }
    out
}

/// The binds of one container, by source.
#[derive(Debug, Default, Clone)]
pub struct ContainerMounts {
    binds: HashMap<String, Bind>,
    detached: HashMap<(u32, i32), Detached>,
}

impl ContainerMounts {
    pub fn binds(&self) -> impl Iterator<Item = &Bind> {
        self.binds.values()
    }

    fn by_target(&mut self, target: &str) -> Option<&mut Bind> {
        let target = normalize(target);
        self.binds.values_mut().find(|b| b.target == target)
    }

    /// Applies one successful call; returns the bind whose state it set or changed.
    pub fn apply(&mut self, c: &Call<'_>) -> Option<Bind> {
        if c.ret < 0 {
            return None;
        }
        let source = normalize(c.source);
        let target = normalize(c.target);
        match c.call {
            tracer_common::mount_call::MOUNT => {
                if c.flags & ms::REMOUNT != 0 && c.flags & ms::BIND != 0 {
                    // A per-mount remount: only this mount changes (not recursive).
                    let read_only = if c.flags & ms::RDONLY != 0 {
                        ReadOnly::Yes
                    } else {
                        ReadOnly::No
                    };
                    let bind = match self.binds.get_mut(&source) {
                        Some(b) if !source.is_empty() => Some(b),
                        _ => self.by_target(c.target),
                    }?;
                    bind.read_only = read_only;
                    return Some(bind.clone());
                }
                if c.flags & ms::BIND != 0 && c.flags & ms::REMOUNT == 0 {
                    // The first bind ignores MS_RDONLY: it is writable until remounted.
                    let bind = Bind {
                        source: source.clone(),
                        target,
                        read_only: ReadOnly::No,
                    };
                    self.binds.insert(source, bind.clone());
                    return Some(bind);
                }
                None
            }
            tracer_common::mount_call::UMOUNT => {
                self.binds.retain(|_, b| b.target != target);
                None
            }
            tracer_common::mount_call::OPEN_TREE => {
                if c.flags & OPEN_TREE_CLONE != 0 {
                    self.detached.insert(
                        (c.tgid, c.ret as i32),
                        Detached {
                            source,
                            read_only: ReadOnly::No,
                        },
                    );
                }
                None
            }
            tracer_common::mount_call::MOUNT_SETATTR => {
                let recursive = c.flags & AT_RECURSIVE != 0;
                let state = |current: ReadOnly| {
                    if c.attr_set & MOUNT_ATTR_RDONLY != 0 {
                        if recursive {
                            ReadOnly::Recursive
                        } else {
                            ReadOnly::Yes
                        }
                    } else if c.attr_clr & MOUNT_ATTR_RDONLY != 0 {
                        ReadOnly::No
                    } else {
                        current
                    }
                };
                if c.flags & AT_EMPTY_PATH != 0 && c.target.is_empty() {
                    if let Some(d) = self.detached.get_mut(&(c.tgid, c.fd_from)) {
                        d.read_only = state(d.read_only);
                        return None;
                    }
                }
                let bind = self.by_target(c.target)?;
                bind.read_only = state(bind.read_only);
                Some(bind.clone())
            }
            tracer_common::mount_call::MOVE_MOUNT => {
                if c.flags & MOVE_MOUNT_F_EMPTY_PATH != 0 && c.source.is_empty() {
                    let d = self.detached.remove(&(c.tgid, c.fd_from))?;
                    let bind = Bind {
                        source: d.source.clone(),
                        target,
                        read_only: d.read_only,
                    };
                    self.binds.insert(d.source, bind.clone());
                    return Some(bind);
                }
                None
            }
            _ => None,
        }
    }
}

/// Why a bind breaks the volume policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A source bound into two or more live containers, writable in this one.
    SharedWritable,
    /// A source under a `--read-only-volume` path, bound writable.
    ReadOnlyVolumeWritable,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::SharedWritable => "shared_writable",
            ViolationKind::ReadOnlyVolumeWritable => "read_only_volume_writable",
        }
    }
}

/// One violation: a writable bind of `source` in container `container` (cgroup id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Violation {
    pub container: u64,
    pub source: String,
    pub kind: ViolationKind,
}

/// Whether `source` is `volume` or inside it.
fn under(source: &str, volume: &str) -> bool {
    source == volume
        || (source.starts_with(volume)
            && (volume.ends_with('/') || source[volume.len()..].starts_with('/')))
}

/// The violations among `containers` (cgroup id → its binds; only started, live containers).
/// Also returns, for each shared source, every container id binding it.
pub fn violations<'a>(
    containers: impl Iterator<Item = (u64, &'a ContainerMounts)>,
    read_only_volumes: &[String],
) -> (Vec<Violation>, HashMap<String, Vec<u64>>) {
    let mut by_source: HashMap<String, Vec<(u64, ReadOnly)>> = HashMap::new();
    let mut out = Vec::new();
    for (id, mounts) in containers {
        for bind in mounts.binds() {
            by_source
                .entry(bind.source.clone())
                .or_default()
                .push((id, bind.read_only));
            if bind.read_only.writable() && read_only_volumes.iter().any(|v| under(&bind.source, v))
            {
                out.push(Violation {
                    container: id,
                    source: bind.source.clone(),
                    kind: ViolationKind::ReadOnlyVolumeWritable,
                });
            }
        }
    }
    let mut sharing = HashMap::new();
    for (source, users) in by_source {
        if users.len() < 2 {
            continue;
        }
        if users.iter().any(|(_, ro)| ro.writable()) {
            for (id, ro) in &users {
                if ro.writable() {
                    out.push(Violation {
                        container: *id,
                        source: source.clone(),
                        kind: ViolationKind::SharedWritable,
                    });
                }
            }
        }
        let mut ids: Vec<u64> = users.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        sharing.insert(source, ids);
    }
    (out, sharing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::mount_call;

    fn call(call: u32, source: &'static str, target: &'static str, flags: u64) -> Call<'static> {
        Call {
            call,
            tgid: 10,
            ret: 0,
            source,
            target,
            flags,
            attr_set: 0,
            attr_clr: 0,
            fd_from: -100,
        }
    }

    #[test]
    fn runc_bind_then_readonly_remount_is_not_recursive() {
        let mut m = ContainerMounts::default();
        let bind = m.apply(&call(
            mount_call::MOUNT,
            "/srv/data",
            "/proc/self/fd/7",
            ms::BIND | ms::REC,
        ));
        assert_eq!(bind.unwrap().read_only, ReadOnly::No);
        let ro = m.apply(&call(
            mount_call::MOUNT,
            "/srv/data",
            "/proc/self/fd/8",
            ms::REMOUNT | ms::BIND | ms::RDONLY | ms::REC,
        ));
        assert_eq!(ro.unwrap().read_only, ReadOnly::Yes);
        // A failed call changes nothing.
        let mut failed = call(mount_call::MOUNT, "/srv/data", "/x", ms::REMOUNT | ms::BIND);
        failed.ret = -1;
        assert_eq!(m.apply(&failed), None);
        assert_eq!(m.binds().next().unwrap().read_only, ReadOnly::Yes);
    }

    #[test]
    fn mount_setattr_recursive_and_new_api() {
        let mut m = ContainerMounts::default();
        m.apply(&call(
            mount_call::MOUNT,
            "/srv/a",
            "/mnt/a",
            ms::BIND | ms::REC,
        ));
        let mut setattr = call(mount_call::MOUNT_SETATTR, "", "/mnt/a/", AT_RECURSIVE);
        setattr.attr_set = MOUNT_ATTR_RDONLY;
        assert_eq!(m.apply(&setattr).unwrap().read_only, ReadOnly::Recursive);

        let mut open = call(
            mount_call::OPEN_TREE,
            "/srv/b",
            "",
            OPEN_TREE_CLONE | AT_RECURSIVE,
        );
        open.ret = 5;
        assert_eq!(m.apply(&open), None);
        let mut ro = call(
            mount_call::MOUNT_SETATTR,
            "",
            "",
            AT_EMPTY_PATH | AT_RECURSIVE,
        );
        ro.fd_from = 5;
        ro.attr_set = MOUNT_ATTR_RDONLY;
        assert_eq!(m.apply(&ro), None);
        let mut mv = call(
            mount_call::MOVE_MOUNT,
            "",
            "/mnt/b",
            MOVE_MOUNT_F_EMPTY_PATH,
        );
        mv.fd_from = 5;
        let b = m.apply(&mv).unwrap();
        assert_eq!(
            (b.source.as_str(), b.target.as_str(), b.read_only),
            ("/srv/b", "/mnt/b", ReadOnly::Recursive)
        );
        m.apply(&call(mount_call::UMOUNT, "", "/mnt/b", 0));
        assert_eq!(m.binds().count(), 1);
    }

    #[test]
    fn shared_writable_and_read_only_volumes() {
        let mut a = ContainerMounts::default();
        let mut b = ContainerMounts::default();
        let mut c = ContainerMounts::default();
        a.apply(&call(mount_call::MOUNT, "/shared", "/data", ms::BIND));
        a.apply(&call(
            mount_call::MOUNT,
            "/shared",
            "/data",
            ms::REMOUNT | ms::BIND | ms::RDONLY,
        ));
        b.apply(&call(mount_call::MOUNT, "/shared//", "/data", ms::BIND));
        c.apply(&call(mount_call::MOUNT, "/models/llama", "/m", ms::BIND));
        let (v, sharing) = violations(
            [(1, &a), (2, &b), (3, &c)].into_iter(),
            &["/models".to_string()],
        );
        assert!(v.contains(&Violation {
            container: 2,
            source: "/shared".into(),
            kind: ViolationKind::SharedWritable
        }));
        assert!(v.contains(&Violation {
            container: 3,
            source: "/models/llama".into(),
            kind: ViolationKind::ReadOnlyVolumeWritable
        }));
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(sharing["/shared"], vec![1, 2]);
        // Both read-only: no violation.
        b.apply(&call(
            mount_call::MOUNT,
            "/shared",
            "/data",
            ms::REMOUNT | ms::BIND | ms::RDONLY,
        ));
        let (v, _) = violations([(1, &a), (2, &b)].into_iter(), &[]);
        assert!(v.is_empty());
        assert!(!under("/modelsx", "/models"));
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalize("/a//b/./c/"), "/a/b/c");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("rel/x/"), "rel/x");
    }
}
