//! Real container runtimes for the privileged end-to-end tests: a busybox root filesystem,
//! bare runc with a private state directory, and a private containerd + dockerd whose state
//! lives under a temporary folder. Everything started here is stopped, unmounted and removed
//! on drop, also when a test's assertion fails.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    io::Read,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::support::{cgroup2_root, REQUIRE_PRIVILEGED};

/// How long one runtime command (`runc …`, `docker …`) may take before the test gives up.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the tools are looked for first, before `PATH`: the distribution's own folders, so that
/// the `docker` client of the `docker.io` package (which matches its `dockerd`) is found before
/// another client somebody put in /usr/local/bin.
const TOOL_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    TOOL_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The programs a runtime test needs, by name.
pub struct Tools(HashMap<String, PathBuf>);

impl Tools {
    pub fn get(&self, name: &str) -> &Path {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("{name} was not asked for"))
    }
}

/// Finds `names`. When one is missing the test is skipped with a message, unless
/// CLAWTRACE_REQUIRE_PRIVILEGED=1, which makes it a failure.
pub fn runtime_tools(test: &str, names: &[&str]) -> Option<Tools> {
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for name in names {
        match find_tool(name) {
            Some(path) => {
                found.insert(name.to_string(), path);
            }
            None => missing.push(*name),
        }
    }
    if missing.is_empty() {
        return Some(Tools(found));
    }
    let reason = format!(
        "{} not found (install with cargo xtask setup)",
        missing.join(", ")
    );
    if std::env::var(REQUIRE_PRIVILEGED).as_deref() == Ok("1") {
        panic!("{test}: {reason}, and {REQUIRE_PRIVILEGED}=1");
    }
    eprintln!("skipping {test}: {reason}");
    None
}

/// Runs `cmd` to its end (killing it after `timeout`) and returns what it printed.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let readers = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    });
    let status = wait_child(&mut child, timeout)
        .unwrap_or_else(|| panic!("{what} ran longer than {timeout:?}"));
    let [stdout, stderr] = readers.map(|r| r.join().expect("pipe reader"));
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `cmd`, which must succeed, and returns its standard output, trimmed.
pub fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = output_within(cmd, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "{what} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for our child up to `timeout`; kills it and returns None when it takes longer.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs a clean-up command quietly; failures are only reported.
pub fn best_effort(cmd: &mut Command, timeout: Duration) {
    let what = format!("{cmd:?}");
    match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            if wait_child(&mut child, timeout).is_none() {
                eprintln!("clean-up: {what} ran longer than {timeout:?}; killed");
            }
        }
        Err(e) => eprintln!("clean-up: {what}: {e}"),
    }
}

/// The cgroup v2 path (`0::` line of /proc/PID/cgroup) of a process.
pub fn cgroup_of(pid: u32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line for {pid}: {text}"))
        .to_string()
}

/// The id (inode number) of the cgroup v2 directory at `path` (as in [`cgroup_of`]).
pub fn cgroup_id(path: &str) -> u64 {
    let dir = cgroup2_root().join(path.trim_start_matches('/'));
    fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()))
        .ino()
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary folder. On drop everything mounted below it is unmounted (lazily) first; it is
/// only removed when nothing stays mounted there, so a removal never reaches through a mount.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("clawtrace-{tag}-{}-{n}", std::process::id()));
        if path.exists() {
            unmount_below(&path);
            let _ = fs::remove_dir_all(&path);
        }
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if unmount_below(&self.path) {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            eprintln!(
                "clean-up: mounts remain below {}; left it in place",
                self.path.display()
            );
        }
    }
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything mounted at or below `dir`; true when nothing is left there.
pub fn unmount_below(dir: &Path) -> bool {
    for _ in 0..5 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return true;
        }
        for mount in mounts {
            let Ok(target) = CString::new(mount.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: umount2 reads a NUL-terminated path that outlives the call.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "clean-up: umount {}: {}",
                    mount.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    mounts_below(dir).is_empty()
}

/// Makes a busybox root filesystem at `dir`: the (static) busybox binary in /bin with a
/// symbolic link for each of its applets, and the usual empty mount points.
pub fn busybox_rootfs(dir: &Path, busybox: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("mkdir rootfs/bin");
    for sub in ["dev", "proc", "sys", "tmp", "etc", "root"] {
        fs::create_dir_all(dir.join(sub)).expect("mkdir in rootfs");
    }
    fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    let applets = run_ok(Command::new(busybox).arg("--list"));
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .unwrap_or_else(|e| panic!("symlink {applet}: {e}"));
    }
}

