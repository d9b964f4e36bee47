//! `cargo xtask vm-test [--kernel VERSION]... [--timeout SECONDS] [--refresh] [-- FILTER]`:
//! runs the kernel-compatibility tests (`tests/compat.rs`, the `compat` test target of
//! tracer-user) inside virtual machines booting Debian's kernels, one VM per kernel of
//! [`KERNELS`] (all of them unless `--kernel` picks some).
//!
//! 1. **Tools**, installed when missing: the Debian packages `qemu-system-x86` and `kmod`
//!    (depmod), and virtme-ng from PyPI (`python3 -m pip install virtme-ng==1.42`). pip's
//!    script folders (`sysconfig`'s `scripts` and the user base's `bin`) are added to the PATH
//!    of every child, so a `vng` pip put there is found.
//! 2. **Kernels**: the newest package of the table's Debian release (its point release alone
//!    where the table says so; else with its updates and security suites) whose name matches
//!    the table's pattern, found with apt under a private state in `target/vm/apt/<suite>/` (a sources file
//!    naming that suite of the Debian archive the machine's own apt sources use, its own lists
//!    and cache; the machine's lists are never touched), fetched with `apt-get download` into
//!    `target/vm/kernels/` and unpacked with `dpkg-deb -x` into `target/vm/kernels/<package>/`.
//!    The private lists are refreshed (`apt-get update`) only when they are missing, when no
//!    package matches, when a download fails (the mirror dropped an old one), or with
//!    `--refresh`; each at most once a run. A second run downloads nothing and works offline.
//!    virtme-ng links the modules of the unpacked package (which ships `modules.dep`) into the
//!    guest itself: nothing is installed on the host.
//! 3. **Test binary**: `cargo test -p tracer-user --test compat --no-run --message-format=json`;
//!    the executable comes from the `compiler-artifact` message of the `compat` target.
//! 4. **VMs**: `vng --disable-kvm -r <vmlinuz> --memory 4G --cpus N --rwdir
//!    target/vm/run/<key> --exec 'bash target/vm/run/<key>/run.sh'` (TCG: a KVM guest hangs on
//!    this machine kind; N is 2, or fewer on a smaller host). The guest sees the host's root file
//!    system read-only, with virtme-ng's writable overlays on `/tmp`, `/etc`, `/var`, … (lost at
//!    exit). The script, kept in a file because virtme-ng passes `--exec` on the kernel command
//!    line (2 KiB on 5.10), runs as root: it writes `uname -r` to `uname`, the guest's mounts to
//!    `mounts`, runs the test binary with `--test-threads=1` and the arguments after `--`, in
//!    tracer-user's folder (as cargo does), with `CLAWTRACE_REQUIRE_PRIVILEGED=1`,
//!    `CLAWTRACE_EXPECT_FALLBACKS=<the table's list>`, `CLAWTRACE_TIME_SCALE=20`,
//!    `CLAWTRACE_COMPAT_REPORT=target/vm/run/<key>/fallbacks` (the test writes the fallbacks it
//!    saw there) and `RUST_BACKTRACE=1`, its output to `test.log` and its exit code to `rc`
//!    (the guest console may lose output; vng's own output goes to `vng.log`). A VM still
//!    running after `--timeout` seconds (default 900) is killed with its process group.
//! 5. **Summary**: one line per kernel, e.g. `vm-test: 6.1 (6.1.0-57-amd64, 6.1.192): 14
//!    passed, 0 failed; fallbacks: exit-group-dead; 312 s`, with `; FAILED: why`
//!    and the last lines of `test.log` when it failed. A kernel fails when the VM timed out, the
//!    binary exited non-zero or wrote no `rc`, no test ran, the guest ran another kernel, or the
//!    fallbacks reported differ from the table's. The command fails when any kernel failed.

