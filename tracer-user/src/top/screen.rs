//! `top`'s screen: the agents' table, the latest verdicts, a status line and the keys; and the
//! view's state the keys change (sort column, order, agent filter). Drawn with ratatui into any
//! backend, so that tests draw into a `TestBackend` and read the buffer.

use ratatui::{
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    layout::{Alignment, Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row as TableRow, Table, Wrap},
    Frame,
};

use super::{
    board::{ExitColumn, Row, VerdictLine},
    logs::Held,
};
use crate::{model::attribution::ExitCause, sinks::terminal::short_id, sys::WallClock};

/// The columns `s` sorts by, in the order it cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Live,
    Created,
    Deleted,
    Backlog,
    CreatedPerMin,
    Lingering,
    StartP99,
    Killed,
    PolicyKill,
    Crash,
    Agent,
}

impl SortKey {
    const CYCLE: [SortKey; 11] = [
        SortKey::Live,
        SortKey::Created,
        SortKey::Deleted,
        SortKey::Backlog,
        SortKey::CreatedPerMin,
        SortKey::Lingering,
        SortKey::StartP99,
        SortKey::Killed,
        SortKey::PolicyKill,
        SortKey::Crash,
        SortKey::Agent,
    ];

    fn next(self) -> SortKey {
        let at = Self::CYCLE.iter().position(|&k| k == self).unwrap_or(0);
        Self::CYCLE[(at + 1) % Self::CYCLE.len()]
    }

    /// The column's name in the status of the table.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Live => "live",
            SortKey::Created => "created",
            SortKey::Deleted => "deleted",
            SortKey::Backlog => "backlog",
            SortKey::CreatedPerMin => "new/min 1m",
            SortKey::Lingering => "stuck",
            SortKey::StartP99 => "start p99",
            SortKey::Killed => "killed",
            SortKey::PolicyKill => "policy",
            SortKey::Crash => "crash",
            SortKey::Agent => "agent",
        }
    }

    /// Compares two rows by this column, greatest first (agent names A to Z).
    fn compare(self, a: &Row, b: &Row) -> std::cmp::Ordering {
        let by = |f: fn(&Row) -> f64| f(b).total_cmp(&f(a));
        match self {
            SortKey::Live => b.live.cmp(&a.live),
            SortKey::Created => b.created.cmp(&a.created),
            SortKey::Deleted => b.deleted.cmp(&a.deleted),
            SortKey::Backlog => b.backlog.cmp(&a.backlog),
            SortKey::CreatedPerMin => by(|r| r.created_per_min[0]),
            SortKey::Lingering => b.lingering.cmp(&a.lingering),
            SortKey::StartP99 => by(|r| r.start_p99.unwrap_or(-1.0)),
            SortKey::Killed => by(|r| r.exits_in(ExitColumn::Killed) as f64),
            SortKey::PolicyKill => by(|r| r.exits_in(ExitColumn::PolicyKill) as f64),
            SortKey::Crash => by(|r| r.exits_in(ExitColumn::Crash) as f64),
            SortKey::Agent => a.agent.cmp(&b.agent),
        }
    }
}

/// What a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to show.
    None,
    /// The view changed: draw it now.
    Redraw,
    Quit,
}

/// The view's state: sort, order and filter, and the filter being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub sort: SortKey,
    /// The other way round: least first (agent names Z to A).
    pub reversed: bool,
    /// Only agents whose name holds this (empty: every agent).
    pub filter: String,
    /// The filter being typed after `/`, until Enter or Esc.
    pub typing: Option<String>,
}

impl Default for View {
    fn default() -> View {
        View {
            sort: SortKey::Live,
            reversed: false,
            filter: String::new(),
            typing: None,
        }
    }
}

