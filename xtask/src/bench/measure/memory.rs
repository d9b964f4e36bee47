//! Section 5: the real clawtrace's memory while many real containers are alive and many
//! distinct hostile agent names have been offered.

use std::{
    ffi::OsString,
    os::unix::ffi::OsStringExt as _,
    path::Path,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};

use super::{cpu_seconds, stopped_line, wait_caught_up, Check, JSON};
use crate::bench::{
    tracer::{self, memory_kib, scrape, Tracer},
    workload::{self, Until},
    Env,
};

const TARGET_PEAK_RSS_MIB: f64 = 64.0;

/// The `i`-th hostile agent name: distinct for every `i` (the number comes first, inside the
/// 256 bytes the kernel side reads), built to break exposition formats, paths and terminals,
/// never containing NUL (an environment value cannot).
fn hostile_name(i: u64) -> OsString {
    let bytes: Vec<u8> = match i % 8 {
        0 => format!("{i}\"}} {{le=\"+Inf\"}} q").into_bytes(),
        1 => format!("{i}\n# TYPE x counter\nx 1").into_bytes(),
        2 => [i.to_string().as_bytes(), b"\xff\xfe\x80bin\x1b[2J"].concat(),
        3 => format!("{i}{}", "m".repeat(4096)).into_bytes(),
        4 => format!("{i} back\\slash \u{202e}rtl \u{1F600}").into_bytes(),
        5 => format!("_overflow{i}").into_bytes(),
        6 => format!("../../{i}/etc/passwd").into_bytes(),
        _ => format!("agent-{i}").into_bytes(),
    };
    OsString::from_vec(bytes)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Section 5's figures; memory in KiB unless named otherwise.
pub struct MemoryFigures {
    pub live_containers: u64,
    /// Containers that came and went while the live ones were alive.
    pub churned: u64,
    /// Distinct hostile agent names offered in all.
    pub offered: u64,
    /// VmRSS and VmHWM shortly after start.
    pub idle_rss: u64,
    pub idle_hwm: u64,
    /// VmHWM (reset after start) and VmRSS at the peak of live containers.
    pub peak_hwm: u64,
    pub peak_rss: u64,
    /// VmRSS and VmHWM after every container was deleted.
    pub final_rss: u64,
    pub final_hwm: u64,
    /// The peak under load (VmHWM reset after start).
    pub load_peak: u64,
    /// The peak over the whole run, start-up included.
    pub peak_mib: f64,
    /// RSS of the ring buffer's mapping.
    pub ring_rss: u64,
    /// `containers_live` at the peak, and the agent_name values it carried.
    pub live_gauge: f64,
    pub label_values: usize,
    pub overflow: f64,
    /// Containers created and deleted, by the workers' count.
    pub created: u64,
    pub deleted: u64,
    /// Whether clawtrace counted every create and every delete.
    pub caught_up_creates: bool,
    pub caught_up_deletes: bool,
    pub lost: u64,
    pub queue_drops: f64,
    /// Seconds to make the live containers, and the whole run.
    pub live_seconds: f64,
    pub seconds: f64,
    pub cpu: f64,
}

impl MemoryFigures {
    /// Section 5's figures against their targets.
    pub fn checks(&self) -> Vec<Check> {
        vec![
            Check::new(
                "5 memory",
                format!(
                    "peak RSS, {} live, {} hostile names",
                    self.live_containers, self.offered
                ),
                format!("{:.1} MiB", self.peak_mib),
                format!("≤ {TARGET_PEAK_RSS_MIB:.0} MiB"),
                Some(self.peak_mib <= TARGET_PEAK_RSS_MIB),
            ),
            Check::new(
                "5 memory",
                "records lost / queue drops",
                format!("{} / {:.0}", self.lost, self.queue_drops),
                "0 / 0",
                Some(self.lost == 0 && self.queue_drops == 0.0),
            ),
        ]
    }
}

/// Keeps the live containers alive while the churn offers the rest of the names; returns
/// section 5's figures.
pub fn measure(env: &Env) -> Result<MemoryFigures> {
    let o = &env.options;
    let workers = o.workers as u64;
    let live_tag = format!("m{}-live", env.pid);
    let churn_tag = format!("m{}-churn", env.pid);
    let churn_per_worker = (o.hostile_names - o.live_containers).div_ceil(workers);
    let offered = o.live_containers + churn_per_worker * workers;

    let tracer = Tracer::clawtrace(&env.clawtrace, Path::new("/dev/null"), &JSON)?;
    let addr = tracer
        .metrics
        .ok_or_else(|| anyhow!("clawtrace has no metrics address"))?;
    let pid = tracer.pid();
    thread::sleep(Duration::from_millis(500));
    let (idle_hwm, idle_rss) = memory_kib(pid)?;
    let ring_rss = tracer::bpf_map_rss_kib(pid)?;
    // From here VmHWM is the peak under load, apart from the start-up peak (BTF parsing,
    // program loading), which `idle_hwm` holds.
    tracer::reset_peak(pid)?;
    let base = scrape(addr)?;
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();

    // The live containers first (names 0..live), then the churn (names live..offered), so the
    // peak has both: every live container held, every name offered.
    let live_names: Arc<workload::NameFn> = Arc::new(|_, n| hostile_name(n));
    let live = workload::spawn_live(
        &env.cgroup_root,
        &live_tag,
        o.live_containers,
        o.workers,
        live_names.as_ref(),
    );
    let live = match live {
        Ok(live) => live,
        Err(e) => {
            let _ = workload::sweep(&env.cgroup_root, Some(&live_tag));
            return Err(e);
        }
    };
    let live_seconds = started.elapsed().as_secs_f64();
    let first = o.live_containers;
    let mut spec = env.spec(
        churn_tag.clone(),
        Until::Lifecycles(churn_per_worker),
        workload::EXIT_ONLY,
    );
    spec.agent_name = Arc::new(move |w, n| hostile_name(first + n * workers + w as u64));
    let churn = workload::run(&spec);
    let churn_swept = workload::sweep(&env.cgroup_root, Some(&churn_tag));
    let created = if churn.is_ok() {
        wait_caught_up(addr, &base, "create", offered, Duration::from_secs(120))
    } else {
        Err(anyhow!("churn failed"))
    };
    let peak = memory_kib(pid);
    let during = scrape(addr);
    let ended = workload::end_live(live);
    let live_swept = workload::sweep(&env.cgroup_root, Some(&live_tag));
    let churn = churn?;
    churn_swept?;
    let ended = ended?;
    live_swept?;
    let (_, created_all) = created?;
    let (peak_hwm, peak_rss) = peak?;
    let during = during?;
    env.interrupted()?;

    let (_, deleted_all) =
        wait_caught_up(addr, &base, "delete", offered, Duration::from_secs(120))?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    let (final_hwm, final_rss) = memory_kib(pid)?;
    let after = scrape(addr)?;
    let stopped = tracer.stop_ok()?;
    let load_peak = peak_hwm.max(final_hwm);
    Ok(MemoryFigures {
        live_containers: o.live_containers,
        churned: churn.truth.lifecycles,
        offered,
        idle_rss,
        idle_hwm,
        peak_hwm,
        peak_rss,
        final_rss,
        final_hwm,
        load_peak,
        peak_mib: mib(load_peak.max(idle_hwm)),
        ring_rss,
        live_gauge: during.sum("containers_live", &[]),
        label_values: during
            .by_label("containers_live", "agent_name")
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .count(),
        overflow: after.sum("clawtrace_label_overflow_total", &[]),
        created: o.live_containers + churn.truth.cgroups_made,
        deleted: ended.cgroups_removed + churn.truth.cgroups_removed,
        caught_up_creates: created_all,
        caught_up_deletes: deleted_all,
        lost: stopped_line(&stopped.stderr).map_or(0, |(_, lost, _)| lost),
        queue_drops: after.sum("clawtrace_export_errors_total", &["sink=\"queue\""]),
        live_seconds,
        seconds: elapsed,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn hostile_names_are_distinct_and_never_hold_nul() {
        let names: HashSet<Vec<u8>> = (0..10_000)
            .map(|i| hostile_name(i).into_vec())
            .inspect(|n| assert!(!n.contains(&0)))
            .collect();
        assert_eq!(names.len(), 10_000);
    }
}