/// The source of `ctpayload`, a static payload for containers whose death the tests choose:
/// `ctpayload segv|hog|exit3 FILE` waits until FILE exists (so that a test can read its host
/// pid first), then faults on a null pointer (`segv`, with no core dump), allocates and touches
/// memory until something stops it (`hog`), or exits with code 3 (`exit3`).
const PAYLOAD_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct stat st;
    struct rlimit none = {0, 0};
    if (argc != 3)
        return 2;
    while (stat(argv[2], &st) != 0)
        usleep(10000);
    if (strcmp(argv[1], "segv") == 0) {
        setrlimit(RLIMIT_CORE, &none);
        *(volatile int *)0 = 1;
    }
    if (strcmp(argv[1], "exit3") == 0)
        return 3;
    if (strcmp(argv[1], "hog") == 0) {
        for (;;) {
            char *p = malloc(1 << 20);
            if (p == NULL)
                return 1;
            memset(p, 1, 1 << 20);
        }
    }
    return 2;
}
"#;

/// The command name of [`install_payload`]'s program.
pub const PAYLOAD: &str = "ctpayload";

/// Builds `ctpayload` (see [`PAYLOAD_C`]) statically with `gcc` into `rootfs`'s /bin.
pub fn install_payload(rootfs: &Path, gcc: &Path) {
    let source = rootfs.join("tmp").join("ctpayload.c");
    fs::write(&source, PAYLOAD_C).expect("write ctpayload.c");
    run_ok(
        Command::new(gcc)
            .args(["-static", "-O0", "-o"])
            .arg(rootfs.join("bin").join(PAYLOAD))
            .arg(&source),
    );
    fs::remove_file(&source).expect("remove ctpayload.c");
}

