//! A Postgres cluster of the chaos run's own, so it can be restarted under
//! the coordinator without touching the one every other test shares.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::procs::free_port;

pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// `make deps` installs Debian's server; its binaries are not on PATH.
fn pg_bin() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists())
        .max();
    found.expect("no /usr/lib/postgresql/*/bin/pg_ctl: run `make deps`")
}

/// Whether this process runs as root (`/proc/self` belongs to its uid).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Postgres refuses to run as root: as root, run it as `postgres`.
fn as_owner(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("fleet-chaos-pg")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown the cluster directory",
            );
        }
        let mut init = as_owner(&bin, "initdb");
        init.arg("-D").arg(&data).args([
            "-U",
            "fleet",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
        ]);
        run(init, "initdb");
        let pg = Self {
            bin,
            data,
            port: free_port(),
            _dir: dir,
        };
        pg.up().await;
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://fleet@127.0.0.1:{}/postgres", self.port)
    }

    async fn up(&self) {
        let mut c = as_owner(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
                self.port,
                self.data.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        run(c, "pg_ctl start");
        let started = Instant::now();
        while sqlx::PgPool::connect(&self.url()).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "private postgres not answering"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&self, mode: &str) {
        let mut c = as_owner(&self.bin, "pg_ctl");
        c.arg("-D").arg(&self.data).args(["-m", mode, "-w", "stop"]);
        let _ = c.output();
    }

    /// An immediate stop (as a crash: no checkpoint, every connection cut),
    /// `down` of downtime, then a start with crash recovery.
    pub async fn restart(&self, down: Duration) {
        self.stop("immediate");
        tokio::time::sleep(down).await;
        self.up().await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}
