//! Retention, against a real Postgres: one janitor pass removes exactly the history that outlived
//! its retention (published messages, inbox rows past the deduplication window, closed sagas with
//! their timelines and kind rows) and keeps the rest; it never waits for a row another transaction
//! holds; and the engine runs it until shutdown.

mod support;

use std::{collections::BTreeSet, time::Duration};

use orchestrator::app::Roles;
use platform::{
    config::Retention,
    db,
    messaging::relay::RelayFaults,
    retention::{Janitor, Removed},
    shutdown,
};
use sqlx::PgPool;
use support::{TestEnv, eventually};
use uuid::Uuid;

/// Writes an outbox message the given time ago, published or still pending; returns its id.
async fn outbox_row(pool: &PgPool, written_ago: &str, published: bool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "WITH written AS (
             INSERT INTO outbox (message_id, exchange, routing_key, message_type, body, created_at)
             VALUES ($1, 'saga.commands', 'warehouse', 'DispatchShipment', '{}', now() - $2::interval)
             RETURNING id)
         INSERT INTO outbox_pending (id) SELECT id FROM written WHERE NOT $3",
    )
    .bind(id)
    .bind(written_ago)
    .bind(published)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn inbox_row(pool: &PgPool, received_ago: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO inbox (consumer, message_id, received_at) VALUES ('warehouse', $1, now() - $2::interval)")
        .bind(id)
        .bind(received_ago)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// A saga in `state`, created 60 days ago and closed `closed_ago` (open when `None`), with
/// `transitions` timeline lines. A closed `failed` saga waits for an operator, as both kinds say.
async fn saga(pool: &PgPool, kind: &str, state: &str, closed_ago: Option<&str>, transitions: i32) -> Uuid {
    let id = Uuid::new_v4();
    let awaits = match (state, closed_ago) {
        ("failed", _) => "operator",
        (_, Some(_)) => "nothing",
        (_, None) => "participant",
    };
    sqlx::query(
        "INSERT INTO saga (id, kind, state, data, created_at, closed_at, awaits)
         VALUES ($1, $2, $3, '{}', now() - interval '60 days', now() - $4::interval, $5)",
    )
    .bind(id)
    .bind(kind)
    .bind(state)
    .bind(closed_ago)
    .bind(awaits)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO saga_transition (saga_id, to_state, event) SELECT $1, $2, 'Step' || g FROM generate_series(1, $3) g",
    )
    .bind(id)
    .bind(state)
    .bind(transitions)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// A replenishment saga in `state` with its `replenishment` row, for its own product in `store`.
async fn replenishment(pool: &PgPool, store: Uuid, state: &str, closed_ago: Option<&str>) -> Uuid {
    let id = saga(pool, "replenishment", state, closed_ago, 2).await;
    let product: Uuid = sqlx::query_scalar("INSERT INTO product (sku, name) VALUES ($1, 'Oat milk') RETURNING id")
        .bind(format!("SKU-{}", &id.simple().to_string()[..12]))
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO replenishment (saga_id, store_id, product_id, quantity_requested, status, closed_at)
         VALUES ($1, $2, $3, 5, $4, now() - $5::interval)",
    )
    .bind(id)
    .bind(store)
    .bind(product)
    .bind(state)
    .bind(closed_ago)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn ids(pool: &PgPool, query: &str) -> BTreeSet<Uuid> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(query)).fetch_all(pool).await.unwrap().into_iter().collect()
}

fn set<const N: usize>(ids: [Uuid; N]) -> BTreeSet<Uuid> {
    ids.into_iter().collect()
}

/// A janitor with the default retention (outbox 1 h, inbox 7 days, sagas 30 days) and tiny
/// batches, so that one pass needs several of them.
fn janitor(pool: &PgPool) -> Janitor {
    Janitor { pool: pool.clone(), retention: Retention::default(), batch: 2 }
}

