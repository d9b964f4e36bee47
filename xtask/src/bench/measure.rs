//! Measuring: one module per section, each returning plain figures and the [`Check`]s of
//! those figures against their targets. Nothing here writes the report (see `report`).

pub mod memory;
pub mod overhead;
pub mod pipeline;
pub mod probe_costs;
pub mod storm;

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};

use super::tracer::{scrape, Metrics};

/// One figure of the summary: what, how much, the target and whether it was met.
pub struct Check {
    pub section: &'static str,
    pub figure: String,
    pub value: String,
    pub target: String,
    /// None: reported without a target.
    pub pass: Option<bool>,
}

impl Check {
    pub fn new(
        section: &'static str,
        figure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        pass: Option<bool>,
    ) -> Check {
        Check {
            section,
            figure: figure.into(),
            value: value.into(),
            target: target.into(),
            pass,
        }
    }

    pub fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "",
        }
    }
}

/// clawtrace's flags for printing every event, as JSON lines.
const JSON: [&str; 2] = ["--output", "json"];

/// What clawtrace's `stopped:` line says: (events, records lost, undecodable).
fn stopped_line(stderr: &str) -> Option<(u64, u64, u64)> {
    let line = stderr.lines().rev().find_map(|l| {
        let at = l.find("stopped: ")?;
        Some(&l[at + "stopped: ".len()..])
    })?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [events, lost, undecodable, ..] => Some((events, lost, undecodable)),
        _ => None,
    }
}

/// User + system CPU seconds process `pid` has used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// Scrapes until clawtrace has counted `want` more container deletions than `base` and its
/// record count has stopped moving, or `timeout` passes. Returns the last scrape and whether
/// it caught up.
fn wait_caught_up(
    addr: std::net::SocketAddr,
    base: &Metrics,
    operation: &str,
    want: u64,
    timeout: Duration,
) -> Result<(Metrics, bool)> {
    let label = format!("operation=\"{operation}\"");
    let base_count = base.sum("container_changes_total", &[&label]);
    let started = Instant::now();
    let mut last_records = -1.0;
    loop {
        let now = scrape(addr)?;
        let done = now.sum("container_changes_total", &[&label]) - base_count >= want as f64;
        let records = now.sum("clawtrace_events_total", &[]);
        if done && records == last_records {
            return Ok((now, true));
        }
        if started.elapsed() > timeout {
            return Ok((now, false));
        }
        last_records = records;
        thread::sleep(Duration::from_millis(300));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stopped_line_gives_events_lost_and_undecodable() {
        let stderr = "[x INFO ] tracing: 22 programs attached\n\
                      [x INFO ] stopped: 1234 events, 5 records lost, 0 undecodable\n";
        assert_eq!(stopped_line(stderr), Some((1234, 5, 0)));
        assert_eq!(stopped_line("nothing here"), None);
    }
}
