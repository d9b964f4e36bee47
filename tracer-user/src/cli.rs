//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    defaults,
    enrich::{agent::AgentSource, labels::LabelMode},
    sinks::terminal::Format,
};

#[derive(Debug, Parser)]
#[command(
    name = "clawtrace",
    version,
    about = "Traces container lifecycles and tells who killed what, and why"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace containers and print one line per event until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        trace: Box<RunArgs>,
    },
    /// Trace containers and show them live in the terminal, per agent: live containers,
    /// creations and deletions, stuck ones, start latency, exits by verdict, GPU sharing, and the
    /// latest verdicts. Keys: q quit, s sort, r reverse, / filter agents, Esc clear the filter.
    Top(Box<RunArgs>),
    /// Check that this host has what clawtrace needs; exits 0 only if everything holds.
    Check,
    /// Tell one container's life from the audit log: created by which runtime, its agent, its
    /// start, volumes, GPU use, every kill with its sender chain, and its verdict.
    Explain {
        /// The container's id, or a prefix of it that names one container.
        container: String,
        /// The audit log `clawtrace run --audit-log` writes (its rotated files are read too).
        #[arg(long, value_name = "FILE", default_value = defaults::AUDIT_LOG)]
        audit_log: PathBuf,
        /// One JSON object: the container's records and the verdict.
        #[arg(long)]
        json: bool,
    },
    /// Work with hashed agent_name label values.
    #[command(subcommand)]
    Labels(LabelsCommand),
}

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Print the agent name a hashed label value (`h_…`) stands for.
    Lookup {
        hash: String,
        /// Where the label key and lookup table are kept.
        #[arg(long, value_name = "DIR", default_value = defaults::STATE_DIR)]
        state_dir: PathBuf,
    },
}

