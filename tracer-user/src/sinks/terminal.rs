//! The terminal sinks: one readable line per event, or one JSON object per line.

use std::io::Write;

use serde::Serialize;

use crate::{
    model::attribution::{ExitCause, SenderKind},
    model::{DeviceDecision, Event, ProcessExit, Sender, Timed},
    sys::WallClock,
};

/// How `clawtrace run` writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How text lines are written: which events, and whether in colour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextStyle {
    /// Events of [`text_level`] up to this are printed.
    pub verbosity: u8,
    /// ANSI colour, for a terminal.
    pub colour: bool,
}

impl TextStyle {
    /// Colour when `out` is a terminal and `NO_COLOR` is not set (<https://no-color.org>).
    pub fn for_terminal(verbosity: u8, out: &impl std::io::IsTerminal) -> TextStyle {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        TextStyle {
            verbosity,
            colour: out.is_terminal() && !no_color,
        }
    }
}

/// The verbosity from which an event is a text line: 0 for what an operator acts on (a
/// container created, each kill and who sent it, OOM marks, violations, GPU sharing,
/// lingering, the verdict at the end), 1 for every process exec and exit, 2 for mount calls,
/// volumes and device accesses.
pub fn text_level(event: &Event) -> u8 {
    match event {
        Event::ContainerCreate(_)
        | Event::ContainerDelete(_)
        | Event::Signal(_)
        | Event::OomMark(_)
        | Event::VolumeViolation(_)
        | Event::GpuSharing(_)
        | Event::ContainerLingering(_) => 0,
        Event::ProcessExec(_) | Event::ProcessExit(_) => 1,
        Event::Mount(_) | Event::VolumeMount(_) | Event::DeviceAccess(_) => 2,
    }
}

/// The colour of an event's line: green for a start or a clean end, yellow for a failure or a
/// warning, red for a kill, a crash or a violation.
fn colour_of(event: &Event) -> anstyle::Style {
    use anstyle::{AnsiColor, Style};
    let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    let of_cause = |cause: Option<ExitCause>| match cause {
        Some(ExitCause::Exited) => fg(AnsiColor::Green),
        Some(ExitCause::Failed) | None => fg(AnsiColor::Yellow),
        Some(_) => fg(AnsiColor::Red).bold(),
    };
    match event {
        Event::ContainerCreate(_) => fg(AnsiColor::Green),
        Event::ContainerDelete(d) => of_cause(d.verdict),
        Event::ProcessExit(e) => of_cause(Some(e.cause)),
        Event::Signal(_) => fg(AnsiColor::Magenta),
        Event::OomMark(_) | Event::VolumeViolation(_) => fg(AnsiColor::Red).bold(),
        Event::GpuSharing(_) | Event::ContainerLingering(_) => fg(AnsiColor::Yellow),
        Event::ProcessExec(_)
        | Event::Mount(_)
        | Event::VolumeMount(_)
        | Event::DeviceAccess(_) => Style::new(),
    }
}

/// RFC 3339 UTC time with nanoseconds.
pub fn rfc3339(unix_ns: i128) -> String {
    with_rfc3339(unix_ns, str::to_string)
}

/// Longest RFC 3339 text formatted on the stack (a year beyond 9999 takes more).
const RFC3339_MAX: usize = 40;

/// Calls `f` with `unix_ns` as RFC 3339 text, formatted on the stack; a time that cannot be
/// formatted (or does not fit) is given as the number itself.
fn with_rfc3339<R>(unix_ns: i128, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; RFC3339_MAX];
    let formatted = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|time| {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            time.format_into(&mut cursor, &time::format_description::well_known::Rfc3339)
                .ok()?;
            // Where the writes ended (format_into's own count leaves out the fraction's digits).
            usize::try_from(cursor.position()).ok()
        });
    match formatted.and_then(|len| std::str::from_utf8(&buf[..len]).ok()) {
        Some(text) => f(text),
        None => f(&unix_ns.to_string()),
    }
}

/// An event's time as RFC 3339 text, formatted on the stack while serializing.
struct Rfc3339(i128);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_rfc3339(self.0, |text| serializer.serialize_str(text))
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(flatten)]
    event: &'a Event,
    time: Rfc3339,
}

