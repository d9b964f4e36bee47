//! `clawtrace top` in a real terminal: tmux runs it in a detached session of 200 by 50, the
//! test makes containers of two agents (real cgroups, real processes, a real SIGKILL from this
//! process), reads the screen with `capture-pane` and types keys with `send-keys`; then it quits
//! with `q`, or is stopped with SIGTERM, and the terminal must be as it was (the alternate
//! screen left, the log written after).

mod support;

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use support::*;

/// A tmux server of the test's own (its own socket), with one session running `clawtrace top`;
/// killed, with everything in it, on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `clawtrace top ARGS` in a 200×50 session; the pane stays after clawtrace exits, so
    /// that its exit status and screen can be read (`remain-on-exit`, set by the server's
    /// configuration before the session starts).
    fn start(tag: &str, args: &[&str]) -> Tmux {
        let tmux = Tmux {
            socket: format!("clawtrace-top-{}-{tag}", std::process::id()),
        };
        std::fs::write(tmux.config(), "set-option -g remain-on-exit on\n").expect("tmux config");
        let config = tmux.config();
        // A shell waits for clawtrace and writes its exit status to a file: tmux does not
        // always tell a dead pane's status.
        let _ = std::fs::remove_file(tmux.status_file());
        let script = format!("\"$0\" \"$@\"; echo $? > {}", tmux.status_file().display());
        let mut session = vec!["-f", config.to_str().expect("UTF-8 path")];
        session.extend(["new-session", "-d", "-s", "top", "-x", "200", "-y", "50"]);
        session.extend(["sh", "-c", &script, env!("CARGO_BIN_EXE_clawtrace"), "top"]);
        session.extend_from_slice(args);
        tmux.ok(&session);
        tmux
    }

    fn config(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}.conf", self.socket))
    }

    fn status_file(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}.status", self.socket))
    }

    /// clawtrace's pid: the child of the pane's shell.
    fn clawtrace_pid(&self) -> u32 {
        let shell = self.display("#{pane_pid}");
        std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .expect("the shell's children")
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .expect("clawtrace under the shell")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `#{FORMAT}` of the pane.
    fn display(&self, format: &str) -> String {
        self.ok(&["display-message", "-p", "-t", "top", format])
            .trim()
            .to_string()
    }

    fn screen(&self) -> String {
        self.ok(&["capture-pane", "-p", "-t", "top"])
    }

    /// Keys as tmux names them (`Enter`, `Escape`) or literal text.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.ok(&args);
    }

    /// Waits until the screen satisfies `cond`; fails with the screen after `timeout`.
    fn wait_screen(&self, what: &str, timeout: Duration, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the view is up and tracing (its status line shows the held `tracing:` log
    /// line), in the alternate screen.
    fn wait_tracing(&self) {
        self.wait_screen("the view, tracing", SCREEN_TIMEOUT, |s| {
            s.contains("clawtrace top") && s.contains("tracing:")
        });
        assert_eq!(self.display("#{alternate_on}"), "1");
    }

    /// Waits until clawtrace has exited with status 0 and the alternate screen is left; returns
    /// the screen then.
    fn wait_clean_exit(&self) -> String {
        assert_eq!(
            self.wait_exit(Duration::from_secs(10)),
            0,
            "{}",
            self.screen()
        );
        assert_eq!(self.display("#{alternate_on}"), "0");
        self.screen()
    }

    /// Waits until clawtrace has exited; returns its exit status.
    fn wait_exit(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let status = std::fs::read_to_string(self.status_file()).unwrap_or_default();
            if status.ends_with('\n') {
                return status.trim().parse().expect("an exit status");
            }
            assert!(
                Instant::now() < deadline,
                "clawtrace did not exit; the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(self.config());
        let _ = std::fs::remove_file(self.status_file());
    }
}

/// The pattern of this test's containers: `clawtrace-test-PID-top-AGENT-N`, agent AGENT.
fn pattern() -> String {
    format!(
        "^/{CGROUP_PREFIX}(?P<id>{}-top-(?P<agent>[a-z]+)-[0-9]+)$",
        std::process::id()
    )
}

/// The fields of `agent`'s row of the agents' table, if it is on the screen.
fn row(screen: &str, agent: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        let fields: Vec<String> = line
            .trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .map(str::to_string)
            .collect();
        (fields.first().map(String::as_str) == Some(agent)).then_some(fields)
    })
}

/// LIVE, CREATED, DELETED of `agent`'s row.
fn counts(screen: &str, agent: &str) -> Option<[u64; 3]> {
    let fields = row(screen, agent)?;
    let n = |i: usize| fields.get(i)?.parse().ok();
    Some([n(1)?, n(2)?, n(3)?])
}

/// The screen's column numbers under the header `name` (the table's second header line).
fn column(screen: &str, agent: &str, name: &str) -> Option<String> {
    let header = screen.lines().find(|l| l.contains("AGENT"))?;
    let names: Vec<&str> = header
        .trim_matches(|c: char| c == '│' || c.is_whitespace())
        .split_whitespace()
        .collect();
    let at = names
        .iter()
        .position(|n| n.trim_end_matches(['▼', '▲']) == name)?;
    row(screen, agent)?.get(at).cloned()
}

