//! What `clawtrace top` shows, kept from the export worker's events: per agent_name, its
//! containers' creations and deletions, their rates, the lingering ones, start latencies, exits
//! by verdict and GPU sharing; and the latest verdicts. Pure: every time is a CLOCK_MONOTONIC
//! nanosecond count, the events' own or one the caller passes, and every store is bounded.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use serde_json::Value;

use crate::{
    explain,
    model::{attribution::ExitCause, ContainerRef, Event, Timed},
    sinks::metrics::AgentName,
};

const SECOND: u64 = 1_000_000_000;
/// The windows of the rates, in seconds: 1 m and 5 m.
pub const RATE_WINDOWS: [u64; 2] = [60, 300];
/// Start latencies kept per agent for the percentiles: the latest this many.
pub const STARTS_KEPT: usize = 1000;
/// Verdict lines kept, the latest.
pub const VERDICTS_KEPT: usize = 200;
/// Exits by a signal kept per live container, the latest: the one its verdict is about is
/// among them (its init's, or the child an init wrapper or shell reports).
const KILLS_KEPT: usize = 8;

/// Where a container's verdict is counted: policy kills and crashes have columns of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitColumn {
    /// `exited`: exit code 0.
    Exited,
    /// `failed`: a non-zero exit code.
    Failed,
    /// `orchestrator_kill` and `peer_kill`: a signal from outside or from a peer.
    Killed,
    OomKill,
    PolicyKill,
    Crash,
    /// `self_signal`, `init_exited`, `broken_pipe`, `unknown`, and no verdict (the init's exit
    /// was not seen).
    Other,
}

impl ExitColumn {
    pub const ALL: [ExitColumn; 7] = [
        ExitColumn::Exited,
        ExitColumn::Failed,
        ExitColumn::Killed,
        ExitColumn::OomKill,
        ExitColumn::PolicyKill,
        ExitColumn::Crash,
        ExitColumn::Other,
    ];

    pub fn of(verdict: Option<ExitCause>) -> ExitColumn {
        match verdict {
            Some(ExitCause::Exited) => ExitColumn::Exited,
            Some(ExitCause::Failed) => ExitColumn::Failed,
            Some(ExitCause::OrchestratorKill | ExitCause::PeerKill) => ExitColumn::Killed,
            Some(ExitCause::OomKill) => ExitColumn::OomKill,
            Some(ExitCause::PolicyKill) => ExitColumn::PolicyKill,
            Some(ExitCause::Crash) => ExitColumn::Crash,
            Some(
                ExitCause::SelfSignal
                | ExitCause::InitExited
                | ExitCause::BrokenPipe
                | ExitCause::Unknown,
            )
            | None => ExitColumn::Other,
        }
    }
}

/// Events per second over the longest rate window, oldest first.
#[derive(Debug, Default)]
struct Rate {
    seconds: VecDeque<(u64, u64)>,
}

impl Rate {
    fn add(&mut self, ts_ns: u64) {
        let second = ts_ns / SECOND;
        // Events come nearly in order: a late one is counted in its own second.
        let at = self.seconds.iter().rposition(|&(s, _)| s <= second);
        match at {
            Some(i) if self.seconds[i].0 == second => self.seconds[i].1 += 1,
            Some(i) => self.seconds.insert(i + 1, (second, 1)),
            None => self.seconds.push_front((second, 1)),
        }
        let longest = RATE_WINDOWS[RATE_WINDOWS.len() - 1];
        if let Some(&(newest, _)) = self.seconds.back() {
            while self
                .seconds
                .front()
                .is_some_and(|&(s, _)| s + longest <= newest)
            {
                self.seconds.pop_front();
            }
        }
    }

    /// Events in the `window` seconds up to `now_ns`.
    fn count(&self, now_ns: u64, window: u64) -> u64 {
        let now = now_ns / SECOND;
        self.seconds
            .iter()
            .filter(|&&(s, _)| s <= now && s + window > now)
            .map(|&(_, n)| n)
            .sum()
    }
}

