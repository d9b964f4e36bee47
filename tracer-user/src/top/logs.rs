//! Log records while `top` owns the terminal: a line written to stderr then would land in the
//! middle of the view. The process's logger passes records to env_logger as usual, except while
//! the view is up: then each record is held (the latest is shown on the view's status line), and
//! every held record is written, in order, once the terminal is restored.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
};

use log::{Level, Log, Metadata, Record};

/// Records held at most while the view is up; past that the oldest go, and how many went is
/// written with the rest.
pub const HELD_MAX: usize = 1000;

/// A record held while the view is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub level: Level,
    pub target: String,
    pub message: String,
}

#[derive(Debug, Default)]
struct State {
    holding: bool,
    held: VecDeque<Held>,
    dropped: u64,
    /// The latest record of the view's time (held ones only).
    latest: Option<Held>,
}

/// The process's logger under `top`: env_logger, or held records while the view is up.
pub struct Logs {
    inner: env_logger::Logger,
    state: Mutex<State>,
}

static LOGS: OnceLock<Logs> = OnceLock::new();

/// Makes `inner` the process's logger, behind [`Logs`]. Fails if a logger is already set.
pub fn install(inner: env_logger::Logger) -> Result<&'static Logs, log::SetLoggerError> {
    let filter = inner.filter();
    let logs = LOGS.get_or_init(|| Logs::new(inner));
    log::set_logger(logs)?;
    log::set_max_level(filter);
    Ok(logs)
}

impl Logs {
    pub fn new(inner: env_logger::Logger) -> Logs {
        Logs {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while a record was pushed leaves a usable queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on records are held, not written.
    pub fn hold(&self) {
        self.state().holding = true;
    }

    /// The latest record held, for the status line.
    pub fn latest(&self) -> Option<Held> {
        self.state().latest.clone()
    }

    /// Stops holding records and writes those held, in order (and how many were dropped).
    pub fn release(&self) {
        let (held, dropped) = {
            let mut state = self.state();
            state.holding = false;
            state.latest = None;
            (
                std::mem::take(&mut state.held),
                std::mem::take(&mut state.dropped),
            )
        };
        if dropped > 0 {
            self.write(&Held {
                level: Level::Warn,
                target: module_path!().to_string(),
                message: format!(
                    "{dropped} earlier log record(s) were dropped while the view was up (at \
                     most {HELD_MAX} are held)"
                ),
            });
        }
        for record in &held {
            self.write(record);
        }
        self.inner.flush();
    }

    fn write(&self, held: &Held) {
        self.inner.log(
            &Record::builder()
                .level(held.level)
                .target(&held.target)
                .args(format_args!("{}", held.message))
                .build(),
        );
    }
}

impl Log for Logs {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        let mut state = self.state();
        if !state.holding {
            drop(state);
            self.inner.log(record);
            return;
        }
        let held = Held {
            level: record.level(),
            target: record.target().to_string(),
            message: record.args().to_string(),
        };
        if state.held.len() == HELD_MAX {
            state.held.pop_front();
            state.dropped += 1;
        }
        state.latest = Some(held.clone());
        state.held.push_back(held);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(logs: &Logs, level: Level, message: &str) {
        logs.log(
            &Record::builder()
                .level(level)
                .target("clawtrace::run")
                .args(format_args!("{message}"))
                .build(),
        );
    }

    fn logs() -> Logs {
        Logs::new(
            env_logger::Builder::new()
                .filter_level(log::LevelFilter::Info)
                .is_test(true)
                .build(),
        )
    }

    #[test]
    fn records_are_held_in_order_while_the_view_is_up_and_released_after() {
        let logs = logs();
        record(&logs, Level::Info, "before the view: written at once");
        assert!(logs.state().held.is_empty());
        logs.hold();
        record(&logs, Level::Info, "tracing: 14 programs attached");
        record(&logs, Level::Warn, "ring buffer full: 3 record(s) lost");
        // Below the filter: neither held nor shown.
        record(&logs, Level::Debug, "NVML: not available");
        let held: Vec<String> = logs
            .state()
            .held
            .iter()
            .map(|h| h.message.clone())
            .collect();
        assert_eq!(
            held,
            [
                "tracing: 14 programs attached",
                "ring buffer full: 3 record(s) lost"
            ]
        );
        let latest = logs.latest().unwrap();
        assert_eq!(
            (latest.level, latest.message.as_str()),
            (Level::Warn, "ring buffer full: 3 record(s) lost")
        );
        logs.release();
        assert!(logs.state().held.is_empty());
        assert_eq!(logs.latest(), None);
        record(&logs, Level::Info, "after: written at once");
        assert!(logs.state().held.is_empty());
    }

    #[test]
    fn at_most_held_max_records_are_held_and_the_rest_counted() {
        let logs = logs();
        logs.hold();
        for i in 0..HELD_MAX + 5 {
            record(&logs, Level::Warn, &format!("warning {i}"));
        }
        let state = logs.state();
        assert_eq!(state.held.len(), HELD_MAX);
        assert_eq!(state.dropped, 5);
        assert_eq!(state.held[0].message, "warning 5");
    }
}
