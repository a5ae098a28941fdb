//! A redis-server of a test's own, to restart (with or without its data)
//! without touching the one every other test shares.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::procs::free_port;

pub struct PrivateRedis {
    port: u16,
    binds: Vec<IpAddr>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts redis-server on a free port bound to 127.0.0.1 plus
    /// `extra_binds`, with an append-only file (a restart with data keeps
    /// everything), and waits for PING.
    pub async fn start(extra_binds: &[IpAddr]) -> Self {
        let mut binds = vec![IpAddr::from([127, 0, 0, 1])];
        binds.extend_from_slice(extra_binds);
        let mut r = Self {
            port: free_port(),
            binds,
            dir: tempfile::Builder::new()
                .prefix("fleet-redis")
                .tempdir()
                .expect("tempdir"),
            child: None,
        };
        r.up().await;
        r
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn url_on(&self, ip: IpAddr) -> String {
        format!("redis://{ip}:{}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    async fn up(&mut self) {
        let binds: Vec<String> = self.binds.iter().map(ToString::to_string).collect();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind"])
            .args(&binds)
            .args([
                "--protected-mode",
                "no",
                "--appendonly",
                "yes",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (run `make deps`)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let started = Instant::now();
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "private redis on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts on the same port. `keep_data`: an orderly shutdown that
    /// writes the append-only file, then a start from it; otherwise a kill,
    /// the data directory wiped, and an empty start.
    pub async fn restart(&mut self, keep_data: bool) {
        let mut child = self.child.take().expect("redis running");
        if keep_data {
            let client = redis::Client::open(self.url()).unwrap();
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let _ = redis::cmd("SHUTDOWN")
                    .arg("SAVE")
                    .query_async::<()>(&mut c)
                    .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        if !keep_data {
            for entry in std::fs::read_dir(self.data_dir()).unwrap().flatten() {
                let p = entry.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        self.up().await;
    }
}
