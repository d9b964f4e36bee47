//! `clawtrace explain CONTAINER`: one container's life, from the audit log (the log and its
//! rotated files, oldest first): when it was created and by which runtime, its agent, its start
//! latency, its volumes and violations, its GPU use, every kill with its sender chain, and its
//! verdict in one sentence.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

/// The audit log's records of the one container whose id starts with `prefix` (as `docker`
/// takes an id prefix), oldest first. An unknown or ambiguous prefix is an error.
pub fn records(audit_log: &Path, prefix: &str) -> Result<(String, Vec<Value>)> {
    if prefix.is_empty() {
        bail!("no container id given");
    }
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| PathBuf::from(format!("{}.{n}", audit_log.display())))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(audit_log.to_path_buf());
    let mut all = Vec::new();
    for file in &files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file == audit_log => {
                bail!("no audit log at {} (see --audit-log)", audit_log.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        // A line torn by a crash is skipped; every whole line is one JSON object.
        all.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
    }
    let mut ids: Vec<&str> = all
        .iter()
        .filter_map(|r| r["container_id"].as_str())
        .filter(|id| id.starts_with(prefix))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let id = match ids.as_slice() {
        [] => bail!(
            "no container {prefix:?} in the audit log {}",
            audit_log.display()
        ),
        [id] => id.to_string(),
        many => bail!(
            "{prefix:?} is ambiguous: it starts {} container ids ({})",
            many.len(),
            many.iter().take(3).copied().collect::<Vec<_>>().join(", ")
        ),
    };
    let records = all
        .into_iter()
        .filter(|r| r["container_id"] == id.as_str())
        .collect();
    Ok((id, records))
}