/// What the board keeps for one agent_name.
#[derive(Debug, Default)]
struct Agent {
    live: u64,
    created: u64,
    deleted: u64,
    creates: Rate,
    deletes: Rate,
    lingering: u64,
    starts: VecDeque<f64>,
    exits: [u64; ExitColumn::ALL.len()],
    gpu_sharing: u64,
}

/// A container alive on the board.
#[derive(Debug)]
struct Live {
    agent: AgentName,
    lingering: bool,
    /// Its latest exits by a signal, as the verdict sentence reads them.
    kills: VecDeque<Event>,
}

/// One agent's line of the table, as of a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub agent: AgentName,
    /// Containers alive now: created (or found running at start) minus deleted, over the run.
    pub live: u64,
    /// Containers created since the start, those found running at start included.
    pub created: u64,
    pub deleted: u64,
    /// Creations per minute, averaged over each of [`RATE_WINDOWS`].
    pub created_per_min: [f64; 2],
    /// Deletions per minute, averaged over each of [`RATE_WINDOWS`].
    pub deleted_per_min: [f64; 2],
    /// Created minus deleted over the last 5 minutes: how fast containers pile up.
    pub backlog: i64,
    /// Live containers reported lingering: the init exited and the cgroup remains.
    pub lingering: u64,
    /// Seconds from the cgroup's creation to the first exec, over the latest [`STARTS_KEPT`].
    pub start_p50: Option<f64>,
    pub start_p99: Option<f64>,
    /// Deleted containers by verdict, in the order of [`ExitColumn::ALL`].
    pub exits: [u64; ExitColumn::ALL.len()],
    /// Containers that began using a GPU another live container was using.
    pub gpu_sharing: u64,
}

impl Row {
    pub fn exits_in(&self, column: ExitColumn) -> u64 {
        self.exits[column as usize]
    }
}

/// A container's end, told in one sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictLine {
    pub ts_ns: u64,
    pub agent: AgentName,
    pub container_id: Arc<str>,
    pub verdict: Option<ExitCause>,
    /// `explain`'s sentence: the cause, the process, and the kill chain of its sender.
    pub text: String,
}

/// Everything `top` shows, fed one event at a time.
#[derive(Debug, Default)]
pub struct Board {
    agents: BTreeMap<AgentName, Agent>,
    containers: HashMap<u64, Live>,
    verdicts: VecDeque<VerdictLine>,
    events: u64,
}

impl Board {
    pub fn new() -> Board {
        Board::default()
    }

    /// A container of `agent` came into being at `ts_ns` (or was found running at start).
    fn created(&mut self, agent: &AgentName, container: &ContainerRef, ts_ns: u64) {
        if self.track(agent, container) {
            self.agent(agent).creates.add(ts_ns);
        }
    }

    /// A container of `agent` is alive and counted as created; false if it was known already.
    /// (One found running at start is counted so, but not in the creation rates: it was not
    /// created in the last minutes.)
    fn track(&mut self, agent: &AgentName, container: &ContainerRef) -> bool {
        if self.containers.contains_key(&container.cgroup_id) {
            return false;
        }
        self.containers.insert(
            container.cgroup_id,
            Live {
                agent: agent.clone(),
                lingering: false,
                kills: VecDeque::new(),
            },
        );
        let row = self.agent(agent);
        row.live += 1;
        row.created += 1;
        true
    }

