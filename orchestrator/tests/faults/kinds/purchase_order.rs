//! Purchase orders: the warehouse reorders from its supplier once it runs low; every unit the
//! supplier shipped was booked in, and those units entered the network.

use futures_util::future::BoxFuture;
use platform::saga::SagaKind;
use sagas::purchase_order::PurchaseOrder;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Flow, Kind};
use crate::{
    checks::Checks,
    load::{Plan, Report, Setup, Shop},
};

pub static PART: Kind = Kind { name: PurchaseOrder::KIND, prepare, flow, verify };

/// Gives every product a reorder point and target the order stream reaches in its second half,
/// so the warehouse reorders, while the supplier's lead time and declines leave it dry at times.
fn prepare<'a>(setup: &'a mut Setup, plan: &'a Plan, shop: &'a Shop) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let orders = plan.orders as i64;
        let reorder = json!({"point": (orders / 30).max(5), "target": (orders / 10).max(20)});
        for product in &shop.products {
            let stock = json!({"on_hand": plan.warehouse_on_hand, "reorder": reorder});
            let answer = setup.send("PUT", &format!("/warehouse/stock/{product}"), &stock).await;
            assert_eq!(answer.status, 200, "setting the warehouse's reorder levels: {}", answer.body);
        }
    })
}

/// Brought in: what the supplier's own records say it shipped, for orders the warehouse received.
fn flow<'a>(pool: &'a PgPool, _: &'a Report, product: Uuid) -> BoxFuture<'a, Flow> {
    Box::pin(async move {
        let brought_in: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(s.quantity), 0)::int8 FROM supplier_order s
             JOIN purchase_order p ON p.saga_id = s.purchase_id
             WHERE s.product_id = $1 AND s.status = 'shipped' AND p.status = 'received'",
        )
        .bind(product)
        .fetch_one(pool)
        .await
        .unwrap();
        Flow { brought_in, ..Flow::default() }
    })
}

/// Every shipment the supplier made was booked in: none is left at the warehouse's door.
fn verify<'a>(pool: &'a PgPool, _: &'a Report, checks: &'a mut Checks) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let (opened, received, cancelled, undelivered, delivered): (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE p.status = 'received'), count(*) FILTER (WHERE p.status = 'cancelled'),
                    count(*) FILTER (WHERE s.status = 'shipped' AND p.status <> 'received'),
                    COALESCE(sum(s.quantity) FILTER (WHERE s.status = 'shipped' AND p.status = 'received'), 0)::int8
             FROM purchase_order p LEFT JOIN supplier_order s ON s.purchase_id = p.saga_id",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(undelivered, 0, "purchase orders the supplier shipped but the warehouse did not book in");
        checks.pass("every unit the supplier shipped was booked in by the warehouse");
        eprintln!(
            "fault suite | purchase orders: {opened} opened, {received} received, {cancelled} cancelled; \
             {delivered} units delivered"
        );
    })
}
