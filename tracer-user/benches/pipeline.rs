//! User-space pipeline throughput on a recorded stream: ring-buffer bytes → `Record::decode` →
//! lifecycle `Model` → the export worker (agent labels, metrics), on one core. `cargo xtask bench` runs this and reports records/s; run it alone with
//! `cargo bench -p tracer-user --bench pipeline`.
//!
//! The stream is what the kernel side writes for realistic container lifecycles under Docker's
//! cgroup layout (`/docker/<64 hex>`): mkdir, the runtime's attach, the init's agent-name
//! variable, exec, for some a child's exec and exit, SIGTERM then SIGKILL from outside for
//! others, the exit with the signals the kernel remembered, rmdir; about 100 containers live at
//! once, 16 agent names.

use std::{hint::black_box, time::Duration};

use clawtrace::{
    enrich::{
        agent::{AgentConfig, AgentSource},
        labels::LabelPolicy,
    },
    model::{containers::Recognizer, Model, ModelConfig, Output},
    replay::{self, cgroup, exec, exec_with_env, exit, HOST_CGROUP, RUNTIME_PID},
    sinks::{
        export::{ExportConfig, InlineWorker},
        terminal::{Format, Printer},
    },
    source::decode::{KindCounts, Record},
    sys::WallClock,
};
use criterion::{criterion_group, Criterion, Throughput};
use tracer_common::Kind;

/// Containers in the recorded stream.
const CONTAINERS: u64 = 2_000;
/// Containers kept alive underneath the stream in the `with_10k_live` case.
const LIVE_BACKGROUND: u64 = 10_000;
/// Records per ring-buffer poll: the tracing loop counts records by kind once per poll.
const POLL_BATCH: usize = 128;

const MS: u64 = 1_000_000;

/// `sig` sent by the runtime from the host.
fn signal(ts_ns: u64, to: u32, cgroup_id: u64, sig: u32) -> Record {
    replay::signal(ts_ns, RUNTIME_PID, HOST_CGROUP, to, cgroup_id, sig, 0)
}

/// The records of container `i`, from its creation at `start_ns`; `keep` leaves it alive.
fn container(i: u64, start_ns: u64, keep: bool) -> Vec<Record> {
    let cg = 1_000_000 + i;
    let id = format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let path = format!("/docker/{id}");
    let init = 100_000 + (i as u32 % 200_000) * 2;
    let child = init + 1;
    let mut t = start_ns;
    let mut tick = || {
        t += MS;
        t
    };
    let agent = format!("agent-{}", i % 16);
    let mut records = vec![
        cgroup(Kind::CgroupMkdir, start_ns, cg, &path),
        exec_with_env(tick(), cg, init, "/usr/bin/agent", &agent),
    ];
    if keep {
        return records;
    }
    match i % 3 {
        // Clean exit.
        0 => records.push(exit(tick(), cg, init, 1, 0)),
        // Stopped by the orchestrator: SIGTERM, then SIGKILL after the grace period.
        1 => {
            let term = tick();
            records.push(signal(term, init, cg, 15));
            let kill = tick();
            records.push(signal(kill, init, cg, 9));
            records.push(exit(tick(), cg, init, 1, 9));
        }
        // A worker child runs, then the init fails.
        _ => {
            records.push(exec(tick(), cg, child, "/usr/bin/worker"));
            records.push(exit(tick(), cg, child, init, 0));
            records.push(exit(tick(), cg, init, 1, 3 << 8));
        }
    }
    records.push(cgroup(Kind::CgroupRmdir, tick(), cg, &path));
    records
}

/// The recorded stream as the ring buffer hands it over: wire bytes in time order.
fn recorded_stream() -> Vec<Vec<u8>> {
    let mut records: Vec<Record> = (0..CONTAINERS)
        .flat_map(|i| container(i, 1_000 * MS + i * 100_000, false))
        .collect();
    records.sort_by_key(|r| r.header().ts_ns);
    records.iter().map(Record::to_bytes).collect()
}

