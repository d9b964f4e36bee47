//! `clawtrace check`: a preflight report, one line per requirement (the loader's own probes,
//! [`crate::source::preflight`], and what only the report needs), with the fix for each one
//! that is missing.

use std::io::Write;

use crate::source::{
    features::KernelFeatures,
    loader::{Tracer, TracerConfig},
    preflight::{self, Host, REQUIREMENTS},
    tracepoints::HOOKS,
};

/// One requirement and whether this host meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub name: String,
    pub ok: bool,
    /// An optional feature: its absence is reported, not a failure.
    pub optional: bool,
    /// A kernel feature whose absence a fallback makes up for (reported as `fallback`).
    pub fallback: bool,
    /// What was found, or what is wrong and how to fix it.
    pub detail: String,
}

fn req(name: impl Into<String>, result: Result<String, String>) -> Requirement {
    match result {
        Ok(detail) => Requirement {
            name: name.into(),
            ok: true,
            optional: false,
            fallback: false,
            detail,
        },
        Err(detail) => Requirement {
            name: name.into(),
            ok: false,
            optional: false,
            fallback: false,
            detail,
        },
    }
}

/// Runs every check. Nothing here changes the host except mounting tracefs when it is absent
/// and the process may mount it (as `clawtrace run` would).
pub fn run_checks() -> Vec<Requirement> {
    let mut out = Vec::new();
    let mut host = Host::default();
    for r in REQUIREMENTS {
        out.push(req(r.name, (r.probe)(&mut host)));
    }
    // What the kernel offers decides which programs, fields and tracepoints are needed.
    out.extend(feature_lines(host.features.as_ref(), host.privileged));
    let bits = host.bits();
    for hook in HOOKS.iter().filter(|h| h.when.holds(bits)) {
        out.push(req(
            preflight::hook_name(hook),
            preflight::hook(&host, hook),
        ));
    }

    // Dropping the capabilities that are no longer needed once attached needs CAP_SETPCAP
    // (for the bounding set).
    let setpcap = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
        .unwrap_or(false);
    out.push(Requirement {
        name: "privilege drop".to_string(),
        ok: setpcap,
        optional: true,
        fallback: false,
        detail: if setpcap {
            "CAP_SETPCAP held: unneeded capabilities are dropped once the programs are attached".to_string()
        } else {
            "CAP_SETPCAP missing: the bounding set cannot be reduced (grant cap_setpcap, or run as root)".to_string()
        },
    });
    let all_ok = out.iter().all(|r| r.ok || r.optional);
    // NVML is optional: its absence is reported, not a failure.
    let nvml = crate::source::nvml::NvmlSource::init();
    out.push(req(
        "programs load and attach",
        if all_ok {
            Tracer::start(&TracerConfig {
                ring_buffer_bytes: 1 << 16,
                ..TracerConfig::default()
            })
            .map(|t| {
                let margin = match t.largest_verification() {
                    Some((name, n)) => format!(
                        "; the verifier walked at most {n} instructions ({name}) of its 1000000"
                    ),
                    None => String::new(),
                };
                format!(
                    "{} programs loaded, attached and detached{margin}",
                    t.attached()
                )
            })
            .map_err(|e| format!("{e:#}"))
        } else {
            Err("not tried: a requirement above is missing".to_string())
        },
    ));
    let socket = std::path::Path::new(crate::defaults::DOCKER_SOCKET);
    out.push(Requirement {
        name: "Docker Engine API".to_string(),
        ok: socket.exists(),
        optional: true,
        fallback: false,
        detail: if socket.exists() {
            format!("{} present: Docker labels give agent names", socket.display())
        } else {
            format!(
                "{} not found: Docker labels are not read (other agent_name sources still apply; --docker-socket sets another path)",
                socket.display()
            )
        },
    });
    out.push(Requirement {
        name: "NVML".to_string(),
        ok: nvml.is_ok(),
        optional: true,
        fallback: false,
        detail: match nvml {
            Ok(nvml) => nvml.describe(),
            Err(reason) => format!("not available ({reason})"),
        },
    });
    out
}

/// One line per kernel feature: `ok` where the kernel has it, `fallback` (with what runs
/// instead and its cost) where it does not.
fn feature_lines(found: Option<&KernelFeatures>, privileged: bool) -> Vec<Requirement> {
    let Some(found) = found else {
        let why = if privileged {
            "not probed: tracefs or the kernel's BTF is missing (see above)"
        } else {
            "not probed: probing loads a program, which needs privilege (run as root)"
        };
        return vec![Requirement {
            name: "kernel features".to_string(),
            ok: false,
            optional: true,
            fallback: false,
            detail: why.to_string(),
        }];
    };
    found
        .report()
        .map(|(feature, result)| Requirement {
            name: format!("kernel feature {} ({})", feature.key, feature.name),
            ok: result.is_ok(),
            optional: true,
            fallback: true,
            detail: match result {
                Ok(()) => "present: the fast path runs".to_string(),
                Err(why) => format!("{why}; instead {}", feature.without),
            },
        })
        .collect()
}

/// Writes the report; returns whether every requirement holds.
pub fn report(requirements: &[Requirement], out: &mut impl Write) -> std::io::Result<bool> {
    for r in requirements {
        let status = match (r.ok, r.optional, r.fallback) {
            (true, _, _) => "ok",
            (false, true, true) => "fallback",
            (false, true, false) => "absent",
            (false, false, _) => "missing",
        };
        writeln!(out, "{status:<8} {}: {}", r.name, r.detail)?;
    }
    Ok(requirements.iter().all(|r| r.ok || r.optional))
}
