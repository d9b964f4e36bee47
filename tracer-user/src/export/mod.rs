//! Sinks beyond the terminal: agent labels, metrics (Prometheus endpoint and OTLP), container
//! spans (OTLP), and the audit log.

pub mod agent;
pub mod audit;
pub mod labels;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod spans;
