//! Each container's agent name, and the events that wait for it. A container's agent name
//! comes from metadata that is there only once its payload starts (the runtime's labels and
//! annotations, the init's environment), while its first events come before: so its events are
//! held here until the init's exec (when every source can answer), its deletion, or a bound in
//! time, whichever comes first; then its name is resolved once and its events go on with it.
//! The way Tetragon's event cache holds events until their process's metadata arrives, with a
//! retry bound and a count of each reason a resolution fell short.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use foldhash::HashMap;

use super::{
    agent::{AgentResolver, ContainerFacts, Shortfall},
    labels::AgentLabels,
};
use crate::{
    model::{ContainerRef, Event, Note, Timed},
    sinks::metrics::AgentName,
};

/// Why a container's agent name fell short of what its sources could have given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleMiss {
    /// Its init had not exec'd within the bound: resolved with what was there then.
    Deadline,
    /// The Docker Engine API answered with an error.
    DockerError,
    /// The Docker Engine API did not answer in time.
    DockerTimeout,
    /// No source gave a value: the container is counted as `unknown`.
    Unresolved,
}

impl SettleMiss {
    pub const ALL: [SettleMiss; 4] = [
        SettleMiss::Deadline,
        SettleMiss::DockerError,
        SettleMiss::DockerTimeout,
        SettleMiss::Unresolved,
    ];

    /// The `reason` label of `clawtrace_agent_name_misses_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            SettleMiss::Deadline => "deadline",
            SettleMiss::DockerError => "docker_error",
            SettleMiss::DockerTimeout => "docker_timeout",
            SettleMiss::Unresolved => "unresolved",
        }
    }
}

/// What [`Pending`] hands on.
#[derive(Debug)]
pub enum Ready {
    /// A container's agent name is settled (its creation, for the spans; the creation event
    /// itself follows as the first [`Ready::Event`]).
    Settled {
        container: ContainerRef,
        created_ns: u64,
        agent: AgentName,
    },
    /// An event of a settled container.
    Event { agent: AgentName, event: Timed },
}

struct Entry {
    container: ContainerRef,
    created_ns: u64,
    pattern_agent: Option<String>,
    init_pid: Option<u32>,
    agent: Option<AgentName>,
    /// Events that came before the agent name was settled, its creation first.
    waiting: Vec<Timed>,
    deadline: Instant,
}

/// The containers being followed, with their agent names once settled.
pub struct Pending {
    resolver: AgentResolver,
    labels: AgentLabels,
    settle_after: Duration,
    /// By cgroup id, looked up on every event (foldhash: see the model's tables).
    containers: HashMap<u64, Entry>,
    /// The agent-name variable the kernel read at each container's init exec, until used.
    init_env: HashMap<u64, Arc<[u8]>>,
    misses: [u64; SettleMiss::ALL.len()],
}

impl Pending {
    pub fn new(resolver: AgentResolver, labels: AgentLabels, settle_after: Duration) -> Pending {
        Pending {
            resolver,
            labels,
            settle_after,
            containers: HashMap::default(),
            init_env: HashMap::default(),
            misses: [0; SettleMiss::ALL.len()],
        }
    }

    /// What the model noted besides events (the init's environment, before its exec event).
    pub fn note(&mut self, note: &Note) {
        if let Note::InitExec {
            cgroup_id,
            agent_env: Some(value),
            ..
        } = note
        {
            self.init_env.insert(*cgroup_id, Arc::clone(value));
        }
    }