fn json_line<'a>(event: &'a Timed, clock: &WallClock) -> JsonLine<'a> {
    JsonLine {
        event: &event.event,
        time: Rfc3339(clock.unix_ns(event.ts_ns)),
    }
}

/// The JSON object for one event, without a newline.
pub fn json(event: &Timed, clock: &WallClock) -> String {
    // Serializing these plain structs cannot fail; keep the stream going if it ever did.
    serde_json::to_string(&json_line(event, clock))
        .unwrap_or_else(|e| format!(r#"{{"event":"error","error":"{e}"}}"#))
}

/// Docker-style short form of a container id.
pub fn short_id(id: &str) -> String {
    if id.chars().count() > 12 {
        let head: String = id.chars().take(12).collect();
        format!("{head}…")
    } else {
        id.to_string()
    }
}

/// `runc[4121] ← containerd-shim-runc-v2[4100] ← containerd[900]`: the sender, then who
/// started it.
fn who(sender: &Sender) -> String {
    kill_chain(
        std::iter::once((sender.comm.as_str(), sender.pid.to_string())).chain(
            sender
                .ancestry
                .iter()
                .map(|a| (a.comm.as_str(), a.pid.to_string())),
        ),
    )
}

/// A kill chain as every text says it: `comm[pid]` of the sender, then of each process that
/// started the one before, joined by ` ← `.
pub fn kill_chain<'a>(processes: impl IntoIterator<Item = (&'a str, String)>) -> String {
    processes
        .into_iter()
        .map(|(comm, pid)| format!("{comm}[{pid}]"))
        .collect::<Vec<_>>()
        .join(" ← ")
}

fn kind_phrase(kind: SenderKind) -> &'static str {
    match kind {
        SenderKind::Outside => "outside the container",
        SenderKind::Peer => "same container",
        SenderKind::Own => "itself",
        SenderKind::Kernel => "the kernel",
    }
}

fn cause_phrase(cause: ExitCause) -> &'static str {
    match cause {
        ExitCause::Exited => "exited",
        ExitCause::Failed => "failed",
        ExitCause::OrchestratorKill => "outside the container",
        ExitCause::PeerKill => "peer in the same container",
        ExitCause::SelfSignal => "sent to itself",
        ExitCause::Crash => "crash",
        ExitCause::OomKill => "OOM killer",
        ExitCause::PolicyKill => "policy kill",
        ExitCause::InitExited => "its pid namespace's init exited",
        ExitCause::BrokenPipe => "broken pipe",
        ExitCause::Unknown => "cause unknown",
    }
}

/// `exited 137: SIGKILL from runc[4121] (outside the container, after SIGTERM 10.0 s earlier)`
fn exit_text(e: &ProcessExit) -> String {
    let Some(signal) = &e.signal else {
        return match e.cause {
            ExitCause::Failed => format!("exited {} (failed)", e.exit_code),
            _ => format!("exited {}", e.exit_code),
        };
    };
    let mut notes = Vec::new();
    match &e.sender {
        Some(sender) if e.cause != ExitCause::OomKill => {
            notes.push(sender.class.as_str().to_string())
        }
        _ => {}
    }
    notes.push(cause_phrase(e.cause).to_string());
    if let Some(policy) = e.policy {
        notes.push(match (&e.syscall, e.limit) {
            (Some(call), _) => format!(
                "{policy}: {} ({})",
                call.name.unwrap_or("unknown system call"),
                call.number
            ),
            (None, Some(limit)) => format!("{policy}: {limit}"),
            (None, None) => policy.to_string(),
        });
    }
    if let Some(init) = &e.init {
        notes.push(format!("init {}[{}]", init.comm, init.pid));
    }
    if e.core_dumped {
        notes.push("core dumped".to_string());
    }
    if let (Some(from), Some(grace)) = (&e.escalated_from, e.grace_seconds) {
        notes.push(format!("after {from} {grace:.1} s earlier"));
    }
    let from = match &e.sender {
        Some(sender) if e.cause != ExitCause::OomKill => format!(" from {}", who(sender)),
        _ => String::new(),
    };
    format!(
        "exited {}: {signal}{from} ({})",
        e.exit_code,
        notes.join(", ")
    )
}

