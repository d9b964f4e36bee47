//! `--container-cgroup-pattern` values and the cgroup paths they meet.
//!
//! - `Recognizer::new` on an arbitrary expression is `Ok` or a `PatternError` whose message is
//!   one line naming the flag, never a panic.
//! - `recognize` on arbitrary paths (odd Unicode, controls, invalid UTF-8 made lossy, as
//!   `sized_str` makes kernel paths) never panics, with user patterns, built-in layouts and a
//!   runc state directory; a user-pattern match's id and agent are parts of the path, and the
//!   id is empty only for an empty path or one that ends with '/'.
//!
//! Input: the pattern, a NUL byte, then NUL-separated paths (lossily decoded).
#![no_main]

use std::{cell::RefCell, collections::HashMap, path::PathBuf, rc::Rc, sync::OnceLock};

use clawtrace::model::containers::{PatternError, Recognize as _, Recognizer};
use libfuzzer_sys::fuzz_target;

/// An empty runc state directory, so the bare-runc branch runs (and finds nothing). One fixed
/// name, so that runs do not leave a folder each.
fn runc_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join("clawtrace-fuzz-runc-root");
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
    .clone()
}

/// `Recognizer::new` for one pattern, remembered: it compiles the built-in layouts too, which
/// costs more than the rest of a run, and the fuzzer often keeps a pattern and changes paths.
fn recognizer(pattern: String) -> Result<Rc<Recognizer>, PatternError> {
    thread_local! {
        static CACHE: RefCell<HashMap<String, Rc<Recognizer>>> = RefCell::new(HashMap::new());
    }
    if let Some(r) = CACHE.with(|c| c.borrow().get(&pattern).cloned()) {
        return Ok(r);
    }
    let r = Rc::new(Recognizer::new(
        std::slice::from_ref(&pattern),
        Some(runc_root()),
    )?);
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(pattern, Rc::clone(&r));
    });
    Ok(r)
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let pattern = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let recognizer = match recognizer(pattern) {
        Ok(r) => r,
        Err(err) => {
            let text = err.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(
                text.starts_with("invalid --container-cgroup-pattern "),
                "{text}"
            );
            assert!(!err.reason.is_empty(), "{text}: no reason");
            return;
        }
    };
    for raw in parts.take(16) {
        let path = String::from_utf8_lossy(raw);
        let Some(ident) = recognizer.recognize(&path) else {
            continue;
        };
        if ident.runtime == "custom" {
            // The id is the `id` group or the last path element: part of the path. It is empty
            // only when the path is, or ends with '/' (the kernel reports neither but for the
            // root, which is never made; a corrupt record could).
            assert!(path.contains(&*ident.id), "{path:?}: id {:?}", ident.id);
            assert!(
                !ident.id.is_empty() || path.is_empty() || path.ends_with('/'),
                "{path:?}: empty id"
            );
            if let Some(agent) = &ident.agent {
                assert!(path.contains(agent.as_str()), "{path:?}: agent {agent:?}");
            }
        } else {
            assert!(!ident.id.is_empty(), "{path:?}: {ident:?}");
        }
    }
});
