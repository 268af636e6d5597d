//! After a fault: wait until the system is at rest, then hold it to what must be true whatever
//! happened: every saga ended, stock conserved, no movement twice, every order as its client was
//! told, no message lost.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use platform::{
    config::Config,
    messaging::{Exchange, consumer::Handler, topology::REPLY_ROUTE},
    saga::runner::ReplyHandler,
};
use sqlx::PgPool;
use uuid::Uuid;

use serde_json::Value;

use super::{
    broker::{self, QUEUES, QueueState},
    http::Client,
    load::{Accepted, Outcome, Report, Shop},
};
use crate::support::assert_invariants;

/// How long the system may take, after the load, to finish every saga and deliver every message.
/// The slowest path is a saga that gives up on a step and then on its undo; with the suite's
/// deadlines that is well under a minute.
const SETTLE_WITHIN: Duration = Duration::from_secs(180);

/// Where each kind of saga message must end up: (exchange, routing key, consumer's inbox name).
/// A worker's inbox name is its participant's name (`participants/tests/workers.rs` checks it);
/// the engine's comes from its handler.
fn routes(config: &Config) -> Vec<(String, String, String)> {
    let replies = ReplyHandler { registry: sagas::registry().into(), timing: config.saga };
    let commands = Exchange::Commands.as_ref().to_owned();
    let mut routes: Vec<(String, String, String)> = sagas::registry()
        .participants()
        .iter()
        .map(|participant| (commands.clone(), participant.name.to_owned(), participant.name.to_owned()))
        .collect();
    routes.push((Exchange::Replies.as_ref().to_owned(), REPLY_ROUTE.to_owned(), replies.name().to_owned()));
    routes
}