use std::{
    collections::BTreeSet,
    env,
    ffi::OsString,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use regex::Regex;
use serde_json::Value;

use crate::{first_line, probe, quote, show, Ctx};

/// The virtme-ng release installed from PyPI when no `vng` is found.
const VIRTME_NG_VERSION: &str = "1.42";

/// The tracer-user test target that runs in the VMs.
const COMPAT_TEST: &str = "compat";

/// Debian packages the VMs need: (package, optional, what for).
const VM_PACKAGES: &[(&str, bool, &str)] = &[
    ("qemu-system-x86", false, "the virtual machines"),
    // virtme-ng runs depmod over the unpacked kernel's modules before it boots.
    ("kmod", false, "depmod, for the kernels' modules"),
];

/// The Debian architecture of the kernels (and of the host: the guest runs its binaries).
const ARCH: &str = "amd64";

/// Guest memory, and the most vCPUs a guest gets (never more than the host's cores).
const GUEST_MEMORY: &str = "4G";
const GUEST_CPUS: usize = 2;

/// `CLAWTRACE_TIME_SCALE` in the guest: TCG runs fork+exec about 45 times slower.
const TIME_SCALE: &str = "20";

/// Lines of `test.log` shown when a kernel failed.
const LOG_TAIL_LINES: usize = 40;

/// The Debian kernel package name prefix; the rest of the name is the kernel release.
const IMAGE_PREFIX: &str = "linux-image-";

/// A kernel the tests run on.
struct Kernel {
    /// What `--kernel` names it by.
    key: &'static str,
    /// The Debian release its package comes from: that suite with its `-updates` and
    /// `-security` suites, where the machine's apt sources have them.
    suite: &'static str,
    /// Only the release's own suite (its last point release), not its updates.
    point_release: bool,
    /// The package name, a regular expression. The newest
    /// matching package is taken (ABI numbers change and old ones leave the mirrors).
    package: &'static str,
    /// The fallbacks clawtrace must pick on it (`CLAWTRACE_EXPECT_FALLBACKS`), comma separated.
    expected: &'static str,
}

/// The kernels `vm-test` knows, oldest first; all of them run when no `--kernel` is given.
const KERNELS: &[Kernel] = &[
    // Debian 11's last point release: its mark_victim still passes a pid, so every fallback runs.
    Kernel {
        key: "5.10",
        suite: "bullseye",
        point_release: true,
        package: r"^linux-image-5\.10\.0-[0-9]+-amd64$",
        expected:
            "task-btf,exit-group-dead,oom-victim-task,mount-setattr,device-caller,device-decision",
    },
    Kernel {
        key: "6.1",
        suite: "bookworm",
        point_release: false,
        package: r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        expected: "exit-group-dead",
    },
    Kernel {
        key: "6.12",
        suite: "bookworm",
        point_release: false,
        package: r"^linux-image-6\.12\.[0-9.]+\+deb12-amd64$",
        expected: "exit-group-dead",
    },
    // Debian 11's security updates (5.10.262 and later): mark_victim passes the task there.
    Kernel {
        key: "5.10-lts",
        suite: "bullseye",
        point_release: false,
        package: r"^linux-image-5\.10\.0-[0-9]+-amd64$",
        expected: "task-btf,exit-group-dead,mount-setattr,device-caller,device-decision",
    },
];

/// The kernels a plain `vm-test` runs (CI's set); the others by `--kernel`.
const DEFAULT_KERNELS: &[&str] = &["5.10", "6.1", "6.12"];

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// A kernel to test on (repeatable): 5.10 (Debian 11's point release), 6.1, 6.12, 5.10-lts
    /// (Debian 11's security updates). Default: 5.10, 6.1 and 6.12.
    #[arg(long = "kernel", value_name = "VERSION")]
    kernels: Vec<String>,
    /// Wall-clock limit per kernel, boot included; the VM is killed and the kernel fails.
    #[arg(long, value_name = "SECONDS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Update the private package lists even when the kernels are cached (newer kernels).
    #[arg(long)]
    refresh: bool,
    /// The test target to run (for trying vm-test itself with another target).
    #[arg(long, hide = true, default_value = COMPAT_TEST)]
    test_target: String,
    /// Arguments for the test binary, e.g. a test name filter.
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// `cargo xtask vm-test`: see the module's documentation.
pub fn run(mut ctx: Ctx, options: Options) -> Result<ExitCode> {
    let started = Instant::now();
    let kernels = select(&options.kernels)?;
    let arch = String::from_utf8_lossy(
        &probe(ctx.command("dpkg").arg("--print-architecture"))
            .context("vm-test: needs Debian's dpkg")?
            .stdout,
    )
    .trim()
    .to_string();
    if arch != ARCH {
        bail!("vm-test: the kernels are Debian {ARCH} ones, this host is {arch}");
    }
    // What the tests drive (bpftool, python3, …), then what the VMs need.
    ctx.setup_packages()?;
    ctx.ensure_packages(VM_PACKAGES, "")?;
    for tool in ["qemu-system-x86_64", "dpkg-deb", "apt-cache", "depmod"] {
        if ctx.which(tool).is_none() {
            bail!("vm-test: {tool} not found on PATH");
        }
    }
    let vng = ensure_vng(&mut ctx)?;
    ctx.setup_toolchain()?;
    let tools_s = started.elapsed().as_secs();

    let build_started = Instant::now();
    let binary = build_test_binary(&ctx, &options.test_target)?;
    let build_s = build_started.elapsed().as_secs();

    let target = target_dir(&ctx);
    let vm_dir = target.join("vm");
    let fetch_started = Instant::now();
    let mut apt = Apt::new(&ctx, vm_dir.join("apt"), options.refresh);
    let mut images = Vec::new();
    for kernel in &kernels {
        images.push(fetch_kernel(
            &ctx,
            &mut apt,
            kernel,
            &vm_dir.join("kernels"),
        )?);
    }
    let fetch_s = fetch_started.elapsed().as_secs();
    println!(
        "vm-test: ready in {} s (tools {tools_s} s, test build {build_s} s, kernels {fetch_s} s)",
        started.elapsed().as_secs()
    );

    // The VMs run in process groups of their own, which Ctrl-C does not reach: on SIGINT or
    // SIGTERM the running one is killed before xtask exits.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing a signal handler")?;
    }
    let cpus = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(GUEST_CPUS);
    let mut failed = Vec::new();
    for (kernel, image) in kernels.iter().zip(&images) {
        let vm = Vm {
            ctx: &ctx,
            vng: &vng,
            kernel,
            image,
            binary: &binary,
            run_dir: vm_dir.join("run").join(kernel.key),
            cpus,
            timeout: Duration::from_secs(options.timeout),
            args: &options.args,
            stop: &stop,
        };
        let outcome = vm.boot()?;
        let verdict = outcome.verdict(kernel, image);
        println!("{}", outcome.summary(kernel, image, verdict.as_deref()));
        if verdict.is_some() {
            outcome.print_log_tail(&vm.run_dir);
            failed.push(kernel.key);
        }
    }
    println!("vm-test: done in {} s", started.elapsed().as_secs());
    if !failed.is_empty() {
        bail!(
            "vm-test: {} of {} kernel(s) failed: {}",
            failed.len(),
            kernels.len(),
            failed.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The kernels `--kernel` names, in the table's order ([`DEFAULT_KERNELS`] when none is named).
fn select(keys: &[String]) -> Result<Vec<&'static Kernel>> {
    let known = || KERNELS.iter().map(|k| k.key).collect::<Vec<_>>().join(", ");
    if let Some(unknown) = keys
        .iter()
        .find(|key| !KERNELS.iter().any(|k| k.key == key.as_str()))
    {
        bail!("vm-test: unknown kernel {unknown:?}; known: {}", known());
    }
    Ok(KERNELS
        .iter()
        .filter(|k| {
            if keys.is_empty() {
                DEFAULT_KERNELS.contains(&k.key)
            } else {
                keys.iter().any(|key| key == k.key)
            }
        })
        .collect())
}

fn target_dir(ctx: &Ctx) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => ctx.root.join(dir),
        None => ctx.root.join("target"),
    }
}

