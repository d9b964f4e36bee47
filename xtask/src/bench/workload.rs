//! The synthetic container workload: parallel workers that each run container lifecycles in a
//! loop — a cgroup v2 sub-cgroup made, a process placed in it (it writes "0" to the cgroup's
//! `cgroup.procs` before it execs), the process exiting or killed, the cgroup removed — and keep
//! the ground truth of what they did.
//!
//! Three lifecycles take turns, so every hot probe fires inside a followed cgroup:
//! - `exit`: `busybox true`, exits 0;
//! - `kill`: `busybox sleep`, killed with SIGKILL from outside as soon as it has exec'd;
//! - `fork`: `busybox sh -c '(exit 0); exit 3'`: the shell forks a subshell inside the
//!   container, which exits 0, then the shell exits 3.
//!
//! A process is started the way `posix_spawn` does it (`clone(CLONE_VM | CLONE_VFORK)`), so the
//! workers' own address space is not copied for each one; the child moves itself into the
//! cgroup before it execs.

use std::{
    ffi::OsString,
    fs,
    io::{self, ErrorKind},
    os::unix::{ffi::OsStringExt as _, io::AsRawFd as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// The statically linked busybox of Debian's busybox-static: it execs without a dynamic loader,
/// so a lifecycle costs what the kernel makes it cost.
pub const BUSYBOX: &str = "/bin/busybox";

/// Prefix of every cgroup the benchmark makes (`/bench-<tag>-w<worker>-<n>`), matched by the
/// `--container-cgroup-pattern` given to clawtrace.
pub const CGROUP_PREFIX: &str = "bench-";

/// The pattern clawtrace is run with: the cgroup's name after `bench-` is the container id.
pub const CONTAINER_PATTERN: &str = "^/bench-(?P<id>[^/]+)$";

/// What the workers did, counted by them (the ground truth clawtrace is compared with).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Truth {
    /// Complete lifecycles (cgroup made, process ran and ended, cgroup removed).
    pub lifecycles: u64,
    pub cgroups_made: u64,
    pub cgroups_removed: u64,
    /// Successful execs inside containers (the `fork` lifecycle execs twice).
    pub execs: u64,
    /// Processes that exited with code 0.
    pub exited: u64,
    /// Processes that exited with a non-zero code.
    pub failed: u64,
    /// Processes killed by the SIGKILL a worker sent.
    pub killed: u64,
    /// SIGKILLs sent.
    pub signals: u64,
    /// rmdirs retried because the cgroup still counted an exiting process (diagnostic).
    pub rmdir_retries: u64,
}

impl Truth {
    pub fn add(&mut self, other: &Truth) {
        self.lifecycles += other.lifecycles;
        self.cgroups_made += other.cgroups_made;
        self.cgroups_removed += other.cgroups_removed;
        self.execs += other.execs;
        self.exited += other.exited;
        self.failed += other.failed;
        self.killed += other.killed;
        self.signals += other.signals;
        self.rmdir_retries += other.rmdir_retries;
    }
}

/// How long each worker goes on.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Until this much time has passed since the start.
    Elapsed(Duration),
    /// This many lifecycles per worker.
    Lifecycles(u64),
}

/// The agent name a lifecycle's process carries in `AGENT_NAME` (worker, lifecycle number).
pub type NameFn = dyn Fn(usize, u64) -> OsString + Send + Sync;

/// One run of the workload.
pub struct Spec {
    /// The cgroup v2 mount.
    pub root: PathBuf,
    /// Distinguishes this run's cgroups: `bench-<tag>-w<worker>-<n>`.
    pub tag: String,
    pub workers: usize,
    pub until: Until,
    /// Which lifecycles to run, in turn.
    pub kinds: &'static [Kind],
    pub agent_name: Arc<NameFn>,
    /// Set from outside (SIGINT) to stop early.
    pub stop: Arc<AtomicBool>,
}

/// The result of a run.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub truth: Truth,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exit,
    Kill,
    Fork,
}

/// The three lifecycles, in turn.
pub const MIX: &[Kind] = &[Kind::Exit, Kind::Kill, Kind::Fork];
/// Only the shortest lifecycle.
pub const EXIT_ONLY: &[Kind] = &[Kind::Exit];

