//! Typed checkers of clawtrace's JSON events, in the manner of Tetragon's event checkers
//! (`pkg/sensors/exec/exit_test.go`): a builder names the event it is about and what its fields
//! must be, and `check(&events)` finds that event among `events` and compares:
//!
//! ```ignore
//! ExitChecker::of(init).code(137).cause("orchestrator_kill").sender_pid(killer).check(&events);
//! DeleteChecker::of(&id).exit_code(3).verdict("failed").check_in(&trace, &id);
//! ```
//!
//! A mismatch panics (at the test's line) with every field of that event that differs, the
//! event, and all the events checked; an event that is not there panics with the events too.
//! `check_in(&trace, id)` first waits for the event in container `id`, then checks that
//! container's events. Both return the event found, for checks that build on it.

use std::ops::Range;

use serde_json::Value;

use crate::support::Clawtrace;

/// What one checker wants of its event.
enum Want {
    /// The field at this JSON pointer equals the value (a missing field never does).
    Field(&'static str, Value),
    /// The event holds a property; `shown` is the field the failure message shows.
    That {
        shown: &'static str,
        expected: String,
        holds: Box<dyn Fn(&Value) -> bool>,
    },
}

/// An event (its `event` name and the fields that single it out) and what it must hold: what
/// every typed checker is made of.
struct EventCheck {
    event: &'static str,
    select: Vec<(&'static str, Value)>,
    wants: Vec<Want>,
}

impl EventCheck {
    fn new(event: &'static str, select: &[(&'static str, Value)]) -> EventCheck {
        EventCheck {
            event,
            select: select.to_vec(),
            wants: Vec::new(),
        }
    }

    fn selects(&self, v: &Value) -> bool {
        v["event"] == self.event
            && self
                .select
                .iter()
                .all(|(p, want)| v.pointer(p) == Some(want))
    }

    /// `process_exit with /pid = 1234`.
    fn describe(&self) -> String {
        let select: Vec<String> = self
            .select
            .iter()
            .map(|(p, v)| format!("{p} = {v}"))
            .collect();
        format!("{} with {}", self.event, select.join(", "))
    }

    /// Every way `v` differs from what is wanted.
    fn mismatches(&self, v: &Value) -> Vec<String> {
        let shown = |pointer: &str| {
            v.pointer(pointer)
                .map_or("missing".to_string(), |got| format!("{got}"))
        };
        self.wants
            .iter()
            .filter_map(|want| match want {
                Want::Field(pointer, expected) => (v.pointer(pointer) != Some(expected))
                    .then(|| format!("{pointer} is {}, expected {expected}", shown(pointer))),
                Want::That {
                    shown: pointer,
                    expected,
                    holds,
                } => (!holds(v))
                    .then(|| format!("{pointer} is {}, expected {expected}", shown(pointer))),
            })
            .collect()
    }

    #[track_caller]
    fn check(&self, events: &[Value]) -> Value {
        let Some(found) = events.iter().find(|v| self.selects(v)) else {
            panic!(
                "clawtrace printed no {}{}",
                self.describe(),
                timeline(events)
            );
        };
        let wrong = self.mismatches(found);
        if !wrong.is_empty() {
            panic!(
                "clawtrace disagrees with the ground truth on its {}: {}\n    event: {found}{}",
                self.describe(),
                wrong.join("; "),
                timeline(events)
            );
        }
        found.clone()
    }

    #[track_caller]
    fn check_in(&self, trace: &Clawtrace, id: &str) -> Value {
        trace.wait_event(self.event, id, |v| self.selects(v));
        self.check(&of_container(trace, id))
    }

    fn want(mut self, pointer: &'static str, value: impl Into<Value>) -> Self {
        self.wants.push(Want::Field(pointer, value.into()));
        self
    }

    fn that(
        mut self,
        shown: &'static str,
        expected: impl Into<String>,
        holds: impl Fn(&Value) -> bool + 'static,
    ) -> Self {
        self.wants.push(Want::That {
            shown,
            expected: expected.into(),
            holds: Box::new(holds),
        });
        self
    }
}

