//! The bind mounts each container has and their effective read-only state, read from the
//! kernel's own mount table (`/proc/<init>/mountinfo`, see [`crate::source::mountinfo`]) rather than
//! replayed from mount system calls: the state the kernel enforces, however the runtime made it
//! (runc's bind then per-mount read-only remount, `mount_setattr(AT_RECURSIVE)`, the new mount
//! API's `open_tree` + `move_mount`). And the shared-volume policy over live containers. Pure:
//! no I/O.

use std::collections::HashMap;

use serde::Serialize;

/// A bind mount's effective read-only state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadOnly {
    /// Writable.
    No,
    /// The mount is read-only; a mount beneath it is writable.
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

/// Filesystems a runtime mounts for the container itself (its own proc, sysfs, cgroups,
/// terminals, message queues), never host volumes, even where they share the host's
/// superblock (sysfs or cgroup2 with the host's network or cgroup namespace).
const NOT_VOLUMES: [&str; 16] = [
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "devtmpfs",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "configfs",
    "fusectl",
    "pstore",
    "binfmt_misc",
    "nsfs",
];

/// The host volumes bound into a container: each mount of its table whose filesystem the host
/// also has mounted, reported by the host path it shows (the host mount of the same device whose
/// root holds the bound folder, plus the rest of the path). Not volumes: the container's root,
/// its own filesystems ([`NOT_VOLUMES`], or any superblock the host has not mounted, such as its
/// fresh /dev tmpfs), and, for a container that keeps the host's root (a plain mount namespace),
/// the copies of the host's own mounts it started with.
pub fn binds(container: &[Mount], host: &[Mount]) -> Vec<Bind> {
    let own_root = container.iter().find(|m| m.mount_point == "/");
    let host_root = host.iter().find(|m| m.mount_point == "/");
    let same_root = match (own_root, host_root) {
        (Some(a), Some(b)) => a.dev == b.dev && a.root == b.root,
        _ => false,
    };
    let mut out = Vec::new();
    for m in container {
        if m.mount_point == "/" || NOT_VOLUMES.contains(&m.fstype.as_str()) {
            continue;
        }
        if same_root
            && host
                .iter()
                .any(|h| h.dev == m.dev && h.root == m.root && h.mount_point == m.mount_point)
        {
            continue;
        }
        let Some(source) = host_path(m, host) else {
            continue;
        };
        let read_only = if !m.read_only() {
            ReadOnly::No
        } else if container
            .iter()
            .filter(|o| beneath(&o.mount_point, &m.mount_point))
            .all(Mount::read_only)
        {
            ReadOnly::Recursive
        } else {
            ReadOnly::Yes
        };
        out.push(Bind {
            source,
            target: m.mount_point.clone(),
            read_only,
        });
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    out
}

/// Where the host sees the folder `m` binds: the host mount of the same device whose root is
/// the longest prefix of `m`'s.
fn host_path(m: &Mount, host: &[Mount]) -> Option<String> {
    let h = host
        .iter()
        .filter(|h| h.dev == m.dev && under(&m.root, &h.root))
        .max_by_key(|h| h.root.len())?;
    let rest = m.root[h.root.len()..].trim_start_matches('/');
    Some(if rest.is_empty() {
        h.mount_point.clone()
    } else if h.mount_point == "/" {
        format!("/{rest}")
    } else {
        format!("{}/{rest}", h.mount_point)
    })
}

/// Whether `path` lies strictly beneath mount point `top`.
fn beneath(path: &str, top: &str) -> bool {
    path != top && under(path, top)
}

/// One line of a mount table (`proc_pid_mountinfo(5)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The filesystem's device (`major:minor`): one per superblock.
    pub dev: String,
    /// The folder of the filesystem this mount shows.
    pub root: String,
    /// Where, relative to the process's root.
    pub mount_point: String,
    /// The mount's own flags say read-only.
    pub mount_ro: bool,
    pub fstype: String,
    /// The superblock's options (`rw`, `ro`, a cgroup v1 hierarchy's controllers, …).
    pub super_options: String,
}

impl Mount {
    /// Read-only for writers: by the mount's flags or the superblock's.
    pub fn read_only(&self) -> bool {
        self.mount_ro || self.super_option("ro")
    }

