//! The inventory file of `harden` (DESIGN H4): a TOML list of hosts.
//! Everything that can be checked without touching a host is checked here,
//! before anything runs: unknown keys, duplicate names, unreadable key
//! files, malformed host keys. Reachability and the pinned host key are
//! checked by the preflight, through the SSH sandbox.
//!
//! ```toml
//! [defaults]                     # optional, for every host
//! user = "root"
//! port = 22
//! key = "keys/fleet_ed25519"     # relative to this file
//! network = "bridge"             # Docker network the SSH sandbox joins
//!
//! [[host]]
//! name = "web-01"
//! address = "10.0.0.5"
//! host_key = "ssh-ed25519 AAAAC3Nz..."
//! labels = { role = "web" }
//! snapshot = ["virsh", "snapshot-create-as", "web-01", "fleet-pre"]
//! revert = ["virsh", "snapshot-revert", "web-01", "fleet-pre"]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use fleet_common::host::InventoryHost;
use serde::Deserialize;

use fleet_coordinator::hosts::validate_host_name;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    user: Option<String>,
    port: Option<u16>,
    key: Option<PathBuf>,
    network: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    name: String,
    address: String,
    host_key: String,
    user: Option<String>,
    port: Option<u16>,
    key: Option<PathBuf>,
    network: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    snapshot: Option<Vec<String>>,
    revert: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    host: Vec<HostEntry>,
}

/// Reads and checks `path`; every problem found is listed in the error.
pub fn load(path: &Path) -> anyhow::Result<Vec<InventoryHost>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("inventory {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|problems| {
        anyhow::anyhow!(
            "inventory {} is not usable; nothing was run:\n  - {}",
            path.display(),
            problems.join("\n  - ")
        )
    })
}

/// Parses inventory `text`, key paths relative to `base`.
pub fn parse(text: &str, base: &Path) -> Result<Vec<InventoryHost>, Vec<String>> {
    let file: InventoryFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    if file.host.is_empty() {
        problems.push("no [[host]] entries".to_owned());
    }
    let mut names = HashSet::new();
    let mut hosts = Vec::new();
    for h in file.host {
        let at = format!("host {:?}", h.name);
        if let Err(e) = validate_host_name(&h.name) {
            problems.push(e);
        }
        if !names.insert(h.name.clone()) {
            problems.push(format!("{at}: duplicate host name"));
        }
        if h.address.trim().is_empty() || h.address.starts_with('-') {
            problems.push(format!(
                "{at}: address {:?} is not a host name or IP",
                h.address
            ));
        }
        if let Err(e) = check_host_key(&h.host_key) {
            problems.push(format!("{at}: host_key {e}"));
        }
        let key = match h.key.or_else(|| file.defaults.key.clone()) {
            Some(k) => base.join(k),
            None => {
                problems.push(format!("{at}: no key (set key, or key under [defaults])"));
                PathBuf::new()
            }
        };
        if !key.as_os_str().is_empty() {
            if let Err(e) = std::fs::read(&key) {
                problems.push(format!("{at}: key {} cannot be read: {e}", key.display()));
            }
        }
        for (what, argv) in [("snapshot", &h.snapshot), ("revert", &h.revert)] {
            if argv
                .as_ref()
                .is_some_and(|a| a.is_empty() || a[0].is_empty())
            {
                problems.push(format!("{at}: {what} must name a program"));
            }
        }
        hosts.push(InventoryHost {
            name: h.name,
            address: h.address,
            port: h.port.or(file.defaults.port).unwrap_or(22),
            user: h
                .user
                .or_else(|| file.defaults.user.clone())
                .unwrap_or_else(|| "root".into()),
            key: std::path::absolute(&key)
                .unwrap_or(key)
                .display()
                .to_string(),
            host_key: h.host_key.trim().to_owned(),
            network: h
                .network
                .or_else(|| file.defaults.network.clone())
                .unwrap_or_else(|| "bridge".into()),
            labels: h.labels,
            snapshot: h.snapshot,
            revert: h.revert,
        });
    }
    if problems.is_empty() {
        Ok(hosts)
    } else {
        Err(problems)
    }
}

