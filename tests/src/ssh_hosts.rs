//! Inventory hosts for `harden` tests and benches: containers of the
//! target image running sshd on an internal Docker network of their own,
//! reached only through the agents' SSH sandboxes (T1). Keys are made per
//! set with `ssh-keygen`; everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// (Re)starts sshd with the host key baked in at setup.
const START_SSHD: &str = "mkdir -p /run/sshd && /usr/sbin/sshd -h /etc/ssh/fleet_host_key \
     -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no";

/// Runs `argv`, feeding `stdin`; panics with its output unless it succeeds.
pub fn run(argv: &[&str], stdin: Option<&[u8]>) -> String {
    let out = try_run(argv, stdin);
    match out {
        Ok(stdout) => stdout,
        Err(e) => panic!("{argv:?}: {e}"),
    }
}

/// Runs `argv`; its stdout, or its status and output as the error.
pub fn try_run(argv: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(bytes) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(bytes)
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One host: a container with sshd.
pub struct SshHost {
    pub name: String,
    /// Container name, as the sandbox resolves it on the network.
    pub container: String,
    /// `ssh-ed25519 AAAA…` of its host key.
    pub host_key: String,
}

impl SshHost {
    /// Runs `script` with bash inside the host (the test's own look, never
    /// a fleet script).
    pub fn exec(&self, script: &str) -> String {
        run(
            &["docker", "exec", &self.container, "bash", "-c", script],
            None,
        )
    }

    /// Statuses of `rules` (short ids) by a fresh `oscap` scan of the
    /// profile run by the test itself: `pass`, `fail`, …
    pub fn oscap(
        &self,
        datastream: &str,
        profile: &str,
        prefix: &str,
        rules: &[&str],
    ) -> Vec<(String, String)> {
        let selection: String = rules
            .iter()
            .map(|r| format!(" --rule {prefix}{r}"))
            .collect();
        let out = self.exec(&format!(
            "oscap xccdf eval --skip-valid --profile {profile}{selection} {datastream} 2>/dev/null; true"
        ));
        parse_oscap_text(&out, prefix)
    }

    /// sha256 of each of `paths` (missing files as `-`).
    pub fn checksums(&self, paths: &[&str]) -> String {
        let list = paths.join(" ");
        self.exec(&format!(
            "for f in {list}; do sha256sum \"$f\" 2>/dev/null || echo \"- $f\"; done"
        ))
    }
}

/// (rule, result) pairs from oscap's text output (`Rule\t<id>` then
/// `Result\t<status>`).
pub fn parse_oscap_text(out: &str, prefix: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rule = None;
    for line in out.lines() {
        let mut parts = line.splitn(2, '\t');
        match (parts.next().map(str::trim), parts.next().map(str::trim)) {
            (Some("Rule"), Some(id)) => {
                rule = Some(id.strip_prefix(prefix).unwrap_or(id).to_owned())
            }
            (Some("Result"), Some(status)) => {
                if let Some(r) = rule.take() {
                    found.push((r, status.to_owned()));
                }
            }
            _ => {}
        }
    }
    found
}

/// A set of hosts on one internal network, with one client key.
pub struct SshHosts {
    pub network: String,
    pub hosts: Vec<SshHost>,
    pub dir: tempfile::TempDir,
}

impl SshHosts {
    /// Starts `names.len()` hosts of `image`; `tag` makes names unique.
    pub fn start(tag: &str, image: &str, names: &[&str]) -> SshHosts {
        let dir = tempfile::tempdir().expect("tempdir");
        let network = format!("fleet-hosts-{tag}");
        let _ = try_run(&["docker", "network", "rm", &network], None);
        run(
            &["docker", "network", "create", "--internal", &network],
            None,
        );
        keygen(&dir.path().join("client_key"));
        let client_pub = std::fs::read(dir.path().join("client_key.pub")).unwrap();
        let mut hosts = Vec::new();
        for name in names {
            let container = format!("fleet-host-{tag}-{name}");
            let _ = try_run(&["docker", "rm", "-f", &container], None);
            run(
                &[
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    &container,
                    "--hostname",
                    name,
                    "--network",
                    &network,
                    "--init",
                    "--label",
                    &format!("fleet.test-hosts={tag}"),
                    "--entrypoint",
                    "sleep",
                    image,
                    "infinity",
                ],
                None,
            );
            let key_path = dir.path().join(format!("{name}_host_key"));
            let host_key = keygen(&key_path);
            let copy = |from: &Path, to: &str| {
                let bytes = std::fs::read(from).unwrap();
                run(
                    &[
                        "docker",
                        "exec",
                        "-i",
                        &container,
                        "sh",
                        "-c",
                        &format!("mkdir -p \"$(dirname {to})\" && cat > {to} && chmod 600 {to}"),
                    ],
                    Some(&bytes),
                );
            };
            // The target image's offline repository has openssh-server.
            run(
                &["docker", "exec", &container, "sh", "-c",
                  "test -x /usr/sbin/sshd || DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }"],
                None,
            );
            copy(&key_path, "/etc/ssh/fleet_host_key");
            run(
                &["docker", "exec", "-i", &container, "sh", "-c",
                  "mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys"],
                Some(&client_pub),
            );
            // `docker run` leaves /.dockerenv, which makes SSG content
            // treat the host as a container (most rules `notapplicable`);
            // a VM has none.
            run(
                &["docker", "exec", &container, "rm", "-f", "/.dockerenv"],
                None,
            );
            run(
                &["docker", "exec", &container, "sh", "-c", START_SSHD],
                None,
            );
            hosts.push(SshHost {
                name: (*name).to_owned(),
                container,
                host_key: host_key
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        SshHosts {
            network,
            hosts,
            dir,
        }
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    pub fn host(&self, name: &str) -> &SshHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .expect("no such host")
    }

    /// An inventory `[[host]]` entry for `name`; `extra` is appended.
    pub fn entry(&self, name: &str, extra: &str) -> String {
        let h = self.host(name);
        format!(
            "[[host]]\nname = \"{}\"\naddress = \"{}\"\nhost_key = \"{}\"\n{extra}\n",
            h.name, h.container, h.host_key
        )
    }

    /// An inventory file of `entries` with this set's key and network.
    pub fn inventory(&self, file: &str, entries: &[String]) -> PathBuf {
        let path = self.dir.path().join(file);
        let text = format!(
            "[defaults]\nkey = \"{}\"\nnetwork = \"{}\"\n\n{}",
            self.client_key().display(),
            self.network,
            entries.join("\n")
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = try_run(&["docker", "rm", "-f", &h.container], None);
        }
        remove_network(&self.network);
    }
}

/// Removes a test's Docker network, after the containers still attached
/// to it (an agent's sandbox killed mid-host); best effort.
pub fn remove_network(network: &str) {
    let filter = format!("network={network}");
    if let Ok(ids) = try_run(&["docker", "ps", "-aq", "--filter", &filter], None) {
        for id in ids.split_whitespace() {
            let _ = try_run(&["docker", "rm", "-f", id], None);
        }
    }
    let _ = try_run(&["docker", "network", "rm", network], None);
}

/// A new ed25519 key at `path`; returns the public key line.
pub fn keygen(path: &Path) -> String {
    let p = path.to_str().unwrap();
    run(
        &[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "fleet-test",
            "-f",
            p,
        ],
        None,
    );
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oscap_text_is_read_rule_by_rule() {
        let out = "Title\tInstall cron\nRule\tx_rule_package_cron_installed\nIdent\tCCE\nResult\tpass\n\nTitle\tY\nRule\tx_rule_b\nResult\tfail\n";
        assert_eq!(
            parse_oscap_text(out, "x_rule_"),
            vec![
                ("package_cron_installed".into(), "pass".into()),
                ("b".into(), "fail".into())
            ]
        );
    }
}