/// The readable line for one event. Everything a container controls (cgroup names, command
/// names, file names) can hold control characters; they are escaped over the whole line so a
/// container cannot forge a line or drive the terminal (the fixed parts of a line hold none).
pub fn text(event: &Timed) -> String {
    escape_controls(event_text(event))
}

fn escape_controls(line: String) -> String {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !line.chars().any(unsafe_char) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn event_text(event: &Timed) -> String {
    match &event.event {
        Event::ContainerCreate(e) => format!(
            "container {} created ({}, cgroup {}{})",
            short_id(&e.container.container_id),
            e.container.runtime,
            e.container.cgroup_path,
            if e.preexisting { ", already running" } else { "" }
        ),
        Event::ContainerDelete(e) => {
            let mut outcome = match (e.exit_code, e.cause) {
                (Some(code), Some(cause)) => format!(", init exited {code}, {}", cause.as_str()),
                _ => String::new(),
            };
            if let (Some(verdict), Some(p)) = (e.verdict, &e.verdict_process) {
                outcome.push_str(&format!(
                    "; verdict {} ({}[{}])",
                    verdict.as_str(),
                    p.comm,
                    p.pid
                ));
            }
            format!(
                "container {} deleted after {:.1} s{outcome}",
                short_id(&e.container.container_id),
                e.lifetime_seconds
            )
        }
        Event::ProcessExec(e) => format!(
            "container {} exec {}[{}] {}{}",
            short_id(&e.container.container_id),
            e.comm,
            e.pid,
            e.filename,
            if e.is_container_init { " (init)" } else { "" }
        ),
        Event::Signal(e) => format!(
            "container {} {} to {}[{}] from {} ({}, {})",
            short_id(&e.container.container_id),
            e.signal,
            e.target_comm,
            e.target_pid,
            who(&e.sender),
            e.sender.class.as_str(),
            kind_phrase(e.sender_kind)
        ),
        Event::OomMark(e) => format!(
            "container {} OOM killer chose pid {} ({} KiB resident)",
            short_id(&e.container.container_id),
            e.pid,
            e.anon_rss_kb
        ),
        Event::ProcessExit(e) if e.is_container_init => format!(
            "container {} {}",
            short_id(&e.container.container_id),
            exit_text(e)
        ),
        Event::ProcessExit(e) => format!(
            "container {} process {}[{}] {}",
            short_id(&e.container.container_id),
            e.comm,
            e.pid,
            exit_text(e)
        ),
        Event::Mount(m) => {
            let result = if m.result < 0 {
                format!("failed: {}", std::io::Error::from_raw_os_error((-m.result) as i32))
            } else {
                "ok".to_string()
            };
            format!(
                "container {} {} {} -> {} ({}) {:.3} ms",
                short_id(&m.container.container_id),
                m.call,
                if m.source.is_empty() { "-" } else { &m.source },
                if m.target.is_empty() { "-" } else { &m.target },
                result,
                m.duration_seconds * 1e3
            )
        }
        Event::VolumeMount(v) => format!(
            "container {} volume {} at {}: read-only {}",
            short_id(&v.container.container_id),
            v.bind.source,
            v.bind.target,
            v.bind.read_only.as_str()
        ),
        Event::VolumeViolation(v) => format!(
            "container {} volume violation {}: {} {} (bound by {})",
            short_id(&v.container.container_id),
            v.kind.as_str(),
            v.source,
            if v.active { "is writable here" } else { "no longer" },
            v.containers.iter().map(|c| short_id(c)).collect::<Vec<_>>().join(", ")
        ),
        Event::DeviceAccess(d) => format!(
            "container {} {} {} ({}){}",
            short_id(&d.container.container_id),
            match (&d.comm, d.pid) {
                (Some(comm), Some(pid)) => format!("{comm}[{pid}]"),
                _ => "a process".to_string(),
            },
            d.device,
            d.access,
            match d.decision {
                DeviceDecision::Allowed => "",
                DeviceDecision::Denied => ": denied",
                DeviceDecision::Undecided => ": decision not told by this kernel",
            }
        ),
        Event::GpuSharing(g) => format!(
            "container {} shares GPU {} with {}",
            short_id(&g.container.container_id),
            g.device,
            g.containers
                .iter()
                .filter(|c| **c != g.container.container_id)
                .map(|c| short_id(c))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::ContainerLingering(e) => format!(
            "container {} lingering: init exited {:.1} s ago, cgroup still present, {} process(es) left",
            short_id(&e.container.container_id),
            e.init_exited_seconds_ago,
            e.processes_left
        ),
    }
}

/// Writes events to a stream in the chosen format.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    style: TextStyle,
    clock: WallClock,
    /// The JSON line being written, reused: serde_json writes in many small pieces, which a
    /// vector takes for less than a buffered stream does, so the stream gets one write a line.
    line: Vec<u8>,
}

impl<W: Write> Printer<W> {
    /// Text lines at the default verbosity, without colour (see [`Printer::style`]).
    pub fn new(out: W, format: Format, clock: WallClock) -> Self {
        Printer {
            out,
            format,
            style: TextStyle::default(),
            clock,
            line: Vec::with_capacity(1024),
        }
    }

    /// Which text lines, and whether in colour.
    pub fn style(mut self, style: TextStyle) -> Self {
        self.style = style;
        self
    }

    pub fn print(&mut self, event: &Timed) -> std::io::Result<()> {
        match self.format {
            Format::Text if text_level(&event.event) > self.style.verbosity => Ok(()),
            // The line is escaped before it is coloured: the colour's own escapes are ours.
            Format::Text if self.style.colour => {
                let style = colour_of(&event.event);
                writeln!(self.out, "{style}{}{style:#}", text(event))
            }
            Format::Text => writeln!(self.out, "{}", text(event)),
            Format::Json => {
                self.line.clear();
                serde_json::to_writer(&mut self.line, &json_line(event, &self.clock))?;
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            }
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attribution::SenderClass;
    use crate::model::{AncestorRef, ContainerCreate, ContainerRef};

    fn container() -> ContainerRef {
        ContainerRef {
            container_id: "3f2a9c0e1b7d4a6f8e2c5b9d0a1f3e7c".into(),
            cgroup_id: 1234,
            cgroup_path: "/docker/3f2a9c0e1b7d4a6f8e2c5b9d0a1f3e7c".into(),
            runtime: "docker",
            k8s: None,
        }
    }

    fn killed() -> Timed {
        Timed {
            ts_ns: 2_000_000_000,
            event: Event::ProcessExit(Box::new(ProcessExit {
                container: container(),
                pid: 4200,
                comm: "agent".into(),
                is_container_init: true,
                exit_code: 137,
                signal: Some("SIGKILL".into()),
                core_dumped: false,
                cause: ExitCause::OrchestratorKill,
                policy: None,
                syscall: None,
                limit: None,
                init: None,
                sender: Some(Sender {
                    pid: 4121,
                    tid: 4121,
                    comm: "runc".into(),
                    cgroup_id: 1,
                    container_id: None,
                    ancestry: vec![AncestorRef {
                        pid: 4100,
                        comm: "containerd-shim".into(),
                    }]
                    .into(),
                    class: SenderClass::Runtime,
                }),
                escalated_from: Some("SIGTERM".into()),
                grace_seconds: Some(10.0),
                wait_status: 9,
            })),
        }
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let mut event = killed();
        if let Event::ProcessExit(e) = &mut event.event {
            if let Some(sender) = &mut e.sender {
                sender.comm = "x\ncontainer 000000000000 exited 0\u{1b}[2J\u{202e}".into();
            }
        }
        let line = text(&event);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(
            line.contains("\\n") && line.contains("\\u{1b}") && line.contains("\\u{202e}"),
            "{line}"
        );
    }

    #[test]
    fn text_line_says_who_killed_what() {
        assert_eq!(
            text(&killed()),
            "container 3f2a9c0e1b7d… exited 137: SIGKILL from runc[4121] ← containerd-shim[4100] \
             (runtime, outside the container, after SIGTERM 10.0 s earlier)"
        );
    }

    /// Default text: what an operator acts on; -v: process execs and exits too; colour only
    /// when asked for, around the escaped line.
    #[test]
    fn text_lines_follow_the_verbosity_and_colour() {
        let clock = WallClock::with_offset(0);
        let created = Timed {
            ts_ns: 1,
            event: Event::ContainerCreate(ContainerCreate {
                container: container(),
                preexisting: false,
                agent: None,
                init_pid: None,
            }),
        };
        let print = |style: TextStyle| {
            let mut printer = Printer::new(Vec::new(), Format::Text, clock).style(style);
            printer.print(&created).unwrap();
            printer.print(&killed()).unwrap();
            String::from_utf8(printer.out).unwrap()
        };
        let quiet = print(TextStyle::default());
        assert_eq!(
            quiet,
            format!("{}\n", text(&created)),
            "the exit is a -v line"
        );
        let verbose = print(TextStyle {
            verbosity: 1,
            colour: false,
        });
        assert_eq!(
            verbose,
            format!("{}\n{}\n", text(&created), text(&killed()))
        );
        let coloured = print(TextStyle {
            verbosity: 1,
            colour: true,
        });
        // Green for the creation, bold red for the kill; each line ends with a reset.
        assert_eq!(
            coloured,
            format!(
                "\x1b[32m{}\x1b[0m\n\x1b[1m\x1b[31m{}\x1b[0m\n",
                text(&created),
                text(&killed())
            )
        );
    }

    #[test]
    fn the_printer_streams_the_same_json_lines() {
        let clock = WallClock::with_offset(1_795_910_400_123_456_789);
        let mut printer = Printer::new(Vec::new(), Format::Json, clock);
        printer.print(&killed()).unwrap();
        printer.print(&killed()).unwrap();
        let line = json(&killed(), &clock);
        assert!(
            line.contains(r#""time":"2026-11-29T00:00:02.123456789Z""#),
            "{line}"
        );
        assert_eq!(
            String::from_utf8(printer.out).unwrap(),
            format!("{line}\n{line}\n")
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        // Beyond what RFC 3339 can say: the number itself.
        assert_eq!(rfc3339(i128::MAX), i128::MAX.to_string());
    }

    #[test]
    fn json_line_has_the_documented_fields() {
        // Monotonic 2 s lands at 2026-11-29T00:00:02Z with this offset.
        let clock = WallClock::with_offset(1_795_910_400_000_000_000);
        let value: serde_json::Value = serde_json::from_str(&json(&killed(), &clock)).unwrap();
        assert_eq!(value["event"], "process_exit");
        assert_eq!(value["time"], "2026-11-29T00:00:02Z");
        for (key, want) in [
            (
                "container_id",
                serde_json::json!("3f2a9c0e1b7d4a6f8e2c5b9d0a1f3e7c"),
            ),
            ("cgroup_id", serde_json::json!(1234)),
            ("pid", serde_json::json!(4200)),
            ("comm", serde_json::json!("agent")),
            ("is_container_init", serde_json::json!(true)),
            ("exit_code", serde_json::json!(137)),
            ("signal", serde_json::json!("SIGKILL")),
            ("core_dumped", serde_json::json!(false)),
            ("cause", serde_json::json!("orchestrator_kill")),
            (
                "sender",
                serde_json::json!({
                    "pid": 4121, "tid": 4121, "comm": "runc", "cgroup_id": 1, "container_id": null,
                    "ancestry": [{"pid": 4100, "comm": "containerd-shim"}], "class": "runtime"
                }),
            ),
            ("escalated_from", serde_json::json!("SIGTERM")),
            ("grace_seconds", serde_json::json!(10.0)),
        ] {
            assert_eq!(value[key], want, "{key}");
        }
        let create = Timed {
            ts_ns: 0,
            event: Event::ContainerCreate(ContainerCreate {
                container: container(),
                preexisting: false,
                agent: None,
                init_pid: None,
            }),
        };
        let value: serde_json::Value = serde_json::from_str(&json(&create, &clock)).unwrap();
        assert_eq!(value["event"], "container_create");
        assert_eq!(
            value["cgroup_path"],
            "/docker/3f2a9c0e1b7d4a6f8e2c5b9d0a1f3e7c"
        );
    }
}