// ----- tools -----

/// Finds `vng`, installing virtme-ng from PyPI when there is none; pip's script folders join
/// the PATH of every child (pip may put `vng` where the PATH does not look).
fn ensure_vng(ctx: &mut Ctx) -> Result<PathBuf> {
    if ctx.which("vng").is_none() && ctx.which("python3").is_some() {
        add_pip_script_dirs(ctx)?;
    }
    if let Some(vng) = ctx.which("vng") {
        let version = probe(ctx.command(&vng).arg("--version"))
            .map(|out| first_line(&String::from_utf8_lossy(&out.stdout)).to_string())
            .unwrap_or_else(|_| "its --version fails".to_string());
        println!("setup: virtme-ng: present ({}, {version})", vng.display());
        return Ok(vng);
    }
    if ctx.which("python3").is_none() {
        bail!("setup: no vng and no python3 to install virtme-ng {VIRTME_NG_VERSION} with");
    }
    println!("setup: virtme-ng {VIRTME_NG_VERSION}: installing (no vng found)");
    crate::run(ctx.command("python3").args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        &format!("virtme-ng=={VIRTME_NG_VERSION}"),
    ]))
    .context("setup: cannot install virtme-ng with pip")?;
    ctx.which("vng").ok_or_else(|| {
        anyhow!(
            "setup: pip installed virtme-ng but no vng is on PATH ({})",
            ctx.path.to_string_lossy()
        )
    })
}

/// Appends pip's script folders (`sysconfig`'s `scripts`, the user base's `bin`) to the PATH.
fn add_pip_script_dirs(ctx: &mut Ctx) -> Result<()> {
    let out = probe(ctx.command("python3").args([
        "-c",
        "import site, sysconfig; print(sysconfig.get_path('scripts')); \
         print(site.getuserbase() + '/bin')",
    ]))
    .context("setup: asking python3 where pip puts scripts")?;
    let mut dirs: Vec<PathBuf> = env::split_paths(&ctx.path).collect();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let dir = PathBuf::from(line.trim());
        if !line.trim().is_empty() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    ctx.path = env::join_paths(dirs).context("a pip script folder holds a ':'")?;
    Ok(())
}

/// Builds the test target `name` of tracer-user without running it; returns the executable and
/// the package's folder (where cargo runs its tests).
fn build_test_binary(ctx: &Ctx, name: &str) -> Result<TestBinary> {
    let mut cmd = ctx.cargo();
    cmd.args([
        "test",
        "-p",
        "tracer-user",
        "--test",
        name,
        "--no-run",
        "--message-format=json",
    ]);
    let out = run_capturing(&mut cmd).context("vm-test: building the test binary failed")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    test_artifact(&stdout, name)
        .ok_or_else(|| anyhow!("vm-test: cargo reported no executable for the test target {name}"))
}

struct TestBinary {
    executable: PathBuf,
    package_dir: PathBuf,
}

/// The executable of test target `name` from cargo's JSON messages.
fn test_artifact(messages: &str, name: &str) -> Option<TestBinary> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| {
            let executable = PathBuf::from(m["executable"].as_str()?);
            let package_dir = Path::new(m["manifest_path"].as_str()?)
                .parent()?
                .to_path_buf();
            Some(TestBinary {
                executable,
                package_dir,
            })
        })
}

/// Prints and runs the command with stdout captured (stderr shown); fails unless it succeeds.
fn run_capturing(cmd: &mut Command) -> Result<Output> {
    eprintln!("xtask: running: {}", show(cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", show(cmd), out.status);
    }
    Ok(out)
}

// ----- kernels -----

/// A kernel package, downloaded and unpacked.
struct Image {
    /// The package version, e.g. `6.1.192-1`.
    version: String,
    /// The kernel release (`uname -r`), e.g. `6.1.0-57-amd64`.
    release: String,
    vmlinuz: PathBuf,
}

impl Image {
    /// The upstream kernel version: the package version without epoch and Debian revision.
    fn upstream(&self) -> &str {
        upstream_version(&self.version)
    }
}

fn upstream_version(version: &str) -> &str {
    let version = version.split_once(':').map_or(version, |(_, rest)| rest);
    version.split_once('-').map_or(version, |(up, _)| up)
}

/// apt with a private state per suite under `dir`.
struct Apt<'a> {
    ctx: &'a Ctx,
    dir: PathBuf,
    /// Update every suite's lists once, even when present.
    refresh: bool,
    /// Suites whose lists were updated in this run.
    updated: BTreeSet<&'static str>,
}

impl<'a> Apt<'a> {
    fn new(ctx: &'a Ctx, dir: PathBuf, refresh: bool) -> Self {
        Self {
            ctx,
            dir,
            refresh,
            updated: BTreeSet::new(),
        }
    }

    fn suite_dir(&self, suite: &str) -> PathBuf {
        self.dir.join(suite)
    }