impl Kind {
    fn args(self) -> &'static [&'static str] {
        match self {
            Kind::Exit => &["true"],
            Kind::Kill => &["sleep", "3600"],
            Kind::Fork => &["sh", "-c", "(exit 0); exit 3"],
        }
    }
}

/// Runs the workload and returns what the workers did. Every cgroup made is removed and every
/// process reaped, also on error.
pub fn run(spec: &Spec) -> Result<Outcome> {
    let started = Instant::now();
    let deadline = match spec.until {
        Until::Elapsed(d) => Some(started + d),
        Until::Lifecycles(_) => None,
    };
    let results: Vec<Result<Truth>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.workers)
            .map(|w| {
                thread::Builder::new()
                    .name(format!("bench-w{w}"))
                    .spawn_scoped(scope, move || worker(spec, w, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a workload thread panicked"))),
                Err(e) => Err(anyhow!("cannot start a workload thread: {e}")),
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut truth = Truth::default();
    for result in results {
        truth.add(&result?);
    }
    Ok(Outcome { truth, elapsed })
}

fn worker(spec: &Spec, w: usize, deadline: Option<Instant>) -> Result<Truth> {
    let mut truth = Truth::default();
    let mut n: u64 = 0;
    loop {
        if spec.stop.load(Ordering::Relaxed) {
            break;
        }
        match (spec.until, deadline) {
            (Until::Lifecycles(count), _) if n >= count => break,
            (_, Some(deadline)) if Instant::now() >= deadline => break,
            _ => {}
        }
        let kind = spec.kinds[(n as usize + w) % spec.kinds.len()];
        let dir = spec
            .root
            .join(format!("{CGROUP_PREFIX}{}-w{w}-{n}", spec.tag));
        let name = (spec.agent_name)(w, n);
        lifecycle(&dir, kind, &name, &mut truth)
            .with_context(|| format!("lifecycle in {}", dir.display()))?;
        n += 1;
    }
    Ok(truth)
}

/// One container lifecycle in cgroup `dir`.
fn lifecycle(dir: &Path, kind: Kind, name: &OsString, truth: &mut Truth) -> Result<()> {
    fs::create_dir(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    truth.cgroups_made += 1;
    let ran = run_process(dir, kind, name, truth);
    // The cgroup goes whatever happened to the process.
    let removed = remove_cgroup_counting(dir);
    if let Ok(retries) = removed {
        truth.cgroups_removed += 1;
        truth.rmdir_retries += retries;
    }
    ran?;
    removed?;
    truth.lifecycles += 1;
    Ok(())
}

fn run_process(dir: &Path, kind: Kind, name: &OsString, truth: &mut Truth) -> Result<()> {
    let mut child = spawn_in(dir, kind.args(), name)?;
    if kind == Kind::Kill {
        // spawn() returns once the new image is committed, but a SIGKILL then can still stop
        // the exec before it completes (and before sched_process_exec fires): kill only once
        // the process sleeps in the new image, so the ground truth holds its exec.
        if let Err(e) = wait_asleep(child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        if let Err(e) = child.kill() {
            let _ = child.wait();
            return Err(e).context("kill");
        }
        truth.signals += 1;
    }
    let status = child.wait().context("wait")?;
    match (kind, status.code(), status.signal()) {
        (Kind::Exit, Some(0), _) => {
            truth.execs += 1;
            truth.exited += 1;
        }
        (Kind::Kill, _, Some(libc::SIGKILL)) => {
            truth.execs += 1;
            truth.killed += 1;
        }
        (Kind::Fork, Some(3), _) => {
            // 3 only after the subshell was forked and exited 0 (`;` runs it whatever it
            // returns, but a failed fork makes the shell exit 2).
            truth.execs += 1;
            truth.exited += 1;
            truth.failed += 1;
        }
        _ => bail!("{kind:?} lifecycle ended unexpectedly: {status}"),
    }
    Ok(())
}

/// Waits until `child` (`busybox sleep`) blocks in clock_nanosleep (or nanosleep): it has
/// finished its exec and runs the new image.
fn wait_asleep(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/syscall");
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let nr = text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<libc::c_long>().ok());
        if nr == Some(libc::SYS_clock_nanosleep) || nr == Some(libc::SYS_nanosleep) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!(
                "process {pid} did not reach its sleep within 10 s ({})",
                text.trim()
            );
        }
        thread::sleep(Duration::from_micros(50));
    }
}

/// A process started by [`spawn_in`]: killed and reaped on drop unless reaped before.
pub struct Proc {
    pid: libc::pid_t,
    reaped: bool,
}

impl Proc {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.reaped {
            return Err(io::Error::new(ErrorKind::InvalidInput, "already reaped"));
        }
        // SAFETY: kill(2) on our own child, not reaped yet, so its pid is not reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits for it to end and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid status pointer.
            let ret = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if ret == self.pid {
                self.reaped = true;
                return Ok(ExitStatus::from_raw(status));
            }
            let err = io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}

/// What the child of [`spawn_in`] needs, prepared by the parent (the child may not allocate).
struct ChildArgs {
    procs: libc::c_int,
    null: libc::c_int,
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

/// Exit code of a child that could not move itself into its cgroup.
const NOT_PLACED: libc::c_int = 126;
/// Exit code of a child whose exec failed.
const NOT_EXECUTED: libc::c_int = 127;

/// The child of [`spawn_in`], on its own stack in the parent's memory (CLONE_VM) while the
/// parent waits (CLONE_VFORK): moves itself into the cgroup, points stdin, stdout and stderr at
/// /dev/null and execs. Only async-signal-safe system calls, no allocation.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive until the exec (the parent is suspended
    // until then); every pointer in it is valid and NUL-terminated as execve needs.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        if libc::write(a.procs, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(NOT_PLACED);
        }
        for fd in 0..3 {
            libc::dup2(a.null, fd);
        }
        libc::execve(a.path, a.argv, a.envp);
        libc::_exit(NOT_EXECUTED)
    }
}

