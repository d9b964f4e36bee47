//! clawtrace's task runner, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! - `setup [--no-packages]`: installs what building and testing need (nightly's `rust-src`, a
//!   `bpf-linker` for nightly's LLVM, the Debian packages the tests drive). Idempotent.
//! - `build [--release]`: checks the toolchain part of `setup`, then builds `clawtrace` (whose
//!   build script builds the eBPF programs with nightly and bpf-linker).
//! - `run [--release] [-- ARGS]`: builds, then runs `clawtrace run ARGS` as root; `run -- top
//!   [ARGS]` runs the live view, `clawtrace top ARGS`, instead.
//! - `test [-- ARGS]`: full `setup`, the unit tests, then the privileged end-to-end tests as root.
//!   `--fuzz [SECONDS]` then runs each cargo-fuzz target of `fuzz/` for SECONDS (default 60;
//!   `--fuzz-only` skips the tests; see `fuzz.rs`).
//! - `bench [--quick]`: performance benchmarks as root; report in `target/bench/` (see `bench.rs`).
//! - `vm-test [--kernel VERSION]... [--timeout SECONDS] [-- FILTER]`: the kernel-compatibility
//!   tests (`tests/compat.rs`) in TCG virtual machines booting Debian's kernels (5.10, 6.1,
//!   6.12); installs qemu and virtme-ng, caches the kernels in `target/vm/` (see `vm.rs`).
//!
//! Every command that builds, installs or runs something is printed before it runs
//! (`xtask: running: …`); read-only probes (`dpkg-query`, `rustup component list`, …) are not.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus, Output},
    sync::{atomic::AtomicBool, Arc},
    time::Instant,
};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};

mod bench;
mod fuzz;
mod vm;

/// The bpf-linker release this project builds with (it loads the toolchain's libLLVM at run time).
const BPF_LINKER_VERSION: &str = "0.10.4";

/// Name of the stamp file, beside the installed bpf-linker, holding the LLVM major it is for.
const BPF_LINKER_STAMP: &str = ".bpf-linker-llvm";

