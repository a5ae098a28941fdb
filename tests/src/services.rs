//! Service locations. `make deps` writes them to `.fleet/env`; the defaults
//! match what it starts.

pub fn redis_url() -> String {
    std::env::var("FLEET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379".into())
}

pub fn database_url() -> String {
    std::env::var("FLEET_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://fleet:fleet@127.0.0.1:55432/fleet".into())
}

/// A fresh name fragment for prefixes and schemas.
pub fn unique(tag: &str) -> String {
    format!("{tag}_{}", uuid::Uuid::new_v4().simple())
}

/// Fails the test loudly when Redis does not answer: a missing service is
/// never a reason to pass (DEVELOPERS' GUIDE: no silent skips).
pub async fn require_redis() -> redis::aio::ConnectionManager {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("FLEET_REDIS_URL is not a redis url");
    let mut conn = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        redis::aio::ConnectionManager::new(client),
    )
    .await
    {
        Ok(Ok(c)) => c,
        other => panic!("redis is not reachable at {url} ({other:?}): run `make deps` first"),
    };
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("redis at {url} did not answer PING ({e}): run `make deps`"));
    assert_eq!(pong, "PONG");
    conn
}

/// `make vm-image`'s output (`FLEET_VM_IMAGE_DIR`, else the repo's
/// `.fleet/vm-image`); panics with what to do when it is missing.
pub fn vm_image_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("FLEET_VM_IMAGE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::procs::repo_root().join(".fleet/vm-image"));
    assert!(
        dir.join("disk.qcow2").is_file(),
        "no VM image in {}: run `make vm-image`",
        dir.display()
    );
    dir
}
