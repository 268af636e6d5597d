//! Stores, products, store inventory and the warehouse's stock.

use cucumber::{given, then, when};
use poem::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::{READ_SETTLES, id, int, settle};
use crate::World;

/// A SKU made from a product's name: "oat milk" is OAT-MILK.
fn sku(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '-' }).collect()
}

async fn create_store(world: &mut World, name: &str, area: &str) -> Uuid {
    assert!(!world.stores.contains_key(name), "the dark store {name:?} is set up twice");
    let api = world.api().await;
    let store = api
        .post("/stores", &json!({ "name": name, "service_area": area }), &[])
        .await
        .expect(StatusCode::CREATED, "opening a dark store");
    let store_id = id(&store, "id");
    world.stores.insert(name.to_owned(), store_id);
    store_id
}

/// The store named, opened with a default service area the first time it is named.
async fn store(world: &mut World, name: &str) -> Uuid {
    match world.stores.get(name) {
        Some(id) => *id,
        None => create_store(world, name, &format!("the {name} delivery area")).await,
    }
}

/// The product named, added to the catalogue the first time it is named.
pub async fn product(world: &mut World, name: &str) -> Uuid {
    if let Some(id) = world.products.get(name) {
        return *id;
    }
    let api = world.api().await;
    let product = api
        .post("/products", &json!({ "sku": sku(name), "name": name }), &[])
        .await
        .expect(StatusCode::CREATED, "adding a product to the catalogue");
    let product_id = id(&product, "id");
    world.products.insert(name.to_owned(), product_id);
    product_id
}

#[given(expr = "a dark store {string} serving {string}")]
async fn a_dark_store(world: &mut World, name: String, area: String) {
    create_store(world, &name, &area).await;
}

#[given(expr = "{string} stocks {int} {string} with a reorder level of {int} and a target level of {int}")]
async fn store_stocks(
    world: &mut World,
    store_name: String,
    on_hand: i64,
    product_name: String,
    threshold: i64,
    target: i64,
) {
    let store_id = store(world, &store_name).await;
    let product_id = product(world, &product_name).await;
    let api = world.api().await;
    let level = api
        .put(
            &format!("/stores/{store_id}/inventory/{product_id}"),
            &json!({ "on_hand": on_hand, "reorder_threshold": threshold, "target_level": target }),
        )
        .await
        .expect(StatusCode::OK, "counting a store's stock");
    assert_eq!(int(&level, "available"), on_hand, "a fresh count has nothing reserved: {level:#}");
}

#[given(expr = "the warehouse holds {int} {string}")]
async fn warehouse_holds(world: &mut World, on_hand: i64, product_name: String) {
    let product_id = product(world, &product_name).await;
    let api = world.api().await;
    api.put(&format!("/warehouse/stock/{product_id}"), &json!({ "on_hand": on_hand }))
        .await
        .expect(StatusCode::OK, "counting the warehouse's stock");
}

#[given(expr = "the warehouse has no {string}")]
async fn warehouse_has_none(world: &mut World, product_name: String) {
    warehouse_holds(world, 0, product_name).await;
}

#[then(expr = "{string} shows {int} {string} on hand, {int} reserved and {int} available")]
async fn store_shows(
    world: &mut World,
    store_name: String,
    on_hand: i64,
    product_name: String,
    reserved: i64,
    available: i64,
) {
    let (store_id, product_id) = (world.store(&store_name), world.product(&product_name));
    let api = world.api().await;
    let path = format!("/stores/{store_id}/inventory/{product_id}");
    let expected = (on_hand, reserved, available);
    let what = format!("{store_name} to show {product_name} at {expected:?} (on hand, reserved, available)");
    let seen = settle(
        READ_SETTLES,
        &what,
        || async {
            let level = api.get(&path).await.expect(StatusCode::OK, "reading a store's stock");
            (int(&level, "on_hand"), int(&level, "reserved"), int(&level, "available"))
        },
        |seen| *seen == expected,
    )
    .await;
    assert_eq!(seen, expected, "{store_name}'s {product_name} (on hand, reserved, available)");
}

#[then(expr = "the warehouse has {int} {string} left")]
async fn warehouse_has_left(world: &mut World, on_hand: i64, product_name: String) {
    let product_id = world.product(&product_name);
    let api = world.api().await;
    let path = format!("/warehouse/stock/{product_id}");
    let seen = settle(
        READ_SETTLES,
        &format!("the warehouse to hold {on_hand} {product_name}"),
        || async { int(&api.get(&path).await.expect(StatusCode::OK, "reading the warehouse's stock"), "on_hand") },
        |seen| *seen == on_hand,
    )
    .await;
    assert_eq!(seen, on_hand, "the warehouse's {product_name} on hand");
}

#[then("no stock was created, lost or oversold")]
async fn invariants_hold(world: &mut World) {
    let pool = world.pool().await;
    crate::support::assert_invariants(&pool).await;
}

#[when(expr = "the warehouse is restocked with {int} {string}")]
async fn warehouse_restocked(world: &mut World, on_hand: i64, product_name: String) {
    warehouse_holds(world, on_hand, product_name).await;
}
