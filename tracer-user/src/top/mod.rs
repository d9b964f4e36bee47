//! `clawtrace top`: a live view of the containers in the terminal. It traces as `run` does, on a
//! thread of its own, with a [`Watcher`] of the export worker's events feeding the [`Board`];
//! this thread owns the terminal (raw mode, alternate screen), draws the board every 250 ms and
//! reads the keys. The terminal is restored on every way out: `q`, Ctrl-C, SIGINT or SIGTERM,
//! an error of tracing, a panic (ratatui's panic hook restores it first).

pub mod board;
pub mod logs;
pub mod screen;

use std::{
    io::{self, IsTerminal as _},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use ratatui::{
    crossterm::event::{self, Event as TermEvent, KeyEventKind},
    DefaultTerminal,
};

use crate::{
    model::Timed,
    run::{self, RunOptions, RunSummary, Watch},
    sinks::{export::Watcher, metrics::AgentName},
    sys,
};
use board::Board;
use logs::Logs;
use screen::{Action, Shown, View};

/// How often the view is drawn when no key comes.
const REDRAW: Duration = Duration::from_millis(250);

/// The board, shared by the export worker (which feeds it) and the view (which reads it).
#[derive(Default)]
struct Shared(Mutex<Board>);

impl Shared {
    fn board(&self) -> MutexGuard<'_, Board> {
        // The board stays consistent event by event: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watcher for Shared {
    fn event(&self, agent: &AgentName, event: &Timed) {
        self.board().event(agent, event);
    }
}

/// The terminal while the view owns it; restored when dropped, whatever the way out.
struct Owned(DefaultTerminal);

impl Owned {
    fn open() -> io::Result<Owned> {
        // Raw mode, the alternate screen, and a panic hook that restores both first.
        match ratatui::try_init() {
            Ok(terminal) => Ok(Owned(terminal)),
            Err(err) => {
                // Raw mode may be on already.
                ratatui::restore();
                Err(err)
            }
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.show_cursor();
        ratatui::restore();
    }
}

/// Traces with `options` and shows the board until `q`, Ctrl-C, or `stop` (set by SIGINT or
/// SIGTERM). Log records are held while the view is up and written after (see [`logs`]).
pub fn run(
    mut options: RunOptions,
    stop: &Arc<AtomicBool>,
    logs: Option<&Logs>,
) -> Result<RunSummary> {
    // Nothing is loaded for a view that cannot be shown.
    if !io::stdout().is_terminal() {
        bail!("top draws on a terminal and its output is not one; `clawtrace run` writes lines");
    }
    let shared = Arc::new(Shared::default());
    options.watch = Some(Watch(shared.clone()));
    if let Some(logs) = logs {
        logs.hold();
    }
    let tracing_stop = Arc::clone(stop);
    let tracing = std::thread::Builder::new()
        .name("clawtrace-trace".into())
        .spawn(move || run::run(&options, &tracing_stop, io::sink()))
        .context("starting the tracing thread");
    let tracing = match tracing {
        Ok(tracing) => tracing,
        Err(err) => {
            if let Some(logs) = logs {
                logs.release();
            }
            return Err(err);
        }
    };
    // The tracing thread keeps the capabilities it needs and drops them itself once the
    // programs are attached; this one, which only draws, drops them now.
    let shown = sys::drop_privileges().and_then(|()| show(&shared, stop, &tracing, logs));
    // The terminal is restored, whichever way the view ended: stop tracing and wait for it, so
    // that its sinks (spans, log records, the audit log) are flushed, then write what the view
    // held. A view that failed says why first.
    stop.store(true, Ordering::Relaxed);
    let traced = tracing
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the tracing thread panicked")));
    if let Some(logs) = logs {
        logs.release();
    }
    shown.and(traced)
}

/// Draws the board and reads keys until told to stop, tracing ends, or a key quits.
fn show(
    shared: &Shared,
    stop: &AtomicBool,
    tracing: &JoinHandle<Result<RunSummary>>,
    logs: Option<&Logs>,
) -> Result<()> {
    let mut terminal = Owned::open().context("taking over the terminal")?;
    let clock = sys::WallClock::now();
    let started = Instant::now();
    let mut view = View::default();
    loop {
        if stop.load(Ordering::Relaxed) || tracing.is_finished() {
            return Ok(());
        }
        let status = logs.and_then(Logs::latest);
        let shown = {
            let board = shared.board();
            Shown {
                rows: board.rows(sys::monotonic_ns()),
                verdicts: board.verdicts().cloned().collect(),
                live: board.live(),
                events: board.events(),
                uptime_seconds: started.elapsed().as_secs(),
                status,
            }
        };
        terminal
            .0
            .draw(|frame| screen::draw(frame, &view, &shown, &clock))
            .context("drawing")?;
        let next = Instant::now() + REDRAW;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            match event::poll(left) {
                Ok(true) => {}
                Ok(false) => break,
                // A signal: the loop looks at `stop`.
                Err(err) if err.kind() == io::ErrorKind::Interrupted => break,
                Err(err) => return Err(err).context("reading the terminal"),
            }
            match event::read() {
                Ok(TermEvent::Key(key)) if key.kind == KeyEventKind::Press => match view.key(key) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => break,
                    Action::None => {}
                },
                Ok(TermEvent::Resize(..)) => break,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => break,
                Err(err) => return Err(err).context("reading the terminal"),
            }
        }
    }
}
