//! GPU correlation: which live containers use which GPU device (from the kernel's device-open
//! records), and, where NVML is there (`libnvidia-ml.so.1`, loaded at run time by nvml-wrapper),
//! how much GPU memory each container's processes hold on each GPU. The NVML side sits behind
//! [`GpuSource`] so the correlation is tested with a fake source.

use std::collections::{HashMap, HashSet};

/// One process holding memory on a GPU, as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuProcess {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub pid: u32,
    pub used_memory_bytes: u64,
}

/// Where GPU processes come from.
pub trait GpuSource: Send {
    /// Compute and graphics processes on every GPU now.
    fn processes(&mut self) -> anyhow::Result<Vec<GpuProcess>>;
}

/// NVML through nvml-wrapper.
pub struct NvmlSource {
    nvml: nvml_wrapper::Nvml,
}

impl NvmlSource {
    /// Loads NVML; the error says why it is not available.
    pub fn init() -> Result<NvmlSource, String> {
        nvml_wrapper::Nvml::init()
            .map(|nvml| NvmlSource { nvml })
            .map_err(|e| match e {
                nvml_wrapper::error::NvmlError::LibloadingError(_) => {
                    "libnvidia-ml.so.1 not found".to_string()
                }
                other => other.to_string(),
            })
    }

    /// The driver version and GPU count, for `clawtrace check`.
    pub fn describe(&self) -> String {
        let driver = self
            .nvml
            .sys_driver_version()
            .unwrap_or_else(|e| e.to_string());
        let count = self.nvml.device_count().unwrap_or(0);
        format!("driver {driver}, {count} GPU(s)")
    }
}

impl GpuSource for NvmlSource {
    fn processes(&mut self) -> anyhow::Result<Vec<GpuProcess>> {
        let mut out = Vec::new();
        for index in 0..self.nvml.device_count()? {
            let device = self.nvml.device_by_index(index)?;
            let uuid = device.uuid()?;
            let mut seen = HashSet::new();
            let compute = device.running_compute_processes().unwrap_or_default();
            let graphics = device.running_graphics_processes().unwrap_or_default();
            for p in compute.into_iter().chain(graphics) {
                // A process doing both is listed twice.
                if !seen.insert(p.pid) {
                    continue;
                }
                let used = match p.used_gpu_memory {
                    nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) => bytes,
                    nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => 0,
                };
                out.push(GpuProcess {
                    gpu_index: index,
                    gpu_uuid: uuid.clone(),
                    pid: p.pid,
                    used_memory_bytes: used,
                });
            }
        }
        Ok(out)
    }
}

/// GPU memory per (container, GPU index, GPU UUID), summing the container's processes.
/// `container_of(pid)` maps a process to its container (cgroup id).
pub fn memory_by_container(
    processes: &[GpuProcess],
    container_of: impl Fn(u32) -> Option<u64>,
) -> HashMap<(u64, u32, String), u64> {
    let mut out = HashMap::new();
    for p in processes {
        if let Some(container) = container_of(p.pid) {
            *out.entry((container, p.gpu_index, p.gpu_uuid.clone()))
                .or_insert(0) += p.used_memory_bytes;
        }
    }
    out
}

/// The cgroup v2 path of a process, from /proc.
pub fn cgroup_path_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Live containers using each GPU device, for the sharing gauges.
#[derive(Debug, Default)]
pub struct DeviceUsers {
    users: HashMap<String, HashSet<u64>>,
}

impl DeviceUsers {
    /// Container `id` uses `gpu`; returns how many live containers use it now.
    pub fn add(&mut self, gpu: &str, id: u64) -> usize {
        let users = self.users.entry(gpu.to_string()).or_default();
        users.insert(id);
        users.len()
    }

    /// Container `id` is gone; returns the GPUs it used with their remaining user counts.
    pub fn remove(&mut self, id: u64) -> Vec<(String, usize)> {
        let mut changed = Vec::new();
        for (gpu, users) in &mut self.users {
            if users.remove(&id) {
                changed.push((gpu.clone(), users.len()));
            }
        }
        self.users.retain(|_, users| !users.is_empty());
        changed
    }