    /// An event of a container of `agent`.
    pub fn event(&mut self, agent: &AgentName, event: &Timed) {
        self.events += 1;
        let Some(id) = event.event.container().map(|c| c.cgroup_id) else {
            return;
        };
        match &event.event {
            Event::ContainerCreate(c) if c.preexisting => {
                self.track(agent, &c.container);
            }
            Event::ContainerCreate(c) => self.created(agent, &c.container, event.ts_ns),
            Event::ProcessExec(e) => {
                if let Some(seconds) = e.start_seconds {
                    let starts = &mut self.agent(agent).starts;
                    if starts.len() == STARTS_KEPT {
                        starts.pop_front();
                    }
                    starts.push_back(seconds);
                }
            }
            Event::ProcessExit(e) if e.signal.is_some() => {
                if let Some(live) = self.containers.get_mut(&id) {
                    if live.kills.len() == KILLS_KEPT {
                        live.kills.pop_front();
                    }
                    live.kills.push_back(event.event.clone());
                }
            }
            Event::ContainerLingering(_) => {
                let newly = self
                    .containers
                    .get_mut(&id)
                    .is_some_and(|live| !std::mem::replace(&mut live.lingering, true));
                if newly {
                    self.agent(agent).lingering += 1;
                }
            }
            Event::GpuSharing(_) => self.agent(agent).gpu_sharing += 1,
            Event::ContainerDelete(d) => {
                let live = self.containers.remove(&id);
                let mut records: Vec<Value> = live
                    .iter()
                    .flat_map(|l| &l.kills)
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect();
                records.extend(serde_json::to_value(&event.event).ok());
                let row = self.agent(agent);
                if let Some(live) = &live {
                    row.live = row.live.saturating_sub(1);
                    if live.lingering {
                        row.lingering = row.lingering.saturating_sub(1);
                    }
                }
                row.deleted += 1;
                row.deletes.add(event.ts_ns);
                row.exits[ExitColumn::of(d.verdict) as usize] += 1;
                if self.verdicts.len() == VERDICTS_KEPT {
                    self.verdicts.pop_front();
                }
                self.verdicts.push_back(VerdictLine {
                    ts_ns: event.ts_ns,
                    agent: live.map_or_else(|| agent.clone(), |l| l.agent),
                    container_id: d.container.container_id.clone(),
                    verdict: d.verdict,
                    text: explain::verdict(&records),
                });
            }
            _ => {}
        }
    }

    fn agent(&mut self, agent: &AgentName) -> &mut Agent {
        self.agents.entry(agent.clone()).or_default()
    }

    /// Every agent's row as of `now_ns`, by agent name.
    pub fn rows(&self, now_ns: u64) -> Vec<Row> {
        self.agents
            .iter()
            .map(|(name, a)| {
                let per_min = |rate: &Rate, i: usize| {
                    rate.count(now_ns, RATE_WINDOWS[i]) as f64 * 60.0 / RATE_WINDOWS[i] as f64
                };
                let longest = RATE_WINDOWS[RATE_WINDOWS.len() - 1];
                let mut starts: Vec<f64> = a.starts.iter().copied().collect();
                starts.sort_by(f64::total_cmp);
                Row {
                    agent: name.clone(),
                    live: a.live,
                    created: a.created,
                    deleted: a.deleted,
                    created_per_min: [per_min(&a.creates, 0), per_min(&a.creates, 1)],
                    deleted_per_min: [per_min(&a.deletes, 0), per_min(&a.deletes, 1)],
                    backlog: a.creates.count(now_ns, longest) as i64
                        - a.deletes.count(now_ns, longest) as i64,
                    lingering: a.lingering,
                    start_p50: percentile(&starts, 0.50),
                    start_p99: percentile(&starts, 0.99),
                    exits: a.exits,
                    gpu_sharing: a.gpu_sharing,
                }
            })
            .collect()
    }

    /// The latest verdicts, oldest first.
    pub fn verdicts(&self) -> impl DoubleEndedIterator<Item = &VerdictLine> + ExactSizeIterator {
        self.verdicts.iter()
    }

    /// Containers alive, every agent together.
    pub fn live(&self) -> usize {
        self.containers.len()
    }

    /// Events seen so far.
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// The nearest-rank percentile `p` (0 to 1) of `sorted`.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;

    use tracer_common::Kind;

