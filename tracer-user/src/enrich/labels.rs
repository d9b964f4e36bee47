//! Agent label values. Each container's `agent_name` comes from metadata its owner controls
//! (Docker labels, OCI annotations, an environment variable, a regex capture), and it becomes a
//! Prometheus/OTLP label value, so it is untrusted input. This module owns everything between
//! the raw bytes and the exported value:
//!
//! - [`sanitize`]: the byte filter, so a value can never break the exposition format or inject
//!   labels;
//! - [`AgentLabels`]: the cardinality cap (refcounts of live containers per value, idle expiry,
//!   the [`OVERFLOW`] bucket);
//! - in [`LabelMode::Hash`], the HMAC key `<state_dir>/label-key` and the append-only lookup
//!   table `<state_dir>/label-lookup.jsonl` that [`lookup`] reads back for
//!   `clawtrace labels lookup HASH`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::sinks::files::{
    check_private_file, ensure_private_dir, nofollow_error, open_append, open_read_nofollow,
};

/// The value of a container for which no source had an agent name, or whose name sanitized to
/// nothing. It never counts against the cap.
pub const UNKNOWN: &str = "unknown";
/// The value every acquisition gets while the cap is full. It starts with `_`, which
/// [`sanitize`] trims, so no container can choose it.
pub const OVERFLOW: &str = "_overflow";
/// The HMAC key's file name under the state directory.
pub const KEY_FILE: &str = "label-key";
/// The lookup table's file name under the state directory.
pub const LOOKUP_FILE: &str = "label-lookup.jsonl";

const KEY_LEN: usize = 32;
const HASH_PREFIX: &str = "h_";
/// Hex characters of the HMAC kept in a hashed value (64 bits).
const HASH_HEX_LEN: usize = 16;

/// How a sanitized agent name becomes a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelMode {
    /// The sanitized name itself.
    Plain,
    /// `h_` and 16 hex characters of HMAC-SHA256 of the sanitized name under a key kept in the
    /// state directory; `clawtrace labels lookup` maps it back.
    Hash,
}

/// What [`AgentLabels`] may export.
#[derive(Debug, Clone)]
pub struct LabelPolicy {
    pub mode: LabelMode,
    /// Distinct values (other than [`UNKNOWN`] and [`OVERFLOW`]) that may hold a slot at once.
    pub max_values: usize,
    /// Bytes of a sanitized name; longer names are cut.
    pub max_len: usize,
    /// Where hash mode keeps its key and lookup table.
    pub state_dir: PathBuf,
    /// How long a value with no live container keeps its slot.
    pub idle_ttl: Duration,
}

impl Default for LabelPolicy {
    fn default() -> Self {
        LabelPolicy {
            mode: LabelMode::Plain,
            max_values: crate::defaults::LABEL_MAX_VALUES,
            max_len: crate::defaults::LABEL_MAX_LEN,
            state_dir: PathBuf::from(crate::defaults::STATE_DIR),
            idle_ttl: crate::defaults::LABEL_TTL_VALUE,
        }
    }
}

/// `_`, `.` and `-` are trimmed from both ends: at the start they would let a name pose as the
/// reserved `_overflow`, a hidden file (`.x`, `..`) or a command-line flag (`-x`) wherever a
/// value is reused; at either end they are mostly left-overs of replaced bytes.
fn is_edge(b: u8) -> bool {
    matches!(b, b'_' | b'.' | b'-')
}

/// The label-safe form of an untrusted name, or `None` when nothing is left.
///
/// - Bytes outside ASCII `[A-Za-z0-9_.-]` (controls, quotes, braces, `\`, `=`, spaces,
///   newlines, every byte of a multi-byte or invalid UTF-8 sequence) become `_`.
/// - Runs of `_` collapse to one, whatever their origin, so an emoji or `"\n"` costs one
///   byte and `a__b` equals `a_b`.
/// - Leading and trailing `_`, `.` and `-` are trimmed (see `is_edge`).
/// - The result is at most `max_len` bytes. Scanning stops once it has `max_len` bytes, so a
///   1 MiB name costs O(`max_len`) memory; leading bytes that are dropped do not count, so the
///   time is linear in the input in all cases.
pub fn sanitize(raw: &[u8], max_len: usize) -> Option<String> {
    let mut out: Vec<u8> = Vec::with_capacity(max_len.min(raw.len()));
    for &b in raw {
        if out.len() >= max_len {
            break;
        }
        let c = if b.is_ascii_alphanumeric() || is_edge(b) {
            b
        } else {
            b'_'
        };
        if (out.is_empty() && is_edge(c)) || (c == b'_' && out.last() == Some(&b'_')) {
            continue;
        }
        out.push(c);
    }
    while out.last().is_some_and(|&c| is_edge(c)) {
        out.pop();
    }
    if out.is_empty() {
        return None;
    }
    // Only ASCII was pushed, so this cannot fail; `ok()` keeps the runtime path panic-free.
    String::from_utf8(out).ok()
}

