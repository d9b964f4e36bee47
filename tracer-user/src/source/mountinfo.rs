//! Each container's mount table, read from the kernel (`/proc/<init>/mountinfo`) when its
//! payload starts, and again whenever the kernel says the table changed: a mountinfo file
//! polls readable with `POLLPRI` once per change of its mount namespace. One thread waits on
//! every container's file and on the host's (whose table turns bound devices into host paths);
//! the run loop hands it containers and takes their binds back. No system call is traced.

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    sync::mpsc,
    thread::JoinHandle,
};

use anyhow::{Context as _, Result};

use crate::model::volumes::{self, Bind, Mount};

/// The host's table: that of pid 1, so a tracer in a container with the host's pid namespace
/// still resolves host paths.
const HOST_TABLE: &str = "/proc/1/mountinfo";

/// A container's binds, as its table stood at `ts_ns` (CLOCK_MONOTONIC).
#[derive(Debug)]
pub struct Table {
    pub cgroup_id: u64,
    pub ts_ns: u64,
    pub binds: Vec<Bind>,
}

enum Command {
    Watch(u64, File),
    Unwatch(u64),
    Stop,
}

/// Follows the containers' mount tables, with a thread started when the first container with
/// a mount namespace of its own needs one (a node whose containers all share the host's never
/// starts it).
pub struct MountWatcher {
    running: Option<Running>,
    /// Why the thread could not start, once said.
    failed: bool,
    /// The tracer's own mount namespace: a container in it has no table of its own.
    own_ns: Option<u64>,
    /// The containers whose tables are followed, with the namespace followed (0: not known).
    watched: HashMap<u64, u32>,
}

/// The thread, and the ends of its channels.
struct Running {
    commands: mpsc::Sender<Command>,
    tables: mpsc::Receiver<Table>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start() -> Result<Running> {
        // SAFETY: eventfd takes integer arguments and returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("eventfd for the mount watcher");
        }
        // SAFETY: a descriptor eventfd just returned, owned by nothing else.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let thread_wake = wake.try_clone().context("eventfd for the mount watcher")?;
        let host = File::open(HOST_TABLE).with_context(|| format!("opening {HOST_TABLE}"))?;
        let (commands, command_rx) = mpsc::channel();
        let (table_tx, tables) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mounts".into())
            .spawn(move || follow(host, thread_wake, command_rx, table_tx))
            .context("starting the mount watcher")?;
        Ok(Running {
            commands,
            tables,
            wake,
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to the eventfd.
            unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Default for MountWatcher {
    fn default() -> Self {
        MountWatcher::new()
    }
}

impl MountWatcher {
    pub fn new() -> MountWatcher {
        MountWatcher {
            running: None,
            failed: false,
            own_ns: mount_ns("self"),
            watched: HashMap::new(),
        }
    }

    /// Follows the mount table of container `cgroup_id` through its process `pid`, which has
    /// just exec'd in mount namespace `mnt_ns` (as the kernel read it; 0: not known, the
    /// process is on its way out). The file is opened now, which holds the mount namespace: a
    /// payload that exits at once still leaves its table to read. A process in the tracer's own
    /// mount namespace has no table of its own: that costs nothing here. A later call for the
    /// same container in another namespace (an init that entered one of its own and exec'd)
    /// follows that one instead.
    pub fn watch(&mut self, cgroup_id: u64, pid: u32, mnt_ns: u32) {
        if mnt_ns == 0
            || self.own_ns == Some(u64::from(mnt_ns))
            || self.watched.get(&cgroup_id) == Some(&mnt_ns)
        {
            return;
        }
        self.open(cgroup_id, pid, mnt_ns);
    }

    /// [`MountWatcher::watch`] for a container found running at start, whose namespace is read
    /// from /proc.
    pub fn watch_running(&mut self, cgroup_id: u64, pid: u32) {
        // Namespace inode numbers are 32 bits (`ns_common.inum`); 0 where /proc does not say.
        let mnt_ns = mount_ns(&pid.to_string()).map_or(0, |ino| ino as u32);
        if mnt_ns != 0 && self.own_ns == Some(u64::from(mnt_ns)) {
            return;
        }
        self.open(cgroup_id, pid, mnt_ns);
    }

    fn open(&mut self, cgroup_id: u64, pid: u32, mnt_ns: u32) {
        if self.running.is_none() && !self.failed {
            match Running::start() {
                Ok(running) => self.running = Some(running),
                Err(err) => {
                    self.failed = true;
                    log::warn!("container volumes are not followed: {err:#}");
                }
            }
        }
        let Some(running) = &self.running else {
            return;
        };
        match File::open(format!("/proc/{pid}/mountinfo")) {
            Ok(file) => {
                self.watched.insert(cgroup_id, mnt_ns);
                running.send(Command::Watch(cgroup_id, file));
            }
            Err(err) => log::debug!(
                "container {cgroup_id}: its mount table is not read, process {pid} is gone: {err}"
            ),
        }
    }

    /// Forgets a container.
    pub fn unwatch(&mut self, cgroup_id: u64) {
        if let (Some(_), Some(running)) = (self.watched.remove(&cgroup_id), &self.running) {
            running.send(Command::Unwatch(cgroup_id));
        }
    }

    /// The tables read since the last call.
    pub fn tables(&self) -> impl Iterator<Item = Table> + '_ {
        self.running.iter().flat_map(|r| r.tables.try_iter())
    }
}

/// The inode of a process's mount namespace (`self` or a pid), if it can be read.
fn mount_ns(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// Reads a whole mount table from the start of its file.
fn read_table(file: &mut File) -> Option<Vec<Mount>> {
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(volumes::parse_mountinfo(&text))
}

fn follow(
    mut host: File,
    wake: OwnedFd,
    commands: mpsc::Receiver<Command>,
    tables: mpsc::Sender<Table>,
) {
    let mut host_table = read_table(&mut host).unwrap_or_default();
    let mut watched: HashMap<u64, File> = HashMap::new();
    loop {
        let mut fds = vec![
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: host.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            },
        ];
        let ids: Vec<u64> = watched.keys().copied().collect();
        fds.extend(ids.iter().map(|id| libc::pollfd {
            fd: watched[id].as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        }));
        // SAFETY: `fds` is a valid array of pollfd of the length given, for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            continue;
        }
        let mut changed: Vec<u64> = Vec::new();
        if fds[0].revents != 0 {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a valid u64 from the eventfd.
            unsafe { libc::read(wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            for command in commands.try_iter() {
                match command {
                    Command::Watch(id, file) => {
                        watched.insert(id, file);
                        changed.push(id);
                    }
                    Command::Unwatch(id) => {
                        watched.remove(&id);
                    }
                    Command::Stop => return,
                }
            }
        }
        if fds[1].revents != 0 {
            host_table = read_table(&mut host).unwrap_or(host_table);
        }
        for (pollfd, id) in fds[2..].iter().zip(&ids) {
            if pollfd.revents & (libc::POLLPRI | libc::POLLERR) != 0 {
                changed.push(*id);
            }
        }
        for id in changed {
            let Some(file) = watched.get_mut(&id) else {
                continue;
            };
            let Some(table) = read_table(file) else {
                continue;
            };
            let binds = volumes::binds(&table, &host_table);
            let sent = tables.send(Table {
                cgroup_id: id,
                ts_ns: crate::sys::monotonic_ns(),
                binds,
            });
            if sent.is_err() {
                return;
            }
        }
    }
}