    fn sources_file(&self, suite: &str) -> PathBuf {
        self.suite_dir(suite).join("debian.sources")
    }

    fn lists_dir(&self, suite: &str) -> PathBuf {
        self.suite_dir(suite).join("lists")
    }

    /// `-o` options that point apt at the suite's private sources, lists and cache.
    fn options(&self, suite: &str) -> Vec<OsString> {
        let dir = self.suite_dir(suite);
        let settings = [
            ("Dir::Etc::SourceList", self.sources_file(suite)),
            ("Dir::Etc::SourceParts", dir.join("sources.list.d")),
            ("Dir::State::Lists", self.lists_dir(suite)),
            ("Dir::Cache", dir.join("cache")),
        ];
        let mut options = Vec::new();
        for (key, path) in settings {
            options.push(OsString::from("-o"));
            let mut setting = OsString::from(format!("{key}="));
            setting.push(path);
            options.push(setting);
        }
        options
    }

    fn apt_cache(&self, suite: &str) -> Command {
        let mut cmd = self.ctx.command("apt-cache");
        cmd.args(self.options(suite));
        cmd
    }

    /// True when the suite has a sources file and downloaded package indexes.
    fn has_lists(&self, suite: &str) -> bool {
        self.sources_file(suite).is_file()
            && fs::read_dir(self.lists_dir(suite)).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
    }

    /// Updates the suite's lists unless that happened in this run already; false if it had.
    fn update(&mut self, suite: &'static str) -> Result<bool> {
        if self.updated.contains(suite) {
            return Ok(false);
        }
        let (codename, stanzas) = host_archive_sources()?;
        let dir = self.suite_dir(suite);
        for sub in [
            dir.join("sources.list.d"),
            self.lists_dir(suite).join("partial"),
            dir.join("cache").join("archives").join("partial"),
        ] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let sources = self.sources_file(suite);
        fs::write(&sources, private_sources(&stanzas, &codename, suite))
            .with_context(|| format!("writing {}", sources.display()))?;
        let mut cmd = self.ctx.command("apt-get");
        cmd.args(self.options(suite)).arg("update");
        let result = crate::run(&mut cmd);
        self.updated.insert(suite);
        match result {
            Ok(()) => {}
            // One suite the mirror lacks (an ended release's -updates) fails the whole update.
            Err(err) if self.has_lists(suite) => {
                println!("vm-test: {suite}: {err:#}; going on with the lists it fetched");
            }
            Err(err) => {
                return Err(err.context(format!("vm-test: updating the {suite} package lists")))
            }
        }
        Ok(true)
    }

    /// The newest package of `kernel`'s suite whose name matches its pattern, as (name,
    /// version); None when the lists hold none.
    fn newest(&self, kernel: &Kernel) -> Result<Option<(String, String)>> {
        let pattern = Regex::new(kernel.package)
            .with_context(|| format!("vm-test: package pattern {:?}", kernel.package))?;
        let out = probe(
            self.apt_cache(kernel.suite)
                .args(["pkgnames", IMAGE_PREFIX]),
        )?;
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|name| pattern.is_match(name))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        // madison lists the versions the suites offer (none for a virtual package).
        let out = probe(self.apt_cache(kernel.suite).arg("madison").args(&names))?;
        let mut best: Option<(String, String)> = None;
        let offered = madison_versions(&String::from_utf8_lossy(&out.stdout), kernel.suite);
        for (name, version) in offered
            .into_iter()
            .filter(|(_, _, dist)| !kernel.point_release || dist == kernel.suite)
            .map(|(name, version, _)| (name, version))
        {
            let newer = match &best {
                None => true,
                Some((_, best)) => version_gt(self.ctx, &version, best)?,
            };
            if newer {
                best = Some((name, version));
            }
        }
        Ok(best)
    }

    /// `apt-get download NAME=VERSION` into `dir`.
    fn download(&self, suite: &str, name: &str, version: &str, dir: &Path) -> Result<()> {
        let mut cmd = self.ctx.command("apt-get");
        cmd.args(self.options(suite));
        if self.ctx.is_root() {
            // apt's download user `_apt` may not write to `dir` (the .deb's hashes are checked
            // all the same); say so instead of a warning for each download.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd.arg("download")
            .arg(format!("{name}={version}"))
            .current_dir(dir);
        crate::run(&mut cmd)
    }
}

/// (name, version, suite) of `madison` output lines (`name | version | URI suite/component
/// arch Packages`) that come from release `suite` (or its updates and security suites).
fn madison_versions(output: &str, suite: &str) -> Vec<(String, String, String)> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('|').map(str::trim);
            let (name, version, source) = (fields.next()?, fields.next()?, fields.next()?);
            let dist = source.split_whitespace().nth(1)?.split('/').next()?;
            release_suite(dist, suite)?;
            Some((name.to_string(), version.to_string(), dist.to_string()))
        })
        .collect()
}

/// `dpkg --compare-versions A gt B`.
fn version_gt(ctx: &Ctx, a: &str, b: &str) -> Result<bool> {
    let status = ctx
        .command("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("running dpkg --compare-versions")?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("`dpkg --compare-versions {a} gt {b}` failed ({status})"),
    }
}

