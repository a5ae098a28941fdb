//! The agent's one error type. Messages are lowercase and carry no values
//! that belong in tracing fields.

use fleet_common::lease::LeaseError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("lease protocol: {0}")]
    Lease(#[from] LeaseError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the coordinator refused the agent token (401): check --token / FLEET_AGENT_TOKEN")]
    TokenRefused,
    #[error("registration with the coordinator failed: {0}")]
    Registration(String),
    #[error("brain: {0}")]
    Brain(String),
    /// The brain's endpoint is down (connection, timeout, 429, 5xx after
    /// the client's retries) or stopped taking the key or model: the lease
    /// is handed back and the agent holds until the endpoint answers.
    #[error("brain endpoint unavailable: {0}")]
    BrainUnavailable(String),
    /// The LLM endpoint's start check failed: the message says which
    /// setting is wrong.
    #[error(transparent)]
    LlmEndpoint(#[from] crate::llm::EndpointError),
    /// The brain has no fix for the rule (the `ssg` brain on a rule whose
    /// content ships none): the rule escalates as `no_fix_available`.
    #[error("no fix available for this rule")]
    NoFixAvailable,
    #[error("target: {0}")]
    Target(String),
    #[error("evaluator: {0}")]
    Evaluator(String),
    /// The event sender stopped (shutdown deadline passed) before the
    /// event was acknowledged.
    #[error("event sink is closed")]
    EventsClosed,
    #[error("metrics endpoint: {0}")]
    Metrics(#[from] std::io::Error),
}
