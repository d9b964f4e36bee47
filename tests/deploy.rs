//! The deployment files in `deploy/`: the Prometheus rules pass `promtool` (syntax and their unit
//! tests), the Grafana dashboard is well formed and every one of its expressions returns data
//! from a real Prometheus (scraping a sample exposition here, a real `clawtrace` after a scripted
//! workload in the privileged test), the YAML files parse and hold what a deployment needs, and
//! the systemd unit passes `systemd-analyze verify`.
//!
//! Tools come from Debian's packages (`prometheus` brings `prometheus` and `promtool`,
//! `python3-yaml` the YAML parser, `systemd` systemd-analyze). A check whose tool is missing is
//! skipped with a message, unless CLAWTRACE_REQUIRE_PRIVILEGED=1 (as `cargo xtask test` sets),
//! which makes the skip a failure.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

// ----- paths, tools, skipping -----

/// The workspace root (deploy/ lives there).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tracer-user has a parent folder")
        .to_path_buf()
}

fn deploy_file(rel: &str) -> PathBuf {
    workspace().join("deploy").join(rel)
}

fn read_deploy(rel: &str) -> String {
    let path = deploy_file(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// True under CLAWTRACE_REQUIRE_PRIVILEGED=1: every check must run.
fn required() -> bool {
    std::env::var(REQUIRE_PRIVILEGED).as_deref() == Ok("1")
}

/// Says why `test` cannot run its check and skips it, or fails when every check is required.
fn skip(test: &str, reason: &str) {
    if required() {
        panic!("{test}: cannot run: {reason}, and {REQUIRE_PRIVILEGED}=1");
    }
    eprintln!("skipping {test}: {reason}");
}

/// `name` from the distribution's folders first, then PATH.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A tool from a Debian package, or a skip (see [`skip`]) naming the package.
fn tool(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        skip(
            test,
            &format!("no `{name}` (Debian package `{package}`; `cargo xtask setup` installs it)"),
        );
    }
    found
}

/// A folder under the system's temporary folder, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("clawtrace-deploy-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ----- a minimal HTTP/1.0 client -----

/// `GET path` over HTTP/1.0 (the server closes the connection after the response): the status
/// code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\nUser-Agent: clawtrace-deploy-test\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    Ok((status, body.to_string()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ----- the Grafana dashboard -----

/// The dashboard, parsed.
fn dashboard() -> Value {
    let text = read_deploy("grafana/clawtrace-dashboard.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboard is not valid JSON: {e}"))
}

/// Every panel, rows' nested panels included.
fn all_panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// (panel title, expression) for every target of every panel.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {:?}: a target without expr", p["title"]));
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr.into()));
        }
    }
    out
}

/// A dashboard expression as Grafana would send it, with every selected agent and a 1m rate
/// interval, for a query covering the last 5 minutes.
fn grafana_to_promql(expr: &str) -> String {
    let out = expr
        .replace("${agent_name:regex}", ".*")
        .replace("${agent_name}", ".*")
        .replace("$agent_name", ".*")
        .replace("${__rate_interval}", "1m")
        .replace("$__rate_interval", "1m")
        .replace("${__interval}", "15s")
        .replace("$__interval", "15s")
        .replace("${__range}", "5m")
        .replace("$__range", "5m");
    assert!(
        !out.contains('$'),
        "a Grafana variable is left unreplaced in {out}"
    );
    out
}

