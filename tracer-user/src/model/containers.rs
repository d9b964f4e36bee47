//! Which cgroups are containers: the cgroup layouts of the common runtimes, bare runc (a cgroup
//! named after a container in runc's state directory), and patterns the user gives.

use std::{path::PathBuf, sync::Arc};

use regex::Regex;

/// A cgroup recognised as a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdent {
    /// The runtime's id for the container (shared by every event about it).
    pub id: Arc<str>,
    /// `docker`, `containerd`, `cri-o`, `podman`, `runc` or `custom`.
    pub runtime: &'static str,
    /// The `agent` capture of a user pattern, if it has one and it matched.
    pub agent: Option<String>,
}

/// Decides whether a cgroup (by its path under the v2 root) is a container.
pub trait Recognize {
    fn recognize(&self, cgroup_path: &str) -> Option<ContainerIdent>;
}

struct Pattern {
    regex: Regex,
    runtime: &'static str,
}

/// Built-in layouts, as (regex, runtime). Ids are 64 hex digits in all of them.
const BUILTIN: &[(&str, &str)] = &[
    // Docker, cgroupfs driver: /docker/<id>
    (r"^/docker/(?P<id>[0-9a-f]{64})$", "docker"),
    // Docker, systemd driver: .../docker-<id>.scope
    (r"/docker-(?P<id>[0-9a-f]{64})\.scope$", "docker"),
    // containerd CRI, systemd driver (kubepods slices): .../cri-containerd-<id>.scope
    (
        r"/cri-containerd-(?P<id>[0-9a-f]{64})\.scope$",
        "containerd",
    ),
    // CRI-O, systemd driver: .../crio-<id>.scope (not crio-conmon-<id>.scope, its monitor)
    (r"/crio-(?P<id>[0-9a-f]{64})\.scope$", "cri-o"),
    // Podman: .../libpod-<id>.scope, or /libpod_parent/libpod-<id> with cgroupfs
    (r"/libpod-(?P<id>[0-9a-f]{64})(\.scope)?$", "podman"),
    // Kubernetes, cgroupfs driver (containerd or CRI-O): /kubepods[/<qos>]/pod<uid>/<id>
    (
        r"^/kubepods(/(besteffort|burstable|guaranteed))?/pod[0-9a-f_-]+/(?P<id>[0-9a-f]{64})$",
        "containerd",
    ),
];

/// Whether a cgroup path is in a Kubernetes node's pod hierarchy: an element named `kubepods`
/// (cgroupfs driver) or `kubepods.slice` / `kubepods-…` (systemd driver).
pub fn is_kubernetes(path: &str) -> bool {
    path.split('/').any(|e| e.starts_with("kubepods"))
}

