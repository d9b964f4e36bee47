//! clawtrace's configuration is its command line (there is no config file): arbitrary argument
//! vectors, UTF-8 or not, through the clap parser and what `run` does with the values first.
//!
//! - `Cli::try_parse_from` gives a `Cli` or a clap error, never a panic; an error other than
//!   `--help` / `--version` has a non-empty first line (the one line `clawtrace` prints).
//! - For an accepted `run`: the user patterns compile or give a one-line `PatternError`, and the
//!   agent variable name becomes a kernel lookup key or a one-line error.
//!
//! Input: arguments separated by NUL bytes (argv cannot hold NUL). An argument that starts with
//! byte 0x01 is a known token (`TOKENS[next byte]`) followed by the rest of its bytes, so the
//! fuzzer reaches real flags and values quickly; any other argument is taken as raw bytes.
#![no_main]

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _};

use clap::{error::ErrorKind, CommandFactory as _, Parser as _};
use clawtrace::{
    cli::{Cli, Command, LabelsCommand},
    model::containers::{Recognize as _, Recognizer},
    source::loader::env_key,
};
use libfuzzer_sys::fuzz_target;

const TOKENS: &[&str] = &[
    "run",
    "check",
    "explain",
    "--json",
    "-v",
    "labels",
    "lookup",
    "help",
    "--help",
    "-h",
    "--version",
    "-V",
    "--",
    "-",
    "=",
    "--output",
    "text",
    "json",
    "--container-cgroup-pattern",
    "^/c/(?P<id>[^/]+)$",
    "(?P<agent>.*)",
    "(",
    "--runc-root",
    "--linger-after",
    "30s",
    "-1s",
    "1h",
    "0",
    "584942417355y",
    "--ring-buffer-size",
    "4096",
    "4294967296",
    "2147483648",
    "--prometheus-listen",
    "127.0.0.1:9464",
    "[::1]:0",
    "--otlp",
    "--otlp-interval",
    "--otlp-max-queued-spans",
    "--audit-log",
    "--audit-log-max-bytes",
    "--audit-log-keep",
    "--agent-sources",
    "docker,oci,env,pattern",
    "docker,,env",
    "--agent-label-key",
    "--agent-env-var",
    "AGENT_NAME",
    "A=B",
    "--docker-socket",
    "--label-mode",
    "plain",
    "hash",
    "--label-max-values",
    "--label-ttl",
    "--state-dir",
    "h_0123456789abcdef",
];

/// Cgroup paths the accepted patterns are tried on.
const PATHS: &[&str] = &[
    "/",
    "/c/x",
    "/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "/a/b/\u{202e}\u{1f600}\r\"",
];

fuzz_target!(
    // clap's own consistency checks of the command definition, once per process.
    init: Cli::command().debug_assert(),
    |data: &[u8]| {
    let args = std::iter::once(OsString::from("clawtrace"))
        .chain(data.split(|&b| b == 0).take(64).map(argument))
        .collect::<Vec<_>>();
    match Cli::try_parse_from(&args) {
        Err(err) => {
            let text = err.to_string();
            drop(err.render());
            if !matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                // What main prints: "clawtrace: " and the first line.
                let first = text.lines().next().unwrap_or("");
                let first = first.trim_start_matches("error: ").trim();
                assert!(!first.is_empty(), "{:?}: empty error for {args:?}", err.kind());
            }
        }
        Ok(cli) => match cli.command {
            // `top` takes the same tracing flags as `run`.
            Command::Run { trace: run, .. } | Command::Top(run) => {
                match Recognizer::new(&run.container_cgroup_pattern, None) {
                    Ok(recognizer) => {
                        for path in PATHS {
                            drop(recognizer.recognize(path));
                        }
                    }
                    Err(err) => assert!(!err.to_string().contains('\n'), "{err}"),
                }
                if let Err(err) = env_key(&run.agent_env_var) {
                    assert!(!err.to_string().contains('\n'), "{err}");
                }
            }
            Command::Check => {}
            // An id prefix and a path: what explain does with any of them is an error of one
            // line at worst.
            Command::Explain {
                container,
                audit_log,
                ..
            } => {
                if let Err(err) = clawtrace::explain::records(&audit_log, &container) {
                    assert!(!format!("{err:#}").contains('\n'), "{err:#}");
                }
            }
            Command::Labels(LabelsCommand::Lookup { hash, state_dir }) => {
                drop((hash, state_dir));
            }
        },
    }
    }
);

/// One argument: a known token and a tail, or raw bytes.
fn argument(chunk: &[u8]) -> OsString {
    match chunk {
        [1, index, tail @ ..] => {
            let mut arg = TOKENS[usize::from(*index) % TOKENS.len()]
                .as_bytes()
                .to_vec();
            arg.extend_from_slice(tail);
            OsString::from_vec(arg)
        }
        _ => OsString::from_vec(chunk.to_vec()),
    }
}
