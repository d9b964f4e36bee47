//! GPU devices as the kernel knows them, by device number: which numbers are followed
//! (`--gpu-device`), which of them are GPUs, and the /dev node of each number.

use std::{
    collections::HashMap,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::Path,
    time::{Duration, Instant},
};

use tracer_common::DeviceRange;

/// GPU device numbers (`--gpu-device`): NVIDIA's major with all its minors (its GPUs, and its
/// modeset and control nodes), and DRM render nodes.
pub const DEFAULT_GPU_DEVICES: [&str; 2] = ["195", "226:128-255"];

/// NVIDIA's character-device major (`/dev/nvidia*`).
pub const NVIDIA_MAJOR: u32 = 195;
/// NVIDIA minors from this one up are control nodes (`nvidia-modeset` 254, `nvidiactl` 255),
/// not GPUs.
pub const NVIDIA_FIRST_CONTROL_MINOR: u32 = 254;

pub fn default_gpu_devices() -> Vec<DeviceRange> {
    DEFAULT_GPU_DEVICES
        .iter()
        .filter_map(|d| parse_device_range(d).ok())
        .collect()
}

/// A `--gpu-device` value: `MAJOR`, `MAJOR:MINOR` or `MAJOR:FIRST-LAST` (character devices).
pub fn parse_device_range(text: &str) -> Result<DeviceRange, String> {
    let bad = || format!("invalid device {text:?}: MAJOR, MAJOR:MINOR or MAJOR:FIRST-LAST");
    let number = |s: &str| s.trim().parse::<u32>().map_err(|_| bad());
    let (major, minors) = match text.split_once(':') {
        Some((major, minors)) => (number(major)?, Some(minors)),
        None => (number(text)?, None),
    };
    // The kernel's device numbers: 12-bit majors, 20-bit minors; major 0 is unnamed devices.
    if major == 0 || major >= 1 << 12 {
        return Err(format!(
            "invalid device {text:?}: the major must be 1 to 4095"
        ));
    }
    let (minor_first, minor_last) = match minors {
        None => (0, (1 << 20) - 1),
        Some(m) => match m.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(m)?, number(m)?),
        },
    };
    if minor_first > minor_last || minor_last >= 1 << 20 {
        return Err(format!(
            "invalid device {text:?}: minors must be 0 to 1048575, first no larger than last"
        ));
    }
    Ok(DeviceRange {
        major,
        minor_first,
        minor_last,
        _reserved: 0,
    })
}

/// The /dev nodes of device numbers, found by walking /dev: once at start, and again when an
/// access names a number not seen, at most once per [`RESCAN_AFTER`] (a node made outside /dev
/// has no name and would otherwise cost a walk per access).
pub struct DeviceNames {
    root: std::path::PathBuf,
    names: HashMap<(u32, u32), String>,
    scanned: Option<Instant>,
}

/// The least time between two walks of /dev.
pub const RESCAN_AFTER: Duration = Duration::from_secs(1);

impl DeviceNames {
    pub fn new(root: &Path) -> DeviceNames {
        DeviceNames {
            root: root.to_path_buf(),
            names: HashMap::new(),
            scanned: None,
        }
    }

    /// The node of character device `major:minor`, walking /dev again if it is not known and
    /// the last walk is old enough.
    pub fn lookup(&mut self, major: u32, minor: u32) -> Option<&str> {
        if !self.names.contains_key(&(major, minor))
            && self.scanned.is_none_or(|t| t.elapsed() >= RESCAN_AFTER)
        {
            self.names = scan(&self.root);
            self.scanned = Some(Instant::now());
        }
        self.names.get(&(major, minor)).map(String::as_str)
    }
}

/// Folders of /dev that hold files, not device nodes (shared memory, message queues, huge
/// pages): not walked.
const NOT_DEVICES: [&str; 3] = ["shm", "mqueue", "hugepages"];

/// Character device nodes under `root` by number; the first by path order wins. Symbolic links
/// are not followed (/dev/char holds one per device).
fn scan(root: &Path) -> HashMap<(u32, u32), String> {
    let mut found = HashMap::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if dir != root || !NOT_DEVICES.iter().any(|n| entry.file_name() == *n) {
                    dirs.push(entry.path());
                }
            } else if kind.is_char_device() {
                paths.push(entry.path());
            }
        }
    }
    paths.sort();
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rdev = meta.rdev();
        let number = (libc::major(rdev), libc::minor(rdev));
        found
            .entry(number)
            .or_insert_with(|| path.to_string_lossy().into_owned());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ranges_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_device_range("195"),
            Ok(DeviceRange {
                major: 195,
                minor_first: 0,
                minor_last: (1 << 20) - 1,
                _reserved: 0
            })
        );
        let r = parse_device_range("226:128-255").unwrap();
        assert_eq!((r.major, r.minor_first, r.minor_last), (226, 128, 255));
        let r = parse_device_range("511:3").unwrap();
        assert_eq!((r.major, r.minor_first, r.minor_last), (511, 3, 3));
        for bad in [
            "",
            "x",
            "0",
            "4096",
            "195:9-3",
            "195:2000000",
            "195:",
            "195:1-",
        ] {
            assert!(parse_device_range(bad).is_err(), "{bad}");
        }
        assert_eq!(default_gpu_devices().len(), DEFAULT_GPU_DEVICES.len());
    }

    #[test]
    fn dev_nodes_are_named_by_number() {
        // /dev/null is character device 1:3 on every Linux system.
        let mut names = DeviceNames::new(Path::new("/dev"));
        assert_eq!(names.lookup(1, 3), Some("/dev/null"));
        assert_eq!(names.lookup(4095, 1_048_575), None);
    }
}