/// How `run` writes events.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// Text output: by default one line per event an operator acts on (a container created,
    /// each kill with its sender chain, OOM marks, violations, GPU sharing, lingering, the
    /// verdict at the end); -v adds every process exec and exit, -vv mounts, volumes and device
    /// accesses. JSON output has every event.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// What to trace and where to export it: the flags `run` and `top` share.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A regular expression over cgroup paths (relative to the cgroup v2 root) that marks a
    /// container; a named group `id` picks its id (default: the last path element) and `agent`
    /// its agent name. May be given several times; tried before the built-in runtime layouts.
    #[arg(long = "container-cgroup-pattern", value_name = "REGEX")]
    pub container_cgroup_pattern: Vec<String>,
    /// runc's state directory: a cgroup named after a container there is a bare runc container.
    #[arg(long, value_name = "DIR", default_value = defaults::RUNC_ROOT)]
    pub runc_root: PathBuf,
    /// containerd's state folder (its `state` setting): its task bundles there give
    /// `agent_name` (OCI annotations) and the Kubernetes names of CRI containers.
    #[arg(long, value_name = "DIR", default_value = defaults::CONTAINERD_STATE)]
    pub containerd_state: PathBuf,
    /// A container whose init exited this long ago while its cgroup remains is reported as
    /// lingering (e.g. 30s, 1m, 500ms).
    #[arg(long, value_name = "DURATION", default_value = defaults::LINGER_AFTER, value_parser = parse_duration)]
    pub linger_after: Duration,
    /// Size of the kernel ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = defaults::RING_BUFFER_BYTES, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// A host path that must only be bind-mounted read-only into containers; a writable bind of
    /// it (or of anything under it) is reported as a violation. Repeatable.
    #[arg(long = "read-only-volume", value_name = "PATH")]
    pub read_only_volume: Vec<String>,

    /// GPU device numbers whose accesses are followed: MAJOR, MAJOR:MINOR or MAJOR:FIRST-LAST
    /// (character devices; up to 8; default NVIDIA's 195 and the DRM render nodes
    /// 226:128-255). Repeatable; the first one given replaces the defaults.
    #[arg(long = "gpu-device", value_name = "DEVICE", default_values = crate::source::devices::DEFAULT_GPU_DEVICES, value_parser = crate::source::devices::parse_device_range)]
    pub gpu_device: Vec<tracer_common::DeviceRange>,
    /// Do not attach the cgroup device hook: GPU use is then known from NVML only.
    #[arg(long)]
    pub no_gpu_tracking: bool,
    /// Also trace the mount system calls containers make, for mount durations
    /// (container_mount_duration_seconds), `mount` events and the share of each start spent
    /// mounting. Costs every system call of every task on the node, container or not, the
    /// kernel's traced path (tens of nanoseconds each; see README, Performance). Volumes and
    /// their violations do not need it: they come from each container's mount table.
    #[arg(long)]
    pub trace_mount_syscalls: bool,
    /// How often GPU processes are read through NVML (when libnvidia-ml.so.1 is present).
    #[arg(long, value_name = "DURATION", default_value = defaults::GPU_POLL, value_parser = parse_duration)]
    pub gpu_poll_interval: Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub prometheus_listen: Option<std::net::SocketAddr>,
    /// Export metrics and container spans over OTLP. Also on when an OTEL_EXPORTER_OTLP_*ENDPOINT
    /// variable is set; endpoint, protocol, headers and resource come from the OTEL_* variables.
    #[arg(long)]
    pub otlp: bool,
    /// How often metrics are pushed over OTLP (OTEL_METRIC_EXPORT_INTERVAL wins when set).
    #[arg(long, value_name = "DURATION", default_value = defaults::OTLP_INTERVAL, value_parser = parse_duration)]
    pub otlp_interval: Duration,
    /// Container spans, and audit log records, waiting for the collector at most (each); past
    /// that the oldest are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = defaults::OTLP_MAX_QUEUED_SPANS)]
    pub otlp_max_queued_spans: usize,

    /// Append each container's life to FILE, one JSON line per record (creation, deletion with
    /// the verdict, the init's exec, every exit and signal, OOM marks, volumes, GPU use);
    /// `clawtrace explain` reads it.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit log before it passes this size.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::AUDIT_LOG_MAX_BYTES)]
    pub audit_log_max_bytes: u64,
    /// Rotated audit logs kept (FILE.1 … FILE.N).
    #[arg(long, value_name = "N", default_value_t = defaults::AUDIT_LOG_KEEP)]
    pub audit_log_keep: usize,

    /// Where a container's agent_name comes from, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = defaults::AGENT_SOURCES
    )]
    pub agent_sources: Vec<AgentSource>,
    /// The Docker label / OCI annotation that holds the agent name.
    #[arg(long, value_name = "KEY", default_value = defaults::AGENT_LABEL_KEY)]
    pub agent_label_key: String,
    /// The environment variable of a container's init that holds the agent name.
    #[arg(long, value_name = "NAME", default_value = defaults::AGENT_ENV_VAR)]
    pub agent_env_var: String,
    /// The Docker Engine API socket (only read).
    #[arg(long, value_name = "PATH", default_value = defaults::DOCKER_SOCKET)]
    pub docker_socket: PathBuf,
    /// `plain` exports sanitized agent names; `hash` exports keyed hashes (see `labels lookup`).
    #[arg(long, value_enum, default_value = "plain")]
    pub label_mode: LabelMode,
    /// Distinct agent_name values exported at most; the rest become `_overflow`.
    #[arg(long, value_name = "N", default_value_t = defaults::LABEL_MAX_VALUES)]
    pub label_max_values: usize,
    /// An agent_name with no container for this long is forgotten and its series dropped.
    #[arg(long, value_name = "DURATION", default_value = defaults::LABEL_TTL, value_parser = parse_duration)]
    pub label_ttl: Duration,
    /// Where the label key and lookup table are kept (hash mode).
    #[arg(long, value_name = "DIR", default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 1m, 500ms)"))
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("clawtrace").chain(args.iter().copied()))
    }

    #[test]
    fn run_flags() {
        let cli = parse(&[
            "run",
            "--output",
            "json",
            "--container-cgroup-pattern",
            "^/a/(?P<id>.+)$",
            "--container-cgroup-pattern",
            "^/b$",
            "--linger-after",
            "1500ms",
            "--ring-buffer-size",
            "65536",
        ])
        .unwrap();
        let Command::Run { output, trace } = cli.command else {
            panic!("not run")
        };
        assert_eq!(output.output, Format::Json);
        assert_eq!(trace.container_cgroup_pattern.len(), 2);
        assert_eq!(trace.linger_after, Duration::from_millis(1500));
        assert_eq!(trace.ring_buffer_size, 65536);
    }

    #[test]
    fn top_takes_the_tracing_flags_and_not_the_output_ones() {
        let cli = parse(&[
            "top",
            "--container-cgroup-pattern",
            "^/a/(?P<agent>[^/]+)/(?P<id>.+)$",
            "--agent-sources",
            "pattern",
            "--linger-after",
            "10s",
        ])
        .unwrap();
        let Command::Top(args) = cli.command else {
            panic!("not top")
        };
        assert_eq!(args.container_cgroup_pattern.len(), 1);
        assert_eq!(args.agent_sources, [AgentSource::Pattern]);
        assert_eq!(args.linger_after, Duration::from_secs(10));
        for bad in [
            &["top", "--output", "json"][..],
            &["top", "-v"],
            &["top", "--linger-after", "soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["run", "--ring-buffer-size", "5000"][..],
            &["run", "--ring-buffer-size", "many"],
            &["run", "--linger-after", "soon"],
            &["run", "--output", "xml"],
            &["run", "--no-such-flag"],
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
