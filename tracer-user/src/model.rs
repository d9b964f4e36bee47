//! The container lifecycle model: a pure state machine fed by decoded records. It knows which
//! cgroups are containers (and which sub-cgroups belong to them), which process is each
//! container's init, and turns records into [`Event`]s. It does no I/O, so recorded streams can
//! be replayed through it in tests.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tracer_common::{AttachRecord, CgroupRecord, ExecRecord, ExitRecord, OomRecord, SignalRecord};

use crate::{
    attribution::{attribute, signal_name, ExitCause, SenderKind, WaitStatus},
    containers::{ContainerIdent, Recognize},
    decode::{c_str, sized_str, Record},
};

/// Settings of the model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// A container whose init exited this long ago while its cgroup remains is lingering.
    pub linger_after_ns: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            linger_after_ns: 30_000_000_000,
        }
    }
}

/// A container the model follows.
#[derive(Debug, Clone)]
pub struct Container {
    pub ident: ContainerIdent,
    pub cgroup_id: u64,
    pub cgroup_path: String,
    pub created_ns: u64,
    /// Found by the start-up scan rather than seen being created.
    pub preexisting: bool,
    /// The container's first process.
    pub init: Option<u32>,
    /// When the first process of the payload exec'd inside the container.
    pub first_exec_ns: Option<u64>,
    /// The init's exit: when, and the verdict.
    pub init_exit: Option<(u64, WaitStatus, ExitCause)>,
    /// Processes known to be alive in the container.
    pub processes: HashSet<u32>,
    /// Lingering has been reported.
    pub lingering: bool,
}

/// The fields every container event carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerRef {
    pub container_id: String,
    pub cgroup_id: u64,
    pub cgroup_path: String,
    pub runtime: &'static str,
}

impl ContainerRef {
    fn of(c: &Container) -> ContainerRef {
        ContainerRef {
            container_id: c.ident.id.clone(),
            cgroup_id: c.cgroup_id,
            cgroup_path: c.cgroup_path.clone(),
            runtime: c.ident.runtime,
        }
    }
}

