//! Replenishment sagas: the refills of a store from the warehouse, and their timelines.

use cucumber::then;
use serde_json::Value;

use super::{SAGA_ENDS, int, settle, text};
use crate::World;

const TERMINAL: [&str; 4] = ["received", "compensated", "failed", "resolved"];

fn is_open(saga: &Value) -> bool {
    !TERMINAL.contains(&text(saga, "state"))
}

/// The states a saga went through, in order: the `to` of each applied transition, a state
/// entered again (a resent command leaves the saga where it was) counted once.
fn states_passed(saga: &Value) -> Vec<String> {
    let mut states: Vec<String> = Vec::new();
    for transition in saga["transitions"].as_array().expect("a saga comes with its timeline") {
        if transition["applied"] != true {
            continue;
        }
        let to = text(transition, "to");
        if states.last().is_none_or(|last| last != to) {
            states.push(to.to_owned());
        }
    }
    states
}

/// Movements of the followed saga's product that it caused, with the given reason.
async fn saga_movements(world: &mut World, reason: Option<&str>) -> Vec<Value> {
    let saga_id = world.saga().to_string();
    let api = world.api().await;
    let saga = api.saga(world.saga()).await;
    let product_id = super::id(&saga["data"], "product_id");
    api.movements(product_id)
        .await
        .into_iter()
        .filter(|m| m["reference"] == saga_id.as_str() && reason.is_none_or(|r| m["reason"] == r))
        .collect()
}

#[then(expr = "a replenishment of {string} for {string} is started")]
async fn replenishment_started(world: &mut World, product: String, store: String) {
    let (store_id, product_id) = (world.store(&store), world.product(&product));
    let api = world.api().await;
    // The low-stock rule runs in the order's own transaction: the saga is there at once.
    let sagas = api.sagas_for("replenishment", store_id, product_id).await;
    let [saga] = sagas.as_slice() else {
        panic!("one replenishment of {product} for {store} was expected, not {}: {sagas:#?}", sagas.len());
    };
    assert_eq!(text(saga, "kind"), "replenishment");
    world.saga = Some(super::id(saga, "id"));
}

#[then(expr = "exactly one replenishment of {string} for {string} is open")]
async fn exactly_one_open(world: &mut World, product: String, store: String) {
    let (store_id, product_id) = (world.store(&store), world.product(&product));
    let api = world.api().await;
    let sagas = api.sagas_for("replenishment", store_id, product_id).await;
    let open: Vec<&Value> = sagas.iter().filter(|s| is_open(s)).collect();
    let states: Vec<&str> = sagas.iter().map(|s| text(s, "state")).collect();
    assert_eq!(open.len(), 1, "open replenishments of {product} for {store}; all of them: {states:?}");
    assert_eq!(sagas.len(), 1, "replenishments of {product} for {store}, open or not: {states:?}");
    world.saga = Some(super::id(open[0], "id"));
}

#[then(expr = "the replenishment is waiting for the warehouse")]
async fn waiting_for_warehouse(world: &mut World) {
    let saga_id = world.saga();
    let api = world.api().await;
    let saga = api.saga(saga_id).await;
    assert_eq!(text(&saga, "state"), "requested", "the replenishment: {saga:#}");
}

#[then(expr = "the replenishment ends {word}")]
async fn replenishment_ends(world: &mut World, expected: String) {
    assert!(TERMINAL.contains(&expected.as_str()), "{expected:?} is not a state a replenishment ends in");
    let saga_id = world.saga();
    let api = world.api().await;
    let saga =
        settle(SAGA_ENDS, &format!("replenishment {saga_id} to end"), || api.saga(saga_id), |saga| !is_open(saga))
            .await;
    assert_eq!(
        text(&saga, "state"),
        expected,
        "the replenishment did not end {expected} (last error: {}); its timeline: {:#}",
        saga["last_error"],
        saga["transitions"]
    );
}