/// Starts `busybox ARGS` inside cgroup `dir` with `AGENT_NAME=name`; returns once it has exec'd.
pub fn spawn_in(dir: &Path, args: &[&str], name: &OsString) -> Result<Proc> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    // Opened by the parent (close-on-exec, as std opens every file), written by the child.
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .with_context(|| format!("opening {}/cgroup.procs", dir.display()))?;
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let cstring = |bytes: &[u8]| CString::new(bytes).context("an argument holds a NUL byte");
    let path = cstring(BUSYBOX.as_bytes())?;
    let mut argv = vec![path.clone()];
    for arg in args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let mut agent = b"AGENT_NAME=".to_vec();
    agent.extend_from_slice(name.as_bytes());
    let envp = [cstring(b"PATH=/bin:/usr/bin")?, cstring(&agent)?];
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let child = ChildArgs {
        procs: procs.as_raw_fd(),
        null: null.as_raw_fd(),
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
    };
    // The child's stack: it only makes a few system calls.
    let mut stack = vec![0u128; 4096];
    let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
    // SAFETY: CLONE_VM | CLONE_VFORK runs `child_main` on `stack` (16-aligned, 64 KiB, unused
    // by anything else) in this address space and suspends this thread until the child execs
    // or exits, so `child`, the strings it points to and the stack outlive its use.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&child as *const ChildArgs).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("starting busybox {} in {}", args.join(" "), dir.display()));
    }
    drop(stack);
    Ok(Proc { pid, reaped: false })
}

/// rmdir, retrying briefly while the kernel still counts an exiting process in the cgroup.
pub fn remove_cgroup(dir: &Path) -> Result<()> {
    remove_cgroup_counting(dir).map(|_| ())
}

/// [`remove_cgroup`], returning how many times it had to retry.
fn remove_cgroup_counting(dir: &Path) -> Result<u64> {
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(tries),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(tries),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 2000 => {
                tries += 1;
                thread::sleep(Duration::from_micros(500));
            }
            Err(e) => return Err(e).with_context(|| format!("rmdir {}", dir.display())),
        }
    }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    text.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .ok_or_else(|| anyhow!("no cgroup v2 mount in /proc/self/mountinfo"))
}