/// Saga messages without an inbox row at their consumer (not handled, or not yet), by consumer;
/// saga messages with no known route are counted under `"no route"`.
async fn unhandled(pool: &PgPool, config: &Config) -> Vec<(String, i64)> {
    let routes = routes(config);
    let column = |i: usize| routes.iter().map(|r| [&r.0, &r.1, &r.2][i].clone()).collect::<Vec<_>>();
    sqlx::query_as(
        "WITH route (exchange, routing_key, consumer) AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))
         SELECT COALESCE(r.consumer, 'no route'), count(*)::int8
         FROM outbox o LEFT JOIN route r USING (exchange, routing_key)
         WHERE o.exchange IN (SELECT exchange FROM route)
           AND (r.consumer IS NULL
                OR NOT EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = r.consumer AND i.message_id = o.message_id))
         GROUP BY 1 ORDER BY 1",
    )
    .bind(column(0))
    .bind(column(1))
    .bind(column(2))
    .fetch_all(pool)
    .await
    .expect("can count unhandled messages")
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
    pub received: i64,
    pub compensated: i64,
    /// Orders' sagas: handed over, or unwound.
    pub fulfilled: i64,
    pub cancelled: i64,
    pub failed: i64,
    /// Commands sent again after a deadline passed.
    pub resent: i64,
    /// Replies the transition function refused (late or repeated): recorded, not applied.
    pub refused_events: i64,
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
    checks.pass("every saga ended: received, compensated, fulfilled, cancelled or failed");

    let disagreeing: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT s.id, s.state, r.status FROM saga s JOIN replenishment r ON r.saga_id = s.id
         WHERE r.status <> s.state OR r.closed_at IS NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(disagreeing.is_empty(), "replenishments disagree with their sagas: {disagreeing:?}");
    checks.pass("every replenishment closed in its saga's state");

    assert_invariants(pool).await;
    checks.pass("ledger sums to stock; conservation; no oversell; one open replenishment per pair");

    let purchases = conservation(pool, shop, report).await;
    checks.pass(
        "product by product: warehouse + stores + in transit = opening stock + supplier deliveries - sales the \
         clients made",
    );
    eprintln!(
        "fault suite | purchase orders: {} opened, {} received, {} cancelled; {} units delivered",
        purchases.opened, purchases.received, purchases.cancelled, purchases.delivered
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

    saga_movements(pool).await;
    checks.pass("each saga moved stock exactly as its shipment says");

    orders_as_told(pool, report).await;
    checks.pass("the orders in the database are exactly those the clients were told of");

    order_movements(pool).await;
    checks.pass("each order reserved, sold or released its stock exactly once");

    money(pool).await;
    checks.pass("money: charged - refunded = the value of the fulfilled orders, order by order");

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

/// A saga, its shipment, and the stock its ledger rows moved.
#[derive(Debug, sqlx::FromRow)]
#[allow(dead_code)] // read through Debug, in the failure message
struct SagaStock {
    id: Uuid,
    state: String,
    /// The shipment's status; none when the warehouse never saw the saga.
    status: Option<String>,
    quantity: Option<i64>,
    left_warehouse: i64,
    arrived: i64,
    /// Returned to the warehouse by a cancel.
    back: i64,
}

async fn sagas_ended(pool: &PgPool) -> Sagas {
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*)::int8 FROM saga GROUP BY state").fetch_all(pool).await.unwrap();
    let mut sagas = Sagas::default();
    for (state, count) in states {
        sagas.total += count;
        match state.as_str() {
            "received" => sagas.received = count,
            "compensated" => sagas.compensated = count,
            "fulfilled" => sagas.fulfilled = count,
            "cancelled" => sagas.cancelled = count,
            "failed" => sagas.failed = count,
            other => panic!("{count} saga(s) stuck in {other}"),
        }
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

/// The conservation law against the clients' and the supplier's own records, product by product:
/// every unit the setup put in or the supplier delivered is in the warehouse, in a store or on
/// the road, except those the clients sold. Returns the purchase orders' figures.
async fn conservation(pool: &PgPool, shop: &Shop, report: &Report) -> Purchases {
    let mut sold: HashMap<Uuid, i64> = HashMap::new();
    for outcome in &report.outcomes {
        if let Outcome::Accepted(Accepted { status: "fulfilled", items, .. }) = outcome {
            for (product, quantity) in items {
                *sold.entry(*product).or_default() += quantity;
            }
        }
    }
    let mut purchases = Purchases::default();
    for &product in &shop.products {
        // Delivered: what the supplier says it shipped, for the orders the warehouse received.
        let (warehouse, stores, in_transit, delivered): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(sum(on_hand), 0) FROM warehouse_stock WHERE product_id = $1)::int8,
                    (SELECT COALESCE(sum(on_hand), 0) FROM inventory WHERE product_id = $1)::int8,
                    (SELECT COALESCE(sum(quantity), 0) FROM shipment WHERE product_id = $1 AND status = 'dispatched')::int8,
                    (SELECT COALESCE(sum(s.quantity), 0) FROM supplier_order s
                     JOIN purchase_order p ON p.saga_id = s.purchase_id
                     WHERE s.product_id = $1 AND s.status = 'shipped' AND p.status = 'received')::int8",
        )
        .bind(product)
        .fetch_one(pool)
        .await
        .unwrap();
        let sold = sold.get(&product).copied().unwrap_or_default();
        assert_eq!(
            warehouse + stores + in_transit,
            shop.opening_stock + delivered - sold,
            "product {product}: warehouse {warehouse} + stores {stores} + in transit {in_transit} \
             != opening stock {} + delivered {delivered} - sold {sold}",
            shop.opening_stock
        );
        purchases.delivered += delivered;
    }
    // Every shipment the supplier made was booked in: none is left at the warehouse's door.
    let (opened, received, cancelled, undelivered): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE p.status = 'received'), count(*) FILTER (WHERE p.status = 'cancelled'),
                count(*) FILTER (WHERE s.status = 'shipped' AND p.status <> 'received')
         FROM purchase_order p LEFT JOIN supplier_order s ON s.purchase_id = p.saga_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(undelivered, 0, "purchase orders the supplier shipped but the warehouse did not book in");
    Purchases { opened, received, cancelled, ..purchases }
}

/// What became of the purchase orders of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Purchases {
    pub opened: i64,
    pub received: i64,
    pub cancelled: i64,
    /// Units the supplier delivered and the warehouse booked in.
    pub delivered: i64,
}