    /// Takes an event; what is ready for the sinks goes to `ready`, in order.
    pub fn push(&mut self, rt: &tokio::runtime::Runtime, event: Timed, ready: &mut Vec<Ready>) {
        if let Event::ContainerCreate(create) = &event.event {
            let id = create.container.cgroup_id;
            let preexisting = create.preexisting;
            let entry = Entry {
                container: create.container.clone(),
                created_ns: event.ts_ns,
                pattern_agent: create.agent.clone(),
                init_pid: create.init_pid,
                agent: None,
                deadline: Instant::now() + self.settle_after,
                // The creation waits too: the sinks after enrichment (log records, `top`) see
                // it with the agent name.
                waiting: vec![event],
            };
            self.containers.insert(id, entry);
            // A container found at start already runs its payload: everything is known now.
            if preexisting {
                self.settle(rt, id, false, ready);
            }
            return;
        }
        let Some(id) = event.event.container().map(|c| c.cgroup_id) else {
            return;
        };
        let Some(entry) = self.containers.get_mut(&id) else {
            return;
        };
        let deleted = matches!(event.event, Event::ContainerDelete(_));
        match entry.agent.clone() {
            Some(agent) => ready.push(Ready::Event { agent, event }),
            None => {
                // The init's exec is when every source can answer (its environment exists, the
                // runtime has written its metadata); a deletion ends the wait too.
                let settles = match &event.event {
                    Event::ProcessExec(e) if e.is_container_init => {
                        entry.init_pid = Some(e.pid);
                        true
                    }
                    Event::ContainerDelete(_) => true,
                    _ => false,
                };
                entry.waiting.push(event);
                if settles {
                    self.settle(rt, id, false, ready);
                }
            }
        }
        if deleted {
            if let Some(entry) = self.containers.remove(&id) {
                if let Some(agent) = entry.agent {
                    self.labels.release(&agent, Instant::now());
                }
            }
            self.init_env.remove(&id);
        }
    }

    /// Settles every container whose wait is over by `now`.
    pub fn expire(&mut self, rt: &tokio::runtime::Runtime, now: Instant, ready: &mut Vec<Ready>) {
        let due: Vec<u64> = self
            .containers
            .iter()
            .filter(|(_, e)| e.agent.is_none() && e.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.settle(rt, id, true, ready);
        }
    }

    /// Settles every container still waiting (at shutdown).
    pub fn settle_all(&mut self, rt: &tokio::runtime::Runtime, ready: &mut Vec<Ready>) {
        let ids: Vec<u64> = self.containers.keys().copied().collect();
        for id in ids {
            self.settle(rt, id, false, ready);
        }
    }

    /// Resolves container `id`'s agent name and hands on what waited.
    fn settle(
        &mut self,
        rt: &tokio::runtime::Runtime,
        id: u64,
        late: bool,
        ready: &mut Vec<Ready>,
    ) {
        let Some(entry) = self.containers.get_mut(&id) else {
            return;
        };
        if entry.agent.is_some() {
            return;
        }
        let init_env = self.init_env.remove(&id);
        let resolved = self.resolver.resolve(
            rt,
            &ContainerFacts {
                id: &entry.container.container_id,
                runtime: entry.container.runtime,
                init_pid: entry.init_pid,
                init_env: init_env.as_deref(),
                pattern_agent: entry.pattern_agent.as_deref(),
            },
        );
        for short in &resolved.shortfalls {
            let miss = match short {
                Shortfall::DockerError => SettleMiss::DockerError,
                Shortfall::DockerTimeout => SettleMiss::DockerTimeout,
            };
            self.misses[miss as usize] += 1;
        }
        if late {
            self.misses[SettleMiss::Deadline as usize] += 1;
        }
        if resolved.value.is_none() {
            self.misses[SettleMiss::Unresolved as usize] += 1;
        }
        let agent: AgentName = self
            .labels
            .acquire(resolved.value.as_deref(), Instant::now())
            .into();
        entry.agent = Some(agent.clone());
        ready.push(Ready::Settled {
            container: entry.container.clone(),
            created_ns: entry.created_ns,
            agent: agent.clone(),
        });
        for event in std::mem::take(&mut entry.waiting) {
            ready.push(Ready::Event {
                agent: agent.clone(),
                event,
            });
        }
    }

