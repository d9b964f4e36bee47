//! The machine the figures come from: what it is, how busy it is, and waiting for it to be
//! quiet.

use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::first_line;

/// Facts about the machine the figures come from.
pub struct Machine {
    pub kernel: String,
    pub cores: usize,
    pub cpu: String,
    /// Rounded to a tenth.
    pub memory_gib: f64,
    /// First lines of `bpftrace --version` and `bpftool version`.
    pub bpftrace: String,
    pub bpftool: String,
    /// `git describe --always --dirty`.
    pub commit: String,
}

/// Reads the facts of [`Machine`].
pub fn machine() -> Machine {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let version = |program: &str, arg: &str| -> String {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| first_line(&String::from_utf8_lossy(&o.stdout)).to_string())
            .unwrap_or_default()
    };
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .map(|o| first_line(&String::from_utf8_lossy(&o.stdout)).to_string())
        .unwrap_or_default();
    Machine {
        kernel,
        cores,
        cpu,
        memory_gib: (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        bpftrace: version("bpftrace", "--version"),
        bpftool: version("bpftool", "version"),
        commit,
    }
}

/// The time now, UTC, as `date -u` writes it in ISO 8601.
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| first_line(&String::from_utf8_lossy(&o.stdout)).to_string())
        .unwrap_or_default()
}

/// How busy the machine was over one second ([`quietness`]).
pub struct Load {
    pub cpu_busy_percent: f64,
    /// The busiest processes (comm, CPU %), at most five, at least 5 % each, busiest first.
    pub busiest: Vec<(String, f64)>,
    /// Tracing programs bpftool lists (other tracers': clawtrace is not running then). A
    /// program the kernel does not list (one of the machine's own, say) is not counted.
    pub tracing_programs: usize,
    /// Under 10 % busy and no tracing program listed.
    pub quiet: bool,
}

/// (pid, comm, CPU ticks so far) of every process.
fn process_ticks() -> Vec<(u32, String, u64)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some((pid, comm, ticks))
        })
        .collect()
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Waits until the machine is quiet (at most 5 % busy over 300 ms), for at most 10 s; returns
/// the seconds waited. A stopped tracer leaves work to the kernel (its programs and maps are
/// freed by kernel workers after it exits), and a new one's start leaves some too: neither may
/// run during the next measured workload.
pub fn settle() -> f64 {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let (busy0, total0) = cpu_jiffies();
        thread::sleep(Duration::from_millis(300));
        let (busy1, total1) = cpu_jiffies();
        if total1 > total0 && (busy1 - busy0) * 100 <= 5 * (total1 - total0) {
            break;
        }
    }
    started.elapsed().as_secs_f64()
}

/// How busy the machine is over one second, who keeps it busy, and how many tracepoint
/// programs are loaded: other load or other tracers on the same tracepoints skew every figure.
pub fn quietness() -> Load {
    let before = process_ticks();
    let (busy0, total0) = cpu_jiffies();
    thread::sleep(Duration::from_secs(1));
    let (busy1, total1) = cpu_jiffies();
    let after = process_ticks();
    let busy = if total1 > total0 {
        (busy1 - busy0) as f64 * 100.0 / (total1 - total0) as f64
    } else {
        0.0
    };
    // SAFETY: sysconf has no memory side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut top: Vec<(String, f64)> = after
        .iter()
        .filter_map(|(pid, comm, ticks)| {
            let (_, _, was) = before.iter().find(|(p, c, _)| p == pid && c == comm)?;
            let percent = ticks.saturating_sub(*was) as f64 * 100.0 / hz;
            (percent >= 5.0).then(|| (comm.clone(), percent))
        })
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(5);
    let tracing_programs = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .map_or(0, |v| tracing_programs(&v));
    Load {
        cpu_busy_percent: busy,
        busiest: top,
        tracing_programs,
        quiet: busy < 10.0 && tracing_programs == 0,
    }
}

/// Program types that run on the kernel's events, as `bpftool -j prog show` names them: any of
/// them on the hooks the bench drives adds to what it measures.
const TRACING_TYPES: &[&str] = &[
    "tracepoint",
    "raw_tracepoint",
    "raw_tracepoint_writable",
    "tracing",
    "kprobe",
    "lsm",
    "perf_event",
];

/// How many programs of [`TRACING_TYPES`] `bpftool -j prog show` printed.
fn tracing_programs(progs: &Value) -> usize {
    progs.as_array().map_or(0, |progs| {
        progs
            .iter()
            .filter(|p| {
                p.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| TRACING_TYPES.contains(&t))
            })
            .count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_programs_counts_every_kind_on_kernel_events_and_nothing_else() {
        // As bpftool prints them: a tracepoint, a raw tracepoint, a BTF tracepoint ("tracing"),
        // a kprobe and a BPF-LSM program count; a socket filter and a cgroup device program do
        // not.
        let progs = serde_json::json!([
            {"id": 1, "type": "tracepoint"},
            {"id": 2, "type": "raw_tracepoint"},
            {"id": 3, "type": "tracing"},
            {"id": 4, "type": "kprobe"},
            {"id": 5, "type": "lsm"},
            {"id": 6, "type": "socket_filter"},
            {"id": 7, "type": "cgroup_device"},
            {"id": 8}
        ]);
        assert_eq!(tracing_programs(&progs), 5);
        assert_eq!(tracing_programs(&serde_json::json!([])), 0);
        assert_eq!(tracing_programs(&serde_json::json!({"error": "x"})), 0);
    }
}