#[then(regex = r"^the reason given is that (.+)$")]
async fn reason_given(world: &mut World, reason: String) {
    let saga_id = world.saga();
    let saga = world.api().await.saga(saga_id).await;
    let last_error = saga["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains(&reason), "the replenishment's reason is {last_error:?}, not {reason:?}");
}

#[then("the replenishment reports no error")]
async fn reports_no_error(world: &mut World) {
    let saga_id = world.saga();
    let saga = world.api().await.saga(saga_id).await;
    assert_eq!(saga["last_error"], Value::Null, "a finished replenishment shows an error");
}

#[then(regex = r"^its timeline reads: (.+)$")]
async fn timeline_reads(world: &mut World, expected: String) {
    let expected: Vec<String> = expected.split(',').map(|s| s.trim().to_owned()).collect();
    let saga_id = world.saga();
    let saga = world.api().await.saga(saga_id).await;
    assert_eq!(states_passed(&saga), expected, "the timeline: {:#}", saga["transitions"]);
}

#[then("its timeline shows that the request was sent again")]
async fn timeline_shows_resend(world: &mut World) {
    let saga_id = world.saga();
    let saga = world.api().await.saga(saga_id).await;
    let transitions = saga["transitions"].as_array().expect("a saga comes with its timeline");
    assert!(
        transitions.iter().any(|t| t["event"] == "CommandResent"),
        "no command was resent: {:#}",
        saga["transitions"]
    );
}

#[then(expr = "{int} {string} were shipped to {string}")]
async fn quantity_shipped(world: &mut World, quantity: i64, product: String, store: String) {
    let (store_id, product_id) = (world.store(&store), world.product(&product));
    let saga_id = world.saga();
    let saga = world.api().await.saga(saga_id).await;
    let data = &saga["data"];
    assert_eq!((super::id(data, "store_id"), super::id(data, "product_id")), (store_id, product_id));
    assert_eq!(int(data, "quantity_shipped"), quantity, "the replenishment: {data:#}");
}

#[then("the warehouse shipped it exactly once")]
async fn shipped_once(world: &mut World) {
    let dispatched = saga_movements(world, Some("shipment_dispatched")).await;
    assert_eq!(dispatched.len(), 1, "the warehouse's dispatches for this replenishment: {dispatched:#?}");
    let saga = world.api().await.saga(world.saga()).await;
    assert_eq!(int(&dispatched[0], "on_hand_delta"), -int(&saga["data"], "quantity_shipped"));
    // The warehouse is no store: its movements leave the field out rather than send a null.
    assert!(dispatched[0].get("store_id").is_none(), "a warehouse movement names a store: {dispatched:#?}");
}

#[then("the store took it in exactly once")]
async fn received_once(world: &mut World) {
    let received = saga_movements(world, Some("replenishment_received")).await;
    assert_eq!(received.len(), 1, "the store's receipts for this replenishment: {received:#?}");
    let saga = world.api().await.saga(world.saga()).await;
    assert_eq!(int(&received[0], "on_hand_delta"), int(&saga["data"], "quantity_shipped"));
    assert_eq!(super::id(&received[0], "store_id"), super::id(&saga["data"], "store_id"));
}

#[then("no stock moved for the replenishment")]
async fn no_stock_moved(world: &mut World) {
    let moved = saga_movements(world, None).await;
    assert!(moved.is_empty(), "stock moved for a replenishment that shipped nothing: {moved:#?}");
}

#[then(expr = "a new replenishment of {string} for {string} is started")]
async fn new_replenishment_started(world: &mut World, product: String, store: String) {
    let (store_id, product_id) = (world.store(&store), world.product(&product));
    let api = world.api().await;
    // Oldest first: the first is the one an earlier step followed.
    let sagas = api.sagas_for("replenishment", store_id, product_id).await;
    let fresh: Vec<&Value> = sagas.iter().skip(1).collect();
    let [saga] = fresh.as_slice() else {
        panic!("one new replenishment of {product} for {store} was expected, not {}: {sagas:#?}", fresh.len());
    };
    world.saga = Some(super::id(saga, "id"));
}
