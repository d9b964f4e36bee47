//! clawtrace's eBPF programs are the `tracer-ebpf` binary target (see `main.rs`), built for
//! `bpfel-unknown-none` by tracer-user's build script. This empty library only lets cargo track
//! the crate as a build dependency of tracer-user.
#![no_std]
