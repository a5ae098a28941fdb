use thiserror::Error;

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis has no epoch generation: it lost its data and the coordinator
    /// has not rebuilt the queue yet. Retry later.
    #[error("queue not ready: waiting for the coordinator to reconcile redis")]
    NotReady,
    #[error("unexpected reply from lease script: {0}")]
    Protocol(String),
    #[error("task payload is not valid json: {0}")]
    Payload(#[from] serde_json::Error),
}
