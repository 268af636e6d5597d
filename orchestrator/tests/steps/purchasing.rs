//! Purchase orders: the warehouse's reorders from its supplier.

use std::time::Duration;

use cucumber::{given, then, when};
use poem::http::StatusCode;
use serde_json::{Value, json};

use super::{SAGA_ENDS, int, settle, stock::product, text};
use crate::World;

#[given(expr = "the warehouse holds {int} {string} and reorders at {int} up to {int}")]
async fn warehouse_reorders(world: &mut World, on_hand: i64, product_name: String, point: i64, target: i64) {
    let product_id = product(world, &product_name).await;
    let api = world.api().await;
    let body = json!({ "on_hand": on_hand, "reorder": { "point": point, "target": target } });
    let stock = api
        .put(&format!("/warehouse/stock/{product_id}"), &body)
        .await
        .expect(StatusCode::OK, "setting the warehouse's stock and reorder levels");
    assert_eq!(stock["reorder"], json!({ "point": point, "target": target }), "{stock:#}");
}

#[given("the supplier declines every order")]
async fn supplier_declines(world: &mut World) {
    world.configure("the supplier declines every order").config.vars.set("SUPPLIER_DECLINE_RATE", 1.0);
}

#[given(expr = "the supplier takes {int} seconds to ship, and the orchestrator waits that long")]
async fn supplier_lead_time(world: &mut World, seconds: u64) {
    let env = world.configure("the supplier's lead time");
    env.config.vars.set("SUPPLIER_LEAD_TIME_MS", seconds * 1000);
    // The supplier answers when it ships: a step's deadline must outlast its lead time.
    env.config.saga.command_timeout = Duration::from_secs(seconds);
    env.config.saga.max_timeout = Duration::from_secs(seconds);
}

#[when(expr = "an operator orders {int} {string} from the supplier")]
async fn operator_orders(world: &mut World, quantity: i64, product_name: String) {
    let product_id = world.product(&product_name);
    let api = world.api().await;
    let body = json!({ "product_id": product_id, "quantity": quantity, "reason": "festival weekend" });
    let saga = api.post("/purchase-orders", &body, &[]).await.expect(StatusCode::CREATED, "ordering from the supplier");
    assert_eq!(text(&saga, "kind"), "purchase_order");
    world.saga = Some(super::id(&saga, "id"));
}

#[then(expr = "a purchase order of {int} {string} is started")]
async fn purchase_order_started(world: &mut World, quantity: i64, product_name: String) {
    let product_id = world.product(&product_name);
    let api = world.api().await;
    let page = api
        .get(&format!("/sagas?kind=purchase_order&product_id={product_id}"))
        .await
        .expect(StatusCode::OK, "listing purchase orders");
    let sagas = page["items"].as_array().cloned().unwrap_or_default();
    let [saga] = sagas.as_slice() else {
        panic!("one purchase order of {product_name} was expected, not {}: {sagas:#?}", sagas.len());
    };
    assert_eq!(int(&saga["data"], "quantity"), quantity, "{saga:#}");
    world.saga = Some(super::id(saga, "id"));
}

#[then(expr = "the purchase order ends {word}")]
async fn purchase_order_ends(world: &mut World, expected: String) {
    let saga_id = world.saga();
    let api = world.api().await;
    let closed = |saga: &Value| saga["closed_at"].is_string();
    let saga = settle(SAGA_ENDS, &format!("purchase order {saga_id} to end"), || api.saga(saga_id), closed).await;
    assert_eq!(text(&saga, "state"), expected, "{saga:#}");
}

#[then(expr = "a second purchase order of {string} is refused while it is open")]
async fn second_refused(world: &mut World, product_name: String) {
    let product_id = world.product(&product_name);
    let api = world.api().await;
    let body = json!({ "product_id": product_id, "quantity": 10 });
    let refused = api.post("/purchase-orders", &body, &[]).await.expect(StatusCode::CONFLICT, "ordering twice");
    let open = world.saga().to_string();
    assert!(text(&refused, "detail").contains(&open), "the refusal names the open order: {refused:#}");
}

#[when("the operator cancels the purchase order")]
async fn operator_cancels(world: &mut World) {
    let saga_id = world.saga();
    let api = world.api().await;
    let body = json!({ "reason": "ordered by mistake" });
    let saga =
        api.post(&format!("/sagas/{saga_id}/compensate"), &body, &[]).await.expect(StatusCode::OK, "cancelling it");
    assert_eq!(text(&saga, "state"), "cancelling", "{saga:#}");
}