/// Finds, downloads (when not cached) and unpacks `kernel`'s newest package under `dir`.
fn fetch_kernel(ctx: &Ctx, apt: &mut Apt, kernel: &Kernel, dir: &Path) -> Result<Image> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if apt.refresh || !apt.has_lists(kernel.suite) {
        apt.update(kernel.suite)?;
    }
    let (package, version, unpacked) = loop {
        let Some((package, version)) = apt.newest(kernel)? else {
            if apt.update(kernel.suite)? {
                continue;
            }
            bail!(
                "vm-test: {}: no package matching {} in Debian {}",
                kernel.key,
                kernel.package,
                kernel.suite
            );
        };
        let unpacked = dir.join(&package);
        if unpacked.join("boot").is_dir() {
            println!("vm-test: {}: {package} {version}: present", kernel.key);
            break (package, version, unpacked);
        }
        let deb = match find_deb(dir, &package, &version) {
            Some(deb) => deb,
            None => {
                let started = Instant::now();
                println!("vm-test: {}: {package} {version}: downloading", kernel.key);
                if let Err(err) = apt.download(kernel.suite, &package, &version, dir) {
                    // Lists older than the mirror name a package it no longer has.
                    if apt.update(kernel.suite)? {
                        println!("vm-test: {}: {err:#}; trying again", kernel.key);
                        continue;
                    }
                    return Err(err.context(format!("vm-test: downloading {package}")));
                }
                println!(
                    "vm-test: {}: downloaded in {} s",
                    kernel.key,
                    started.elapsed().as_secs()
                );
                find_deb(dir, &package, &version).ok_or_else(|| {
                    anyhow!(
                        "vm-test: apt-get download left no {package} .deb in {}",
                        dir.display()
                    )
                })?
            }
        };
        unpack(ctx, &deb, &unpacked)?;
        break (package, version, unpacked);
    };
    let release = package
        .strip_prefix(IMAGE_PREFIX)
        .ok_or_else(|| anyhow!("vm-test: {package} does not start with {IMAGE_PREFIX}"))?
        .to_string();
    let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("vm-test: {package} has no {}", vmlinuz.display());
    }
    Ok(Image {
        version,
        release,
        vmlinuz,
    })
}

/// The `.deb` that `apt-get download` saved for NAME=VERSION (`NAME_VERSION_ARCH.deb`, with
/// an epoch's `:` as `%3a`).
fn find_deb(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        (name.starts_with(&prefix) && name.ends_with(".deb")).then(|| entry.path())
    })
}

/// `dpkg-deb -x` into a scratch folder, renamed to `into` when complete.
fn unpack(ctx: &Ctx, deb: &Path, into: &Path) -> Result<()> {
    let mut partial = into.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    crate::run(ctx.command("dpkg-deb").arg("-x").arg(deb).arg(&partial))
        .with_context(|| format!("vm-test: unpacking {}", deb.display()))?;
    fs::rename(&partial, into).with_context(|| format!("renaming {}", partial.display()))
}

// ----- VMs -----

/// One kernel's VM run.
struct Vm<'a> {
    ctx: &'a Ctx,
    vng: &'a Path,
    kernel: &'a Kernel,
    image: &'a Image,
    binary: &'a TestBinary,
    /// `target/vm/run/<key>`: the guest's writable folder, its script, logs and results.
    run_dir: PathBuf,
    cpus: usize,
    timeout: Duration,
    args: &'a [OsString],
    stop: &'a AtomicBool,
}

/// How a VM run ended, read back from its run folder.
struct Outcome {
    elapsed: Duration,
    timed_out: bool,
    /// vng's own exit status (None when killed at the timeout).
    status: Option<ExitStatus>,
    /// The test binary's exit code, from `rc`.
    rc: Option<i32>,
    /// `uname -r` in the guest.
    uname: Option<String>,
    /// Summed over libtest's `test result:` lines; None when there is none.
    counts: Option<(u64, u64)>,
    /// The fallbacks the test reported; None when it wrote no report.
    fallbacks: Option<Vec<String>>,
}

