//! `fleet-coordinator`: `serve` runs the coordinator; `submit`, `watch`,
//! `status`, `report` and `agents` are clients of its HTTP API.
//!
//! Exit status: 0 on success, 2 on a usage error or a request the server
//! refused (4xx, its message printed), 1 on any other failure.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use cli::args::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let args = Cli::parse();
    let serving = matches!(args.command, Command::Serve(_));
    init_logging(args.log_format, if serving { "info" } else { "warn" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<cli::Rejected>().is_some()
                || e.downcast_ref::<cli::Usage>().is_some() =>
        {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(a) => {
            let config = cli::serve_config(*a)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            fleet_coordinator::serve::serve(config, shutdown).await?;
            Ok(())
        }
        Command::Submit(a) => cli::submit(a).await,
        Command::Watch(a) => cli::watch(a).await,
        Command::Status(a) => cli::status(a).await,
        Command::Report(a) => cli::report(a).await,
        Command::Agents(a) => cli::agents(a).await,
        Command::Dream(a) => cli::dream(a).await,
        Command::Promotions(c) => cli::promotions(c).await,
        Command::Harden(a) => cli::harden(a).await,
        Command::Bundle(a) => cli::bundle(a).await,
        Command::Export(a) => cli::export(a).await,
    }
}

/// SIGTERM or SIGINT starts the orderly shutdown; it is bounded by the hard
/// deadline in `serve`, so later signals need no handling of their own.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
    shutdown.cancel();
}

/// Logs go to stderr (stdout carries command output); `RUST_LOG` overrides
/// the default level.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
