//! What the container's limits did to a script, read from the container's
//! own cgroup (v1 or v2) after it ran, so the caller learns *why* a script
//! died: the OOM killer inside the memory limit, forks refused at the pid
//! limit, the timeout, the output cap (DESIGN T1).
//!
//! A container's cgroup is new with the container, so its counters start
//! at zero after `create` and after every revert; the target keeps the
//! last values it read and reports what grew.

use std::time::Duration;

use super::container::Container;
use crate::error::TargetError;

/// Prints `oom_kill <n>` and `pids_max <n>` from the container's cgroup.
/// Bash built-ins only: it must work right after a fork bomb.
pub(crate) const COUNTERS_SCRIPT: &str = r#"
for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
  if [ -r "$f" ]; then while read -r k v; do [ "$k" = oom_kill ] && echo "oom_kill $v"; done < "$f"; break; fi
done
for f in /sys/fs/cgroup/pids.events /sys/fs/cgroup/pids/pids.events; do
  if [ -r "$f" ]; then while read -r k v; do [ "$k" = max ] && echo "pids_max $v"; done < "$f"; break; fi
done
exit 0
"#;

/// Longest wait for the counters.
const COUNTERS_TIMEOUT: Duration = Duration::from_secs(10);

/// The container's cgroup event counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Processes the OOM killer killed inside the memory limit.
    pub oom_kills: u64,
    /// Forks refused at the pid limit.
    pub pids_max: u64,
}

impl Counters {
    pub(crate) fn parse(text: &str) -> Counters {
        let mut counters = Counters::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "oom_kill" => counters.oom_kills = value,
                "pids_max" => counters.pids_max = value,
                _ => {}
            }
        }
        counters
    }
}

/// What the limits were when a script ran, for the reasons' wording.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub memory_bytes: i64,
    pub pids_limit: i64,
    pub timeout: Duration,
    pub output_cap: usize,
}

/// How one script met the sandbox.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Met {
    /// Counters before and after; `None` after when they could not be read.
    pub before: Counters,
    pub after: Option<Counters>,
    pub timed_out: bool,
    pub truncated: bool,
    /// The container no longer runs (killed as a last resort).
    pub container_killed: bool,
}

impl Met {
    /// Forks were refused at the pid limit while the script ran.
    pub(crate) fn hit_pid_limit(&self) -> bool {
        self.after
            .is_some_and(|after| after.pids_max > self.before.pids_max)
    }
}

/// The reasons the sandbox stopped or cut the script, `; `-joined, or
/// `None` when it ran untouched.
pub(crate) fn reasons(met: &Met, limits: &Limits) -> Option<String> {
    let mut reasons = Vec::new();
    if let Some(after) = met.after {
        let oom = after.oom_kills.saturating_sub(met.before.oom_kills);
        if oom > 0 {
            reasons.push(format!(
                "killed: out of memory (limit {} MiB; {oom} process{} killed)",
                limits.memory_bytes / (1024 * 1024),
                if oom == 1 { "" } else { "es" }
            ));
        }
        if met.hit_pid_limit() {
            reasons.push(format!(
                "pid limit reached ({} processes): forks were refused",
                limits.pids_limit
            ));
        }
    }
    if met.timed_out {
        reasons.push(format!(
            "timed out after {} s: every process it started was killed",
            limits.timeout.as_secs()
        ));
    }
    if met.container_killed {
        reasons.push(
            "the container was killed: nothing could run in it any more to check or stop the script"
                .to_owned(),
        );
    }
    // A chatty script that ends is no news; an endless one is.
    if met.truncated && !reasons.is_empty() {
        reasons.push(format!("output cut at {} bytes", limits.output_cap));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

impl Container {
    /// The container's counters; `Ok(None)` when it no longer runs.
    pub(crate) async fn counters(&self) -> Result<Option<Counters>, TargetError> {
        let argv = vec![
            "bash".to_string(),
            "-c".to_string(),
            COUNTERS_SCRIPT.to_string(),
        ];
        match self.run(argv, COUNTERS_TIMEOUT, 1024, false).await {
            Ok(raw) if raw.exit_code == Some(0) => {
                let (text, _) = raw.output.into_text();
                Ok(Some(Counters::parse(&text)))
            }
            Ok(raw) => Err(TargetError::Command {
                exit_code: raw.exit_code,
                output: raw.output.into_text().0,
            }),
            Err(_) if !self.is_running().await.unwrap_or(true) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            memory_bytes: 512 * 1024 * 1024,
            pids_limit: 256,
            timeout: Duration::from_secs(30),
            output_cap: 16384,
        }
    }

    #[test]
    fn counters_parse_from_v1_and_v2_lines() {
        let c = Counters::parse("oom_kill 3\npids_max 12\n");
        assert_eq!(
            c,
            Counters {
                oom_kills: 3,
                pids_max: 12
            }
        );
        assert_eq!(
            Counters::parse("garbage\noom_kill x\n"),
            Counters::default()
        );
    }

    #[test]
    fn an_oom_kill_is_named_with_its_limit() {
        let met = Met {
            after: Some(Counters {
                oom_kills: 1,
                pids_max: 0,
            }),
            ..Met::default()
        };
        assert_eq!(
            reasons(&met, &limits()).unwrap(),
            "killed: out of memory (limit 512 MiB; 1 process killed)"
        );
    }

    #[test]
    fn several_reasons_are_joined_and_none_is_none() {
        let met = Met {
            before: Counters {
                oom_kills: 2,
                pids_max: 5,
            },
            after: Some(Counters {
                oom_kills: 2,
                pids_max: 9,
            }),
            timed_out: true,
            truncated: true,
            container_killed: false,
        };
        let text = reasons(&met, &limits()).unwrap();
        assert!(
            text.starts_with("pid limit reached (256 processes)"),
            "{text}"
        );
        assert!(text.contains("timed out after 30 s"), "{text}");
        assert!(text.ends_with("output cut at 16384 bytes"), "{text}");
        let quiet = Met {
            before: Counters::default(),
            after: Some(Counters::default()),
            truncated: true,
            ..Met::default()
        };
        assert_eq!(reasons(&quiet, &limits()), None);
    }
}