/// `type base64 [comment]`, as in known_hosts; the blob must decode and
/// name the same type.
fn check_host_key(key: &str) -> Result<(), String> {
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(
            "must be \"<type> <base64>\", e.g. a line of the host's ssh_host_ed25519_key.pub"
                .into(),
        );
    };
    if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-")) {
        return Err(format!("type {kind:?} is not an SSH key type"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| "is not valid base64".to_owned())?;
    // The blob starts with the type as an SSH string (u32 length, bytes).
    let named = bytes
        .get(4..)
        .and_then(|rest| rest.get(..kind.len()))
        .is_some_and(|t| t == kind.as_bytes());
    if named {
        Ok(())
    } else {
        Err(format!("does not hold a {kind} key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn dir_with_key() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), "key").unwrap();
        dir
    }

    fn host(name: &str, extra: &str) -> String {
        format!(
            "[[host]]\nname = \"{name}\"\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n{extra}\n"
        )
    }

    #[test]
    fn a_good_inventory_takes_defaults_and_resolves_keys() {
        let dir = dir_with_key();
        let text = format!(
            "[defaults]\nkey = \"id\"\nnetwork = \"lab\"\n{}{}",
            host("a", "labels = { role = \"web\" }"),
            host("b", "port = 2222\nuser = \"ops\"\nrevert = [\"virsh\", \"snapshot-revert\", \"b\", \"pre\"]")
        );
        let hosts = parse(&text, dir.path()).unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!((hosts[0].port, hosts[0].user.as_str()), (22, "root"));
        assert_eq!((hosts[1].port, hosts[1].user.as_str()), (2222, "ops"));
        assert_eq!(hosts[0].network, "lab");
        assert_eq!(hosts[0].labels["role"], "web");
        assert!(Path::new(&hosts[0].key).is_absolute());
        assert!(hosts[1].revert.is_some() && hosts[0].revert.is_none());
    }

    #[test]
    fn the_shipped_example_parses_once_its_key_exists() {
        let dir = dir_with_key();
        let example = include_str!("../../../deploy/inventory.example.toml")
            .replace("keys/fleet_ed25519", "id");
        let hosts = parse(&example, dir.path()).unwrap();
        assert_eq!(hosts.len(), 2);
        assert!(hosts[0].revert.is_some() && hosts[1].revert.is_none());
    }

    #[test]
    fn bad_inventories_name_every_problem() {
        let dir = dir_with_key();
        let unknown = format!("{}\ncolour = \"red\"", host("a", "key = \"id\""));
        let err = parse(&unknown, dir.path()).unwrap_err().join(";");
        assert!(err.contains("colour"), "{err}");

        let dup = format!("{}{}", host("a", "key = \"id\""), host("a", "key = \"id\""));
        let err = parse(&dup, dir.path()).unwrap_err().join(";");
        assert!(err.contains("duplicate host name"), "{err}");

        let missing = host("a", "key = \"nope\"");
        let err = parse(&missing, dir.path()).unwrap_err().join(";");
        assert!(
            err.contains("cannot be read") && err.contains("nope"),
            "{err}"
        );

        let bad_key = host("a", "key = \"id\"").replace(KEY, "ssh-ed25519 bm90IGEga2V5");
        let err = parse(&bad_key, dir.path()).unwrap_err().join(";");
        assert!(err.contains("does not hold a ssh-ed25519 key"), "{err}");

        let err = parse("", dir.path()).unwrap_err().join(";");
        assert!(err.contains("no [[host]]"), "{err}");

        let bad_name = host("../etc", "key = \"id\"");
        assert!(parse(&bad_name, dir.path()).is_err());
    }
}
