//! `fleet-agent`: see `fleet_agent` for what it does and `--help` for flags.

use clap::Parser;
use fleet_agent::cli::Cli;
use fleet_agent::{daemon, logging, signals};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let settings = cli.into_settings()?;
    let shutdown = signals::shutdown_on_signals()?;
    daemon::serve(settings, shutdown).await?;
    Ok(())
}
