//! Where records and facts come from: the kernel (the loader, which checks what the kernel
//! offers and attaches the programs, and the decoder of their records), the containers that
//! already run at start, each container's mount table, device names, and NVML.

pub mod decode;
pub mod devices;
pub mod features;
pub mod kernel_btf;
pub mod loader;
pub mod mountinfo;
pub mod nvml;
pub mod pods;
pub mod preflight;
pub mod scan;
pub mod tracepoints;

use std::time::Duration;

use anyhow::Result;

use self::{decode::Record, loader::Missed};

/// Where records come from: the kernel's ring buffer ([`loader::Tracer`]), or a recorded
/// stream ([`crate::replay::Recorded`]), so that a recording drives the whole path.
pub trait RecordSource {
    /// Hands each record that arrives within `timeout` to `each`, in order.
    fn poll_each(&mut self, timeout: Duration, each: &mut dyn FnMut(Record)) -> Result<()>;
    /// What the kernel's probes missed so far.
    fn missed(&self) -> Result<Missed>;
    /// Stops following cgroup `id`: it is not a container.
    fn untrack(&mut self, id: u64);
    /// Records that could not be decoded so far.
    fn decode_errors(&self) -> u64;
}

/// Facts about the containers from the host, beside the kernel's records: each container's
/// mount table, the names of device nodes, and CRI containers' Kubernetes names.
pub struct HostFacts {
    pub mounts: mountinfo::MountWatcher,
    pub devices: devices::DeviceNames,
    pub pods: pods::PodNames,
}

impl HostFacts {
    pub fn new() -> HostFacts {
        HostFacts {
            mounts: mountinfo::MountWatcher::new(),
            devices: devices::DeviceNames::new(std::path::Path::new("/dev")),
            pods: pods::PodNames::default(),
        }
    }
}

impl Default for HostFacts {
    fn default() -> Self {
        HostFacts::new()
    }
}
