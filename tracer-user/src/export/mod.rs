//! Sinks beyond the terminal: agent labels, metrics (Prometheus endpoint and OTLP), container
//! spans (OTLP), and the audit log.

pub mod audit;
pub mod labels;
