//! Where a container's `agent_name` comes from, tried in the configured order: Docker labels
//! (Docker Engine API on its unix socket, read-only calls), OCI bundle annotations (runc state,
//! containerd and CRI-O bundles), an environment variable of the container's init, or the
//! `agent` capture of a `--container-cgroup-pattern`. The value found is raw and untrusted;
//! [`super::labels`] makes it safe.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bollard::Docker;
use serde_json::Value;

/// One place an agent name can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentSource {
    /// The Docker container's labels.
    Docker,
    /// The OCI bundle's annotations (runc, containerd, CRI-O).
    Oci,
    /// An environment variable of the container's init process.
    Env,
    /// The `agent` named group of the matching `--container-cgroup-pattern`.
    Pattern,
}

/// Settings of the resolver.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sources: Vec<AgentSource>,
    /// Label / annotation key read from runtime metadata.
    pub label_key: String,
    /// Environment variable read from the init process.
    pub env_var: String,
    pub docker_socket: PathBuf,
    pub runc_root: PathBuf,
    /// containerd's v2 task directory: `<root>/<namespace>/<id>/config.json`.
    pub containerd_root: PathBuf,
    /// CRI-O's container storage: `<root>/<id>/userdata/config.json`.
    pub crio_root: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            sources: vec![
                AgentSource::Docker,
                AgentSource::Oci,
                AgentSource::Env,
                AgentSource::Pattern,
            ],
            label_key: crate::defaults::AGENT_LABEL_KEY.to_string(),
            env_var: crate::defaults::AGENT_ENV_VAR.to_string(),
            docker_socket: PathBuf::from(crate::defaults::DOCKER_SOCKET),
            runc_root: PathBuf::from(crate::defaults::RUNC_ROOT),
            containerd_root: crate::defaults::containerd_tasks(Path::new(
                crate::defaults::CONTAINERD_STATE,
            )),
            crio_root: PathBuf::from(crate::defaults::CRIO_ROOT),
        }
    }
}

/// A resolution: the value, and what fell short on the way to it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub value: Option<Vec<u8>>,
    pub shortfalls: Vec<Shortfall>,
}

/// A source that could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    DockerError,
    DockerTimeout,
}

/// What is known about a container when its agent name is resolved.
#[derive(Debug, Clone)]
pub struct ContainerFacts<'a> {
    pub id: &'a str,
    pub runtime: &'a str,
    pub init_pid: Option<u32>,
    /// The variable's value as the kernel read it when the init exec'd, if it did.
    pub init_env: Option<&'a [u8]>,
    pub pattern_agent: Option<&'a str>,
}

const DOCKER_TIMEOUT: Duration = Duration::from_secs(2);

pub struct AgentResolver {
    config: AgentConfig,
    docker: Option<Docker>,
    roots: std::cell::Cell<Roots>,
}

/// Which runtimes' state folders exist (runc, containerd, CRI-O), as last seen. A container is
/// looked up only under those that do: on a node without a runtime every lookup would fail, at
/// the cost of system calls per container.
#[derive(Debug, Clone, Copy)]
struct Roots {
    seen: Option<Instant>,
    runc: bool,
    containerd: bool,
    crio: bool,
}

/// How long [`Roots`] is trusted. A runtime makes its folder before its first container, whose
/// name is resolved only after `settle_after` (seconds), by when the folder has been seen.
const ROOTS_TTL: Duration = Duration::from_secs(1);

