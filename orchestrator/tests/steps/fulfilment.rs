//! An order's fulfilment: its payment, the picker's hand-over, a cancel, and the money.

use cucumber::{given, then, when};
use poem::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use super::{SAGA_ENDS, id, int, orders::hand_over, settle, text};
use crate::World;

fn order_id(world: &World) -> Uuid {
    id(&world.answers.last().expect("an earlier step placed an order").body, "id")
}

async fn order(world: &mut World, order_id: Uuid) -> Value {
    world.api().await.get(&format!("/orders/{order_id}")).await.expect(StatusCode::OK, "reading the order")
}

#[given("payments are declined")]
async fn payments_declined(world: &mut World) {
    world.configure("payments are declined").config.vars.set("PAYMENT_DECLINE_RATE", 1.0);
}

#[given("the store cannot pick orders")]
async fn picking_fails(world: &mut World) {
    world.configure("the store cannot pick orders").config.vars.set("PICKING_FAILURE_RATE", 1.0);
}

#[then("the order is paid")]
async fn order_paid(world: &mut World) {
    let order_id = order_id(world);
    let api = world.api().await;
    let path = format!("/orders/{order_id}");
    let seen = settle(
        SAGA_ENDS,
        "the order to be paid",
        || async { api.get(&path).await.expect(StatusCode::OK, "reading the order") },
        |order| order["status"] != "reserved",
    )
    .await;
    assert_eq!(text(&seen, "status"), "paid", "the order: {seen:#}");
}

#[when("the picker hands the order over")]
async fn picker_hands_over(world: &mut World) {
    let order_id = order_id(world);
    let handed = hand_over(world, order_id).await;
    assert_eq!(text(&handed, "status"), "fulfilled", "the answer to the hand-over: {handed:#}");
}

#[when("the customer cancels the order")]
async fn customer_cancels(world: &mut World) {
    let order_id = order_id(world);
    let api = world.api().await;
    let answer = api.post_empty(&format!("/orders/{order_id}/cancel")).await.expect(StatusCode::OK, "cancelling");
    assert!(["cancelling", "cancelled"].contains(&text(&answer, "status")), "the answer to the cancel: {answer:#}");
}

#[then(expr = "the order ends {word}")]
async fn order_ends(world: &mut World, expected: String) {
    let order_id = order_id(world);
    let api = world.api().await;
    let path = format!("/orders/{order_id}");
    // Its saga closed: the store has recorded where the goods went, not only the picker.
    let saga = settle(
        SAGA_ENDS,
        &format!("the order's saga to end {expected}"),
        || api.saga(order_id),
        |saga| saga["closed_at"].is_string() || saga["awaits"] == "operator",
    )
    .await;
    let seen = api.get(&path).await.expect(StatusCode::OK, "reading the order");
    assert_eq!(text(&seen, "status"), expected, "the order: {seen:#}; its saga: {saga:#}");
    assert_eq!(text(&saga, "kind"), "order_fulfilment");
}

#[then("handing the order over is refused")]
async fn hand_over_refused(world: &mut World) {
    let order_id = order_id(world);
    let api = world.api().await;
    api.post_empty(&format!("/orders/{order_id}/fulfil")).await.expect(StatusCode::CONFLICT, "handing it over");
    assert_ne!(text(&order(world, order_id).await, "status"), "fulfilled");
}

/// What the payment provider holds for the order: (status, amount in cents).
async fn payment(world: &mut World) -> (String, i64) {
    let order_id = order_id(world);
    let pool = world.pool().await;
    sqlx::query_as("SELECT status, amount_cents FROM payment WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&pool)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the payment provider never heard of order {order_id}"))
}

async fn price(world: &mut World, quantity: i64, product: &str) -> i64 {
    let product_id = world.product(product);
    let product = world.api().await.get(&format!("/products/{product_id}")).await.expect(StatusCode::OK, "a product");
    quantity * int(&product, "price_cents")
}

#[then(expr = "the payment provider kept the price of {int} {string} for it")]
async fn kept(world: &mut World, quantity: i64, product: String) {
    let price = price(world, quantity, &product).await;
    assert_eq!(payment(world).await, ("charged".to_owned(), price));
}

#[then(expr = "the payment provider refunded the price of {int} {string} for it")]
async fn refunded(world: &mut World, quantity: i64, product: String) {
    let price = price(world, quantity, &product).await;
    assert_eq!(payment(world).await, ("refunded".to_owned(), price));
}

#[then("the payment provider kept nothing for it")]
async fn kept_nothing(world: &mut World) {
    let (status, _) = payment(world).await;
    assert!(["declined", "voided", "refunded"].contains(&status.as_str()), "the payment is {status}");
}