impl View {
    /// `q` or Ctrl-C quit; `s` sorts by the next column, `r` reverses the order; `/` starts an
    /// agent filter (a part of the name), Enter applies it, Esc clears it.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(typed) = &mut self.typing {
            match key.code {
                KeyCode::Enter => {
                    self.filter = std::mem::take(typed);
                    self.typing = None;
                }
                KeyCode::Esc => {
                    self.filter.clear();
                    self.typing = None;
                }
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char(c) if !c.is_control() => typed.push(c),
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => self.reversed = !self.reversed,
            KeyCode::Char('/') => self.typing = Some(self.filter.clone()),
            KeyCode::Esc => self.filter.clear(),
            _ => return Action::None,
        }
        Action::Redraw
    }

    /// Whether the filter lets `agent` through.
    pub fn shows(&self, agent: &str) -> bool {
        agent.contains(self.filter.as_str())
    }

    /// The rows the filter lets through, in the view's order (ties by agent name).
    pub fn arrange(&self, mut rows: Vec<Row>) -> Vec<Row> {
        rows.retain(|r| self.shows(&r.agent));
        rows.sort_by(|a, b| {
            let order = self.sort.compare(a, b);
            let order = if self.reversed {
                order.reverse()
            } else {
                order
            };
            order.then_with(|| a.agent.cmp(&b.agent))
        });
        rows
    }
}

/// What one frame shows, taken from the board at one moment.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    pub rows: Vec<Row>,
    /// The latest verdicts, oldest first.
    pub verdicts: Vec<VerdictLine>,
    pub live: usize,
    pub events: u64,
    /// Seconds since `top` began.
    pub uptime_seconds: u64,
    /// The latest log record held while the view is up.
    pub status: Option<Held>,
}

/// The table's columns: header (two lines) and width.
const COLUMNS: [(&str, &str, u16); 20] = [
    ("", "AGENT", 20),
    ("", "LIVE", 6),
    ("", "CREATED", 8),
    ("", "DELETED", 8),
    ("BACKLOG", "5m", 7),
    ("NEW/min", "1m", 7),
    ("NEW/min", "5m", 7),
    ("DEL/min", "1m", 7),
    ("DEL/min", "5m", 7),
    ("", "STUCK", 6),
    ("START", "p50", 7),
    ("START", "p99", 7),
    ("EXITS", "ok", 5),
    ("", "failed", 6),
    ("", "killed", 7),
    ("", "oom", 5),
    ("", "POLICY", 7),
    ("", "CRASH", 6),
    ("", "other", 5),
    ("GPU", "shared", 6),
];

/// The column `sort` orders by.
fn sort_column(sort: SortKey) -> usize {
    match sort {
        SortKey::Agent => 0,
        SortKey::Live => 1,
        SortKey::Created => 2,
        SortKey::Deleted => 3,
        SortKey::Backlog => 4,
        SortKey::CreatedPerMin => 5,
        SortKey::Lingering => 9,
        SortKey::StartP99 => 11,
        SortKey::Killed => 14,
        SortKey::PolicyKill => 16,
        SortKey::Crash => 17,
    }
}

/// What each column means, under the title.
const LEGEND: &str = "LIVE: created − deleted over the run (found running at start counts as \
    created) · BACKLOG: created − deleted in the last 5 m · NEW, DEL: per minute over 1 m and 5 m · \
    STUCK: lingering now · START: cgroup made to first exec, latest 1000 · EXITS: deleted \
    containers by verdict · GPU shared: began using a GPU in use";

/// Seconds as `0.4ms`, `12ms`, `1.25s`, or `-` for none.
fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".to_string(),
        Some(s) if s < 0.01 => format!("{:.1}ms", s * 1e3),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

fn per_min(n: f64) -> String {
    format!("{n:.1}")
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).alignment(Alignment::Right))
}

/// `HH:MM:SS` (UTC) of a record's time.
fn clock_time(clock: &WallClock, ts_ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(clock.unix_ns(ts_ns))
        .map(|t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()))
        .unwrap_or_else(|_| "--:--:--".to_string())
}