/// Who sent a signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sender {
    /// The sending process (tgid).
    pub pid: u32,
    /// The sending thread.
    pub tid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The sender's container, when it is in one.
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerCreate {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub preexisting: bool,
    /// The `agent` capture of a user pattern, when there was one.
    pub agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerDelete {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub lifetime_seconds: f64,
    /// The init's exit code (shell style) and cause: the container's outcome.
    pub exit_code: Option<u32>,
    pub cause: Option<ExitCause>,
    pub was_lingering: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessExec {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub pid: u32,
    pub comm: String,
    pub filename: String,
    pub is_container_init: bool,
    /// For the container's first exec: seconds since the cgroup was created.
    pub start_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalSent {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub signal: String,
    pub target_pid: u32,
    pub target_tid: u32,
    pub target_comm: String,
    pub sender: Sender,
    pub sender_kind: SenderKind,
    pub si_code: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomMark {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub pid: u32,
    pub anon_rss_kb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessExit {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub pid: u32,
    pub comm: String,
    pub is_container_init: bool,
    /// Shell-style: the exit code, or 128 + signal.
    pub exit_code: u32,
    pub signal: Option<String>,
    pub core_dumped: bool,
    pub cause: ExitCause,
    pub sender: Option<Sender>,
    pub escalated_from: Option<String>,
    pub grace_seconds: Option<f64>,
    /// The raw wait status.
    pub wait_status: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerLingering {
    #[serde(flatten)]
    pub container: ContainerRef,
    pub init_exited_seconds_ago: f64,
    /// Processes the tracer knows to be still alive in the container.
    pub processes_left: usize,
}

/// What the model reports. Serialized as one JSON object with an `event` tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ContainerCreate(ContainerCreate),
    ContainerDelete(ContainerDelete),
    ProcessExec(ProcessExec),
    Signal(SignalSent),
    OomMark(OomMark),
    ProcessExit(ProcessExit),
    ContainerLingering(ContainerLingering),
}

/// An event and when it happened (CLOCK_MONOTONIC ns, the records' time base).
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub ts_ns: u64,
    pub event: Event,
}

/// What one step of the model produced: events, and cgroups the kernel should stop following
/// because they are not containers.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<Timed>,
    pub untrack: Vec<u64>,
}

/// A container found by scanning the host at start.
#[derive(Debug, Clone)]
pub struct ExistingContainer {
    pub cgroup_id: u64,
    pub cgroup_path: String,
    pub ident: ContainerIdent,
    /// Its sub-cgroups (ids).
    pub sub_cgroups: Vec<u64>,
    /// Its processes, and which one is its init.
    pub processes: Vec<u32>,
    pub init: Option<u32>,
}

pub struct Model<R> {
    recognizer: R,
    config: ModelConfig,
    containers: HashMap<u64, Container>,
    /// Every cgroup that belongs to a container (its own and its sub-cgroups) to the container's
    /// cgroup id.
    owner: HashMap<u64, u64>,
    /// Container cgroup paths to ids, to place sub-cgroups.
    by_path: HashMap<String, u64>,
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl<R: Recognize> Model<R> {
    pub fn new(recognizer: R, config: ModelConfig) -> Self {
        Model {
            recognizer,
            config,
            containers: HashMap::new(),
            owner: HashMap::new(),
            by_path: HashMap::new(),
        }
    }

    pub fn recognizer(&self) -> &R {
        &self.recognizer
    }

    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        self.containers.values()
    }

    pub fn container_of_cgroup(&self, cgroup_id: u64) -> Option<&Container> {
        self.containers.get(self.owner.get(&cgroup_id)?)
    }

    /// Adds a container found by scanning at start.
    pub fn adopt(&mut self, found: ExistingContainer, now_ns: u64, out: &mut Output) {
        if self.owner.contains_key(&found.cgroup_id) {
            return;
        }
        let agent = found.ident.agent.clone();
        let container = Container {
            ident: found.ident,
            cgroup_id: found.cgroup_id,
            cgroup_path: found.cgroup_path.clone(),
            created_ns: now_ns,
            preexisting: true,
            init: found.init,
            first_exec_ns: None,
            init_exit: None,
            processes: found.processes.into_iter().collect(),
            lingering: false,
        };
        out.events.push(Timed {
            ts_ns: now_ns,
            event: Event::ContainerCreate(ContainerCreate {
                container: ContainerRef::of(&container),
                preexisting: true,
                agent,
            }),
        });
        self.owner.insert(found.cgroup_id, found.cgroup_id);
        for sub in found.sub_cgroups {
            self.owner.insert(sub, found.cgroup_id);
        }
        self.by_path.insert(found.cgroup_path, found.cgroup_id);
        self.containers.insert(found.cgroup_id, container);
    }

    /// Feeds one record.
    pub fn handle(&mut self, record: &Record, out: &mut Output) {
        match record {
            Record::CgroupMkdir(r) => self.on_mkdir(r, out),
            Record::CgroupRmdir(r) => self.on_rmdir(r, out),
            Record::Attach(r) => self.on_attach(r),
            Record::Exec(r) => self.on_exec(r, out),
            Record::Signal(r) => self.on_signal(r, out),
            Record::Oom(r) => self.on_oom(r, out),
            Record::Exit(r) => self.on_exit(r, out),
        }
    }

    /// Reports containers that have become lingering by `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Output) {
        for c in self.containers.values_mut() {
            let Some((exited_ns, _, _)) = c.init_exit else {
                continue;
            };
            let since = now_ns.saturating_sub(exited_ns);
            if !c.lingering && since >= self.config.linger_after_ns {
                c.lingering = true;
                out.events.push(Timed {
                    ts_ns: now_ns,
                    event: Event::ContainerLingering(ContainerLingering {
                        container: ContainerRef::of(c),
                        init_exited_seconds_ago: seconds(since),
                        processes_left: c.processes.len(),
                    }),
                });
            }
        }
    }

    /// The container whose cgroup path is `path` or an ancestor of it.
    fn container_above(&self, path: &str) -> Option<u64> {
        let mut end = path.len();
        while let Some(slash) = path[..end].rfind('/') {
            if slash == 0 {
                break;
            }
            if let Some(&id) = self.by_path.get(&path[..slash]) {
                return Some(id);
            }
            end = slash;
        }
        None
    }

    fn on_mkdir(&mut self, r: &CgroupRecord, out: &mut Output) {
        if self.owner.contains_key(&r.id) {
            return;
        }
        let path = sized_str(&r.path, r.path_len);
        if let Some(container) = self.container_above(&path) {
            self.owner.insert(r.id, container);
            return;
        }
        let Some(ident) = self.recognizer.recognize(&path) else {
            out.untrack.push(r.id);
            return;
        };
        let agent = ident.agent.clone();
        let container = Container {
            ident,
            cgroup_id: r.id,
            cgroup_path: path.clone(),
            created_ns: r.header.ts_ns,
            preexisting: false,
            init: None,
            first_exec_ns: None,
            init_exit: None,
            processes: HashSet::new(),
            lingering: false,
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::ContainerCreate(ContainerCreate {
                container: ContainerRef::of(&container),
                preexisting: false,
                agent,
            }),
        });
        self.owner.insert(r.id, r.id);
        self.by_path.insert(path, r.id);
        self.containers.insert(r.id, container);
    }

    fn on_rmdir(&mut self, r: &CgroupRecord, out: &mut Output) {
        let Some(c) = self.containers.remove(&r.id) else {
            // A sub-cgroup going away, or a cgroup that was never a container.
            self.owner.remove(&r.id);
            return;
        };
        self.owner.retain(|_, owner| *owner != r.id);
        self.by_path.remove(&c.cgroup_path);
        let (exit_code, cause) = match c.init_exit {
            Some((_, status, cause)) => (Some(status.shell_code()), Some(cause)),
            None => (None, None),
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::ContainerDelete(ContainerDelete {
                container: ContainerRef::of(&c),
                lifetime_seconds: seconds(r.header.ts_ns.saturating_sub(c.created_ns)),
                exit_code,
                cause,
                was_lingering: c.lingering,
            }),
        });
    }

    fn on_attach(&mut self, r: &AttachRecord) {
        let Some(c) = self
            .owner
            .get(&r.dst_cgroup_id)
            .and_then(|id| self.containers.get_mut(id))
        else {
            return;
        };
        // Runtimes move the container's init in before anything else.
        c.init.get_or_insert(r.target_pid);
        c.processes.insert(r.target_pid);
    }

    fn on_exec(&mut self, r: &ExecRecord, out: &mut Output) {
        let Some(c) = self
            .owner
            .get(&r.header.cgroup_id)
            .and_then(|id| self.containers.get_mut(id))
        else {
            return;
        };
        let tgid = r.header.tgid;
        // A process placed in the cgroup at clone time is announced by no attach record.
        let init = *c.init.get_or_insert(tgid);
        c.processes.insert(tgid);
        let start_seconds = match c.first_exec_ns {
            None if !c.preexisting => {
                c.first_exec_ns = Some(r.header.ts_ns);
                Some(seconds(r.header.ts_ns.saturating_sub(c.created_ns)))
            }
            _ => None,
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::ProcessExec(ProcessExec {
                container: ContainerRef::of(c),
                pid: tgid,
                comm: c_str(&r.comm),
                filename: sized_str(&r.filename, r.filename_len),
                is_container_init: init == tgid,
                start_seconds,
            }),
        });
    }

    fn sender(&self, pid: u32, tgid: u32, comm: &[u8], cgroup_id: u64) -> Sender {
        Sender {
            pid: tgid,
            tid: pid,
            comm: c_str(comm),
            cgroup_id,
            container_id: self
                .container_of_cgroup(cgroup_id)
                .map(|c| c.ident.id.clone()),
        }
    }

    fn on_signal(&mut self, r: &SignalRecord, out: &mut Output) {
        let Some(target) = self.owner.get(&r.target_cgroup_id).copied() else {
            return;
        };
        let Some(c) = self.containers.get(&target) else {
            return;
        };
        let h = &r.header;
        let same = self.owner.get(&h.cgroup_id) == Some(&target);
        let event = SignalSent {
            container: ContainerRef::of(c),
            signal: signal_name(r.signal),
            target_pid: r.target_tgid,
            target_tid: r.target_pid,
            target_comm: c_str(&r.target_comm),
            sender: self.sender(h.pid, h.tgid, &r.sender_comm, h.cgroup_id),
            sender_kind: SenderKind::of(r.signal, r.code, h.tgid, r.target_tgid, same),
            si_code: r.code,
        };
        out.events.push(Timed {
            ts_ns: h.ts_ns,
            event: Event::Signal(event),
        });
    }

    fn on_oom(&mut self, r: &OomRecord, out: &mut Output) {
        let Some(c) = self.container_of_cgroup(r.victim_cgroup_id) else {
            return;
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::OomMark(OomMark {
                container: ContainerRef::of(c),
                pid: r.victim_tgid,
                anon_rss_kb: r.anon_rss_kb,
            }),
        });
    }

    fn on_exit(&mut self, r: &ExitRecord, out: &mut Output) {
        let Some(&owner) = self.owner.get(&r.header.cgroup_id) else {
            return;
        };
        let verdict = attribute(r, |cg| self.owner.get(&cg) == Some(&owner));
        let sender = verdict.killer.map(|k| {
            self.sender(
                k.sender_pid,
                k.sender_tgid,
                &k.sender_comm,
                k.sender_cgroup_id,
            )
        });
        let Some(c) = self.containers.get_mut(&owner) else {
            return;
        };
        let tgid = r.header.tgid;
        let is_init = c.init == Some(tgid);
        c.processes.remove(&tgid);
        if is_init {
            c.init_exit = Some((r.header.ts_ns, verdict.status, verdict.cause));
        }
        let (signal, core_dumped) = match verdict.status {
            WaitStatus::Exited(_) => (None, false),
            WaitStatus::Signaled {
                signal,
                core_dumped,
            } => (Some(signal_name(signal)), core_dumped),
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::ProcessExit(ProcessExit {
                container: ContainerRef::of(c),
                pid: tgid,
                comm: c_str(&r.comm),
                is_container_init: is_init,
                exit_code: verdict.status.shell_code(),
                signal,
                core_dumped,
                cause: verdict.cause,
                sender,
                escalated_from: verdict.escalated_from.map(|s| signal_name(s.signal)),
                grace_seconds: verdict.grace_ns().map(seconds),
                wait_status: r.exit_status,
            }),
        });
    }
}