/// The processes of a cgroup (a path below the cgroup v2 root) other than `except`, once there
/// is one (10 s at most).
pub fn other_procs(cgroup: &str, except: u32) -> Vec<u32> {
    let file = cgroup2_root()
        .join(cgroup.trim_start_matches('/'))
        .join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|&p| p != except)
            .collect();
        if !pids.is_empty() {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "no process but {except} in {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command name of a process.
pub fn comm_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Lets a waiting `ctpayload` (pid `pid`, host view) go on: creates its FILE, through the
/// process's own root.
pub fn release_payload(pid: u32, file: &str) {
    let path = format!("/proc/{pid}/root{file}");
    fs::write(&path, b"").unwrap_or_else(|e| panic!("create {path}: {e}"));
}

/// runc with a private state directory (`runc --root`).
#[derive(Clone)]
pub struct Runc {
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Runc {
    pub fn new(bin: &Path, root: PathBuf) -> Runc {
        fs::create_dir_all(&root).expect("mkdir runc root");
        Runc {
            bin: bin.to_path_buf(),
            root,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(&self.root).stdin(Stdio::null());
        cmd
    }

    /// Makes an OCI bundle at `dir` with a busybox root filesystem, running `args` without a
    /// terminal in the v2 cgroup `/<id>` (cgroupfs driver).
    pub fn bundle(&self, dir: &Path, busybox: &Path, id: &str, args: &[&str]) -> PathBuf {
        busybox_rootfs(&dir.join("rootfs"), busybox);
        run_ok(self.cmd().arg("spec").arg("--bundle").arg(dir));
        let path = dir.join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).expect("read config.json"))
            .expect("config.json");
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        config["hostname"] = json!(id);
        config["linux"]["cgroupsPath"] = json!(format!("/{id}"));
        fs::write(&path, serde_json::to_vec_pretty(&config).expect("json"))
            .expect("write config.json");
        dir.to_path_buf()
    }
}

/// A container that `runc run --detach` started (its init is then reparented, as under a real
/// orchestrator, and `runc delete` removes it). Dropping it kills and deletes the container if
/// the test has not.
pub struct RuncContainer {
    runc: Runc,
    pub id: String,
    /// The container's init, as the host sees it (runc's `--pid-file`).
    pub pid: u32,
    deleted: bool,
}

impl RuncContainer {
    /// `runc run --detach --bundle BUNDLE ID`; returns once the init runs. runc's own output
    /// goes to `log`.
    pub fn start(runc: &Runc, bundle: &Path, id: &str, log: &Path) -> RuncContainer {
        let pid_file = bundle.join("init.pid");
        let log_file = fs::File::create(log).expect("create runc log");
        let mut run = runc
            .cmd()
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdout(log_file.try_clone().expect("dup runc log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn runc run");
        let mut ctr = RuncContainer {
            runc: runc.clone(),
            id: id.to_string(),
            pid: 0,
            deleted: false,
        };
        let status = wait_child(&mut run, COMMAND_TIMEOUT).expect("runc run --detach ended");
        let text = fs::read_to_string(log).unwrap_or_default();
        assert!(
            status.success(),
            "runc run {id} exited with {status}: {text}"
        );
        let pid = fs::read_to_string(&pid_file).unwrap_or_default();
        ctr.pid = pid
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("runc pid file: {pid:?}"));
        ctr
    }

    /// The container's status as `runc state` gives it (`running`, `stopped`, …).
    pub fn status(&self) -> String {
        let state = run_ok(self.runc.cmd().args(["state", &self.id]));
        let state: Value = serde_json::from_str(&state).expect("runc state JSON");
        state["status"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until `runc state` says `status`.
    pub fn wait_status(&self, status: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.status();
            if now == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "runc container {} is {now}, not {status}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `runc delete ID` (the container must have stopped).
    pub fn delete(&mut self) {
        run_ok(self.runc.cmd().arg("delete").arg(&self.id));
        self.deleted = true;
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        if !self.deleted {
            best_effort(
                self.runc.cmd().args(["kill", &self.id, "KILL"]),
                COMMAND_TIMEOUT,
            );
            best_effort(
                self.runc.cmd().args(["delete", "--force", &self.id]),
                COMMAND_TIMEOUT,
            );
        }
    }
}

/// Runs `run` (a `docker run -d` or `podman run -d`), which must print the new container's
/// full id; the id is remembered in `containers` for clean-up.
fn run_detached(run: &mut Command, containers: &Mutex<Vec<String>>) -> String {
    let out = output_within(run, COMMAND_TIMEOUT);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !id.is_empty() {
        containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.clone());
    }
    assert!(
        out.status.success(),
        "{run:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{run:?} printed {id:?}, not a container id"
    );
    id
}

/// Host paths that containerd or dockerd create whatever their options say: the ones that did
/// not exist before the daemons started are removed again, children before parents.
pub const HOST_PATHS: &[&str] = &[
    "/etc/docker/key.json",
    "/run/docker/plugins",
    "/run/docker",
    "/run/containerd/s",
    "/run/containerd",
    "/opt/containerd/bin",
    "/opt/containerd/lib",
    "/opt/containerd",
];

/// The `docker` cgroup (dockerd's default cgroup parent) in every hierarchy, v1 and v2.
/// What a runtime a test starts makes on the host outside its own folder: shared paths and its
/// parent cgroup in every hierarchy. Those missing before it starts are noted, and removed
/// once it is gone (nothing that was there before is touched).
pub struct HostLeftovers {
    paths: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
}

impl HostLeftovers {
    /// Notes which of `paths` and of the parent cgroups `cgroup` do not exist yet.
    pub fn note(paths: &[&str], cgroup: &str) -> HostLeftovers {
        HostLeftovers {
            paths: paths
                .iter()
                .map(PathBuf::from)
                .filter(|p| !p.exists())
                .collect(),
            cgroups: parent_cgroups(cgroup)
                .into_iter()
                .filter(|p| !p.exists())
                .collect(),
        }
    }

    /// Removes the parent cgroups the runtime made (each one's `children` first) and the host
    /// paths.
    pub fn remove(&self, children: &[&str]) {
        for parent in &self.cgroups {
            for child in children {
                remove_cgroup(&parent.join(child));
            }
            remove_cgroup(parent);
        }
        for path in &self.paths {
            if path.exists() {
                remove_host_path(path);
            }
        }
    }
}

fn docker_parent_cgroups() -> Vec<PathBuf> {
    parent_cgroups("docker")
}

/// Cgroup `name` below the root of every hierarchy, v1 and v2.
pub fn parent_cgroups(name: &str) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(unescape_mountinfo(mount)).join(name))
        })
        .collect()
}

