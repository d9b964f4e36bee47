//! GPU correlation end to end: containers (real cgroups) ask for "GPU devices", character
//! device nodes the test makes with mknod(2) under NVIDIA's major in a folder of /dev of its
//! own, and clawtrace, from the cgroup device hook, says which container asked for which device
//! (named from /dev), which containers share one, with both container ids, in its events and
//! metrics. No driver serves these numbers, so every open fails with ENXIO after the device
//! check: the hook sees the access all the same.

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use support::*;

/// NVIDIA's major. Minors from 100 up are no real GPU's on any host this runs on; 254 is the
/// modeset (control) node's.
const NVIDIA: u32 = 195;

struct Devices(PathBuf);

impl Devices {
    fn new() -> Devices {
        let dir = PathBuf::from(format!("/dev/clawtrace-gpu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, minor) in [("gpu0", 100), ("gpu1", 101), ("gpuctl", 254)] {
            mknod(&dir.join(name), NVIDIA, minor);
        }
        Devices(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().to_string()
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A container whose process asks for `device` (a read, which fails without a driver) and
/// then sleeps.
fn asking(cgroup: &TestCgroup, device: &str) -> std::process::Child {
    cgroup.spawn(Command::new("sh").args([
        "-c",
        &format!("cat '{device}' 2>/dev/null; exec sleep 1000"),
    ]))
}

/// What this machine has of NVML, found by the test itself the way nvml-wrapper goes about it.
#[derive(Debug)]
enum Nvml {
    /// The dynamic linker cannot load `libnvidia-ml.so.1` (why).
    Missing(String),
    /// The library loads but its `nvmlInit_v2` returns this error (no driver, no permission).
    Refuses(i32),
    /// The library loads and initialises.
    Works,
}

fn nvml_here() -> Nvml {
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
            return Nvml::Missing(if err.is_null() {
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
        if code == 0 {
            Nvml::Works
        } else {
            Nvml::Refuses(code)
        }
    }
}

fn scrape_until(listen: &str, series: &str, want: f64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(listen, "/metrics").expect("scrape");
        if sample(&metrics, series) == Some(want) {
            return metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never {want}:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn containers_asking_for_the_same_device_are_reported_as_sharing() {
    require_privileged!();
    let devices = Devices::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let ct = Clawtrace::start_scoped("gpu", &["--prometheus-listen", &listen], &[]);
    let gpu0 = devices.path("gpu0");

    let mut first = TestCgroup::new("gpu-a");
    let mut a = asking(&first, &gpu0);
    let access = ct.wait_event("device_access", &first.container_id(), |_| true);
    assert_eq!(access["device"], gpu0.as_str(), "{access}");
    assert_eq!(access["gpu"], "gpu0");
    assert_eq!(
        (access["major"].as_u64(), access["minor"].as_u64()),
        (Some(195), Some(100))
    );
    assert_eq!(access["access"], "read");
    assert_eq!(access["first_use"], true);
    assert_eq!(access["is_gpu"], true);
    // No device program of the test's cgroups denies anything: allowed, where the kernel tells.
    assert!(
        access["decision"] == "allowed" || access["decision"] == "undecided",
        "{access}"
    );
    // The caller is `cat`, the shell's child, where the kernel names it.
    if let Some(pid) = access["pid"].as_u64() {
        assert_ne!(pid, u64::from(a.id()), "{access}");
        assert_eq!(access["comm"], "cat", "{access}");
    }

    let mut second = TestCgroup::new("gpu-b");
    let mut b = asking(&second, &gpu0);
    let shared = ct.wait_event("gpu_sharing", &second.container_id(), |_| true);
    assert_eq!(shared["device"], gpu0.as_str());
    let mut ids: Vec<String> = shared["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![first.container_id(), second.container_id()];
    want.sort();
    assert_eq!(ids, want);

    // A device no one else uses is not shared; a control node never counts as a GPU; a device
    // number outside --gpu-device is not reported; a node outside /dev is named by number.
    let mut third = TestCgroup::new("gpu-c");
    let mut c = asking(&third, &devices.path("gpu1"));
    let mut fourth = TestCgroup::new("gpu-d");
    let mut d = asking(&fourth, &devices.path("gpuctl"));
    ct.wait_event("device_access", &third.container_id(), |_| true);
    let ctl = ct.wait_event("device_access", &fourth.container_id(), |_| true);
    assert_eq!(ctl["is_gpu"], false);
    assert_eq!(ctl["gpu"], "gpuctl");
    let scratch =
        Devices(std::env::temp_dir().join(format!("clawtrace-gpu-unnamed-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).unwrap();
    let unnamed = scratch.0.join("n");
    mknod(&unnamed, NVIDIA, 102);
    let other = scratch.0.join("other");
    mknod(&other, 10, 237);
    let mut fifth = TestCgroup::new("gpu-e");
    let mut e = fifth.spawn(Command::new("sh").args([
        "-c",
        &format!(
            "cat '{}' '{}' 2>/dev/null; exec sleep 1000",
            other.display(),
            unnamed.display()
        ),
    ]));
    let by_number = ct.wait_event("device_access", &fifth.container_id(), |_| true);
    assert_eq!(by_number["device"], "char 195:102", "{by_number}");
    assert_eq!(by_number["gpu"], "195:102");
    let metrics = scrape_until(&listen, r#"gpu_containers{gpu="gpu0"}"#, 2.0);
    assert_eq!(sample(&metrics, r#"gpu_containers{gpu="gpu1"}"#), Some(1.0));
    assert_eq!(sample(&metrics, "gpu_shared_devices"), Some(1.0));
    assert_eq!(
        sample(&metrics, r#"gpu_sharing_total{agent_name="unknown"}"#),
        Some(1.0)
    );
    for id in [
        third.container_id(),
        fourth.container_id(),
        fifth.container_id(),
    ] {
        assert!(ct
            .matching(|v| v["event"] == "gpu_sharing" && v["container_id"] == id.as_str())
            .is_empty());
    }
    let fifth_id = fifth.container_id();
    assert_eq!(
        ct.matching(|v| v["event"] == "device_access" && v["container_id"] == fifth_id.as_str())
            .len(),
        1,
        "10:237 is no GPU number"
    );

    // The second container goes: the device is no longer shared.
    kill(b.id(), libc::SIGKILL);
    wait_status(&mut b);
    second.remove();
    let metrics = scrape_until(&listen, "gpu_shared_devices", 0.0);
    assert_eq!(sample(&metrics, r#"gpu_containers{gpu="gpu0"}"#), Some(1.0));

    for (child, cgroup) in [
        (&mut a, &mut first),
        (&mut c, &mut third),
        (&mut d, &mut fourth),
        (&mut e, &mut fifth),
    ] {
        kill(child.id(), libc::SIGKILL);
        wait_status(child);
        cgroup.remove();
    }
    let stderr = ct.stop();
    // The device hook worked above whatever NVML's state. Where NVML works clawtrace says which
    // driver and GPUs it reads (info), and nothing about NVML is a warning or an error; without
    // it nothing complains at all (`clawtrace check` is where its absence is told).
    let about_nvml: Vec<&String> = stderr.iter().filter(|l| l.contains("NVML")).collect();
    match nvml_here() {
        Nvml::Works => {
            assert!(
                about_nvml
                    .iter()
                    .any(|l| l.contains("INFO") && l.contains("NVML: driver ")),
                "NVML loads here but clawtrace did not say so: {stderr:?}"
            );
            assert!(
                !about_nvml
                    .iter()
                    .any(|l| l.contains("WARN") || l.contains("ERROR")),
                "{about_nvml:?}"
            );
        }
        nvml => assert!(
            about_nvml.is_empty(),
            "NVML is not usable here ({nvml:?}), and clawtrace must not complain: {about_nvml:?}"
        ),
    }
}

#[test]
fn check_says_once_when_nvml_is_not_there() {
    require_privileged!();
    let out = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
        .arg("check")
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let nvml: Vec<&str> = stdout.lines().filter(|l| l.contains("NVML")).collect();
    assert_eq!(nvml.len(), 1, "{stdout}");
    let line = nvml[0];
    // NVML is optional: whatever its state, the check passes (as root, on a host it runs on).
    assert!(
        out.status.success(),
        "NVML's state must not fail the check:\n{stdout}"
    );
    match nvml_here() {
        // As the README documents it.
        Nvml::Missing(why) => assert!(
            line.starts_with("absent ")
                && line.ends_with("NVML: not available (libnvidia-ml.so.1 not found)"),
            "libnvidia-ml.so.1 does not load here ({why}): {line}"
        ),
        Nvml::Refuses(code) => assert!(
            line.starts_with("absent ")
                && line.contains("NVML: not available (")
                && !line.contains("not found"),
            "nvmlInit_v2 returns {code} here: {line}"
        ),
        Nvml::Works => assert!(
            line.starts_with("ok ") && line.contains("NVML: driver ") && line.ends_with(" GPU(s)"),
            "NVML works here: {line}"
        ),
    }
}
