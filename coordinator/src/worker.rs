//! Spawning background workers: every worker runs inside a tracing span
//! named after it, has its own stop token, and is joined in a fixed order
//! with one hard deadline on shutdown (STYLE 5, 6, 7).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::CoordinatorError;

struct Worker {
    name: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// Workers in the order they are stopped.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    /// Cancelled when any worker ends before it was asked to stop.
    failed: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
}

impl Workers {
    pub fn new() -> Self {
        Self {
            workers: Vec::new(),
            failed: CancellationToken::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Spawns `run(stop)`. Workers are stopped in the order they were spawned.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), CoordinatorError>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let fut = run(stop.clone());
        let (failed, failure, stopping) = (self.failed.clone(), self.failure.clone(), stop.clone());
        let handle = tokio::spawn(
            async move {
                let result = fut.await;
                if !stopping.is_cancelled() {
                    let why = match result {
                        Ok(()) => format!("{name} exited"),
                        Err(e) => format!("{name}: {e}"),
                    };
                    tracing::error!(error = %why, "worker stopped before shutdown; shutting down");
                    failure.lock().expect("failure lock").get_or_insert(why);
                    failed.cancel();
                } else if let Err(error) = result {
                    tracing::warn!(%error, "worker stopped with an error");
                }
            }
            .instrument(tracing::info_span!("worker", worker = name)),
        );
        self.workers.push(Worker { name, stop, handle });
    }

    /// Resolves when a worker has failed on its own.
    pub async fn failed(&self) {
        self.failed.cancelled().await
    }

    /// Stops and joins each worker in order; whatever is still running at
    /// `deadline` is aborted.
    pub async fn shutdown(self, deadline: Instant) -> Result<(), CoordinatorError> {
        let mut late = Vec::new();
        for w in self.workers {
            w.stop.cancel();
            let abort = w.handle.abort_handle();
            if tokio::time::timeout_at(deadline, w.handle).await.is_err() {
                abort.abort();
                late.push(w.name);
            } else {
                tracing::debug!(worker = w.name, "worker joined");
            }
        }
        if !late.is_empty() {
            return Err(CoordinatorError::ShutdownTimeout(late.join(", ")));
        }
        match self.failure.lock().expect("failure lock").take() {
            Some(why) => Err(CoordinatorError::WorkerFailed(why)),
            None => Ok(()),
        }
    }
}