/// A metric family as Prometheus shows it: (name, type, labels).
type Family = (String, &'static str, &'static [&'static str]);

/// The metric families clawtrace exposes (on its /metrics and after the collector's
/// translation), from its own table of metrics.
static FAMILIES: std::sync::LazyLock<Vec<Family>> = std::sync::LazyLock::new(|| {
    clawtrace::sinks::metrics::METRICS
        .iter()
        .map(|d| (d.prometheus_name(), d.prometheus_type(), d.labels))
        .collect()
});

/// The names of a family's series in Prometheus (a histogram's _bucket, _sum and _count).
fn family_series(name: &str, kind: &str) -> Vec<String> {
    if kind == "histogram" {
        ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect()
    } else {
        vec![name.to_string()]
    }
}

/// Names of the series these families give Prometheus.
fn series_names() -> BTreeSet<String> {
    FAMILIES
        .iter()
        .flat_map(|(name, kind, _)| family_series(name, kind))
        .collect()
}

/// The family a series belongs to: (name, type, labels).
fn family_of(series: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .find(|(name, kind, _)| family_series(name, kind).iter().any(|s| s == series))
}

/// True when `series` carries the agent_name label (dashboard queries must filter it).
fn per_agent(series: &str) -> bool {
    family_of(series).is_some_and(|(_, _, labels)| labels.contains(&"agent_name"))
}

/// The identifiers in `expr` that name clawtrace series: they start with `container`,
/// `clawtrace_` or `gpu_` and are not one of the families' label names (a recording rule's
/// `clawtrace:` names are not ones).
fn referenced_series(expr: &str) -> BTreeSet<String> {
    let labels: BTreeSet<&str> = FAMILIES
        .iter()
        .flat_map(|(_, _, labels)| labels.iter().copied())
        .collect();
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            (w.starts_with("container") || w.starts_with("clawtrace_") || w.starts_with("gpu_"))
                && !w.contains(':')
                && !labels.contains(w)
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));

    // Template variables: the data source, and agent_name from the changes counter.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let agent = var("agent_name");
    assert_eq!(agent["type"], "query");
    assert_eq!(agent["multi"], true);
    assert_eq!(agent["includeAll"], true);
    assert_eq!(agent["allValue"], ".*");
    assert_eq!(
        agent["definition"],
        "label_values(container_changes_total, agent_name)"
    );
    assert_eq!(agent["query"]["query"], agent["definition"]);
    assert_eq!(agent["datasource"]["uid"], "${datasource}");

    let panels = all_panels(&dash);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without title: {p}");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: panel id {id} used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64(), g["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24)
                && g["h"].as_u64().is_some()
                && g["y"].as_u64().is_some(),
            "{title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let r = t["refId"].as_str().expect("refId");
            assert!(refs.insert(r), "{title}: refId {r} twice");
        }
    }
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert!(
        rows.iter().any(|r| r.contains("health")),
        "no clawtrace health row: {rows:?}"
    );
    for row in ["GPU", "Mounts and volumes"] {
        assert!(rows.contains(&row), "no {row} row: {rows:?}");
    }

    // Every expression names only clawtrace's series, every family is shown, and every
    // per-container series is filtered by the agent variable.
    let exprs = dashboard_exprs(&dash);
    let known = series_names();
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let refs = referenced_series(expr);
        assert!(
            !refs.is_empty(),
            "{title}: {expr} names no clawtrace series"
        );
        for r in &refs {
            assert!(known.contains(r), "{title}: unknown series {r} in {expr}");
            if per_agent(r) {
                assert!(
                    expr.contains("agent_name=~\"$agent_name\""),
                    "{title}: {expr} ignores the agent_name variable"
                );
            }
        }
        used.extend(refs);
        let mut depth = 0i32;
        for c in expr.chars() {
            depth += match c {
                '(' | '{' | '[' => 1,
                ')' | '}' | ']' => -1,
                _ => 0,
            };
            assert!(depth >= 0, "{title}: unbalanced {expr}");
        }
        assert_eq!(depth, 0, "{title}: unbalanced {expr}");
    }
    for (name, kind, _) in FAMILIES.iter() {
        let series = if *kind == "histogram" {
            format!("{name}_bucket")
        } else {
            name.to_string()
        };
        assert!(used.contains(&series), "no panel shows {series}");
    }
    // The GPU and mount series are shown in their own rows; the GPU row puts the backlog beside
    // the shared devices; GPU memory shows 0 without NVML.
    let mut row_of = BTreeMap::new();
    let mut row = "";
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            row = p["title"].as_str().unwrap_or("");
        }
        for nested in all_panels(&serde_json::json!({ "panels": [p] })) {
            if let Some(title) = nested["title"].as_str() {
                row_of.insert(title.to_string(), row.to_string());
            }
        }
    }
    for (title, expr) in &exprs {
        let row = &row_of[title];
        for r in referenced_series(expr) {
            let want = if r.starts_with("gpu_") || r.starts_with("container_gpu_") {
                "GPU"
            } else if r.starts_with("container_mount_") || r.starts_with("container_volume_") {
                "Mounts and volumes"
            } else {
                continue;
            };
            assert_eq!(row, want, "{title}: {r} outside the {want} row");
        }
        if expr.contains("container_gpu_memory_bytes") {
            assert!(
                expr.ends_with(" or vector(0)"),
                "{title}: {expr} shows nothing without NVML"
            );
        }
    }
    assert!(
        all_panels(&dash).iter().any(|p| {
            let exprs: Vec<&str> = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .collect();
            row_of
                .get(p["title"].as_str().unwrap_or(""))
                .map(String::as_str)
                == Some("GPU")
                && exprs.iter().any(|e| e.contains("containers_live"))
                && exprs.iter().any(|e| e.contains("gpu_shared_devices"))
        }),
        "no GPU panel shows the backlog (containers_live) beside gpu_shared_devices"
    );
    // The panels the deployment guide promises.
    let all = exprs
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "[1m]",
        "[5m]",
        "operation=\"create\"",
        "operation=\"delete\"",
        "exit_code!=\"0\"",
        "histogram_quantile(0.5, sum by (le, agent_name) (rate(container_start_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, agent_name) (rate(container_start_duration_seconds_bucket",
        "sum by (sender)",
        "sum by (cause)",
        "histogram_quantile(0.5, sum by (le, agent_name, writable) (rate(container_mount_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, agent_name, writable) (rate(container_mount_duration_seconds_bucket",
        "sum by (kind) (container_volume_violations_current",
        "rate(container_volume_violations_total",
        "rate(gpu_sharing_total",
        "(gpu_containers)",
    ] {
        assert!(all.contains(needle), "no dashboard expression has {needle}");
    }
    eprintln!(
        "dashboard: {} panels, {} expressions",
        panels.len(),
        exprs.len()
    );
}

// ----- Prometheus rules -----

