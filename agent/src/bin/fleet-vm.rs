//! `fleet-vm`: a qemu VM's snapshots through its QMP socket, for an
//! inventory host's `snapshot` and `revert` commands (DESIGN H4), e.g.
//!
//! ```toml
//! snapshot = ["fleet-vm", "savevm", "--qmp", "/run/vms/web-01.qmp", "fleet-pre-harden"]
//! revert = ["fleet-vm", "loadvm", "--qmp", "/run/vms/web-01.qmp", "fleet-pre-harden"]
//! ```
//!
//! `loadvm` returns once the guest runs again; the rollout then waits for
//! its sshd as after any revert.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fleet_targets::Qmp;

#[derive(Parser)]
#[command(
    name = "fleet-vm",
    version,
    about = "Save and load a qemu VM's snapshots through its QMP socket (an inventory host's snapshot and revert commands)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Save the VM's state (memory, devices, disks) as snapshot TAG.
    Savevm {
        /// The VM's QMP socket (qemu's `-qmp unix:PATH,server=on,wait=off`).
        #[arg(long)]
        qmp: PathBuf,
        tag: String,
    },
    /// Return the VM to snapshot TAG and let it run.
    Loadvm {
        #[arg(long)]
        qmp: PathBuf,
        tag: String,
    },
    /// Print the VM's run state (`running`, `paused`, `shutdown`, …).
    Status {
        #[arg(long)]
        qmp: PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-vm: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), fleet_targets::TargetError> {
    let wait = Duration::from_secs(5);
    match command {
        Command::Savevm { qmp, tag } => Qmp::connect(&qmp, wait).await?.savevm(&tag).await,
        Command::Loadvm { qmp, tag } => {
            let mut qmp = Qmp::connect(&qmp, wait).await?;
            qmp.loadvm(&tag).await?;
            if qmp.status().await? != "running" {
                qmp.execute("cont", None).await?;
            }
            Ok(())
        }
        Command::Status { qmp } => {
            println!("{}", Qmp::connect(&qmp, wait).await?.status().await?);
            Ok(())
        }
    }
}