/// One line of the lookup table.
#[derive(Serialize, Deserialize)]
struct LookupEntry {
    hash: String,
    value: String,
}

/// Hash mode's state: the keyed MAC and the open lookup table.
struct Hasher {
    mac: Hmac<Sha256>,
    lookup: File,
    lookup_path: PathBuf,
    /// Hashes already in the table, so each is written once.
    recorded: HashSet<String>,
}

impl Hasher {
    fn open(state_dir: &Path) -> anyhow::Result<Hasher> {
        ensure_private_dir(state_dir)?;
        let key = load_or_create_key(state_dir)?;
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| anyhow!("HMAC key: {e}"))?;
        let lookup_path = state_dir.join(LOOKUP_FILE);
        let (lookup, recorded) = open_lookup(&lookup_path)?;
        Ok(Hasher {
            mac,
            lookup,
            lookup_path,
            recorded,
        })
    }

    fn hash(&self, sanitized: &str) -> String {
        // Cloning the keyed MAC reuses the key schedule instead of rebuilding it per name.
        let mut mac = self.mac.clone();
        mac.update(sanitized.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(HASH_PREFIX.len() + HASH_HEX_LEN);
        out.push_str(HASH_PREFIX);
        for b in digest.iter().take(HASH_HEX_LEN / 2) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Writes `hash → sanitized` to the table unless it is there already. A failure is logged,
    /// not returned: the metric is still right, only `labels lookup` will miss this hash, and
    /// leaving it unrecorded makes the next new slot for it try again.
    fn record(&mut self, hash: &str, sanitized: &str) {
        if self.recorded.contains(hash) {
            return;
        }
        let entry = LookupEntry {
            hash: hash.to_owned(),
            value: sanitized.to_owned(),
        };
        let written = serde_json::to_string(&entry)
            .map_err(io::Error::from)
            .and_then(|mut line| {
                line.push('\n');
                // One write(2) on an O_APPEND file: the line lands whole after the last one.
                self.lookup.write_all(line.as_bytes())
            });
        match written {
            Ok(()) => {
                self.recorded.insert(hash.to_owned());
            }
            Err(e) => log::warn!(
                "cannot record label {hash} in {}: {e}",
                self.lookup_path.display()
            ),
        }
    }
}

/// Live containers of one value, and since when it has had none.
#[derive(Debug)]
struct Slot {
    live: u64,
    idle_since: Option<Instant>,
}

/// The label values in use and the cap on them. Not thread-safe by itself: one owner (the
/// event loop) calls it.
pub struct AgentLabels {
    policy: LabelPolicy,
    hasher: Option<Hasher>,
    slots: HashMap<String, Slot>,
    unknown_live: u64,
    overflow_live: u64,
    overflow_total: u64,
    /// Values whose slot `acquire` reclaimed while the cap was full; the next `expire` returns
    /// them so the caller still drops their series.
    reclaimed: Vec<String>,
}

impl fmt::Debug for AgentLabels {
    // By hand, so the key inside the MAC never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLabels")
            .field("policy", &self.policy)
            .field("distinct", &self.slots.len())
            .field("unknown_live", &self.unknown_live)
            .field("overflow_live", &self.overflow_live)
            .field("overflow_total", &self.overflow_total)
            .finish_non_exhaustive()
    }
}

impl AgentLabels {
    /// Plain mode touches no file. Hash mode creates `state_dir` (0700) if missing, loads the
    /// key or creates it, and opens the lookup table, loading the hashes it already holds.
    pub fn open(policy: LabelPolicy) -> anyhow::Result<AgentLabels> {
        let hasher = match policy.mode {
            LabelMode::Plain => None,
            LabelMode::Hash => Some(Hasher::open(&policy.state_dir)?),
        };
        Ok(AgentLabels {
            policy,
            hasher,
            slots: HashMap::new(),
            unknown_live: 0,
            overflow_live: 0,
            overflow_total: 0,
            reclaimed: Vec::new(),
        })
    }

