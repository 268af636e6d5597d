//! Replenishments: each closes in its saga's state, its ledger rows follow from its shipment, and
//! a shipment on the road holds its units.

use futures_util::future::BoxFuture;
use platform::saga::SagaKind;
use sagas::replenishment::Replenishment;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Flow, Kind, prepares_nothing};
use crate::{checks::Checks, load::Report};

pub static PART: Kind = Kind { name: Replenishment::KIND, prepare: prepares_nothing, flow, verify };

/// Units on the road: shipments dispatched and not yet received or cancelled.
fn flow<'a>(pool: &'a PgPool, _: &'a Report, product: Uuid) -> BoxFuture<'a, Flow> {
    Box::pin(async move {
        let held: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(quantity), 0)::int8 FROM shipment WHERE product_id = $1 AND status = 'dispatched'",
        )
        .bind(product)
        .fetch_one(pool)
        .await
        .unwrap();
        Flow { held, ..Flow::default() }
    })
}

fn verify<'a>(pool: &'a PgPool, _: &'a Report, checks: &'a mut Checks) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let disagreeing: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT s.id, s.state, r.status FROM saga s JOIN replenishment r ON r.saga_id = s.id
             WHERE r.status <> s.state OR r.closed_at IS NULL",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(disagreeing.is_empty(), "replenishments disagree with their sagas: {disagreeing:?}");
        checks.pass("every replenishment closed in its saga's state");
        saga_movements(pool).await;
        checks.pass("each replenishment moved stock exactly as its shipment says");
    })
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
             WHERE s.kind = $1) x
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
    .bind(Replenishment::KIND)
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
