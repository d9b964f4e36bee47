//! The container lifecycle model: a pure state machine fed by decoded records. It knows which
//! cgroups are containers (and which sub-cgroups belong to them), which process is each
//! container's init, and turns records into [`Event`]s. It does no I/O, so recorded streams can
//! be replayed through it in tests.

use std::sync::Arc;

// The model's tables are looked up on every record, mostly by kernel ids (cgroup ids, pids):
// foldhash, randomly seeded per process, rather than std's SipHash.
use foldhash::{HashMap, HashSet};

use tracer_common::{
    mount_call, CgroupRecord, CgroupRmdirRecord, DeviceAccessRecord, EnvValue, ExecRecord,
    ExitRecord, MountRecord, OomRecord, SignalRecord,
};

pub mod attribution;
pub mod containers;
pub mod events;
pub mod gpu;
pub mod volumes;

pub use events::*;

use self::{
    attribution::{
        attribute, is_runtime, signal_name, ExitCause, Policy, SenderClass, SenderKind,
        SignalOrigin, SignalTrack, WaitStatus,
    },
    containers::{ContainerIdent, Recognize},
    volumes::{Bind, Violation},
};
use crate::source::decode::{c_str, comm_str, sized_str, Record};

fn call_name(call: u32) -> &'static str {
    match call {
        mount_call::MOUNT => "mount",
        mount_call::UMOUNT => "umount2",
        mount_call::MOUNT_SETATTR => "mount_setattr",
        mount_call::OPEN_TREE => "open_tree",
        mount_call::MOVE_MOUNT => "move_mount",
        mount_call::FSMOUNT => "fsmount",
        mount_call::FSCONFIG => "fsconfig",
        _ => "unknown",
    }
}

/// Settings of the model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// A container whose init exited this long ago while its cgroup remains is lingering.
    pub linger_after_ns: u64,
    /// Host paths that must only ever be bind-mounted read-only (`--read-only-volume`).
    pub read_only_volumes: Vec<String>,
    /// The depth of the host's pid namespace, where the tracer runs: a process deeper than
    /// this is in a container's own pid namespace.
    pub host_ns_level: u32,
    /// A cgroup v1 `devices` hierarchy is mounted: it decides after the device programs, so an
    /// access they allowed may still be denied there, and is reported undecided.
    pub devices_v1_controller: bool,
    /// Mount system calls are traced (`--trace-mount-syscalls`): a start's share spent in them
    /// is known.
    pub mount_syscalls: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            linger_after_ns: 30_000_000_000,
            read_only_volumes: Vec::new(),
            host_ns_level: 0,
            devices_v1_controller: false,
            mount_syscalls: false,
        }
    }
}

/// A container the model follows.
#[derive(Debug, Clone)]
pub struct Container {
    pub ident: ContainerIdent,
    pub cgroup_id: u64,
    pub cgroup_path: Arc<str>,
    pub created_ns: u64,
    /// Found by the start-up scan rather than seen being created.
    pub preexisting: bool,
    /// The container's init: the first process to exec inside it (a runtime's own helpers are
    /// moved in before that and never exec there).
    pub init: Option<u32>,
    /// When the first process of the payload exec'd inside the container.
    pub first_exec_ns: Option<u64>,
    /// Whether `init` is pid 1 of the container's own pid namespace, as the kernel said at its
    /// exec (else it is the first process to exec in the container, for containers that share
    /// the host's pid namespace).
    pub init_by_ns: bool,
    /// The init's exit: when, and the verdict.
    pub init_exit: Option<(u64, WaitStatus, ExitCause)>,
    /// The init that exited, as the processes its pid namespace's teardown killed name it.
    pub exited_init: Option<InitRef>,
    /// The init's own end, for the verdict.
    pub init_ending: Option<Ending>,
    /// The latest end of a child of the init before the init's own.
    pub last_child_ending: Option<Ending>,
    /// The first process of the container the OOM killer killed.
    pub oom_victim: Option<ProcessRef>,
    /// Per process (by tgid), what was sent to it, kept until it exits.
    pub sends: HashMap<u32, Sends>,
    /// Processes of the container's payload known to be alive.
    pub processes: HashSet<u32>,
    /// Processes in the container's cgroup known to be the runtime's helpers (a runtime's
    /// binary exec'd there before the init, a process that exec'd before pid 1 of the
    /// namespace did, a helper's child), until they exec the payload.
    pub bootstrap: HashSet<u32>,
    /// The agent-name variable the kernel read from the first exec's environment, and whose.
    pub init_env: Option<(u32, Arc<[u8]>)>,
    /// The bind mounts it made and their read-only state.
    pub mounts: Vec<Bind>,
    /// Time its mount calls took before its first exec.
    pub mount_ns_before_start: u64,
    /// Its sub-cgroups.
    pub sub_cgroups: Vec<u64>,
    /// Lingering has been reported.
    pub lingering: bool,
    /// Its Kubernetes names, once the host found them ([`Model::name_pod`]).
    pub k8s: Option<Arc<K8sNames>>,
    /// Times its Kubernetes names were asked for ([`Model::pod_query`]).
    pub pod_lookups: u8,
}

impl Container {
    /// A container seen being created at `created_ns`, with nothing known of its processes yet.
    fn new(ident: ContainerIdent, cgroup_id: u64, cgroup_path: &str, created_ns: u64) -> Container {
        Container {
            ident,
            cgroup_id,
            cgroup_path: cgroup_path.into(),
            created_ns,
            preexisting: false,
            init: None,
            first_exec_ns: None,
            init_by_ns: false,
            init_exit: None,
            exited_init: None,
            init_ending: None,
            last_child_ending: None,
            oom_victim: None,
            sends: HashMap::default(),
            processes: HashSet::default(),
            bootstrap: HashSet::default(),
            init_env: None,
            mounts: Vec::new(),
            mount_ns_before_start: 0,
            sub_cgroups: Vec::new(),
            lingering: false,
            k8s: None,
            pod_lookups: 0,
        }
    }
}

impl ContainerRef {
    fn of(c: &Container) -> ContainerRef {
        ContainerRef {
            container_id: c.ident.id.clone(),
            cgroup_id: c.cgroup_id,
            cgroup_path: c.cgroup_path.clone(),
            runtime: c.ident.runtime,
            k8s: c.k8s.clone(),
        }
    }
}

/// How many times a container's Kubernetes names are asked for at most: when it appears, and
/// once more at its init's exec if the first try found nothing.
const POD_LOOKUPS: u8 = 2;

/// A container whose Kubernetes names the host should look up: its runtime and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodQuery {
    pub cgroup_id: u64,
    pub runtime: &'static str,
    pub id: Arc<str>,
}

/// What was sent to one process: the first send of each signal and the OOM mark, and the
/// sender's ancestry at each first send (by signal).
#[derive(Debug, Clone, Default)]
pub struct Sends {
    pub track: SignalTrack,
    pub ancestry: Vec<(u32, Arc<[AncestorRef]>)>,
}

impl Sends {
    /// The entry of process `tgid` that started at `start_ns`: a fresh one if there is none, or
    /// if the one there is an earlier process's with the same tgid.
    fn of(sends: &mut HashMap<u32, Sends>, tgid: u32, start_ns: u64) -> &mut Sends {
        let entry = sends.entry(tgid).or_default();
        if entry.track.start_ns != start_ns {
            *entry = Sends::default();
            entry.track.start_ns = start_ns;
        }
        entry
    }
}

/// Init wrappers (`docker run --init`'s tini, dumb-init, catatonit): they forward their
/// child's death as their own exit.
fn is_init_wrapper(comm: &str) -> bool {
    matches!(comm, "tini" | "docker-init" | "dumb-init" | "catatonit")
}