    /// The containers settled and alive, with their cgroup paths and agent names.
    pub fn settled(&self) -> impl Iterator<Item = (u64, &ContainerRef, &AgentName)> {
        self.containers
            .iter()
            .filter_map(|(id, e)| Some((*id, &e.container, e.agent.as_ref()?)))
    }

    /// Agent names with no container for the label policy's time: their series can go.
    pub fn expired_agents(&mut self, now: Instant) -> Vec<String> {
        self.labels.expire(now)
    }

    /// Containers labelled `_overflow` so far.
    pub fn overflow_total(&self) -> u64 {
        self.labels.overflow_total()
    }

    /// Each reason's count since the last call (reasons with none left out).
    pub fn take_misses(&mut self) -> Vec<(SettleMiss, u64)> {
        let counts = std::mem::take(&mut self.misses);
        SettleMiss::ALL
            .into_iter()
            .map(|m| (m, counts[m as usize]))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        enrich::{
            agent::{AgentConfig, AgentSource},
            labels::LabelPolicy,
        },
        model::{ContainerCreate, ContainerDelete},
    };

    fn pending() -> Pending {
        let resolver = AgentResolver::new(AgentConfig {
            sources: vec![AgentSource::Pattern],
            ..AgentConfig::default()
        });
        let labels = AgentLabels::open(LabelPolicy::default()).unwrap();
        Pending::new(resolver, labels, Duration::ZERO)
    }

    fn container(id: u64) -> ContainerRef {
        ContainerRef {
            container_id: format!("c{id}").into(),
            cgroup_id: id,
            cgroup_path: format!("/c{id}").into(),
            runtime: "custom",
            k8s: None,
        }
    }

    fn create(id: u64, agent: Option<&str>) -> Timed {
        Timed {
            ts_ns: 1,
            event: Event::ContainerCreate(ContainerCreate {
                container: container(id),
                preexisting: false,
                agent: agent.map(String::from),
                init_pid: None,
            }),
        }
    }

    fn delete(id: u64) -> Timed {
        Timed {
            ts_ns: 2,
            event: Event::ContainerDelete(ContainerDelete {
                container: container(id),
                lifetime_seconds: 1.0,
                exit_code: None,
                cause: None,
                verdict: None,
                verdict_process: None,
                was_lingering: false,
                agent: None,
            }),
        }
    }

    /// Events wait for the name; each way it falls short is counted once, and handed over once.
    #[test]
    fn events_wait_for_the_name_and_each_shortfall_is_counted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut p = pending();
        let mut ready = Vec::new();
        // Named by its pattern, settled by its deletion: its creation, then the deletion.
        p.push(&rt, create(1, Some("nemo")), &mut ready);
        assert!(ready.is_empty(), "nothing before the name is settled");
        p.push(&rt, delete(1), &mut ready);
        let kinds: Vec<&str> = ready
            .iter()
            .filter_map(|r| match r {
                Ready::Event { event, .. } => Some(event.event.name()),
                Ready::Settled { .. } => None,
            })
            .collect();
        assert!(
            matches!(&ready[..], [Ready::Settled { agent, .. }, Ready::Event { .. }, Ready::Event { .. }] if &**agent == "nemo")
        );
        assert_eq!(kinds, ["container_create", "container_delete"]);
        assert!(p.take_misses().is_empty());
        // No source names it, and its wait runs out: unresolved, and late.
        ready.clear();
        p.push(&rt, create(2, None), &mut ready);
        p.expire(&rt, Instant::now(), &mut ready);
        assert!(matches!(
            &ready[..],
            [Ready::Settled { .. }, Ready::Event { .. }]
        ));
        assert_eq!(
            p.take_misses(),
            [(SettleMiss::Deadline, 1), (SettleMiss::Unresolved, 1)]
        );
        assert!(p.take_misses().is_empty(), "counted once");
    }
}