/// Debian packages the tests use: (package, optional, what for).
const PACKAGES: &[(&str, bool, &str)] = &[
    ("runc", false, "bare OCI containers"),
    ("busybox-static", false, "container root filesystems"),
    ("docker.io", false, "docker containers"),
    (
        "containerd",
        false,
        "docker's runtime, and the CRI plugin kubelet drives",
    ),
    ("tini", false, "docker run --init"),
    ("podman", false, "podman containers"),
    ("gcc", false, "static test payloads"),
    ("libc6-dev", false, "static test payloads"),
    ("bpftrace", false, "peer tracer"),
    ("libbpf-tools", false, "peer tracers (exitsnoop, sigsnoop)"),
    ("bpftool", false, "inspecting loaded programs"),
    ("python3", false, "test helpers"),
    ("util-linux", false, "setpriv"),
    ("iproute2", false, "network namespaces"),
    ("prometheus", false, "scraping /metrics, promtool"),
    ("python3-yaml", false, "parsing deploy/'s YAML files"),
    (
        "protobuf-compiler",
        false,
        "building the CRI client of the Kubernetes test",
    ),
    ("tmux", false, "driving `clawtrace top` in a terminal"),
    ("linux-perf", true, "perf measurements"),
];

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "clawtrace's build, run and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need; skips what is present.
    Setup {
        /// Skip the Debian packages (enough for building).
        #[arg(long)]
        no_packages: bool,
    },
    /// Build clawtrace and its eBPF programs.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `clawtrace run ARGS` as root (through `sudo -E` when not root);
    /// `-- top ARGS` runs `clawtrace top ARGS`, the live view.
    Run {
        /// Build and run the release profile.
        #[arg(long)]
        release: bool,
        /// Arguments for `clawtrace run`, or `top` and arguments for `clawtrace top`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Full setup, the unit tests, then the privileged end-to-end tests as root.
    Test {
        /// Then run each fuzz target (fuzz/) for SECONDS; installs cargo-fuzz if missing.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1,
              default_missing_value = fuzz::DEFAULT_SECONDS_ARG,
              value_parser = clap::value_parser!(u64).range(1..))]
        fuzz: Option<u64>,
        /// Only the fuzz targets: skip the tests (implies --fuzz).
        #[arg(long)]
        fuzz_only: bool,
        /// Arguments for the test binaries (both steps), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Benchmarks as root: lifecycle storm, overhead against bpftrace, per-probe cost,
    /// user-space pipeline, memory; report in target/bench/report.{md,json}.
    Bench(bench::Options),
    /// The kernel-compatibility tests in VMs booting Debian's kernels (TCG, virtme-ng).
    VmTest(vm::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_task(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_task(task: Task) -> Result<ExitCode> {
    let ctx = Ctx::new()?;
    match task {
        Task::Setup { no_packages } => {
            let started = Instant::now();
            ctx.setup_toolchain()?;
            if !no_packages {
                ctx.setup_packages()?;
            }
            println!("setup: done in {:.2}s", started.elapsed().as_secs_f64());
        }
        Task::Build { release } => {
            ctx.setup_toolchain()?;
            ctx.build(release)?;
        }
        Task::Run { release, args } => {
            ctx.setup_toolchain()?;
            ctx.build(release)?;
            return ctx.run_clawtrace(release, &args);
        }
        Task::Test {
            args,
            fuzz,
            fuzz_only,
        } => {
            ctx.setup_toolchain()?;
            if !fuzz_only {
                ctx.setup_packages()?;
                ctx.test(&args)?;
            }
            if let Some(seconds) = fuzz.or(fuzz_only.then_some(fuzz::DEFAULT_SECONDS)) {
                ctx.fuzz(seconds)?;
            }
        }
        Task::Bench(options) => return bench::run(&ctx, options),
        Task::VmTest(options) => return vm::run(ctx, options),
    }
    Ok(ExitCode::SUCCESS)
}

struct Ctx {
    /// The workspace root (the parent of xtask's manifest folder).
    root: PathBuf,
    /// The cargo that runs this xtask (`$CARGO`), else `cargo` from PATH.
    cargo: OsString,
    /// Where `cargo install` puts binaries: `$CARGO_HOME/bin`.
    cargo_bin: PathBuf,
    /// PATH for every child: ours, with `$CARGO_HOME/bin` appended when it is missing.
    path: OsString,
    /// Effective user id of this process.
    euid: u32,
}

impl Ctx {
    fn new() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("xtask's manifest folder has no parent"))?
            .to_path_buf();
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let cargo_home = match env::var_os("CARGO_HOME") {
            Some(home) => PathBuf::from(home),
            None => {
                PathBuf::from(env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?)
                    .join(".cargo")
            }
        };
        let cargo_bin = cargo_home.join("bin");
        let mut dirs: Vec<PathBuf> = env::var_os("PATH")
            .map(|p| env::split_paths(&p).collect())
            .unwrap_or_default();
        if !dirs.contains(&cargo_bin) {
            dirs.push(cargo_bin.clone());
        }
        let path = env::join_paths(dirs).context("PATH holds a folder name with a ':'")?;
        Ok(Self {
            root,
            cargo,
            cargo_bin,
            path,
            euid: effective_uid()?,
        })
    }

    /// A command that runs in the workspace root with our PATH (also used to find `program`).
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PATH", &self.path).current_dir(&self.root);
        cmd
    }

    fn cargo(&self) -> Command {
        self.command(&self.cargo)
    }

    fn which(&self, name: &str) -> Option<PathBuf> {
        env::split_paths(&self.path)
            .map(|dir| dir.join(name))
            .find(|file| is_executable(file))
    }

    fn is_root(&self) -> bool {
        self.euid == 0
    }

    // ----- setup: toolchain -----

    /// The toolchain part of setup: nightly with rust-src, and a bpf-linker for nightly's LLVM.
    /// When everything is present this only runs a few quick probes.
    fn setup_toolchain(&self) -> Result<()> {
        self.ensure_rust_src()?;
        let llvm = self.nightly_llvm_major()?;
        self.ensure_bpf_linker(llvm)
    }

    /// Ensures the `nightly` toolchain exists and has `rust-src` (needed by `-Z build-std=core`).
    fn ensure_rust_src(&self) -> Result<()> {
        if self.which("rustup").is_none() {
            bail!("setup: rustup not found on PATH; install it from https://rustup.rs");
        }
        let out = self
            .command("rustup")
            .args(["component", "list", "--toolchain", "nightly", "--installed"])
            .output()
            .context("setup: running `rustup component list`")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !stderr.contains("is not installed") {
                bail!(
                    "setup: `rustup component list --toolchain nightly` failed: {}",
                    first_line(&stderr)
                );
            }
            println!("setup: nightly toolchain: installing (with rust-src)");
            return run(self.command("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .context("setup: cannot install the nightly toolchain");
        }
        let installed = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line.trim() == "rust-src" || line.trim().starts_with("rust-src-"));
        if installed {
            println!("setup: rust-src (nightly): present");
            return Ok(());
        }
        println!("setup: rust-src (nightly): installing");
        run(self
            .command("rustup")
            .args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("setup: cannot add rust-src to the nightly toolchain")
    }

    /// LLVM major version of nightly's rustc, from the `LLVM version: 22.1.4` line of `-vV`.
    fn nightly_llvm_major(&self) -> Result<u32> {
        let out = probe(self.command("rustc").args(["+nightly", "-vV"]))
            .context("setup: cannot ask nightly rustc for its LLVM version")?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("LLVM version:"))
            .and_then(|version| version.trim().split('.').next()?.parse().ok())
            .ok_or_else(|| {
                anyhow!("setup: `rustc +nightly -vV` printed no `LLVM version: N.…` line")
            })
    }

    /// Ensures a `bpf-linker` that works with nightly's LLVM major `llvm`.
    ///
    /// bpf-linker has to drive the same LLVM major as the rustc that compiles the eBPF crate.
    /// Version 0.10.4 does not link LLVM in: it loads the rustup toolchain's own libLLVM at run
    /// time, so the binary itself says nothing about which LLVM it suits. The check is therefore
    /// a stamp: after a successful `cargo install bpf-linker@0.10.4 --locked --force`, the
    /// nightly LLVM major it was built for is written to `$CARGO_HOME/bin/.bpf-linker-llvm`.
    ///
    /// - no `bpf-linker` on PATH (or in `$CARGO_HOME/bin`), or one whose `--version` is not
    ///   0.10.4: install 0.10.4;
    /// - a stamp whose major differs from nightly's: reinstall (nightly moved to a new LLVM);
    /// - 0.10.4 present but no stamp (installed by hand, e.g. by the machine's image): accept it
    ///   as built for today's nightly and write the stamp.
    ///
    /// This proves only that the binary runs and is the pinned release; whether it really links
    /// BPF objects with this LLVM shows in the next `cargo xtask build`.
    fn ensure_bpf_linker(&self, llvm: u32) -> Result<()> {
        let stamp_path = self.cargo_bin.join(BPF_LINKER_STAMP);
        let stamp: Option<u32> = fs::read_to_string(&stamp_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let found = self.which("bpf-linker");
        let reason = match &found {
            None => "not found".to_string(),
            Some(path) => match self.bpf_linker_version(path) {
                None => format!("{} does not run", path.display()),
                Some(version) if version != BPF_LINKER_VERSION => {
                    format!("{} is {version}, want {BPF_LINKER_VERSION}", path.display())
                }
                Some(_) => match stamp {
                    Some(major) if major == llvm => {
                        println!(
                            "setup: bpf-linker {BPF_LINKER_VERSION} (LLVM {llvm}): present ({})",
                            path.display()
                        );
                        return Ok(());
                    }
                    Some(major) => format!("installed for LLVM {major}, nightly has LLVM {llvm}"),
                    None => {
                        write_stamp(&stamp_path, llvm)?;
                        println!(
                            "setup: bpf-linker {BPF_LINKER_VERSION} (LLVM {llvm}): present ({}); \
                             no stamp, accepted for nightly's LLVM {llvm} and wrote {}",
                            path.display(),
                            stamp_path.display()
                        );
                        return Ok(());
                    }
                },
            },
        };
        println!(
            "setup: bpf-linker {BPF_LINKER_VERSION} (LLVM {llvm}): installing ({reason}); \
             this builds it and takes several minutes"
        );
        // The PATH may hold another bpf-linker ahead of $CARGO_HOME/bin.
        let found = self.cargo_install("bpf-linker", BPF_LINKER_VERSION, true)?;
        match self.bpf_linker_version(&found) {
            Some(version) if version == BPF_LINKER_VERSION => {}
            other => bail!(
                "setup: {} ({}) comes first on PATH and shadows the bpf-linker {BPF_LINKER_VERSION} \
                 just installed in {}; remove it or reorder PATH",
                found.display(),
                other.as_deref().unwrap_or("does not run"),
                self.cargo_bin.display()
            ),
        }
        write_stamp(&stamp_path, llvm)?;
        println!("setup: bpf-linker {BPF_LINKER_VERSION} (LLVM {llvm}): installed");
        Ok(())
    }

    /// `cargo install --locked NAME@VERSION` into `$CARGO_HOME` (`--force`: over an installed
    /// one); returns the `NAME` binary that then comes first on PATH.
    pub(crate) fn cargo_install(&self, name: &str, version: &str, force: bool) -> Result<PathBuf> {
        let cargo_home = self
            .cargo_bin
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent", self.cargo_bin.display()))?;
        let mut install = self.cargo();
        install
            .args(["install", &format!("{name}@{version}"), "--locked"])
            .args(force.then_some("--force"))
            .arg("--root")
            .arg(cargo_home);
        run(&mut install).with_context(|| format!("setup: cannot install {name}"))?;
        self.which(name)
            .ok_or_else(|| anyhow!("setup: {name} is still not on PATH after installing"))
    }

    /// The version `bpf-linker --version` reports (`bpf-linker 0.10.4` gives `0.10.4`).
    fn bpf_linker_version(&self, path: &Path) -> Option<String> {
        let out = probe(self.command(path).arg("--version")).ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().nth(1)?;
        Some(version.to_string())
    }

    // ----- setup: Debian packages -----

    /// Installs the Debian packages of [`PACKAGES`] that are not installed yet.
    pub(crate) fn setup_packages(&self) -> Result<()> {
        self.ensure_packages(PACKAGES, " (or pass --no-packages to only build)")
    }

    /// Installs those of `packages` (package, optional, what for) that are not installed yet;
    /// `hint` ends the error when there is no apt at all.
    pub(crate) fn ensure_packages(
        &self,
        packages: &[(&str, bool, &str)],
        hint: &str,
    ) -> Result<()> {
        let names: Vec<&str> = packages.iter().map(|(name, _, _)| *name).collect();
        if self.which("dpkg-query").is_none() || self.which("apt-get").is_none() {
            bail!(
                "setup: no dpkg-query/apt-get (not Debian?); install by other means: {}{hint}",
                names.join(" ")
            );
        }
        let mut missing = Vec::new();
        for &(name, optional, why) in packages {
            if self.package_installed(name)? {
                println!("setup: package {name}: present");
            } else {
                missing.push((name, optional, why));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let missing_names: Vec<&str> = missing.iter().map(|(name, _, _)| *name).collect();
        if !self.is_root() && self.which("sudo").is_none() {
            bail!(
                "setup: not root and no sudo; as root run: apt-get install -y --no-install-recommends {}",
                missing_names.join(" ")
            );
        }
        run(&mut self.apt_get(&["update"])).context("setup: apt-get update failed")?;
        let mut install = Vec::new();
        let mut unavailable = Vec::new();
        for (name, optional, why) in missing {
            if self.package_available(name)? {
                println!("setup: package {name}: installing");
                install.push(name);
            } else if optional {
                println!(
                    "setup: package {name}: not available from apt, skipped (optional: {why})"
                );
            } else {
                unavailable.push(name);
            }
        }
        if !unavailable.is_empty() {
            bail!(
                "setup: no installation candidate in apt for: {}",
                unavailable.join(" ")
            );
        }
        if install.is_empty() {
            return Ok(());
        }
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(&install);
        run(&mut self.apt_get(&args))
            .with_context(|| format!("setup: cannot install {}", install.join(" ")))
    }

    /// `apt-get ARGS`, non-interactive, through sudo when not root.
    fn apt_get(&self, args: &[&str]) -> Command {
        let mut cmd = if self.is_root() {
            let mut cmd = self.command("apt-get");
            cmd.env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        } else {
            // sudo resets the environment: pass the variable through env(1).
            let mut cmd = self.command("sudo");
            cmd.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            cmd
        };
        cmd.args(args);
        cmd
    }

    fn package_installed(&self, name: &str) -> Result<bool> {
        let out = self
            .command("dpkg-query")
            .args(["-W", "-f=${Status}", name])
            .output()
            .context("setup: running dpkg-query")?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
    }

    /// True when `apt-cache policy` shows an installation candidate for `name`.
    fn package_available(&self, name: &str) -> Result<bool> {
        let out = probe(self.command("apt-cache").args(["policy", name]))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().any(|line| {
            line.trim()
                .strip_prefix("Candidate:")
                .is_some_and(|candidate| candidate.trim() != "(none)")
        }))
    }

    // ----- build, run, test -----

    fn build(&self, release: bool) -> Result<()> {
        let mut cmd = self.cargo();
        cmd.args(["build", "-p", "tracer-user"]);
        if release {
            cmd.arg("--release");
        }
        run(&mut cmd)
    }

    /// Runs the built `clawtrace run ARGS` (or `clawtrace top ARGS…` for ARGS `top ARGS…`) as
    /// root and returns its exit code (128 + signal when a signal ended it).
    fn run_clawtrace(&self, release: bool, args: &[OsString]) -> Result<ExitCode> {
        const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:9464";
        let target_dir = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => self.root.join(dir),
            None => self.root.join("target"),
        };
        let binary = target_dir
            .join(if release { "release" } else { "debug" })
            .join("clawtrace");
        let mut cmd = if self.is_root() {
            self.command(&binary)
        } else {
            self.sudo_or_fail(
                "clawtrace run needs root and there is no sudo: run `cargo xtask run` as root",
            )?;
            let mut cmd = self.command("sudo");
            cmd.arg("-E").arg(&binary);
            cmd
        };
        let top = args.first().is_some_and(|a| a == "top");
        if top {
            cmd.args(args);
        } else {
            cmd.arg("run").args(args);
        }
        // The ad hoc run serves metrics on loopback unless told where (the live view does not).
        if !top
            && !args
                .iter()
                .any(|a| a.to_string_lossy().starts_with("--prometheus-listen"))
        {
            cmd.args(["--prometheus-listen", DEFAULT_PROMETHEUS_LISTEN]);
        }
        // Ctrl-C reaches the whole foreground process group: let clawtrace handle it and shut
        // down, and stay alive to report its exit code. A handler (unlike SIG_IGN) is reset by
        // exec, so the child still gets the default disposition.
        signal_hook::flag::register(
            signal_hook::consts::SIGINT,
            Arc::new(AtomicBool::new(false)),
        )
        .context("installing a SIGINT handler")?;
        let status = spawn_and_wait(&mut cmd)?;
        Ok(exit_code(status))
    }

    /// Unit tests, then the privileged end-to-end tests (the `[[test]]` targets of tracer-user)
    /// as root with CLAWTRACE_REQUIRE_PRIVILEGED=1, so that a test that would skip fails.
    fn test(&self, args: &[OsString]) -> Result<()> {
        let mut unit = self.cargo();
        unit.args([
            "test",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--lib",
            "--bins",
        ]);
        if !args.is_empty() {
            unit.arg("--").args(args);
        }
        run(&mut unit).context("unit tests failed")?;

        // `--test '*'`: only the integration-test targets; the unit tests ran above.
        let mut privileged = self.cargo();
        privileged.args(["test", "-p", "tracer-user", "--test", "*"]);
        if self.is_root() {
            privileged.env("CLAWTRACE_REQUIRE_PRIVILEGED", "1");
        } else {
            // Build as this user (a root-owned target/ would break later builds) and run only
            // the test binaries as root, through a cargo runner.
            self.sudo_or_fail(
                "the privileged tests need root and there is no sudo: run `cargo xtask test` as root",
            )?;
            let path = self
                .path
                .to_str()
                .ok_or_else(|| anyhow!("PATH is not UTF-8"))?;
            let runner = [
                "sudo",
                "-E",
                "env",
                &format!("PATH={path}"),
                "CLAWTRACE_REQUIRE_PRIVILEGED=1",
            ]
            .map(toml_string)
            .join(",");
            privileged
                .arg("--config")
                .arg(format!("target.{}.runner=[{runner}]", self.host_triple()?));
        }
        privileged.args(["--", "--test-threads=2"]).args(args);
        run(&mut privileged).context("privileged tests failed")
    }

    /// Fails with `message` when there is no sudo to become root with.
    fn sudo_or_fail(&self, message: &str) -> Result<()> {
        match self.which("sudo") {
            Some(_) => Ok(()),
            None => bail!("{message}"),
        }
    }

    /// The host target triple, from `rustc -vV`.
    fn host_triple(&self) -> Result<String> {
        let out = probe(self.command("rustc").arg("-vV"))?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("host:"))
            .map(|host| host.trim().to_string())
            .ok_or_else(|| anyhow!("`rustc -vV` printed no `host:` line"))
    }
}