#[tokio::test]
async fn one_pass_removes_exactly_what_outlived_its_retention() {
    let env = TestEnv::new().await;
    let pool = db::connect(&env.config).await.expect("the test database migrates");
    let store: Uuid = sqlx::query_scalar("INSERT INTO store (name, service_area) VALUES ('Soho', 'W1') RETURNING id")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Never published (its relay died): however old, it must still go out. It is the oldest,
    // first on the primary key that retention walks, and must not stop the walk.
    let unpublished = outbox_row(&pool, "4 hours", false).await;
    // Written and published long ago: five, so that the pass takes three batches.
    for _ in 0..5 {
        outbox_row(&pool, "3 hours", true).await;
    }
    let published_lately = outbox_row(&pool, "10 minutes", true).await;

    // Past the deduplication window.
    for _ in 0..3 {
        inbox_row(&pool, "8 days").await;
    }
    let handled_lately = inbox_row(&pool, "6 days").await;

    // Closed long ago: these three go.
    replenishment(&pool, store, "received", Some("31 days")).await;
    replenishment(&pool, store, "resolved", Some("40 days")).await;
    saga(&pool, "fulfilment", "fulfilled", Some("31 days"), 3).await;
    let received_lately = replenishment(&pool, store, "received", Some("1 day")).await;
    let open_long = replenishment(&pool, store, "requested", None).await;
    // Closed long ago, but waiting for an operator.
    let failed_long_ago = replenishment(&pool, store, "failed", Some("31 days")).await;

    let (_trigger, shutdown) = shutdown::channel();
    let removed = janitor(&pool).pass(&shutdown).await;

    assert_eq!(ids(&pool, "SELECT message_id FROM outbox").await, set([published_lately, unpublished]));
    assert_eq!(ids(&pool, "SELECT message_id FROM inbox").await, set([handled_lately]));
    let kept = set([received_lately, open_long, failed_long_ago]);
    assert_eq!(ids(&pool, "SELECT id FROM saga").await, kept);
    assert_eq!(ids(&pool, "SELECT saga_id FROM saga_transition").await, kept, "timelines go with their sagas");
    assert_eq!(ids(&pool, "SELECT saga_id FROM replenishment").await, kept, "kind rows go with their sagas");
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_transition").fetch_one(&pool).await.unwrap();
    assert_eq!(lines, 6, "the kept sagas keep their whole timelines");
    assert_eq!(removed, Removed { outbox: 5, inbox: 3, sagas: 3 }, "the pass counts what it removed");

    assert_eq!(janitor(&pool).pass(&shutdown).await, Removed::default(), "a second pass finds nothing");
    pool.close().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_pass_skips_what_another_transaction_holds_instead_of_waiting() {
    let env = TestEnv::new().await;
    let pool = db::connect(&env.config).await.expect("the test database migrates");
    let held = saga(&pool, "fulfilment", "fulfilled", Some("31 days"), 1).await;
    let free = saga(&pool, "fulfilment", "cancelled", Some("31 days"), 1).await;
    let old_inbox = inbox_row(&pool, "8 days").await;

    // As the engine does when a late reply reaches a closed saga: it holds the saga's row lock.
    let mut engine = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM saga WHERE id = $1 FOR UPDATE").bind(held).execute(&mut *engine).await.unwrap();
    let mut consumer = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM inbox WHERE message_id = $1 FOR UPDATE")
        .bind(old_inbox)
        .execute(&mut *consumer)
        .await
        .unwrap();

    let (_trigger, shutdown) = shutdown::channel();
    let removed = tokio::time::timeout(Duration::from_secs(10), janitor(&pool).pass(&shutdown))
        .await
        .expect("the pass does not wait for locked rows");
    assert_eq!(removed, Removed { outbox: 0, inbox: 0, sagas: 1 });
    assert_eq!(ids(&pool, "SELECT id FROM saga").await, set([held]));
    assert!(!ids(&pool, "SELECT saga_id FROM saga_transition").await.contains(&free));

    engine.rollback().await.unwrap();
    consumer.rollback().await.unwrap();
    let removed = janitor(&pool).pass(&shutdown).await;
    assert_eq!(removed, Removed { outbox: 0, inbox: 1, sagas: 1 }, "released, they go at the next pass");
    pool.close().await;
    env.teardown().await;
}

#[tokio::test]
async fn the_engine_prunes_every_interval_until_shutdown() {
    let metrics = orchestrator::metrics_handle();
    let mut env = TestEnv::new().await;
    env.config.retention = Retention { interval: Duration::from_millis(50), ..Retention::default() };
    let app = env.start(Roles { api: false, engine: true, workers: Vec::new() }, RelayFaults::default()).await;
    let pool = env.pool().await;

    // Written after the first pass has had its chance: a later one removes it.
    let stale = outbox_row(&pool, "2 hours", true).await;
    let fresh = outbox_row(&pool, "1 minute", true).await;
    eventually(Duration::from_secs(10), "the janitor to remove the stale message", || async {
        let left = ids(&pool, "SELECT message_id FROM outbox").await;
        (!left.contains(&stale)).then_some(())
    })
    .await;
    assert!(ids(&pool, "SELECT message_id FROM outbox").await.contains(&fresh));
    let rendered = metrics.render();
    assert!(rendered.contains(r#"retention_deleted_total{table="outbox"}"#), "{rendered}");

    tokio::time::timeout(Duration::from_secs(20), app.stop()).await.expect("the janitor stops on shutdown");
    pool.close().await;
    env.teardown().await;
}

#[tokio::test]
async fn the_janitor_prunes_at_start_and_stops_at_once_on_shutdown() {
    let env = TestEnv::new().await;
    let pool = db::connect(&env.config).await.expect("the test database migrates");
    let stale = outbox_row(&pool, "2 hours", true).await;
    let hour = Duration::from_secs(3600);
    let janitor = Janitor { retention: Retention { interval: hour, ..Retention::default() }, ..janitor(&pool) };
    let (trigger, shutdown) = shutdown::channel();
    let running = tokio::spawn(janitor.run(shutdown));

    eventually(Duration::from_secs(10), "the first pass, at start", || async {
        (!ids(&pool, "SELECT message_id FROM outbox").await.contains(&stale)).then_some(())
    })
    .await;
    // Now it waits for the next pass, an hour away: shutdown must not wait for it.
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the janitor stops on shutdown, not at its next pass")
        .unwrap();
    pool.close().await;
    env.teardown().await;
}
