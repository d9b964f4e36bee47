//! `cargo xtask test --fuzz [SECONDS]`: runs every cargo-fuzz target of `fuzz/` for a bounded
//! time, after the tests (or alone with `--fuzz-only`).
//!
//! Needs the nightly toolchain (`setup` checks it) and the `cargo-fuzz` binary, installed here
//! when missing (`cargo install cargo-fuzz@0.13.2 --locked`). Each target runs through
//! `rustup run nightly cargo fuzz run TARGET` with AddressSanitizer (cargo-fuzz's default) on:
//! tracer-user's build script builds the eBPF object with its own nested cargo, and aya-build
//! gives that build explicit `CARGO_ENCODED_RUSTFLAGS`, which win over the sanitizer
//! `RUSTFLAGS` cargo-fuzz sets, so the two builds do not interfere (see `fuzz/README.md`).
//!
//! Every target runs even when one fails; the failures are reported together at the end, each
//! with the crashing input libFuzzer saved under `fuzz/artifacts/TARGET/`.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::{run, Ctx};

/// The cargo-fuzz release installed when none is present.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz targets (the `[[bin]]`s of `fuzz/Cargo.toml`), in the order they run.
pub const TARGETS: &[&str] = &["decode", "labels", "cli_args", "cgroup_pattern", "model"];

/// Seconds per target when `--fuzz` has no value (and for `--fuzz-only` alone).
pub const DEFAULT_SECONDS: u64 = 60;
/// The same, as clap's `default_missing_value` wants it.
pub const DEFAULT_SECONDS_ARG: &str = "60";

impl Ctx {
    fn fuzz_dir(&self) -> PathBuf {
        self.root.join("fuzz")
    }

    /// Ensures a `cargo-fuzz` binary on PATH (or in `$CARGO_HOME/bin`); any release will do,
    /// `CARGO_FUZZ_VERSION` is installed when there is none.
    pub(crate) fn ensure_cargo_fuzz(&self) -> Result<()> {
        if let Some(path) = self.which("cargo-fuzz") {
            println!("setup: cargo-fuzz: present ({})", path.display());
            return Ok(());
        }
        println!("setup: cargo-fuzz {CARGO_FUZZ_VERSION}: installing (not found)");
        let path = self.cargo_install("cargo-fuzz", CARGO_FUZZ_VERSION, false)?;
        println!(
            "setup: cargo-fuzz {CARGO_FUZZ_VERSION}: installed ({})",
            path.display()
        );
        Ok(())
    }

    /// Builds the fuzz targets, then runs each for `seconds`; fails after the last one if any
    /// of them found a crash (or did not run).
    pub(crate) fn fuzz(&self, seconds: u64) -> Result<()> {
        self.ensure_cargo_fuzz()?;
        // One build of every target first, so that a build error shows once and the time
        // budget of each target is spent fuzzing.
        run(&mut self.cargo_fuzz(&["build"])).context("building the fuzz targets failed")?;
        let mut failed = Vec::new();
        for target in TARGETS {
            let before = self.artifacts(target);
            println!("fuzz: {target}: running for {seconds} s");
            let mut cmd = self.cargo_fuzz(&["run", target]);
            // The corpus that grows (ignored by git), then the committed seeds: inputs that
            // found bugs once, run first every time.
            // (cargo-fuzz makes the corpus folder only when it picks it itself.)
            let corpus = self.fuzz_dir().join("corpus").join(target);
            fs::create_dir_all(&corpus)
                .with_context(|| format!("fuzz: making {}", corpus.display()))?;
            cmd.arg(corpus);
            let seeds = self.fuzz_dir().join("seeds").join(target);
            if seeds.is_dir() {
                cmd.arg(seeds);
            }
            cmd.arg("--")
                .arg(format!("-max_total_time={seconds}"))
                // One input may take this long before it counts as a hang.
                .arg("-timeout=10")
                .arg("-print_final_stats=1");
            match run(&mut cmd) {
                Ok(()) => println!("fuzz: {target}: no failure in {seconds} s"),
                Err(err) => {
                    let found: Vec<PathBuf> = self
                        .artifacts(target)
                        .difference(&before)
                        .cloned()
                        .collect();
                    println!("fuzz: {target}: FAILED ({err:#})");
                    failed.push((*target, found));
                }
            }
        }
        if failed.is_empty() {
            println!("fuzz: {} targets, no failure", TARGETS.len());
            return Ok(());
        }
        for (target, found) in &failed {
            for input in found {
                println!(
                    "fuzz: {target}: crashing input {}; reproduce with \
                     `cargo +nightly fuzz run {target} {}`, minimize with \
                     `cargo +nightly fuzz tmin {target} {}`",
                    input.display(),
                    input.display(),
                    input.display()
                );
            }
        }
        let names: Vec<&str> = failed.iter().map(|(target, _)| *target).collect();
        bail!("fuzz targets failed: {}", names.join(", "))
    }

    /// `cargo fuzz SUBCOMMAND ARGS…` with nightly, for the fuzz crate of this workspace.
    fn cargo_fuzz(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.command("rustup");
        cmd.args(["run", "nightly", "cargo", "fuzz"])
            .args(args)
            .arg("--fuzz-dir")
            .arg(self.fuzz_dir());
        // A RUSTC inherited from the caller would be the stable compiler, which rejects the
        // sanitizer flags; `rustup run` puts nightly's first on PATH.
        cmd.env_remove("RUSTC").env_remove("RUSTUP_TOOLCHAIN");
        cmd
    }

    /// The files libFuzzer has left in `fuzz/artifacts/TARGET/` (crashes, leaks, timeouts).
    fn artifacts(&self, target: &str) -> BTreeSet<PathBuf> {
        list_files(&self.fuzz_dir().join("artifacts").join(target))
    }
}

fn list_files(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_seconds_agree() {
        assert_eq!(
            DEFAULT_SECONDS_ARG.parse::<u64>().ok(),
            Some(DEFAULT_SECONDS)
        );
    }

    /// Every target here is a `[[bin]]` of fuzz/Cargo.toml with its source file, and back.
    #[test]
    fn targets_match_the_fuzz_manifest() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
        let bins: BTreeSet<&str> = manifest
            .lines()
            .filter_map(|line| line.trim().strip_prefix("name = \""))
            .filter_map(|rest| rest.strip_suffix('"'))
            .filter(|name| *name != "clawtrace-fuzz")
            .collect();
        let targets: BTreeSet<&str> = TARGETS.iter().copied().collect();
        assert_eq!(bins, targets);
        for target in TARGETS {
            let source = fuzz.join("fuzz_targets").join(format!("{target}.rs"));
            assert!(source.is_file(), "{} missing", source.display());
        }
    }
}
