//! After a fault: wait until the system is at rest, then hold it to what must be true whatever
//! happened: every saga ended, stock conserved, no movement twice, every order as its client was
//! told, no message lost.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use platform::{config::Config, messaging::outbox};
use sqlx::PgPool;
use uuid::Uuid;

use serde_json::Value;

use super::{
    broker::{self, QUEUES, QueueState},
    http::Client,
    kinds::{Flow, KINDS},
    load::{Report, Shop},
};
use crate::support::assert_invariants;

/// How long the system may take, after the load, to finish every saga and deliver every message.
/// The slowest path is a saga that gives up on a step and then on its undo; with the suite's
/// deadlines that is well under a minute.
const SETTLE_WITHIN: Duration = Duration::from_secs(180);

/// Saga messages without an inbox row at their consumer (not handled, or not yet), by consumer;
/// saga messages with no known route are counted under `"no route"`.
async fn unhandled(pool: &PgPool, config: &Config) -> Vec<(String, i64)> {
    let routes = sagas::registry().topology(config.namespace.as_str()).routes();
    let mut conn = pool.acquire().await.expect("can reach the database");
    outbox::unhandled(&mut conn, &routes, config.retention.inbox).await.expect("can count unhandled messages")
}

/// Where the system stands, as far as rest is concerned.
#[derive(Debug)]
pub struct Snapshot {
    pub open_sagas: i64,
    pub unpublished: i64,
    pub unhandled: Vec<(String, i64)>,
    pub queues: Result<Vec<QueueState>, String>,
}

impl Snapshot {
    pub async fn take(pool: &PgPool, config: &Config) -> Self {
        let (open_sagas, unpublished): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM saga WHERE closed_at IS NULL),
                    (SELECT count(*) FROM outbox_pending)",
        )
        .fetch_one(pool)
        .await
        .expect("can read the database");
        let unhandled = unhandled(pool, config).await;
        let queues = broker::queue_states(&config.amqp_url, &config.namespace, &QUEUES).await;
        Self { open_sagas, unpublished, unhandled, queues }
    }

    /// Every saga ended, every message published and handled, every queue empty.
    pub fn at_rest(&self) -> bool {
        self.open_sagas == 0
            && self.unpublished == 0
            && self.unhandled.is_empty()
            && self.queues.as_ref().is_ok_and(|queues| queues.iter().all(|q| q.messages == 0))
    }
}

