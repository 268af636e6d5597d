//! Customers' orders.

use std::time::Duration;

use cucumber::{gherkin::Step, then, when};
use poem::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use super::{Answer, OrderRequest, SAGA_ENDS, id, int};
use crate::{World, support::eventually};

async fn place(world: &mut World, request: OrderRequest) {
    let api = world.api().await;
    let answer = api.order(&request).await;
    world.last_request = Some(request);
    world.answers.push(answer);
}

fn last_answer(world: &World) -> &Answer {
    world.answers.last().expect("an earlier step placed an order")
}

/// The products an answer names as short.
fn short_products(answer: &Answer) -> Vec<Uuid> {
    answer.body["short_items"]
        .as_array()
        .unwrap_or_else(|| panic!("a refusal lists the short items: {:#}", answer.body))
        .iter()
        .map(|item| id(item, "product_id"))
        .collect()
}

fn is_refused_as_short(answer: &Answer) -> bool {
    answer.status == StatusCode::CONFLICT && answer.body["short_items"].is_array()
}

#[when(expr = "a customer orders {int} {string} from {string}")]
async fn customer_orders(world: &mut World, quantity: i64, product: String, store: String) {
    let request = OrderRequest {
        store_id: world.store(&store),
        items: vec![(world.product(&product), quantity)],
        idempotency_key: None,
    };
    place(world, request).await;
}

#[when(expr = "a customer orders {int} {string} from {string} with the request reference {string}")]
async fn customer_orders_with_key(world: &mut World, quantity: i64, product: String, store: String, key: String) {
    let request = OrderRequest {
        store_id: world.store(&store),
        items: vec![(world.product(&product), quantity)],
        idempotency_key: Some(key),
    };
    place(world, request).await;
}

#[when("the customer's app sends that order again with the same request reference")]
async fn order_sent_again(world: &mut World) {
    let request = world.last_request.clone().expect("an earlier step placed an order");
    assert!(request.idempotency_key.is_some(), "the first order was sent with a request reference");
    place(world, request).await;
}

#[when(expr = "a customer orders from {string}:")]
async fn customer_orders_basket(world: &mut World, store: String, step: &Step) {
    let table = step.table.as_ref().expect("the basket is given as a table of product and quantity");
    let items = table
        .rows
        .iter()
        .skip(1)
        .map(|row| {
            let quantity = row[1].trim().parse().unwrap_or_else(|_| panic!("{:?} is not a quantity", row[1]));
            (world.product(row[0].trim()), quantity)
        })
        .collect();
    let request = OrderRequest { store_id: world.store(&store), items, idempotency_key: None };
    place(world, request).await;
}

#[when(expr = "{int} customers each order {int} {string} from {string} at the same moment")]
async fn customers_order_at_once(world: &mut World, customers: usize, quantity: i64, product: String, store: String) {
    let request = OrderRequest {
        store_id: world.store(&store),
        items: vec![(world.product(&product), quantity)],
        idempotency_key: None,
    };
    let api = world.api().await;
    // Each order on its own task, so that they really run side by side.
    let orders: Vec<_> = (0..customers)
        .map(|_| {
            let (api, request) = (api.clone(), request.clone());
            tokio::spawn(async move { api.order(&request).await })
        })
        .collect();
    for order in orders {
        world.answers.push(order.await.expect("an order task does not panic"));
    }
    world.last_request = Some(request);
}

#[then("the order is accepted")]
async fn order_accepted(world: &mut World) {
    let answer = last_answer(world);
    assert_eq!(answer.status, StatusCode::CREATED, "the order was refused: {:#}", answer.body);
    assert_eq!(answer.body["status"], "reserved", "{:#}", answer.body);
}

#[then(expr = "the order is refused because {string} is short")]
async fn order_refused(world: &mut World, product: String) {
    let product_id = world.product(&product);
    let answer = last_answer(world);
    assert!(
        is_refused_as_short(answer),
        "the order was not refused for short stock: {} {:#}",
        answer.status,
        answer.body
    );
    let short = short_products(answer);
    assert!(
        short.contains(&product_id),
        "{product} is not among the short items: {:?}",
        short.iter().map(|p| world.product_name(*p)).collect::<Vec<_>>()
    );
}

#[then(expr = "{string} is not named as short")]
async fn not_named_short(world: &mut World, product: String) {
    let product_id = world.product(&product);
    let short = short_products(last_answer(world));
    assert!(!short.contains(&product_id), "{product} was named as short although the store has enough");
}

#[then(expr = "{int} orders are accepted and {int} are refused for lack of {string}")]
async fn orders_counted(world: &mut World, accepted: usize, refused: usize, product: String) {
    let product_id = world.product(&product);
    let created = world.answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let short: Vec<&Answer> = world.answers.iter().filter(|a| is_refused_as_short(a)).collect();
    let other: Vec<String> = world
        .answers
        .iter()
        .filter(|a| a.status != StatusCode::CREATED && !is_refused_as_short(a))
        .map(|a| format!("{} {}", a.status, a.body))
        .collect();
    assert!(other.is_empty(), "some orders got neither an acceptance nor a refusal for short stock: {other:?}");
    assert_eq!((created, short.len()), (accepted, refused), "(accepted, refused as short)");
    for answer in short {
        assert_eq!(short_products(answer), vec![product_id], "a refusal names {product}: {:#}", answer.body);
        let item = &answer.body["short_items"][0];
        assert!(int(item, "available") < int(item, "requested"), "a refusal says what was available: {item:#}");
    }
}

#[then("both answers are the same order")]
async fn same_order(world: &mut World) {
    let [.., first, second] = world.answers.as_slice() else {
        panic!("two orders were sent, not {}", world.answers.len());
    };
    assert_eq!(first.status, StatusCode::CREATED, "{:#}", first.body);
    assert_eq!(second.status, StatusCode::CREATED, "{:#}", second.body);
    assert_eq!(id(&first.body, "id"), id(&second.body, "id"), "the retry created another order");
    assert_eq!(first.body["items"], second.body["items"]);
}

#[then("the second answer says it repeats the first")]
async fn second_is_replay(world: &mut World) {
    let [.., first, second] = world.answers.as_slice() else {
        panic!("two orders were sent, not {}", world.answers.len());
    };
    assert_eq!(first.header("Idempotency-Replayed"), None, "the first answer is not a replay");
    assert_eq!(second.header("Idempotency-Replayed"), Some("true"), "the retry's answer headers: {:?}", second.headers);
}

#[when("the customer collects the order")]
async fn order_collected(world: &mut World) {
    let order_id = id(&last_answer(world).body, "id");
    hand_over(world, order_id).await;
    // Collected once the store has recorded it: the goods are off the shelf, and the low-stock
    // rule has run, with the saga's last transition.
    let api = world.api().await;
    super::settle(
        SAGA_ENDS,
        "the store to record the hand-over",
        || api.saga(order_id),
        |saga| saga["closed_at"].is_string(),
    )
    .await;
}

/// The picker hands the order over, once its payment is approved (until then the answer is 409).
pub async fn hand_over(world: &mut World, order_id: Uuid) -> Value {
    let api = world.api().await;
    let path = format!("/orders/{order_id}/fulfil");
    eventually(Duration::from_secs(10), "the order to be paid and handed over", || async {
        let answer = api.post_empty(&path).await;
        (answer.status == StatusCode::OK).then_some(answer.body)
    })
    .await
}