impl Vm<'_> {
    fn boot(&self) -> Result<Outcome> {
        let dir = &self.run_dir;
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir_text = dir
            .to_str()
            .filter(|d| !d.contains(|c: char| c.is_whitespace() || "=,'\"\\".contains(c)))
            .ok_or_else(|| {
                anyhow!(
                    "vm-test: vng cannot share {} (it splits paths at blanks and '=')",
                    dir.display()
                )
            })?;
        let script = dir.join("run.sh");
        fs::write(&script, self.script()?)
            .with_context(|| format!("writing {}", script.display()))?;
        let log_path = dir.join("vng.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the vng.log handle")?;

        let mut cmd = self.ctx.command(self.vng);
        cmd.arg("--disable-kvm")
            .arg("-r")
            .arg(&self.image.vmlinuz)
            .args(["--memory", GUEST_MEMORY, "--cpus", &self.cpus.to_string()])
            .args(["--rwdir", dir_text])
            .arg("--exec")
            .arg(format!("bash {}", quote(script.as_os_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: the timeout kills qemu with it.
            .process_group(0);
        println!(
            "vm-test: {}: booting {} under TCG ({} vCPUs, {GUEST_MEMORY}); vng's output: {}",
            self.kernel.key,
            self.image.release,
            self.cpus,
            log_path.display()
        );
        eprintln!("xtask: running: {}", show(&cmd));
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", show(&cmd)))?;
        let (status, timed_out) = loop {
            if let Some(status) = child.try_wait().context("waiting for vng")? {
                break (Some(status), false);
            }
            let interrupted = self.stop.load(Ordering::Relaxed);
            if interrupted || started.elapsed() >= self.timeout {
                kill_group(child.id());
                child.wait().context("waiting for the killed vng")?;
                if interrupted {
                    bail!("vm-test: interrupted; killed the {} VM", self.kernel.key);
                }
                break (None, true);
            }
            thread::sleep(Duration::from_millis(200));
        };
        let elapsed = started.elapsed();
        let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
        let log = read("test.log").unwrap_or_default();
        Ok(Outcome {
            elapsed,
            timed_out,
            status,
            rc: read("rc").and_then(|rc| rc.trim().parse().ok()),
            uname: read("uname").map(|u| u.trim().to_string()),
            counts: test_counts(&log),
            fallbacks: read("fallbacks").map(|f| fallback_list(&f)),
        })
    }

    /// The guest's script (bash, as root).
    fn script(&self) -> Result<String> {
        let at = |name: &str| quote(self.run_dir.join(name).as_os_str());
        let path = self
            .ctx
            .path
            .to_str()
            .ok_or_else(|| anyhow!("PATH is not UTF-8"))?;
        let mut test = vec![
            "env".to_string(),
            format!("PATH={}", quote(path.as_ref())),
            "CLAWTRACE_REQUIRE_PRIVILEGED=1".to_string(),
            format!(
                "CLAWTRACE_EXPECT_FALLBACKS={}",
                quote(self.kernel.expected.as_ref())
            ),
            format!("CLAWTRACE_TIME_SCALE={TIME_SCALE}"),
            format!("CLAWTRACE_COMPAT_REPORT={}", at("fallbacks")),
            "RUST_BACKTRACE=1".to_string(),
            quote(self.binary.executable.as_os_str()),
            "--test-threads=1".to_string(),
        ];
        test.extend(self.args.iter().map(|arg| quote(arg)));
        Ok(format!(
            "# Written by `cargo xtask vm-test`: runs as root in the {key} guest.\n\
             uname -r > {uname}\n\
             cat /proc/mounts > {mounts}\n\
             cd {package} || {{ echo 127 > {rc}; exit 127; }}\n\
             {test} > {log} 2>&1\n\
             echo $? > {rc}\n\
             sync\n",
            key = self.kernel.key,
            uname = at("uname"),
            mounts = at("mounts"),
            package = quote(self.binary.package_dir.as_os_str()),
            rc = at("rc"),
            test = test.join(" "),
            log = at("test.log"),
        ))
    }
}

/// SIGKILL to the process group `pgid` (vng, qemu and whatever they started).
fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: kill(2) takes no pointers; a negative pid names the process group that
        // `process_group(0)` made for vng, which stays ours until vng is reaped.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Outcome {
    /// Why the kernel failed; None when it passed.
    fn verdict(&self, kernel: &Kernel, image: &Image) -> Option<String> {
        if self.timed_out {
            return Some(format!(
                "timed out after {} s, VM killed",
                self.elapsed.as_secs()
            ));
        }
        if let Some(uname) = &self.uname {
            if *uname != image.release {
                return Some(format!("the guest ran {uname}, not {}", image.release));
            }
        }
        let Some(rc) = self.rc else {
            let vng = self
                .status
                .map_or_else(|| "killed".to_string(), |s| s.to_string());
            return Some(format!(
                "the guest wrote no exit code (vng: {vng}; see vng.log)"
            ));
        };
        if rc != 0 {
            return Some(format!("the test binary exited {rc}"));
        }
        match self.counts {
            None => return Some("no `test result:` line in test.log".to_string()),
            Some((0, _)) => return Some("no test ran".to_string()),
            Some((_, failed)) if failed > 0 => return Some(format!("{failed} test(s) failed")),
            Some(_) => {}
        }
        if let Some(seen) = &self.fallbacks {
            let expected = fallback_list(kernel.expected);
            if as_set(seen) != as_set(&expected) {
                return Some(format!(
                    "fallbacks differ from the expected {}",
                    kernel.expected
                ));
            }
        }
        None
    }

    fn summary(&self, kernel: &Kernel, image: &Image, verdict: Option<&str>) -> String {
        let counts = match self.counts {
            Some((passed, failed)) => format!("{passed} passed, {failed} failed"),
            None => "no test result".to_string(),
        };
        let fallbacks = match &self.fallbacks {
            None => "not reported".to_string(),
            Some(list) if list.is_empty() => "none".to_string(),
            Some(list) => list.join(","),
        };
        let mut line = format!(
            "vm-test: {} ({}, {}): {counts}; fallbacks: {fallbacks}; {} s",
            kernel.key,
            image.release,
            image.upstream(),
            self.elapsed.as_secs()
        );
        if let Some(why) = verdict {
            line.push_str(&format!("; FAILED: {why}"));
        }
        line
    }

    /// The last lines of `test.log`, else of `vng.log` when the test wrote nothing.
    fn print_log_tail(&self, dir: &Path) {
        let log = ["test.log", "vng.log"]
            .iter()
            .map(|name| dir.join(name))
            .find(|path| fs::metadata(path).is_ok_and(|m| m.len() > 0));
        let Some(log) = log else {
            println!("vm-test: no test.log or vng.log in {}", dir.display());
            return;
        };
        let text = fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        println!("vm-test: last {} lines of {}:", tail.len(), log.display());
        for line in tail {
            println!("    {line}");
        }
    }
}

/// (passed, failed) summed over libtest's `test result: ok. 14 passed; 0 failed; …` lines.
fn test_counts(log: &str) -> Option<(u64, u64)> {
    let mut total: Option<(u64, u64)> = None;
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("test result: ") else {
            continue;
        };
        let Some((_, counts)) = rest.split_once(". ") else {
            continue;
        };
        let count = |what: &str| {
            counts.split(';').find_map(|part| {
                part.trim()
                    .strip_suffix(what)
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        };
        if let (Some(passed), Some(failed)) = (count(" passed"), count(" failed")) {
            let (p, f) = total.unwrap_or((0, 0));
            total = Some((p + passed, f + failed));
        }
    }
    total
}

/// The comma-separated fallback keys of a report (or of the table).
fn fallback_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(str::to_string)
        .collect()
}

fn as_set(list: &[String]) -> BTreeSet<&str> {
    list.iter().map(String::as_str).collect()
}

// ----- the machine's apt sources -----

/// A `deb` source of the machine's apt configuration, as deb822 fields.
#[derive(Debug, PartialEq, Eq)]
struct Stanza {
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
    /// The Signed-By value as written (a keyring path, or an inline key over several lines).
    signed_by: Option<String>,
}

/// The suites of a Debian release besides its own: the point-release updates and the
/// security archive (where the newest kernels are; the release's own suite lags behind and,
/// for bookworm, has no 6.12 at all).
const RELEASE_SUITES: &[&str] = &["", "-updates", "-security"];

/// The machine's Debian release (`VERSION_CODENAME` of /etc/os-release) and its sources of the
/// Debian archive: `deb` entries with the `main` component that name that release's suites
/// ([`RELEASE_SUITES`]), from `/etc/apt/sources.list`, `/etc/apt/sources.list.d/*.list` and
/// `/etc/apt/sources.list.d/*.sources`.
fn host_archive_sources() -> Result<(String, Vec<Stanza>)> {
    let codename = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
                .map(|c| c.trim().trim_matches('"').to_string())
        })
        .filter(|c| !c.is_empty())
        .ok_or_else(|| anyhow!("vm-test: no VERSION_CODENAME in /etc/os-release (not Debian?)"))?;
    let mut stanzas = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut parts: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        parts.sort();
        files.extend(parts);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => stanzas.extend(parse_deb822(&text)),
            Some("list") => stanzas.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    stanzas.retain(|s| {
        s.components.iter().any(|c| c == "main")
            && s.suites
                .iter()
                .any(|suite| release_suite(suite, &codename).is_some())
    });
    if stanzas.is_empty() {
        bail!(
            "vm-test: no Debian archive (a `deb` source of suite {codename} with component main) \
             in /etc/apt/sources.list or /etc/apt/sources.list.d/"
        );
    }
    Ok((codename, stanzas))
}

