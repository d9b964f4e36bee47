//! What the kernel does not say about a container and operators want on every metric: its
//! agent name, from runtime metadata that arrives later than the records, sanitized into a
//! bounded set of label values.

pub mod agent;
pub mod labels;
pub mod pending;