    pub fn policy(&self) -> &LabelPolicy {
        &self.policy
    }

    /// The label value for one more live container whose agent name is `raw`; pair it with one
    /// [`release`](Self::release) of the same value when the container is gone.
    ///
    /// [`UNKNOWN`] when `raw` is absent or sanitizes to nothing (in plain mode also when it
    /// sanitizes to `unknown` itself: it is the same series). A value that holds no slot gets
    /// one if the cap allows, or else the slot of a value idle for `idle_ttl` (reported by the
    /// next [`expire`](Self::expire)), or else [`OVERFLOW`].
    pub fn acquire(&mut self, raw: Option<&[u8]>, now: Instant) -> String {
        let Some(sanitized) = raw.and_then(|r| sanitize(r, self.policy.max_len)) else {
            self.unknown_live += 1;
            return UNKNOWN.to_owned();
        };
        let value = match &self.hasher {
            Some(h) => h.hash(&sanitized),
            None if sanitized == UNKNOWN => {
                self.unknown_live += 1;
                return UNKNOWN.to_owned();
            }
            None => sanitized.clone(),
        };
        if let Some(slot) = self.slots.get_mut(&value) {
            slot.live += 1;
            slot.idle_since = None;
            return value;
        }
        if self.slots.len() >= self.policy.max_values && !self.reclaim_one(now) {
            self.overflow_live += 1;
            self.overflow_total += 1;
            return OVERFLOW.to_owned();
        }
        if let Some(h) = &mut self.hasher {
            h.record(&value, &sanitized);
        }
        // It may have been reclaimed before the caller heard of it: it is live again, so the
        // caller must not drop its series.
        self.reclaimed.retain(|v| v != &value);
        self.slots.insert(
            value.clone(),
            Slot {
                live: 1,
                idle_since: None,
            },
        );
        value
    }

    /// Frees the slot of the value idle longest, if it has been idle for `idle_ttl`, so a full
    /// cap does not turn new names into `_overflow` while forgettable values wait for the next
    /// `expire` tick. Linear in the cap, and only run while the cap is full.
    fn reclaim_one(&mut self, now: Instant) -> bool {
        let ttl = self.policy.idle_ttl;
        let oldest = self
            .slots
            .iter()
            .filter_map(|(v, s)| match (s.live, s.idle_since) {
                (0, Some(t)) if now.saturating_duration_since(t) >= ttl => Some((t, v)),
                _ => None,
            })
            .min()
            .map(|(_, v)| v.clone());
        match oldest {
            Some(v) => {
                self.slots.remove(&v);
                self.reclaimed.push(v);
                true
            }
            None => false,
        }
    }

    /// One container holding `value` is gone. The value keeps its slot; once it has had no
    /// live container for `idle_ttl`, [`expire`](Self::expire) forgets it. Unknown values and
    /// extra releases are ignored.
    pub fn release(&mut self, value: &str, now: Instant) {
        let count = match value {
            UNKNOWN => &mut self.unknown_live,
            OVERFLOW => &mut self.overflow_live,
            _ => match self.slots.get_mut(value) {
                Some(slot) if slot.live > 0 => {
                    slot.live -= 1;
                    if slot.live == 0 {
                        slot.idle_since = Some(now);
                    }
                    return;
                }
                _ => {
                    log::debug!("release of label value {value:?} that has no live container");
                    return;
                }
            },
        };
        *count = count.saturating_sub(1);
    }

    /// Forgets the values with no live container for `idle_ttl` (they stop counting against
    /// the cap) and returns them, with those `acquire` reclaimed since the last call, sorted:
    /// the caller drops their metric series. [`UNKNOWN`] and [`OVERFLOW`] are never returned:
    /// they are two series at most.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let ttl = self.policy.idle_ttl;
        let mut gone = std::mem::take(&mut self.reclaimed);
        self.slots.retain(|v, s| match (s.live, s.idle_since) {
            (0, Some(t)) if now.saturating_duration_since(t) >= ttl => {
                gone.push(v.clone());
                false
            }
            _ => true,
        });
        gone.sort_unstable();
        gone
    }

    /// How many acquisitions got [`OVERFLOW`].
    pub fn overflow_total(&self) -> u64 {
        self.overflow_total
    }

    /// Values currently holding a slot (never more than `max_values`).
    pub fn distinct(&self) -> usize {
        self.slots.len()
    }

    /// Live containers holding `value` (including [`UNKNOWN`] and [`OVERFLOW`]).
    pub fn live(&self, value: &str) -> u64 {
        match value {
            UNKNOWN => self.unknown_live,
            OVERFLOW => self.overflow_live,
            _ => self.slots.get(value).map_or(0, |s| s.live),
        }
    }
}