/// The part of `suite` after the release `codename` when it is one of [`RELEASE_SUITES`]
/// (`""` for `bookworm`, `"-security"` for `bookworm-security`).
fn release_suite<'s>(suite: &'s str, codename: &str) -> Option<&'s str> {
    let rest = suite.strip_prefix(codename)?;
    RELEASE_SUITES.contains(&rest).then_some(rest)
}

/// The `deb` stanzas of a deb822 `.sources` file (`Enabled: no` ones left out).
fn parse_deb822(text: &str) -> Vec<Stanza> {
    let mut stanzas = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut finish = |fields: &mut Vec<(String, String)>| {
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        let words = |key: &str| -> Vec<String> {
            get(key)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if enabled && words("Types").iter().any(|t| t == "deb") {
            stanzas.push(Stanza {
                uris: words("URIs"),
                suites: words("Suites"),
                components: words("Components"),
                signed_by: get("Signed-By"),
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !fields.is_empty() {
                finish(&mut fields);
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    if !fields.is_empty() {
        finish(&mut fields);
    }
    stanzas
}

/// The `deb` lines of a one-line-style `sources.list`.
fn parse_one_line(text: &str) -> Vec<Stanza> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim();
            let (options, rest) = match rest.strip_prefix('[') {
                Some(bracketed) => bracketed.split_once(']')?,
                None => ("", rest),
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            let signed_by = options.split_whitespace().find_map(|option| {
                option
                    .strip_prefix("signed-by=")
                    .map(|path| path.to_string())
            });
            Some(Stanza {
                uris: vec![uri],
                suites: vec![suite],
                components: words.map(str::to_string).collect(),
                signed_by,
            })
        })
        .collect()
}

/// The private deb822 sources file: the machine's archive sources of release `codename`, for
/// release `release` instead (the same suffixes: `bookworm-security` becomes
/// `bullseye-security`), component `main` and package indexes only.
fn private_sources(archive: &[Stanza], codename: &str, release: &str) -> String {
    let mut out =
        String::from("# Written by `cargo xtask vm-test` from the machine's apt sources.\n");
    for stanza in archive {
        let suites: Vec<String> = stanza
            .suites
            .iter()
            .filter_map(|suite| Some(format!("{release}{}", release_suite(suite, codename)?)))
            .collect();
        if suites.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\nTypes: deb\nURIs: {}\nSuites: {}\nComponents: main\nArchitectures: {ARCH}\n\
             Targets: Packages\n",
            stanza.uris.join(" "),
            suites.join(" ")
        ));
        if let Some(signed_by) = &stanza.signed_by {
            out.push_str(&format!("Signed-By: {signed_by}\n"));
        }
    }
    out
}

// ----- package name patterns -----

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_patterns_match_debian_names() {
        let cases = [
            ("5.10", "linux-image-5.10.0-32-amd64", true),
            ("5.10", "linux-image-5.10.0-32-amd64-unsigned", false),
            ("5.10", "linux-image-5.10.0-32-rt-amd64", false),
            ("5.10", "linux-image-5.10.0--amd64", false),
            ("6.1", "linux-image-6.1.0-57-amd64", true),
            ("6.1", "linux-image-6.1.0-57-amd64-dbg", false),
            ("6.1", "linux-image-6.12.0-57-amd64", false),
            ("6.1", "xlinux-image-6.1.0-57-amd64", false),
            ("6.12", "linux-image-6.12.118+deb12-amd64", true),
            ("6.12", "linux-image-6.12.38+deb12-amd64", true),
            ("6.12", "linux-image-6.12.118+deb12-cloud-amd64", false),
            ("6.12", "linux-image-6.1.0-57-amd64", false),
        ];
        for (key, name, want) in cases {
            let kernel = KERNELS.iter().find(|k| k.key == key).expect("a table key");
            let pattern = Regex::new(kernel.package).expect("a valid pattern");
            assert_eq!(
                pattern.is_match(name),
                want,
                "{} against {name}",
                kernel.package
            );
            assert!(kernel.package.starts_with(&format!("^{IMAGE_PREFIX}")));
        }
        for key in DEFAULT_KERNELS {
            assert!(KERNELS.iter().any(|k| k.key == *key), "{key}");
        }
    }

    #[test]
    fn unknown_kernels_are_named_with_the_known_ones() {
        let err = select(&["4.19".to_string()]).err().expect("an error");
        assert_eq!(
            err.to_string(),
            r#"vm-test: unknown kernel "4.19"; known: 5.10, 6.1, 6.12, 5.10-lts"#
        );
        let all: Vec<_> = select(&[]).expect("all").iter().map(|k| k.key).collect();
        assert_eq!(all, ["5.10", "6.1", "6.12"]);
        let some: Vec<_> = select(&["6.12".into(), "5.10".into()])
            .expect("two")
            .iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(some, ["5.10", "6.12"]);
    }

    #[test]
    fn libtest_result_lines_are_summed() {
        let log = "running 3 tests\n\
                   test a ... ok\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; finished in 1.00s\n\
                   test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s\n";
        assert_eq!(test_counts(log), Some((7, 1)));
        assert_eq!(test_counts("thread 'main' panicked\n"), None);
    }

    #[test]
    fn fallback_reports_are_compared_as_sets() {
        assert_eq!(fallback_list(" a, b ,\n"), ["a", "b"]);
        assert!(fallback_list("\n").is_empty());
        assert_eq!(as_set(&fallback_list("b,a")), as_set(&fallback_list("a,b")));
    }

    #[test]
    fn madison_lines_give_the_suites_versions() {
        let out = " linux-image-6.1.0-57-amd64 | 6.1.192-1 | http://mirror.example/debian bookworm/main amd64 Packages\n\
                    linux-image-6.1.0-57-amd64 | 6.1.190-1 | http://mirror.example/debian-security bookworm-security/main amd64 Packages\n\
                    linux-image-6.1.0-57-amd64 | 6.1.180-1 | http://mirror.example/debian bookworm-backports/main amd64 Packages\n";
        let name = "linux-image-6.1.0-57-amd64".to_string();
        assert_eq!(
            madison_versions(out, "bookworm"),
            [
                (
                    name.clone(),
                    "6.1.192-1".to_string(),
                    "bookworm".to_string()
                ),
                (
                    name,
                    "6.1.190-1".to_string(),
                    "bookworm-security".to_string()
                )
            ]
        );
        assert!(madison_versions(out, "bullseye").is_empty());
        assert!(madison_versions("", "bookworm").is_empty());
        assert_eq!(upstream_version("6.12.118-1~deb12u1"), "6.12.118");
        assert_eq!(upstream_version("1:5.10.223-1"), "5.10.223");
    }

    #[test]
    fn the_machines_sources_give_the_archive() {
        let deb822 = "Types: deb\n\
                      # a comment\n\
                      URIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\n\
                      Components: main\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                      \n\
                      Types: deb-src\n\
                      URIs: http://mirror.example/debian\n\
                      Suites: bookworm\n\
                      Components: main\n\
                      \n\
                      Types: deb\n\
                      Enabled: no\n\
                      URIs: http://other.example/debian\n\
                      Suites: bookworm\n\
                      Components: main\n";
        let stanzas = parse_deb822(deb822);
        assert_eq!(
            stanzas,
            [Stanza {
                uris: vec!["http://mirror.example/debian".into()],
                suites: vec!["bookworm".into(), "bookworm-updates".into()],
                components: vec!["main".into()],
                signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            }]
        );
        let one_line = "# deb http://old.example/debian buster main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n\
                        deb-src http://mirror.example/debian bookworm main\n";
        let stanzas = parse_one_line(one_line);
        assert_eq!(
            stanzas,
            [Stanza {
                uris: vec!["http://mirror.example/debian".into()],
                suites: vec!["bookworm".into()],
                components: vec!["main".into(), "contrib".into()],
                signed_by: Some("/k.gpg".into()),
            }]
        );
        let sources = private_sources(&stanzas, "bookworm", "bullseye");
        assert!(sources.contains(
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bullseye\n\
             Components: main\nArchitectures: amd64\nTargets: Packages\nSigned-By: /k.gpg\n"
        ));
        let security = parse_deb822(
            "Types: deb\nURIs: http://mirror.example/debian-security\n\
             Suites: bookworm-security bookworm-backports\nComponents: main\n",
        );
        let sources = private_sources(&security, "bookworm", "bullseye");
        assert!(sources.contains("Suites: bullseye-security\n"), "{sources}");
        assert_eq!(
            release_suite("bookworm-updates", "bookworm"),
            Some("-updates")
        );
        assert_eq!(release_suite("bookworm-backports", "bookworm"), None);
        assert_eq!(release_suite("bookworms", "bookworm"), None);
    }

    #[test]
    fn inline_keys_stay_as_written() {
        let deb822 = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm\n\
                      Components: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n";
        let stanzas = parse_deb822(deb822);
        assert_eq!(
            stanzas[0].signed_by.as_deref(),
            Some("\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc")
        );
    }
}
