//! Shared helpers of the privileged end-to-end tests: the privilege gate, real cgroup v2
//! sub-cgroups standing in for containers, processes started inside them, and a running
//! `clawtrace run --output json` whose events a test waits for.
#![allow(dead_code)] // Each test file uses a different part.

pub mod otlp;

use std::{
    ffi::CString,
    io::{BufRead, BufReader},
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

/// Environment variable that turns a privileged test that would skip into a failure.
pub const REQUIRE_PRIVILEGED: &str = "CLAWTRACE_REQUIRE_PRIVILEGED";

/// Prefix of every cgroup the tests make; `clawtrace` is told it marks a container.
pub const CGROUP_PREFIX: &str = "clawtrace-test-";

/// The pattern that makes the tests' cgroups containers, with the part after the prefix as id.
pub fn test_pattern() -> String {
    format!("^/{CGROUP_PREFIX}(?P<id>[^/]+)$")
}

/// True when the test may run. Without root it says why and skips, unless
/// CLAWTRACE_REQUIRE_PRIVILEGED=1, which makes the skip a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let reason = "needs root (loads eBPF programs, makes cgroups)";
    if std::env::var(REQUIRE_PRIVILEGED).as_deref() == Ok("1") {
        panic!("{test}: privileged test cannot run: {reason}, and {REQUIRE_PRIVILEGED}=1");
    }
    eprintln!("skipping {test}: {reason}; run `cargo xtask test` as root");
    false
}

/// Returns from the test when it cannot run (see [`privileged`]).
#[macro_export]
macro_rules! require_privileged {
    () => {
        if !$crate::support::privileged(module_path!()) {
            return;
        }
    };
}

/// Environment variable multiplying every time limit of the tests: slow machines (a kernel
/// under QEMU's TCG) set it; unset, limits are as written.
pub const TIME_SCALE: &str = "CLAWTRACE_TIME_SCALE";

/// `d` times [`TIME_SCALE`] (1 when unset).
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var(TIME_SCALE)
        .ok()
        .map(|s| {
            s.parse::<u32>()
                .unwrap_or_else(|_| panic!("{TIME_SCALE}={s} is not a whole number"))
        })
        .unwrap_or(1);
    d * scale.max(1)
}

pub fn cgroup2_root() -> PathBuf {
    clawtrace::sys::cgroup2_mount().expect("no cgroup v2 mount")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A real cgroup v2 sub-cgroup: a container stand-in. Removed (after killing what is left in
/// it) on drop unless removed by the test.
pub struct TestCgroup {
    pub dir: PathBuf,
    pub name: String,
    id: u64,
    removed: bool,
}

impl TestCgroup {
    pub fn new(tag: &str) -> TestCgroup {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{CGROUP_PREFIX}{}-{tag}-{n}", std::process::id());
        let dir = cgroup2_root().join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let id = std::fs::metadata(&dir).expect("stat cgroup").ino();
        TestCgroup {
            dir,
            name,
            id,
            removed: false,
        }
    }

    /// The container id clawtrace gives it under [`test_pattern`].
    pub fn container_id(&self) -> String {
        self.name[CGROUP_PREFIX.len()..].to_string()
    }

    /// The cgroup id: the directory's inode number (read when it was made).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Kills every process left in the cgroup (cgroup.kill) and waits until it is empty.
    pub fn kill_all(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        wait_until("an empty cgroup", Duration::from_secs(5), || {
            self.procs().is_empty()
        });
    }

    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// Starts `cmd` inside this cgroup: the child moves itself in before it execs, so
    /// everything it runs happens in the container.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let procs = CString::new(self.dir.join("cgroup.procs").to_string_lossy().as_bytes())
            .expect("path without NUL");
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (open, write, close) on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Writing 0 moves the writing process itself.
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
        cmd.spawn().expect("spawn in cgroup")
    }

    /// Removes the cgroup; it must be empty.
    pub fn remove(&mut self) {
        let deadline = Instant::now() + scaled(Duration::from_secs(5));
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => break,
                // Tasks that just exited may not have left the cgroup yet.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("rmdir {}: {e}", self.dir.display()),
            }
        }
        self.removed = true;
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + scaled(Duration::from_secs(5));
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `waitpid` on a child: the raw status the parent sees.
pub fn wait_status(child: &mut Child) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is valid for the call.
    let rc = unsafe { libc::waitpid(child.id() as i32, &mut status, 0) };
    assert_eq!(
        rc,
        child.id() as i32,
        "waitpid: {}",
        std::io::Error::last_os_error()
    );
    status
}