pub fn remove_host_path(path: &Path) {
    let result = if path.is_dir() {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    };
    if let Err(e) = result {
        eprintln!("clean-up: remove {}: {e}", path.display());
    }
}

/// rmdir of a cgroup, retrying while its last tasks leave.
pub fn remove_cgroup(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("clean-up: rmdir {}: {e}", dir.display());
                return;
            }
        }
    }
}

/// Process ids whose command line mentions `needle` (the shims of our containerd).
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Paths of the unix sockets that process `pid` holds open (from /proc/net/unix).
fn unix_sockets_of(pid: u32) -> Vec<PathBuf> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            inodes
                .iter()
                .any(|i| i == inode)
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// The last 4000 bytes (or so) of a daemon's log, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// Kills what a stopped private containerd whose state is below `dir` left running (its
/// shims, and the container processes they held), and removes the sockets the shims leave.
pub fn kill_shims(dir: &Path) {
    let needle = dir.display().to_string();
    let mut sockets = Vec::new();
    for pid in pids_mentioning(&needle) {
        eprintln!("clean-up: killing leftover process {pid} of the private containerd");
        // A shim listens on /run/containerd/s/<hash> and leaves it behind when killed.
        sockets.extend(unix_sockets_of(pid));
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_mentioning(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for socket in sockets
        .iter()
        .filter(|s| s.starts_with("/run/containerd/s"))
    {
        let _ = fs::remove_file(socket);
    }
}

/// SIGTERM, then SIGKILL after `grace`; waits for our child.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if wait_child(child, grace).is_none() {
        eprintln!(
            "clean-up: pid {} ignored SIGTERM for {grace:?}; killed",
            child.id()
        );
    }
}

/// A private containerd and dockerd: all their state, sockets and mounts under one temporary
/// folder. Dropping it removes the containers it ran, stops both daemons (and any shim left),
/// unmounts what they mounted, and removes what they created on the host.
pub struct DockerDaemon {
    docker: PathBuf,
    sock: PathBuf,
    containerd: Child,
    dockerd: Option<Child>,
    containers: Mutex<Vec<String>>,
    made: HostLeftovers,
    /// Dropped last: unmounts and removes the state.
    dir: TempDir,
}

