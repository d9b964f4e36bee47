//! Inert stand-ins for the maps whose type the running kernel lacks (cgroup local storage
//! before 6.2, task local storage before 5.11).
//!
//! aya creates every map of the object before it loads any program and offers no way to leave
//! one out, but it takes a map that is pinned already as it is. So for each such map a
//! one-entry array is made and pinned in a bpffs, and aya is pointed at the pin. On such a
//! kernel the programs take their fallback paths, none of which touches the map: the
//! `KERNEL_FEATURES` global tells the verifier so, and it never walks the paths that do. The
//! pins go once the programs are loaded; the programs' references keep the arrays.

use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::DirBuilderExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use aya::maps::MapData;

/// The pinned stand-ins, removed (and the private bpffs unmounted) on drop.
pub struct StandIns {
    dir: PathBuf,
    /// Whether `dir` is a private bpffs this process mounted, else a folder in the host's.
    mounted: bool,
    pins: Vec<(&'static str, PathBuf)>,
}

impl StandIns {
    /// Pins a stand-in for each of `names`. `why` says, for the error, what the kernel lacks.
    pub fn pin(names: &[&'static str], why: &str) -> Result<StandIns> {
        let (dir, mounted) = bpffs_dir().with_context(|| {
            format!(
                "{why}: the stand-ins for its maps ({}) need a bpffs",
                names.join(", ")
            )
        })?;
        let mut standins = StandIns {
            dir,
            mounted,
            pins: Vec::new(),
        };
        for &name in names {
            // Named as the map it stands in for, so that tools listing maps tell them apart.
            let def = aya_obj::Map::new_from_params(
                aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
                size_of::<u32>() as u32,
                size_of::<u64>() as u32,
                1,
                0,
            );
            let map = MapData::create(def, name, None)
                .with_context(|| format!("creating a stand-in for map {name}"))?;
            let path = standins.dir.join(name);
            map.pin(&path)
                .with_context(|| format!("pinning the stand-in for map {name}"))?;
            standins.pins.push((name, path));
        }
        Ok(standins)
    }

    /// Each stand-in's map name and pin, for [`aya::EbpfLoader::map_pin_path`].
    pub fn pins(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        self.pins.iter().map(|(name, path)| (*name, path.as_path()))
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        for (_, path) in &self.pins {
            let _ = fs::remove_file(path);
        }
        if self.mounted {
            if let Ok(dir) = CString::new(self.dir.as_os_str().as_bytes()) {
                // SAFETY: a valid NUL-terminated path that outlives the call.
                unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A fresh folder in a bpffs: a private instance mounted in the temporary folder (nothing of
/// it is seen by others), else, without the privilege to mount, a folder in the host's bpffs.
fn bpffs_dir() -> Result<(PathBuf, bool)> {
    let dir = std::env::temp_dir().join(format!("clawtrace-maps-{}", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("making {}", dir.display()))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let Err(mount_error) = crate::sys::mount_fs("bpf", &dir, "bpf", flags, Some("mode=0700"))
    else {
        return Ok((dir, true));
    };
    let _ = fs::remove_dir(&dir);
    let Some(host) = host_bpffs() else {
        bail!("mounting one failed ({mount_error}) and none is mounted");
    };
    let dir = host.join(format!("clawtrace-maps-{}", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| {
            format!(
                "mounting one failed ({mount_error}); making {}",
                dir.display()
            )
        })?;
    Ok((dir, false))
}

/// Where the host's bpffs is mounted, if it is.
fn host_bpffs() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "bpf").then(|| PathBuf::from(target))
    })
}