/// Shells, which exit 128+N after a child they waited for died of signal N.
fn is_shell(comm: &str) -> bool {
    matches!(
        comm,
        "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "busybox"
    )
}

/// A process's end, as the verdict rules need it.
#[derive(Debug, Clone)]
pub struct Ending {
    pub process: ProcessRef,
    pub status: WaitStatus,
    pub cause: ExitCause,
}

/// What one step of the model produced: events, and cgroups the kernel should stop following
/// because they are not containers.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<Timed>,
    /// Cgroups the kernel should stop following: they are not containers.
    pub untrack: Vec<u64>,
    /// What the rest of clawtrace needs to know besides the events.
    pub notes: Vec<Note>,
}

/// What the model tells the rest of clawtrace besides events: facts that are no part of the
/// event schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A container's init exec'd: its mount table is as the runtime made it.
    InitExec {
        cgroup_id: u64,
        pid: u32,
        /// Its mount namespace's inode number (0: not known).
        mnt_ns: u32,
        /// The agent-name variable of its environment, as the kernel read it (raw, untrusted).
        agent_env: Option<Arc<[u8]>>,
    },
    /// A GPU's number of users changed.
    GpuUsers(gpu::GpuUsers),
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
    /// Volume-policy violations in force.
    violations: HashSet<Violation>,
    /// Containers just deleted, so the violations they end can still name them.
    gone: HashMap<u64, ContainerRef>,
    /// Live containers that used each GPU device, by device number.
    device_users: gpu::DeviceUsers,
    /// The /dev node of each device number, as the caller found them ([`Model::name_device`]).
    device_names: HashMap<(u32, u32), Arc<str>>,
    /// The ancestry of a sender whose send was not seen, shared by every such exit rather than
    /// allocated for each.
    no_ancestry: Arc<[AncestorRef]>,
}

