//! The `clawtrace` binary.

use std::{
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
};

use clap::Parser;
use clawtrace::{
    check,
    cli::{Cli, Command, LabelsCommand, OutputArgs, RunArgs},
    enrich::{
        agent::AgentConfig,
        labels::{self, LabelPolicy},
    },
    explain,
    run::{self, AuditSettings, RunOptions},
    sinks::{
        otlp::{self, OtlpConfig, Protocol},
        terminal::{Format, TextStyle},
    },
    top,
};

fn main() -> ExitCode {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.format_target(false);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            // One line that says what is wrong; `--help` has the rest.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("clawtrace: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let command = match cli.command {
        // `top` holds log records while its view owns the terminal.
        Command::Top(args) => return top_command(*args, logger.build()),
        command => command,
    };
    logger.init();
    match command {
        Command::Labels(LabelsCommand::Lookup { hash, state_dir }) => {
            match labels::lookup(&state_dir, &hash) {
                Ok(Some(plain)) => {
                    println!("{plain}");
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!(
                        "clawtrace: {hash} is not in {}",
                        state_dir.join(labels::LOOKUP_FILE).display()
                    );
                    ExitCode::FAILURE
                }
                Err(err) => {
                    eprintln!("clawtrace: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check => {
            let requirements = check::run_checks();
            match check::report(&requirements, &mut std::io::stdout()) {
                Ok(true) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Command::Explain {
            container,
            audit_log,
            json,
        } => match explain::records(&audit_log, &container) {
            Ok((id, records)) => {
                print!("{}", explain::report(&id, &records, json));
                if json {
                    println!();
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("clawtrace: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { output, trace } => {
            let Some(stop) = stop_on_signals() else {
                return ExitCode::FAILURE;
            };
            let options = match run_options(*trace) {
                Ok(options) => with_output(options, &output),
                Err(err) => {
                    eprintln!("clawtrace: {err:#}");
                    return ExitCode::FAILURE;
                }
            };
            // Events are written in blocks and flushed after each poll of the ring buffer (at
            // least every 100 ms): stdout's own line buffering would cost a write(2) per event.
            let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            stopped(run::run(&options, &stop, out))
        }
        Command::Top(_) => ExitCode::FAILURE,
    }
}

/// A flag that SIGINT and SIGTERM set; None (and a line on stderr) if they cannot be handled.
fn stop_on_signals() -> Option<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(err) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("clawtrace: cannot handle signal {signal}: {err}");
            return None;
        }
    }
    Some(stop)
}

/// The exit of a run (of `run` or `top`), with the summary line.
fn stopped(result: anyhow::Result<run::RunSummary>) -> ExitCode {
    match result {
        Ok(summary) => {
            let lost = summary.records_lost();
            log::info!(
                "stopped: {} events, {lost} records lost, {} undecodable",
                summary.events,
                summary.decode_errors
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("clawtrace: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `clawtrace top`: a run with the live view; log records go through `logger` once the view is
/// gone.
fn top_command(args: RunArgs, logger: env_logger::Logger) -> ExitCode {
    let logs = match top::logs::install(logger) {
        Ok(logs) => logs,
        Err(err) => {
            eprintln!("clawtrace: cannot set up logging: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Some(stop) = stop_on_signals() else {
        return ExitCode::FAILURE;
    };
    match run_options(args) {
        Ok(options) => stopped(top::run(options, &stop, Some(logs))),
        Err(err) => {
            eprintln!("clawtrace: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `run`'s output settings on options made from the tracing flags.
fn with_output(options: RunOptions, output: &OutputArgs) -> RunOptions {
    RunOptions {
        format: output.output,
        text: TextStyle::for_terminal(output.verbose, &std::io::stdout()),
        ..options
    }
}

/// Turns the tracing flags of `run` and `top` and the OTEL_* environment into run options
/// (text output at the default verbosity; `run` sets its own, see [`with_output`]).
fn run_options(args: RunArgs) -> anyhow::Result<RunOptions> {
    let otlp = if args.otlp || otlp::wanted_by_env() {
        Some(OtlpConfig {
            metrics_protocol: Protocol::from_env("METRICS")?,
            traces_protocol: Protocol::from_env("TRACES")?,
            logs_protocol: otlp::logs_protocol_from_env()?,
            metric_interval: args.otlp_interval,
            max_queued_spans: args.otlp_max_queued_spans,
        })
    } else {
        None
    };
    Ok(RunOptions {
        format: Format::Text,
        text: TextStyle::default(),
        patterns: args.container_cgroup_pattern,
        runc_root: Some(args.runc_root.clone()),
        linger_after: args.linger_after,
        ring_buffer_bytes: args.ring_buffer_size,
        read_only_volumes: args.read_only_volume,
        gpu_devices: args.gpu_device,
        trace_mount_syscalls: args.trace_mount_syscalls,
        trace_devices: !args.no_gpu_tracking,
        gpu_poll: args.gpu_poll_interval,
        prometheus_listen: args.prometheus_listen,
        otlp,
        audit: args.audit_log.map(|path| AuditSettings {
            path,
            max_bytes: args.audit_log_max_bytes,
            keep: args.audit_log_keep,
        }),
        agent: AgentConfig {
            sources: args.agent_sources,
            label_key: args.agent_label_key,
            env_var: args.agent_env_var,
            docker_socket: args.docker_socket,
            runc_root: args.runc_root,
            containerd_root: clawtrace::defaults::containerd_tasks(&args.containerd_state),
            ..AgentConfig::default()
        },
        labels: LabelPolicy {
            mode: args.label_mode,
            max_values: args.label_max_values,
            state_dir: args.state_dir,
            idle_ttl: args.label_ttl,
            ..LabelPolicy::default()
        },
        watch: None,
    })
}
