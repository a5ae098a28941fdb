//! Running one command in a container: output capped as it streams, a
//! wall-clock timeout, and on timeout the whole process tree killed, since
//! the exec API itself cannot kill what it started.
//!
//! Every exec carries a unique `FLEET_EXEC_ID` in its environment, which
//! children inherit. The kill script (a second exec) SIGKILLs every process
//! whose environment holds that id, and every process in the sessions they
//! belong to, so daemonised children go too. If that fails (pid limit
//! reached, say), the whole container is killed: the target is reverted
//! after a failed attempt anyway (DESIGN T3).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use tokio::time::{sleep, timeout as within, Instant};
use tracing::Instrument;

use super::container::Container;
use crate::error::TargetError;
use crate::output::OutputBuffer;

/// Environment variable that marks every process of one exec.
pub(crate) const MARKER_VAR: &str = "FLEET_EXEC_ID";

/// A script travels as one `execve` argument, at most 128 KiB on Linux.
pub(crate) const MAX_SCRIPT_BYTES: usize = 120 * 1024;

/// Stderr kept when it is not merged into the output.
const STDERR_CAP: usize = 4 * 1024;
/// How often a running exec is checked for its main process having exited
/// while a background child still holds the output open.
const EXITED_POLL: Duration = Duration::from_millis(500);
/// Output still read after the main process exited or was killed.
const DRAIN: Duration = Duration::from_millis(300);
/// Longest wait for the kill script.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills the processes of one exec id (`$1`) and of their sessions. Pure
/// bash built-ins, so it works when the pid limit leaves no room to fork.
pub(crate) const KILL_SCRIPT: &str = r#"
id=$1
stat_of() { local l; SID=; STATE=; read -r l < "/proc/$1/stat" 2>/dev/null || return 1; l=${l##*) }; set -- $l; STATE=$1; SID=$4; }
stat_of $$; mine=$SID
stat_of 1; init=$SID
declare -A sids=()
for ((round = 1; round <= 20; round++)); do
  hits=0
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    if [ "$p" = "$$" ] || [ "$p" = 1 ]; then continue; fi
    mapfile -d '' -t vars < "$d/environ" 2>/dev/null || continue
    for v in "${vars[@]}"; do
      if [ "$v" = "FLEET_EXEC_ID=$id" ]; then
        if stat_of "$p" && [ "$SID" != "$mine" ] && [ "$SID" != "$init" ] && [ "$SID" != 0 ]; then sids[$SID]=1; fi
        kill -KILL "$p" 2>/dev/null && hits=$((hits+1))
        break
      fi
    done
  done
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    if [ "$p" = "$$" ] || [ "$p" = 1 ]; then continue; fi
    stat_of "$p" || continue
    [ "$STATE" = Z ] && continue
    if [ -n "${sids[$SID]:-}" ]; then kill -KILL "$p" 2>/dev/null && hits=$((hits+1)); fi
  done
  [ "$hits" = 0 ] && exit 0
  sleep 0.05 2>/dev/null
done
echo "processes of $id survived 20 rounds" >&2
exit 1
"#;

/// What one exec produced.
#[derive(Debug)]
pub(crate) struct RawExec {
    /// `None` when killed at the timeout.
    pub exit_code: Option<i32>,
    /// Stdout, with stderr too when merged.
    pub output: OutputBuffer,
    /// Stderr when not merged.
    pub stderr: OutputBuffer,
    pub timed_out: bool,
    /// The exec's [`MARKER_VAR`] value: what `kill_marked` needs to kill
    /// what it left running.
    pub marker: String,
}

/// How an exec's stream ended.
enum End {
    Closed,
    MainExited,
    TimedOut,
}

/// A fresh value for [`MARKER_VAR`].
pub(crate) fn new_marker() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Container {
    /// Runs `argv` with no stdin. On timeout, kills its process tree; so
    /// does an error or the caller dropping the future.
    pub(crate) async fn run(
        &self,
        argv: Vec<String>,
        timeout: Duration,
        cap: usize,
        merge: bool,
    ) -> Result<RawExec, TargetError> {
        let marker = new_marker();
        let mut guard = KillOnDrop {
            container: Some(self.clone()),
            marker: marker.clone(),
        };
        let raw = self
            .run_marked(argv, &marker, timeout, cap, merge, true)
            .await;
        guard.container = None;
        if !matches!(&raw, Ok(raw) if !raw.timed_out) {
            self.kill_marked(&marker).await;
        }
        raw
    }

    async fn run_marked(
        &self,
        argv: Vec<String>,
        marker: &str,
        timeout: Duration,
        cap: usize,
        merge: bool,
        mark: bool,
    ) -> Result<RawExec, TargetError> {
        let started_at = Instant::now();
        let deadline = started_at + timeout;
        let config = ExecConfig {
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: mark.then(|| vec![format!("{MARKER_VAR}={marker}")]),
            cmd: Some(argv),
            ..Default::default()
        };
        let exec_id = self.docker.create_exec(&self.name, config).await?.id;
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec_id, Some(options)).await?
        else {
            unreachable!("exec started attached");
        };

        let mut out = OutputBuffer::new(cap);
        let mut err = OutputBuffer::new(if merge { 0 } else { STDERR_CAP });
        let mut keep = |item: LogOutput| match item {
            LogOutput::StdErr { message } if !merge => err.push(&message),
            other => out.push(other.as_ref()),
        };
        let mut poll = tokio::time::interval_at(started_at + EXITED_POLL, EXITED_POLL);
        let end = loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(item)) => keep(item),
                    Some(Err(error)) => return Err(error.into()),
                    None => break End::Closed,
                },
                _ = tokio::time::sleep_until(deadline) => break End::TimedOut,
                _ = poll.tick() => {
                    if !self.exec_running(&exec_id).await? {
                        break End::MainExited;
                    }
                }
            }
        };
        if !matches!(end, End::Closed) {
            // What the main process wrote just before it exited or was killed.
            let drain_until = Instant::now() + DRAIN;
            while let Ok(Some(Ok(item))) = tokio::time::timeout_at(drain_until, output.next()).await
            {
                keep(item);
            }
        }
        // A closed stream need not mean an exited script (`exec >&-`).
        let exit_code = match end {
            End::TimedOut => None,
            End::Closed | End::MainExited => self.wait_exit(&exec_id, deadline).await?,
        };
        let timed_out = exit_code.is_none();
        tracing::debug!(
            container = %self.name,
            exit_code,
            timed_out,
            bytes = out.seen(),
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "exec finished"
        );
        Ok(RawExec {
            exit_code,
            output: out,
            stderr: err,
            timed_out,
            marker: marker.to_owned(),
        })
    }

    async fn exec_running(&self, exec_id: &str) -> Result<bool, TargetError> {
        let inspect = self.docker.inspect_exec(exec_id).await?;
        Ok(inspect.running.unwrap_or(false))
    }

    /// The exit code once the main process has exited, `None` if it still
    /// runs at `deadline`.
    async fn wait_exit(
        &self,
        exec_id: &str,
        deadline: Instant,
    ) -> Result<Option<i32>, TargetError> {
        let mut pause = Duration::from_millis(5);
        loop {
            let inspect = self.docker.inspect_exec(exec_id).await?;
            if inspect.running != Some(true) {
                // Docker records the code before it reports not running.
                return Ok(Some(inspect.exit_code.unwrap_or(-1) as i32));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Kills every process of the exec `marker`; falls back to killing the
    /// container when that does not work.
    pub(crate) async fn kill_marked(&self, marker: &str) {
        let argv = vec![
            "bash".to_string(),
            "-c".to_string(),
            KILL_SCRIPT.to_string(),
            "fleet-kill".to_string(),
            marker.to_string(),
        ];
        let attempt = within(
            KILL_TIMEOUT,
            self.run_marked(argv, "", KILL_TIMEOUT, 4096, true, false),
        )
        .await;
        let failure = match attempt {
            Ok(Ok(raw)) if raw.exit_code == Some(0) => return,
            Ok(Ok(raw)) => format!("exit {:?}: {}", raw.exit_code, raw.output.into_text().0),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "kill script timed out".to_string(),
        };
        tracing::warn!(container = %self.name, marker, failure, "kill script failed; killing the container");
        if let Err(error) = self.kill().await {
            tracing::error!(container = %self.name, %error, "could not kill the container");
        }
    }
}

/// Kills an exec's processes when its future is dropped before it ended
/// (the caller gave up, or an error cut it short).
struct KillOnDrop {
    container: Option<Container>,
    marker: String,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(container) = self.container.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let marker = std::mem::take(&mut self.marker);
        let span = tracing::debug_span!("kill_on_drop", container = %container.name, %marker);
        runtime.spawn(async move { container.kill_marked(&marker).await }.instrument(span));
    }
}