/// `mount(2)` flags the model reads.
const MS_RDONLY: u64 = 1;
const MS_REMOUNT: u64 = 32;
const MS_BIND: u64 = 4096;
/// `MOUNT_ATTR_RDONLY` of `mount_setattr(2)` and `fsmount(2)`.
const MOUNT_ATTR_RDONLY: u64 = 1;

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl<R: Recognize> Model<R> {
    pub fn new(recognizer: R, config: ModelConfig) -> Self {
        Model {
            recognizer,
            config,
            containers: HashMap::default(),
            owner: HashMap::default(),
            by_path: HashMap::default(),
            violations: HashSet::default(),
            gone: HashMap::default(),
            device_users: gpu::DeviceUsers::default(),
            device_names: HashMap::default(),
            no_ancestry: Arc::from([]),
        }
    }

    /// Whether the device with this number has been named (see [`Model::name_device`]).
    pub fn knows_device(&self, major: u32, minor: u32) -> bool {
        self.device_names.contains_key(&(major, minor))
    }

    /// Names the /dev node of a device number, for the events of its accesses. Unnamed devices
    /// are reported by number.
    pub fn name_device(&mut self, major: u32, minor: u32, path: &str) {
        self.device_names.insert((major, minor), Arc::from(path));
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
        let mut container = Container::new(
            found.ident,
            found.cgroup_id,
            found.cgroup_path.as_str(),
            now_ns,
        );
        container.preexisting = true;
        container.init = found.init;
        container.processes = found.processes.into_iter().collect();
        for &sub in &found.sub_cgroups {
            self.owner.insert(sub, found.cgroup_id);
        }
        container.sub_cgroups = found.sub_cgroups;
        self.add(container, found.cgroup_path, now_ns, out);
    }

    /// Follows a new container (its own cgroup, its path) and reports its creation.
    fn add(&mut self, container: Container, path: String, ts_ns: u64, out: &mut Output) {
        out.events.push(Timed {
            ts_ns,
            event: Event::ContainerCreate(ContainerCreate {
                container: ContainerRef::of(&container),
                preexisting: container.preexisting,
                agent: container.ident.agent.clone(),
                init_pid: container.init,
            }),
        });
        let id = container.cgroup_id;
        self.owner.insert(id, id);
        self.by_path.insert(path, id);
        self.containers.insert(id, container);
    }

    /// Asks for the Kubernetes names of the container of `cgroup_id` when it is a CRI
    /// runtime's (containerd, CRI-O) in a Kubernetes cgroup, has none yet, and was asked for
    /// fewer than [`POD_LOOKUPS`] times (this ask counts). The host answers with
    /// [`Model::name_pod`].
    pub fn pod_query(&mut self, cgroup_id: u64) -> Option<PodQuery> {
        let c = self.containers.get_mut(&cgroup_id)?;
        let cri = matches!(c.ident.runtime, "containerd" | "cri-o");
        if !cri
            || c.k8s.is_some()
            || c.pod_lookups >= POD_LOOKUPS
            || !containers::is_kubernetes(&c.cgroup_path)
        {
            return None;
        }
        c.pod_lookups += 1;
        Some(PodQuery {
            cgroup_id,
            runtime: c.ident.runtime,
            id: c.ident.id.clone(),
        })
    }

    /// The Kubernetes names of the container of `cgroup_id`, as the host found them: every
    /// later event carries them, and so do its events of this step not yet handed on.
    pub fn name_pod(&mut self, cgroup_id: u64, names: Arc<K8sNames>, out: &mut Output) {
        let Some(c) = self.containers.get_mut(&cgroup_id) else {
            return;
        };
        c.k8s = Some(names.clone());
        for timed in &mut out.events {
            if let Some(container) = timed.event.container_mut() {
                if container.cgroup_id == cgroup_id && container.k8s.is_none() {
                    container.k8s = Some(names.clone());
                }
            }
        }
    }

    /// Feeds one record.
    pub fn handle(&mut self, record: &Record, out: &mut Output) {
        match record {
            Record::CgroupMkdir(r) => self.on_mkdir(r, out),
            Record::CgroupRmdir(r) => self.on_rmdir(r, out),
            Record::Exec(r) => self.on_exec(r, out),
            Record::ExecEnv(r) => {
                self.on_init_env(&r.exec, &r.env);
                self.on_exec(&r.exec, out);
            }
            Record::Signal(r) => self.on_signal(r, out),
            Record::Oom(r) => self.on_oom(r, out),
            Record::Exit(r) => self.on_exit(r, out),
            Record::Mount(r) => self.on_mount(r, out),
            Record::DeviceAccess(r) => self.on_device_access(r, out),
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
            if let Some(c) = self.containers.get_mut(&container) {
                c.sub_cgroups.push(r.id);
            }
            return;
        }
        let Some(ident) = self.recognizer.recognize(&path) else {
            out.untrack.push(r.id);
            return;
        };
        let container = Container::new(ident, r.id, path.as_str(), r.header.ts_ns);
        self.add(container, path, r.header.ts_ns, out);
    }

    fn on_rmdir(&mut self, r: &CgroupRmdirRecord, out: &mut Output) {
        let Some(c) = self.containers.remove(&r.id) else {
            // A sub-cgroup going away, or a cgroup that was never a container.
            if let Some(owner) = self.owner.remove(&r.id) {
                if let Some(c) = self.containers.get_mut(&owner) {
                    c.sub_cgroups.retain(|&sub| sub != r.id);
                }
            }
            return;
        };
        self.owner.remove(&r.id);
        for sub in &c.sub_cgroups {
            self.owner.remove(sub);
        }
        self.by_path.remove(&*c.cgroup_path);
        for users in self.device_users.remove(r.id) {
            out.notes.push(Note::GpuUsers(users));
        }
        if self.violations.iter().any(|v| v.container == r.id) || !c.mounts.is_empty() {
            self.gone.insert(r.id, ContainerRef::of(&c));
            self.check_volumes(r.header.ts_ns, out);
        }
        let (exit_code, cause) = match c.init_exit {
            Some((_, status, cause)) => (Some(status.shell_code()), Some(cause)),
            None => (None, None),
        };
        let (verdict, verdict_process) = match verdict(&c) {
            Some((cause, process)) => (Some(cause), Some(process)),
            None => (None, None),
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::ContainerDelete(ContainerDelete {
                container: ContainerRef::of(&c),
                lifetime_seconds: seconds(r.header.ts_ns.saturating_sub(c.created_ns)),
                exit_code,
                cause,
                verdict,
                verdict_process,
                was_lingering: c.lingering,
                agent: c.ident.agent.clone().or_else(|| {
                    let (_, value) = c.init_env.as_ref()?;
                    crate::enrich::labels::sanitize(value, crate::defaults::LABEL_MAX_LEN)
                }),
            }),
        });
    }

    /// The agent-name variable, as the kernel side read it at the first exec in the cgroup or at
    /// the exec of pid 1 of a nested pid namespace: the latter's is the init's and wins.
    fn on_init_env(&mut self, r: &ExecRecord, env: &EnvValue) {
        let ns_init = self.is_ns_init(r);
        let Some(c) = self
            .owner
            .get(&r.header.cgroup_id)
            .and_then(|id| self.containers.get_mut(id))
        else {
            return;
        };
        let len = (env.value_len as usize).min(env.value.len());
        if c.init_env.is_none() || ns_init {
            c.init_env = Some((r.header.tgid, Arc::from(&env.value[..len])));
        }
    }

    /// Whether an exec is by pid 1 of a pid namespace below the host's: a container's init.
    fn is_ns_init(&self, r: &ExecRecord) -> bool {
        r.ns_level > self.config.host_ns_level && r.ns_pid == 1
    }

    fn on_exec(&mut self, r: &ExecRecord, out: &mut Output) {
        let ns_init = self.is_ns_init(r);
        let Some(c) = self
            .owner
            .get(&r.header.cgroup_id)
            .and_then(|id| self.containers.get_mut(id))
        else {
            return;
        };
        let tgid = r.header.tgid;
        let comm = comm_str(&r.comm);
        if !ns_init && c.init.is_none() && is_runtime(&comm) {
            // A runtime's own binary run in the cgroup before the container has an init, from
            // outside its pid namespace (runc re-executing itself from its sealed copy, crun,
            // conmon, a shim): a helper, not the container's, and so are the children it forks.
            c.bootstrap.insert(tgid);
            return;
        }
        c.bootstrap.remove(&tgid);
        if ns_init && !c.init_by_ns {
            // Pid 1 of the container's own pid namespace is its init, whatever exec'd in the
            // cgroup before it: that was a runtime's helper (a bootstrap stage, conmon, …).
            if let Some(helper) = c.init.filter(|&old| old != tgid) {
                c.processes.remove(&helper);
                c.bootstrap.insert(helper);
            }
            c.init = Some(tgid);
            c.init_by_ns = true;
        }
        let init = *c.init.get_or_insert(tgid);
        c.processes.insert(tgid);
        let first = c.first_exec_ns.is_none() && !c.preexisting;
        let start_seconds = if first {
            c.first_exec_ns = Some(r.header.ts_ns);
            Some(seconds(r.header.ts_ns.saturating_sub(c.created_ns)))
        } else {
            None
        };
        let mount_seconds =
            (first && self.config.mount_syscalls).then(|| seconds(c.mount_ns_before_start));
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::ProcessExec(ProcessExec {
                container: ContainerRef::of(c),
                pid: tgid,
                comm,
                filename: sized_str(&r.filename, r.filename_len),
                is_container_init: init == tgid,
                start_seconds,
                mount_seconds,
            }),
        });
        if init == tgid {
            out.notes.push(Note::InitExec {
                cgroup_id: c.cgroup_id,
                pid: tgid,
                mnt_ns: r.mnt_ns,
                agent_env: match &c.init_env {
                    Some((pid, value)) if *pid == tgid => Some(Arc::clone(value)),
                    _ => None,
                },
            });
        }
    }

    /// A container's mount table as the kernel has it now (read at its payload's start and at
    /// each change): reports each bind that is new or changed, and re-evaluates the volume
    /// policy.
    pub fn on_mount_table(
        &mut self,
        cgroup_id: u64,
        binds: Vec<Bind>,
        ts_ns: u64,
        out: &mut Output,
    ) {
        let Some(c) = self.containers.get_mut(&cgroup_id) else {
            return;
        };
        if c.mounts == binds {
            return;
        }
        let container = ContainerRef::of(c);
        for bind in binds.iter().filter(|b| !c.mounts.contains(b)) {
            out.events.push(Timed {
                ts_ns,
                event: Event::VolumeMount(VolumeMount {
                    container: container.clone(),
                    bind: BindState {
                        source: bind.source.clone(),
                        target: bind.target.clone(),
                        read_only: bind.read_only,
                    },
                }),
            });
        }
        c.mounts = binds;
        self.check_volumes(ts_ns, out);
    }

    fn on_device_access(&mut self, r: &DeviceAccessRecord, out: &mut Output) {
        use tracer_common::device_access as da;
        let Some(&owner) = self.owner.get(&r.header.cgroup_id) else {
            return;
        };
        let Some(c) = self.containers.get(&owner) else {
            return;
        };
        let number = (r.major, r.minor);
        let (device, gpu) = match self.device_names.get(&number) {
            Some(path) => (
                path.to_string(),
                path.rsplit('/').next().unwrap_or(path).to_string(),
            ),
            None => (
                format!("char {}:{}", r.major, r.minor),
                format!("{}:{}", r.major, r.minor),
            ),
        };
        let is_gpu = !(r.major == crate::source::devices::NVIDIA_MAJOR
            && r.minor >= crate::source::devices::NVIDIA_FIRST_CONTROL_MINOR);
        let decision = match r.decision {
            da::ALLOWED if self.config.devices_v1_controller => DeviceDecision::Undecided,
            da::ALLOWED => DeviceDecision::Allowed,
            da::DENIED => DeviceDecision::Denied,
            _ => DeviceDecision::Undecided,
        };
        let asked = r.access_type >> 16;
        let access: Vec<&str> = [
            (da::READ, "read"),
            (da::WRITE, "write"),
            (da::MKNOD, "mknod"),
        ]
        .into_iter()
        .filter(|(bit, _)| asked & bit != 0)
        .map(|(_, name)| name)
        .collect();
        let others = (decision != DeviceDecision::Denied)
            .then(|| self.device_users.add(number, is_gpu, &gpu, owner))
            .flatten();
        let first_use = others.is_some();
        let container = ContainerRef::of(c);
        // The caller's ids, where the kernel gave them (tgid 0, the idle task, is never one).
        let caller = (r.header.tgid != 0).then_some(r.header.tgid);
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::DeviceAccess(DeviceAccess {
                container: container.clone(),
                pid: caller,
                comm: caller.map(|_| comm_str(&r.comm)),
                device: device.clone(),
                major: r.major,
                minor: r.minor,
                gpu: gpu.clone(),
                access: access.join(","),
                decision,
                first_use,
                is_gpu,
            }),
        });
        if !is_gpu {
            return;
        }
        if let Some(users) = first_use
            .then(|| self.device_users.gpu_users(number))
            .flatten()
        {
            out.notes.push(Note::GpuUsers(users));
        }
        if let Some(others) = others.filter(|others| !others.is_empty()) {
            let mut containers: Vec<Arc<str>> = others
                .iter()
                .chain([&owner])
                .filter_map(|id| self.containers.get(id).map(|c| c.ident.id.clone()))
                .collect();
            containers.sort();
            out.events.push(Timed {
                ts_ns: r.header.ts_ns,
                event: Event::GpuSharing(GpuSharing {
                    container,
                    device,
                    gpu,
                    containers,
                }),
            });
        }
    }

    fn on_mount(&mut self, r: &MountRecord, out: &mut Output) {
        let Some(&owner) = self.owner.get(&r.header.cgroup_id) else {
            return;
        };
        let Some(c) = self.containers.get_mut(&owner) else {
            return;
        };
        let source = c_str(&r.source);
        let target = c_str(&r.target);
        let duration = r.header.ts_ns.saturating_sub(r.start_ns);
        let started = c.first_exec_ns.is_some() || c.preexisting;
        if !started {
            c.mount_ns_before_start += duration;
        }
        // What the call asked for: a first bind ignores MS_RDONLY (only a remount applies it).
        let writable = match r.call {
            mount_call::MOUNT => {
                r.flags & MS_RDONLY == 0 || (r.flags & MS_BIND != 0 && r.flags & MS_REMOUNT == 0)
            }
            mount_call::FSMOUNT | mount_call::MOUNT_SETATTR => r.attr_set & MOUNT_ATTR_RDONLY == 0,
            _ => true,
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::Mount(MountCall {
                container: ContainerRef::of(c),
                pid: r.header.tgid,
                comm: comm_str(&r.comm),
                call: call_name(r.call),
                source,
                target,
                fstype: c_str(&r.fstype),
                flags: r.flags,
                attr_set: r.attr_set,
                attr_clr: r.attr_clr,
                result: r.ret,
                duration_seconds: seconds(duration),
                writable,
            }),
        });
    }

    /// Re-evaluates the volume policy over started, live containers and reports what began or
    /// ended.
    fn check_volumes(&mut self, ts_ns: u64, out: &mut Output) {
        let started = self
            .containers
            .iter()
            .filter(|(_, c)| c.first_exec_ns.is_some() || c.preexisting)
            .map(|(id, c)| (*id, c.mounts.as_slice()));
        let (now, sharing) = volumes::violations(started, &self.config.read_only_volumes);
        let now: HashSet<Violation> = now.into_iter().collect();
        let ids_of = |source: &str, containers: &HashMap<u64, Container>| -> Vec<Arc<str>> {
            sharing
                .get(source)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| containers.get(id).map(|c| c.ident.id.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut changes: Vec<(Violation, bool)> = now
            .difference(&self.violations)
            .map(|v| (v.clone(), true))
            .chain(self.violations.difference(&now).map(|v| (v.clone(), false)))
            .collect();
        changes.sort_by(|a, b| (a.0.container, &a.0.source).cmp(&(b.0.container, &b.0.source)));
        for (v, active) in changes {
            let container = match self.containers.get(&v.container) {
                Some(c) => ContainerRef::of(c),
                None => match self.gone.get(&v.container) {
                    Some(c) => c.clone(),
                    None => continue,
                },
            };
            let mut containers = ids_of(&v.source, &self.containers);
            if containers.is_empty() {
                containers.push(container.container_id.clone());
            }
            out.events.push(Timed {
                ts_ns,
                event: Event::VolumeViolation(VolumeViolation {
                    container,
                    kind: v.kind,
                    source: v.source,
                    active,
                    containers,
                }),
            });
        }
        self.violations = now;
        self.gone.clear();
    }

    fn sender(
        &self,
        pid: u32,
        tgid: u32,
        comm: &[u8],
        cgroup_id: u64,
        kind: SenderKind,
        ancestry: Arc<[AncestorRef]>,
    ) -> Sender {
        let comm = comm_str(comm);
        let class = SenderClass::of(kind, &comm, ancestry.iter().map(|a| a.comm.as_str()));
        Sender {
            pid: tgid,
            tid: pid,
            comm,
            cgroup_id,
            container_id: self
                .container_of_cgroup(cgroup_id)
                .map(|c| c.ident.id.clone()),
            ancestry,
            class,
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
        let kind = SenderKind::of(r.signal, r.code, r.evidence, h.tgid, r.target_tgid, same);
        let len = (r.ancestry_len as usize).min(r.ancestry.len());
        let ancestry: Arc<[AncestorRef]> = r.ancestry[..len]
            .iter()
            .map(|a| AncestorRef {
                pid: a.tgid,
                comm: comm_str(&a.comm),
            })
            .collect();
        let event = SignalSent {
            container: ContainerRef::of(c),
            signal: signal_name(r.signal),
            target_pid: r.target_tgid,
            target_tid: r.target_pid,
            target_comm: comm_str(&r.target_comm),
            sender: self.sender(
                h.pid,
                h.tgid,
                &r.sender_comm,
                h.cgroup_id,
                kind,
                Arc::clone(&ancestry),
            ),
            sender_kind: kind,
            si_code: r.code,
        };
        // The first send of each signal, for the process's exit, with the sender's ancestry.
        if let Some(c) = self.containers.get_mut(&target) {
            let sends = Sends::of(&mut c.sends, r.target_tgid, r.target_start_ns);
            if sends.track.add(SignalOrigin::of(r)) {
                sends.ancestry.push((r.signal, ancestry));
            }
        }
        out.events.push(Timed {
            ts_ns: h.ts_ns,
            event: Event::Signal(event),
        });
    }

    fn on_oom(&mut self, r: &OomRecord, out: &mut Output) {
        let Some(&owner) = self.owner.get(&r.victim_cgroup_id) else {
            return;
        };
        let Some(c) = self.containers.get_mut(&owner) else {
            return;
        };
        Sends::of(&mut c.sends, r.victim_tgid, r.victim_start_ns)
            .track
            .oom_ns = r.header.ts_ns;
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
        let tgid = r.header.tgid;
        // What was sent to this process (not to an earlier one with the same tgid).
        let sends = self
            .containers
            .get_mut(&owner)
            .and_then(|c| c.sends.remove(&tgid))
            .filter(|s| s.track.start_ns == r.start_ns)
            .unwrap_or_default();
        let verdict = attribute(r, &sends.track, |cg| self.owner.get(&cg) == Some(&owner));
        let sender = verdict.killer.map(|k| {
            let same = self.owner.get(&k.sender_cgroup_id) == Some(&owner);
            let kind = SenderKind::of(k.signal, k.code, k.evidence, k.sender_tgid, tgid, same);
            let ancestry = sends
                .ancestry
                .iter()
                .find(|(signal, _)| *signal == k.signal)
                .map(|(_, a)| Arc::clone(a))
                .unwrap_or_else(|| Arc::clone(&self.no_ancestry));
            self.sender(
                k.sender_pid,
                k.sender_tgid,
                &k.sender_comm,
                k.sender_cgroup_id,
                kind,
                ancestry,
            )
        });
        let Some(c) = self.containers.get_mut(&owner) else {
            return;
        };
        let comm = comm_str(&r.comm);
        // A runtime's helper that never ran the payload, or its child that did not either, or
        // a process under a runtime's name that never exec'd the payload (runc's bootstrap
        // stages, `runc:[0:PARENT]` and its kin, which runc forks with CLONE_PARENT, so their
        // parent is outside, and which may exit after the payload's exec), or, once the
        // container's init is pid 1 of its own pid namespace, any process outside that
        // namespace that did not exec the payload: not a process of the container. (Helpers
        // stay known until the container goes, so that a helper's child that outlives its
        // parent is still told apart.)
        let payload = c.processes.contains(&tgid);
        if !payload
            && (c.bootstrap.contains(&tgid)
                || c.bootstrap.contains(&r.parent_tgid)
                || is_runtime(&comm)
                || (c.init_by_ns && r.ns_level <= self.config.host_ns_level))
        {
            c.bootstrap.insert(tgid);
            return;
        }
        let is_init = c.init == Some(tgid);
        c.processes.remove(&tgid);
        let ending = Ending {
            process: ProcessRef {
                pid: tgid,
                comm: comm.clone(),
            },
            status: verdict.status,
            cause: verdict.cause,
        };
        if verdict.cause == ExitCause::OomKill && c.oom_victim.is_none() {
            c.oom_victim = Some(ending.process.clone());
        }
        if is_init {
            c.init_ending = Some(ending);
        } else if c.init == Some(r.parent_tgid) && c.init_ending.is_none() {
            c.last_child_ending = Some(ending);
        }
        if is_init {
            c.init_exit = Some((r.header.ts_ns, verdict.status, verdict.cause));
            c.exited_init = Some(InitRef {
                pid: tgid,
                comm: comm.clone(),
                cause: Some(verdict.cause),
                sender: sender.clone(),
            });
        }
        let init = match (verdict.cause, verdict.killer) {
            (ExitCause::InitExited, Some(k)) => Some(match &c.exited_init {
                Some(init) if init.pid == k.sender_tgid => init.clone(),
                // An init of a pid namespace of the container's own, not its init.
                _ => InitRef {
                    pid: k.sender_tgid,
                    comm: comm_str(&k.sender_comm),
                    cause: None,
                    sender: None,
                },
            }),
            _ => None,
        };
        let (signal, core_dumped) = match verdict.status {
            WaitStatus::Exited(_) => (None, false),
            WaitStatus::Signaled {
                signal,
                core_dumped,
            } => (Some(signal_name(signal)), core_dumped),
        };
        out.events.push(Timed {
            ts_ns: r.header.ts_ns,
            event: Event::ProcessExit(Box::new(ProcessExit {
                container: ContainerRef::of(c),
                pid: tgid,
                comm,
                is_container_init: is_init,
                exit_code: verdict.status.shell_code(),
                signal,
                core_dumped,
                cause: verdict.cause,
                policy: verdict.policy.map(|p| p.as_str()),
                syscall: match verdict.policy {
                    Some(Policy::Seccomp { syscall }) => Some(SyscallRef::of(syscall)),
                    _ => None,
                },
                limit: match verdict.policy {
                    Some(Policy::Rlimit { limit }) => Some(limit),
                    _ => None,
                },
                init,
                sender,
                escalated_from: verdict.escalated_from.map(|s| signal_name(s.signal)),
                grace_seconds: verdict.grace_ns().map(seconds),
                wait_status: r.exit_status,
            })),
        });
    }
}

/// The container's verdict and the process it is about (see [`ContainerDelete::verdict`]).
fn verdict(c: &Container) -> Option<(ExitCause, ProcessRef)> {
    let init = c.init_ending.as_ref()?;
    // The init's exit followed from an OOM kill in the container: its own, or a child's that
    // it then reported by failing (or was killed along with).
    if init.cause != ExitCause::Exited {
        if let Some(victim) = &c.oom_victim {
            return Some((ExitCause::OomKill, victim.clone()));
        }
    }
    if let Some(child) = &c.last_child_ending {
        let forwarded = match (init.status, child.status) {
            // A wrapper passes the child's end on: 128+N for a signal, or its exit code.
            (WaitStatus::Exited(code), WaitStatus::Signaled { signal, .. }) => {
                u32::from(code) == 128 + signal
            }
            (WaitStatus::Exited(code), WaitStatus::Exited(child_code)) => {
                is_init_wrapper(&init.process.comm) && code == child_code
            }
            _ => false,
        };
        let reporter = is_init_wrapper(&init.process.comm) || is_shell(&init.process.comm);
        if forwarded && reporter {
            return Some((child.cause, child.process.clone()));
        }
    }
    Some((init.cause, init.process.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::containers::Recognizer;
    use crate::replay::{cgroup, exec, exit as exit_of_child, named, origin, sent, signal};
    use tracer_common::Kind;

    const HOST_CG: u64 = crate::replay::HOST_CGROUP;
    const RUNTIME: u32 = crate::replay::RUNTIME_PID;
    const SECOND: u64 = 1_000_000_000;

    fn id64(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    /// The exit of a process whose parent is outside the container.
    fn exit(ts: u64, cg: u64, pid: u32, status: u32) -> Record {
        exit_of_child(ts, cg, pid, 1, status)
    }

    fn model() -> Model<Recognizer> {
        Model::new(
            Recognizer::new(&[], None).unwrap(),
            ModelConfig {
                linger_after_ns: 30 * SECOND,
                ..ModelConfig::default()
            },
        )
    }

    fn replay(model: &mut Model<Recognizer>, records: &[Record]) -> Output {
        let mut out = Output::default();
        for r in records {
            model.handle(r, &mut out);
        }
        out
    }

    fn events(out: &Output) -> Vec<&Event> {
        out.events.iter().map(|t| &t.event).collect()
    }

    /// The verdict of a container whose init (pid 500, named `init`) ends with `init_status`
    /// after its child (pid 501) ended with `child_status` and `child_slots`.
    fn verdict_of(
        init: &str,
        init_status: u32,
        child_status: u32,
        child_slots: &[SignalOrigin],
        oom: bool,
    ) -> (Option<ExitCause>, Option<u32>, Option<u32>) {
        let path = format!("/docker/{}", id64('c'));
        let mut m = model();
        let mut records = vec![
            cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
            named(exec(SECOND + 10, 100, 500, "/init"), init),
        ];
        if oom {
            records.push(crate::replay::oom(2 * SECOND - 10, 42, 501, 100));
        }
        records.extend(child_slots.iter().map(|send| sent(send, 501, 100)));
        records.extend([
            exit_of_child(2 * SECOND, 100, 501, 500, child_status),
            named(exit_of_child(3 * SECOND, 100, 500, 1, init_status), init),
            cgroup(Kind::CgroupRmdir, 4 * SECOND, 100, &path),
        ]);
        let out = replay(&mut m, &records);
        let d = events(&out)
            .into_iter()
            .find_map(|e| match e {
                Event::ContainerDelete(d) => Some(d.clone()),
                _ => None,
            })
            .expect("delete");
        (d.verdict, d.verdict_process.map(|p| p.pid), d.exit_code)
    }

    #[test]
    fn the_verdict_looks_through_what_the_init_only_reports() {
        let segv = origin(2 * SECOND - 5, 501, 100, 11, 1);
        // tini forwards its payload's SIGSEGV as 139: the payload crashed.
        assert_eq!(
            verdict_of("tini", 139 << 8, 11, &[segv], false),
            (Some(ExitCause::Crash), Some(501), Some(139))
        );
        // So does a shell that ran it.
        assert_eq!(
            verdict_of("sh", 139 << 8, 11, &[segv], false),
            (Some(ExitCause::Crash), Some(501), Some(139))
        );
        // A wrapper's plain exit code is its child's too.
        assert_eq!(
            verdict_of("dumb-init", 3 << 8, 3 << 8, &[], false),
            (Some(ExitCause::Failed), Some(501), Some(3))
        );
        // A shell exiting 139 for another reason than its child is taken at its word.
        assert_eq!(
            verdict_of("sh", 139 << 8, 0, &[], false),
            (Some(ExitCause::Failed), Some(500), Some(139))
        );
        // Not a reporter: the init's own cause.
        assert_eq!(
            verdict_of("agent", 139 << 8, 11, &[segv], false),
            (Some(ExitCause::Failed), Some(500), Some(139))
        );
        // The OOM killer took the child, and the init failed after it.
        let kill = origin(2 * SECOND - 5, 42, HOST_CG, 9, 0x80);
        assert_eq!(
            verdict_of("agent", 1 << 8, 9, &[kill], true),
            (Some(ExitCause::OomKill), Some(501), Some(1))
        );
        // A clean exit after it stays clean.
        assert_eq!(
            verdict_of("agent", 0, 9, &[kill], true),
            (Some(ExitCause::Exited), Some(500), Some(0))
        );
    }

    /// Each cause the kernel side tells apart, replayed through the model to the process exit
    /// and the container's verdict.
    #[test]
    fn each_cause_of_the_kernels_own_kills_replays_to_exit_and_verdict() {
        use tracer_common::signal_evidence::{NO_SIGINFO, OVER_CPU_LIMIT, SENDER_EXITING};
        let with = |mut o: SignalOrigin, syscall: u32, evidence: u32| {
            o.syscall = syscall;
            o.evidence = evidence;
            o
        };
        let (pid, t) = (500, 2 * SECOND);
        // (wait status, the fatal send, cause, policy, limit, syscall)
        let cases = [
            (
                31 | 0x80,
                with(origin(t, pid, 100, 31, 1), 83, 0),
                ExitCause::PolicyKill,
                Some("seccomp"),
                None,
                Some((83, Some("mkdir"))),
            ),
            (
                9,
                with(origin(t, pid, 100, 9, 0x80), 0, OVER_CPU_LIMIT),
                ExitCause::PolicyKill,
                Some("rlimit"),
                Some("cpu"),
                None,
            ),
            (
                25 | 0x80,
                with(origin(t, pid, 100, 25, 0), 0, NO_SIGINFO),
                ExitCause::PolicyKill,
                Some("rlimit"),
                Some("fsize"),
                None,
            ),
            (
                9,
                origin(t, pid, 100, 9, 0x80),
                ExitCause::PolicyKill,
                Some("kernel"),
                None,
                None,
            ),
            (
                13,
                with(origin(t, pid, 100, 13, 0), 0, NO_SIGINFO),
                ExitCause::BrokenPipe,
                None,
                None,
                None,
            ),
            (
                13,
                origin(t, pid, 100, 13, 0),
                ExitCause::SelfSignal,
                None,
                None,
                None,
            ),
        ];
        for (status, send, cause, policy, limit, syscall) in cases {
            let path = format!("/docker/{}", id64('e'));
            let mut m = model();
            let out = replay(
                &mut m,
                &[
                    cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
                    exec(SECOND + 10, 100, pid, "/bin/agent"),
                    sent(&send, pid, 100),
                    exit(t + 10, 100, pid, status),
                    cgroup(Kind::CgroupRmdir, 3 * SECOND, 100, &path),
                ],
            );
            let ev = events(&out);
            let Some(Event::ProcessExit(x)) =
                ev.iter().find(|e| matches!(e, Event::ProcessExit(_)))
            else {
                panic!("no exit: {ev:#?}")
            };
            assert_eq!(
                (x.cause, x.policy, x.limit),
                (cause, policy, limit),
                "{x:#?}"
            );
            assert_eq!(
                x.syscall.as_ref().map(|s| (s.number, s.name)),
                syscall,
                "{x:#?}"
            );
            assert_eq!(x.sender.as_ref().map(|s| s.pid), Some(pid), "{x:#?}");
            let Some(Event::ContainerDelete(d)) = ev.last() else {
                panic!("no delete: {ev:#?}")
            };
            assert_eq!(
                (d.verdict, d.verdict_process.as_ref().map(|p| p.pid)),
                (Some(cause), Some(pid))
            );
        }

        // The init is killed from outside; the kernel, in the exiting init's context, kills
        // what is left of its pid namespace: that child names the init, its cause and sender.
        let path = format!("/docker/{}", id64('f'));
        let mut m = model();
        let (init, child) = (600, 601);
        let kill = origin(t, RUNTIME, HOST_CG, 9, 0);
        let zap = with(origin(t + 5, init, 100, 9, 0x80), 0, SENDER_EXITING);
        let out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
                exec(SECOND + 10, 100, init, "/bin/agent"),
                exec(SECOND + 20, 100, child, "/bin/worker"),
                sent(&kill, init, 100),
                exit(t + 10, 100, init, 9),
                sent(&zap, child, 100),
                exit_of_child(t + 20, 100, child, init, 9),
                cgroup(Kind::CgroupRmdir, 3 * SECOND, 100, &path),
            ],
        );
        let ev = events(&out);
        let x = ev
            .iter()
            .find_map(|e| match e {
                Event::ProcessExit(x) if x.pid == child => Some(x),
                _ => None,
            })
            .expect("the child's exit");
        assert_eq!(x.cause, ExitCause::InitExited, "{x:#?}");
        let dead = x.init.as_ref().expect("the init named");
        assert_eq!(
            (dead.pid, dead.comm.as_str(), dead.cause),
            (init, "agent", Some(ExitCause::OrchestratorKill))
        );
        assert_eq!(dead.sender.as_ref().map(|s| s.pid), Some(RUNTIME));
        let Some(Event::ContainerDelete(d)) = ev.last() else {
            panic!("no delete: {ev:#?}")
        };
        assert_eq!(
            (d.verdict, d.verdict_process.as_ref().map(|p| p.pid)),
            (Some(ExitCause::OrchestratorKill), Some(init))
        );
    }
    #[test]
    fn pid_1_of_the_containers_pid_namespace_is_its_init_not_the_helper_before_it() {
        use crate::replay::{exec_in_ns, exit_in_ns};
        let path = format!("/docker/{}", id64('b'));
        let mut m = model();
        let (helper, payload, child) = (700, 701, 702);
        let out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
                // A helper execs in the cgroup first, in the host's pid namespace…
                exec_in_ns(SECOND + 10, 100, helper, "/usr/bin/conmon", helper, 0),
                // …then pid 1 of the container's own namespace, and a child of the helper.
                exec_in_ns(SECOND + 20, 100, payload, "/bin/agent", 1, 1),
                exit_in_ns(SECOND + 25, 100, child, helper, 0, 0),
                exit_in_ns(2 * SECOND, 100, payload, helper, 3 << 8, 1),
                exit_in_ns(2 * SECOND + 5, 100, helper, 1, 0, 0),
                cgroup(Kind::CgroupRmdir, 3 * SECOND, 100, &path),
            ],
        );
        let exits: Vec<&ProcessExit> = events(&out)
            .into_iter()
            .filter_map(|e| match e {
                Event::ProcessExit(x) => Some(&**x),
                _ => None,
            })
            .collect();
        assert_eq!(exits.len(), 1, "only the payload's exit: {exits:#?}");
        assert_eq!((exits[0].pid, exits[0].is_container_init), (payload, true));
        let delete = events(&out)
            .into_iter()
            .find_map(|e| match e {
                Event::ContainerDelete(d) => Some(d),
                _ => None,
            })
            .expect("delete");
        assert_eq!(
            (delete.exit_code, delete.cause),
            (Some(3), Some(ExitCause::Failed))
        );
    }

    /// Podman's runc: `runc init` is moved in, re-executes itself from its sealed copy (a
    /// runtime's name, in the host's pid namespace), and forks its stages with CLONE_PARENT, so
    /// their parent is outside; pid 1 of the new pid namespace execs the payload. Only the
    /// payload is the container's, and the agent-name variable is the payload's.
    #[test]
    fn runc_re_exec_and_its_clone_parent_stages_are_helpers() {
        use crate::replay::{exec_with_env, exit_in_ns};
        let path = format!("/libpod_parent/libpod-{}", id64('c'));
        let mut m = model();
        let (parent, child, init, sibling) = (800, 801, 802, 803);
        let Record::ExecEnv(mut env) = exec_with_env(SECOND + 30, 100, init, "/bin/sh", "pm_agent")
        else {
            unreachable!("exec_with_env makes an exec-env record")
        };
        (env.exec.ns_pid, env.exec.ns_level) = (1, 1);
        let out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
                named(exec(SECOND + 10, 100, parent, "/dev/fd/6"), "runc"),
                named(
                    exit_in_ns(SECOND + 20, 100, child, RUNTIME, 0, 0),
                    "runc:[1:CHILD]",
                ),
                named(
                    exit_in_ns(SECOND + 21, 100, parent, RUNTIME, 0, 0),
                    "runc:[0:PARENT]",
                ),
                Record::ExecEnv(env),
                // A child of the payload that exits before it, named as its parent.
                named(exit_in_ns(SECOND + 40, 100, sibling, init, 0, 1), "sh"),
                named(exit_in_ns(2 * SECOND, 100, init, RUNTIME, 3 << 8, 1), "sh"),
                cgroup(Kind::CgroupRmdir, 3 * SECOND, 100, &path),
            ],
        );
        let ev = events(&out);
        let execs: Vec<&ProcessExec> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ProcessExec(x) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(execs.len(), 1, "only the payload's exec: {execs:#?}");
        assert_eq!((execs[0].pid, execs[0].is_container_init), (init, true));
        assert_eq!(
            out.notes,
            vec![Note::InitExec {
                cgroup_id: 100,
                pid: init,
                mnt_ns: 0,
                agent_env: Some(Arc::from(&b"pm_agent"[..]))
            }]
        );
        let exits: Vec<(u32, bool)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ProcessExit(x) => Some((x.pid, x.is_container_init)),
                _ => None,
            })
            .collect();
        assert_eq!(exits, [(sibling, false), (init, true)], "{ev:#?}");
        let delete = ev
            .iter()
            .find_map(|e| match e {
                Event::ContainerDelete(d) => Some(d),
                _ => None,
            })
            .expect("delete");
        assert_eq!(delete.verdict, Some(ExitCause::Failed));
        assert_eq!(delete.verdict_process.as_ref().map(|p| p.pid), Some(init));
    }

    #[test]
    fn docker_container_killed_after_sigterm() {
        let id = id64('a');
        let path = format!("/docker/{id}");
        let mut m = model();
        let out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
                exec(SECOND + 250_000_000, 100, 500, "/usr/bin/agent"),
                signal(5 * SECOND, RUNTIME, HOST_CG, 500, 100, 15, 0),
                signal(15 * SECOND, RUNTIME, HOST_CG, 500, 100, 9, 0),
                exit(15 * SECOND + 1000, 100, 500, 9),
                cgroup(Kind::CgroupRmdir, 16 * SECOND, 100, &path),
            ],
        );
        let ev = events(&out);
        assert_eq!(ev.len(), 6, "{ev:#?}");
        let Event::ContainerCreate(create) = ev[0] else {
            panic!("{:?}", ev[0])
        };
        assert_eq!(
            (&*create.container.container_id, create.container.runtime),
            (id.as_str(), "docker")
        );
        let Event::ProcessExec(x) = ev[1] else {
            panic!("{:?}", ev[1])
        };
        assert!(x.is_container_init);
        assert_eq!(x.start_seconds, Some(0.25));
        let Event::Signal(s) = ev[2] else {
            panic!("{:?}", ev[2])
        };
        assert_eq!(
            (&*s.signal, s.sender_kind),
            ("SIGTERM", SenderKind::Outside)
        );
        let Event::ProcessExit(e) = ev[4] else {
            panic!("{:?}", ev[4])
        };
        assert!(e.is_container_init);
        assert_eq!((e.exit_code, e.cause), (137, ExitCause::OrchestratorKill));
        assert_eq!(e.sender.as_ref().map(|s| s.pid), Some(RUNTIME));
        assert_eq!(e.escalated_from.as_deref(), Some("SIGTERM"));
        assert_eq!(e.grace_seconds, Some(10.0));
        let Event::ContainerDelete(d) = ev[5] else {
            panic!("{:?}", ev[5])
        };
        assert_eq!(
            (d.exit_code, d.cause),
            (Some(137), Some(ExitCause::OrchestratorKill))
        );
        assert_eq!(d.lifetime_seconds, 15.0);
        assert_eq!(m.containers().count(), 0);
    }

    /// runc moves its bootstrap process in, which forks a child, which forks the container's
    /// init; only the init execs the payload. The bootstrap stages, named by runc, are not the
    /// container's, also the first, which exits after the payload's exec here.
    #[test]
    fn runc_bootstrap_stages_are_not_the_container() {
        let path = "/job-1";
        let mut m = Model::new(
            Recognizer::new(&["^/job-(?P<id>\\d+)$".to_string()], None).unwrap(),
            ModelConfig::default(),
        );
        let out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 900, path),
                named(
                    exit_of_child(2 * SECOND, 900, 911, RUNTIME, 0),
                    "runc:[1:CHILD]",
                ),
                exec(2 * SECOND, 900, 912, "/bin/sleep"),
                named(
                    exit_of_child(2 * SECOND, 900, 910, RUNTIME, 0),
                    "runc:[0:PARENT]",
                ),
                sent(&origin(3 * SECOND, RUNTIME, HOST_CG, 9, 0), 912, 900),
                exit_of_child(3 * SECOND, 900, 912, 911, 9),
                cgroup(Kind::CgroupRmdir, 4 * SECOND, 900, path),
            ],
        );
        let ev = events(&out);
        // create, exec, the kill, exit, delete
        assert_eq!(ev.len(), 5, "{ev:#?}");
        let Event::ProcessExit(e) = ev[3] else {
            panic!("{:?}", ev[3])
        };
        assert_eq!((e.pid, e.is_container_init, e.exit_code), (912, true, 137));
        let Event::ContainerDelete(d) = ev[4] else {
            panic!("{:?}", ev[4])
        };
        assert_eq!(
            (d.exit_code, d.cause),
            (Some(137), Some(ExitCause::OrchestratorKill))
        );
    }

    #[test]
    fn other_cgroups_are_untracked_and_ignored() {
        let mut m = model();
        let out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 7, "/system.slice/cron.service"),
                exec(2 * SECOND, 7, 70, "/usr/sbin/cron"),
                exit(3 * SECOND, 7, 70, 0),
                cgroup(
                    Kind::CgroupRmdir,
                    4 * SECOND,
                    7,
                    "/system.slice/cron.service",
                ),
            ],
        );
        assert!(out.events.is_empty(), "{:#?}", out.events);
        assert_eq!(out.untrack, vec![7]);
    }

    #[test]
    fn sub_cgroups_belong_to_their_container_and_peers_are_recognised() {
        let id = id64('b');
        let path = format!("/docker/{id}");
        let mut m = model();
        let out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 200, &path),
                cgroup(Kind::CgroupMkdir, SECOND, 201, &format!("{path}/workers")),
                exec(2 * SECOND, 200, 600, "/sbin/init"),
                exec(3 * SECOND, 201, 601, "/usr/bin/worker"),
                // The init kills the worker in the sub-cgroup.
                sent(&origin(4 * SECOND, 600, 200, 9, 0), 601, 201),
                exit(4 * SECOND, 201, 601, 9),
                cgroup(
                    Kind::CgroupRmdir,
                    5 * SECOND,
                    201,
                    &format!("{path}/workers"),
                ),
            ],
        );
        assert!(out.untrack.is_empty());
        let ev = events(&out);
        // create, two execs, the kill, exit
        assert_eq!(ev.len(), 5, "{ev:#?}");
        let Event::ProcessExit(e) = ev[4] else {
            panic!("{:?}", ev[4])
        };
        assert_eq!(*e.container.container_id, *id);
        assert!(!e.is_container_init);
        assert_eq!(e.cause, ExitCause::PeerKill);
        assert_eq!(
            e.sender.as_ref().and_then(|s| s.container_id.as_deref()),
            Some(id.as_str())
        );
        // Removing the sub-cgroup does not delete the container.
        assert_eq!(m.containers().count(), 1);
    }

    /// A tgid is reused: what was sent to the earlier process is not the later one's.
    #[test]
    fn sends_to_an_earlier_process_with_the_same_tgid_are_not_joined() {
        let path = format!("/docker/{}", id64('9'));
        let with_start = |record: Record, start_ns: u64| match record {
            Record::Signal(mut r) => {
                r.target_start_ns = start_ns;
                Record::Signal(r)
            }
            Record::Exit(mut r) => {
                r.start_ns = start_ns;
                Record::Exit(r)
            }
            other => other,
        };
        let exit_cause = |exit_start: u64| {
            let mut m = model();
            let out = replay(
                &mut m,
                &[
                    cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
                    exec(SECOND + 10, 100, 500, "/bin/agent"),
                    with_start(signal(2 * SECOND, RUNTIME, HOST_CG, 500, 100, 9, 0), SECOND),
                    with_start(exit(2 * SECOND + 10, 100, 500, 9), exit_start),
                ],
            );
            events(&out)
                .into_iter()
                .find_map(|e| match e {
                    Event::ProcessExit(x) => Some((x.cause, x.sender.as_ref().map(|s| s.pid))),
                    _ => None,
                })
                .expect("exit")
        };
        assert_eq!(
            exit_cause(SECOND),
            (ExitCause::OrchestratorKill, Some(RUNTIME))
        );
        assert_eq!(exit_cause(SECOND + 5), (ExitCause::Unknown, None));
    }

    #[test]
    fn repeated_sends_keep_the_first_and_count_the_rest() {
        let mut track = SignalTrack::default();
        let first = origin(SECOND, RUNTIME, HOST_CG, 15, 0);
        assert!(track.add(first));
        assert!(!track.add(origin(2 * SECOND, 42, HOST_CG, 15, 0)));
        assert!(track.add(origin(3 * SECOND, RUNTIME, HOST_CG, 9, 0)));
        assert_eq!(track.slots.len(), 2);
        let term = track.slots[0];
        assert_eq!(
            (term.sender_pid, term.first_ns, term.last_ns, term.count),
            (RUNTIME, SECOND, 2 * SECOND, 2)
        );
    }

    #[test]
    fn duplicate_creation_is_reported_once() {
        let mut m = model();
        let path = format!("/docker/{}", id64('c'));
        let mkdir = cgroup(Kind::CgroupMkdir, SECOND, 300, &path);
        let out = replay(&mut m, &[mkdir, mkdir]);
        assert_eq!(out.events.len(), 1);
    }

    #[test]
    fn lingering_after_init_exit_then_deleted() {
        let path = format!("/docker/{}", id64('d'));
        let mut m = model();
        let mut out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 400, &path),
                exec(2 * SECOND, 400, 700, "/bin/sh"),
                exec(3 * SECOND, 400, 701, "/bin/sleep"),
                exit(4 * SECOND, 400, 700, 0),
            ],
        );
        m.tick(33 * SECOND, &mut out);
        assert!(!events(&out)
            .iter()
            .any(|e| matches!(e, Event::ContainerLingering(_))));
        m.tick(34 * SECOND, &mut out);
        m.tick(40 * SECOND, &mut out);
        let lingering: Vec<_> = events(&out)
            .into_iter()
            .filter_map(|e| match e {
                Event::ContainerLingering(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(lingering.len(), 1, "reported once");
        assert_eq!(lingering[0].processes_left, 1);
        assert_eq!(lingering[0].init_exited_seconds_ago, 30.0);
        let out = replay(
            &mut m,
            &[cgroup(Kind::CgroupRmdir, 50 * SECOND, 400, &path)],
        );
        let Event::ContainerDelete(d) = &out.events[0].event else {
            panic!()
        };
        assert!(d.was_lingering);
        assert_eq!(d.exit_code, Some(0));
    }

    /// A CRI container in a Kubernetes cgroup is asked for its names when it appears and once
    /// more (at its init's exec) if that found nothing; the names the host gives go on the
    /// step's events not yet handed on and on every later one. Others are never asked for.
    #[test]
    fn kubernetes_names_are_asked_for_twice_at_most_and_kept() {
        let mut m = model();
        let id = id64('d');
        let path = format!("/kubepods/besteffort/pod0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/{id}");
        let docker = format!("/docker/{}", id64('f'));
        let mut out = replay(
            &mut m,
            &[
                cgroup(Kind::CgroupMkdir, SECOND, 100, &path),
                cgroup(Kind::CgroupMkdir, SECOND, 200, &docker),
                exec(SECOND + 10, 100, 700, "/bin/sh"),
            ],
        );
        assert_eq!(m.pod_query(200), None, "not a CRI container");
        let query = m.pod_query(100).expect("a CRI container in a pod");
        assert_eq!((query.runtime, &*query.id), ("containerd", id.as_str()));
        assert!(
            m.pod_query(100).is_some(),
            "asked again when the first found nothing"
        );
        assert_eq!(m.pod_query(100), None, "never a third time");
        let names = Arc::new(K8sNames {
            pod_name: "web-0".into(),
            namespace: "shop".into(),
            pod_uid: None,
            container_name: Some("agent".into()),
        });
        m.name_pod(100, names.clone(), &mut out);
        for timed in &out.events {
            let c = timed.event.container().unwrap();
            let expected = (c.cgroup_id == 100).then(|| names.clone());
            assert_eq!(c.k8s, expected, "{:?}", timed.event);
        }
        let later = replay(&mut m, &[cgroup(Kind::CgroupRmdir, 2 * SECOND, 100, &path)]);
        assert_eq!(later.events[0].event.container().unwrap().k8s, Some(names));
        let json = serde_json::to_value(&later.events[0].event).unwrap();
        assert_eq!(
            json["k8s"],
            serde_json::json!({"pod_name": "web-0", "namespace": "shop", "container_name": "agent"})
        );
        let docker_json = serde_json::to_value(&out.events[1].event).unwrap();
        assert!(docker_json.get("k8s").is_none(), "omitted when absent");
    }

    #[test]
    fn adopted_containers_are_followed_to_deletion() {
        let id = id64('e');
        let path = format!("/docker/{id}");
        let mut m = model();
        let mut out = Output::default();
        m.adopt(
            ExistingContainer {
                cgroup_id: 500,
                cgroup_path: path.clone(),
                ident: m.recognizer().recognize(&path).unwrap(),
                sub_cgroups: vec![501],
                processes: vec![800, 801],
                init: Some(800),
            },
            SECOND,
            &mut out,
        );
        let more = replay(
            &mut m,
            &[
                exit(2 * SECOND, 501, 801, 3 << 8),
                exit(3 * SECOND, 500, 800, 0),
                cgroup(Kind::CgroupRmdir, 4 * SECOND, 500, &path),
            ],
        );
        let Event::ContainerCreate(c) = &out.events[0].event else {
            panic!()
        };
        assert!(c.preexisting);
        let ev = events(&more);
        assert_eq!(ev.len(), 3, "{ev:#?}");
        let Event::ProcessExit(child) = ev[0] else {
            panic!()
        };
        assert_eq!(
            (child.is_container_init, child.cause),
            (false, ExitCause::Failed)
        );
        let Event::ProcessExit(init) = ev[1] else {
            panic!()
        };
        assert!(init.is_container_init);
        assert!(matches!(ev[2], Event::ContainerDelete(_)));
    }
}