/// Kills what is left in the benchmark's cgroups (`bench-<tag>-…`, for any tag when `tag` is
/// None) and removes them. Returns how many cgroups were removed.
pub fn sweep(root: &Path, tag: Option<&str>) -> Result<usize> {
    let prefix = match tag {
        Some(tag) => format!("{CGROUP_PREFIX}{tag}-"),
        None => CGROUP_PREFIX.to_string(),
    };
    let mut removed = 0;
    let entries = fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().into_vec();
        if !name.starts_with(prefix.as_bytes()) || !entry.path().is_dir() {
            continue;
        }
        let dir = entry.path();
        // cgroup.kill (5.14+) kills every process in the cgroup at once.
        let _ = fs::write(dir.join("cgroup.kill"), "1");
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) with a pid read from the cgroup; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        remove_cgroup(&dir)?;
        removed += 1;
    }
    Ok(removed)
}

/// A container left running: its cgroup and its process.
pub struct Live {
    pub dir: PathBuf,
    pub child: Proc,
}

/// Makes `count` containers (`bench-<tag>-w<worker>-<n>`) whose process (`busybox sleep`) stays
/// alive, from `workers` threads; the caller ends them with [`end_live`]. On error, what was
/// made is ended before returning.
pub fn spawn_live(
    root: &Path,
    tag: &str,
    count: u64,
    workers: usize,
    agent_name: &NameFn,
) -> Result<Vec<Live>> {
    let workers = workers.max(1);
    let results: Vec<(Vec<Live>, Result<()>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut made = Vec::new();
                    let mut n = w as u64;
                    let result = (|| -> Result<()> {
                        while n < count {
                            let dir = root.join(format!("{CGROUP_PREFIX}{tag}-w{w}-{n}"));
                            fs::create_dir(&dir)
                                .with_context(|| format!("mkdir {}", dir.display()))?;
                            match spawn_in(&dir, &["sleep", "3600"], &agent_name(w, n)) {
                                Ok(child) => made.push(Live { dir, child }),
                                Err(e) => {
                                    let _ = remove_cgroup(&dir);
                                    return Err(e);
                                }
                            }
                            n += workers as u64;
                        }
                        Ok(())
                    })();
                    (made, result)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (Vec::new(), Err(anyhow!("a workload thread panicked"))))
            })
            .collect()
    });
    let mut all = Vec::new();
    let mut first_error = None;
    for (made, result) in results {
        all.extend(made);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        let _ = end_live(all);
        return Err(e);
    }
    Ok(all)
}

/// Kills every live container's process (SIGKILL), reaps it and removes its cgroup. Returns
/// the ground truth of that.
pub fn end_live(live: Vec<Live>) -> Result<Truth> {
    let mut truth = Truth::default();
    let mut first_error = None;
    let mut waiting = Vec::with_capacity(live.len());
    for mut l in live {
        match l.child.kill() {
            Ok(()) => truth.signals += 1,
            Err(e) => {
                first_error.get_or_insert(anyhow!("kill {}: {e}", l.child.id()));
            }
        }
        waiting.push(l);
    }
    for mut l in waiting {
        match l.child.wait() {
            Ok(status) if status.signal() == Some(libc::SIGKILL) => truth.killed += 1,
            Ok(status) => {
                first_error.get_or_insert(anyhow!("live container ended with {status}"));
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("wait: {e}"));
            }
        }
        match remove_cgroup(&l.dir) {
            Ok(()) => truth.cgroups_removed += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(truth),
    }
}

/// Processes outside any container (in the caller's own cgroup), from `workers` threads for
/// `duration`: `busybox true`, and `busybox sleep` killed once asleep, in turn. Every hot probe
/// fires for them but none is followed: the programs' fast path. Returns how many ran.
pub fn run_host(workers: usize, duration: Duration, stop: &AtomicBool) -> Result<u64> {
    let deadline = Instant::now() + duration;
    let results: Vec<Result<u64>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|w| {
                scope.spawn(move || -> Result<u64> {
                    let mut n = 0u64;
                    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                        let kill = (n + w as u64) % 2 == 1;
                        let mut child = Command::new(BUSYBOX)
                            .args(if kill {
                                &["sleep", "3600"][..]
                            } else {
                                &["true"][..]
                            })
                            .env_clear()
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .context("starting busybox")?;
                        if kill {
                            let asleep = wait_asleep(child.id());
                            let _ = child.kill();
                            let _ = child.wait();
                            asleep?;
                        } else {
                            child.wait().context("wait")?;
                        }
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a workload thread panicked")))
            })
            .collect()
    });
    let mut total = 0;
    for r in results {
        total += r?;
    }
    Ok(total)
}