/// [`wait_status`] for a child that must end by itself within `timeout` ([`scaled`]): past
/// it, the child is killed and the test fails naming `what` it waited for.
pub fn wait_status_within(child: &mut Child, timeout: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        let mut status = 0;
        // SAFETY: polls our own child; `status` is valid for the call.
        let rc = unsafe { libc::waitpid(child.id() as i32, &mut status, libc::WNOHANG) };
        if rc == child.id() as i32 {
            return status;
        }
        assert_eq!(rc, 0, "waitpid: {}", std::io::Error::last_os_error());
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = wait_status(child);
            panic!("timed out after {:?} waiting for {what}", scaled(timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `signal` to `pid` from this process.
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
/// (`timeout` is [`scaled`].)
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + scaled(timeout);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Collects a just-started clawtrace's stderr lines and waits until it says its programs are
/// attached (`tracing: …`); kills it and fails the test if that does not come within 30 s
/// ([`scaled`]).
pub fn await_tracing(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let pipe = child.stderr.take().expect("stderr piped");
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            // Kept before it is announced, so the waiter finds the line.
            let ready = line.contains("tracing:");
            sink.lock().unwrap().push(line);
            if ready {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx
        .recv_timeout(scaled(Duration::from_secs(30)))
        .is_err()
    {
        let _ = child.kill();
        panic!("clawtrace did not start: {:?}", stderr.lock().unwrap());
    }
    stderr
}

/// A running `clawtrace run --output json`, its events collected as they come.
///
/// Every stdout line must be one JSON value: a line that is not (or is not UTF-8) is kept in
/// `bad_lines`, and the accessors, [`Clawtrace::stop`] and drop fail the test with it.
pub struct Clawtrace {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    bad_lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// How long a test waits for an event ([`scaled`]).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

impl Clawtrace {
    /// Starts clawtrace with the tests' cgroup pattern plus `extra` arguments, and waits until
    /// its programs are attached.
    pub fn start(extra: &[&str]) -> Clawtrace {
        Clawtrace::start_with_env(extra, &[])
    }

    /// As [`Clawtrace::start`], with extra environment variables (e.g. `OTEL_*`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Clawtrace {
        Clawtrace::start_matching(&test_pattern(), extra, env)
    }

    /// Follows only the test cgroups whose tag starts with `scope`, for tests that count what
    /// clawtrace exports while other tests make containers too.
    pub fn start_scoped(scope: &str, extra: &[&str], env: &[(&str, &str)]) -> Clawtrace {
        let pattern = format!("^/{CGROUP_PREFIX}(?P<id>[0-9]+-{scope}[^/]*)$");
        Clawtrace::start_matching(&pattern, extra, env)
    }

    fn start_matching(pattern: &str, extra: &[&str], env: &[(&str, &str)]) -> Clawtrace {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clawtrace"));
        cmd.args([
            "run",
            "--output",
            "json",
            "--container-cgroup-pattern",
            pattern,
        ])
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start clawtrace");
        let events = Arc::new(Mutex::new(Vec::new()));
        let bad_lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&events);
        let bad = Arc::clone(&bad_lines);
        // A panic here would end only this thread, which nobody joins: bad lines are kept for
        // the test's thread to fail on.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        bad.lock()
                            .unwrap()
                            .push(format!("(reading stdout failed: {e})"));
                        break;
                    }
                };
                let parsed = std::str::from_utf8(&line)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(value) => sink.lock().unwrap().push(value),
                    Err(e) => bad
                        .lock()
                        .unwrap()
                        .push(format!("({e}): {}", String::from_utf8_lossy(&line))),
                }
            }
        });
        let stderr = await_tracing(&mut child);
        Clawtrace {
            child,
            events,
            stderr,
            bad_lines,
            reader: Some(reader),
        }
    }

    /// Fails the test if clawtrace printed a line that is not JSON so far.
    pub fn assert_json_only(&self) {
        let bad = self.bad_lines.lock().unwrap();
        assert!(
            bad.is_empty(),
            "clawtrace printed {} line(s) that are not JSON, the first {}",
            bad.len(),
            bad[0]
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// clawtrace's resident memory in KiB, from /proc.
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Lines clawtrace wrote to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.assert_json_only();
        self.stderr.lock().unwrap().clone()
    }

    /// Events seen so far that match `pred`.
    pub fn matching(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.assert_json_only();
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// Waits for the first event matching `pred`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + scaled(EVENT_TIMEOUT);
        loop {
            self.assert_json_only();
            if let Some(v) = self.events.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; events: {:#?}; stderr: {:?}",
                    self.events.lock().unwrap(),
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `event` (e.g. "process_exit") of container `id` that also matches `pred`.
    pub fn wait_event(&self, event: &str, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(&format!("{event} of {id}"), |v| {
            v["event"] == event && v["container_id"] == id && pred(v)
        })
    }

    /// Stops clawtrace with SIGINT; it must exit 0 within 5 s, and every line it printed must
    /// be JSON. Returns its stderr lines.
    pub fn stop(mut self) -> Vec<String> {
        interrupt_and_wait(&mut self.child, &self.stderr);
        // The stdout reader ends at the pipe's end, once it has taken the last lines.
        let reader = self.reader.take().expect("stdout reader");
        wait_until("clawtrace's stdout to end", Duration::from_secs(5), || {
            reader.is_finished()
        });
        reader.join().expect("the stdout reader never panics");
        // Give the stderr reader a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        self.assert_json_only();
        self.stderr.lock().unwrap().clone()
    }
}

/// Sends SIGINT to a running clawtrace and asserts it exits 0 within 5 s ([`scaled`]; its
/// stderr in the failure message).
pub fn interrupt_and_wait(child: &mut Child, stderr: &Mutex<Vec<String>>) {
    kill(child.id(), libc::SIGINT);
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(
                status.success(),
                "clawtrace exited with {status}: {:?}",
                stderr.lock().unwrap()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "clawtrace did not exit within 5 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Clawtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that ends without `stop` still fails on a line that is not JSON (unless it
        // is failing already).
        if !std::thread::panicking() {
            if let Some(reader) = self.reader.take() {
                let deadline = Instant::now() + scaled(Duration::from_secs(5));
                while !reader.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            self.assert_json_only();
        }
    }
}

/// Whether `path` exists (for tests that need a Debian package).
pub fn have(path: &str) -> bool {
    Path::new(path).exists()
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET path` over HTTP/1.0; returns the body of a 200 response.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// The value of the exposition sample `series` (the exact text before the value), if present.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Debian's python3 (installed by `cargo xtask setup`) rather than a version manager's shim,
/// which would run extra processes in the container.
pub fn python(code: &str) -> Command {
    let python = if have("/usr/bin/python3") {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.args(["-c", code]);
    cmd
}

pub fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    cmd
}

/// The `SigCgt`/`SigIgn`/… mask of `pid` from /proc.
pub fn signal_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

pub fn has_signal(mask: u64, signal: i32) -> bool {
    mask & (1 << (signal - 1)) != 0
}

/// The exit event of the container's init.
pub fn init_exit(ct: &Clawtrace, cgroup: &TestCgroup, pid: u32) -> Value {
    ct.wait_event("process_exit", &cgroup.container_id(), |v| v["pid"] == pid)
}

/// Asserts the parts of an exit that follow from the wait status alone.
pub fn assert_status(exit: &Value, status: i32) {
    if libc::WIFEXITED(status) {
        assert_eq!(exit["exit_code"], libc::WEXITSTATUS(status), "{exit}");
        assert_eq!(exit["signal"], Value::Null, "{exit}");
    } else {
        assert!(libc::WIFSIGNALED(status));
        assert_eq!(exit["exit_code"], 128 + libc::WTERMSIG(status), "{exit}");
        assert_eq!(exit["core_dumped"], libc::WCOREDUMP(status), "{exit}");
    }
    assert_eq!(exit["wait_status"], status, "{exit}");
}

/// A memory limit on a test container. Where the memory controller is bound to cgroup v1 (as
/// on this kind of host) it is a v1 memory cgroup below the one this process is in, which the
/// container's process joins itself; where v2 holds the controller, `memory.max` of the
/// container's own cgroup.
pub enum MemoryLimit {
    V1 { dir: std::path::PathBuf },
    V2,
}

impl MemoryLimit {
    /// A command that allocates and touches 512 MiB, for a shell under a smaller limit. The
    /// pages the interpreter runs from are locked as they fault in (mlockall MCL_CURRENT |
    /// MCL_ONFAULT): else, near the limit, reclaim keeps evicting its code and the refaults
    /// count as progress, so the OOM killer waits while the process thrashes (minutes on a
    /// slow disk).
    pub const HOG: &'static str = "/usr/bin/python3 -c 'import ctypes; \
        assert ctypes.CDLL(None, use_errno=True).mlockall(5) == 0, ctypes.get_errno(); \
        b = bytearray(512 << 20); b[::4096] = b\"x\" * (len(b) // 4096)'";

    pub fn new(cgroup: &TestCgroup, limit: u64) -> MemoryLimit {
        let v2_root = cgroup2_root();
        let v2_has_memory = std::fs::read_to_string(v2_root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "memory");
        if v2_has_memory {
            std::fs::write(v2_root.join("cgroup.subtree_control"), "+memory")
                .expect("enable memory");
            std::fs::write(cgroup.dir.join("memory.max"), limit.to_string()).expect("memory.max");
            let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
            return MemoryLimit::V2;
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let path = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .expect("no memory controller in v1 or v2");
        let base = std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        let dir = base.join(format!("clawtrace-oom-{}", cgroup.name));
        std::fs::create_dir_all(&dir).expect("v1 memory cgroup");
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).expect("limit");
        MemoryLimit::V1 { dir }
    }

    /// Shell commands that put the shell under the limit.
    pub fn join_command(&self) -> String {
        match self {
            MemoryLimit::V1 { dir } => format!("echo $$ > {};", dir.join("tasks").display()),
            MemoryLimit::V2 => String::new(),
        }
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let MemoryLimit::V1 { dir } = self {
            let deadline = Instant::now() + scaled(Duration::from_secs(5));
            while std::fs::remove_dir(&*dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Makes character device node `path` (mode 0666) for `major:minor`.
pub fn mknod(path: &Path, major: u32, minor: u32) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: `c` is a valid NUL-terminated path for the call.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Attaches to cgroup `dir` a device program that denies character device `major:minor` and
/// allows everything else, the way runc attaches its device filter on cgroup v2
/// (`BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI`). It stays attached until the cgroup is removed.
pub fn deny_device(dir: &Path, major: u32, minor: u32) {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    let ldxw = |dst: u64, src: u64, off: u64| 0x61 | (dst | src << 4) << 8 | off << 16;
    let jne = |dst: u64, imm: u32, off: u64| 0x55 | dst << 8 | off << 16 | u64::from(imm) << 32;
    let insns: [u64; 8] = [
        ldxw(2, 1, 4), // r2 = ctx->major
        jne(2, major, 4),
        ldxw(2, 1, 8), // r2 = ctx->minor
        jne(2, minor, 2),
        0xb7, // r0 = 0: deny
        0x95,
        0xb7 | 1 << 32, // r0 = 1: allow
        0x95,
    ];
    // Kernels before 5.11 charge programs to RLIMIT_MEMLOCK.
    clawtrace::sys::raise_memlock_limit();
    let prog = clawtrace::sys::load_device_program(&insns, &mut [])
        .unwrap_or_else(|e| panic!("loading the device filter: {e}"));
    let cgroup = std::fs::File::open(dir).expect("open the cgroup");
    use std::os::fd::AsRawFd;
    let mut attach = [0u8; 20];
    for (at, value) in [
        (0, cgroup.as_raw_fd() as u32),
        (4, prog.as_raw_fd() as u32),
        (8, BPF_CGROUP_DEVICE),
        (12, BPF_F_ALLOW_MULTI),
    ] {
        attach[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }
    // SAFETY: a BPF_PROG_ATTACH attribute prefix of the size given; the descriptors are open.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, attach.as_mut_ptr(), 20u32) };
    // The attachment holds the program; `prog` closes when it goes.
    assert_eq!(
        r,
        0,
        "attaching the device filter: {}",
        std::io::Error::last_os_error()
    );
}