    /// Devices used by more than one live container.
    pub fn shared(&self) -> usize {
        self.users.values().filter(|u| u.len() > 1).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake NVML: fixed processes.
    struct Fake(Vec<GpuProcess>);

    impl GpuSource for Fake {
        fn processes(&mut self) -> anyhow::Result<Vec<GpuProcess>> {
            Ok(self.0.clone())
        }
    }

    fn p(gpu: u32, pid: u32, bytes: u64) -> GpuProcess {
        GpuProcess {
            gpu_index: gpu,
            gpu_uuid: format!("GPU-{gpu}"),
            pid,
            used_memory_bytes: bytes,
        }
    }

    #[test]
    fn memory_is_summed_per_container_and_gpu() {
        let mut fake = Fake(vec![
            p(0, 10, 100),
            p(0, 11, 50),
            p(1, 10, 7),
            p(0, 99, 1000),
        ]);
        let processes = fake.processes().unwrap();
        // pids 10 and 11 are in container 1; 99 is not in a container.
        let by = memory_by_container(&processes, |pid| (pid < 20).then_some(1));
        assert_eq!(by.get(&(1, 0, "GPU-0".to_string())), Some(&150));
        assert_eq!(by.get(&(1, 1, "GPU-1".to_string())), Some(&7));
        assert_eq!(by.len(), 2);
    }

    #[test]
    fn sharing_counts_follow_live_containers() {
        let mut users = DeviceUsers::default();
        assert_eq!(users.add("nvidia0", 1), 1);
        assert_eq!(users.add("nvidia0", 2), 2);
        assert_eq!(users.add("nvidia1", 2), 1);
        assert_eq!(
            users.add("nvidia0", 2),
            2,
            "a second open is not a second user"
        );
        assert_eq!(users.shared(), 1);
        let mut gone = users.remove(2);
        gone.sort();
        assert_eq!(
            gone,
            vec![("nvidia0".to_string(), 1), ("nvidia1".to_string(), 0)]
        );
        assert_eq!(users.shared(), 0);
    }

    /// What the test finds of NVML on this machine by itself, the way nvml-wrapper goes about
    /// it: `Err(why)` when the dynamic linker cannot load `libnvidia-ml.so.1`; otherwise what the
    /// library's own `nvmlInit_v2` returns (0: NVML_SUCCESS; an uninitialised driver fails there).
    fn nvml_here() -> Result<i32, String> {
        type Call = unsafe extern "C" fn() -> libc::c_int;
        // SAFETY: dlopen/dlsym/dlerror/dlclose get NUL-terminated names; the symbols called are
        // NVML's `nvmlReturn_t nvmlInit_v2(void)` and `nvmlReturn_t nvmlShutdown(void)`, and the
        // library stays open while they run.
        unsafe {
            let lib = libc::dlopen(
                c"libnvidia-ml.so.1".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            );
            if lib.is_null() {
                let err = libc::dlerror();
                return Err(if err.is_null() {
                    "dlopen failed".to_string()
                } else {
                    std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned()
                });
            }
            let init = libc::dlsym(lib, c"nvmlInit_v2".as_ptr());
            let code = if init.is_null() {
                -1
            } else {
                let code = std::mem::transmute::<*mut libc::c_void, Call>(init)();
                let shutdown = libc::dlsym(lib, c"nvmlShutdown".as_ptr());
                if code == 0 && !shutdown.is_null() {
                    std::mem::transmute::<*mut libc::c_void, Call>(shutdown)();
                }
                code
            };
            libc::dlclose(lib);
            Ok(code)
        }
    }

    #[test]
    fn nvml_is_absent_here_or_describes_itself() {
        // NvmlSource must come up exactly where the library loads (and its driver answers),
        // and say which library is missing where it does not load.
        let here = nvml_here();
        match (&here, NvmlSource::init()) {
            (Ok(0), Ok(nvml)) => {
                let described = nvml.describe();
                assert!(
                    described.starts_with("driver ") && described.ends_with(" GPU(s)"),
                    "{described}"
                );
            }
            (Ok(0), Err(reason)) => {
                panic!("libnvidia-ml.so.1 loads and initialises here, yet NVML is not: {reason}")
            }
            (Ok(code), Ok(_)) => panic!("nvmlInit_v2 returns {code} here, yet NVML came up"),
            // The library is there but its driver refuses: a reason, not "not found".
            (Ok(code), Err(reason)) => assert!(
                !reason.is_empty() && !reason.contains("not found"),
                "nvmlInit_v2 returns {code}: {reason}"
            ),
            (Err(why), Ok(_)) => {
                panic!("libnvidia-ml.so.1 does not load here ({why}), yet NVML came up")
            }
            (Err(_), Err(reason)) => {
                assert_eq!(reason, "libnvidia-ml.so.1 not found", "{here:?}")
            }
        }
        assert_eq!(cgroup_path_of(u32::MAX), None);
        assert!(cgroup_path_of(std::process::id()).is_some_and(|p| p.starts_with('/')));
    }
}