/// The `record:` names of the rules file.
fn recorded_names() -> Vec<String> {
    read_deploy("prometheus/clawtrace-rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn prometheus_rules_pass_promtool() {
    let test = "prometheus_rules_pass_promtool";
    let Some(promtool) = tool(test, "promtool", "prometheus") else {
        return;
    };
    let dir = deploy_file("prometheus");
    for args in [
        ["check", "rules", "clawtrace-rules.yml"],
        ["test", "rules", "clawtrace-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
        assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
    let names = recorded_names();
    assert!(names.len() >= 5, "recording rules: {names:?}");
    for n in &names {
        assert!(n.starts_with("clawtrace:"), "recording rule {n}");
    }
}

// ----- a real Prometheus -----

/// A Prometheus scraping one target every second and evaluating deploy/'s rules every second,
/// with its storage in a temporary folder. Stopped and removed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `target` (host:port) and waits until it is ready.
    fn start(binary: &Path, target: &str) -> Prometheus {
        let rules = deploy_file("prometheus/clawtrace-rules.yml");
        for attempt in 1..=3 {
            let dir = TempDir::new("prometheus");
            let config = dir.path().join("prometheus.yml");
            fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                     rule_files:\n  - {rules:?}\n\
                     scrape_configs:\n  - job_name: clawtrace\n    static_configs:\n      - targets: [{target:?}]\n",
                    rules = rules.display().to_string()
                ),
            )
            .expect("write prometheus.yml");
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            let mut prom = Prometheus { child, addr, dir };
            match prom.wait_ready() {
                Ok(()) => return prom,
                Err(why) => {
                    let log = prom.log();
                    // Somebody else took the port between the probe and the bind: try another.
                    if attempt < 3 && log.contains("address already in use") {
                        continue;
                    }
                    panic!("prometheus did not become ready: {why}\n{log}");
                }
            }
        }
        unreachable!()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("exited with {status}"));
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("not ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prometheus's own log so far.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path; the JSON answer, whatever its status.
    fn api(&self, path: &str) -> Value {
        let (code, body) = http_get(self.addr, path)
            .unwrap_or_else(|e| panic!("GET {path} from prometheus: {e}\n{}", self.log()));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: HTTP {code}, not JSON ({e}): {body}"))
    }

    /// An instant query: `data` of a successful answer, or the error Prometheus gave.
    fn try_query(&self, promql: &str) -> Result<Value, String> {
        let answer = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)));
        if answer["status"] == "success" {
            Ok(answer["data"].clone())
        } else {
            Err(format!("{}: {}", answer["errorType"], answer["error"]))
        }
    }

    /// The result vector of an instant query (it must succeed).
    fn vector(&self, promql: &str) -> Vec<Value> {
        let data = self
            .try_query(promql)
            .unwrap_or_else(|e| panic!("query {promql} failed: {e}"));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of a query that aggregates to one sample (None when empty).
    fn scalar(&self, promql: &str) -> Option<f64> {
        let v = self.vector(promql);
        v.first().map(sample_value)
    }

    /// How many times the target has been scraped so far (successfully or not).
    fn scrapes(&self) -> u32 {
        self.scalar("sum(count_over_time(up{job=\"clawtrace\"}[1h]))")
            .unwrap_or(0.0) as u32
    }

    /// Waits until the target is up and has been scraped `scrapes` times in all.
    fn wait_scrapes(&self, scrapes: u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.scrapes();
            let up = self.scalar("up{job=\"clawtrace\"}").unwrap_or(0.0);
            if up == 1.0 && n >= scrapes {
                return;
            }
            if Instant::now() > deadline {
                let targets = self.api("/api/v1/targets");
                panic!("target not up with {scrapes} scrapes (up={up}, scrapes={n}): {targets}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `more` scrapes after the ones so far: every series present now then has
    /// `more` samples at least, enough for rate().
    fn wait_more_scrapes(&self, more: u32) {
        let now = self.scrapes();
        self.wait_scrapes(now + more);
    }

    /// Runs every dashboard expression, the agent variable's query and every recording rule;
    /// each must succeed with a non-empty result holding at least one number. An expression
    /// with an `or vector(0)` fallback must hold data without it too, unless every series it
    /// names belongs to one of the families `may_be_absent`. Returns how many queries ran.
    fn check_dashboard_and_rules(&self, may_be_absent: &[&str]) -> usize {
        let mut failures = Vec::new();
        let mut ran = 0;

        // The agent_name variable: label_values(METRIC, LABEL) is the label values API.
        let dash = dashboard();
        let var = dash["templating"]["list"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["name"] == "agent_name"))
            .expect("agent_name variable");
        let def = var["definition"].as_str().expect("definition");
        let (metric, label) = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(','))
            .unwrap_or_else(|| panic!("agent_name variable: unexpected {def}"));
        let answer = self.api(&format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            percent_encode(metric.trim())
        ));
        ran += 1;
        let values = answer["data"].as_array().cloned().unwrap_or_default();
        if answer["status"] != "success" || values.is_empty() {
            failures.push(format!("variable agent_name ({def}): {answer}"));
        } else {
            eprintln!("  variable agent_name: {values:?}");
        }

        // Every panel expression. A query must hold data as soon as the series have their
        // samples; a short retry only covers rule evaluation and scrape timing.
        let mut queries: Vec<(String, String)> = Vec::new();
        for (title, expr) in dashboard_exprs(&dash) {
            queries.push((format!("panel {title:?}"), grafana_to_promql(&expr)));
            let Some(bare) = expr.strip_suffix(" or vector(0)") else {
                continue;
            };
            let optional = referenced_series(bare).iter().all(|s| {
                family_of(s).is_some_and(|(name, _, _)| may_be_absent.contains(&name.as_str()))
            });
            if !optional {
                queries.push((
                    format!("panel {title:?} without its `or vector(0)`"),
                    grafana_to_promql(bare),
                ));
            }
        }
        queries.extend(
            recorded_names()
                .into_iter()
                .map(|n| (format!("recording rule {n}"), n)),
        );
        for (what, promql) in &queries {
            ran += 1;
            // Err((message, worth a retry)).
            let deadline = Instant::now() + Duration::from_secs(5);
            let outcome = loop {
                let outcome = match self.try_query(promql) {
                    // A query Prometheus refuses will not get better.
                    Err(e) => Err((format!("{what}: {promql}: {e}"), false)),
                    Ok(data) => {
                        let result = data["result"].as_array().cloned().unwrap_or_default();
                        if result.is_empty() {
                            Err((format!("{what}: {promql}: empty result"), true))
                        } else if !result.iter().any(|s| sample_value(s).is_finite()) {
                            Err((
                                format!("{what}: {promql}: no finite value in {result:?}"),
                                true,
                            ))
                        } else {
                            Ok(result)
                        }
                    }
                };
                match outcome {
                    Err((_, true)) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    outcome => break outcome.map_err(|(e, _)| e),
                }
            };
            match outcome {
                Ok(result) => eprintln!("  ok ({} series): {what}", result.len()),
                Err(e) => failures.push(e),
            }
        }

        // Every rule group evaluates without error.
        let rules = self.api("/api/v1/rules");
        for group in rules["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                if rule["health"] == "err" {
                    failures.push(format!(
                        "rule {} in {}: {}",
                        rule["name"], group["name"], rule["lastError"]
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {ran} queries failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        ran
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The temporary folder goes with `self.dir`.
    }
}

/// The value of one sample of a query result (`[time, "value"]`), NaN when unreadable.
fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Starts Prometheus on `target`, waits until the target is up and has been scraped three
/// times (samples enough for rate()), then checks every dashboard expression and
/// recording rule (see [`Prometheus::check_dashboard_and_rules`]).
fn check_dashboard_against(prometheus: &Path, target: &str) {
    let started = Instant::now();
    let prom = Prometheus::start(prometheus, target);
    eprintln!("prometheus ready in {:.1?}", started.elapsed());
    prom.wait_scrapes(3);
    let ran = prom.check_dashboard_and_rules(&[]);
    eprintln!(
        "{ran} queries returned data from {target} ({:.1?} with prometheus)",
        started.elapsed()
    );
}

// ----- a sample exporter -----

/// Serves a hand-written exposition of every clawtrace metric on 127.0.0.1; its counters grow
/// with each scrape, so rates are positive. Stopped on drop.
struct SampleExporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The exposition for the `n`th scrape: clawtrace's own metrics after `n` rounds of a made-up
/// workload (every family, counters growing by the same amount each round).
fn sample_exposition(metrics: &clawtrace::sinks::metrics::Metrics) -> String {
    clawtrace::replay::metrics_round(metrics);
    metrics.encode()
}

impl SampleExporter {
    fn start() -> SampleExporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sample exporter");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = clawtrace::sinks::metrics::Metrics::new(None);
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                // Read the request head; every path gets the exposition.
                let mut reader = BufReader::new(match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    line.clear();
                }
                let body = sample_exposition(&metrics);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    clawtrace::sinks::metrics::CONTENT_TYPE,
                    body.len()
                );
                let _ = conn.shutdown(Shutdown::Both);
            }
        });
        SampleExporter {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SampleExporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn sample_exposition_has_every_family() {
    // The exposition the dashboard is checked against is clawtrace's own: every family of its
    // table, with the table's labels.
    let text = sample_exposition(&clawtrace::sinks::metrics::Metrics::new(None));
    for (name, kind, labels) in FAMILIES.iter() {
        // OpenMetrics names a counter's family without its `_total`.
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "sample exposition lacks {name}"
        );
        // Its samples carry the family's labels.
        let series = family_series(name, kind);
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| {
                series.iter().any(|s| {
                    l.strip_prefix(s.as_str())
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                })
            })
            .collect();
        assert!(
            !samples.is_empty(),
            "sample exposition has no {name} sample"
        );
        for sample in samples {
            for label in *labels {
                assert!(
                    sample.contains(&format!("{label}=\"")),
                    "{name} sample without {label}: {sample}"
                );
            }
        }
    }
}