/// The export worker itself, driven in this thread: agent labels from the init's variable (no
/// metadata lookups), metrics, no OTLP.
fn worker(clock: WallClock) -> InlineWorker {
    InlineWorker::new(
        ExportConfig {
            prometheus: None,
            otlp: None,
            agent: AgentConfig {
                sources: vec![AgentSource::Env],
                ..AgentConfig::default()
            },
            labels: LabelPolicy::default(),
            queue: 0,
            settle_after: Duration::from_secs(2),
            gpu_poll: Duration::from_secs(5),
            watch: None,
        },
        clock,
    )
    .expect("plain labels need no file")
}

fn model() -> Model<Recognizer> {
    Model::new(
        Recognizer::new(&[], None).expect("built-in layouts"),
        ModelConfig::default(),
    )
}

/// A model holding `n` live containers, as on a busy node.
fn model_with_live(n: u64) -> Model<Recognizer> {
    let mut m = model();
    let mut out = Output::default();
    for i in 0..n {
        for r in container(CONTAINERS + i, i * 1_000, true) {
            m.handle(&r, &mut out);
        }
        out.events.clear();
        out.notes.clear();
    }
    m
}

/// Pins the benchmark to one CPU (the last), so "one core" means one core.
fn pin_to_one_cpu() {
    // SAFETY: sysconf has no memory side effects.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpu = usize::try_from(cpus).unwrap_or(1).saturating_sub(1);
    // SAFETY: `set` is a valid, zeroed cpu_set_t on our stack; CPU_SET writes inside it and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One pass over the recorded stream, a poll's worth of records at a time, as the tracing loop
/// does: decode and model each record as it is read, count by kind, print each event with
/// `printer` (if any), then hand it to the export worker.
fn replay_stream(
    stream: &[Vec<u8>],
    m: &mut Model<Recognizer>,
    worker: &mut InlineWorker,
    out: &mut Output,
    mut printer: Option<&mut Printer<std::io::Sink>>,
) {
    for chunk in stream.chunks(POLL_BATCH) {
        let mut counts = KindCounts::default();
        for bytes in chunk {
            if let Ok(record) = Record::decode(bytes) {
                counts.add(&record);
                m.handle(&record, out);
            }
        }
        for (kind, n) in counts.iter() {
            worker.records(kind.name(), n);
        }
        // Notes first, as the worker takes them (the init's environment before its exec).
        for note in out.notes.drain(..) {
            worker.note(&note);
        }
        for event in out.events.drain(..) {
            if let Some(printer) = printer.as_deref_mut() {
                black_box(printer.print(&event)).ok();
            }
            // The tracing loop hands the worker its events by value.
            worker.event(event);
        }
        out.untrack.clear();
    }
}

fn pipeline(c: &mut Criterion) {
    pin_to_one_cpu();
    let stream = recorded_stream();
    let records = stream.len() as u64;
    let clock = WallClock::now();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records));

    group.bench_function("decode", |b| {
        b.iter(|| {
            for bytes in &stream {
                black_box(Record::decode(black_box(bytes)).ok());
            }
        })
    });

    let mut m = model();
    let mut out = Output::default();
    group.bench_function("decode_model", |b| {
        b.iter(|| {
            for bytes in &stream {
                if let Ok(record) = Record::decode(bytes) {
                    m.handle(&record, &mut out);
                }
                out.events.clear();
                out.untrack.clear();
                out.notes.clear();
            }
        })
    });

    // The headline figure: decode, model and aggregation.
    let mut m = model();
    let mut export = worker(clock);
    group.bench_function("decode_model_aggregate", |b| {
        b.iter(|| replay_stream(&stream, &mut m, &mut export, &mut out, None))
    });

    // The same with `--output json`: every event also printed as a JSON line, by the printer
    // the tracing loop uses (into a sink: the bytes are made, not written anywhere).
    let mut m = model();
    let mut export = worker(clock);
    let mut printer = Printer::new(std::io::sink(), Format::Json, clock);
    group.bench_function("decode_model_aggregate_json", |b| {
        b.iter(|| replay_stream(&stream, &mut m, &mut export, &mut out, Some(&mut printer)))
    });

    // The headline case again with 10,000 other containers alive throughout.
    let mut m = model_with_live(LIVE_BACKGROUND);
    let mut export = worker(clock);
    group.bench_function("decode_model_aggregate_10k_live", |b| {
        b.iter(|| replay_stream(&stream, &mut m, &mut export, &mut out, None))
    });
    group.finish();
}

criterion_group!(benches, pipeline);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
