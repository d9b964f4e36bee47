//! clawtrace: a tracer of container lifecycles. The kernel side (tracer-ebpf) writes records
//! into a ring buffer; this library carries them one way:
//!
//! ```text
//! source (kernel records, scans, mount tables) → model (pure) → enrich (agent names) → sinks
//! ```
//!
//! - [`source`]: where records come from: the loader, the decoder, what the kernel offers, the
//!   containers running at start, mount tables, device names, NVML.
//! - [`model`]: the lifecycle machine, attribution of deaths, volumes, GPU sharing, and the
//!   event schema; pure, no I/O.
//! - [`enrich`]: agent names and their labels, from metadata that arrives later.
//! - [`sinks`]: the terminal, the audit log, metrics, spans, OTLP.
//! - [`run`]: the composition of the above, over any record source.
//! - [`check`]: the preflight report, from the same requirement probes the loader uses.
//! - [`replay`]: made-up record streams for tests, benchmarks and fuzzing.
//! - [`top`]: the live terminal view, over a run.

pub mod check;
pub mod cli;
pub mod defaults;
pub mod enrich;
pub mod explain;
pub mod model;
pub mod replay;
pub mod run;
pub mod sinks;
pub mod source;
pub mod sys;
#[cfg(test)]
mod test_dir;
pub mod top;