/// A sender as the text lines give it: `runc[4121] ← containerd-shim[4100]`.
fn who(sender: &Value) -> String {
    fn process(p: &Value) -> (&str, String) {
        (p["comm"].as_str().unwrap_or("?"), p["pid"].to_string())
    }
    crate::sinks::terminal::kill_chain(
        std::iter::once(process(sender)).chain(
            sender["ancestry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(process),
        ),
    )
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("?").to_string()
}

/// The container's verdict in one sentence, from its deletion record and the exit of the
/// process the verdict is about.
pub fn verdict(records: &[Value]) -> String {
    let Some(delete) = records.iter().find(|r| r["event"] == "container_delete") else {
        return "still running, or deleted while clawtrace was not tracing".to_string();
    };
    let Some(cause) = delete["verdict"].as_str() else {
        return "its end is not known: its init's exit was not seen".to_string();
    };
    let pid = &delete["verdict_process"]["pid"];
    let exit = records
        .iter()
        .rev()
        .find(|r| r["event"] == "process_exit" && r["pid"] == *pid);
    let process = format!("{}[{}]", text(&delete["verdict_process"]["comm"]), pid);
    let signal = exit.map_or("a signal".to_string(), |e| text(&e["signal"]));
    let sender = exit
        .map(|e| &e["sender"])
        .filter(|s| !s.is_null())
        .map(|s| format!("{} ({})", who(s), text(&s["class"])));
    let after = exit
        .filter(|e| !e["escalated_from"].is_null())
        .map(|e| {
            format!(
                ", {} s after {}",
                e["grace_seconds"]
                    .as_f64()
                    .map_or("?".into(), |g| format!("{g:.1}")),
                text(&e["escalated_from"])
            )
        })
        .unwrap_or_default();
    let code = &delete["exit_code"];
    match cause {
        "exited" => format!("exited cleanly: {process} exited 0"),
        "failed" => format!("failed: {process} exited {code}"),
        "orchestrator_kill" => format!(
            "killed from outside the container: {signal} to {process} from {}{after}",
            sender.unwrap_or_else(|| "an unseen sender".into())
        ),
        "peer_kill" => format!(
            "killed by a process of the same container: {signal} to {process} from {}",
            sender.unwrap_or_else(|| "an unseen sender".into())
        ),
        "self_signal" => format!("killed itself: {process} sent itself {signal}"),
        "crash" => format!("crashed: {process} died of {signal}"),
        "oom_kill" => format!("killed by the OOM killer: {process}"),
        "policy_kill" => {
            let policy = exit.map_or("a policy".to_string(), |e| text(&e["policy"]));
            let detail = match exit {
                Some(e) if !e["syscall"].is_null() => format!(
                    ", {policy} refused `{}`",
                    e["syscall"]["name"]
                        .as_str()
                        .unwrap_or("an unknown system call")
                ),
                Some(e) if !e["limit"].is_null() => format!(", limit {}", text(&e["limit"])),
                _ => String::new(),
            };
            format!("killed by policy ({policy}): {signal} to {process}{detail}")
        }
        "init_exited" => {
            format!("killed because the init of its pid namespace exited: {process}")
        }
        "broken_pipe" => format!("died writing to a broken pipe: {process}"),
        other => format!("{other}: {process} died of {signal}, and who sent it is not known"),
    }
}

/// One line per record worth telling, as `explain` prints them.
fn story(records: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in records {
        let at = text(&r["time"]);
        let line = match r["event"].as_str().unwrap_or_default() {
            "container_create" => format!(
                "created by {} (cgroup {}){}",
                text(&r["runtime"]),
                text(&r["cgroup_path"]),
                if r["preexisting"] == true {
                    ", found running at start"
                } else {
                    ""
                }
            ),
            "process_exec" => format!(
                "init {}[{}] {}{}",
                text(&r["comm"]),
                r["pid"],
                text(&r["filename"]),
                r["start_seconds"]
                    .as_f64()
                    .map(|s| format!(", {s:.3} s after its cgroup was made"))
                    .unwrap_or_default()
            ),
            "volume_mount" => format!(
                "volume {} at {} (read-only: {})",
                text(&r["source"]),
                text(&r["target"]),
                text(&r["read_only"])
            ),
            "volume_violation" => format!(
                "volume violation {}: {} ({})",
                text(&r["kind"]),
                text(&r["source"]),
                if r["active"] == true {
                    "began"
                } else {
                    "ended"
                }
            ),
            "device_access" => format!("GPU {} first used", text(&r["device"])),
            "gpu_sharing" => format!("shares GPU {} with other containers", text(&r["device"])),
            "signal" => format!(
                "{} to {}[{}] from {} ({})",
                text(&r["signal"]),
                text(&r["target_comm"]),
                r["target_pid"],
                who(&r["sender"]),
                text(&r["sender"]["class"])
            ),
            "oom_mark" => format!("the OOM killer chose pid {}", r["pid"]),
            "process_exit" => format!(
                "{}[{}] exited {} ({})",
                text(&r["comm"]),
                r["pid"],
                r["exit_code"],
                text(&r["cause"])
            ),
            "container_lingering" => "lingering: its init exited, its cgroup remained".to_string(),
            "container_delete" => format!(
                "deleted after {} s",
                r["lifetime_seconds"]
                    .as_f64()
                    .map_or("?".into(), |s| format!("{s:.1}"))
            ),
            _ => continue,
        };
        lines.push(format!("  {at}  {line}"));
    }
    lines
}

/// The report `explain` prints: text, or one JSON object.
pub fn report(id: &str, records: &[Value], as_json: bool) -> String {
    let agent = records
        .iter()
        .filter_map(|r| r["agent"].as_str())
        .next_back()
        .map(str::to_string);
    let verdict = verdict(records);
    // A CRI container's Kubernetes names, as its records carry them.
    let k8s = records
        .iter()
        .map(|r| &r["k8s"])
        .find(|k| k.is_object())
        .cloned();
    if as_json {
        return json!({
            "container_id": id,
            "agent": agent,
            "k8s": k8s,
            "verdict": verdict,
            "records": records,
        })
        .to_string();
    }
    let mut out = format!(
        "container {id}{}\n",
        agent.map(|a| format!(" (agent {a})")).unwrap_or_default()
    );
    if let Some(k8s) = &k8s {
        out.push_str(&format!(
            "  pod {}/{}{}{}\n",
            text(&k8s["namespace"]),
            text(&k8s["pod_name"]),
            k8s["pod_uid"]
                .as_str()
                .map(|uid| format!(" (uid {uid})"))
                .unwrap_or_default(),
            k8s["container_name"]
                .as_str()
                .map(|name| format!(", container {name}"))
                .unwrap_or_default(),
        ));
    }
    for line in story(records) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("verdict: {verdict}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;

    fn write(path: &Path, lines: &[Value]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn a_prefix_finds_one_container_across_rotated_files() {
        let dir = TempDir::new("explain");
        let log = dir.0.join("audit.jsonl");
        let create = |id: &str| json!({"event": "container_create", "container_id": id, "runtime": "docker", "cgroup_path": format!("/docker/{id}"), "time": "t0"});
        write(
            &dir.0.join("audit.jsonl.1"),
            &[create("abc1"), create("abd2")],
        );
        let kill = json!({"event": "process_exit", "container_id": "abc1", "pid": 7, "comm": "agent", "exit_code": 137, "cause": "orchestrator_kill", "signal": "SIGKILL", "escalated_from": "SIGTERM", "grace_seconds": 10.0, "sender": {"pid": 9, "comm": "runc", "class": "runtime", "ancestry": [{"pid": 8, "comm": "containerd-shim"}]}, "time": "t1"});
        let delete = json!({"event": "container_delete", "container_id": "abc1", "verdict": "orchestrator_kill", "verdict_process": {"pid": 7, "comm": "agent"}, "exit_code": 137, "lifetime_seconds": 12.0, "agent": "nemo", "time": "t2"});
        write(&log, &[kill, delete]);
        let (id, found) = records(&log, "abc").unwrap();
        assert_eq!(id, "abc1");
        assert_eq!(found.len(), 3, "the rotated file first, then the log");
        assert_eq!(
            verdict(&found),
            "killed from outside the container: SIGKILL to agent[7] from runc[9] ← \
             containerd-shim[8] (runtime), 10.0 s after SIGTERM"
        );
        assert!(report(&id, &found, false).starts_with("container abc1 (agent nemo)\n"));
        // Ambiguous and unknown prefixes are one-line errors.
        let err = records(&log, "ab").unwrap_err().to_string();
        assert!(err.contains("ambiguous") && !err.contains('\n'), "{err}");
        let err = records(&log, "zz").unwrap_err().to_string();
        assert!(err.starts_with("no container \"zz\""), "{err}");
    }

    #[test]
    fn a_cri_container_is_told_with_its_pod() {
        let k8s = json!({"pod_name": "web-0", "namespace": "shop", "pod_uid": "u-1", "container_name": "app"});
        let records = [
            json!({"event": "container_create", "container_id": "c1", "runtime": "containerd", "cgroup_path": "/kubepods/podu-1/c1", "k8s": k8s, "time": "t0"}),
            json!({"event": "container_delete", "container_id": "c1", "verdict": "exited", "verdict_process": {"pid": 5, "comm": "app"}, "exit_code": 0, "k8s": k8s, "time": "t1"}),
        ];
        let text = report("c1", &records, false);
        assert!(
            text.starts_with("container c1\n  pod shop/web-0 (uid u-1), container app\n"),
            "{text}"
        );
        let json: Value = serde_json::from_str(&report("c1", &records, true)).unwrap();
        assert_eq!(json["k8s"], k8s);
        // Not a CRI container: no pod line, and null in JSON.
        let plain = [
            json!({"event": "container_create", "container_id": "c2", "runtime": "docker", "cgroup_path": "/docker/c2", "time": "t0"}),
        ];
        assert!(!report("c2", &plain, false).contains("pod "));
        let json: Value = serde_json::from_str(&report("c2", &plain, true)).unwrap();
        assert!(json["k8s"].is_null());
    }

    #[test]
    fn a_seccomp_kill_is_told_in_one_sentence() {
        let records = [
            json!({"event": "process_exit", "pid": 5, "signal": "SIGSYS", "cause": "policy_kill", "policy": "seccomp", "syscall": {"number": 162, "name": "sync"}}),
            json!({"event": "container_delete", "verdict": "policy_kill", "verdict_process": {"pid": 5, "comm": "agent"}, "exit_code": 159}),
        ];
        assert_eq!(
            verdict(&records),
            "killed by policy (seccomp): SIGSYS to agent[5], seccomp refused `sync`"
        );
    }
}
