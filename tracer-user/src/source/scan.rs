//! Finds the containers that already run when clawtrace starts: walks the cgroup v2 tree for
//! cgroups recognised as containers, and reads their processes from cgroupfs and /proc, so they
//! are followed like the ones created later.

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::model::{containers::Recognize, ExistingContainer};

/// Deepest cgroup nesting walked; real hierarchies are far shallower.
const MAX_DEPTH: usize = 32;

/// What the scan found: the containers.
#[derive(Debug, Default)]
pub struct Scan {
    pub containers: Vec<ExistingContainer>,
}

/// Scans the cgroup v2 hierarchy mounted at `root`.
pub fn scan(root: &Path, recognizer: &impl Recognize) -> Scan {
    let mut scan = Scan::default();
    walk(root, root, recognizer, 0, &mut scan);
    scan
}

fn cgroup_path(root: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    format!("/{}", rel.display())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

fn walk(root: &Path, dir: &Path, recognizer: &impl Recognize, depth: usize, scan: &mut Scan) {
    if depth > MAX_DEPTH {
        return;
    }
    for sub in subdirs(dir) {
        let path = cgroup_path(root, &sub);
        match recognizer.recognize(&path) {
            Some(ident) => {
                if let Some(found) = container(&sub, path, ident) {
                    scan.containers.push(found);
                }
            }
            None => walk(root, &sub, recognizer, depth + 1, scan),
        }
    }
}

fn container(
    dir: &Path,
    cgroup_path: String,
    ident: crate::model::containers::ContainerIdent,
) -> Option<ExistingContainer> {
    let cgroup_id = fs::metadata(dir).ok()?.ino();
    let mut cgroups = vec![(dir.to_path_buf(), cgroup_id)];
    let mut i = 0;
    while i < cgroups.len() && cgroups.len() < 4096 {
        for sub in subdirs(&cgroups[i].0) {
            if let Ok(meta) = fs::metadata(&sub) {
                cgroups.push((sub, meta.ino()));
            }
        }
        i += 1;
    }
    let mut processes = Vec::new();
    for (dir, _) in &cgroups {
        processes.extend(read_pids(&dir.join("cgroup.procs")));
    }
    let init = guess_init(&processes);
    let sub_cgroups = cgroups.iter().skip(1).map(|(_, id)| *id).collect();
    Some(ExistingContainer {
        cgroup_id,
        cgroup_path,
        ident,
        sub_cgroups,
        processes,
        init,
    })
}

fn read_pids(file: &Path) -> Vec<u32> {
    fs::read_to_string(file)
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// `(ppid, start time in clock ticks)` from /proc/<pid>/stat.
fn parent_and_start(pid: u32) -> Option<(u32, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... starttime(22), so ppid is index 1, starttime 19.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// The container's init: the earliest-started process whose parent is outside the container.
fn guess_init(processes: &[u32]) -> Option<u32> {
    let inside: HashSet<u32> = processes.iter().copied().collect();
    processes
        .iter()
        .filter_map(|&pid| {
            let (ppid, start) = parent_and_start(pid)?;
            (!inside.contains(&ppid)).then_some((start, pid))
        })
        .min()
        .map(|(_, pid)| pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "4121 (my (weird) cmd) S 4000 4121 4000 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_stat(stat), Some((4000, 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_has_a_parent_and_start() {
        let (ppid, start) = parent_and_start(std::process::id()).unwrap();
        assert!(ppid > 0 && start > 0);
        // Alone in a "container", the test process is its init (its parent is outside).
        assert_eq!(guess_init(&[std::process::id()]), Some(std::process::id()));
    }
}
