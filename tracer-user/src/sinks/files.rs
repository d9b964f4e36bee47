//! The rules every file clawtrace keeps follows (the audit log, the label key and lookup
//! table): private modes, and nothing planted at their path (a symlink, a FIFO, a file others
//! can read) written through or trusted.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::{anyhow, bail, Context as _};

/// Opens `path` for reading and appending, creating it with mode 0600. A symlink at `path` is
/// refused (O_NOFOLLOW), and so is anything but a regular file.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            // O_NOFOLLOW reports a symlink as ELOOP, "too many levels of symbolic links".
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symbolic link; refusing to write through it",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Makes `dir` (mode 0700, with its parents) unless it exists; it must be a directory.
pub(crate) fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    // 0700: the key and the plaintext names are nobody else's business. An existing directory
    // keeps its mode; the files in it are 0600 regardless.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let meta = fs::metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !meta.is_dir() {
        bail!("state directory {} is not a directory", dir.display());
    }
    Ok(())
}

/// Opens for reading without following a final symlink, and with O_NONBLOCK so a FIFO planted
/// at the path cannot hang the open (it has no effect on regular files).
pub(crate) fn open_read_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// O_NOFOLLOW reports a symlink as ELOOP, which reads as "too many levels of symbolic links";
/// say what actually happened.
pub(crate) fn nofollow_error(e: io::Error, path: &Path) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        anyhow!(
            "{} is a symbolic link; refusing to follow it (remove it and start again)",
            path.display()
        )
    } else {
        anyhow::Error::new(e).context(format!("opening {}", path.display()))
    }
}

/// A regular file that only its owner can access.
pub(crate) fn check_private_file(file: &File, path: &Path) -> anyhow::Result<fs::Metadata> {
    let meta = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible by group or others (mode {mode:03o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(meta)
}
