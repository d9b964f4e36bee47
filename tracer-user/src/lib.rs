//! clawtrace: a tracer of container lifecycles. The kernel side (tracer-ebpf) writes records
//! into a ring buffer; this library loads it and carries records one way through
//! decode → lifecycle model → sinks.
//!
//! - [`features`]: what the running kernel offers, probed; which paths the programs take.
//! - [`loader`]: load, attach, read the ring buffer, talk to the kernel's maps.
//! - [`decode`]: ring-buffer bytes to typed records.
//! - [`containers`]: which cgroups are containers.
//! - [`attribution`]: how a process died and who caused it.
//! - [`model`]: the lifecycle state machine (pure).
//! - [`scan`]: containers that already run at start.
//! - [`output`]: text and JSON lines.
//! - [`check`]: the preflight report.
//! - [`replay`]: made-up record streams for tests, benchmarks and fuzzing.

pub mod attribution;
pub mod check;
pub mod cli;
pub mod containers;
pub mod decode;
pub mod defaults;
pub mod devices;
pub mod export;
pub mod features;
pub mod kernel_btf;
pub mod loader;
pub mod model;
pub mod mountinfo;
pub mod output;
pub mod replay;
pub mod run;
pub mod scan;
pub mod sys;
#[cfg(test)]
mod test_dir;
pub mod tracepoints;
pub mod volumes;