fn uptime(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

fn verdict_style(verdict: Option<ExitCause>) -> Style {
    match verdict {
        Some(ExitCause::Exited) => Style::new().fg(Color::Green),
        Some(ExitCause::Failed) | None => Style::new().fg(Color::Yellow),
        Some(_) => Style::new().fg(Color::Red),
    }
}

/// Draws one frame: title and legend, the agents' table, the latest verdicts, the status line
/// and the keys.
pub fn draw(frame: &mut Frame<'_>, view: &View, shown: &Shown, clock: &WallClock) {
    let rows = view.arrange(shown.rows.clone());
    let verdicts: Vec<&VerdictLine> = shown
        .verdicts
        .iter()
        .filter(|v| view.shows(&v.agent))
        .collect();
    let table_height = (rows.len() as u16).max(1) + 4;
    let [title, legend, table, verdict_area, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Max(table_height),
        Constraint::Min(4),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let bold = Style::new().add_modifier(Modifier::BOLD);
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("clawtrace top", bold),
            Span::raw(format!(
                " · {} agent(s), {} live container(s), {} event(s) · up {} · times UTC",
                shown.rows.len(),
                shown.live,
                shown.events,
                uptime(shown.uptime_seconds)
            )),
        ])),
        title,
    );
    frame.render_widget(
        Paragraph::new(LEGEND)
            .wrap(Wrap { trim: true })
            .style(Style::new().add_modifier(Modifier::DIM)),
        legend,
    );

    let sorted = sort_column(view.sort);
    let arrow = if view.reversed { "▲" } else { "▼" };
    let header_line = |i: usize, text: &str, bottom: bool| {
        let text = if bottom && i == sorted {
            format!("{text}{arrow}")
        } else {
            text.to_string()
        };
        let line = Line::from(text);
        if i == 0 {
            line
        } else {
            line.alignment(Alignment::Right)
        }
    };
    let header = TableRow::new(COLUMNS.iter().enumerate().map(|(i, (top, bottom, _))| {
        let cell = Cell::from(ratatui::text::Text::from(vec![
            header_line(i, top, false),
            header_line(i, bottom, true),
        ]));
        if i == sorted {
            cell.style(bold.add_modifier(Modifier::UNDERLINED))
        } else {
            cell.style(bold)
        }
    }))
    .height(2);
    let body = rows.iter().map(|r| {
        let mut cells = vec![
            Cell::from(r.agent.to_string()),
            right(r.live.to_string()),
            right(r.created.to_string()),
            right(r.deleted.to_string()),
            right(format!("{:+}", r.backlog)),
            right(per_min(r.created_per_min[0])),
            right(per_min(r.created_per_min[1])),
            right(per_min(r.deleted_per_min[0])),
            right(per_min(r.deleted_per_min[1])),
            right(r.lingering.to_string()),
            right(seconds(r.start_p50)),
            right(seconds(r.start_p99)),
        ];
        cells.extend(
            ExitColumn::ALL
                .iter()
                .map(|&c| right(r.exits_in(c).to_string())),
        );
        cells.push(right(r.gpu_sharing.to_string()));
        let alarm = r.lingering > 0
            || r.exits_in(ExitColumn::PolicyKill) > 0
            || r.exits_in(ExitColumn::Crash) > 0;
        TableRow::new(cells).style(if alarm {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        })
    });
    let filter = if view.filter.is_empty() {
        String::new()
    } else {
        format!(", agents holding \"{}\"", view.filter)
    };
    frame.render_widget(
        Table::new(body, COLUMNS.iter().map(|c| Constraint::Length(c.2)))
            .header(header)
            .block(Block::bordered().title(format!(
                " agents: {} shown, sorted by {}{}{filter} ",
                rows.len(),
                view.sort.name(),
                if view.reversed { ", reversed" } else { "" }
            ))),
        table,
    );

    let room = verdict_area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = verdicts[verdicts.len().saturating_sub(room)..]
        .iter()
        .map(|v| {
            Line::from(vec![
                Span::raw(format!(
                    "{}  {:<16}  {:<13}  ",
                    clock_time(clock, v.ts_ns),
                    v.agent,
                    short_id(&v.container_id)
                )),
                Span::styled(v.text.clone(), verdict_style(v.verdict)),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" latest verdicts (newest last) ")),
        verdict_area,
    );

    let status_line = match &shown.status {
        Some(held) => {
            let style = match held.level {
                log::Level::Error => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                log::Level::Warn => Style::new().fg(Color::Yellow),
                _ => Style::new(),
            };
            Line::from(vec![
                Span::styled(format!("{}: {}", held.level, held.message), style),
                Span::styled(
                    " (log written on exit)",
                    Style::new().add_modifier(Modifier::DIM),
                ),
            ])
        }
        None => Line::from("starting: loading the programs…"),
    };
    frame.render_widget(Paragraph::new(status_line), status);

    let keys_line = match &view.typing {
        Some(typed) => Line::from(vec![
            Span::styled("filter agents: ", bold),
            Span::raw(format!("{typed}█")),
            Span::raw("   Enter apply · Esc clear"),
        ]),
        None => Line::from(
            "q quit · s sort by the next column · r reverse · / filter agents · Esc clear filter",
        ),
    };
    frame.render_widget(
        Paragraph::new(keys_line).style(Style::new().add_modifier(Modifier::REVERSED)),
        keys,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ratatui::{backend::TestBackend, crossterm::event::KeyEvent, Terminal};

    use super::*;

    fn row(agent: &str, live: u64, created: u64, crash: u64) -> Row {
        let mut exits = [0; ExitColumn::ALL.len()];
        exits[ExitColumn::Crash as usize] = crash;
        exits[ExitColumn::Killed as usize] = 1;
        Row {
            agent: agent.into(),
            live,
            created,
            deleted: created - live,
            created_per_min: [2.0, 0.4],
            deleted_per_min: [1.0, 0.2],
            backlog: 1,
            lingering: 0,
            start_p50: Some(0.012),
            start_p99: Some(1.5),
            exits,
            gpu_sharing: 0,
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(view: &mut View, text: &str) {
        for c in text.chars() {
            view.key(key(KeyCode::Char(c)));
        }
    }

    fn screen(view: &View, shown: &Shown) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(180, 24)).unwrap();
        let clock = WallClock::with_offset(0);
        terminal.draw(|f| draw(f, view, shown, &clock)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn shown() -> Shown {
        Shown {
            rows: vec![row("alpha", 1, 3, 0), row("beta", 2, 2, 1)],
            verdicts: vec![VerdictLine {
                ts_ns: 3_723_000_000_000,
                agent: "alpha".into(),
                container_id: Arc::from("3f2a9c0e1b7d4a6f"),
                verdict: Some(ExitCause::OrchestratorKill),
                text: "killed from outside the container: SIGKILL to sleep[7] from kubelet[9] \
                       (orchestrator)"
                    .into(),
            }],
            live: 3,
            events: 42,
            uptime_seconds: 65,
            status: Some(Held {
                level: log::Level::Warn,
                target: "clawtrace".into(),
                message: "ring buffer full: 3 record(s) lost".into(),
            }),
        }
    }

    /// The fields of `agent`'s row on the screen.
    fn fields(screen: &[String], agent: &str) -> Option<Vec<String>> {
        screen.iter().find_map(|l| {
            let fields: Vec<String> = l
                .trim_matches(|c: char| c == '│' || c.is_whitespace())
                .split_whitespace()
                .map(str::to_string)
                .collect();
            (fields.first().map(String::as_str) == Some(agent)).then_some(fields)
        })
    }

    #[test]
    fn the_screen_shows_each_agent_its_verdicts_the_status_and_the_keys() {
        let screen = screen(&View::default(), &shown());
        let text = screen.join("\n");
        assert!(
            text.contains("2 agent(s), 3 live container(s), 42 event(s) · up 1m05s"),
            "{text}"
        );
        // By live containers, most first.
        let beta = fields(&screen, "beta").unwrap();
        let alpha = fields(&screen, "alpha").unwrap();
        assert_eq!(beta[..4], ["beta", "2", "2", "0"], "{text}");
        assert_eq!(
            alpha,
            [
                "alpha", "1", "3", "2", "+1", "2.0", "0.4", "1.0", "0.2", "0", "12ms", "1.50s",
                "0", "0", "1", "0", "0", "0", "0", "0"
            ]
        );
        let beta_at = screen.iter().position(|l| l.contains("│beta")).unwrap();
        let alpha_at = screen.iter().position(|l| l.contains("│alpha")).unwrap();
        assert!(beta_at < alpha_at, "{text}");
        assert!(text.contains("LIVE▼"), "{text}");
        assert!(text.contains(
            "01:02:03  alpha             3f2a9c0e1b7d…  killed from outside the container: \
             SIGKILL to sleep[7] from kubelet[9] (orchestrator)"
        ));
        assert!(
            text.contains("WARN: ring buffer full: 3 record(s) lost"),
            "{text}"
        );
        assert!(text.contains("q quit · s sort"), "{text}");
    }

    #[test]
    fn keys_sort_reverse_filter_and_quit() {
        let mut view = View::default();
        assert_eq!(view.key(key(KeyCode::Char('s'))), Action::Redraw);
        assert_eq!(view.sort, SortKey::Created);
        let order = |view: &View| -> Vec<String> {
            view.arrange(shown().rows)
                .iter()
                .map(|r| r.agent.to_string())
                .collect()
        };
        assert_eq!(order(&view), ["alpha", "beta"]);
        view.key(key(KeyCode::Char('r')));
        assert_eq!(order(&view), ["beta", "alpha"]);
        let text = screen(&view, &shown()).join("\n");
        assert!(text.contains("CREATED▲"), "{text}");
        assert!(text.contains("sorted by created, reversed"), "{text}");

        // Typing a filter changes nothing until Enter.
        assert_eq!(view.key(key(KeyCode::Char('/'))), Action::Redraw);
        typed(&mut view, "alx");
        view.key(key(KeyCode::Backspace));
        assert_eq!(order(&view).len(), 2);
        let text = screen(&view, &shown()).join("\n");
        assert!(text.contains("filter agents: al█"), "{text}");
        // `q` while typing is part of the name, not a quit.
        assert_eq!(view.key(key(KeyCode::Char('q'))), Action::Redraw);
        view.key(key(KeyCode::Backspace));
        view.key(key(KeyCode::Enter));
        assert_eq!(order(&view), ["alpha"]);
        let screen_text = screen(&view, &shown());
        assert!(fields(&screen_text, "beta").is_none());
        assert!(screen_text.join("\n").contains("agents holding \"al\""));
        // Esc clears it.
        view.key(key(KeyCode::Esc));
        assert_eq!(order(&view).len(), 2);

        assert_eq!(view.key(key(KeyCode::Char('x'))), Action::None);
        assert_eq!(view.key(key(KeyCode::Char('q'))), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        view.key(key(KeyCode::Char('/')));
        assert_eq!(view.key(ctrl_c), Action::Quit);
    }

    #[test]
    fn sort_cycles_through_every_column_and_back() {
        let mut sort = SortKey::Live;
        let mut seen = Vec::new();
        for _ in 0..SortKey::CYCLE.len() {
            seen.push(sort_column(sort));
            sort = sort.next();
        }
        assert_eq!(sort, SortKey::Live);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), SortKey::CYCLE.len());
    }

    #[test]
    fn times_and_durations_are_short() {
        assert_eq!(seconds(None), "-");
        assert_eq!(seconds(Some(0.0123)), "12ms");
        assert_eq!(seconds(Some(0.00042)), "0.4ms");
        assert_eq!(seconds(Some(2.5)), "2.50s");
        assert_eq!(uptime(3725), "1h02m05s");
        assert_eq!(
            clock_time(&WallClock::with_offset(0), 86_399_000_000_000),
            "23:59:59"
        );
    }
}