/// The harness itself, without privilege: Prometheus scraping the sample exposition must return
/// data for every dashboard expression and recording rule.
#[test]
fn dashboard_queries_are_valid_against_sample_metrics() {
    let test = "dashboard_queries_are_valid_against_sample_metrics";
    let Some(prometheus) = tool(test, "prometheus", "prometheus") else {
        return;
    };
    let exporter = SampleExporter::start();
    check_dashboard_against(&prometheus, &exporter.addr.to_string());
}

// ----- a real clawtrace -----

/// `clawtrace run` with a Prometheus endpoint, its stderr collected. Stopped on drop.
struct ClawtraceExporter {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ClawtraceExporter {
    /// Starts clawtrace serving /metrics on `listen`, treating the cgroups matching `pattern` as
    /// containers, with `extra` arguments; waits until its probes are attached and /metrics
    /// answers.
    fn start(listen: SocketAddr, pattern: &str, extra: &[&str]) -> ClawtraceExporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
            .args(["run", "--prometheus-listen", &listen.to_string()])
            .args(["--container-cgroup-pattern", pattern])
            .args(["--linger-after", "1s"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clawtrace");
        let stderr = await_tracing(&mut child);
        let mut me = ClawtraceExporter { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((200, _)) = http_get(listen, "/metrics") {
                break;
            }
            if let Some(status) = me.child.try_wait().expect("try_wait") {
                panic!("clawtrace exited with {status}: {:?}", me.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "clawtrace's /metrics on {listen} does not answer: {:?}",
                me.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGINT; clawtrace must exit 0 within 5 s.
    fn stop(mut self) {
        interrupt_and_wait(&mut self.child, &self.stderr);
    }
}

impl Drop for ClawtraceExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags `clawtrace run --help` lists.
fn clawtrace_run_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_clawtrace"))
        .args(["run", "--help"])
        .output()
        .expect("run clawtrace run --help");
    assert!(out.status.success(), "clawtrace run --help: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

/// Waits until /proc/<pid>/comm is `comm` (the process has exec'd it).
fn wait_comm(pid: u32, comm: &str) {
    wait_until(
        &format!("{pid} to exec {comm}"),
        Duration::from_secs(5),
        || fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm),
    );
}

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]).stdin(Stdio::null());
    cmd
}

/// Runs one round of the workload: `ok` containers of agent alpha that exit 0, `failed` of
/// agent beta that exit 3, and `killed` of beta that ignore SIGTERM and are killed with SIGKILL.
/// Every cgroup is removed after its process ended.
fn workload_round(ok: usize, failed: usize, killed: usize) {
    for _ in 0..ok {
        let mut cg = TestCgroup::new("alpha");
        let mut child = cg.spawn(&mut sh("exit 0"));
        let status = wait_status(&mut child);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        cg.remove();
    }
    for _ in 0..failed {
        let mut cg = TestCgroup::new("beta");
        let mut child = cg.spawn(&mut sh("exit 3"));
        let status = wait_status(&mut child);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
        cg.remove();
    }
    for _ in 0..killed {
        let mut cg = TestCgroup::new("beta");
        // An ignored signal stays ignored across exec.
        let mut child = cg.spawn(&mut sh("trap '' TERM; exec sleep 30"));
        wait_comm(child.id(), "sleep");
        kill(child.id(), libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "SIGTERM was not ignored"
        );
        kill(child.id(), libc::SIGKILL);
        let status = wait_status(&mut child);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        cg.remove();
    }
}

/// Something the workload must leave in Prometheus: what, a query summing to one value, and the
/// value expected (exactly, or at least when `at_least`).
struct Expect {
    what: &'static str,
    query: String,
    value: f64,
    at_least: bool,
}

fn exactly(what: &'static str, query: &str, value: f64) -> Expect {
    Expect {
        what,
        query: query.to_string(),
        value,
        at_least: false,
    }
}

fn at_least(what: &'static str, query: &str, value: f64) -> Expect {
    Expect {
        at_least: true,
        ..exactly(what, query, value)
    }
}

/// The workload's totals after `creates` containers were made, `deletes` removed and `exits`
/// processes ended (agents alpha and beta of this test only; each container has one process).
fn totals(creates: f64, deletes: f64, exits: f64) -> Vec<Expect> {
    vec![
        exactly(
            "creates",
            "sum(container_changes_total{operation=\"create\", agent_name=~\"alpha|beta\"})",
            creates,
        ),
        exactly(
            "deletes",
            "sum(container_changes_total{operation=\"delete\", agent_name=~\"alpha|beta\"})",
            deletes,
        ),
        // One per container, at its deletion.
        exactly(
            "container exits",
            "sum(container_exits_total{agent_name=~\"alpha|beta\"})",
            deletes,
        ),
        exactly(
            "process exits",
            "sum(container_process_exits_total{agent_name=~\"alpha|beta\"})",
            exits,
        ),
        exactly(
            "start durations",
            "sum(container_start_duration_seconds_count{agent_name=~\"alpha|beta\"})",
            creates,
        ),
    ]
}

/// Waits (15 s at most) until every expectation holds in Prometheus; on failure shows what
/// Prometheus has, clawtrace's /metrics and its stderr.
fn wait_expected(
    prom: &Prometheus,
    expected: &[Expect],
    listen: SocketAddr,
    clawtrace: &ClawtraceExporter,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen: Vec<(&str, Option<f64>, f64)> = expected
            .iter()
            .map(|e| (e.what, prom.scalar(&e.query), e.value))
            .collect();
        let holds = expected
            .iter()
            .zip(&seen)
            .all(|(e, (_, got, _))| match got {
                Some(got) if e.at_least => *got >= e.value,
                Some(got) => *got == e.value,
                None => false,
            });
        if holds {
            return;
        }
        if Instant::now() > deadline {
            let metrics = http_get(listen, "/metrics")
                .map(|(_, body)| body)
                .unwrap_or_default();
            panic!(
                "Prometheus did not see the workload (what, seen, expected): {seen:?}\n\
                 clawtrace's /metrics:\n{metrics}\nclawtrace's stderr: {:?}",
                clawtrace.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A container of the workload that stays until the end of the test: its cgroup and its
/// process.
struct Resident {
    cgroup: TestCgroup,
    child: Child,
}

impl Resident {
    /// Runs `script` (sh) in a new container of agent `agent` and waits until it has exec'd
    /// `sleep`, its set-up (device opens, mounts) done.
    fn start(agent: &str, script: &str) -> Resident {
        let cgroup = TestCgroup::new(agent);
        let child = cgroup.spawn(sh(script).stdout(Stdio::null()));
        wait_comm(child.id(), "sleep");
        Resident { cgroup, child }
    }

    /// Kills the process, reaps it and removes the cgroup.
    fn end(mut self) {
        kill(self.child.id(), libc::SIGKILL);
        wait_status(&mut self.child);
        self.cgroup.remove();
    }
}

/// A script that asks for `device` (a read: no driver serves the test's node, the open fails
/// after the device check) and then sleeps, as a GPU program keeps running on its device.
fn holding_device(device: &Path) -> String {
    format!("cat '{}' 2>/dev/null; exec sleep 1000", device.display())
}

/// A script that binds `source` onto `target` (read-only or not) in a private mount namespace of
/// its own, as a runtime makes a volume, then execs `sleep`. The namespace, and the bind, go
/// with the process.
fn binding(source: &Path, target: &Path, read_only: bool) -> String {
    let ro = if read_only { " -o ro" } else { "" };
    format!(
        "exec unshare -m --propagation private sh -c 'mount --bind{ro} \"$1\" \"$2\" && exec sleep 1000' volume '{}' '{}'",
        source.display(),
        target.display()
    )
}

/// Prometheus scraping a real clawtrace while containers (cgroups) are created and end in every
/// way the dashboard shows, share a GPU device and bind volumes; then every dashboard expression
/// and recording rule must return data.
#[test]
fn dashboard_queries_return_data_from_clawtrace() {
    require_privileged!();
    let test = "dashboard_queries_return_data_from_clawtrace";
    let Some(prometheus) = tool(test, "prometheus", "prometheus") else {
        return;
    };
    let started = Instant::now();

    // A "GPU device" (a node of NVIDIA's major that no GPU has, outside /dev so it is named by
    // number) and folders to bind: "models" is a --read-only-volume.
    let scratch = TempDir::new("workload");
    let root = fs::canonicalize(scratch.path()).expect("canonical scratch folder");
    let gpu0 = root.join("gpu0");
    mknod(&gpu0, 195, 110);
    let (models, ro, rw) = (root.join("models"), root.join("ro"), root.join("rw"));
    for dir in [&models, &ro, &rw] {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    let models_flag = models.display().to_string();

    // The cgroups of this test, named clawtrace-test-<pid>-<agent>-<n>: the pattern's agent
    // capture becomes the agent_name label.
    let pattern = format!(
        "^/{CGROUP_PREFIX}(?P<id>{}-(?P<agent>[a-z]+)-[0-9]+)$",
        std::process::id()
    );
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let clawtrace = ClawtraceExporter::start(
        listen,
        &pattern,
        &["--trace-mount-syscalls", "--read-only-volume", &models_flag],
    );
    eprintln!("clawtrace ready after {:.1?}", started.elapsed());
    let prom = Prometheus::start(&prometheus, &listen.to_string());
    prom.wait_scrapes(2);
    eprintln!("prometheus scraping after {:.1?}", started.elapsed());

    // Two rounds, with Prometheus scraping the first before the second starts: every counter
    // and histogram bucket then grows between two scrapes, and rates are positive.
    // Round 1 also starts two containers of agent "gpu" sharing gpu0, and one of agent "volume"
    // binding "models" read-only.
    workload_round(2, 1, 1);
    let mut residents = vec![
        Resident::start("gpu", &holding_device(&gpu0)),
        Resident::start("gpu", &holding_device(&gpu0)),
        Resident::start("volume", &binding(&models, &ro, true)),
    ];
    let mount_calls = "sum(container_mount_duration_seconds_count{agent_name=\"volume\"})";
    let mut expected = totals(4.0, 4.0, 4.0);
    expected.extend([
        exactly(
            "containers on gpu0",
            "sum(gpu_containers{gpu=\"195:110\"})",
            2.0,
        ),
        exactly(
            "GPU sharing",
            "sum(gpu_sharing_total{agent_name=\"gpu\"})",
            1.0,
        ),
        // unshare's propagation change, the bind and its read-only remount.
        at_least("mount calls", mount_calls, 2.0),
    ]);
    wait_expected(&prom, &expected, listen, &clawtrace);
    let round1_mounts = prom.scalar(mount_calls).unwrap_or(0.0);
    eprintln!("round 1 scraped after {:.1?}", started.elapsed());

    // Round 2 adds a third container on gpu0, and one that binds "models" writable: shared with
    // the read-only one, and a --read-only-volume, so both kinds of violation.
    workload_round(3, 1, 1);
    residents.push(Resident::start("gpu", &holding_device(&gpu0)));
    residents.push(Resident::start("volume", &binding(&models, &rw, false)));
    // Alpha: one container whose init exits while its cgroup stays (lingering after 1 s), and
    // one that stays live while Prometheus is queried.
    let mut lingering = TestCgroup::new("alpha");
    let mut child = lingering.spawn(&mut sh("exit 0"));
    wait_status(&mut child);
    let mut live = TestCgroup::new("alpha");
    let mut live_child = live.spawn(sh("exec sleep 60").stdout(Stdio::null()));
    wait_comm(live_child.id(), "sleep");

    let mut expected = totals(11.0, 9.0, 10.0);
    expected.extend([
        exactly(
            "non-zero exits",
            "sum(container_exits_total{agent_name=\"beta\", exit_code!=\"0\"})",
            4.0,
        ),
        exactly(
            "containers that failed",
            "sum(container_exits_total{agent_name=\"beta\", verdict=\"failed\", exit_code=\"3\"})",
            2.0,
        ),
        exactly(
            "containers killed from outside",
            "sum(container_exits_total{agent_name=\"beta\", verdict=\"orchestrator_kill\", exit_code=\"137\"})",
            2.0,
        ),
        exactly(
            "processes killed from outside",
            "sum(container_process_exits_total{agent_name=\"beta\", cause=\"orchestrator_kill\", signal=\"SIGKILL\"})",
            2.0,
        ),
        // The SIGKILLs at least; the ignored SIGTERMs too if clawtrace counts those.
        at_least(
            "signals from outside",
            "sum(container_signals_total{agent_name=\"beta\", sender=\"outside\"})",
            2.0,
        ),
        exactly(
            "lingering",
            "sum(containers_lingering{agent_name=\"alpha\"})",
            1.0,
        ),
        // Live counts every container that exists: the lingering one and the live one.
        exactly("live", "sum(containers_live{agent_name=\"alpha\"})", 2.0),
        exactly(
            "containers on gpu0",
            "sum(gpu_containers{gpu=\"195:110\"})",
            3.0,
        ),
        exactly("shared GPU devices", "sum(gpu_shared_devices)", 1.0),
        exactly(
            "GPU sharing",
            "sum(gpu_sharing_total{agent_name=\"gpu\"})",
            2.0,
        ),
        exactly("live GPU and volume containers", "sum(containers_live{agent_name=~\"gpu|volume\"})", 5.0),
        at_least("mount calls", mount_calls, round1_mounts + 2.0),
        exactly(
            "shared writable volumes now",
            "sum(container_volume_violations_current{agent_name=\"volume\", kind=\"shared_writable\"})",
            1.0,
        ),
        exactly(
            "writable read-only volumes now",
            "sum(container_volume_violations_current{agent_name=\"volume\", kind=\"read_only_volume_writable\"})",
            1.0,
        ),
        // The writer's two, and possibly the reader's bind before its read-only remount.
        at_least(
            "violations",
            "sum(container_volume_violations_total{agent_name=\"volume\"})",
            2.0,
        ),
    ]);
    wait_expected(&prom, &expected, listen, &clawtrace);
    eprintln!("workload scraped after {:.1?}", started.elapsed());

    // Every family is there but those no workload here makes: nothing lost, no export
    // configured, no NVML.
    let may_be_absent = [
        "clawtrace_events_lost_total",
        "clawtrace_export_errors_total",
        "container_gpu_memory_bytes",
    ];
    for (name, kind, _) in FAMILIES.iter() {
        let series = if *kind == "histogram" {
            format!("{name}_count")
        } else {
            name.to_string()
        };
        if prom.vector(&format!("count({series})")).is_empty() {
            assert!(
                may_be_absent.contains(&name.as_str()),
                "clawtrace exposes no {series} series after the workload"
            );
            eprintln!("note: clawtrace exposes no {series} series");
        }
    }

    prom.wait_more_scrapes(3);
    let ran = prom.check_dashboard_and_rules(&may_be_absent);
    eprintln!(
        "{ran} queries returned data from clawtrace after {:.1?}",
        started.elapsed()
    );

    kill(live_child.id(), libc::SIGKILL);
    wait_status(&mut live_child);
    live.remove();
    lingering.remove();
    for resident in residents {
        resident.end();
    }
    drop(prom);
    clawtrace.stop();
    drop(scratch);
    eprintln!("{test}: {:.1?} in all", started.elapsed());
}

// ----- YAML files -----

const YAML_FILES: &[&str] = &[
    "otel-collector/config.yaml",
    "kubernetes/daemonset.yaml",
    "prometheus/clawtrace-rules.yml",
    "prometheus/clawtrace-rules.test.yml",
];

/// A python3 with the yaml module (Debian's `python3-yaml` first).
fn python_with_yaml() -> Option<PathBuf> {
    ["/usr/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .chain(find_tool("python3"))
        .find(|py| {
            Command::new(py)
                .args(["-c", "import yaml"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Every YAML file, parsed by python3's yaml.safe_load_all and handed over as JSON: file ->
/// documents.
fn parse_yaml(python: &Path) -> BTreeMap<String, Vec<Value>> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        out = {}\n\
        for rel in sys.argv[2:]:\n    \
            with open(sys.argv[1] + '/' + rel) as f:\n        \
                out[rel] = list(yaml.safe_load_all(f))\n\
        json.dump(out, sys.stdout)\n";
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(workspace().join("deploy"))
        .args(YAML_FILES)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "a YAML file does not parse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// Without a YAML parser: the indentation is spaces and the files hold the settings that
/// matter.
fn check_yaml_text() {
    for rel in YAML_FILES {
        let text = read_deploy(rel);
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.starts_with('\t') && !line.starts_with(" \t"),
                "{rel}:{}: tab indentation",
                i + 1
            );
        }
    }
    let otel = read_deploy("otel-collector/config.yaml");
    for needle in [
        "otlp:",
        ":4317",
        ":4318",
        "batch:",
        "prometheus:",
        "debug:",
        "pipelines:",
    ] {
        assert!(otel.contains(needle), "otel config lacks {needle}");
    }
    let ds = read_deploy("kubernetes/daemonset.yaml");
    for needle in [
        "kind: DaemonSet",
        "kind: ServiceAccount",
        "hostPID: true",
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/fs/cgroup",
        "/var/lib/clawtrace",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "--prometheus-listen",
        "tolerations:",
    ] {
        assert!(ds.contains(needle), "daemonset lacks {needle}");
    }
}

/// The component names a pipeline lists must be defined in their section.
fn check_otel_config(config: &Value) {
    let protocols = &config["receivers"]["otlp"]["protocols"];
    assert!(
        protocols["grpc"]["endpoint"]
            .as_str()
            .is_some_and(|e| e.ends_with(":4317")),
        "OTLP gRPC on 4317: {protocols}"
    );
    assert!(
        protocols["http"]["endpoint"]
            .as_str()
            .is_some_and(|e| e.ends_with(":4318")),
        "OTLP HTTP on 4318: {protocols}"
    );
    let pipelines = config["service"]["pipelines"]
        .as_object()
        .expect("service.pipelines");
    for (name, pipeline) in pipelines {
        for (list, section) in [
            ("receivers", "receivers"),
            ("processors", "processors"),
            ("exporters", "exporters"),
        ] {
            for component in pipeline[list].as_array().into_iter().flatten() {
                let component = component.as_str().expect("component name");
                assert!(
                    config[section].get(component).is_some(),
                    "pipeline {name} uses {section} {component}, which is not defined"
                );
            }
        }
        assert!(
            !pipeline["exporters"]
                .as_array()
                .is_none_or(|e| e.is_empty()),
            "pipeline {name} exports nowhere"
        );
        let procs: Vec<&str> = pipeline["processors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            procs
                .iter()
                .any(|p| *p == "batch" || p.starts_with("batch/")),
            "pipeline {name} has no batch processor"
        );
        if let Some(i) = procs.iter().position(|p| *p == "memory_limiter") {
            assert_eq!(i, 0, "memory_limiter must come first in {name}");
        }
    }
    let metrics = pipelines.get("metrics").expect("a metrics pipeline");
    assert!(
        metrics["exporters"].as_array().is_some_and(|e| e
            .iter()
            .filter_map(Value::as_str)
            .any(|e| e.starts_with("prometheus"))),
        "metrics are exported to Prometheus: {metrics}"
    );
    assert!(pipelines.contains_key("traces"), "a traces pipeline");
    assert!(pipelines.contains_key("logs"), "a logs pipeline");
}

fn check_daemonset(docs: &[Value]) {
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("daemonset.yaml has no {k}"))
    };
    let ds = kind("DaemonSet");
    let sa = kind("ServiceAccount");
    let namespace = &ds["metadata"]["namespace"];
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        assert_eq!(&d["metadata"]["namespace"], namespace, "{}", d["kind"]);
    }
    assert_eq!(ds["apiVersion"], "apps/v1");
    let selector = ds["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector");
    let pod = &ds["spec"]["template"];
    for (k, v) in selector {
        assert_eq!(&pod["metadata"]["labels"][k], v, "selector label {k}");
    }
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["serviceAccountName"], sa["metadata"]["name"]);
    assert!(
        spec["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null())),
        "tolerates every taint: {}",
        spec["tolerations"]
    );
    let container = &spec["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.starts_with(&[
            "run",
            "--prometheus-listen",
            "0.0.0.0:9464",
            "--audit-log",
            "/var/lib/clawtrace/audit.jsonl",
        ]),
        "args: {args:?}"
    );
    assert!(
        container["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["containerPort"] == 9464)),
        "port 9464 declared"
    );
    let endpoint = container["env"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT")
        })
        .and_then(|e| e["value"].as_str())
        .expect("OTEL_EXPORTER_OTLP_ENDPOINT");
    assert!(endpoint.ends_with(":4317"), "{endpoint}");
    let sc = &container["securityContext"];
    let caps: BTreeSet<&str> = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        sc["privileged"] == true
            || ["BPF", "PERFMON", "SYS_ADMIN"]
                .iter()
                .all(|c| caps.contains(c)),
        "privileged or CAP_BPF+PERFMON+SYS_ADMIN: {sc}"
    );
    let res = &container["resources"];
    for key in ["requests", "limits"] {
        assert!(res[key]["memory"].is_string(), "resources.{key}.memory");
    }
    // Mounts: each names a hostPath volume; the host paths clawtrace reads.
    let volumes: BTreeMap<&str, &Value> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    let mut mounts = BTreeMap::new();
    for m in container["volumeMounts"].as_array().expect("volumeMounts") {
        let name = m["name"].as_str().expect("mount name");
        let volume = volumes
            .get(name)
            .unwrap_or_else(|| panic!("mount {name} has no volume"));
        let host = volume["hostPath"]["path"].as_str().expect("hostPath");
        let path = m["mountPath"].as_str().expect("mountPath");
        mounts.insert(path, (host, m["readOnly"] == true));
    }
    for (path, read_only) in [
        ("/sys/kernel/btf", true),
        ("/sys/kernel/tracing", false),
        ("/sys/fs/cgroup", true),
        ("/run", true),
        ("/var/lib/clawtrace", false),
    ] {
        let (host, ro) = mounts
            .get(path)
            .unwrap_or_else(|| panic!("{path} not mounted: {mounts:?}"));
        assert_eq!(*host, path, "{path} comes from the host's {path}");
        assert_eq!(*ro, read_only, "{path} read-only: {read_only}");
    }
}

#[test]
fn yaml_files_parse_and_hold_the_deployment() {
    let test = "yaml_files_parse_and_hold_the_deployment";
    check_yaml_text();
    let Some(python) = python_with_yaml() else {
        skip(
            test,
            "no python3 with the yaml module (Debian package `python3-yaml`): only text checks ran",
        );
        return;
    };
    let parsed = parse_yaml(&python);
    let one = |rel: &str| -> &Value {
        let docs = &parsed[rel];
        assert_eq!(docs.len(), 1, "{rel}: one document");
        &docs[0]
    };
    check_otel_config(one("otel-collector/config.yaml"));
    check_daemonset(&parsed["kubernetes/daemonset.yaml"]);
    let rules = one("prometheus/clawtrace-rules.yml");
    let mut records = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            assert!(rule["expr"].is_string(), "rule without expr: {rule}");
            if let Some(r) = rule["record"].as_str() {
                records.push(r.to_string());
            }
        }
    }
    // The line scan the Prometheus checks use finds the same recording rules.
    assert_eq!(records, recorded_names());
    // The collector's comment states the names its translation produces.
    let otel = read_deploy("otel-collector/config.yaml");
    for (name, _, _) in FAMILIES.iter() {
        assert!(otel.contains(name), "otel config does not mention {name}");
    }
}

// ----- flags used by the deployments -----

/// Every flag the DaemonSet and the systemd unit pass is one `clawtrace run` has.
#[test]
fn deployments_use_existing_flags() {
    let mut flags = BTreeSet::new();
    for rel in ["kubernetes/daemonset.yaml", "systemd/clawtrace.service"] {
        for line in read_deploy(rel).lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            for word in line.split(|c: char| c.is_whitespace() || c == '"') {
                let is_flag = word
                    .strip_prefix("--")
                    .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_lowercase()));
                if is_flag {
                    flags.insert(word.to_string());
                }
            }
        }
    }
    assert!(flags.contains("--prometheus-listen"), "{flags:?}");
    let known = clawtrace_run_flags();
    let missing: Vec<&String> = flags.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "deploy/ passes flags `clawtrace run` does not have: {missing:?} (it has {known:?})"
    );
}

