//! Who may act as an agent, and with which rights (issue 9).
//!
//! - [`tokens`]: per-agent bearer tokens, issued and revoked through the
//!   API; only their SHA-256 is stored.
//! - [`revocations`]: the agents revoked, held in memory for the git route
//!   (which must not wait on Postgres for every request).
//! - [`redis_acl`]: one Redis ACL user per agent, confined to the fleet's
//!   key prefix and without administrative commands; deleted on revoke,
//!   which also drops its open connections.

pub mod redis_acl;
pub mod revocations;
pub mod tokens;

pub use redis_acl::RedisAcl;
pub use revocations::Revocations;
pub use tokens::TokenOwner;

/// Everything registration and revocation need besides the pool.
#[derive(Clone, Default)]
pub struct AgentAccess {
    pub revoked: Revocations,
    /// `None`: agents get the advertised Redis URL as is (no ACL users).
    pub redis_acl: Option<RedisAcl>,
}
