//! K2: git smart HTTP for agents — `git http-backend` as a CGI child per
//! request behind an axum handler, with HTTP basic auth.
//!
//! Username = agent id, password = [`agent_git_password`]. Every agent may
//! fetch; pushes run with `REMOTE_USER=<agent id>` so the repo's
//! pre-receive hook (see `bare.rs`) refuses refs outside the agent's own
//! `refs/heads/agent/<id>/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use futures_util::TryStreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::component::validate_component;
use crate::KnowledgeError;

/// Longest CGI header block we accept from `git http-backend`.
const MAX_CGI_HEADER_BYTES: usize = 64 * 1024;

/// An agent's git password: `hex(HMAC-SHA256(agent_secret, agent_id))`.
pub fn agent_git_password(agent_secret: &[u8], agent_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(agent_secret).expect("hmac takes any key length");
    mac.update(agent_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether an authenticated agent may still use the repo (the coordinator
/// answers `false` for revoked agents).
pub type AgentCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the git route needs: where the bare repo is, the secret that
/// derives agent passwords, and the `git http-backend` program.
#[derive(Clone)]
pub struct GitHttpState {
    inner: Arc<Inner>,
}

struct Inner {
    project_root: PathBuf,
    repo_name: String,
    agent_secret: Vec<u8>,
    allowed: Option<AgentCheck>,
    backend: PathBuf,
    path_env: String,
}

impl GitHttpState {
    /// Serve the bare repo at `bare_repo` as `/<its directory name>/`; the
    /// backend is found with `git --exec-path`.
    pub fn new(bare_repo: &Path, agent_secret: impl Into<Vec<u8>>) -> Result<Self, KnowledgeError> {
        let out = std::process::Command::new("git")
            .arg("--exec-path")
            .output()
            .map_err(KnowledgeError::io("git"))?;
        let exec_path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Self::with_backend(
            bare_repo,
            agent_secret,
            Path::new(&exec_path).join("git-http-backend"),
        )
    }

    /// Like [`GitHttpState::new`] with an explicit `git-http-backend` path.
    pub fn with_backend(
        bare_repo: &Path,
        agent_secret: impl Into<Vec<u8>>,
        backend: PathBuf,
    ) -> Result<Self, KnowledgeError> {
        let bare_repo = bare_repo
            .canonicalize()
            .map_err(KnowledgeError::io(bare_repo))?;
        let repo_name = bare_repo
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| KnowledgeError::BadRelativePath(bare_repo.clone()))?
            .to_string();
        let project_root = bare_repo.parent().unwrap_or(Path::new("/")).to_path_buf();
        Ok(GitHttpState {
            inner: Arc::new(Inner {
                project_root,
                repo_name,
                agent_secret: agent_secret.into(),
                allowed: None,
                backend,
                path_env: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            }),
        })
    }

    /// Refuse authenticated agents for which `allowed` answers `false`
    /// (revoked ones), checked on every request.
    pub fn with_agent_check(mut self, allowed: AgentCheck) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set the agent check before cloning the state")
            .allowed = Some(allowed);
        self
    }

    /// The URL path under the mount point, e.g. `/knowledge.git`.
    pub fn repo_path(&self) -> String {
        format!("/{}", self.inner.repo_name)
    }
}

/// The git routes; the coordinator mounts them under `/git/`.
pub fn router(state: GitHttpState) -> Router {
    Router::new()
        .route("/{*path}", any(handle))
        .with_state(state)
}

async fn handle(State(state): State<GitHttpState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(agent) = authenticate(&state.inner, &parts.headers) else {
        return unauthorized();
    };
    let path = parts.uri.path();
    // http-backend refuses aliases itself; refuse them before spawning anything.
    let aliased = path
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if aliased || !path.starts_with(&format!("/{}/", state.inner.repo_name)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match run_backend(&state.inner, &agent, &parts, body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(agent = %agent, path, error = %e, "git http-backend failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"fleet-knowledge\"")],
    )
        .into_response()
}

/// The agent id, if the basic-auth password is that agent's (constant-time compare).
fn authenticate(inner: &Inner, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    validate_component("agent", user).ok()?;
    let expected = agent_git_password(&inner.agent_secret, user);
    if bool::from(expected.as_bytes().ct_eq(password.as_bytes())) {
        if inner.allowed.as_ref().is_some_and(|allowed| !allowed(user)) {
            tracing::info!(agent = %user, "git request from a revoked agent");
            return None;
        }
        Some(user.to_string())
    } else {
        tracing::info!(agent = %user, "git request with a wrong password");
        None
    }
}

async fn run_backend(
    inner: &Inner,
    agent: &str,
    parts: &axum::http::request::Parts,
    body: Body,
) -> std::io::Result<Response> {
    let header_str = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut cmd = tokio::process::Command::new(&inner.backend);
    cmd.env_clear()
        .env("PATH", &inner.path_env)
        .env("GIT_PROJECT_ROOT", &inner.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("PATH_INFO", parts.uri.path())
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", agent)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(v) = header_str(header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", v);
    }
    // Without a length (chunked request), http-backend reads to EOF.
    if let Some(v) = header_str(header::CONTENT_LENGTH) {
        cmd.env("CONTENT_LENGTH", v);
    }
    if let Some(v) = header_str(header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = header_str(HeaderName::from_static("git-protocol")) {
        cmd.env("GIT_PROTOCOL", v);
    }
    let mut child = cmd.spawn()?;

    // Request body → child stdin, concurrently with reading its response.
    let mut stdin = child.stdin.take().expect("piped");
    let mut reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    tokio::spawn(async move {
        if let Err(e) = tokio::io::copy(&mut reader, &mut stdin).await {
            tracing::debug!(error = %e, "request body to git http-backend ended early");
        }
        let _ = stdin.shutdown().await;
    });
    let stderr = child.stderr.take().expect("piped");
    let agent_owned = agent.to_string();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(agent = %agent_owned, line, "git http-backend stderr");
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    tokio::spawn(async move {
        match child.wait().await {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::debug!(status = %s, "git http-backend exited"),
            Err(e) => tracing::warn!(error = %e, "waiting for git http-backend"),
        }
    });

    let (status, headers) = read_cgi_headers(&mut stdout).await?;
    let mut resp = Response::new(Body::from_stream(ReaderStream::new(stdout)));
    *resp.status_mut() = status;
    resp.headers_mut().extend(headers);
    Ok(resp)
}

/// Parse the CGI header block (`Status:` and ordinary headers) up to the blank line.
async fn read_cgi_headers<R: AsyncRead + Unpin>(
    out: &mut BufReader<R>,
) -> std::io::Result<(StatusCode, HeaderMap)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).await?;
        if n == 0 {
            return Err(bad("cgi output ended inside the headers"));
        }
        total += n;
        if total > MAX_CGI_HEADER_BYTES {
            return Err(bad("cgi header block too long"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok((status, headers));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("cgi header without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| bad("cgi status is not a number"))?;
        } else {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("bad cgi header name"))?;
            let value = HeaderValue::from_str(value).map_err(|_| bad("bad cgi header value"))?;
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cgi_headers_are_parsed() {
        let raw: &[u8] =
            b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: never\r\n\r\nbody";
        let mut r = BufReader::new(raw);
        let (s, h) = read_cgi_headers(&mut r).await.unwrap();
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(h.get("content-type").unwrap(), "text/plain");
        let mut rest = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut r, &mut rest)
            .await
            .unwrap();
        assert_eq!(rest, "body");
        let mut r = BufReader::new(&b"Content-Type: x\n"[..]);
        assert!(read_cgi_headers(&mut r).await.is_err());
    }

    #[test]
    fn password_is_hex_hmac_and_depends_on_both_inputs() {
        let p = agent_git_password(b"s", "agent-1");
        assert_eq!(p.len(), 64);
        assert_ne!(p, agent_git_password(b"s", "agent-2"));
        assert_ne!(p, agent_git_password(b"t", "agent-1"));
    }
}