    use super::*;
    use crate::{
        model::{
            attribution::SenderClass, containers::Recognizer, ContainerCreate, ContainerDelete,
            ContainerLingering, GpuSharing, Model, ModelConfig, Output, ProcessExec, ProcessExit,
            ProcessRef, Sender,
        },
        replay,
    };

    /// Container `id` (its cgroup id) as the model reports it: a Docker container whose id is
    /// `id` in 64 hex digits.
    pub(crate) fn container(id: u64) -> ContainerRef {
        let recognizer = Recognizer::new(&[], None).unwrap();
        let mut model = Model::new(recognizer, ModelConfig::default());
        let mut out = Output::default();
        let path = format!("/docker/{id:064x}");
        model.handle(&replay::cgroup(Kind::CgroupMkdir, 1, id, &path), &mut out);
        match &out.events[..] {
            [Timed {
                event: Event::ContainerCreate(c),
                ..
            }] => c.container.clone(),
            other => panic!("{other:?}"),
        }
    }

    pub(crate) fn exec(id: u64, start_seconds: f64) -> Event {
        Event::ProcessExec(ProcessExec {
            container: container(id),
            pid: 100 + id as u32,
            comm: "sleep".into(),
            filename: "/bin/sleep".into(),
            is_container_init: true,
            start_seconds: Some(start_seconds),
            mount_seconds: None,
        })
    }

    /// A SIGKILL of the container's init from `sender_pid`, outside the container.
    pub(crate) fn killed(id: u64, sender_pid: u32) -> Event {
        Event::ProcessExit(Box::new(ProcessExit {
            container: container(id),
            pid: 100 + id as u32,
            comm: "sleep".into(),
            is_container_init: true,
            exit_code: 137,
            signal: Some(Cow::Borrowed("SIGKILL")),
            core_dumped: false,
            cause: ExitCause::OrchestratorKill,
            policy: None,
            syscall: None,
            limit: None,
            init: None,
            sender: Some(Sender {
                pid: sender_pid,
                tid: sender_pid,
                comm: "kubelet".into(),
                cgroup_id: 1,
                container_id: None,
                ancestry: Arc::new([]),
                class: SenderClass::Orchestrator,
            }),
            escalated_from: None,
            grace_seconds: None,
            wait_status: 9,
        }))
    }

    pub(crate) fn deleted(id: u64, verdict: Option<ExitCause>) -> Event {
        Event::ContainerDelete(ContainerDelete {
            container: container(id),
            lifetime_seconds: 1.0,
            exit_code: verdict.map(|_| 137),
            cause: verdict,
            verdict,
            verdict_process: verdict.map(|_| ProcessRef {
                pid: 100 + id as u32,
                comm: "sleep".into(),
            }),
            was_lingering: false,
            agent: None,
        })
    }

    fn at(ts_ns: u64, event: Event) -> Timed {
        Timed { ts_ns, event }
    }

    const MINUTE: u64 = 60 * SECOND;

    #[test]
    fn rows_count_creations_deletions_and_live_containers_per_agent() {
        let (a, b): (AgentName, AgentName) = ("alpha".into(), "beta".into());
        let mut board = Board::new();
        let t0 = 1000 * SECOND;
        board.created(&a, &container(1), t0);
        board.created(&a, &container(2), t0 + SECOND);
        board.created(&b, &container(3), t0 + SECOND);
        // A second settle of the same container counts once.
        board.created(&b, &container(3), t0 + 2 * SECOND);
        board.event(
            &a,
            &at(t0 + 2 * SECOND, deleted(1, Some(ExitCause::Exited))),
        );
        let rows = board.rows(t0 + 3 * SECOND);
        let names: Vec<&str> = rows.iter().map(|r| &*r.agent).collect();
        assert_eq!(names, ["alpha", "beta"]);
        let (alpha, beta) = (&rows[0], &rows[1]);
        assert_eq!((alpha.live, alpha.created, alpha.deleted), (1, 2, 1));
        assert_eq!((beta.live, beta.created, beta.deleted), (1, 1, 0));
        assert_eq!(alpha.backlog, 1);
        assert_eq!(board.live(), 2);
        assert_eq!(alpha.exits_in(ExitColumn::Exited), 1);
    }

