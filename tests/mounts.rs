//! Mounts made by containers, end to end: synthetic containers (real cgroups) whose first
//! process enters its own mount namespace and makes bind mounts the ways runtimes do, timing
//! each system call itself, before it execs its payload (or, for one, after). clawtrace's
//! volumes come from each container's mount table, read at its payload's start and at each
//! change; with `--trace-mount-syscalls` it also reports every mount call and its duration.
//! Both are checked against what the test did and measured.

mod support;

use std::{
    ffi::CString,
    io::Read,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use support::*;

const MS_RDONLY: u64 = 1;
const MS_REMOUNT: u64 = 32;
const MS_BIND: u64 = 4096;
const MS_REC: u64 = 16384;
const MS_PRIVATE: u64 = 1 << 18;
const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_RECURSIVE: u64 = 0x8000;
const OPEN_TREE_CLONE: u64 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u64 = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;

/// The tests of this file take turns: the timing test compares durations with what its
/// containers measured, which other tests' load on the CPUs would skew.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// One step of a container's set-up.
#[derive(Clone)]
enum Step {
    /// `mount(src, dst, NULL, MS_BIND, NULL)`.
    Bind(PathBuf, PathBuf),
    /// `mount(src, dst, NULL, MS_BIND|MS_REC, NULL)`: copies every mount below `src` too.
    BindTree(PathBuf, PathBuf),
    /// `mount("tmpfs", dst, "tmpfs", 0, NULL)`.
    Tmpfs(PathBuf),
    /// runc's read-only bind: bind, then `MS_REMOUNT|MS_BIND|MS_RDONLY`.
    BindReadOnly(PathBuf, PathBuf),
    /// bind, then `mount_setattr(dst, AT_RECURSIVE, {MOUNT_ATTR_RDONLY})`.
    BindRecursiveReadOnly(PathBuf, PathBuf),
    /// `open_tree(src, OPEN_TREE_CLONE|AT_RECURSIVE)`, `mount_setattr` on it, `move_mount`.
    NewApiReadOnly(PathBuf, PathBuf),
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// The system calls a step makes, prepared before fork.
enum Sys {
    Mount {
        src: CString,
        dst: CString,
        flags: u64,
    },
    Tmpfs {
        dst: CString,
    },
    SetattrRo {
        path: CString,
    },
    NewApi {
        src: CString,
        dst: CString,
    },
}

fn syscalls(steps: &[Step]) -> Vec<Sys> {
    let mut out = vec![];
    for step in steps {
        match step {
            Step::Bind(s, d) => out.push(Sys::Mount {
                src: cstr(s),
                dst: cstr(d),
                flags: MS_BIND,
            }),
            Step::BindTree(s, d) => out.push(Sys::Mount {
                src: cstr(s),
                dst: cstr(d),
                flags: MS_BIND | MS_REC,
            }),
            Step::Tmpfs(d) => out.push(Sys::Tmpfs { dst: cstr(d) }),
            Step::BindReadOnly(s, d) => {
                out.push(Sys::Mount {
                    src: cstr(s),
                    dst: cstr(d),
                    flags: MS_BIND | MS_REC,
                });
                out.push(Sys::Mount {
                    src: cstr(s),
                    dst: cstr(d),
                    flags: MS_REMOUNT | MS_BIND | MS_RDONLY,
                });
            }
            Step::BindRecursiveReadOnly(s, d) => {
                out.push(Sys::Mount {
                    src: cstr(s),
                    dst: cstr(d),
                    flags: MS_BIND | MS_REC,
                });
                out.push(Sys::SetattrRo { path: cstr(d) });
            }
            Step::NewApiReadOnly(s, d) => out.push(Sys::NewApi {
                src: cstr(s),
                dst: cstr(d),
            }),
        }
    }
    out
}

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Starts `payload` in `cgroup` after entering a private mount namespace and making `steps`.
/// Returns the child and the duration of every mount-related system call it made, in order,
/// measured around each call.
fn start_with_mounts(
    cgroup: &TestCgroup,
    steps: &[Step],
    payload: &[&str],
) -> (std::process::Child, Vec<u64>) {
    let calls = syscalls(steps);
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just made by pipe2 and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let write_fd = {
        use std::os::fd::AsRawFd;
        write.as_raw_fd()
    };
    let root = cstr(Path::new("/"));
    let tmpfs = cstr(Path::new("tmpfs"));
    let procs = cstr(&cgroup.dir.join("cgroup.procs"));
    let mut cmd = Command::new(payload[0]);
    cmd.args(&payload[1..]);
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (unshare, mount, mount_setattr, open_tree, move_mount, clock_gettime, write, close) on
    // memory prepared before fork; it allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // Before anything is timed: resolve the dynamic linker's lazy bindings of the calls
            // (a failing call each, outside the container so nothing is traced) and run at a
            // real-time priority, so the time around each call is the call's, not a symbol
            // lookup's or another process's turn on the CPU.
            libc::mount(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                0,
                std::ptr::null(),
            );
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                std::ptr::null::<u8>(),
                0,
                std::ptr::null::<u8>(),
                0,
            );
            let _ = now_ns();
            let param = libc::sched_param { sched_priority: 1 };
            libc::sched_setscheduler(0, libc::SCHED_FIFO, &param);
            // Into the container first: its set-up happens inside it, as a runtime's does.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut times = [0u64; 128];
            let mut n = 0usize;
            let mut timed = |f: &mut dyn FnMut() -> i64| -> std::io::Result<i64> {
                let start = now_ns();
                let r = f();
                let took = now_ns() - start;
                if n < times.len() {
                    times[n] = took;
                    n += 1;
                }
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            timed(&mut || {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    MS_REC | MS_PRIVATE,
                    std::ptr::null(),
                ) as i64
            })?;
            for call in &calls {
                match call {
                    Sys::Mount { src, dst, flags } => {
                        timed(&mut || {
                            libc::mount(
                                src.as_ptr(),
                                dst.as_ptr(),
                                std::ptr::null(),
                                *flags,
                                std::ptr::null(),
                            ) as i64
                        })?;
                    }
                    Sys::Tmpfs { dst } => {
                        timed(&mut || {
                            libc::mount(
                                tmpfs.as_ptr(),
                                dst.as_ptr(),
                                tmpfs.as_ptr(),
                                0,
                                std::ptr::null(),
                            ) as i64
                        })?;
                    }
                    Sys::SetattrRo { path } => {
                        let attr = MountAttr {
                            attr_set: MOUNT_ATTR_RDONLY,
                            attr_clr: 0,
                            propagation: 0,
                            userns_fd: 0,
                        };
                        timed(&mut || {
                            libc::syscall(
                                libc::SYS_mount_setattr,
                                AT_FDCWD,
                                path.as_ptr(),
                                AT_RECURSIVE,
                                &attr as *const MountAttr,
                                std::mem::size_of::<MountAttr>(),
                            )
                        })?;
                    }
                    Sys::NewApi { src, dst } => {
                        let fd = timed(&mut || {
                            libc::syscall(
                                libc::SYS_open_tree,
                                AT_FDCWD,
                                src.as_ptr(),
                                OPEN_TREE_CLONE | AT_RECURSIVE,
                            )
                        })?;
                        let attr = MountAttr {
                            attr_set: MOUNT_ATTR_RDONLY,
                            attr_clr: 0,
                            propagation: 0,
                            userns_fd: 0,
                        };
                        let empty = b"\0";
                        timed(&mut || {
                            libc::syscall(
                                libc::SYS_mount_setattr,
                                fd,
                                empty.as_ptr(),
                                AT_EMPTY_PATH | AT_RECURSIVE,
                                &attr as *const MountAttr,
                                std::mem::size_of::<MountAttr>(),
                            )
                        })?;
                        timed(&mut || {
                            libc::syscall(
                                libc::SYS_move_mount,
                                fd,
                                empty.as_ptr(),
                                AT_FDCWD,
                                dst.as_ptr(),
                                MOVE_MOUNT_F_EMPTY_PATH,
                            )
                        })?;
                        libc::close(fd as i32);
                    }
                }
            }
            let normal = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal);
            let bytes = std::slice::from_raw_parts(times.as_ptr().cast::<u8>(), n * 8);
            libc::write(write_fd, bytes.as_ptr().cast(), bytes.len());
            Ok(())
        });
    }
    let child = cgroup.spawn(&mut cmd);
    drop(write);
    let mut raw = Vec::new();
    std::fs::File::from(read)
        .read_to_end(&mut raw)
        .expect("durations");
    let times = raw
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    (child, times)
}

