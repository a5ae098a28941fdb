//! Reaching the guest's sshd from the agent without a `docker exec`: a
//! short-lived thread joins the sandbox's network namespace (`setns`) and
//! reads sshd's banner on the sandbox's loopback. "SSH answers" after a
//! `loadvm` then costs what the guest needs, not a container round trip.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use crate::error::TargetError;

/// The network namespace of a sandbox, held open.
#[derive(Debug)]
pub(crate) struct NetNs(File);

impl NetNs {
    pub fn of(pid: u32) -> Result<Self, TargetError> {
        let path = format!("/proc/{pid}/ns/net");
        File::open(&path)
            .map(NetNs)
            .map_err(|source| TargetError::Io {
                path: path.into(),
                source,
            })
    }

    /// Whether sshd on `port` sends its banner within `timeout`. The
    /// thread that enters the namespace ends with the check, so no other
    /// code ever runs in it.
    pub async fn ssh_banner(&self, port: u16, timeout: Duration) -> Result<(), TargetError> {
        let ns = self
            .0
            .try_clone()
            .map_err(|e| TargetError::Vm(e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("fleet-netns-probe".into())
            .spawn(move || {
                let _ = tx.send(banner(ns, port, timeout));
            })
            .map_err(|e| TargetError::Vm(format!("cannot start the probe thread: {e}")))?;
        rx.await
            .map_err(|_| TargetError::Vm("the probe thread died".into()))?
            .map_err(|e| TargetError::SshUnreachable(format!("no ssh banner: {e}")))
    }
}

fn banner(ns: File, port: u16, timeout: Duration) -> std::io::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    if &head == b"SSH-" {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "not an ssh banner: {head:?}"
        )))
    }
}
