//! Section 4: the criterion benchmark `tracer-user/benches/pipeline.rs`, in records/s.

use std::{fs, path::Path, process::Stdio};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use super::Check;
use crate::{
    bench::{tracer, Env},
    show, Ctx,
};

const TARGET_RECORDS_PER_S: f64 = 1_000_000.0;

/// The criterion benchmarks of `pipeline`, in report order, and the headline one.
const PIPELINE_BENCHES: &[(&str, &str)] = &[
    ("decode", "decode only"),
    ("decode_model", "decode + model"),
    (
        "decode_model_aggregate",
        "decode + model + aggregation (labels, metrics)",
    ),
    (
        "decode_model_aggregate_json",
        "… + a JSON line per event (`--output json`)",
    ),
    (
        "decode_model_aggregate_10k_live",
        "decode + model + aggregation, 10,000 other containers alive",
    ),
];
pub const PIPELINE_HEADLINE: &str = "decode_model_aggregate";

/// One criterion benchmark's result.
pub struct PipelineBench {
    pub id: &'static str,
    pub what: &'static str,
    /// Records per pass over the stream.
    pub records: u64,
    /// Mean time per pass.
    pub mean_ns: f64,
    pub records_per_s: f64,
}

/// Section 4's figures, in report order.
pub struct PipelineFigures {
    pub benches: Vec<PipelineBench>,
}

impl PipelineFigures {
    /// Section 4's figures against their targets.
    pub fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for b in &self.benches {
            let per_s = b.records_per_s;
            if b.id == PIPELINE_HEADLINE {
                checks.push(Check::new(
                    "4 user space",
                    "decode + model + aggregate, records/s (1 core)",
                    format!("{per_s:.0}"),
                    format!("≥ {TARGET_RECORDS_PER_S:.0}"),
                    Some(per_s >= TARGET_RECORDS_PER_S),
                ));
            } else if b.id == "decode_model_aggregate_10k_live" {
                checks.push(Check::new(
                    "4 user space",
                    "same, 10,000 containers alive, records/s",
                    format!("{per_s:.0}"),
                    "",
                    None,
                ));
            }
        }
        checks
    }
}

/// Runs `cargo bench -p tracer-user --bench pipeline` (its log in `criterion.log`) and reads
/// criterion's estimates.
pub fn measure(env: &Env, ctx: &Ctx) -> Result<PipelineFigures> {
    let log_path = env.out.join("criterion.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = ctx.cargo();
    cmd.args(["bench", "-p", "tracer-user", "--bench", "pipeline", "--"])
        .args(["--noplot", "--warm-up-time", "1", "--sample-size", "20"])
        .args([
            "--measurement-time",
            if env.options.quick { "1" } else { "3" },
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("criterion log")?)
        .stderr(log);
    println!("xtask: running: {} > {}", show(&cmd), log_path.display());
    let status = cmd.status().context("running cargo bench")?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        bail!(
            "cargo bench failed ({status}): {}",
            tracer::last_lines(&text, 5)
        );
    }
    let criterion = env
        .out
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", env.out.display()))?
        .join("criterion")
        .join("pipeline");
    let mut benches = Vec::new();
    for (id, what) in PIPELINE_BENCHES {
        let dir = criterion.join(id).join("new");
        let estimates = read_json(&dir.join("estimates.json"))?;
        let benchmark = read_json(&dir.join("benchmark.json"))?;
        let mean_ns = estimates
            .pointer("/mean/point_estimate")
            .and_then(Value::as_f64)
            .ok_or_else(|| anyhow!("{}: no mean", dir.display()))?;
        let records = benchmark
            .pointer("/throughput/Elements")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{}: no element throughput", dir.display()))?;
        benches.push(PipelineBench {
            id,
            what,
            records,
            mean_ns,
            records_per_s: records as f64 / (mean_ns / 1e9),
        });
    }
    Ok(PipelineFigures { benches })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
