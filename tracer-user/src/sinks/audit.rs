//! The audit log: one JSON line per process exit in a container, appended to a file. This
//! module owns the file itself: opening it safely (mode 0600, no symlinks), repairing a torn
//! last line left by a crash, writing each line whole, and size-capped rotation
//! (`path` → `path.1` → … → `path.keep`). What goes into a line is the caller's business.
//!
//! clawtrace must be the only writer of the file: the repairs truncate it to sizes measured by
//! this process.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::files::open_append;
use crate::model::Event;

/// Whether `event` goes to the audit log, which holds each container's life as `clawtrace
/// explain` tells it: its creation and deletion (with the verdict), its init's exec (the start
/// latency), every process exit and every signal sent to its processes (who killed what), OOM
/// marks, its volumes and their violations, its first use of each GPU and GPU sharing, and
/// lingering. Not there: other processes' execs, mount calls, repeated device accesses.
pub fn audited(event: &Event) -> bool {
    match event {
        Event::ContainerCreate(_)
        | Event::ContainerDelete(_)
        | Event::ProcessExit(_)
        | Event::Signal(_)
        | Event::OomMark(_)
        | Event::VolumeMount(_)
        | Event::VolumeViolation(_)
        | Event::GpuSharing(_)
        | Event::ContainerLingering(_) => true,
        Event::ProcessExec(e) => e.is_container_init,
        Event::DeviceAccess(d) => d.first_use && d.is_gpu,
        Event::Mount(_) => false,
    }
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    keep: usize,
    rotations: u64,
}

impl AuditLog {
    /// Opens (creating with mode 0600, O_APPEND, O_NOFOLLOW) `path`; if its last line is torn (the
    /// file does not end with '\n'), truncates back to the last complete line and logs a warning.
    ///
    /// `max_bytes` caps each file (a single line longer than that still gets a file of its
    /// own); `keep` is how many rotated files stay (`0`: the log is simply restarted).
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> anyhow::Result<AuditLog> {
        let file =
            open_append(path).with_context(|| format!("opening audit log {}", path.display()))?;
        if let Some((from, to)) =
            repair_tail(&file).with_context(|| format!("repairing audit log {}", path.display()))?
        {
            log::warn!(
                "audit log {}: dropped a torn last line ({} bytes) left by an earlier crash",
                path.display(),
                from - to
            );
        }
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            max_bytes,
            keep,
            rotations: 0,
        })
    }

    /// Appends `line` (no newline inside; the caller passes serialized JSON) plus '\n' with ONE
    /// write(2) call so a crash can never leave part of it; when the file would pass max_bytes,
    /// rotates first: path.(keep-1) → path.keep … path → path.1, dropping the oldest, then reopens.
    ///
    /// A line with '\n' in it is refused with `InvalidInput` and nothing is written.
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        if line.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "audit line contains a newline",
            ));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');

        // Measured, not tracked: the size before this line is what a failed write is undone to.
        let mut size = self.file.metadata()?.len();
        if size > 0 && size.saturating_add(buf.len() as u64) > self.max_bytes {
            self.rotate()?;
            size = self.file.metadata()?.len();
        }
        // Why one write(2) keeps lines whole:
        // - O_APPEND makes "seek to end and write" one step under the inode lock, so the line
        //   lands contiguously after the last complete one.
        // - A write to a regular file is not interrupted by ordinary signals (no EINTR, no
        //   partial count), and a crash of this process (panic, abort, SIGSEGV in another
        //   thread) cannot happen *inside* the call while this thread is in the kernel copying
        //   the buffer; it lands either before the call (nothing written) or after it (all
        //   written).
        // - The kernel returns a short count only when it cannot take more: the disk is full
        //   (ENOSPC) or the file hit RLIMIT_FSIZE/the filesystem's limit (EFBIG). `settle`
        //   undoes those by truncating back to `size`, so no partial line remains.
        // Left over, and covered by the torn-tail repair in `open`: a *fatal* signal (SIGKILL,
        // or an unhandled crash signal delivered to the whole process) is checked by the kernel
        // between page-cache pages, so a line straddling a page boundary can in principle stop
        // half-way; and power loss or a kernel crash can leave a partial or zero-filled tail.
        let written = loop {
            match self.file.write(&buf) {
                // EINTR means nothing was written; the same single write is tried again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.settle(written, buf.len(), size)
    }

    /// Turns the result of the one write into the result of `append`, truncating the file back
    /// to `prev` bytes when only part of the line (or possibly something, on an error) got in.
    fn settle(&self, written: io::Result<usize>, want: usize, prev: u64) -> io::Result<()> {
        let err = match written {
            Ok(n) if n == want => return Ok(()),
            Ok(n) => io::Error::other(format!(
                "short write to {} ({n} of {want} bytes; disk full or file size limit?)",
                self.path.display()
            )),
            Err(e) => e,
        };
        // An error return means nothing was written, but check rather than trust it.
        let now = self.file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if now > prev {
            if let Err(undo) = self.file.set_len(prev) {
                return Err(io::Error::new(
                    err.kind(),
                    format!(
                        "{err}; and truncating {} back to {prev} bytes failed: {undo}",
                        self.path.display()
                    ),
                ));
            }
        }
        Err(err)
    }

    /// path.(keep-1) → path.keep … path → path.1, then a fresh `path`. Each rename is atomic,
    /// so a crash part-way loses at most the oldest file, never a line. Missing files are
    /// skipped, which also lets a rotation whose reopen failed be retried.
    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            ignore_missing(fs::remove_file(&self.path))?;
        } else {
            for i in (1..self.keep).rev() {
                ignore_missing(fs::rename(self.numbered(i), self.numbered(i + 1)))?;
            }
            ignore_missing(fs::rename(&self.path, self.numbered(1)))?;
        }
        self.file = open_append(&self.path)?;
        self.rotations += 1;
        Ok(())
    }

    /// `path.i`, kept as an OsString so a non-UTF-8 path survives.
    fn numbered(&self, i: usize) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }

    /// How many times the log was rotated since `open`.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Truncates a file that does not end with '\n' back to just after its last '\n' (or to
