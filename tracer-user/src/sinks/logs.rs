//! The audit trail as OTLP log records: each audited event (the audit log's records, container
//! and process records alike) becomes one log record whose attributes are the record's fields,
//! whose body is its text line, and whose trace and span ids are those of its container's span,
//! so that a fleet's collector ships them wherever it keeps its logs, joined to the spans.

use std::time::SystemTime;

use opentelemetry::{
    logs::{AnyValue, LogRecord as _, Logger as _, Severity},
    trace::{SpanId, TraceFlags, TraceId},
    Key,
};
use opentelemetry_sdk::logs::SdkLogger;
use serde_json::Value;

use super::{metrics::AgentName, terminal};
use crate::model::{attribution::ExitCause, Event, Timed};

/// Nesting past which a field's value is sent as its JSON text (the records nest two levels:
/// a sender and its ancestry).
const MAX_DEPTH: usize = 4;

/// Emits `event` (an audited one) as a log record of its container, whose agent_name is
/// `agent`, at `at`; `span` is the container span's trace and span id, when there is a span.
pub fn emit(
    logger: &SdkLogger,
    event: &Timed,
    agent: &AgentName,
    at: SystemTime,
    span: Option<(TraceId, SpanId)>,
) {
    let mut record = logger.create_log_record();
    record.set_timestamp(at);
    record.set_observed_timestamp(SystemTime::now());
    record.set_event_name(event.event.name());
    let (number, text) = severity(&event.event);
    record.set_severity_number(number);
    record.set_severity_text(text);
    record.set_body(AnyValue::from(terminal::text(event)));
    record.add_attributes(attributes(&event.event));
    record.add_attribute("agent_name", AnyValue::from(agent.to_string()));
    if let Some((trace_id, span_id)) = span {
        record.set_trace_context(trace_id, span_id, Some(TraceFlags::SAMPLED));
    }
    logger.emit(record);
}

/// WARN for what an operator acts on (a container or process that ended by a kill, a crash
/// or a failure, an OOM mark, an active volume violation), INFO for the rest.
fn severity(event: &Event) -> (Severity, &'static str) {
    let bad = |cause: Option<ExitCause>| {
        matches!(
            cause,
            Some(ExitCause::Crash | ExitCause::OomKill | ExitCause::PolicyKill | ExitCause::Failed)
        )
    };
    let warn = match event {
        Event::ContainerDelete(d) => bad(d.verdict),
        Event::ProcessExit(e) => bad(Some(e.cause)),
        Event::OomMark(_) => true,
        Event::VolumeViolation(v) => v.active,
        _ => false,
    };
    if warn {
        (Severity::Warn, "WARN")
    } else {
        (Severity::Info, "INFO")
    }
}

/// The record's fields, as the audit log's JSON object has them (without the `event` tag,
/// which is the record's event name), each a typed value: nested objects as maps, lists as
/// lists. Null fields are left out.
fn attributes(event: &Event) -> Vec<(Key, AnyValue)> {
    let Ok(Value::Object(fields)) = serde_json::to_value(event) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter(|(key, value)| key != "event" && !value.is_null())
        .map(|(key, value)| (Key::from(key), any_value(value, 0)))
        .collect()
}

fn any_value(value: Value, depth: usize) -> AnyValue {
    match value {
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            // A u64 past i64 (cgroup ids, flags) keeps its digits as text rather than wrap.
            None if n.is_u64() => AnyValue::from(n.to_string()),
            None => AnyValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => AnyValue::from(s),
        Value::Null => AnyValue::from(String::new()),
        nested if depth >= MAX_DEPTH => AnyValue::from(nested.to_string()),
        Value::Array(items) => AnyValue::ListAny(Box::new(
            items
                .into_iter()
                .map(|item| any_value(item, depth + 1))
                .collect(),
        )),
        Value::Object(fields) => AnyValue::Map(Box::new(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (Key::from(k), any_value(v, depth + 1)))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{containers::Recognizer, Model, ModelConfig, Output},
        replay::{cgroup, exec, exit, origin, sent, HOST_CGROUP, RUNTIME_PID},
        source::decode::Record,
    };
    use tracer_common::Kind;

    const SECOND: u64 = 1_000_000_000;

    /// A killed container's life through the model.
    fn events() -> Vec<Timed> {
        let id = "b".repeat(64);
        let path = format!("/docker/{id}");
        let (cg, init) = (100, 4_100_000);
        let kill = origin(2 * SECOND, RUNTIME_PID, HOST_CGROUP, 9, 0);
        let records: Vec<Record> = vec![
            cgroup(Kind::CgroupMkdir, SECOND, cg, &path),
            exec(SECOND + 10, cg, init, "/bin/agent"),
            sent(&kill, init, cg),
            exit(2 * SECOND + 10, cg, init, 1, 9),
            cgroup(Kind::CgroupRmdir, 3 * SECOND, cg, &path),
        ];
        let mut model = Model::new(Recognizer::new(&[], None).unwrap(), ModelConfig::default());
        let mut out = Output::default();
        for record in &records {
            model.handle(record, &mut out);
        }
        out.events
    }

    #[test]
    fn the_event_name_is_the_json_tag() {
        let events = events();
        assert_eq!(events.len(), 5);
        for event in &events {
            let json = serde_json::to_value(&event.event).unwrap();
            assert_eq!(json["event"], event.event.name());
        }
    }

    #[test]
    fn attributes_are_the_records_typed_fields() {
        let events = events();
        let exit = events
            .iter()
            .find(|e| matches!(e.event, Event::ProcessExit(_)))
            .unwrap();
        let attributes: std::collections::HashMap<String, AnyValue> = attributes(&exit.event)
            .into_iter()
            .map(|(k, v)| (k.as_str().to_string(), v))
            .collect();
        assert!(!attributes.contains_key("event"));
        assert_eq!(attributes["pid"], AnyValue::Int(4_100_000));
        assert_eq!(
            attributes["cause"],
            AnyValue::from("orchestrator_kill".to_string())
        );
        assert_eq!(attributes["container_id"], AnyValue::from("b".repeat(64)));
        let AnyValue::Map(sender) = &attributes["sender"] else {
            panic!("the sender is a map: {:?}", attributes["sender"]);
        };
        assert_eq!(sender[&Key::from("pid")], AnyValue::Int(RUNTIME_PID as i64));
        assert_eq!(severity(&exit.event).0, Severity::Info);
    }

    #[test]
    fn large_numbers_and_deep_nesting_keep_their_content() {
        assert_eq!(
            any_value(Value::from(u64::MAX), 0),
            AnyValue::from(u64::MAX.to_string())
        );
        let mut deep = Value::from("leaf");
        for _ in 0..10 {
            deep = serde_json::json!({ "in": deep });
        }
        let text = deep.to_string();
        let mut value = any_value(deep, 0);
        for _ in 0..MAX_DEPTH {
            let AnyValue::Map(map) = value else {
                panic!("a map down to the bound");
            };
            value = map[&Key::from("in")].clone();
        }
        let AnyValue::String(rest) = value else {
            panic!("text past the bound");
        };
        assert!(text.contains(rest.as_str()));
    }
}
