//! A minimal HTTP/1.1 endpoint for `GET /metrics`: one request per
//! connection, enough for a Prometheus scrape without a web framework.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::AgentMetrics;
use crate::error::AgentError;
use crate::spawn::spawn;

/// Request heads larger than this are refused; scrapes send a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves until `shutdown`; returns the bound address
/// (useful with port 0).
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AgentError> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "serving metrics");
    spawn("metrics-http", async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        debug!(error = %e, "metrics accept failed");
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            spawn("metrics-conn", async move {
                if let Err(e) = tokio::time::timeout(IO_TIMEOUT, answer(stream, &metrics)).await {
                    debug!(error = %e, "metrics request timed out");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, metrics: &AgentMetrics) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD_BYTES {
            return;
        }
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = if method == b"GET" && path == b"/metrics" {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
