//! The coordinator's error type. Store errors (sqlx, redis, lease protocol)
//! are mapped here and nowhere else, so callers match on domain variants.

use fleet_common::lease::LeaseError;
use fleet_common::skill_pack::SkillPackError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// A submission or request the caller can fix; the message says how.
    #[error("{0}")]
    Invalid(String),
    #[error("not found")]
    NotFound,
    /// The request is valid but the resource is not in a state for it.
    #[error("{0}")]
    Conflict(String),
    #[error("knowledge repo: {0}")]
    Knowledge(#[from] fleet_knowledge::KnowledgeError),
    #[error("postgres: {0}")]
    Postgres(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    #[error("lease protocol: {0}")]
    Lease(#[source] LeaseError),
    #[error("skill pack: {0}")]
    SkillPack(#[from] SkillPackError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("shutdown deadline passed with workers still running: {0}")]
    ShutdownTimeout(String),
    #[error("worker stopped unexpectedly: {0}")]
    WorkerFailed(String),
}

impl From<sqlx::Error> for CoordinatorError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            other => Self::Postgres(other),
        }
    }
}

impl From<redis::RedisError> for CoordinatorError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

impl From<LeaseError> for CoordinatorError {
    fn from(e: LeaseError) -> Self {
        // A transport error is a Redis error whichever client raised it, so
        // callers test one variant for "redis is unavailable".
        match e {
            LeaseError::Redis(r) => Self::Redis(r),
            other => Self::Lease(other),
        }
    }
}

impl CoordinatorError {
    /// The error code Redis answered with (`NOGROUP`, `BUSYGROUP`, …).
    pub fn redis_code(&self) -> Option<&str> {
        match self {
            Self::Redis(e) => e.code(),
            _ => None,
        }
    }
}