const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn top_shows_each_agent_its_verdicts_takes_keys_and_restores_the_terminal() {
    require_privileged!();
    let pattern = pattern();
    let tmux = Tmux::start(
        "keys",
        &[
            "--container-cgroup-pattern",
            &pattern,
            "--agent-sources",
            "pattern",
        ],
    );
    // The log is held while the view is up: its latest line is the status line.
    tmux.wait_tracing();

    // alpha: one container killed by this process, one that exits by itself.
    let mut killed = TestCgroup::new("top-alpha");
    let mut child = killed.spawn(Command::new("sleep").arg("1000"));
    let victim = child.id();
    let mut clean = TestCgroup::new("top-alpha");
    let mut quick = clean.spawn(&mut sh("exit 0"));
    // beta: one that crashes (a segfault), one that stays alive.
    let mut crashed = TestCgroup::new("top-beta");
    let mut crash = crashed.spawn(&mut python(
        "import ctypes, resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); \
         ctypes.string_at(0)",
    ));
    let alive = TestCgroup::new("top-beta");
    let mut stays = alive.spawn(Command::new("sleep").arg("1000"));

    assert!(libc::WIFEXITED(wait_status(&mut quick)));
    let status = wait_status(&mut crash);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV);
    // Seen exec'd, so that the kill comes after the container's start.
    wait_until("sleep's exec", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{victim}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    kill(victim, libc::SIGKILL);
    wait_status(&mut child);
    killed.remove();
    clean.remove();
    crashed.remove();

    let screen = tmux.wait_screen("both agents' counts", SCREEN_TIMEOUT, |s| {
        counts(s, "alpha") == Some([0, 2, 2]) && counts(s, "beta") == Some([1, 2, 1])
    });
    assert_eq!(
        column(&screen, "alpha", "killed").as_deref(),
        Some("1"),
        "{screen}"
    );
    assert_eq!(
        column(&screen, "alpha", "ok").as_deref(),
        Some("1"),
        "{screen}"
    );
    assert_eq!(
        column(&screen, "beta", "CRASH").as_deref(),
        Some("1"),
        "{screen}"
    );
    // The kill's verdict line: the container, the process killed, and this process as sender.
    let short = clawtrace::sinks::terminal::short_id(&killed.container_id());
    let sender = format!("[{}]", std::process::id());
    let screen = tmux.wait_screen("the kill's verdict", SCREEN_TIMEOUT, |s| {
        s.lines().any(|l| {
            l.contains(&short)
                && l.contains(&format!(
                    "killed from outside the container: SIGKILL to sleep[{victim}] from "
                ))
                && l.contains(&sender)
        })
    });
    assert!(screen.contains("crashed: python3["), "{screen}");

    // Filter: only alpha's row (and its verdicts) stay.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "alph"]);
    tmux.wait_screen("the filter typed", SCREEN_TIMEOUT, |s| {
        s.contains("filter agents: alph")
    });
    tmux.keys(&["Enter"]);
    // (A frame is read whole: tmux may show one half drawn.)
    let screen = tmux.wait_screen("beta filtered out", SCREEN_TIMEOUT, |s| {
        row(s, "beta").is_none()
            && !s.contains("crashed: python3[")
            && s.contains("agents holding \"alph\"")
            && counts(s, "alpha").is_some()
    });
    assert_eq!(counts(&screen, "alpha"), Some([0, 2, 2]), "{screen}");
    // Esc: every agent again. `s`: sorted by the next column, CREATED.
    tmux.keys(&["Escape"]);
    tmux.wait_screen("beta back", SCREEN_TIMEOUT, |s| row(s, "beta").is_some());
    tmux.keys(&["s"]);
    tmux.wait_screen("sorted by created", SCREEN_TIMEOUT, |s| {
        s.contains("sorted by created") && s.contains("CREATED▼")
    });
    tmux.keys(&["r"]);
    tmux.wait_screen("the order reversed", SCREEN_TIMEOUT, |s| {
        s.contains("sorted by created, reversed") && s.contains("CREATED▲")
    });

    // `q`: exit 0, the alternate screen left, and the held log written after.
    tmux.keys(&["q"]);
    let screen = tmux.wait_clean_exit();
    assert!(!screen.contains("clawtrace top ·"), "{screen}");
    assert!(screen.contains("tracing:"), "{screen}");
    assert!(screen.contains("stopped:"), "{screen}");
    kill(stays.id(), libc::SIGKILL);
    wait_status(&mut stays);
}

#[test]
fn sigterm_stops_top_and_restores_the_terminal() {
    require_privileged!();
    let pattern = pattern();
    let tmux = Tmux::start("term", &["--container-cgroup-pattern", &pattern]);
    tmux.wait_tracing();
    kill(tmux.clawtrace_pid(), libc::SIGTERM);
    let screen = tmux.wait_clean_exit();
    assert!(screen.contains("stopped:"), "{screen}");
}
