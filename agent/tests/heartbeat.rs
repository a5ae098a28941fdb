//! The heartbeat against a real Redis: refused renewals and hung renewals
//! both end the lease in time (DESIGN L2, L4).

mod support;

use std::time::Duration;

use fleet_agent::heartbeat::Heartbeat;
use fleet_common::event::AbandonReason;
use fleet_common::settings::LeaseSettings;
use fleet_common::Budgets;
use redis::AsyncCommands;
use support::proxy::{upstream_of, Mode, Proxy};
use support::{client_at, enqueue, fresh_client, lease_one, redis_now_ms, rule_task, task_field};
use tokio::time::Instant;

fn fast() -> LeaseSettings {
    LeaseSettings {
        ttl_ms: 600,
        renew_every_ms: 150,
        safety_margin_ms: 200,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_live_lease_stays_renewed() {
    // A TTL that tolerates a loaded CI machine's stalls; the sleep outlasts
    // it, so the deadline check below needs real renewals.
    let settings = LeaseSettings {
        ttl_ms: 1500,
        renew_every_ms: 150,
        safety_margin_ms: 300,
        ..Default::default()
    };
    let client = fresh_client(settings).await;
    enqueue(&client, &[rule_task(1, "r1", Budgets::default())]).await;
    let sent = Instant::now();
    let lease = lease_one(&client, "agent-hb").await;
    let hb = Heartbeat::start(client.clone(), lease.clone(), settings, sent);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(hb.reason(), None, "a reachable Redis must keep the lease");
    let deadline: i64 = task_field(&client, lease.id(), "deadline")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        deadline > redis_now_ms(&client).await,
        "renewals move the Redis deadline"
    );
    hb.stop().await;
    support::cleanup(&client).await;
}

#[tokio::test]
async fn a_refused_renewal_fires_lost_within_one_period() {
    let client = fresh_client(fast()).await;
    enqueue(&client, &[rule_task(1, "r1", Budgets::default())]).await;
    let sent = Instant::now();
    let lease = lease_one(&client, "agent-hb").await;
    let hb = Heartbeat::start(client.clone(), lease.clone(), fast(), sent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hb.reason(), None);

    let _: () = client
        .connection()
        .del(client.keys().task(lease.id()))
        .await
        .unwrap();
    let deleted = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(2), hb.lost())
        .await
        .expect("lost fires");
    assert_eq!(reason, AbandonReason::RenewRefused);
    // Acting on the refusal, not waiting out the local deadline (which
    // would also report LocalDeadline): the bound is the deadline itself,
    // so scheduling delays on a loaded machine do not make this flaky.
    let waited = deleted.elapsed();
    assert!(
        waited < fast().local_deadline(),
        "lost after {waited:?}, not before the local deadline"
    );
    hb.stop().await;
    support::cleanup(&client).await;
}

#[tokio::test]
async fn a_hung_redis_trips_the_local_deadline_before_the_redis_deadline() {
    let direct = fresh_client(fast()).await;
    enqueue(&direct, &[rule_task(1, "r1", Budgets::default())]).await;
    let proxy = Proxy::start(upstream_of(&support::redis_url())).await;
    let via_proxy = client_at(&proxy.url(), direct.keys().prefix(), fast()).await;

    let sent = Instant::now();
    let lease = lease_one(&via_proxy, "agent-hb").await;
    let hb = Heartbeat::start(via_proxy.clone(), lease.clone(), fast(), sent);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hb.reason(), None, "renewals pass through the proxy");

    // Calls now hang: nothing answers, nothing fails.
    proxy.set(Mode::Stall);
    let stalled = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(3), hb.lost())
        .await
        .expect("lost fires");
    let fired_at_redis_ms = redis_now_ms(&direct).await;
    assert_eq!(reason, AbandonReason::LocalDeadline);
    // At most TTL − margin after the last successful renewal was sent.
    assert!(
        stalled.elapsed() <= Duration::from_millis(400 + 100),
        "lost after {:?}",
        stalled.elapsed()
    );

    // Redis has not expired the lease yet: the agent stopped first.
    let redis_deadline: i64 = task_field(&direct, lease.id(), "deadline")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        fired_at_redis_ms < redis_deadline,
        "local deadline fired at {fired_at_redis_ms}, Redis deadline {redis_deadline}"
    );
    assert_eq!(
        task_field(&direct, lease.id(), "state").await.as_deref(),
        Some("leased")
    );
    hb.stop().await;
    support::cleanup(&direct).await;
}

#[tokio::test]
async fn an_unreachable_redis_trips_the_local_deadline() {
    let direct = fresh_client(fast()).await;
    enqueue(&direct, &[rule_task(1, "r1", Budgets::default())]).await;
    let proxy = Proxy::start(upstream_of(&support::redis_url())).await;
    let via_proxy = client_at(&proxy.url(), direct.keys().prefix(), fast()).await;

    let sent = Instant::now();
    let lease = lease_one(&via_proxy, "agent-hb").await;
    let hb = Heartbeat::start(via_proxy.clone(), lease.clone(), fast(), sent);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Connections drop and reconnects are refused: every renewal errors.
    proxy.set(Mode::Cut);
    let cut = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(3), hb.lost())
        .await
        .expect("lost fires");
    let fired_at_redis_ms = redis_now_ms(&direct).await;
    assert_eq!(reason, AbandonReason::LocalDeadline);
    assert!(
        cut.elapsed() <= Duration::from_millis(400 + 100),
        "lost after {:?}",
        cut.elapsed()
    );
    let redis_deadline: i64 = task_field(&direct, lease.id(), "deadline")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(fired_at_redis_ms < redis_deadline);
    hb.stop().await;
    support::cleanup(&direct).await;
}

#[tokio::test]
async fn a_lease_past_its_local_deadline_must_stop_before_the_task_notices() {
    // As after SIGSTOP/SIGCONT: the deadline passed while nothing ran.
    let client = fresh_client(fast()).await;
    enqueue(&client, &[rule_task(1, "r1", Budgets::default())]).await;
    let lease = lease_one(&client, "agent-hb").await;
    let long_ago = Instant::now() - Duration::from_secs(1);
    let hb = Heartbeat::start(client.clone(), lease, fast(), long_ago);
    assert_eq!(hb.must_stop(), Some(AbandonReason::LocalDeadline));
    let reason = tokio::time::timeout(Duration::from_secs(1), hb.lost())
        .await
        .expect("lost fires");
    assert_eq!(reason, AbandonReason::LocalDeadline);
    hb.stop().await;
    support::cleanup(&client).await;
}