/// The plaintext (sanitized) name behind a hashed value, from the lookup table under
/// `state_dir`; `None` when the table does not have it. An error if there is no table.
pub fn lookup(state_dir: &Path, hashed: &str) -> anyhow::Result<Option<String>> {
    let path = state_dir.join(LOOKUP_FILE);
    let file = match open_read_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "no label lookup table at {} (has clawtrace run in hash mode with this state directory?)",
            path.display()
        ),
        Err(e) => return Err(nofollow_error(e, &path)),
    };
    check_private_file(&file, &path)?;
    let hashed = hashed.trim();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(None);
        }
        if let Ok(entry) = serde_json::from_slice::<LookupEntry>(&line) {
            if entry.hash == hashed {
                return Ok(Some(entry.value));
            }
        }
    }
}

fn load_or_create_key(dir: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    if let Some(key) = read_key(&path)? {
        return Ok(key);
    }
    if let Some(key) = create_key(dir, &path)? {
        return Ok(key);
    }
    // Someone else created it between our two looks (or planted something there): read it,
    // which applies every check.
    read_key(&path)?.ok_or_else(|| anyhow!("{} vanished while being created", path.display()))
}

/// The existing key, `None` if there is none.
fn read_key(path: &Path) -> anyhow::Result<Option<[u8; KEY_LEN]>> {
    let mut file = match open_read_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(nofollow_error(e, path)),
    };
    let meta = check_private_file(&file, path)?;
    if meta.len() != KEY_LEN as u64 {
        bail!(
            "{} is {} bytes, not {KEY_LEN}: not a clawtrace label key (move it away to make a \
             new key; every hashed label value changes with it)",
            path.display(),
            meta.len()
        );
    }
    let mut key = [0u8; KEY_LEN];
    file.read_exact(&mut key)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(key))
}

/// Makes a new key at `path`; `None` if a file appeared there first. The key is written to a
/// temporary file and hard-linked into place, so a crash never leaves a short key behind and
/// an existing file (or symlink) at `path` is never replaced: link(2) fails with EEXIST
/// instead. Both files are created with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600.
fn create_key(dir: &Path, path: &Path) -> anyhow::Result<Option<[u8; KEY_LEN]>> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| anyhow!("getrandom: {e}"))?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp.{}", std::process::id()));
    // A left-over of a crashed run with the same pid; unlink does not follow symlinks.
    let _ = fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&key)?;
            f.sync_all()
        });
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Persist the new directory entry; the key itself was synced above.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            log::info!("created label key {}", path.display());
            Ok(Some(key))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
    }
}

