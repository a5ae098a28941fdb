//! The one way the agent spawns background tasks: each gets a span naming
//! it, nested under the caller's span, so its log lines say whose they are
//! (lease fields included).

use std::future::Future;

use tokio::task::JoinHandle;
use tracing::Instrument;

pub fn spawn<F>(name: &'static str, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut.instrument(tracing::info_span!("bg", worker = name)))
}
