//! Rebuild the eBPF object whenever the bpf-linker found on PATH changes: building this crate
//! depends on that binary, which cargo cannot see on its own.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
