//! Hostile input from the host and from the command line: cgroup names and executable names made
//! of quotes, controls, bidirectional overrides, emoji and invalid UTF-8; malformed and extreme
//! flags. clawtrace must report odd names exactly (JSON) or safely (text, one line per event),
//! keep running, and refuse bad flags with one line, never a crash.

mod support;

use std::{
    ffi::{OsStr, OsString},
    io::Read,
    os::unix::ffi::{OsStrExt as _, OsStringExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clawtrace::sinks::terminal::short_id;
use serde_json::Value;
use support::*;

fn clawtrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clawtrace"))
}

/// What the kernel keeps of an executable's base name as `comm` (TASK_COMM_LEN - 1 bytes).
fn comm_of(file_name: &[u8]) -> String {
    String::from_utf8_lossy(&file_name[..file_name.len().min(15)]).into_owned()
}

/// A scratch folder under /tmp, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("clawtrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cgroup with an arbitrary (non-UTF-8) name; TestCgroup names are strings. Removed on drop.
struct RawCgroup {
    dir: PathBuf,
}

impl RawCgroup {
    fn new(name: &[u8]) -> RawCgroup {
        let dir = cgroup2_root().join(OsStr::from_bytes(name));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        RawCgroup { dir }
    }
}

impl Drop for RawCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `clawtrace run --output text` for the cgroups of one scope, its stdout kept raw.
struct TextClawtrace {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl TextClawtrace {
    fn start(scope: &str) -> TextClawtrace {
        let pattern = format!("^/{CGROUP_PREFIX}(?P<id>[0-9]+-{scope}[^/]*)$");
        let mut child = clawtrace()
            // -v: the exec and exit lines, with the odd file name, are the point.
            .args([
                "run",
                "--output",
                "text",
                "-v",
                "--container-cgroup-pattern",
                &pattern,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clawtrace");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&stdout);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let stderr = await_tracing(&mut child);
        TextClawtrace {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until stdout holds `n` newline-terminated lines (or 10 s).
    fn wait_lines(&self, n: usize) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while self
            .stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            < n
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it with SIGINT (it must exit 0 within 5 s) and returns everything it printed.
    fn stop(mut self) -> Vec<u8> {
        interrupt_and_wait(&mut self.child, &self.stderr);
        std::thread::sleep(Duration::from_millis(50));
        let out = self.stdout.lock().unwrap().clone();
        out
    }
}

impl Drop for TextClawtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kernel refuses a cgroup name with a newline (so none can split a line of output); every
/// other byte but '/' and NUL is allowed, and clawtrace reports such names exactly in JSON, one
/// line per event in text, and keeps running. A process that execs through a file name made of
/// a newline and a forged event line is reported the same way.
#[test]
fn odd_cgroup_and_executable_names() {
    require_privileged!();
    const SCOPE: &str = "hostile";
    let json = Clawtrace::start_scoped(SCOPE, &[], &[]);
    let text = TextClawtrace::start(SCOPE);

    let newline = cgroup2_root().join(format!(
        "{CGROUP_PREFIX}{}-{SCOPE}-a\nb",
        std::process::id()
    ));
    let err = std::fs::create_dir(&newline).expect_err("the kernel made a cgroup named with \\n");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");

    // Quote, backslash, CR, tab, an ANSI colour sequence, a right-to-left override that would
    // show the rest reversed, an emoji, a zero-width joiner and a combining accent.
    let odd_tag =
        format!("{SCOPE}-\"q'\\ \r\t\x1b[31mred\x1b[0m \u{202e}txt.exe\u{1f600}\u{200d}e\u{301}");
    let mut odd = TestCgroup::new(&odd_tag);

    // Executed through a link named with a newline and what would pass for an event line.
    let scratch = Scratch::new("hostile");
    let link_name: &[u8] = b"x\ncontainer 000000000000 exited 0";
    let link = scratch.0.join(OsStr::from_bytes(link_name));
    std::os::unix::fs::symlink("/bin/true", &link).expect("symlink");
    let mut child = odd.spawn(&mut Command::new(&link));
    assert!(child.wait().expect("wait").success());

    let id = odd.container_id();
    let created = json.wait_event("container_create", &id, |_| true);
    assert_eq!(
        created["cgroup_path"],
        format!("/{}", odd.name),
        "{created}"
    );
    let exec = json.wait_event("process_exec", &id, |_| true);
    assert_eq!(exec["filename"], *link.to_string_lossy(), "{exec}");
    assert_eq!(exec["comm"], comm_of(link_name), "{exec}");
    let exit = json.wait_event("process_exit", &id, |_| true);
    assert_eq!(exit["exit_code"], 0, "{exit}");

    // A name that is not UTF-8 at all: reported with the replacement character, as the path is
    // text in JSON, and the container is still followed.
    let mut raw_name = format!("{CGROUP_PREFIX}{}-{SCOPE}-raw-", std::process::id()).into_bytes();
    raw_name.extend_from_slice(b"\xff\xfe\xc3(\xed\xa0\x80");
    let raw = RawCgroup::new(&raw_name);
    let lossy = String::from_utf8_lossy(&raw_name).into_owned();
    let raw_id = lossy[CGROUP_PREFIX.len()..].to_string();
    let raw_created = json.wait_event("container_create", &raw_id, |_| true);
    assert_eq!(
        raw_created["cgroup_path"],
        format!("/{lossy}"),
        "{raw_created}"
    );
    drop(raw);
    json.wait_event("container_delete", &raw_id, |_| true);

    odd.remove();
    json.wait_event("container_delete", &id, |_| true);
    let stderr = json.stop();
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");

    // Text: created, exec, exit, deleted for the odd cgroup, created and deleted for the raw one.
    text.wait_lines(6);
    let out = text.stop();
    let out = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = out.lines().collect();
    // Each line is one event of one of the two containers, with no raw control character: a
    // newline would let a name forge an event line, an escape sequence would drive the terminal.
    let ours = [id.as_str(), raw_id.as_str()].map(|id| format!("container {} ", short_id(id)));
    let bad: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| {
            !ours.iter().any(|prefix| line.starts_with(prefix.as_str()))
                || line.chars().any(char::is_control)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "text lines that are not one safe event each: {bad:#?}\nall output: {out:?}"
    );
    assert_eq!(lines.len(), 6, "{out:?}");
}

/// Malformed values, unknown flags and subcommands, bytes that are not text: exit status 2 and
/// exactly one line on stderr, nothing on stdout.
#[test]
fn malformed_flags_fail_with_one_line() {
    let garbage = OsString::from_vec(b"\xff\xfe\x01\x7f\x1b[2J\x80garbage\xc3".to_vec());
    let cases: Vec<Vec<OsString>> = [
        &["run", "--ring-buffer-size", "12"][..],
        &["run", "--ring-buffer-size", "4294967296"],
        &["run", "--ring-buffer-size", "-4096"],
        &["run", "--linger-after", "-1s"],
        &["run", "--linger-after=-1s"],
        &["run", "--linger-after", "99999999999999999999999999s"],
        &["run", "--linger-after", ""],
        &["run", "--otlp-interval", "1 fortnight"],
        &["run", "--prometheus-listen", "localhost:99999"],
        &["run", "--label-mode", "md5"],
        &["run", "--agent-sources", "docker,ftp"],
        &["run", "--label-max-values", "-1"],
        &["run", "--output"],
        &["labels", "lookup"],
        &["frobnicate"],
        &["run", "extra"],
    ]
    .iter()
    .map(|args| args.iter().map(OsString::from).collect())
    .chain([
        vec![garbage.clone()],
        vec!["run".into(), garbage.clone()],
        vec!["run".into(), "--output".into(), garbage.clone()],
        vec!["run".into(), "--container-cgroup-pattern".into(), garbage],
    ])
    .collect();
    for args in cases {
        let out = clawtrace().args(&args).output().expect("run clawtrace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(stderr.starts_with("clawtrace: "), "{args:?}: {stderr:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {:?}", out.stdout);
    }
}

/// Values that parse but that `run` must refuse before loading anything: one line, status 1.
#[test]
fn bad_values_found_at_start_fail_with_one_line() {
    require_privileged!();
    let scratch = Scratch::new("hostile-values");
    let not_a_dir = scratch.0.join("file");
    std::fs::write(&not_a_dir, "").expect("write");
    let audit_in_file = not_a_dir.join("audit.log");
    let cases: [(&[&str], &str); 6] = [
        (
            &["--container-cgroup-pattern", "("],
            "invalid --container-cgroup-pattern",
        ),
        (
            &["--container-cgroup-pattern", "a{99999999}"],
            "invalid --container-cgroup-pattern",
        ),
        (
            &["--agent-env-var", "A=B"],
            "invalid environment variable name",
        ),
        (
            &["--agent-env-var", ""],
            "invalid environment variable name",
        ),
        (
            &["--agent-env-var", &"V".repeat(4096)],
            "invalid environment variable name",
        ),
        (
            &["--audit-log", audit_in_file.to_str().expect("UTF-8 path")],
            "--audit-log",
        ),
    ];
    for (args, says) in cases {
        let out = clawtrace()
            .arg("run")
            .args(args)
            .output()
            .expect("run clawtrace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(40).collect()).collect();
        assert_eq!(out.status.code(), Some(1), "{shown:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{shown:?}: {stderr:?}");
        assert!(
            stderr.starts_with("clawtrace: ") && stderr.contains(says),
            "{shown:?}: {stderr:?}"
        );
    }
}

/// Extreme values that are accepted: the smallest ring buffer, zero caps, zero intervals,
/// an OTLP collector that is not there. clawtrace runs, follows a container, and stops cleanly.
#[test]
fn extreme_accepted_values_do_not_crash() {
    require_privileged!();
    const SCOPE: &str = "extreme";
    let scratch = Scratch::new("hostile-extreme");
    let audit = scratch.0.join("audit.log");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let ct = Clawtrace::start_scoped(
        SCOPE,
        &[
            "--ring-buffer-size",
            "4096",
            "--linger-after",
            "0s",
            "--label-max-values",
            "0",
            "--label-ttl",
            "0s",
            "--otlp",
            "--otlp-interval",
            "1ms",
            "--otlp-max-queued-spans",
            "0",
            "--audit-log",
            audit.to_str().expect("UTF-8 path"),
            "--audit-log-max-bytes",
            "0",
            "--audit-log-keep",
            "0",
            "--agent-env-var",
            &"V".repeat(62),
            "--prometheus-listen",
            "127.0.0.1:0",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", closed.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
        ],
    );
    let mut cg = TestCgroup::new(&format!("{SCOPE}-a"));
    // The container's only process: a shell that exits 3 without starting anything.
    let mut child = cg.spawn(Command::new("/bin/sh").args(["-c", "exit 3"]));
    let pid = child.id();
    let status = wait_status(&mut child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3,
        "{status}"
    );
    let id = cg.container_id();
    let exit = ct.wait_event("process_exit", &id, |v| v["pid"] == pid);
    assert_status(&exit, status);
    // Lingering at once: the init is gone and the cgroup is still there.
    ct.wait_event("container_lingering", &id, |_| true);
    cg.remove();
    ct.wait_event("container_delete", &id, |_| true);
    let stderr = ct.stop();
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
    // The one container this clawtrace follows ended: its deletion is the audit log's last
    // record, and the only one left (`--audit-log-max-bytes 0 --audit-log-keep 0` restart the
    // file before each record but the first, so each record replaced the one before).
    let log = std::fs::read_to_string(&audit)
        .unwrap_or_else(|e| panic!("audit log {}: {e}", audit.display()));
    let records: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("audit line {line:?}: {e}"))
        })
        .collect();
    assert_eq!(records.len(), 1, "audit log:\n{log}");
    let record = &records[0];
    assert_eq!(record["event"], "container_delete", "{record}");
    assert_eq!(record["container_id"], id.as_str(), "{record}");
    // Its init was the shell that exited 3.
    assert_eq!(record["verdict"], "failed", "{record}");
    assert_eq!(record["exit_code"], 3, "{record}");
    assert_eq!(record["verdict_process"]["pid"], pid, "{record}");
    assert_eq!(exit["exit_code"], 3, "{exit}");
    // Nothing was kept beside it.
    let names: Vec<_> = std::fs::read_dir(&scratch.0)
        .expect("scratch folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [OsString::from("audit.log")], "{names:?}");
}

/// Durations far beyond any real use are taken as "never", not cut down: 2^64 ns as
/// `--linger-after` must not wrap to 0 (a container would be reported lingering the moment its
/// init exits), and centuries as the OTLP interval or the label TTL must not overflow a clock.
#[test]
fn huge_durations_mean_never() {
    require_privileged!();
    const SCOPE: &str = "forever";
    let ct = Clawtrace::start_scoped(
        SCOPE,
        &[
            "--linger-after",
            "18446744073s 709551616ns",
            "--label-ttl",
            "500years",
            "--otlp-interval",
            "500years",
            "--prometheus-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut cg = TestCgroup::new(&format!("{SCOPE}-a"));
    let mut child = cg.spawn(Command::new("/bin/sh").args(["-c", "exit 0"]));
    let _ = child.wait();
    let id = cg.container_id();
    ct.wait_event("process_exit", &id, |_| true);
    // The model is ticked every second: two ticks.
    std::thread::sleep(Duration::from_millis(2500));
    let lingering = ct.matching(|v| v["event"] == "container_lingering" && v["container_id"] == id);
    assert!(
        lingering.is_empty(),
        "reported lingering at once: {lingering:?}"
    );
    cg.remove();
    ct.wait_event("container_delete", &id, |v| v["was_lingering"] == false);
    let stderr = ct.stop();
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
}