// ----- systemd unit -----

/// `[section] key=value` entries of a unit file, in order.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line {}: not key=value: {line}", i + 1));
        assert!(
            !section.is_empty(),
            "unit line {}: outside a section",
            i + 1
        );
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

#[test]
fn systemd_unit_is_valid() {
    let test = "systemd_unit_is_valid";
    let text = read_deploy("systemd/clawtrace.service");
    let entries = unit_entries(&text);
    let get = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| {
        let v = get("Service", key);
        assert_eq!(v.len(), 1, "[Service] {key}: {v:?}");
        v[0]
    };
    assert_eq!(one("Type"), "simple");
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/clawtrace run --prometheus-listen 127.0.0.1:9464 --audit-log /var/lib/clawtrace/audit.jsonl"
    );
    assert_eq!(one("Restart"), "always");
    assert_eq!(one("StateDirectory"), "clawtrace");
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let caps: BTreeSet<&str> = one(key).split_whitespace().collect();
        for cap in [
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_DAC_READ_SEARCH",
            "CAP_SYS_PTRACE",
        ] {
            assert!(caps.contains(cap), "{key} lacks {cap}");
        }
    }
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert!(one("ReadWritePaths")
        .split_whitespace()
        .any(|p| p == "/var/lib/clawtrace"));
    // Settings that would break clawtrace: hiding other processes' /proc, or W^X enforcement
    // that is not verified with every sink.
    for key in ["ProtectProc", "ProcSubset", "MemoryDenyWriteExecute"] {
        assert!(get("Service", key).is_empty(), "[Service] {key} is set");
    }
    assert!(!get("Install", "WantedBy").is_empty(), "[Install] WantedBy");

    // systemd's own check, with ExecStart pointing at the binary just built (verify wants an
    // executable). Warnings about the unit (unknown keys, bad values) count as failures.
    let Some(analyze) = tool(test, "systemd-analyze", "systemd") else {
        // Without the tool (and without CLAWTRACE_REQUIRE_PRIVILEGED=1): structural checks only.
        return;
    };
    let dir = TempDir::new("systemd");
    let unit = dir.path().join("clawtrace.service");
    fs::write(
        &unit,
        text.replace("/usr/local/bin/clawtrace", env!("CARGO_BIN_EXE_clawtrace")),
    )
    .expect("write unit");
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let about_unit: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("clawtrace.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify ({}):\n{output}",
        out.status
    );
}
