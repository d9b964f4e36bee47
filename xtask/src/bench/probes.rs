//! Per-program kernel cost from the kernel's BPF run-time statistics: with
//! `kernel.bpf_stats_enabled=1` the kernel times every run of every program, and
//! `bpftool -j prog show` reports `run_time_ns` and `run_cnt` for each.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the statistics on and restores the previous setting when dropped.
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn on() -> Result<StatsEnabled> {
        let previous = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(StatsEnabled { previous })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "xtask: bench: could not restore {STATS_SYSCTL} to {}: {e}",
                self.previous
            );
        }
    }
}

/// One program's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct ProgStats {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The ids of the BPF programs process `pid` holds open (from its fdinfo's `prog_id:` lines).
pub fn prog_ids_of(pid: u32) -> Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fd");
    let mut ids = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(entry) = entry else { continue };
        let is_prog = fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        bail!("process {pid} holds no BPF program");
    }
    Ok(ids)
}

/// The counters of programs `ids`, from `bpftool -j prog show`.
pub fn snapshot(ids: &[u32]) -> Result<BTreeMap<u32, ProgStats>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool -j prog show")?;
    if !out.status.success() {
        bail!(
            "bpftool -j prog show failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let progs: Value =
        serde_json::from_slice(&out.stdout).context("parsing bpftool's JSON output")?;
    let progs = progs
        .as_array()
        .ok_or_else(|| anyhow!("bpftool printed no JSON array"))?;
    let mut stats = BTreeMap::new();
    for prog in progs {
        let Some(id) = prog
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
        else {
            continue;
        };
        if !ids.contains(&id) {
            continue;
        }
        stats.insert(
            id,
            ProgStats {
                name: prog
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                run_time_ns: prog.get("run_time_ns").and_then(Value::as_u64).unwrap_or(0),
                run_cnt: prog.get("run_cnt").and_then(Value::as_u64).unwrap_or(0),
            },
        );
    }
    Ok(stats)
}

/// What each program cost between two snapshots: (name, runs, total ns), busiest first.
pub fn delta(
    before: &BTreeMap<u32, ProgStats>,
    after: &BTreeMap<u32, ProgStats>,
) -> Vec<(String, u64, u64)> {
    let mut rows: Vec<(String, u64, u64)> = after
        .iter()
        .map(|(id, a)| {
            let b = before.get(id).cloned().unwrap_or_default();
            (
                a.name.clone(),
                a.run_cnt.saturating_sub(b.run_cnt),
                a.run_time_ns.saturating_sub(b.run_time_ns),
            )
        })
        .collect();
    rows.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    rows
}
