//! clawtrace's kernel side. Each program is a thin `#[tracepoint]` calling a `try_*` function
//! whose error, what it missed, is counted against the program's record kind (`ring`); the
//! record layouts are in `tracer-common`. Programs are grouped by hook family: `cgroup`
//! (container creation and removal), `process` (exec, exit), `signal` (signals and OOM kills),
//! `mount` (mount system calls), `device` (accesses to GPU device nodes). Beside them: `maps`
//! (the maps they share), `follow` (which cgroups are followed), `ring` (headers, the ring
//! buffer, counts of what was missed), `tp` (tracepoint records) and `kernel` (typed wrappers
//! of the kernel objects they read).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod cgroup;
#[cfg(target_arch = "bpf")]
mod device;
#[cfg(target_arch = "bpf")]
mod follow;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod mount;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod ring;
#[cfg(target_arch = "bpf")]
mod signal;
#[cfg(target_arch = "bpf")]
mod tp;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program in which a panic path is reachable, so a loaded
    // program never gets here.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The programs use GPL-only helpers (`bpf_probe_read_kernel`, `bpf_probe_read_kernel_str`).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