/// A scratch folder with `names` as subfolders.
struct Dirs(PathBuf);

impl Dirs {
    fn new(tag: &str, names: &[&str]) -> Dirs {
        let dir =
            std::env::temp_dir().join(format!("clawtrace-mounts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for name in names {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        Dirs(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn volume(ct: &Clawtrace, cgroup: &TestCgroup, source: &Path) -> Value {
    let source = source.to_string_lossy().to_string();
    ct.wait_event("volume_mount", &cgroup.container_id(), |v| {
        v["source"] == source.as_str()
    })
}

#[test]
fn read_only_state_of_each_bind_as_runtimes_make_them() {
    require_privileged!();
    let _turn = turn();
    let dirs = Dirs::new(
        "states",
        &[
            "rw", "ro/sub", "rro", "api", "mnt/rw", "mnt/ro", "mnt/rro", "mnt/api",
        ],
    );
    let ct = Clawtrace::start_scoped("states", &["--trace-mount-syscalls"], &[]);
    let mut cgroup = TestCgroup::new("states");
    let steps = [
        Step::Bind(dirs.path("rw"), dirs.path("mnt/rw")),
        // A writable tmpfs inside the read-only bind's source: runc's per-mount remount leaves
        // the copy beneath the bind writable, so the bind is read-only but not recursively.
        Step::Tmpfs(dirs.path("ro/sub")),
        Step::BindReadOnly(dirs.path("ro"), dirs.path("mnt/ro")),
        Step::BindRecursiveReadOnly(dirs.path("rro"), dirs.path("mnt/rro")),
        Step::NewApiReadOnly(dirs.path("api"), dirs.path("mnt/api")),
    ];
    let (mut child, times) = start_with_mounts(&cgroup, &steps, &["sleep", "1000"]);
    // MS_PRIVATE, bind, tmpfs, bind + remount, bind + mount_setattr, open_tree + mount_setattr
    // + move_mount.
    assert_eq!(times.len(), 10);
    for (source, want) in [
        ("rw", "no"),
        ("ro", "yes"),
        ("rro", "recursive"),
        ("api", "recursive"),
    ] {
        let v = volume(&ct, &cgroup, &dirs.path(source));
        assert_eq!(v["read_only"], want, "{source}: {v}");
        assert_eq!(
            v["target"],
            dirs.path(&format!("mnt/{source}"))
                .to_string_lossy()
                .as_ref()
        );
    }
    // Every call is reported with its caller, arguments, result and duration.
    let id = cgroup.container_id();
    let mounts = ct.matching(|v| v["event"] == "mount" && v["container_id"] == id.as_str());
    assert_eq!(mounts.len(), 10, "{mounts:#?}");
    let calls: Vec<&str> = mounts.iter().map(|m| m["call"].as_str().unwrap()).collect();
    assert_eq!(
        calls,
        [
            "mount",
            "mount",
            "mount",
            "mount",
            "mount",
            "mount",
            "mount_setattr",
            "open_tree",
            "mount_setattr",
            "move_mount"
        ]
    );
    for m in &mounts {
        assert_eq!(m["pid"], child.id());
        assert!(m["result"].as_i64().unwrap() >= 0, "{m}");
    }
    assert_eq!(mounts[4]["flags"], MS_REMOUNT | MS_BIND | MS_RDONLY);
    assert_eq!(mounts[4]["writable"], false);
    assert_eq!(mounts[6]["attr_set"], MOUNT_ATTR_RDONLY);
    // The span of the start that went to mounts is reported with the first exec.
    let exec = ct.wait_event("process_exec", &id, |v| v["pid"] == child.id());
    let mount_seconds = exec["mount_seconds"].as_f64().unwrap();
    let reported: f64 = mounts
        .iter()
        .map(|m| m["duration_seconds"].as_f64().unwrap())
        .sum();
    assert!((mount_seconds - reported).abs() < 1e-6);
    assert!(mount_seconds <= exec["start_seconds"].as_f64().unwrap());
    kill(child.id(), libc::SIGKILL);
    wait_status(&mut child);
    cgroup.remove();
    ct.stop();
}

#[test]
fn a_shared_source_writable_in_one_container_is_a_violation() {
    require_privileged!();
    let _turn = turn();
    let dirs = Dirs::new("shared", &["shared", "a", "b"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let ct = Clawtrace::start_scoped("shared", &["--prometheus-listen", &listen], &[]);
    let mut reader = TestCgroup::new("shared-ro");
    let (mut a, _) = start_with_mounts(
        &reader,
        &[Step::BindReadOnly(dirs.path("shared"), dirs.path("a"))],
        &["sleep", "1000"],
    );
    // The writer binds the source after its payload started: only the mount table's change
    // notification tells.
    let mut writer = TestCgroup::new("shared-rw");
    let late_bind = format!(
        "sleep 0.3; mount --bind '{}' '{}' && exec sleep 1000",
        dirs.path("shared").display(),
        dirs.path("b").display()
    );
    let (mut b, _) = start_with_mounts(&writer, &[], &["sh", "-c", &late_bind]);

    let source = dirs.path("shared").to_string_lossy().to_string();
    let v = ct.wait_event("volume_violation", &writer.container_id(), |v| {
        v["active"] == true
    });
    assert_eq!(v["kind"], "shared_writable");
    assert_eq!(v["source"], source.as_str());
    let mut both: Vec<String> = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    both.sort();
    let mut want = vec![reader.container_id(), writer.container_id()];
    want.sort();
    assert_eq!(both, want);
    assert!(
        ct.matching(|e| e["event"] == "volume_violation"
            && e["container_id"] == reader.container_id().as_str())
            .is_empty(),
        "the read-only side is not the violation"
    );
    let late = ct.wait_event("volume_mount", &writer.container_id(), |_| true);
    assert_eq!(late["source"], source.as_str(), "{late}");
    assert_eq!(late["read_only"], "no", "{late}");
    // Without --trace-mount-syscalls no mount call is traced, and no start reports its share.
    assert!(ct.matching(|e| e["event"] == "mount").is_empty());
    let exec = ct.wait_event("process_exec", &reader.container_id(), |v| {
        v["pid"] == a.id()
    });
    assert_eq!(exec["mount_seconds"], Value::Null, "{exec}");
    let metrics = http_get(&listen, "/metrics").expect("scrape");
    assert_eq!(
        sample(
            &metrics,
            r#"container_volume_violations_total{agent_name="unknown",kind="shared_writable"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"container_volume_violations_current{agent_name="unknown",kind="shared_writable"}"#
        ),
        Some(1.0)
    );

    // The writer goes away: the violation ends.
    kill(b.id(), libc::SIGKILL);
    wait_status(&mut b);
    writer.remove();
    ct.wait_event("volume_violation", &writer.container_id(), |v| {
        v["active"] == false
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = http_get(&listen, "/metrics").expect("scrape");
        let now = sample(
            &metrics,
            r#"container_volume_violations_current{agent_name="unknown",kind="shared_writable"}"#,
        );
        if now == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gauge stuck at {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(a.id(), libc::SIGKILL);
    wait_status(&mut a);
    reader.remove();
    ct.stop();
}

#[test]
fn a_read_only_volume_bound_writable_is_a_violation() {
    require_privileged!();
    let _turn = turn();
    let dirs = Dirs::new("rov", &["models/llama", "m1", "m2"]);
    let models = dirs.path("models").to_string_lossy().to_string();
    let ct = Clawtrace::start_scoped("rov", &["--read-only-volume", &models], &[]);
    let mut ok = TestCgroup::new("rov-ok");
    let (mut a, _) = start_with_mounts(
        &ok,
        &[Step::BindReadOnly(
            dirs.path("models/llama"),
            dirs.path("m1"),
        )],
        &["sleep", "1000"],
    );
    let mut bad = TestCgroup::new("rov-bad");
    let (mut b, _) = start_with_mounts(
        &bad,
        &[Step::Bind(dirs.path("models/llama"), dirs.path("m2"))],
        &["sleep", "1000"],
    );
    let v = ct.wait_event("volume_violation", &bad.container_id(), |v| {
        v["kind"] == "read_only_volume_writable"
    });
    assert_eq!(
        v["source"],
        dirs.path("models/llama").to_string_lossy().as_ref()
    );
    // The read-only one shares the source too: the writable side is also a shared violation.
    ct.wait_event("volume_violation", &bad.container_id(), |v| {
        v["kind"] == "shared_writable"
    });
    for (child, cgroup) in [(&mut a, &mut ok), (&mut b, &mut bad)] {
        kill(child.id(), libc::SIGKILL);
        wait_status(child);
        cgroup.remove();
    }
    ct.wait_event("container_delete", &bad.container_id(), |_| true);
    // The read-only bind of the same source never counts as a violation.
    let ok_id = ok.container_id();
    assert!(ct
        .matching(|e| e["event"] == "volume_violation" && e["container_id"] == ok_id.as_str())
        .is_empty());
    ct.stop();
}

#[test]
fn concurrent_mount_durations_match_what_the_containers_measured() {
    require_privileged!();
    let _turn = turn();
    // Many containers mount at once under one shared tree: each mounts 16 filesystems below it
    // in its own namespace, then binds the whole tree 20 times (each bind copies 17 mounts), all
    // contending for the kernel's mount locks.
    const CONTAINERS: usize = 8;
    const SUBMOUNTS: usize = 16;
    const BINDS: usize = 20;
    let names: Vec<String> = (0..SUBMOUNTS)
        .map(|i| format!("shared/s{i}"))
        .chain((0..CONTAINERS * BINDS).map(|i| format!("t{i}")))
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let dirs = std::sync::Arc::new(Dirs::new("concurrent", &name_refs));
    let listen = format!("127.0.0.1:{}", free_port());
    let ct = Clawtrace::start_scoped(
        "conc",
        &["--prometheus-listen", &listen, "--trace-mount-syscalls"],
        &[],
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONTAINERS));
    let workers: Vec<_> = (0..CONTAINERS)
        .map(|w| {
            let dirs = std::sync::Arc::clone(&dirs);
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut cgroup = TestCgroup::new(&format!("conc{w}"));
                let steps: Vec<Step> = (0..SUBMOUNTS)
                    .map(|i| Step::Tmpfs(dirs.path(&format!("shared/s{i}"))))
                    .chain((0..BINDS).map(|i| {
                        Step::BindTree(
                            dirs.path("shared"),
                            dirs.path(&format!("t{}", w * BINDS + i)),
                        )
                    }))
                    .collect();
                barrier.wait();
                let (mut child, times) = start_with_mounts(&cgroup, &steps, &["true"]);
                wait_status(&mut child);
                cgroup.remove();
                (cgroup.container_id(), child.id(), times)
            })
        })
        .collect();
    let truth: Vec<_> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    for (id, _, _) in &truth {
        ct.wait_event("container_delete", id, |_| true);
    }
    let calls: usize = truth.iter().map(|(_, _, t)| t.len()).sum();
    assert_eq!(calls, CONTAINERS * (1 + SUBMOUNTS + BINDS));
    // Every call the containers timed is reported, each with a duration close to theirs.
    let mut reported_total = 0.0;
    for (id, pid, times) in &truth {
        let reported: Vec<f64> = ct
            .matching(|v| {
                v["event"] == "mount" && v["container_id"] == id.as_str() && v["pid"] == *pid
            })
            .iter()
            .map(|m| m["duration_seconds"].as_f64().unwrap())
            .collect();
        assert_eq!(reported.len(), times.len(), "{id}");
        for (r, t) in reported.iter().zip(times) {
            assert!(
                *r <= *t as f64 / 1e9,
                "a call reported longer than measured around it"
            );
        }
        reported_total += reported.iter().sum::<f64>();
    }
    let measured = truth.iter().flat_map(|(_, _, t)| t.iter()).sum::<u64>() as f64 / 1e9;
    let metrics = http_get(&listen, "/metrics").expect("scrape");
    let count = sample(
        &metrics,
        r#"container_mount_duration_seconds_count{agent_name="unknown",writable="true"}"#,
    )
    .expect("mount histogram count");
    let sum = sample(
        &metrics,
        r#"container_mount_duration_seconds_sum{agent_name="unknown",writable="true"}"#,
    )
    .expect("mount histogram sum");
    assert_eq!(count as usize, calls, "{metrics}");
    assert!(
        (sum - reported_total).abs() < 1e-6,
        "the histogram holds exactly the reported calls"
    );
    let error = (sum - measured).abs() / measured;
    eprintln!(
        "mount calls: {calls}, measured {measured:.6} s, histogram {sum:.6} s, off by {:.1}%",
        error * 100.0
    );
    assert!(
        error < 0.10,
        "histogram sum {sum} s vs measured {measured} s"
    );
    ct.stop();
}
