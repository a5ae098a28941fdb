//! A QEMU Machine Protocol client (one JSON object per line over a Unix
//! socket): the greeting, `qmp_capabilities`, then one command at a time.
//! Asynchronous events the VM sends between replies are skipped. Snapshots
//! go through `human-monitor-command` (`savevm`/`loadvm`), whose errors
//! come back as text in an otherwise successful reply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::{timeout, Instant};

use crate::error::TargetError;

/// Longest wait for one reply (a `loadvm` of a 1 GiB guest takes < 1 s).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between attempts to reach a socket qemu has not created yet.
const CONNECT_POLL: Duration = Duration::from_millis(50);

/// One QMP session.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects to `path` (waiting up to `wait` for qemu to create it) and
    /// negotiates capabilities.
    pub async fn connect(path: &Path, wait: Duration) -> Result<Self, TargetError> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(qmp_error(path, format!("cannot connect: {e}")));
                }
                Err(_) => tokio::time::sleep(CONNECT_POLL).await,
            }
        };
        let (reader, writer) = stream.into_split();
        let mut qmp = Qmp {
            path: path.to_owned(),
            lines: BufReader::new(reader).lines(),
            writer,
        };
        let greeting = qmp.next_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error(path, format!("no QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, TargetError> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| qmp_error(&self.path, format!("{command}: {e}")))?;
        loop {
            let reply = self.next_message().await?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(qmp_error(&self.path, format!("{command}: {error}")));
            }
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            return Err(qmp_error(
                &self.path,
                format!("{command}: unexpected reply {reply}"),
            ));
        }
    }

    /// A human-monitor command (`savevm baseline`); its output is an error
    /// when it says so.
    pub async fn hmp(&mut self, command_line: &str) -> Result<String, TargetError> {
        let out = self
            .execute(
                "human-monitor-command",
                Some(json!({ "command-line": command_line })),
            )
            .await?;
        let text = out.as_str().unwrap_or_default().trim().to_owned();
        if text.starts_with("Error") || text.contains("error:") {
            return Err(qmp_error(&self.path, format!("{command_line}: {text}")));
        }
        Ok(text)
    }

    /// Saves the VM's state (memory, devices, disks) as snapshot `tag`.
    pub async fn savevm(&mut self, tag: &str) -> Result<(), TargetError> {
        self.hmp(&format!("savevm {}", snapshot_tag(tag)?))
            .await
            .map(drop)
    }

    /// Returns the VM to snapshot `tag`.
    pub async fn loadvm(&mut self, tag: &str) -> Result<(), TargetError> {
        self.hmp(&format!("loadvm {}", snapshot_tag(tag)?))
            .await
            .map(drop)
    }

    /// `running`, `paused`, …
    pub async fn status(&mut self) -> Result<String, TargetError> {
        let s = self.execute("query-status", None).await?;
        Ok(s.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    /// Ends qemu (the socket closes with it).
    pub async fn quit(mut self) -> Result<(), TargetError> {
        self.execute("quit", None).await.map(drop)
    }

    async fn next_message(&mut self) -> Result<Value, TargetError> {
        let line = timeout(REPLY_TIMEOUT, self.lines.next_line())
            .await
            .map_err(|_| qmp_error(&self.path, format!("no reply within {REPLY_TIMEOUT:?}")))?
            .map_err(|e| qmp_error(&self.path, e.to_string()))?
            .ok_or_else(|| qmp_error(&self.path, "qemu closed the socket".into()))?;
        serde_json::from_str(&line)
            .map_err(|e| qmp_error(&self.path, format!("not JSON ({e}): {line}")))
    }
}

/// Snapshot tags go into a monitor command line: a plain word only.
fn snapshot_tag(tag: &str) -> Result<&str, TargetError> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(tag)
    } else {
        Err(TargetError::Qmp(format!("invalid snapshot tag {tag:?}")))
    }
}

fn qmp_error(path: &Path, message: String) -> TargetError {
    TargetError::Qmp(format!("{}: {message}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_tags_are_plain_words() {
        assert!(snapshot_tag("baseline").is_ok());
        assert!(snapshot_tag("slot-0_v1.2").is_ok());
        for bad in ["", "a b", "x;quit", "tag\nquit", &"a".repeat(65)] {
            assert!(snapshot_tag(bad).is_err(), "{bad:?}");
        }
    }
}