/// Opens (creating) the lookup table for appending and loads the hashes it holds. Lines that
/// do not parse are skipped; a torn last line gets its newline so the next entry starts clean.
fn open_lookup(path: &Path) -> anyhow::Result<(File, HashSet<String>)> {
    let mut file = open_append(path)
        .with_context(|| format!("opening label lookup table {}", path.display()))?;
    check_private_file(&file, path)?;
    let mut recorded = HashSet::new();
    let mut reader = BufReader::new(&file);
    let mut line = Vec::new();
    let mut ends_clean = true;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        ends_clean = line.last() == Some(&b'\n');
        match serde_json::from_slice::<LookupEntry>(&line) {
            Ok(entry) => {
                recorded.insert(entry.hash);
            }
            Err(_) => log::warn!("skipping a malformed line in {}", path.display()),
        }
    }
    if !ends_clean {
        file.write_all(b"\n")
            .with_context(|| format!("repairing {}", path.display()))?;
    }
    Ok((file, recorded))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use std::os::unix::fs::symlink;

    use crate::test_dir::TempDir;

    fn policy(mode: LabelMode, dir: &Path) -> LabelPolicy {
        LabelPolicy {
            mode,
            state_dir: dir.join("state"),
            ..LabelPolicy::default()
        }
    }

    fn is_safe(v: &str) -> bool {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    }

    /// 10,000 distinct names built to hurt: every one differs, so the cap must hold.
    fn hostile_names() -> Vec<Vec<u8>> {
        let specials: &[&[u8]] = &[
            b"\"",
            b"\n",
            b"\r\n",
            b"{",
            b"}",
            b"\\",
            b"=",
            b"\0",
            b"\xff\xfe",
            b"\xc3\x28",
            "🦀".as_bytes(),
            "é".as_bytes(),
            b" ",
            b"\t",
            b"'",
            b",",
            b"#",
            b"..",
            b"-",
            b"_",
        ];
        let mut names = Vec::with_capacity(10_000);
        let mut big = b"agent".to_vec();
        big.resize(1 << 20, b'x');
        names.push(big);
        let mut big_hostile = Vec::new();
        while big_hostile.len() < (1 << 20) {
            big_hostile.extend_from_slice(b"\"}\n\xff");
        }
        names.push(big_hostile);
        names.push(Vec::new());
        names.push(b"unknown".to_vec());
        names.push(b"_overflow".to_vec());
        let mut i = 0usize;
        while names.len() < 10_000 {
            let s = specials[i % specials.len()];
            let t = specials[(i / specials.len()) % specials.len()];
            let mut n = Vec::new();
            n.extend_from_slice(s);
            n.extend_from_slice(format!("agent{i}").as_bytes());
            n.extend_from_slice(t);
            n.extend_from_slice(b"x=\"1\"}");
            n.extend_from_slice(s);
            names.push(n);
            i += 1;
        }
        names
    }

    #[test]
    fn sanitize_choices() {
        assert_eq!(sanitize(b"my-agent.v2", 64).as_deref(), Some("my-agent.v2"));
        assert_eq!(sanitize(b"a\"b\nc", 64).as_deref(), Some("a_b_c"));
        assert_eq!(sanitize(b"a\n\n\n__b", 64).as_deref(), Some("a_b"));
        assert_eq!(
            sanitize("caf\u{e9} 🦀".as_bytes(), 64).as_deref(),
            Some("caf")
        );
        assert_eq!(sanitize(b"\xff\xfeok\xff", 64).as_deref(), Some("ok"));
        assert_eq!(sanitize(b"--flag", 64).as_deref(), Some("flag"));
        assert_eq!(sanitize(b"_overflow", 64).as_deref(), Some("overflow"));
        assert_eq!(sanitize(b"..", 64), None);
        assert_eq!(sanitize(b"{}\"\\=\0", 64), None);
        assert_eq!(sanitize(b"", 64), None);
        assert_eq!(sanitize(b"abc", 0), None);
        assert_eq!(sanitize(b"abcdef", 3).as_deref(), Some("abc"));
        // Cut at max_len, then the trailing separator is trimmed.
        assert_eq!(sanitize(b"ab cd", 3).as_deref(), Some("ab"));
    }

    #[test]
    fn sanitize_bounds_a_huge_name() {
        let mut raw = vec![b'\n'; 1 << 19];
        raw.resize(1 << 20, b'a');
        let s = sanitize(&raw, 64).unwrap();
        assert_eq!(s.len(), 64);
        assert!(s.capacity() <= 64);
        let s = sanitize(&vec![b'z'; 1 << 20], 64).unwrap();
        assert_eq!(s.len(), 64);
        assert!(s.capacity() <= 64);
    }

    fn hostile_run(mode: LabelMode) {
        let dir = TempDir::new("hostile");
        let mut labels = AgentLabels::open(policy(mode, &dir.0)).unwrap();
        let now = Instant::now();
        let names = hostile_names();
        assert_eq!(names.len(), 10_000);
        let mut per_value: HashMap<String, u64> = HashMap::new();
        for name in &names {
            let v = labels.acquire(Some(name), now);
            assert!(
                v == OVERFLOW || v == UNKNOWN || is_safe(&v),
                "unsafe value {v:?}"
            );
            assert!(v.len() <= 64);
            if mode == LabelMode::Hash && v != OVERFLOW && v != UNKNOWN {
                assert!(v.starts_with("h_") && v.len() == 18, "{v}");
            }
            *per_value.entry(v).or_default() += 1;
        }
        let capped = per_value
            .keys()
            .filter(|v| *v != OVERFLOW && *v != UNKNOWN)
            .count();
        assert!(capped <= 256, "{capped} values past the cap");
        assert_eq!(labels.distinct(), capped);
        assert_eq!(labels.distinct(), 256);
        assert_eq!(
            per_value.get(OVERFLOW).copied().unwrap_or(0),
            labels.overflow_total()
        );
        let held: u64 = per_value
            .iter()
            .filter(|(v, _)| *v != OVERFLOW)
            .map(|(_, n)| *n)
            .sum();
        assert_eq!(held + labels.overflow_total(), 10_000);
        // The refcounts agree with what was handed out.
        for (v, n) in &per_value {
            assert_eq!(labels.live(v), *n, "{v}");
        }
    }

    #[test]
    fn hostile_names_plain() {
        hostile_run(LabelMode::Plain);
    }

    #[test]
    fn hostile_names_hash() {
        hostile_run(LabelMode::Hash);
    }

    #[test]
    fn unknown_does_not_count() {
        let dir = TempDir::new("unknown");
        let mut p = policy(LabelMode::Plain, &dir.0);
        p.max_values = 1;
        let mut labels = AgentLabels::open(p).unwrap();
        let now = Instant::now();
        assert_eq!(labels.acquire(None, now), UNKNOWN);
        assert_eq!(labels.acquire(Some(b"\n\n"), now), UNKNOWN);
        assert_eq!(labels.acquire(Some(b"unknown"), now), UNKNOWN);
        assert_eq!(labels.acquire(Some(b"a"), now), "a");
        assert_eq!(labels.acquire(Some(b"a"), now), "a");
        assert_eq!(labels.acquire(Some(b"b"), now), OVERFLOW);
        assert_eq!(labels.distinct(), 1);
        assert_eq!(labels.live(UNKNOWN), 3);
        assert_eq!(labels.live("a"), 2);
        assert_eq!(labels.overflow_total(), 1);
        // Plain mode makes no state directory.
        assert!(!dir.0.join("state").exists());
    }

    #[test]
    fn expiry_frees_slots() {
        let dir = TempDir::new("expiry");
        let mut p = policy(LabelMode::Plain, &dir.0);
        p.max_values = 2;
        p.idle_ttl = Duration::from_secs(60);
        let mut labels = AgentLabels::open(p).unwrap();
        let t0 = Instant::now();
        let a = labels.acquire(Some(b"a"), t0);
        let b = labels.acquire(Some(b"b"), t0);
        assert_eq!(labels.acquire(Some(b"c"), t0), OVERFLOW);
        labels.release(&a, t0);
        labels.release(&b, t0);
        // An extra release is ignored.
        labels.release(&b, t0);
        // Still live, or idle for less than the TTL: nothing goes.
        let b2 = labels.acquire(Some(b"b"), t0 + Duration::from_secs(30));
        assert!(labels.expire(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(
            labels.expire(t0 + Duration::from_secs(60)),
            vec!["a".to_owned()]
        );
        assert_eq!(labels.distinct(), 1);
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(labels.acquire(Some(b"c"), t1), "c");
        assert_eq!(labels.acquire(Some(b"d"), t1), OVERFLOW);
        // A live value never expires.
        assert!(labels.expire(t1 + Duration::from_secs(3600)).is_empty());
        assert_eq!(labels.live(&b2), 1);
        assert_eq!(labels.overflow_total(), 2);
    }

    #[test]
    fn full_cap_reclaims_an_expired_slot() {
        let dir = TempDir::new("reclaim");
        let mut p = policy(LabelMode::Plain, &dir.0);
        p.max_values = 1;
        p.idle_ttl = Duration::from_secs(10);
        let mut labels = AgentLabels::open(p).unwrap();
        let t0 = Instant::now();
        let a = labels.acquire(Some(b"a"), t0);
        labels.release(&a, t0);
        assert_eq!(
            labels.acquire(Some(b"b"), t0 + Duration::from_secs(5)),
            OVERFLOW
        );
        assert_eq!(
            labels.acquire(Some(b"b"), t0 + Duration::from_secs(10)),
            "b"
        );
        assert_eq!(labels.distinct(), 1);
        // The caller hears about `a` at the next tick.
        assert_eq!(
            labels.expire(t0 + Duration::from_secs(11)),
            vec!["a".to_owned()]
        );
        assert!(labels.expire(t0 + Duration::from_secs(12)).is_empty());
    }

    #[test]
    fn hash_mode_key_lookup_and_modes() {
        let dir = TempDir::new("hash");
        let p = policy(LabelMode::Hash, &dir.0);
        let now = Instant::now();
        let first = {
            let mut labels = AgentLabels::open(p.clone()).unwrap();
            let v = labels.acquire(Some(b"my agent"), now);
            // Equal sanitized text, equal hash.
            assert_eq!(labels.acquire(Some(b"my\nagent"), now), v);
            v
        };
        assert!(first.starts_with("h_") && first.len() == 18);
        assert!(first[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        let second = AgentLabels::open(p.clone())
            .unwrap()
            .acquire(Some(b"my agent"), now);
        assert_eq!(first, second, "key not persisted");

        let state = &p.state_dir;
        assert_eq!(lookup(state, &first).unwrap().as_deref(), Some("my_agent"));
        assert_eq!(lookup(state, "h_0000000000000000").unwrap(), None);
        // Written once, although acquired three times over two opens.
        let table = fs::read_to_string(state.join(LOOKUP_FILE)).unwrap();
        assert_eq!(table.lines().count(), 1, "{table}");

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&state.join(LOOKUP_FILE)), 0o600);
        assert_eq!(mode(state), 0o700);
        assert_eq!(fs::metadata(state.join(KEY_FILE)).unwrap().len(), 32);

        let other = TempDir::new("hash-other");
        let third = AgentLabels::open(policy(LabelMode::Hash, &other.0))
            .unwrap()
            .acquire(Some(b"my agent"), now);
        assert_ne!(first, third, "different keys gave the same hash");
    }

    #[test]
    fn lookup_without_table_is_an_error() {
        let dir = TempDir::new("nolookup");
        let err = lookup(&dir.0, "h_0000000000000000").unwrap_err();
        assert!(err.to_string().contains(LOOKUP_FILE), "{err}");
    }

    #[test]
    fn symlinked_key_is_refused() {
        let dir = TempDir::new("symlink");
        let p = policy(LabelMode::Hash, &dir.0);
        fs::create_dir_all(&p.state_dir).unwrap();
        // Dangling: open must not create the target through it.
        let target = dir.0.join("target");
        symlink(&target, p.state_dir.join(KEY_FILE)).unwrap();
        let err = AgentLabels::open(p.clone()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!target.exists());
        // Pointing at a valid-looking key: still refused, not read.
        fs::write(&target, [7u8; 32]).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(AgentLabels::open(p.clone()).is_err());
        assert_eq!(fs::read(&target).unwrap(), vec![7u8; 32]);
    }

    #[test]
    fn symlinked_lookup_is_refused() {
        let dir = TempDir::new("symlink-lookup");
        let p = policy(LabelMode::Hash, &dir.0);
        fs::create_dir_all(&p.state_dir).unwrap();
        let target = dir.0.join("target");
        symlink(&target, p.state_dir.join(LOOKUP_FILE)).unwrap();
        assert!(AgentLabels::open(p).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn bad_keys_are_refused() {
        let dir = TempDir::new("badkey");
        let p = policy(LabelMode::Hash, &dir.0);
        drop(AgentLabels::open(p.clone()).unwrap());
        let key = p.state_dir.join(KEY_FILE);

        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = AgentLabels::open(p.clone()).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && err.contains(&*key.to_string_lossy()),
            "{err}"
        );
        assert!(!err.contains('\n'));

        fs::remove_file(&key).unwrap();
        fs::write(&key, [1u8; 31]).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let err = AgentLabels::open(p.clone()).unwrap_err().to_string();
        assert!(err.contains("not 32"), "{err}");

        fs::remove_file(&key).unwrap();
        fs::create_dir(&key).unwrap();
        assert!(AgentLabels::open(p).is_err());
    }

    #[test]
    fn torn_lookup_line_is_skipped_and_fenced() {
        let dir = TempDir::new("torn");
        let p = policy(LabelMode::Hash, &dir.0);
        let now = Instant::now();
        let a = AgentLabels::open(p.clone())
            .unwrap()
            .acquire(Some(b"a"), now);
        let table = p.state_dir.join(LOOKUP_FILE);
        let mut f = OpenOptions::new().append(true).open(&table).unwrap();
        f.write_all(b"{\"hash\":\"h_12").unwrap();
        drop(f);
        let b = AgentLabels::open(p.clone())
            .unwrap()
            .acquire(Some(b"b"), now);
        assert_eq!(lookup(&p.state_dir, &a).unwrap().as_deref(), Some("a"));
        assert_eq!(lookup(&p.state_dir, &b).unwrap().as_deref(), Some("b"));
    }
}
