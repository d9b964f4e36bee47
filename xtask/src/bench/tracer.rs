//! The tracers under test, run as child processes: clawtrace (the release build) and bpftrace
//! with a script on the same tracepoints. Each is started, waited for until its programs are
//! attached, and stopped with SIGINT as a user would; a guard kills it if the benchmark fails.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::workload::CONTAINER_PATTERN;

/// How long a tracer may take to attach its programs.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a tracer may take to stop after SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a tracer to act on SIGINT before sending it again.
const RESIGNAL_AFTER: Duration = Duration::from_secs(5);

/// The bpftrace peer: the tracepoints clawtrace's hot path uses (cgroup mkdir and rmdir, exec,
/// exit, signal_generate) and two more by which it follows tasks into the cgroups
/// (cgroup_attach_task, task_newtask: a bpftrace script cannot read a signal target's cgroup),
/// comparable work per event (cgroups and tasks followed in hash maps keyed by id and pid, the
/// last signal and its sender kept per process, the wait status read from the task at exit) and
/// one line printed per event.
pub const BPFTRACE_SCRIPT: &str = r#"
tracepoint:cgroup:cgroup_mkdir /args->root == 0/ {
  @cg[args->id] = nsecs;
  printf("mkdir %llu %s\n", args->id, str(args->path));
}
tracepoint:cgroup:cgroup_rmdir /args->root == 0 && @cg[args->id]/ {
  printf("rmdir %llu %s %llu\n", args->id, str(args->path), nsecs - @cg[args->id]);
  delete(@cg[args->id]);
}
tracepoint:cgroup:cgroup_attach_task /args->dst_root == 0 && @cg[args->dst_id]/ {
  @task[args->pid] = args->dst_id;
  printf("attach %d %llu %s\n", args->pid, args->dst_id, str(args->comm));
}
tracepoint:task:task_newtask /@cg[cgroup]/ {
  @task[args->pid] = cgroup;
}
tracepoint:sched:sched_process_exec /@cg[cgroup]/ {
  @task[pid] = cgroup;
  printf("exec %d %s %s\n", pid, comm, str(args->filename));
}
tracepoint:signal:signal_generate /@task[args->pid]/ {
  @sig[args->pid] = args->sig;
  @sender[args->pid] = pid;
  printf("signal %d %s -> %d %d code %d\n", pid, comm, args->pid, args->sig, args->code);
}
tracepoint:sched:sched_process_exit /@task[tid]/ {
  printf("exit %d %s status %d signal %d sender %d\n", pid, comm, curtask->exit_code, @sig[pid], @sender[pid]);
  delete(@task[tid]); delete(@sig[pid]); delete(@sender[pid]);
}
"#;

/// Reference programs for the per-probe cost, run by bpftrace beside clawtrace: what this
/// kernel charges for a program that does nothing, for a per-CPU counter, and for a hash-map
/// counter keyed by pid, on hot tracepoints.
pub const CALIBRATION_SCRIPT: &str = r#"
tracepoint:task:task_newtask { }
tracepoint:sched:sched_process_exit { @exits = count(); }
tracepoint:signal:signal_generate { @signals[args->pid] = count(); }
"#;

/// What each program of [`CALIBRATION_SCRIPT`] is, by the name the kernel gives it.
pub const CALIBRATION_PROGRAMS: &[(&str, &str)] = &[
    ("task_newtask", "empty program (task_newtask)"),
    ("sched_process_e", "per-CPU counter (sched_process_exit)"),
    (
        "signal_generate",
        "hash-map counter keyed by pid (signal_generate)",
    ),
];

/// bpftrace writing one record per event, as its users do: what writing a record costs the
/// tool people reach for, measured in the storm beside clawtrace. (Programs are told apart by
/// the kernel's 15-character names, so exec, whose name is exit's, is left out.)
pub const STORM_REFERENCE_SCRIPT: &str = r#"
tracepoint:task:task_newtask { printf("fork %d %d\n", pid, args->pid); }
tracepoint:sched:sched_process_exit { printf("exit %d %d %s\n", pid, tid, comm); }
tracepoint:signal:signal_generate { printf("signal %d %d %d\n", pid, args->pid, args->sig); }
"#;