/// Waits until the system is at rest, or fails with what is still moving and the open sagas.
pub async fn settle(pool: &PgPool, config: &Config) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let snapshot = Snapshot::take(pool, config).await;
        if snapshot.at_rest() {
            return started.elapsed();
        }
        if started.elapsed() > SETTLE_WITHIN {
            let stuck: Vec<(Uuid, String, i32, Option<String>)> = sqlx::query_as(
                "SELECT id, state, attempt, last_error FROM saga WHERE closed_at IS NULL ORDER BY created_at LIMIT 20",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            panic!("the system did not come to rest within {SETTLE_WITHIN:?}: {snapshot:#?}\nopen sagas: {stuck:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the database says happened, for the figures.
#[derive(Debug, Default)]
pub struct Sagas {
    pub total: i64,
    /// Sagas by kind, then by the state they ended in.
    pub ended: BTreeMap<String, BTreeMap<String, i64>>,
    /// Ended in a state that waits for an operator.
    pub awaiting_operator: i64,
    /// Commands sent again after a deadline passed.
    pub resent: i64,
    /// Replies the transition function refused (late or repeated): recorded, not applied.
    pub refused_events: i64,
}

impl Sagas {
    /// `replenishment: 120 received, 30 compensated; …`
    pub fn ended_by_kind(&self) -> String {
        let kind = |(kind, states): (&String, &BTreeMap<String, i64>)| {
            let states: Vec<String> = states.iter().map(|(state, count)| format!("{count} {state}")).collect();
            format!("{kind}: {}", states.join(", "))
        };
        self.ended.iter().map(kind).collect::<Vec<_>>().join("; ")
    }
}

/// The named checks a run passed; a failing check panics with its evidence.
#[derive(Debug, Default)]
pub struct Checks {
    pub passed: Vec<&'static str>,
}

impl Checks {
    pub fn pass(&mut self, name: &'static str) {
        self.passed.push(name);
    }
}

/// Holds the system at rest to every invariant; returns the saga figures and the checks passed.
pub async fn verify(
    pool: &PgPool,
    config: &Config,
    api: &[SocketAddr],
    shop: &Shop,
    report: &Report,
) -> (Sagas, Checks) {
    let mut checks = Checks::default();
    let sagas = sagas_ended(pool).await;
    checks.pass("every saga ended, or waits for an operator, as its kind declares its state");

    assert_invariants(pool).await;
    checks.pass("ledger sums to stock; conservation; no oversell; each kind's own invariants");

    conservation(pool, shop, report).await;
    checks.pass(
        "product by product: warehouse + stores + held by a kind = opening stock + brought in - taken out, each \
         by its own records",
    );

    let doubled: Vec<Doubled> = sqlx::query_as(
        "SELECT reason, reference, store_id, product_id, count(*)::int8 AS count FROM stock_movement
         WHERE reference IS NOT NULL GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(doubled.is_empty(), "stock movements recorded twice for one cause: {doubled:?}");
    checks.pass("no stock movement recorded twice");

    for kind in KINDS {
        (kind.verify)(pool, report, &mut checks).await;
    }

    no_message_lost(pool, config).await;
    checks.pass("no message lost: all published, all handled, queues and dead letters empty");

    reads_agree(pool, api, shop).await;
    checks.pass("stock read through the API (the Redis cache) agrees with Postgres");

    (sagas, checks)
}

/// A cause whose stock movement was recorded more than once.
#[derive(Debug, sqlx::FromRow)]
#[allow(dead_code)] // read through Debug, in the failure message
struct Doubled {
    reason: String,
    reference: Option<Uuid>,
    store_id: Option<Uuid>,
    product_id: Uuid,
    count: i64,
}

/// Every saga ended: it waits on nothing, or on an operator. What a state means is the kind's word
/// (the `awaits` its transition function recorded), not a list of state names here.
async fn sagas_ended(pool: &PgPool) -> Sagas {
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT kind, state, awaits, count(*)::int8 FROM saga GROUP BY 1, 2, 3 ORDER BY 1, 2")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut sagas = Sagas::default();
    for (kind, state, awaits, count) in rows {
        assert!(
            matches!(awaits.as_str(), "nothing" | "operator"),
            "{count} {kind} saga(s) stuck in {state}, awaiting {awaits}"
        );
        sagas.total += count;
        if awaits == "operator" {
            sagas.awaiting_operator += count;
        }
        *sagas.ended.entry(kind).or_default().entry(state).or_default() += count;
    }
    (sagas.resent, sagas.refused_events) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event = 'CommandResent')::int8, count(*) FILTER (WHERE NOT applied)::int8
         FROM saga_transition",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sagas
}

/// The conservation law against the records of the clients and of every participant, product by
/// product: every unit the setup put in or a kind brought in is in the warehouse, in a store or
/// held by a kind (on the road), except those a kind took out (sold). Each kind says, from its
/// own records, what it holds, brought in and took out (`faults/kinds/`).
async fn conservation(pool: &PgPool, shop: &Shop, report: &Report) {
    for &product in &shop.products {
        let (warehouse, stores): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(sum(on_hand), 0) FROM warehouse_stock WHERE product_id = $1)::int8,
                    (SELECT COALESCE(sum(on_hand), 0) FROM inventory WHERE product_id = $1)::int8",
        )
        .bind(product)
        .fetch_one(pool)
        .await
        .unwrap();
        let mut flow = Flow::default();
        let mut by_kind = Vec::new();
        for kind in KINDS {
            let of_kind = (kind.flow)(pool, report, product).await;
            by_kind.push((kind.name, of_kind));
            flow += of_kind;
        }
        assert_eq!(
            warehouse + stores + flow.held,
            shop.opening_stock + flow.brought_in - flow.taken_out,
            "product {product}: warehouse {warehouse} + stores {stores} + held {} != opening stock {} + brought in {} \
             - taken out {}; by kind: {by_kind:?}",
            flow.held,
            shop.opening_stock,
            flow.brought_in,
            flow.taken_out,
        );
    }
}

/// At rest, nothing is unpublished, every saga message was handled by its consumer, no queue
/// holds anything, and nothing was dead-lettered (stored or still queued).
async fn no_message_lost(pool: &PgPool, config: &Config) {
    let snapshot = Snapshot::take(pool, config).await;
    assert_eq!(snapshot.unpublished, 0, "outbox rows never published");
    assert!(snapshot.unhandled.is_empty(), "saga messages never handled, by consumer: {:?}", snapshot.unhandled);
    let queues = snapshot.queues.expect("the broker answers");
    let left: Vec<_> = queues.iter().filter(|q| q.messages > 0).map(|q| (q.queue, q.messages)).collect();
    assert!(left.is_empty(), "messages left in the broker: {left:?}");
    // The engine stores what reaches the dead-letter queue: an empty queue alone proves nothing.
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT queue, reason FROM dead_letter").fetch_all(pool).await.unwrap();
    assert!(dead.is_empty(), "messages dead-lettered: {dead:?}");
    let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox").fetch_one(pool).await.unwrap();
    assert!(handled > 0, "no message was handled at all: the check would prove nothing");
}

/// What clients read (from the cache when it has the entry) is what Postgres holds: no write
/// lost during a fault left an old level behind in Redis.
async fn reads_agree(pool: &PgPool, api: &[SocketAddr], shop: &Shop) {
    let stored: Vec<(Uuid, Uuid, i64, i64)> =
        sqlx::query_as("SELECT store_id, product_id, on_hand, reserved FROM inventory").fetch_all(pool).await.unwrap();
    assert_eq!(stored.len(), shop.stores.len() * shop.products.len(), "every store stocks every product");
    let mut client = Client::new(api.to_vec(), 0);
    let mut stale = Vec::new();
    for (store, product, on_hand, reserved) in stored {
        let path = format!("/stores/{store}/inventory/{product}");
        let answer = client.send("GET", &path, &[], &Value::Null).await.expect("the API answers at rest");
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        let read = (answer.body["on_hand"].as_i64(), answer.body["reserved"].as_i64());
        if read != (Some(on_hand), Some(reserved)) {
            stale.push((store, product, read, (on_hand, reserved)));
        }
    }
    assert!(stale.is_empty(), "reads that disagree with Postgres (store, product, read, stored): {stale:?}");
}