/// Recognises containers by cgroup path.
pub struct Recognizer {
    user: Vec<Regex>,
    builtin: Vec<Pattern>,
    /// runc's state directory (`runc --root`); a cgroup whose last path element names a
    /// container there is that container.
    runc_root: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid --container-cgroup-pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl Recognizer {
    /// `user_patterns` are tried first, in order; then the built-in layouts; then bare runc.
    pub fn new(user_patterns: &[String], runc_root: Option<PathBuf>) -> Result<Self, PatternError> {
        let user = user_patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| PatternError {
                    pattern: p.clone(),
                    reason: e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let builtin = BUILTIN
            .iter()
            .map(|(re, runtime)| Pattern {
                // The built-in expressions are constants covered by tests.
                regex: Regex::new(re).unwrap_or_else(|e| panic!("built-in pattern {re}: {e}")),
                runtime,
            })
            .collect();
        Ok(Recognizer {
            user,
            builtin,
            runc_root,
        })
    }

    fn last_element(path: &str) -> &str {
        path.rsplit('/').next().unwrap_or(path)
    }
}

impl Recognize for Recognizer {
    fn recognize(&self, path: &str) -> Option<ContainerIdent> {
        for re in &self.user {
            if let Some(caps) = re.captures(path) {
                let id = caps
                    .name("id")
                    .map(|m| m.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| Self::last_element(path));
                if id.is_empty() {
                    // A container needs an id; a match that yields none is not one.
                    continue;
                }
                return Some(ContainerIdent {
                    id: id.into(),
                    runtime: "custom",
                    agent: caps.name("agent").map(|m| m.as_str().to_string()),
                });
            }
        }
        for pattern in &self.builtin {
            if let Some(caps) = pattern.regex.captures(path) {
                return Some(ContainerIdent {
                    id: caps.name("id")?.as_str().into(),
                    runtime: pattern.runtime,
                    agent: None,
                });
            }
        }
        let name = Self::last_element(path);
        if let Some(root) = &self.runc_root {
            let valid = !name.is_empty() && name != "." && name != "..";
            if valid && root.join(name).is_dir() {
                return Some(ContainerIdent {
                    id: name.into(),
                    runtime: "runc",
                    agent: None,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0e1b7d4a6f8e2c5b9d0a1f3e7c6b4d2a8f9e0c1b3d5a7f9e2c4b6d8a0f";

    fn rec(user: &[&str]) -> Recognizer {
        let user: Vec<String> = user.iter().map(|s| s.to_string()).collect();
        Recognizer::new(&user, None).unwrap()
    }

    #[test]
    fn recognises_runtime_layouts() {
        let r = rec(&[]);
        let cases = [
            (format!("/docker/{ID}"), "docker"),
            (format!("/system.slice/docker-{ID}.scope"), "docker"),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope"),
                "containerd",
            ),
            (format!("/kubepods/burstable/pod0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/{ID}"), "containerd"),
            (format!("/kubepods/pod0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/{ID}"), "containerd"),
            (format!("/machine.slice/crio-{ID}.scope"), "cri-o"),
            (format!("/machine.slice/libpod-{ID}.scope"), "podman"),
            (format!("/libpod_parent/libpod-{ID}"), "podman"),
        ];
        for (path, runtime) in cases {
            let got = r
                .recognize(&path)
                .unwrap_or_else(|| panic!("{path} not recognised"));
            assert_eq!((&*got.id, got.runtime), (ID, runtime), "{path}");
        }
    }

    #[test]
    fn other_cgroups_are_not_containers() {
        let r = rec(&[]);
        for path in [
            "/",
            "/system.slice",
            "/system.slice/docker.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/docker",
            "/docker/abc",
            &format!("/machine.slice/crio-conmon-{ID}.scope"),
            &format!("/docker/{ID}/init.scope"),
            "/kubepods/burstable/pod0b1c2d3e",
        ] {
            assert_eq!(r.recognize(path), None, "{path}");
        }
    }

    #[test]
    fn user_patterns_pick_id_and_agent() {
        let r = rec(&[
            r"^/agents/(?P<agent>[a-z_]+)-(?P<id>\d+)$",
            r"^/sandboxes/[^/]+$",
        ]);
        let got = r.recognize("/agents/nemo_claw-17").unwrap();
        assert_eq!(&*got.id, "17");
        assert_eq!(got.runtime, "custom");
        assert_eq!(got.agent.as_deref(), Some("nemo_claw"));
        // Without an `id` group the last path element is the id.
        let got = r.recognize("/sandboxes/task-9").unwrap();
        assert_eq!((&*got.id, got.agent), ("task-9", None));
        assert_eq!(r.recognize("/agents/UPPER-1"), None);
    }

    #[test]
    fn bad_user_pattern_is_a_clear_error() {
        let err = Recognizer::new(&["(".to_string()], None).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("invalid --container-cgroup-pattern \"(\""),
            "{err}"
        );
    }

    #[test]
    fn bare_runc_needs_its_state_dir() {
        let root = std::env::temp_dir().join(format!("clawtrace-runc-root-{}", std::process::id()));
        std::fs::create_dir_all(root.join("job-1")).unwrap();
        let r = Recognizer::new(&[], Some(root.clone())).unwrap();
        let got = r.recognize("/job-1").unwrap();
        assert_eq!((&*got.id, got.runtime), ("job-1", "runc"));
        assert_eq!(r.recognize("/job-2"), None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
