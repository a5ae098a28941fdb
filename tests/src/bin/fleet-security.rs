//! `make security`: every hostile input the project knows of, thrown at the
//! real parts; one line at the end:
//!
//!     security: hostile_inputs=N contained=M false_positives=F crashes=C
//!
//! Exit status 1 unless M = N, F = 0 and C = 0. `--fuzz-summary FILE` reads
//! the crash count from the `fuzz: … crashes=C` line `scripts/fuzz.sh`
//! printed.

use std::path::PathBuf;

use clap::Parser;
use fleet_tests::security::{access_attacks, summary_line, text_attacks, AttackOutcome};

#[derive(Parser)]
#[command(about = "Hostile inputs against the fleet's parsers, screens, credentials and sandbox")]
struct Args {
    /// Output of `scripts/fuzz.sh` (its `fuzz: … crashes=C` line).
    #[arg(long)]
    fuzz_summary: Option<PathBuf>,
}

fn fuzz_crashes(path: &PathBuf) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("fuzz:") && l.contains("crashes="))
        .ok_or_else(|| anyhow::anyhow!("no `fuzz: … crashes=` line in {}", path.display()))?;
    let n = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("crashes="))
        .unwrap_or("")
        .parse()?;
    Ok(n)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut outcomes, false_positives) = text_attacks();
    eprintln!("security: {} text attacks", outcomes.len());
    let access = access_attacks().await;
    eprintln!("security: {} access attacks", access.len());
    outcomes.extend(access);
    let sandbox = fleet_tests::security_sandbox::run_sandbox_attacks().await;
    eprintln!("security: {} sandbox attacks", sandbox.len());
    outcomes.extend(sandbox.into_iter().map(|o| AttackOutcome {
        name: format!("sandbox: {}", o.name),
        contained: o.contained,
        reason: o.reason,
    }));
    let crashes = match &args.fuzz_summary {
        Some(path) => fuzz_crashes(path)?,
        None => 0,
    };
    let escaped: Vec<&AttackOutcome> = outcomes.iter().filter(|o| !o.contained).collect();
    for o in &escaped {
        eprintln!("security: NOT CONTAINED: {} ({})", o.name, o.reason);
    }
    for fp in &false_positives {
        eprintln!("security: FALSE POSITIVE: {fp}");
    }
    println!(
        "{}",
        summary_line(&outcomes, false_positives.len(), crashes)
    );
    if !escaped.is_empty() || !false_positives.is_empty() || crashes > 0 {
        std::process::exit(1);
    }
    Ok(())
}
