//! Orders: each is in the database exactly as its client was told, its ledger reserved, sold or
//! released its stock once, and the payment provider's books match; what the clients were told
//! was handed over left the network.

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use platform::saga::SagaKind;
use sagas::fulfilment::Fulfilment;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Flow, Kind, prepares_nothing};
use crate::{
    checks::Checks,
    load::{Accepted, Outcome, Report},
};

pub static PART: Kind = Kind { name: Fulfilment::KIND, prepare: prepares_nothing, flow, verify };

/// Sold: by the clients' own records, the units of the orders they were told were handed over.
fn flow<'a>(_: &'a PgPool, report: &'a Report, product: Uuid) -> BoxFuture<'a, Flow> {
    let taken_out = report
        .outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Accepted(Accepted { status: "fulfilled", items, .. }) => Some(items),
            _ => None,
        })
        .flatten()
        .filter(|(item, _)| *item == product)
        .map(|(_, quantity)| quantity)
        .sum();
    Box::pin(async move { Flow { taken_out, ..Flow::default() } })
}

fn verify<'a>(pool: &'a PgPool, report: &'a Report, checks: &'a mut Checks) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        orders_as_told(pool, report).await;
        checks.pass("the orders in the database are exactly those the clients were told of");
        order_movements(pool).await;
        checks.pass("each order reserved, sold or released its stock exactly once");
        money(pool).await;
        checks.pass("money: charged - refunded = the value of the fulfilled orders, order by order");
    })
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