/// The events clawtrace printed for container `id`.
pub fn of_container(trace: &Clawtrace, id: &str) -> Vec<Value> {
    trace.matching(|v| v["container_id"] == id)
}

/// The events, one a line, for a failure message.
fn timeline(events: &[Value]) -> String {
    let mut text = format!("\namong these {} events:\n", events.len());
    for event in events {
        text.push_str(&format!("  {event}\n"));
    }
    text
}

/// A typed checker: a wrapper of [`EventCheck`] with its `check` and `check_in`.
macro_rules! checker {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(EventCheck);

        impl $name {
            /// Finds the event among `events` and compares it; panics with every difference
            /// and the events. Returns the event.
            #[allow(dead_code)] // The runtime tests check a running trace, with `check_in`.
            #[track_caller]
            pub fn check(&self, events: &[Value]) -> Value {
                self.0.check(events)
            }

            /// Waits for the event in container `id`, then checks the container's events.
            #[track_caller]
            pub fn check_in(&self, trace: &Clawtrace, id: &str) -> Value {
                self.0.check_in(trace, id)
            }

            fn want(self, pointer: &'static str, value: impl Into<Value>) -> Self {
                $name(self.0.want(pointer, value))
            }

            #[allow(dead_code)] // Not every checker has a property beyond fields.
            fn that(
                self,
                shown: &'static str,
                expected: impl Into<String>,
                holds: impl Fn(&Value) -> bool + 'static,
            ) -> Self {
                $name(self.0.that(shown, expected, holds))
            }
        }
    };
}

