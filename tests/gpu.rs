//! GPU correlation end to end: containers (real cgroups) open "GPU devices" (files the test
//! makes, under a `--gpu-device-prefix` of its own), and clawtrace says which containers share
//! a device, with both container ids, in its events and metrics.

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use support::*;

struct Devices(PathBuf);

impl Devices {
    fn new() -> Devices {
        let dir = std::env::temp_dir().join(format!("clawtrace-gpu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["gpu0", "gpu1", "gpuctl"] {
            std::fs::write(dir.join(name), b"").unwrap();
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

/// A container whose process opens `device` (keeping it open) and sleeps.
fn holding(cgroup: &TestCgroup, device: &str) -> std::process::Child {
    cgroup.spawn(Command::new("sh").args([
        "-c",
        &format!("exec 3< '{device}' 2>/dev/null; exec sleep 1000"),
    ]))
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
fn containers_opening_the_same_device_are_reported_as_sharing() {
    require_privileged!();
    let devices = Devices::new();
    let prefix = devices.path("gpu");
    let listen = format!("127.0.0.1:{}", free_port());
    let ct = Clawtrace::start_scoped(
        "gpu",
        &[
            "--gpu-device-prefix",
            &prefix,
            "--prometheus-listen",
            &listen,
        ],
        &[],
    );
    let gpu0 = devices.path("gpu0");

    let mut first = TestCgroup::new("gpu-a");
    let mut a = holding(&first, &gpu0);
    let open = ct.wait_event("device_open", &first.container_id(), |v| v["pid"] == a.id());
    assert_eq!(open["device"], gpu0.as_str());
    assert_eq!(open["gpu"], "gpu0");
    assert_eq!(open["first_use"], true);
    assert!(open["result"].as_i64().unwrap() >= 0);

    let mut second = TestCgroup::new("gpu-b");
    let mut b = holding(&second, &gpu0);
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

    // A device no one else holds is not shared; a control node never counts as a GPU; a failed
    // open is reported as such.
    let mut third = TestCgroup::new("gpu-c");
    let mut c = holding(&third, &devices.path("gpu1"));
    let mut fourth = TestCgroup::new("gpu-d");
    let mut d = holding(&fourth, &devices.path("gpuctl"));
    let mut fifth = TestCgroup::new("gpu-e");
    let mut e = holding(&fifth, &devices.path("gpu7"));
    ct.wait_event("device_open", &third.container_id(), |_| true);
    let ctl = ct.wait_event("device_open", &fourth.container_id(), |_| true);
    assert_eq!(ctl["is_gpu"], false);
    let failed = ct.wait_event("device_open", &fifth.container_id(), |_| true);
    assert_eq!(failed["result"], -(libc::ENOENT as i64));
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
    // Without NVML nothing complains.
    assert!(!stderr.iter().any(|l| l.contains("NVML")), "{stderr:?}");
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
    if !std::path::Path::new("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1").exists() {
        assert!(
            nvml[0].ends_with("NVML: not available (libnvidia-ml.so.1 not found)"),
            "{}",
            nvml[0]
        );
        assert!(
            out.status.success(),
            "NVML's absence must not fail the check"
        );
    }
}
