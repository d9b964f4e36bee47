//! Where events go: the terminal (text or JSON lines), the audit log, metrics (Prometheus
//! endpoint and OTLP), container spans and the audit records as log records (OTLP); the export
//! worker that feeds the metrics, spans and log records off the tracing loop; and the
//! file-safety rules the files clawtrace writes follow.

pub mod audit;
pub mod export;
pub mod files;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod spans;
pub mod terminal;

use std::io::Write;

use anyhow::{Context as _, Result};

use crate::{
    model::Output,
    source::{decode::KindCounts, loader::Missed},
    sys::WallClock,
};
use audit::AuditLog;
use export::{ExportConfig, Exporter};
use terminal::{Format, Printer, TextStyle};
use tracer_common::{Kind, Miss};

/// Every sink of a run: the terminal, the audit log, and the export worker (metrics, spans).
pub struct Sinks<W: Write> {
    printer: Printer<W>,
    clock: WallClock,
    audit: Option<AuditLog>,
    exporter: Option<Exporter>,
    /// Failed audit-log writes so far.
    pub audit_errors: u64,
    /// Events handed to the sinks so far.
    pub events: u64,
}

impl<W: Write> Sinks<W> {
    /// The terminal and the audit log (opened now, so that a bad path fails before anything is
    /// loaded). The export worker comes later ([`Sinks::start_export`]).
    pub fn open(
        out: W,
        format: Format,
        text: TextStyle,
        clock: WallClock,
        audit: Option<(&std::path::Path, u64, usize)>,
    ) -> Result<Sinks<W>> {
        let audit = match audit {
            Some((path, max_bytes, keep)) => Some(
                AuditLog::open(path, max_bytes, keep)
                    .with_context(|| format!("--audit-log {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Sinks {
            printer: Printer::new(out, format, clock).style(text),
            clock,
            audit,
            exporter: None,
            audit_errors: 0,
            events: 0,
        })
    }

    /// Starts the export worker (metrics, spans): after the privileges are dropped, since its
    /// threads inherit them.
    pub fn start_export(&mut self, config: ExportConfig) -> Result<()> {
        self.exporter = Some(Exporter::start(config, self.clock)?);
        Ok(())
    }

    /// One turn's events and notes: printed, audited, and handed to the export worker.
    pub fn take(&mut self, step: &mut Output) -> Result<()> {
        for event in &step.events {
            self.printer.print(event)?;
            if let (Some(log), true) = (&mut self.audit, audit::audited(&event.event)) {
                if let Err(err) = log.append(&terminal::json(event, &self.clock)) {
                    self.audit_errors += 1;
                    if let Some(exporter) = &self.exporter {
                        exporter.metrics().export_error(metrics::sink::AUDIT_LOG);
                    }
                    if self.audit_errors == 1 || self.audit_errors.is_power_of_two() {
                        log::warn!(
                            "audit log write failed ({} so far): {err}",
                            self.audit_errors
                        );
                    }
                }
            }
        }
        self.events += step.events.len() as u64;
        let notes = std::mem::take(&mut step.notes);
        match &self.exporter {
            // The turn's events go to the worker as they are, in one hand-over. The next turn's
            // vector starts with room for half as many again: growing it event by event
            // reallocates and moves every event so far, and turns vary.
            Some(exporter) => {
                let n = step.events.len();
                let next = Vec::with_capacity(n + n / 2);
                exporter.events(std::mem::replace(&mut step.events, next), notes);
            }
            None => step.events.clear(),
        }
        self.printer.flush()?;
        Ok(())
    }

    /// Records received this turn, by kind.
    pub fn records(&self, counts: &KindCounts) {
        if let Some(exporter) = &self.exporter {
            for (kind, n) in counts.iter() {
                exporter.records(kind.name(), n);
            }
        }
    }

    /// What the probes missed since `before`, logged (never silent) and counted.
    pub fn missed(&self, now: &Missed, before: &Missed) {
        for kind in Kind::ALL {
            for miss in Miss::ALL {
                let (total, seen) = (now.get(kind, miss), before.get(kind, miss));
                if total <= seen {
                    continue;
                }
                let (probe, new) = (kind.probe(), total - seen);
                match miss {
                    Miss::RingFull => {
                        log::warn!(
                            "ring buffer full: {new} record(s) lost in probe {probe} ({total} in \
                             total); raise --ring-buffer-size"
                        );
                        if let Some(exporter) = &self.exporter {
                            exporter.lost(probe, new);
                        }
                    }
                    Miss::TableFull if kind == Kind::CgroupMkdir => log::warn!(
                        "{total} cgroup(s) could not be followed: the kernel's cgroup table is full"
                    ),
                    Miss::TableFull => log::warn!(
                        "{new} {} missed in probe {probe} ({total} in total): its table is full",
                        kind.name()
                    ),
                }
            }
        }
    }

    /// Flushes every sink and stops the export worker.
    pub fn shutdown(self) {
        if let Some(exporter) = self.exporter {
            exporter.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Instant};

    use super::metrics::Metrics;
    use crate::enrich::labels::{AgentLabels, LabelPolicy};

    /// 10,000 distinct hostile agent names through the label guard into the exposition.
    #[test]
    fn hostile_names_never_break_the_exposition_or_the_cap() {
        const NAMES: usize = 10_000;
        let policy = LabelPolicy {
            max_values: 256,
            ..LabelPolicy::default()
        };
        let mut labels = AgentLabels::open(policy).unwrap();
        let metrics = Metrics::new(None);
        let megabyte = "m".repeat(1 << 20);
        let now = Instant::now();
        for i in 0..NAMES {
            let raw: Vec<u8> = match i % 6 {
                0 => format!("q\"{i}\"}} {{le=\"+Inf\"}}").into_bytes(),
                1 => format!("nl\n{i}\n# TYPE x counter").into_bytes(),
                2 => [b"\xff\xfe\x00bin".as_slice(), i.to_string().as_bytes()].concat(),
                3 => format!("{megabyte}{i}").into_bytes(),
                4 => format!("back\\slash {i} \u{202e}rtl").into_bytes(),
                _ => format!("plain_{i}").into_bytes(),
            };
            let value = labels.acquire(Some(&raw), now);
            metrics.container_created(&value.into());
        }
        let text = metrics.encode();
        let mut values = HashSet::new();
        let mut creates = 0.0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let value: f64 = value.parse().expect("a number");
            assert!(series.bytes().all(|b| b.is_ascii_graphic()), "{line:?}");
            if let Some(labels) =
                series.strip_prefix("container_changes_total{operation=\"create\",agent_name=\"")
            {
                let name = labels.strip_suffix("\"}").expect("one label value");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                    "{name:?}"
                );
                values.insert(name.to_string());
                creates += value;
            }
        }
        assert_eq!(creates, NAMES as f64, "every container counted");
        let ordinary = values
            .iter()
            .filter(|v| *v != "_overflow" && *v != "unknown")
            .count();
        assert!(ordinary <= 256, "{ordinary} values");
        let overflowed = text.lines().find_map(|l| {
            l.strip_prefix(
                "container_changes_total{operation=\"create\",agent_name=\"_overflow\"} ",
            )?
            .parse::<f64>()
            .ok()
        });
        assert_eq!(overflowed, Some(labels.overflow_total() as f64));
    }
}