    #[test]
    fn rates_are_per_minute_over_one_and_five_minutes() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        let t0 = 10_000 * SECOND;
        // 10 creations 4 minutes before `now`, 6 within the last minute (one of them late,
        // out of order); 3 deletions within the last minute.
        for i in 0..10 {
            board.created(&a, &container(i + 100), t0 + i * SECOND);
        }
        let now = t0 + 4 * MINUTE + 30 * SECOND;
        for i in [10, 11, 12, 14, 15, 13] {
            board.created(&a, &container(i), now - 20 * SECOND + i * SECOND);
        }
        for i in 10..13 {
            board.event(&a, &at(now - SECOND, deleted(i, Some(ExitCause::Failed))));
        }
        let row = &board.rows(now)[0];
        assert_eq!(row.created_per_min, [6.0, 16.0 / 5.0]);
        assert_eq!(row.deleted_per_min, [3.0, 3.0 / 5.0]);
        assert_eq!(row.backlog, 13);
        assert_eq!((row.live, row.created, row.deleted), (13, 16, 3));
        // Six minutes on, the early creations are out of both windows; totals stay.
        let later = &board.rows(now + 6 * MINUTE)[0];
        assert_eq!(later.created_per_min, [0.0, 0.0]);
        assert_eq!(later.backlog, 0);
        assert_eq!(later.created, 16);
    }

    /// Containers found running at start are alive and counted, but were not created in the
    /// last minutes: the rates and the backlog leave them out.
    #[test]
    fn containers_found_at_start_are_not_in_the_rates() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        let now = 10_000 * SECOND;
        let found = |id: u64| {
            at(
                now,
                Event::ContainerCreate(ContainerCreate {
                    container: container(id),
                    preexisting: true,
                    agent: None,
                    init_pid: Some(7),
                }),
            )
        };
        board.event(&a, &found(1));
        board.event(&a, &found(2));
        let created = Event::ContainerCreate(ContainerCreate {
            container: container(3),
            preexisting: false,
            agent: None,
            init_pid: None,
        });
        board.event(&a, &at(now, created));
        let row = &board.rows(now + SECOND)[0];
        assert_eq!((row.live, row.created), (3, 3));
        assert_eq!(row.created_per_min, [1.0, 1.0 / 5.0]);
        assert_eq!(row.backlog, 1);
    }

    #[test]
    fn a_rate_keeps_at_most_five_minutes_of_seconds() {
        let mut rate = Rate::default();
        for s in 0..10_000 {
            rate.add(s * SECOND);
        }
        assert!(rate.seconds.len() <= 300, "{}", rate.seconds.len());
        assert_eq!(rate.count(9_999 * SECOND, 60), 60);
    }

    #[test]
    fn start_latency_percentiles_over_the_latest_starts() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        board.created(&a, &container(1), SECOND);
        for i in 1..=100 {
            board.event(&a, &at(SECOND, exec(1, f64::from(i) / 1000.0)));
        }
        let row = &board.rows(2 * SECOND)[0];
        assert_eq!(row.start_p50, Some(0.050));
        assert_eq!(row.start_p99, Some(0.099));
        // Only the latest STARTS_KEPT count: slow starts push the fast ones out.
        for _ in 0..STARTS_KEPT {
            board.event(&a, &at(SECOND, exec(1, 2.0)));
        }
        assert_eq!(board.rows(2 * SECOND)[0].start_p50, Some(2.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
    }

    #[test]
    fn exits_by_verdict_have_policy_kills_and_crashes_in_columns_of_their_own() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        let verdicts = [
            Some(ExitCause::PolicyKill),
            Some(ExitCause::PolicyKill),
            Some(ExitCause::Crash),
            Some(ExitCause::OrchestratorKill),
            Some(ExitCause::PeerKill),
            Some(ExitCause::OomKill),
            Some(ExitCause::SelfSignal),
            None,
        ];
        for (i, verdict) in verdicts.into_iter().enumerate() {
            let id = i as u64 + 1;
            board.created(&a, &container(id), SECOND);
            board.event(&a, &at(2 * SECOND, deleted(id, verdict)));
        }
        let row = &board.rows(3 * SECOND)[0];
        let counts: Vec<u64> = ExitColumn::ALL.iter().map(|&c| row.exits_in(c)).collect();
        // exited, failed, killed, oom, policy, crash, other
        assert_eq!(counts, [0, 0, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn lingering_counts_live_containers_once_until_deleted() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        board.created(&a, &container(1), SECOND);
        let lingering = Event::ContainerLingering(ContainerLingering {
            container: container(1),
            init_exited_seconds_ago: 31.0,
            processes_left: 1,
        });
        board.event(&a, &at(40 * SECOND, lingering.clone()));
        board.event(&a, &at(41 * SECOND, lingering));
        assert_eq!(board.rows(42 * SECOND)[0].lingering, 1);
        board.event(&a, &at(43 * SECOND, deleted(1, None)));
        assert_eq!(board.rows(44 * SECOND)[0].lingering, 0);
    }

    #[test]
    fn gpu_sharing_is_counted_per_agent() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        board.created(&a, &container(1), SECOND);
        board.event(
            &a,
            &at(
                2 * SECOND,
                Event::GpuSharing(GpuSharing {
                    container: container(1),
                    device: "/dev/nvidia0".into(),
                    gpu: "nvidia0".into(),
                    containers: vec![container(2).container_id, container(1).container_id],
                }),
            ),
        );
        assert_eq!(board.rows(3 * SECOND)[0].gpu_sharing, 1);
    }

    #[test]
    fn a_verdict_line_tells_the_kill_with_its_sender_as_explain_does() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        board.created(&a, &container(7), SECOND);
        board.event(&a, &at(2 * SECOND, killed(7, 4242)));
        board.event(
            &a,
            &at(3 * SECOND, deleted(7, Some(ExitCause::OrchestratorKill))),
        );
        let line = board.verdicts().next_back().unwrap();
        assert_eq!(line.container_id, container(7).container_id);
        assert_eq!(&*line.agent, "alpha");
        assert_eq!(line.ts_ns, 3 * SECOND);
        assert_eq!(
            line.text,
            "killed from outside the container: SIGKILL to sleep[107] from kubelet[4242] \
             (orchestrator)"
        );
        // No exit seen: the sentence says so.
        board.created(&a, &container(8), SECOND);
        board.event(&a, &at(4 * SECOND, deleted(8, None)));
        assert!(board
            .verdicts()
            .next_back()
            .unwrap()
            .text
            .contains("not known"));
    }

    #[test]
    fn verdict_lines_and_kills_are_bounded() {
        let a: AgentName = "alpha".into();
        let mut board = Board::new();
        board.created(&a, &container(1), SECOND);
        for _ in 0..100 {
            board.event(&a, &at(2 * SECOND, killed(1, 1)));
        }
        assert_eq!(board.containers[&1].kills.len(), KILLS_KEPT);
        for i in 0..(VERDICTS_KEPT as u64 + 50) {
            board.created(&a, &container(i + 10), SECOND);
            board.event(
                &a,
                &at(3 * SECOND + i, deleted(i + 10, Some(ExitCause::Exited))),
            );
        }
        assert_eq!(board.verdicts().len(), VERDICTS_KEPT);
        let last = board.verdicts().next_back().unwrap();
        let newest = container(VERDICTS_KEPT as u64 + 59);
        assert_eq!(last.container_id, newest.container_id);
    }
}
