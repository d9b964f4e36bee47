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
pub mod scan;
pub mod tracepoints;
