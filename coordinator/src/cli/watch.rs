//! `watch`: a progress bar on a terminal, a progress line every few seconds
//! otherwise (indicatif hides itself when stdout is not a terminal).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use fleet_common::api::RunStatus;
use fleet_common::RunId;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Api, Rejected};
use super::table;

/// Progress lines when stdout is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// Consecutive failed polls before giving up (the coordinator may restart).
const MAX_FAILURES: u32 = 120;

pub async fn watch(api: &Api, run: RunId, interval: Duration) -> anyhow::Result<RunStatus> {
    let tty = std::io::stdout().is_terminal();
    let bar = if tty {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut last_line: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        match api.run_status(run).await {
            Ok(s) => {
                failures = 0;
                bar.set_length(s.total);
                bar.set_position(s.finished);
                bar.set_message(format!("fixed {} · escalated {}", s.fixed, s.escalated));
                let done = s.status == "completed";
                if !tty && (done || last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY)) {
                    println!("{}", table::run_line(&s));
                    last_line = Some(Instant::now());
                }
                if done {
                    bar.finish_and_clear();
                    print!("{}", table::run_summary(&s));
                    return Ok(s);
                }
            }
            Err(e) if e.downcast_ref::<Rejected>().is_some() => {
                bar.abandon();
                return Err(e);
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    bar.abandon();
                    return Err(e.context(format!("gave up after {failures} failed polls")));
                }
                // The first failure, then one line per ten, so an outage is
                // visible without flooding the terminal.
                if failures % 10 == 1 {
                    bar.suspend(|| eprintln!("watch: {e:#}; retrying"));
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits for `run` to complete behind a spinner on stderr (hidden when
/// stderr is not a terminal); its final status.
pub async fn wait_quietly(api: &Api, run: RunId) -> anyhow::Result<RunStatus> {
    let spinner = if std::io::stderr().is_terminal() {
        let s = ProgressBar::new_spinner();
        s.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("valid template"),
        );
        s.enable_steady_tick(Duration::from_millis(120));
        s
    } else {
        ProgressBar::hidden()
    };
    spinner.set_message(format!("run {run}"));
    let mut failures = 0u32;
    loop {
        match api.run_status(run).await {
            Ok(s) if s.status == "completed" => {
                spinner.finish_and_clear();
                return Ok(s);
            }
            Ok(_) => failures = 0,
            Err(e) if e.downcast_ref::<Rejected>().is_some() => return Err(e),
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(e.context(format!("run {run}: the coordinator stopped answering")));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
