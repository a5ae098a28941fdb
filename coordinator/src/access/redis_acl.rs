//! One Redis ACL user per agent (issue 9): it may read and write only keys
//! and channels under the fleet's prefix, and runs no administrative or
//! dangerous command (FLUSHALL, CONFIG, KEYS, DEBUG, SHUTDOWN, ACL, …).
//! Revoking deletes the user, which also closes its open connections.
//!
//! Passwords derive from the coordinator's secret, so a coordinator can
//! recreate the users after Redis restarts (ACL users are not part of
//! Redis's data) without the agents registering again.

use hmac::{Hmac, Mac};
use redis::aio::ConnectionManager;
use sha2::Sha256;
use sqlx::PgPool;

use crate::CoordinatorError;

/// Command rules after `+@all`: what an agent never needs. `SELECT` and
/// friends would let it leave the fleet's database; `SCAN`/`RANDOMKEY`
/// would list keys outside its prefix; the script and function caches are
/// shared with the coordinator.
const DENIED: &[&str] = &[
    "-@admin",
    "-@dangerous",
    "-select",
    "-swapdb",
    "-move",
    "-scan",
    "-randomkey",
    "-function",
    "-script|flush",
    "-script|kill",
];

#[derive(Clone)]
pub struct RedisAcl {
    conn: ConnectionManager,
    prefix: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for RedisAcl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAcl")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisAcl {
    /// `conn` must be allowed `ACL SETUSER` (the coordinator's own user);
    /// `secret` derives the passwords and is never logged.
    pub fn new(conn: ConnectionManager, prefix: &str, secret: &[u8]) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            secret: secret.to_vec(),
        }
    }

    fn password(&self, user: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("hmac takes any key");
        mac.update(b"redis-acl\0");
        mac.update(user.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The ACL user name of `agent`: the prefix without `:` (user names end
    /// up in URLs), then `agent-<id>`.
    pub fn user(&self, agent: &str) -> String {
        format!(
            "{}-agent-{agent}",
            self.prefix.trim_end_matches(':').replace(':', "-")
        )
    }

    /// Creates or resets `agent`'s user; returns (user, password).
    pub async fn grant(&self, agent: &str) -> Result<(String, String), CoordinatorError> {
        let user = self.user(agent);
        let password = self.password(&user);
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(&user)
            .arg("reset")
            .arg("on")
            .arg(format!(">{password}"))
            .arg(format!("~{}*", self.prefix))
            .arg(format!("&{}*", self.prefix))
            .arg("+@all");
        for rule in DENIED {
            cmd.arg(*rule);
        }
        let mut conn = self.conn.clone();
        let () = cmd.query_async(&mut conn).await?;
        Ok((user, password))
    }

    /// Recreates the user of every registered agent not revoked (after
    /// Redis restarted); returns how many.
    pub async fn regrant_all(&self, pool: &PgPool) -> Result<usize, CoordinatorError> {
        let agents: Vec<String> =
            sqlx::query_scalar("SELECT id FROM agents WHERE revoked_at IS NULL ORDER BY id")
                .fetch_all(pool)
                .await?;
        for agent in &agents {
            self.grant(agent).await?;
        }
        Ok(agents.len())
    }

    /// Deletes `agent`'s user (closing its connections); `true` if it existed.
    pub async fn revoke(&self, agent: &str) -> Result<bool, CoordinatorError> {
        let mut conn = self.conn.clone();
        let deleted: u64 = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(self.user(agent))
            .query_async(&mut conn)
            .await?;
        Ok(deleted > 0)
    }
}

/// `base` with `user:password` as its credentials (any there are replaced).
pub fn url_with_credentials(
    base: &str,
    user: &str,
    password: &str,
) -> Result<String, CoordinatorError> {
    let mut url = url::Url::parse(base)
        .map_err(|e| CoordinatorError::Config(format!("the agents' Redis URL is invalid: {e}")))?;
    url.set_username(user)
        .and_then(|()| url.set_password(Some(password)))
        .map_err(|()| {
            CoordinatorError::Config("the agents' Redis URL cannot carry credentials".into())
        })?;
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_replace_those_in_the_url() {
        assert_eq!(
            url_with_credentials(
                "redis://admin:s3cret@10.0.0.1:6379/0",
                "fleet-agent-a1",
                "pw"
            )
            .unwrap(),
            "redis://fleet-agent-a1:pw@10.0.0.1:6379/0"
        );
        assert_eq!(
            url_with_credentials("redis://127.0.0.1:56379", "u", "p").unwrap(),
            "redis://u:p@127.0.0.1:56379"
        );
        assert!(url_with_credentials("not a url", "u", "p").is_err());
    }
}