    /// Whether the superblock's options include `option`.
    pub fn super_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

/// Parses a mount table; lines it cannot read are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _id = l.next()?;
    let _parent = l.next()?;
    let dev = l.next()?.to_string();
    let root = unescape(l.next()?);
    let mount_point = unescape(l.next()?);
    let mount_ro = l.next()?.split(',').any(|o| o == "ro");
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let _source = r.next()?;
    let super_options = r.next()?.to_string();
    Some(Mount {
        dev,
        root,
        mount_point,
        mount_ro,
        fstype,
        super_options,
    })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    containers: impl Iterator<Item = (u64, &'a [Bind])>,
    read_only_volumes: &[String],
) -> (Vec<Violation>, HashMap<String, Vec<u64>>) {
    let mut by_source: HashMap<String, Vec<(u64, ReadOnly)>> = HashMap::new();
    let mut out = Vec::new();
    for (id, mounts) in containers {
        for bind in mounts {
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

    /// The host's table: a root ext4 (8:1), a tmpfs on /tmp (0:40), proc, a separate disk on
    /// /srv (8:17).
    const HOST: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:22 / /proc rw,nosuid shared:12 - proc proc rw
24 22 0:40 / /tmp rw shared:13 - tmpfs tmpfs rw
25 22 8:17 / /srv rw shared:14 - xfs /dev/vdb rw
";

    fn bind(source: &str, target: &str, read_only: ReadOnly) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            read_only,
        }
    }

    #[test]
    fn a_runtime_containers_volumes_and_their_read_only_state() {
        // A container with its own root (an overlay the host has not mounted here), its own
        // proc and /dev, and host folders bound the ways runtimes bind them.
        let table = "\
300 250 0:90 / / rw,relatime - overlay overlay rw,lowerdir=/l
301 300 0:91 / /proc rw - proc proc rw
302 300 0:92 / /dev rw - tmpfs tmpfs rw,size=65536k
303 300 8:1 /var/lib/x/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw
304 300 8:17 /data/rw /rw rw - xfs /dev/vdb rw
305 300 8:17 /data/ro /ro ro - xfs /dev/vdb rw
306 305 0:93 / /ro/sub rw - tmpfs tmpfs rw
307 300 8:17 /data/rro /rro ro - xfs /dev/vdb rw
308 307 0:94 / /rro/sub ro - tmpfs tmpfs rw
309 300 0:40 /a\\040b /tmpdir ro - tmpfs tmpfs rw
310 300 0:22 / /hostproc rw - proc proc rw
311 300 8:17 / /srv-all rw - xfs /dev/vdb ro
";
        let got = binds(&parse_mountinfo(table), &parse_mountinfo(HOST));
        assert_eq!(
            got,
            vec![
                bind("/var/lib/x/resolv.conf", "/etc/resolv.conf", ReadOnly::No),
                bind("/srv/data/ro", "/ro", ReadOnly::Yes),
                bind("/srv/data/rro", "/rro", ReadOnly::Recursive),
                bind("/srv/data/rw", "/rw", ReadOnly::No),
                // The superblock's read-only flag counts.
                bind("/srv", "/srv-all", ReadOnly::Recursive),
                bind("/tmp/a b", "/tmpdir", ReadOnly::Recursive),
            ]
        );
    }

    #[test]
    fn a_plain_mount_namespace_keeps_the_hosts_mounts_out() {
        // unshare -m then a bind: the copies of the host's mounts are no volumes.
        let table = format!("{HOST}400 24 0:40 /src /tmp/dst rw - tmpfs tmpfs rw\n");
        let got = binds(&parse_mountinfo(&table), &parse_mountinfo(HOST));
        assert_eq!(got, vec![bind("/tmp/src", "/tmp/dst", ReadOnly::No)]);
    }

    #[test]
    fn shared_writable_and_read_only_volumes() {
        let a = vec![bind("/shared", "/data", ReadOnly::Yes)];
        let b = vec![bind("/shared", "/data", ReadOnly::No)];
        let c = vec![bind("/models/llama", "/m", ReadOnly::No)];
        let (v, sharing) = violations(
            [(1, a.as_slice()), (2, b.as_slice()), (3, c.as_slice())].into_iter(),
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
        let b = vec![bind("/shared", "/data", ReadOnly::Recursive)];
        let (v, _) = violations([(1, a.as_slice()), (2, b.as_slice())].into_iter(), &[]);
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
