//! The `clawtrace` binary.

use std::{
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
};

use clap::Parser;
use clawtrace::{
    check,
    cli::{Cli, Command},
    run::{self, RunOptions},
};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
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
    match cli.command {
        Command::Check => {
            let requirements = check::run_checks();
            match check::report(&requirements, &mut std::io::stdout()) {
                Ok(true) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Command::Run(args) => {
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                if let Err(err) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                    eprintln!("clawtrace: cannot handle signal {signal}: {err}");
                    return ExitCode::FAILURE;
                }
            }
            let options = RunOptions {
                format: args.output,
                patterns: args.container_cgroup_pattern,
                runc_root: Some(args.runc_root),
                linger_after: args.linger_after,
                ring_buffer_bytes: args.ring_buffer_size,
            };
            match run::run(&options, &stop, std::io::stdout().lock()) {
                Ok(summary) => {
                    let lost: u64 = summary.lost.iter().sum();
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
    }
}