/// Each saga's ledger rows follow from its shipment, and its end state from the shipment's:
/// a received shipment left the warehouse once and arrived once; a cancelled one left and came
/// back (or never left); one still on the road is allowed only for a saga an operator must
/// resolve (`failed`).
async fn saga_movements(pool: &PgPool) {
    let wrong: Vec<SagaStock> = sqlx::query_as(
        "WITH moved AS (
             SELECT reference AS saga_id,
                    COALESCE(sum(on_hand_delta) FILTER (WHERE reason = 'shipment_dispatched'), 0)::int8 AS left_warehouse,
                    COALESCE(sum(on_hand_delta) FILTER (WHERE reason = 'replenishment_received'), 0)::int8 AS arrived,
                    COALESCE(sum(on_hand_delta) FILTER (WHERE reason = 'shipment_cancelled'), 0)::int8 AS back
             FROM stock_movement
             WHERE reason IN ('shipment_dispatched', 'replenishment_received', 'shipment_cancelled')
             GROUP BY reference)
         SELECT * FROM (
             SELECT s.id, s.state, sh.status, sh.quantity,
                    COALESCE(m.left_warehouse, 0) AS left_warehouse, COALESCE(m.arrived, 0) AS arrived, COALESCE(m.back, 0) AS back
             FROM saga s
             LEFT JOIN shipment sh ON sh.replenishment_id = s.id
             LEFT JOIN moved m ON m.saga_id = s.id
             WHERE s.kind = 'replenishment') x
         WHERE NOT COALESCE(CASE
             WHEN status IS NULL THEN state <> 'received' AND left_warehouse = 0 AND arrived = 0 AND back = 0
             WHEN status = 'received' THEN state IN ('received', 'failed')
                  AND left_warehouse = -quantity AND arrived = quantity AND back = 0
             WHEN status = 'cancelled' THEN state IN ('compensated', 'failed')
                  AND left_warehouse = -quantity AND back = quantity AND arrived = 0
             WHEN status = 'dispatched' THEN state = 'failed' AND left_warehouse = -quantity AND arrived = 0 AND back = 0
         END, false)
         LIMIT 20",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(wrong.is_empty(), "sagas whose stock movements or state disagree with their shipment: {wrong:#?}");
    let unreferenced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stock_movement m
         WHERE m.reason IN ('shipment_dispatched', 'replenishment_received', 'shipment_cancelled')
           AND NOT EXISTS (SELECT 1 FROM saga s WHERE s.id = m.reference)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(unreferenced, 0, "shipment movements that belong to no saga");
}

/// Every accepted order is in the database as its client was last told, and nothing else is.
async fn orders_as_told(pool: &PgPool, report: &Report) {
    let stored: Vec<(Uuid, Option<String>, String, Uuid)> =
        sqlx::query_as("SELECT id, idempotency_key, status, store_id FROM customer_order")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut stored: HashMap<String, (Uuid, String, Uuid)> = stored
        .into_iter()
        .map(|(id, key, status, store)| (key.expect("the load sends a key with every order"), (id, status, store)))
        .collect();
    let mut items: HashMap<Uuid, Vec<(Uuid, i64)>> = HashMap::new();
    let rows: Vec<(Uuid, Uuid, i64)> =
        sqlx::query_as("SELECT order_id, product_id, quantity FROM order_item").fetch_all(pool).await.unwrap();
    for (order, product, quantity) in rows {
        items.entry(order).or_default().push((product, quantity));
    }
    for outcome in &report.outcomes {
        match outcome {
            Outcome::Refused { key } => {
                assert!(!stored.contains_key(key), "order {key} was refused, yet it is in the database");
            }
            Outcome::Accepted(told) => {
                let (id, status, store) = stored
                    .remove(&told.key)
                    .unwrap_or_else(|| panic!("order {} was accepted, yet it is not in the database", told.key));
                assert_eq!((id, status.as_str(), store), (told.id, told.status, told.store), "order {}", told.key);
                let mut expected = told.items.clone();
                let mut actual = items.remove(&id).unwrap_or_default();
                expected.sort();
                actual.sort();
                assert_eq!(actual, expected, "the items of order {}", told.key);
            }
        }
    }
    assert!(stored.is_empty(), "orders no client was told of: {:?}", stored.keys().take(10).collect::<Vec<_>>());
}

/// Each item's ledger: one reservation of its quantity; then one sale or one release, as its
/// order's status says. Stores' reserved stock is exactly what the open orders hold.
async fn order_movements(pool: &PgPool) {
    let wrong: Vec<(Uuid, Uuid, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT o.id, i.product_id, o.status, i.quantity,
                count(m.id) FILTER (WHERE m.reason = 'order_reserved' AND m.reserved_delta = i.quantity
                                    AND m.on_hand_delta = 0)::int8,
                count(m.id) FILTER (WHERE m.reason <> 'order_reserved')::int8
         FROM customer_order o
         JOIN order_item i ON i.order_id = o.id
         LEFT JOIN stock_movement m
           ON m.reference = o.id AND m.store_id = o.store_id AND m.product_id = i.product_id
         GROUP BY o.id, i.product_id, o.status, i.quantity
         HAVING count(m.id) FILTER (WHERE m.reason = 'order_reserved' AND m.reserved_delta = i.quantity
                                    AND m.on_hand_delta = 0) <> 1
             OR count(m.id) FILTER (WHERE m.reason <> 'order_reserved') <> CASE o.status WHEN 'reserved' THEN 0 ELSE 1 END
             OR count(m.id) FILTER (WHERE m.reason = 'order_fulfilled' AND m.on_hand_delta = -i.quantity
                                    AND m.reserved_delta = -i.quantity)
                <> CASE o.status WHEN 'fulfilled' THEN 1 ELSE 0 END
             OR count(m.id) FILTER (WHERE m.reason = 'order_cancelled' AND m.on_hand_delta = 0
                                    AND m.reserved_delta = -i.quantity)
                <> CASE o.status WHEN 'cancelled' THEN 1 ELSE 0 END
         LIMIT 20",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        wrong.is_empty(),
        "order items whose ledger does not match their order \
         (order, product, status, quantity, reservations, other movements): {wrong:#?}"
    );
    let misreserved: Vec<(Uuid, Uuid, i64, i64)> = sqlx::query_as(
        "SELECT inv.store_id, inv.product_id, inv.reserved, COALESCE(open.quantity, 0)::int8
         FROM inventory inv
         LEFT JOIN (SELECT o.store_id, i.product_id, sum(i.quantity) AS quantity
                    FROM customer_order o JOIN order_item i ON i.order_id = o.id
                    WHERE o.status IN ('reserved', 'paid', 'cancelling') GROUP BY 1, 2) open
           ON open.store_id = inv.store_id AND open.product_id = inv.product_id
         WHERE inv.reserved <> COALESCE(open.quantity, 0)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(misreserved.is_empty(), "reserved stock that no open order holds, or the reverse: {misreserved:?}");
}

/// An order and its payment, for the failure message.
#[derive(Debug, sqlx::FromRow)]
#[allow(dead_code)] // read through Debug, in the failure message
struct Paid {
    id: Uuid,
    status: String,
    value_cents: i64,
    payment: Option<String>,
    amount_cents: Option<i64>,
}

/// The payment provider's books against the orders: a fulfilled order was charged its value and
/// kept it; every other order kept nothing (declined, voided, or refunded in full). Prices are
/// the products' own (`price_cents`), kept on each order line.
async fn money(pool: &PgPool) {
    let wrong: Vec<Paid> = sqlx::query_as(
        "WITH value AS (
             SELECT order_id, sum(quantity * unit_price_cents)::int8 AS cents FROM order_item GROUP BY order_id)
         SELECT o.id, o.status, v.cents AS value_cents, p.status AS payment, p.amount_cents
         FROM customer_order o JOIN value v ON v.order_id = o.id LEFT JOIN payment p ON p.order_id = o.id
         WHERE CASE o.status
                   WHEN 'fulfilled' THEN p.status IS DISTINCT FROM 'charged' OR p.amount_cents <> v.cents
                   ELSE p.status = 'charged'
               END
         LIMIT 20",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(wrong.is_empty(), "orders whose payment disagrees with their status: {wrong:#?}");
    let (kept, sold): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(amount_cents), 0) FROM payment WHERE status = 'charged')::int8,
                (SELECT COALESCE(sum(i.quantity * i.unit_price_cents), 0) FROM order_item i
                 JOIN customer_order o ON o.id = i.order_id WHERE o.status = 'fulfilled')::int8",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(kept, sold, "charged - refunded ({kept} cents) != fulfilled orders' value ({sold} cents)");
    assert!(sold > 0, "no order was sold: the check would prove nothing");
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