/// Effective uid from the `Uid:` line of /proc/self/status (real, effective, saved, fs), else
/// from `id -u`; either way without unsafe code.
fn effective_uid() -> Result<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        let euid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok());
        if let Some(euid) = euid {
            return Ok(euid);
        }
    }
    let out = probe(Command::new("id").arg("-u")).context("finding the effective user id")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("`id -u` printed no number")
}

fn write_stamp(path: &Path, llvm: u32) -> Result<()> {
    fs::write(path, format!("{llvm}\n"))
        .with_context(|| format!("setup: writing {}", path.display()))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The command as a shell line: its extra environment (all but PATH), program and arguments.
fn show(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter_map(|(key, value)| match (key, value) {
            (key, Some(value)) if key != "PATH" => {
                Some(format!("{}={}", key.to_string_lossy(), quote(value)))
            }
            _ => None,
        });
    let words = std::iter::once(quote(cmd.get_program())).chain(cmd.get_args().map(quote));
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Prints the command, runs it with inherited stdio and returns how it ended.
fn spawn_and_wait(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("xtask: running: {}", show(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", show(cmd)))
}

/// Prints and runs the command; fails unless it succeeds.
fn run(cmd: &mut Command) -> Result<()> {
    let status = spawn_and_wait(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs a read-only probe quietly and returns its output; fails unless it succeeds.
fn probe(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            show(cmd),
            out.status,
            first_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(out)
}

fn exit_code(status: ExitStatus) -> ExitCode {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("PATH=/a b:/c"), r#""PATH=/a b:/c""#);
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("a\tb"), r#""a\u0009b""#);
    }

    #[test]
    fn shown_commands_quote_what_the_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.env("PATH", "/bin")
            .env("CLAWTRACE_REQUIRE_PRIVILEGED", "1")
            .args(["test", "--test", "*", "--", "it's"]);
        assert_eq!(
            show(&cmd),
            r#"CLAWTRACE_REQUIRE_PRIVILEGED=1 cargo test --test '*' -- 'it'\''s'"#
        );
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        assert_eq!(exit_code(ExitStatus::from_raw(2)), ExitCode::from(130)); // SIGINT
    }
}
