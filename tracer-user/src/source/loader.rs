//! Loads clawtrace's eBPF programs into the running kernel, attaches them, and reads what they
//! write. Everything that can be checked before loading (privileges, tracefs, tracepoint layouts,
//! BTF) is checked first so a failure says which requirement is missing.

use std::{
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupDevice, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use tracer_common::{
    cgroup_state, object, DeviceRange, EnvKey, Kind, Miss, DEVICE_RANGES, ENV_KEY_LEN,
};

use super::{
    decode::{DecodeError, Record},
    features::KernelFeatures,
    preflight,
    tracepoints::{Hook, HookGroup, HOOKS},
};
use crate::sys;

/// The compiled eBPF object, built by build.rs with aya-build.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Settings fixed at load time.
#[derive(Debug, Clone)]
pub struct TracerConfig {
    /// Size of the ring buffer in bytes: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// Environment variable the kernel reads from each container's init as it execs (the agent
    /// name); None turns that off.
    pub init_env_var: Option<String>,
    /// Device numbers whose accesses are reported (GPU devices), at most [`DEVICE_RANGES`].
    pub devices: Vec<DeviceRange>,
    /// Attach the mount system-call hooks (`--trace-mount-syscalls`).
    pub trace_mount_syscalls: bool,
    /// Attach the cgroup device hook that sees GPU device accesses.
    pub trace_devices: bool,
}

impl TracerConfig {
    /// Whether `hook` is attached under this configuration, on a kernel with the
    /// [`feature`](tracer_common::feature) bits `features`.
    pub fn wants(&self, hook: &Hook, features: u64) -> bool {
        let group = match hook.group {
            HookGroup::Core => true,
            HookGroup::MountSyscalls => self.trace_mount_syscalls,
        };
        group && hook.when.holds(features)
    }
}

impl Default for TracerConfig {
    fn default() -> Self {
        TracerConfig {
            ring_buffer_bytes: crate::defaults::RING_BUFFER_BYTES,
            init_env_var: Some(crate::defaults::AGENT_ENV_VAR.to_string()),
            devices: crate::source::devices::default_gpu_devices(),
            trace_mount_syscalls: false,
            trace_devices: true,
        }
    }
}

/// The map value telling the kernel which variable to read, or why `name` cannot be one.
pub fn env_key(name: &str) -> Result<EnvKey> {
    let prefix = format!("{name}=");
    if name.is_empty() || name.contains(['=', '\0']) || prefix.len() > ENV_KEY_LEN {
        bail!(
            "invalid environment variable name {name:?}: non-empty, no '=', at most {} bytes",
            ENV_KEY_LEN - 1
        );
    }
    Ok(EnvKey::new(prefix.as_bytes()))
}

/// What the kernel says its verifier walked for a program (Linux 5.16 and newer say it).
fn verified_insns(
    info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>,
) -> Option<u32> {
    info.ok()?.verified_instruction_count()
}

/// What the probes missed, per [`Kind`] (its index) and [`Miss`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Missed(pub [[u64; Miss::COUNT]; Kind::COUNT]);

impl Missed {
    pub fn get(&self, kind: Kind, miss: Miss) -> u64 {
        self.0[kind.index()][miss as usize]
    }
}

/// The loaded and attached programs with the maps user space talks to. Dropping it detaches
/// every program.
pub struct Tracer {
    ring: RingBuf<MapData>,
    cgroups: HashMap<MapData, u64, u32>,
    features: KernelFeatures,
    missed: PerCpuArray<MapData, u64>,
    decode_errors: u64,
    attached: usize,
    /// Per program, the instructions the verifier walked to accept it (None: not reported).
    verified: Vec<(&'static str, Option<u32>)>,
    // Kept last so the maps above are released before the programs are detached.
    _ebpf: Ebpf,
}

impl Tracer {
    /// Checks the requirements, loads the programs and attaches them all.
    pub fn start(config: &TracerConfig) -> Result<Tracer> {
        let size = config.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            bail!("ring buffer size {size} must be a power of two of at least 4096 bytes");
        }
        // Privileges, tracefs, the kernel's BTF and what the kernel offers, and each
        // tracepoint's layout: the same probes `clawtrace check` reports.
        let host = preflight::for_loader(|hook, bits| config.wants(hook, bits))?;
        // The probes' parse of the kernel's BTF goes before aya makes its own: both at once
        // were most of start-up's peak memory.
        let preflight::Host {
            features,
            globals,
            btf,
            ..
        } = host;
        drop(btf);
        let Some(found) = features else {
            bail!("the kernel's features could not be probed");
        };
        let bits = found.bits;
        let aya_btf = Btf::from_sys_fs().context("reading the kernel's BTF for BTF tracepoints")?;
        let env_key = config.init_env_var.as_deref().map(env_key).transpose()?;
        if config.devices.len() > DEVICE_RANGES as usize {
            bail!(
                "at most {DEVICE_RANGES} --gpu-device values, got {}",
                config.devices.len()
            );
        }
        sys::raise_memlock_limit();

        // Wake the reader once a quarter of the buffer is waiting; below that records wait for
        // its next timed poll (`run::POLL`). Each wake-up costs the tracing loop and the export
        // worker a turn each; a quarter leaves three quarters for what comes while it reads.
        let wakeup_bytes: u64 = u64::from(size / 4);
        let mut loader = EbpfLoader::new();
        for (global, value) in &globals {
            loader.override_global(global, value, true);
        }
        for (name, bit) in tracer_common::FALLBACK_MAPS {
            if found.has(*bit) {
                loader.map_max_entries(name, 1);
            }
        }
        let mut ebpf = loader
            .override_global(object::KERNEL_FEATURES, &bits, true)
            .override_global(object::WAKEUP_BYTES, &wakeup_bytes, true)
            .map_max_entries(object::EVENTS, size)
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs into the kernel")?;
        if let Some(key) = env_key {
            let mut map: Array<_, EnvKey> = Array::try_from(
                ebpf.map_mut(object::ENV_KEY)
                    .context("map ENV_KEY missing from the eBPF object")?,
            )?;
            map.set(0, key, 0)
                .context("setting the environment variable to read")?;
        }
        {
            let mut map: Array<_, DeviceRange> = Array::try_from(
                ebpf.map_mut(object::DEVICE_RANGE)
                    .context("map DEVICE_RANGE missing from the eBPF object")?,
            )?;
            for (i, range) in config.devices.iter().enumerate() {
                map.set(i as u32, *range, 0)
                    .context("setting the device ranges")?;
            }
        }
        let mut attached = 0;
        let mut verified = Vec::new();
        for hook in HOOKS.iter().filter(|h| config.wants(h, bits)) {
            let program = ebpf.program_mut(hook.program).with_context(|| {
                format!("program {} missing from the eBPF object", hook.program)
            })?;
            let refused = || format!("the kernel's verifier refused program {}", hook.program);
            let attaching = || format!("attaching to tracepoint {}:{}", hook.category, hook.name);
            if hook.btf_args.is_some() {
                let program: &mut BtfTracePoint = program.try_into().with_context(|| {
                    format!("program {} is not a BTF tracepoint program", hook.program)
                })?;
                program.load(hook.name, &aya_btf).with_context(refused)?;
                verified.push((hook.program, verified_insns(program.info())));
                program.attach().with_context(attaching)?;
            } else {
                let program: &mut TracePoint = program.try_into().with_context(|| {
                    format!("program {} is not a tracepoint program", hook.program)
                })?;
                program.load().with_context(refused)?;
                verified.push((hook.program, verified_insns(program.info())));
                program
                    .attach(hook.category, hook.name)
                    .with_context(attaching)?;
            }
            attached += 1;
        }
        if config.trace_devices && !config.devices.is_empty() {
            let program: &mut CgroupDevice = ebpf
                .program_mut(DEVICE_PROGRAM)
                .with_context(|| format!("program {DEVICE_PROGRAM} missing from the eBPF object"))?
                .try_into()
                .with_context(|| format!("program {DEVICE_PROGRAM} is not a device program"))?;
            match attach_device_hook(program) {
                Ok(()) => {
                    verified.push((DEVICE_PROGRAM, verified_insns(program.info())));
                    attached += 1;
                }
                Err(err) => log::warn!(
                    "GPU device accesses are not seen: {err:#}; GPU use is then known from NVML \
                     only"
                ),
            }
        }

        let ring = RingBuf::try_from(take(&mut ebpf, object::EVENTS)?)?;
        let cgroups = HashMap::try_from(take(&mut ebpf, object::CGROUPS)?)?;
        let missed = PerCpuArray::try_from(take(&mut ebpf, object::MISSED)?)?;
        Ok(Tracer {
            ring,
            cgroups,
            features: found,
            missed,
            decode_errors: 0,
            attached,
            verified,
            _ebpf: ebpf,
        })
    }

    /// Waits up to `timeout` for records, then appends every record available to `out`.
    /// Returns early (with what it has) when a signal interrupts the wait.
    pub fn poll(&mut self, timeout: Duration, out: &mut Vec<Record>) -> Result<()> {
        self.poll_each(timeout, |record| out.push(record))
    }

    /// Like [`Tracer::poll`], but hands each record to `each` as it is read: no batch of
    /// records (each the size of the largest kind) is built and moved again.
    pub fn poll_each(&mut self, timeout: Duration, mut each: impl FnMut(Record)) -> Result<()> {
        if !self.drain(&mut each) {
            let mut fds = [libc::pollfd {
                fd: self.ring.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
            if ready < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err).context("waiting on the ring buffer");
                }
            }
            self.drain(&mut each);
        }
        Ok(())
    }

    /// Hands every record in the ring buffer to `each`; true if there was any.
    fn drain(&mut self, each: &mut impl FnMut(Record)) -> bool {
        let mut any = false;
        let mut errors = 0;
        while let Some(item) = self.ring.next() {
            let decoded = Record::decode(&item);
            // The record is a copy: give its space back to the kernel first.
            drop(item);
            any = true;
            match decoded {
                Ok(record) => each(record),
                Err(err) => {
                    errors += 1;
                    log_decode_error(&err, self.decode_errors + errors);
                }
            }
        }
        self.decode_errors += errors;
        any
    }

    /// Programs loaded and attached.
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// The program whose verification walked the most instructions, and how many: how close
    /// the programs come to the verifier's limit of 1,000,000 on this kernel.
    pub fn largest_verification(&self) -> Option<(&'static str, u32)> {
        self.verified
            .iter()
            .filter_map(|&(name, n)| Some((name, n?)))
            .max_by_key(|&(_, n)| n)
    }

    /// What the running kernel offers, and so which paths the programs take.
    pub fn features(&self) -> &KernelFeatures {
        &self.features
    }

    /// Records that could not be decoded since start.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// What each probe missed since start, summed over CPUs.
    pub fn missed(&self) -> Result<Missed> {
        let mut missed = Missed::default();
        for kind in Kind::ALL {
            for miss in Miss::ALL {
                missed.0[kind.index()][miss as usize] =
                    self.missed.get(&miss.slot(kind), 0)?.iter().sum();
            }
        }
        Ok(missed)
    }

    /// Follows the processes of cgroup `id` (a container found by scanning, or one of its
    /// sub-cgroups), which already runs its payload.
    pub fn track_cgroup(&mut self, id: u64) -> Result<()> {
        self.cgroups
            .insert(id, cgroup_state::STARTED, 0)
            .with_context(|| format!("tracking cgroup {id}"))
    }

    /// Stops following cgroup `id`: it is not a container.
    pub fn untrack_cgroup(&mut self, id: u64) {
        // Already gone (removed meanwhile) is fine.
        let _ = self.cgroups.remove(&id);
    }
}