/// Each program of [`STORM_REFERENCE_SCRIPT`] by the name the kernel gives it, clawtrace's
/// program on the same hook, and what the hook is.
pub const STORM_REFERENCE_PROGRAMS: &[(&str, &str, &str)] = &[
    ("task_newtask", "task_newtask", "fork (task_newtask)"),
    (
        "sched_process_e",
        "sched_process_exit",
        "exit (sched_process_exit)",
    ),
    (
        "signal_generate",
        "signal_generate",
        "signal (signal_generate)",
    ),
];

/// libbpf-tools' process-exit and signal tracers (Debian's `libbpf-tools`).
pub const EXITSNOOP: &str = "/usr/sbin/exitsnoop";
pub const SIGSNOOP: &str = "/usr/sbin/sigsnoop";

/// A running tracer.
pub struct Tracer {
    pub name: &'static str,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    /// Where clawtrace serves `/metrics`.
    pub metrics: Option<SocketAddr>,
}

/// How a tracer ended.
pub struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Tracer {
    /// Starts `clawtrace run EXTRA` with the benchmark's container pattern and metrics on a free
    /// loopback port; stdout goes to `stdout`. Returns once it says `tracing:`.
    pub fn clawtrace(binary: &Path, stdout: &Path, extra: &[&str]) -> Result<Tracer> {
        let addr = free_port()?;
        let mut cmd = Command::new(binary);
        cmd.args(["run", "--container-cgroup-pattern"])
            .arg(CONTAINER_PATTERN)
            .arg("--prometheus-listen")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "info");
        let mut tracer = Tracer::spawn("clawtrace", cmd, stdout)?;
        tracer.metrics = Some(addr);
        tracer.wait_ready(|t| t.stderr_text().contains("tracing:"))?;
        Ok(tracer)
    }

    /// Starts bpftrace on `script`; stdout goes to `stdout`. Returns once it has attached.
    pub fn bpftrace(script: &Path, stdout: &Path) -> Result<Tracer> {
        let mut cmd = Command::new("bpftrace");
        cmd.arg(script);
        let mut tracer = Tracer::spawn("bpftrace", cmd, stdout)?;
        // "Attaching N probes..." comes before the programs are loaded: wait until it holds N
        // programs, then give the last attachment a moment.
        tracer.wait_ready(|t| {
            let Some(n) = fs::read_to_string(stdout).ok().and_then(|text| {
                let rest = &text[text.find("Attaching ")? + "Attaching ".len()..];
                rest.split_whitespace().next()?.parse::<usize>().ok()
            }) else {
                return false;
            };
            super::probes::prog_ids_of(t.pid()).is_ok_and(|ids| ids.len() >= n)
        })?;
        thread::sleep(Duration::from_millis(300));
        Ok(tracer)
    }

    /// Starts libbpf-tools' `exitsnoop` and `sigsnoop` side by side under one shell, their
    /// output to `stdout`; SIGINT to the shell stops both. Returns once both have attached.
    pub fn snoops(stdout: &Path) -> Result<Tracer> {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "\"$1\" & e=$!; \"$2\" & s=$!; \
             trap 'kill -INT $e $s; wait $e $s; exit 0' INT TERM; wait",
            "snoops",
            EXITSNOOP,
            SIGSNOOP,
        ]);
        let mut tracer = Tracer::spawn("exitsnoop + sigsnoop", cmd, stdout)?;
        // Each holds one program once attached (sched_process_exit; signal_generate).
        tracer.wait_ready(|t| {
            let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid()))
                .unwrap_or_default();
            let pids: Vec<u32> = children
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            pids.len() == 2
                && pids
                    .iter()
                    .all(|&pid| super::probes::prog_ids_of(pid).is_ok_and(|ids| !ids.is_empty()))
        })?;
        thread::sleep(Duration::from_millis(300));
        Ok(tracer)
    }

    fn spawn(name: &'static str, mut cmd: Command, stdout: &Path) -> Result<Tracer> {
        let out =
            fs::File::create(stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("{name}: no stderr pipe"))?;
        let sink = Arc::clone(&stderr);
        let reader = thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                    text.push_str(&line);
                    text.push('\n');
                }
            })
            .context("starting a stderr reader")?;
        Ok(Tracer {
            name,
            child: Some(child),
            stderr,
            reader: Some(reader),
            metrics: None,
        })
    }

    fn wait_ready(&mut self, ready: impl Fn(&Tracer) -> bool) -> Result<()> {
        let started = Instant::now();
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait().context("checking on the tracer")? {
                    thread::sleep(Duration::from_millis(50));
                    bail!(
                        "{} exited ({status}) before attaching: {}",
                        self.name,
                        last_lines(&self.stderr_text(), 5)
                    );
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not attach within {}s: {}",
                    self.name,
                    START_TIMEOUT.as_secs(),
                    last_lines(&self.stderr_text(), 5)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// SIGINT (again every [`RESIGNAL_AFTER`]), then waits for it to exit (SIGKILL after
    /// [`STOP_TIMEOUT`]).
    /// Stops the tracer (see [`Tracer::stop`]); an error if it did not exit successfully.
    pub fn stop_ok(self) -> Result<Stopped> {
        let name = self.name;
        let stopped = self.stop()?;
        if !stopped.status.success() {
            bail!(
                "{name} exited with {}: {}",
                stopped.status,
                last_lines(&stopped.stderr, 5)
            );
        }
        Ok(stopped)
    }

    pub fn stop(mut self) -> Result<Stopped> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} already stopped", self.name))?;
        signal(&child, libc::SIGINT);
        let started = Instant::now();
        let mut signalled = started;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the tracer")? {
                break status;
            }
            // A bpftrace run once outlived its SIGINT by 30 s after a busy run (cause not
            // found): ask again every few seconds rather than lose the whole section.
            if signalled.elapsed() > RESIGNAL_AFTER {
                signal(&child, libc::SIGINT);
                signalled = Instant::now();
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let status = child.wait().context("waiting for the tracer")?;
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                bail!(
                    "{} did not stop within {}s of SIGINT and was killed ({status})",
                    self.name,
                    STOP_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(Stopped {
            status,
            stderr: self.stderr_text(),
        })
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet (we hold its Child and
        // have not waited on it), so the pid cannot have been reused.
        unsafe { libc::kill(pid, signal) };
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    listener
        .local_addr()
        .context("finding a free loopback port")
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The `/metrics` text exposition of a clawtrace.
pub fn scrape(addr: SocketAddr) -> Result<Metrics> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading /metrics from {addr}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("/metrics: no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "/metrics answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(Metrics::parse(&dechunk(body)));
    }
    Ok(Metrics::parse(body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Samples of a text exposition: (name with labels, value).
pub struct Metrics(Vec<(String, f64)>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// Sum of every series of metric `name` whose labels contain each of `labels`
    /// (`key="value"` strings).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                metric == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Each series of metric `name`, by the value of label `key`.
    pub fn by_label(&self, name: &str, key: &str) -> Vec<(String, f64)> {
        let needle = format!("{key}=\"");
        self.0
            .iter()
            .filter_map(|(series, v)| {
                let (metric, rest) = series.split_once('{')?;
                if metric != name {
                    return None;
                }
                let start = rest.find(&needle)? + needle.len();
                let end = rest[start..].find('"')? + start;
                Some((rest[start..end].to_string(), *v))
            })
            .collect()
    }
}

/// (VmHWM, VmRSS) of process `pid` in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// Resets process `pid`'s VmHWM to its current RSS (`5` to /proc/PID/clear_refs), so a later
/// VmHWM is the peak since now.
pub fn reset_peak(pid: u32) -> Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// KiB of process `pid`'s RSS in BPF map mappings (the ring buffer, mapped into the reader; its
/// data pages are mapped twice so records can wrap, and both count).
pub fn bpf_map_rss_kib(pid: u32) -> Result<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let mut total = 0;
    let mut in_map = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_map = line.ends_with("anon_inode:bpf-map");
        } else if in_map {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expositions_are_summed_by_metric_and_label() {
        let m = Metrics::parse(
            "# TYPE clawtrace_events counter\n\
             clawtrace_events_total{kind=\"exec\"} 3\n\
             clawtrace_events_total{kind=\"exit\"} 4\n\
             container_changes_total{operation=\"create\",agent_name=\"a\"} 2\n\
             container_changes_total{operation=\"delete\",agent_name=\"a\"} 1\n\
             clawtrace_label_overflow_total 7\n",
        );
        assert_eq!(m.sum("clawtrace_events_total", &[]), 7.0);
        assert_eq!(
            m.sum("container_changes_total", &["operation=\"create\""]),
            2.0
        );
        assert_eq!(m.sum("clawtrace_label_overflow_total", &[]), 7.0);
        assert_eq!(
            m.by_label("clawtrace_events_total", "kind"),
            vec![("exec".to_string(), 3.0), ("exit".to_string(), 4.0)]
        );
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