/// Setters that each want one field to equal a value.
macro_rules! fields {
    ($name:ident { $($(#[$doc:meta])* $method:ident($arg:ty) => $pointer:literal,)* }) => {
        impl $name {
            $(
                $(#[$doc])*
                pub fn $method(self, value: $arg) -> Self {
                    self.want($pointer, value)
                }
            )*
        }
    };
}

/// Setters of a sender's fields (`/sender/…`), shared by exits and signals.
macro_rules! sender_fields {
    ($name:ident) => {
        fields!($name {
            sender_pid(impl Into<Value>) => "/sender/pid",
            sender_comm(impl Into<Value>) => "/sender/comm",
        });

        impl $name {
            /// The sender is in no container (`/sender/container_id` is null).
            pub fn sender_outside(self) -> Self {
                self.want("/sender/container_id", Value::Null)
            }
        }
    };
}

checker! {
    /// A `container_create`.
    CreateChecker
}

impl CreateChecker {
    pub fn of(id: &str) -> CreateChecker {
        CreateChecker(EventCheck::new(
            "container_create",
            &[("/container_id", id.into())],
        ))
    }
}

fields!(CreateChecker {
    runtime(&str) => "/runtime",
    cgroup_path(&str) => "/cgroup_path",
    cgroup_id(impl Into<Value>) => "/cgroup_id",
    preexisting(bool) => "/preexisting",
});

checker! {
    /// A `process_exec`.
    ExecChecker
}

impl ExecChecker {
    pub fn of(pid: u32) -> ExecChecker {
        ExecChecker(EventCheck::new("process_exec", &[("/pid", pid.into())]))
    }
}

fields!(ExecChecker {
    /// `/is_container_init`.
    init(bool) => "/is_container_init",
    comm(&str) => "/comm",
    filename(&str) => "/filename",
});

checker! {
    /// A `process_exit`.
    ExitChecker
}

impl ExitChecker {
    pub fn of(pid: u32) -> ExitChecker {
        ExitChecker(EventCheck::new("process_exit", &[("/pid", pid.into())]))
    }

    /// The exit of the first process named `comm` (when its pid is not known).
    pub fn of_comm(comm: &str) -> ExitChecker {
        ExitChecker(EventCheck::new("process_exit", &[("/comm", comm.into())]))
    }

    /// No signal ended the process (`/signal` is null).
    pub fn no_signal(self) -> Self {
        self.want("/signal", Value::Null)
    }

    /// The process was not asked to stop with another signal first (`/escalated_from` null).
    pub fn not_escalated(self) -> Self {
        self.want("/escalated_from", Value::Null)
    }

    /// No process sent the signal that ended it (`/sender` is null).
    pub fn no_sender(self) -> Self {
        self.want("/sender", Value::Null)
    }

    /// `/sender/comm` passes `holds`; `expected` says what it should be.
    pub fn sender_comm_where(self, expected: &str, holds: fn(&str) -> bool) -> Self {
        self.that("/sender/comm", expected, move |v| {
            holds(v["sender"]["comm"].as_str().unwrap_or_default())
        })
    }

    /// The sender is not process `pid`.
    pub fn sender_pid_not(self, pid: u32) -> Self {
        self.that("/sender/pid", format!("not {pid}"), move |v| {
            v["sender"]["pid"] != pid
        })
    }

    /// The sender is not in cgroup `id`.
    pub fn sender_cgroup_id_not(self, id: u64) -> Self {
        self.that("/sender/cgroup_id", format!("not {id}"), move |v| {
            v["sender"]["cgroup_id"] != id
        })
    }

    /// One of the sender's ancestors (`/sender/ancestry`) has a comm that passes `holds`.
    pub fn sender_ancestor(self, expected: &str, holds: fn(&str) -> bool) -> Self {
        self.that(
            "/sender/ancestry",
            format!("an ancestor {expected}"),
            move |v| {
                v["sender"]["ancestry"]
                    .as_array()
                    .is_some_and(|a| a.iter().filter_map(|p| p["comm"].as_str()).any(holds))
            },
        )
    }

    /// The process signalled itself, or the kernel did in its context (`/sender/pid` is its
    /// own `/pid`).
    pub fn sender_is_itself(self) -> Self {
        self.that("/sender/pid", "the process's own /pid", |v| {
            v["sender"]["pid"] == v["pid"]
        })
    }

    /// The refused system call (`/syscall`) is one of these (number, name).
    pub fn syscall_one_of(self, calls: &'static [(u64, &'static str)]) -> Self {
        let expected = calls
            .iter()
            .map(|(n, name)| format!("{name} ({n})"))
            .collect::<Vec<_>>()
            .join(" or ");
        self.that("/syscall", expected, move |v| {
            let call = (
                v["syscall"]["number"].as_u64(),
                v["syscall"]["name"].as_str(),
            );
            calls
                .iter()
                .any(|(n, name)| call == (Some(*n), Some(*name)))
        })
    }

    /// The grace between the first signal and the kill (`/grace_seconds`) lies within.
    pub fn grace_within(self, seconds: Range<f64>) -> Self {
        self.that(
            "/grace_seconds",
            format!("within {seconds:?} s"),
            move |v| seconds.contains(&v["grace_seconds"].as_f64().unwrap_or(-1.0)),
        )
    }
}

fields!(ExitChecker {
    runtime(&str) => "/runtime",
    cgroup_id(impl Into<Value>) => "/cgroup_id",
    /// `/is_container_init`.
    init(bool) => "/is_container_init",
    comm(&str) => "/comm",
    cause(&str) => "/cause",
    /// The signal that ended the process.
    signal(&str) => "/signal",
    /// `/exit_code`, shell style (128 + the signal's number for a signal).
    code(i64) => "/exit_code",
    core_dumped(bool) => "/core_dumped",
    escalated_from(&str) => "/escalated_from",
    /// The security policy that killed the process.
    policy(&str) => "/policy",
    sender_class(&str) => "/sender/class",
});
sender_fields!(ExitChecker);

checker! {
    /// A `signal`.
    SignalChecker
}

impl SignalChecker {
    /// Signal `signal` sent to process `target_pid`.
    pub fn of(target_pid: u32, signal: &str) -> SignalChecker {
        SignalChecker(EventCheck::new(
            "signal",
            &[
                ("/target_pid", target_pid.into()),
                ("/signal", signal.into()),
            ],
        ))
    }
}

fields!(SignalChecker {
    /// Where the sender is: `outside`, …
    sender_kind(&str) => "/sender_kind",
    si_code(i64) => "/si_code",
});
sender_fields!(SignalChecker);

checker! {
    /// A `container_delete` and its verdict.
    DeleteChecker
}

impl DeleteChecker {
    pub fn of(id: &str) -> DeleteChecker {
        DeleteChecker(EventCheck::new(
            "container_delete",
            &[("/container_id", id.into())],
        ))
    }

    /// The process the verdict is taken from (`/verdict_process/pid` and `/comm`).
    pub fn verdict_process(self, pid: impl Into<Value>, comm: &str) -> Self {
        self.want("/verdict_process/pid", pid)
            .want("/verdict_process/comm", comm)
    }
}

fields!(DeleteChecker {
    runtime(&str) => "/runtime",
    cgroup_path(&str) => "/cgroup_path",
    cgroup_id(impl Into<Value>) => "/cgroup_id",
    /// The container's exit code: its init's.
    exit_code(i64) => "/exit_code",
    was_lingering(bool) => "/was_lingering",
    /// The init's exit cause.
    cause(&str) => "/cause",
    verdict(&str) => "/verdict",
});

checker! {
    /// A `volume_mount`: a bind of a host folder as the container's mount table has it.
    VolumeMountChecker
}

impl VolumeMountChecker {
    /// The bind of host folder `source`.
    pub fn of_source(source: &str) -> VolumeMountChecker {
        VolumeMountChecker(EventCheck::new(
            "volume_mount",
            &[("/source", source.into())],
        ))
    }
}

fields!(VolumeMountChecker {
    /// `yes`, `no`, …
    read_only(&str) => "/read_only",
});

/// The `mount` system calls of one source, as a runtime made them.
pub struct MountCallsChecker {
    source: String,
    at_least: usize,
    read_only_remount: bool,
}

impl MountCallsChecker {
    pub fn of_source(source: &str) -> MountCallsChecker {
        MountCallsChecker {
            source: source.to_string(),
            at_least: 1,
            read_only_remount: false,
        }
    }

    /// At least `n` calls.
    pub fn at_least(mut self, n: usize) -> Self {
        self.at_least = n;
        self
    }

    /// One of them a remount (`MS_REMOUNT`) that leaves the mount read-only.
    pub fn some_read_only_remount(mut self) -> Self {
        self.read_only_remount = true;
        self
    }

    /// Finds the calls among `events` and compares; panics with the calls and the events.
    /// Returns the calls.
    #[track_caller]
    pub fn check(&self, events: &[Value]) -> Vec<Value> {
        const MS_REMOUNT: u64 = 32;
        let calls: Vec<Value> = events
            .iter()
            .filter(|v| v["event"] == "mount" && v["source"] == self.source.as_str())
            .cloned()
            .collect();
        let mut wrong = Vec::new();
        if calls.len() < self.at_least {
            wrong.push(format!(
                "{} calls, expected at least {}",
                calls.len(),
                self.at_least
            ));
        }
        if self.read_only_remount
            && !calls.iter().any(|c| {
                c["writable"] == false && c["flags"].as_u64().is_some_and(|f| f & MS_REMOUNT != 0)
            })
        {
            wrong.push("no read-only remount among them".to_string());
        }
        if !wrong.is_empty() {
            panic!(
                "clawtrace disagrees with the ground truth on the mount calls of {}: {}\n    \
                 calls: {calls:#?}{}",
                self.source,
                wrong.join("; "),
                timeline(events)
            );
        }
        calls
    }
}

/// The processes of a container (`process_exec` and `process_exit` events).
pub struct ProcessesChecker {
    expected: &'static str,
    stray: fn(&str) -> bool,
}

impl ProcessesChecker {
    /// None of them has a comm that `stray` picks out; `what` says what those are.
    pub fn none_of(what: &'static str, stray: fn(&str) -> bool) -> ProcessesChecker {
        ProcessesChecker {
            expected: what,
            stray,
        }
    }

    /// Compares the processes among `events`; panics with the strays and the events.
    #[track_caller]
    pub fn check(&self, events: &[Value]) {
        let strays: Vec<&Value> = events
            .iter()
            .filter(|v| v["event"] == "process_exec" || v["event"] == "process_exit")
            .filter(|v| (self.stray)(v["comm"].as_str().unwrap_or_default()))
            .collect();
        if !strays.is_empty() {
            panic!(
                "{} reported as the container's processes: {strays:#?}{}",
                self.expected,
                timeline(events)
            );
        }
    }
}
