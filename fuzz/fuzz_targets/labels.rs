//! Agent label values from untrusted bytes.
//!
//! - `sanitize` on arbitrary bytes and length caps: only `[A-Za-z0-9_.-]`, at most `max_len`
//!   bytes, no `_`, `.` or `-` at either end, no `__`, stable when applied again, and `None`
//!   exactly when the input has no ASCII letter or digit within reach.
//! - `AgentLabels` (plain mode) driven by a sequence of acquire / release / expire calls at
//!   arbitrary times, checked against a reference count kept here: never more than
//!   `max_values` distinct values, `live()` equal to the acquisitions not yet released, and
//!   `expire` returning only values with nothing live.
#![no_main]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use clawtrace::enrich::labels::{sanitize, AgentLabels, LabelMode, LabelPolicy, OVERFLOW, UNKNOWN};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured) -> Result<()> {
    // The sanitizer alone, on one long raw value.
    let max_len = u.int_in_range(0..=200usize)?;
    let len = u.int_in_range(0..=4096usize)?;
    let raw = u.bytes(len.min(u.len()))?;
    check_sanitized(raw, max_len);

    // The cap, on a stream of operations.
    let policy = LabelPolicy {
        mode: LabelMode::Plain,
        max_values: u.int_in_range(0..=6usize)?,
        max_len: u.int_in_range(1..=16usize)?,
        idle_ttl: Duration::from_secs(u.int_in_range(0..=10u64)?),
        // Plain mode touches no file.
        state_dir: "/nonexistent/clawtrace-fuzz".into(),
    };
    let max_values = policy.max_values;
    let max_len = policy.max_len;
    let mut labels = AgentLabels::open(policy).expect("plain mode opens without files");
    let start = Instant::now();
    let mut now = start;
    // Values handed out and not yet released, as the caller would hold them.
    let mut held: Vec<String> = Vec::new();
    while !u.is_empty() {
        match u.int_in_range(0..=4u8)? {
            0 | 1 => {
                let raw = if u.ratio(1, 8)? {
                    None
                } else {
                    // Short values from a small alphabet, so that they repeat and collide.
                    let len = u.int_in_range(0..=6usize)?;
                    let mut v = Vec::with_capacity(len);
                    for _ in 0..len {
                        v.push(*u.choose(b"ab_.-\n\xff\x00unkow")?);
                    }
                    Some(v)
                };
                let got = labels.acquire(raw.as_deref(), now);
                let want = raw.as_deref().and_then(|r| sanitize(r, max_len));
                match want.as_deref() {
                    None | Some(UNKNOWN) => assert_eq!(got, UNKNOWN, "{raw:?}"),
                    Some(value) => assert!(got == value || got == OVERFLOW, "{raw:?} -> {got}"),
                }
                held.push(got);
            }
            2 if !held.is_empty() => {
                let i = u.choose_index(held.len())?;
                let value = held.swap_remove(i);
                labels.release(&value, now);
            }
            2 => {
                // A release nobody holds (a caller's bug, or a stale value) changes nothing.
                let value = String::from_utf8_lossy(u.bytes(3)?).into_owned();
                if !held.contains(&value) {
                    labels.release(&value, now);
                }
            }
            3 => now += Duration::from_millis(u.int_in_range(0..=4000u64)?),
            _ => {
                for gone in labels.expire(now) {
                    assert!(gone != UNKNOWN && gone != OVERFLOW, "expired {gone}");
                    assert!(!held.contains(&gone), "{gone} expired while live");
                }
            }
        }
        assert!(
            labels.distinct() <= max_values,
            "{} > {max_values}",
            labels.distinct()
        );
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for v in &held {
            *counts.entry(v.as_str()).or_default() += 1;
        }
        for (value, count) in counts {
            assert_eq!(labels.live(value), count, "live({value})");
        }
    }
    Ok(())
}

fn check_sanitized(raw: &[u8], max_len: usize) {
    let out = sanitize(raw, max_len);
    let Some(s) = out else {
        // Nothing left: no letter or digit among the bytes the scan could reach. The scan
        // stops after max_len kept bytes, which holds at most max_len alphanumerics.
        assert!(
            max_len == 0 || !raw.iter().any(u8::is_ascii_alphanumeric),
            "{raw:?} (max {max_len}) sanitized to nothing"
        );
        return;
    };
    let b = s.as_bytes();
    assert!(!b.is_empty() && b.len() <= max_len, "{s:?} (max {max_len})");
    assert!(
        b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)),
        "{s:?}"
    );
    let edge = |c: &u8| b"_.-".contains(c);
    assert!(
        !b.first().is_some_and(edge) && !b.last().is_some_and(edge),
        "{s:?}"
    );
    assert!(!s.contains("__"), "{s:?}");
    assert!(raw.iter().any(u8::is_ascii_alphanumeric));
    // Idempotent, and the same under any larger cap.
    assert_eq!(sanitize(b, max_len).as_deref(), Some(s.as_str()));
    assert_eq!(sanitize(b, usize::MAX).as_deref(), Some(s.as_str()));
}
