//! Where events go: the terminal (text or JSON lines), the audit log, metrics (Prometheus
//! endpoint and OTLP), container spans (OTLP); the export worker that feeds the metrics and
//! spans off the tracing loop; and the file-safety rules the files clawtrace writes follow.

pub mod audit;
pub mod export;
pub mod files;
pub mod metrics;
pub mod otlp;
pub mod spans;
pub mod terminal;

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