impl DockerDaemon {
    /// Starts containerd and dockerd and waits until dockerd answers.
    pub fn start(tools: &Tools) -> DockerDaemon {
        let started = Instant::now();
        let dir = TempDir::new("docker");
        let d = dir.path().to_path_buf();
        let made = HostLeftovers::note(HOST_PATHS, "docker");

        let ctd = d.join("containerd");
        let ctd_sock = ctd.join("containerd.sock");
        let config = format!(
            "version = 2\n\
             root = {root:?}\n\
             state = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {sock:?}\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = ctd.join("root").display().to_string(),
            state = ctd.join("state").display().to_string(),
            sock = ctd_sock.display(),
            opt = ctd.join("opt").display().to_string(),
        );
        fs::create_dir_all(&ctd).expect("mkdir containerd");
        fs::write(d.join("containerd.toml"), config).expect("write containerd.toml");
        let containerd = Command::new(tools.get("containerd"))
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("containerd.log")).expect("containerd.log"))
            .spawn()
            .expect("spawn containerd");

        let sock = d.join("docker.sock");
        let mut daemon = DockerDaemon {
            docker: tools.get("docker").to_path_buf(),
            sock: sock.clone(),
            containerd,
            dockerd: None,
            containers: Mutex::new(Vec::new()),
            made,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ctd_sock.exists() {
            if let Ok(Some(status)) = daemon.containerd.try_wait() {
                panic!(
                    "containerd exited with {status}: {}",
                    daemon.log("containerd.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                daemon.log("containerd.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        fs::write(d.join("daemon.json"), "{}\n").expect("write daemon.json");
        let mut dockerd = Command::new(tools.get("dockerd"));
        dockerd
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .arg("--containerd")
            .arg(&ctd_sock)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--userland-proxy=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("dockerd.log")).expect("dockerd.log"));
        daemon.dockerd = Some(dockerd.spawn().expect("spawn dockerd"));
        loop {
            let out = output_within(daemon.cmd().arg("version"), COMMAND_TIMEOUT);
            if out.status.success() {
                break;
            }
            if let Some(Ok(Some(status))) = daemon.dockerd.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "dockerd exited with {status}: {}",
                    daemon.log("dockerd.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                daemon.log("dockerd.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("containerd and dockerd ready in {:.1?}", started.elapsed());
        daemon
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of one of the daemons' logs, for failure messages.
    pub fn log(&self, name: &str) -> String {
        log_tail(&self.dir.path().join(name))
    }

    /// A `docker` client command talking to this daemon.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.docker);
        cmd.arg("--host")
            .arg(format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null());
        cmd
    }

    /// The Docker Engine API socket of this daemon.
    pub fn socket(&self) -> &Path {
        &self.sock
    }

    /// `docker ARGS`, which must succeed; its standard output, trimmed.
    pub fn docker(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args))
    }

    /// `docker import` of a tarball of `rootfs` as image `tag`.
    pub fn import(&self, rootfs: &Path, tar: &Path, tag: &str) {
        let mut archive = Command::new(tar)
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tar");
        let stdout = archive.stdout.take().expect("tar stdout");
        let out = output_within(
            self.cmd().args(["import", "-", tag]).stdin(stdout),
            COMMAND_TIMEOUT,
        );
        let tar_status = wait_child(&mut archive, COMMAND_TIMEOUT).expect("tar ended");
        assert!(
            tar_status.success(),
            "tar of {} failed: {tar_status}",
            rootfs.display()
        );
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker run -d ARGS`: the new container's full id, remembered for clean-up.
    pub fn run_detached(&self, args: &[&str]) -> String {
        run_detached(self.cmd().args(["run", "-d"]).args(args), &self.containers)
    }

    /// `docker inspect -f FORMAT ID`.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.docker(&["inspect", "-f", format, id])
    }

    fn cleanup(&mut self) {
        let ids = std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        let dockerd_up = matches!(self.dockerd.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
        for id in &ids {
            if dockerd_up {
                best_effort(self.cmd().args(["rm", "--force", id]), COMMAND_TIMEOUT);
            }
        }
        if let Some(mut dockerd) = self.dockerd.take() {
            stop_child(&mut dockerd, Duration::from_secs(20));
        }
        stop_child(&mut self.containerd, Duration::from_secs(10));
        // What a killed daemon can leave: container processes and their shims.
        let v2 = cgroup2_root();
        for id in &ids {
            let _ = fs::write(v2.join("docker").join(id).join("cgroup.kill"), "1");
        }
        kill_shims(self.dir.path());
        for parent in docker_parent_cgroups() {
            for id in &ids {
                remove_cgroup(&parent.join(id));
            }
        }
        self.made.remove(&[]);
    }
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        self.cleanup();
        // `dir` (a TempDir) then unmounts what dockerd left mounted and removes the state.
    }
}

/// Host paths that podman (or the runc it runs) creates whatever its options say: the ones
/// that did not exist before are removed again, children before parents.
const PODMAN_HOST_PATHS: &[&str] = &[
    "/run/containers/networks",
    "/run/containers",
    "/run/runc",
    "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
    "/var/lib/containers/cache",
    "/var/lib/containers",
];

/// Podman as its users run it, daemonless, with all its state under one temporary folder:
/// runc as its runtime (its default crun refuses this machine kind's hybrid cgroups) and the
/// cgroupfs manager, so its containers are `/libpod_parent/libpod-<id>`. Dropping it removes
/// its containers, their cgroups and what it created on the host.
pub struct Podman {
    podman: PathBuf,
    runc: PathBuf,
    containers: Mutex<Vec<String>>,
    made: HostLeftovers,
    /// Dropped last: unmounts and removes the state.
    dir: TempDir,
}

impl Podman {
    /// The ulimits a container needs on this machine kind (podman's defaults exceed the hard
    /// limits here).
    const ULIMITS: [&'static str; 4] = [
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=32768:32768",
    ];

    pub fn new(tools: &Tools) -> Podman {
        Podman {
            podman: tools.get("podman").to_path_buf(),
            runc: tools.get("runc").to_path_buf(),
            containers: Mutex::new(Vec::new()),
            made: HostLeftovers::note(PODMAN_HOST_PATHS, "libpod_parent"),
            dir: TempDir::new("podman"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `podman` command on this instance's state.
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.podman);
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("networks"))
            .arg("--runtime")
            .arg(&self.runc)
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .env("TMPDIR", d.join("tmp"))
            .stdin(Stdio::null());
        cmd
    }

    /// `podman ARGS`, which must succeed; its standard output, trimmed.
    pub fn podman(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args))
    }

    /// `podman import` of a tarball of `rootfs` as image `tag`.
    pub fn import(&self, rootfs: &Path, tar: &Path, tag: &str) {
        fs::create_dir_all(self.dir.path().join("tmp")).expect("mkdir podman tmp");
        let archive = self.dir.path().join("rootfs.tar");
        run_ok(
            Command::new(tar)
                .arg("-C")
                .arg(rootfs)
                .arg("-cf")
                .arg(&archive)
                .arg("."),
        );
        run_ok(self.cmd().arg("import").arg(&archive).arg(tag));
    }

    /// `podman run -d ARGS` (with [`Podman::ULIMITS`] and no network): the new container's full
    /// id, remembered for clean-up.
    pub fn run_detached(&self, args: &[&str]) -> String {
        run_detached(
            self.cmd()
                .args(["run", "-d", "--network", "none"])
                .args(Self::ULIMITS)
                .args(args),
            &self.containers,
        )
    }

    /// `podman inspect -f FORMAT ID`.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.podman(&["inspect", "-f", format, id])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        for id in &ids {
            best_effort(self.cmd().args(["rm", "--force", id]), COMMAND_TIMEOUT);
        }
        // What a failed removal leaves: the container's processes, then its conmon.
        let v2 = cgroup2_root();
        for id in &ids {
            let _ = fs::write(
                v2.join("libpod_parent")
                    .join(format!("libpod-{id}"))
                    .join("cgroup.kill"),
                "1",
            );
        }
        let needle = self.dir.path().display().to_string();
        for pid in pids_mentioning(&needle) {
            eprintln!("clean-up: killing leftover process {pid} of the private podman");
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for parent in parent_cgroups("libpod_parent") {
            for id in &ids {
                remove_cgroup(&parent.join(format!("libpod-{id}")));
            }
        }
        self.made.remove(&["conmon"]);
        // `dir` (a TempDir) then unmounts what podman left mounted and removes the state.
    }
}