impl super::RecordSource for Tracer {
    fn poll_each(&mut self, timeout: Duration, each: &mut dyn FnMut(Record)) -> Result<()> {
        Tracer::poll_each(self, timeout, each)
    }

    fn missed(&self) -> Result<Missed> {
        Tracer::missed(self)
    }

    fn untrack(&mut self, id: u64) {
        self.untrack_cgroup(id);
    }

    fn decode_errors(&self) -> u64 {
        Tracer::decode_errors(self)
    }
}

/// The cgroup device program's name in the eBPF object.
pub const DEVICE_PROGRAM: &str = object::DEVICE_PROGRAM;

/// Loads the device program and attaches it at the cgroup v2 root, beside any other device
/// programs: every cgroup's effective device programs then include it, after their own. The
/// attachment is a BPF link (the kernel has them since 5.7), which is always one of many
/// (`BPF_F_ALLOW_MULTI`): the kernel refuses any other flag on a link, so aya's `Single` mode,
/// which passes none, is the one to give.
fn attach_device_hook(program: &mut CgroupDevice) -> Result<()> {
    let root = sys::cgroup2_mount().context("no cgroup v2 hierarchy is mounted")?;
    let dir = std::fs::File::open(&root)
        .with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
    program
        .load()
        .with_context(|| format!("the kernel's verifier refused program {DEVICE_PROGRAM}"))?;
    program
        .attach(&dir, CgroupAttachMode::Single)
        .with_context(|| {
            format!(
                "linking a device program to {} (a program attached there without \
                 BPF_F_ALLOW_MULTI forbids this)",
                root.display()
            )
        })?;
    Ok(())
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

/// Logs the first few decode errors and then one in a thousand, so a stream of bad records
/// cannot flood the log; the total is reported by the caller.
fn log_decode_error(err: &DecodeError, nth: u64) {
    if nth <= 5 || nth.is_multiple_of(1000) {
        log::warn!("undecodable record ({nth} so far): {err}");
    }
}

#[cfg(test)]
mod tests {
    use ::object::{Object as _, ObjectSymbol as _};

    use super::*;

    /// Every name the loader looks up in the embedded object (maps, globals, programs) is
    /// there: a renamed static in tracer-ebpf fails here, not at load time on a user's node.
    #[test]
    fn the_embedded_object_has_every_name_the_loader_uses() {
        let elf = ::object::File::parse(EBPF_OBJECT).expect("the embedded eBPF object parses");
        let symbols: std::collections::HashSet<&str> =
            elf.symbols().filter_map(|s| s.name().ok()).collect();
        let globals = tracer_common::BTF_FIELDS.iter().map(|f| f.global).chain([
            tracer_common::MM_ANON_RSS,
            tracer_common::PAGE_KB_SHIFT,
            tracer_common::UPID_SHIFT,
        ]);
        let programs = HOOKS.iter().map(|h| h.program).chain([DEVICE_PROGRAM]);
        let wanted: Vec<&str> = object::MAPS
            .iter()
            .chain(object::GLOBALS)
            .copied()
            .chain(globals)
            .chain(programs)
            .chain(tracer_common::FALLBACK_MAPS.iter().map(|(name, _)| *name))
            .collect();
        let missing: Vec<&&str> = wanted.iter().filter(|n| !symbols.contains(**n)).collect();
        assert!(missing.is_empty(), "not in the eBPF object: {missing:?}");
        // And the check can fail: a name that is not there is not found.
        assert!(!symbols.contains("NO_SUCH_MAP"));
    }
}
