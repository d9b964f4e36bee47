//! Every default setting, in one place: the command line's defaults and the library's
//! `Default`s read them from here. A duration is kept twice, as the command line writes it and
//! as a value; a test holds the two together.

use std::time::Duration;

/// `--ring-buffer-size`: bytes of the kernel's ring buffer.
pub const RING_BUFFER_BYTES: u32 = 4 << 20;
/// `--agent-env-var`: the environment variable of a container's init holding its agent name.
pub const AGENT_ENV_VAR: &str = "AGENT_NAME";
/// `--agent-label-key`: the Docker label / OCI annotation holding the agent name.
pub const AGENT_LABEL_KEY: &str = "agent_name";
/// `--agent-sources`, in order.
pub const AGENT_SOURCES: &str = "docker,oci,env,pattern";
/// `--runc-root`: runc's state directory.
pub const RUNC_ROOT: &str = "/run/runc";
/// `--docker-socket`.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// `--containerd-state`: containerd's state folder (its `state` setting).
pub const CONTAINERD_STATE: &str = "/run/containerd";
/// containerd's task bundles below its state folder (`<tasks>/<namespace>/<id>/config.json`).
pub const CONTAINERD_TASKS: &str = "io.containerd.runtime.v2.task";
/// CRI-O's container storage (`<root>/<id>/userdata/config.json`).
pub const CRIO_ROOT: &str = "/run/containers/storage/overlay-containers";
/// Bytes of a bundle's `config.json` read at most (runtime metadata: anything larger is not
/// trusted).
pub const BUNDLE_MAX_BYTES: u64 = 4 << 20;
/// Bytes of a Kubernetes name read from an annotation at most (a pod name is at most 253, a
/// namespace or container name 63, a uid 36).
pub const K8S_NAME_MAX_LEN: usize = 253;
/// `--state-dir`: the label key and lookup table (hash mode).
pub const STATE_DIR: &str = "/var/lib/clawtrace";
/// `clawtrace explain --audit-log`: where the deployments (`deploy/`) keep the audit log.
pub const AUDIT_LOG: &str = "/var/lib/clawtrace/audit.jsonl";

/// `--linger-after`.
pub const LINGER_AFTER: &str = "30s";
pub const LINGER_AFTER_VALUE: Duration = Duration::from_secs(30);
/// `--gpu-poll-interval`.
pub const GPU_POLL: &str = "5s";
pub const GPU_POLL_VALUE: Duration = Duration::from_secs(5);
/// `--otlp-interval`.
pub const OTLP_INTERVAL: &str = "10s";
pub const OTLP_INTERVAL_VALUE: Duration = Duration::from_secs(10);
/// `--label-ttl`.
pub const LABEL_TTL: &str = "1h";
pub const LABEL_TTL_VALUE: Duration = Duration::from_secs(60 * 60);

/// `--otlp-max-queued-spans`.
pub const OTLP_MAX_QUEUED_SPANS: usize = 4096;
/// `--audit-log-max-bytes`.
pub const AUDIT_LOG_MAX_BYTES: u64 = 64 << 20;
/// `--audit-log-keep`.
pub const AUDIT_LOG_KEEP: usize = 5;
/// `--label-max-values`.
pub const LABEL_MAX_VALUES: usize = 256;
/// Bytes of a sanitized agent name at most.
pub const LABEL_MAX_LEN: usize = 64;

/// Events waiting for the export worker at most.
pub const EXPORT_QUEUE: usize = 65536;
/// How long a container's events wait for its agent name's sources (its runtime's metadata)
/// before they are counted without it.
pub const SETTLE_AFTER: Duration = Duration::from_secs(2);

/// containerd's task bundles for its state folder `state`.
pub fn containerd_tasks(state: &std::path::Path) -> std::path::PathBuf {
    state.join(CONTAINERD_TASKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duration_reads_as_its_value() {
        for (text, value) in [
            (LINGER_AFTER, LINGER_AFTER_VALUE),
            (GPU_POLL, GPU_POLL_VALUE),
            (OTLP_INTERVAL, OTLP_INTERVAL_VALUE),
            (LABEL_TTL, LABEL_TTL_VALUE),
        ] {
            assert_eq!(humantime::parse_duration(text), Ok(value), "{text}");
        }
    }
}