impl AgentResolver {
    /// Connects lazily: a missing Docker socket only disables that source.
    pub fn new(config: AgentConfig) -> AgentResolver {
        let docker = if config.sources.contains(&AgentSource::Docker)
            && config.docker_socket.exists()
        {
            match Docker::connect_with_unix(
                &config.docker_socket.to_string_lossy(),
                DOCKER_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            ) {
                Ok(docker) => Some(docker),
                Err(err) => {
                    log::warn!(
                        "Docker labels unavailable ({}: {err}); other agent_name sources still apply",
                        config.docker_socket.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        AgentResolver {
            config,
            docker,
            roots: std::cell::Cell::new(Roots {
                seen: None,
                runc: false,
                containerd: false,
                crio: false,
            }),
        }
    }

    /// Which runtime state folders exist, checked again once [`ROOTS_TTL`] has passed.
    fn roots(&self) -> Roots {
        let roots = self.roots.get();
        if roots.seen.is_some_and(|t| t.elapsed() < ROOTS_TTL) {
            return roots;
        }
        let roots = Roots {
            seen: Some(Instant::now()),
            runc: self.config.runc_root.is_dir(),
            containerd: self.config.containerd_root.is_dir(),
            crio: self.config.crio_root.is_dir(),
        };
        self.roots.set(roots);
        roots
    }

    /// The first value any source gives, raw, and what fell short on the way. `rt` runs the
    /// Docker API calls.
    pub fn resolve(&self, rt: &tokio::runtime::Runtime, facts: &ContainerFacts<'_>) -> Resolved {
        let mut shortfalls = Vec::new();
        for source in &self.config.sources {
            let found = match source {
                AgentSource::Docker => self.docker_label(rt, facts).unwrap_or_else(|short| {
                    shortfalls.push(short);
                    None
                }),
                AgentSource::Oci => self.oci_annotation(facts),
                // What the kernel read at exec time holds even if the init is already gone;
                // /proc serves containers found at start.
                AgentSource::Env => facts
                    .init_env
                    .map(<[u8]>::to_vec)
                    .or_else(|| facts.init_pid.and_then(|pid| self.init_env(pid))),
                AgentSource::Pattern => facts.pattern_agent.map(|a| a.as_bytes().to_vec()),
            };
            if let Some(value) = found.filter(|v| !v.is_empty()) {
                return Resolved {
                    value: Some(value),
                    shortfalls,
                };
            }
        }
        Resolved {
            value: None,
            shortfalls,
        }
    }

    fn docker_label(
        &self,
        rt: &tokio::runtime::Runtime,
        facts: &ContainerFacts<'_>,
    ) -> Result<Option<Vec<u8>>, Shortfall> {
        let Some(docker) = self.docker.as_ref() else {
            return Ok(None);
        };
        if facts.runtime != "docker" {
            return Ok(None);
        }
        let inspect = rt.block_on(async {
            tokio::time::timeout(
                DOCKER_TIMEOUT,
                docker.inspect_container(
                    facts.id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                ),
            )
            .await
        });
        match inspect {
            Ok(Ok(info)) => Ok(info
                .config
                .and_then(|c| c.labels)
                .and_then(|labels| labels.get(&self.config.label_key).cloned())
                .map(String::into_bytes)),
            Ok(Err(err)) => {
                log::debug!("docker inspect {}: {err}", facts.id);
                Err(Shortfall::DockerError)
            }
            Err(_) => {
                log::debug!("docker inspect {} timed out", facts.id);
                Err(Shortfall::DockerTimeout)
            }
        }
    }

    fn oci_annotation(&self, facts: &ContainerFacts<'_>) -> Option<Vec<u8>> {
        self.bundle_configs(facts.id)
            .into_iter()
            .find_map(|config| annotation(&config, &self.config.label_key))
    }

    /// Candidate `config.json` files of the container's OCI bundle.
    fn bundle_configs(&self, id: &str) -> Vec<PathBuf> {
        // An id is a single path element; anything else is not looked up.
        if id.is_empty() || id.contains('/') || id == "." || id == ".." {
            return Vec::new();
        }
        let roots = self.roots();
        let mut configs = Vec::new();
        if roots.runc {
            if let Some(bundle) = read_json(&self.config.runc_root.join(id).join("state.json"))
                .as_ref()
                .and_then(runc_bundle)
            {
                configs.push(bundle.join("config.json"));
            }
        }
        if roots.containerd {
            if let Ok(namespaces) = std::fs::read_dir(&self.config.containerd_root) {
                for ns in namespaces.flatten() {
                    configs.push(ns.path().join(id).join("config.json"));
                }
            }
        }
        if roots.crio {
            configs.push(
                self.config
                    .crio_root
                    .join(id)
                    .join("userdata")
                    .join("config.json"),
            );
        }
        configs.retain(|p| p.is_file());
        configs
    }

    fn init_env(&self, pid: u32) -> Option<Vec<u8>> {
        let environ = read_bounded(Path::new(&format!("/proc/{pid}/environ")))?;
        let prefix = format!("{}=", self.config.env_var);
        environ
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
            .map(<[u8]>::to_vec)
    }
}

/// A runtime's metadata file, up to [`crate::defaults::BUNDLE_MAX_BYTES`]: anything larger is
/// not trusted. Only a regular file is read, and its opening never waits (a FIFO or a device
/// put in its place must not block the tracing loop, which reads bundles too), nor follows a
/// symlink at its last element.
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(crate::defaults::BUNDLE_MAX_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// A runtime's JSON metadata file (bounded, see [`read_bounded`]); None when it is missing,
/// too large or not JSON.
pub(crate) fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&read_bounded(path)?).ok()
}

/// runc's state.json keeps the bundle path as a `bundle=<path>` entry of `config.labels`.
fn runc_bundle(state: &Value) -> Option<PathBuf> {
    state["config"]["labels"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|l| l.strip_prefix("bundle="))
        .map(PathBuf::from)
}

fn annotation(config: &Path, key: &str) -> Option<Vec<u8>> {
    read_json(config)?["annotations"][key]
        .as_str()
        .map(|s| s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clawtrace-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn oci_annotations_of_runc_containerd_and_crio_bundles() {
        let dir = scratch("oci");
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"agent_name":"ironclaw"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("runc/job-1")).unwrap();
        std::fs::write(
            dir.join("runc/job-1/state.json"),
            format!(
                r#"{{"config":{{"labels":["bundle={}"]}}}}"#,
                bundle.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("containerd/k8s.io/abc")).unwrap();
        std::fs::write(
            dir.join("containerd/k8s.io/abc/config.json"),
            r#"{"annotations":{"agent_name":"openclaw"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("crio/def/userdata")).unwrap();
        std::fs::write(
            dir.join("crio/def/userdata/config.json"),
            r#"{"annotations":{"other":"x","agent_name":"nanoclaw"}}"#,
        )
        .unwrap();
        let resolver = AgentResolver::new(AgentConfig {
            sources: vec![AgentSource::Oci],
            runc_root: dir.join("runc"),
            containerd_root: dir.join("containerd"),
            crio_root: dir.join("crio"),
            ..AgentConfig::default()
        });
        let rt = runtime();
        let facts = |id| ContainerFacts {
            id,
            runtime: "custom",
            init_pid: None,
            init_env: None,
            pattern_agent: None,
        };
        assert_eq!(
            resolver.resolve(&rt, &facts("job-1")).value.as_deref(),
            Some(&b"ironclaw"[..])
        );
        assert_eq!(
            resolver.resolve(&rt, &facts("abc")).value.as_deref(),
            Some(&b"openclaw"[..])
        );
        assert_eq!(
            resolver.resolve(&rt, &facts("def")).value.as_deref(),
            Some(&b"nanoclaw"[..])
        );
        assert_eq!(resolver.resolve(&rt, &facts("nope")).value, None);
        assert_eq!(resolver.resolve(&rt, &facts("../runc")).value, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn init_environment_and_pattern_in_order() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("AGENT_NAME", "nemo_claw")
            .spawn()
            .unwrap();
        // spawn() returns once exec has begun; the new environment is in place a moment later.
        let environ = format!("/proc/{}/environ", child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let has_var = || {
            std::fs::read(&environ)
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|entry| entry.starts_with(b"AGENT_NAME="))
        };
        while !has_var() {
            assert!(
                std::time::Instant::now() < deadline,
                "child environment never appeared"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let rt = runtime();
        let facts = ContainerFacts {
            id: "x",
            runtime: "custom",
            init_pid: Some(child.id()),
            init_env: None,
            pattern_agent: Some("from_pattern"),
        };
        let env_first = AgentResolver::new(AgentConfig {
            sources: vec![AgentSource::Env, AgentSource::Pattern],
            ..AgentConfig::default()
        });
        assert_eq!(
            env_first.resolve(&rt, &facts).value.as_deref(),
            Some(&b"nemo_claw"[..])
        );
        let pattern_first = AgentResolver::new(AgentConfig {
            sources: vec![AgentSource::Pattern, AgentSource::Env],
            ..AgentConfig::default()
        });
        assert_eq!(
            pattern_first.resolve(&rt, &facts).value.as_deref(),
            Some(&b"from_pattern"[..])
        );
        let other_var = AgentResolver::new(AgentConfig {
            sources: vec![AgentSource::Env],
            env_var: "NOT_SET_HERE".to_string(),
            ..AgentConfig::default()
        });
        assert_eq!(other_var.resolve(&rt, &facts).value, None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
