//! The agent's two HTTP edges: registration with the coordinator (against
//! a fake coordinator with canned answers) and the `/metrics` endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_agent::metrics::{serve_metrics, AgentMetrics, LeaseResult};
use fleet_agent::registration::{register, registration_for};
use fleet_agent::AgentError;
use fleet_common::api::{AgentConfig, RegisterAgent};
use fleet_common::settings::LeaseSettings;
use fleet_common::AgentId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Answers each connection with the next canned (status, body) and records
/// the request heads and bodies it got.
async fn fake_coordinator(answers: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, body) in answers {
            let (mut stream, _) = listener.accept().await.unwrap();
            let request = read_request(&mut stream).await;
            log.lock().unwrap().push(request);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).await.unwrap();
            let _ = stream.shutdown().await;
        }
    });
    (url, seen)
}

async fn read_request(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + len || n == 0 {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

fn registration() -> RegisterAgent {
    registration_for(&AgentId::parse("agent-reg").unwrap())
}

#[tokio::test]
async fn registration_retries_a_starting_coordinator_and_returns_its_config() {
    let config = AgentConfig {
        redis_url: "redis://somewhere:6379".into(),
        key_prefix: "fleet:".into(),
        lease: LeaseSettings::default(),
        knowledge_url: None,
        git_password: None,
        incarnation: None,
    };
    let (url, seen) = fake_coordinator(vec![
        (503, r#"{"error":"starting"}"#.into()),
        (200, serde_json::to_string(&config).unwrap()),
    ])
    .await;
    let got = register(&url, "s3cret", &registration(), &CancellationToken::new())
        .await
        .unwrap()
        .expect("not shut down");
    assert_eq!(
        (got.redis_url, got.key_prefix, got.lease),
        (config.redis_url, config.key_prefix, config.lease)
    );
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert!(
        first.starts_with("POST /api/v1/agents/register HTTP/1.1"),
        "{first}"
    );
    assert!(first
        .to_ascii_lowercase()
        .contains("authorization: bearer s3cret"));
    let body = &first[first.find("\r\n\r\n").unwrap() + 4..];
    let sent: RegisterAgent = serde_json::from_str(body).unwrap();
    assert_eq!(sent.agent.as_str(), "agent-reg");
}

#[tokio::test]
async fn a_refused_token_is_fatal_at_once() {
    let (url, seen) = fake_coordinator(vec![(401, r#"{"error":"bad token"}"#.into())]).await;
    let started = std::time::Instant::now();
    let err = register(&url, "wrong", &registration(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::TokenRefused), "{err:?}");
    assert!(err.to_string().contains("refused the agent token"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn shutdown_ends_the_wait_for_an_absent_coordinator() {
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        stop.cancel();
    });
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        register(
            &format!("http://127.0.0.1:{port}"),
            "t",
            &registration(),
            &shutdown,
        ),
    )
    .await
    .expect("returns on shutdown");
    assert!(matches!(r, Ok(None)), "{r:?}");
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let metrics = AgentMetrics::new();
    metrics.lease_ended(LeaseResult::Accepted);
    metrics.attempts.inc_by(3);
    let stop = CancellationToken::new();
    let addr = serve_metrics("127.0.0.1:0".parse().unwrap(), metrics, stop.clone())
        .await
        .unwrap();

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("fleet_agent_leases_total{result=\"accepted\"} 1"),
        "{body}"
    );
    assert!(body.contains("fleet_agent_leases_total{result=\"lost\"} 0"));
    assert!(body.contains("fleet_agent_attempts_total 3"));
    assert!(body.contains("fleet_agent_lease_active 0"));
    assert!(body.contains("fleet_agent_event_send_retries_total 0"));

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 404"), "{body}");
    stop.cancel();
}