/// nothing). Returns `(old_len, new_len)` when it did. Reads backwards in chunks, so only the
/// torn tail is read, not the whole file.
fn repair_tail(file: &File) -> io::Result<Option<(u64, u64)>> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    let mut buf = vec![0u8; len.min(CHUNK) as usize];
    let mut end = len;
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(Some((len, keep)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use crate::test_dir::TempDir;

    fn numbered(path: &Path, i: usize) -> PathBuf {
        PathBuf::from(format!("{}.{i}", path.display()))
    }

    #[test]
    fn rotation_keeps_keep_files_under_the_cap() {
        let dir = TempDir::new("rotate");
        let path = dir.0.join("audit.jsonl");
        let (max, keep) = (100u64, 3usize);
        let mut log = AuditLog::open(&path, max, keep).unwrap();
        let lines: Vec<String> = (0..60).map(|i| format!("{{\"n\":{i:03}}}")).collect();
        for l in &lines {
            log.append(l).unwrap();
        }
        assert!(log.rotations() > keep as u64);
        for i in 1..=keep {
            assert!(numbered(&path, i).exists(), "{i}");
        }
        assert!(!numbered(&path, keep + 1).exists());
        // Oldest first: path.3, path.2, path.1, path. Each within the cap, whole lines, and
        // together the newest lines in order.
        let mut tail = Vec::new();
        for p in (1..=keep)
            .rev()
            .map(|i| numbered(&path, i))
            .chain([path.clone()])
        {
            let text = fs::read_to_string(&p).unwrap();
            assert!(
                text.len() as u64 <= max,
                "{} is {} bytes",
                p.display(),
                text.len()
            );
            assert!(text.ends_with('\n'));
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            tail.extend(text.lines().map(str::to_owned));
        }
        assert_eq!(tail, lines[lines.len() - tail.len()..]);
    }

    #[test]
    fn keep_zero_restarts_the_log() {
        let dir = TempDir::new("keep0");
        let path = dir.0.join("audit.jsonl");
        let mut log = AuditLog::open(&path, 20, 0).unwrap();
        for i in 0..10 {
            log.append(&format!("line-{i}")).unwrap();
        }
        assert!(!numbered(&path, 1).exists());
        assert!(fs::metadata(&path).unwrap().len() <= 20);
        assert!(fs::read_to_string(&path).unwrap().ends_with("line-9\n"));
    }

    #[test]
    fn oversized_line_gets_a_file_of_its_own() {
        let dir = TempDir::new("big");
        let path = dir.0.join("audit.jsonl");
        let mut log = AuditLog::open(&path, 10, 2).unwrap();
        log.append("a").unwrap();
        log.append(&"x".repeat(50)).unwrap();
        log.append("b").unwrap();
        assert_eq!(fs::read_to_string(numbered(&path, 2)).unwrap(), "a\n");
        assert_eq!(fs::read_to_string(numbered(&path, 1)).unwrap().len(), 51);
        assert_eq!(fs::read_to_string(&path).unwrap(), "b\n");
    }

    #[test]
    fn torn_tail_is_repaired_at_open() {
        let dir = TempDir::new("torn");
        let path = dir.0.join("audit.jsonl");
        fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let mut log = AuditLog::open(&path, 1 << 20, 2).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"b\":2}\n");
        log.append("{\"d\":4}").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"
        );

        // No newline at all, and a tail longer than one read chunk.
        let path2 = dir.0.join("torn2.jsonl");
        fs::write(&path2, vec![b'x'; 200_000]).unwrap();
        drop(AuditLog::open(&path2, 1 << 20, 2).unwrap());
        assert_eq!(fs::metadata(&path2).unwrap().len(), 0);

        // A zero-filled tail, as power loss can leave.
        let path3 = dir.0.join("torn3.jsonl");
        let mut bytes = b"ok\n".to_vec();
        bytes.resize(70_000, 0);
        fs::write(&path3, bytes).unwrap();
        drop(AuditLog::open(&path3, 1 << 20, 2).unwrap());
        assert_eq!(fs::read(&path3).unwrap(), b"ok\n");
    }

    #[test]
    fn lines_survive_reopen() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("audit.jsonl");
        {
            let mut log = AuditLog::open(&path, 1 << 20, 2).unwrap();
            log.append("one").unwrap();
            log.append("two").unwrap();
        }
        let mut log = AuditLog::open(&path, 1 << 20, 2).unwrap();
        log.append("three").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(log.rotations(), 0);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn symlink_at_path_is_refused() {
        let dir = TempDir::new("symlink");
        let path = dir.0.join("audit.jsonl");
        let target = dir.0.join("elsewhere");
        symlink(&target, &path).unwrap();
        let err = AuditLog::open(&path, 1 << 20, 2).unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        assert!(!target.exists());
        fs::write(&target, "precious\n").unwrap();
        assert!(AuditLog::open(&path, 1 << 20, 2).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn newline_inside_a_line_is_refused() {
        let dir = TempDir::new("newline");
        let path = dir.0.join("audit.jsonl");
        let mut log = AuditLog::open(&path, 1 << 20, 2).unwrap();
        log.append("ok").unwrap();
        let err = log.append("{\"a\":\n1}").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(fs::read_to_string(&path).unwrap(), "ok\n");
    }

    #[test]
    fn short_write_is_undone() {
        let dir = TempDir::new("short");
        let path = dir.0.join("audit.jsonl");
        let mut log = AuditLog::open(&path, 1 << 20, 2).unwrap();
        log.append("whole").unwrap();
        let prev = fs::metadata(&path).unwrap().len();
        // What the kernel leaves on ENOSPC part-way: the first bytes of the line.
        (&log.file).write_all(b"{\"par").unwrap();
        let err = log.settle(Ok(5), 12, prev).unwrap_err();
        assert!(err.to_string().contains("short write"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "whole\n");
        // An error with nothing written leaves the file alone.
        let err = log
            .settle(Err(io::Error::from_raw_os_error(libc::ENOSPC)), 12, prev)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs::read_to_string(&path).unwrap(), "whole\n");
        log.append("next").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "whole\nnext\n");
    }
}
