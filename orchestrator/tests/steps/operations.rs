//! What operators see and do: stuck sagas, retries, resolutions, dead letters.

use std::time::Duration;

use cucumber::{given, then, when};
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use orchestrator::app::Roles;
use platform::messaging::{Exchange, connect};
use poem::http::StatusCode;
use serde_json::{Value, json};

use super::{READ_SETTLES, settle, text};
use crate::World;

#[given("the warehouse does not answer")]
async fn warehouse_silent(world: &mut World) {
    // Unlike "the delivery workers are stopped", the tests' short deadlines stay: the saga is
    // meant to give up, unwind, and fail within seconds.
    world.set_roles("the warehouse does not answer", Roles::serve());
}

#[when("the delivery workers come back")]
async fn workers_back(world: &mut World) {
    world.ensure_started().await;
    world.restart(crate::support::everything()).await;
}

async fn stuck_ids(world: &mut World) -> Vec<String> {
    let page = world.api().await.get("/sagas?stuck=true&limit=500").await.expect(StatusCode::OK, "listing stuck sagas");
    page["items"].as_array().unwrap().iter().map(|s| text(s, "id").to_owned()).collect()
}

#[then("it is listed among the stuck sagas")]
async fn listed_stuck(world: &mut World) {
    let id = world.saga().to_string();
    let api = world.api().await;
    let stuck = settle(
        READ_SETTLES,
        "the saga listed as stuck",
        || async {
            let page = api.get("/sagas?stuck=true&limit=500").await.expect(StatusCode::OK, "listing stuck sagas");
            page["items"].as_array().unwrap().iter().map(|s| text(s, "id").to_owned()).collect::<Vec<_>>()
        },
        |ids| ids.contains(&id),
    )
    .await;
    assert!(stuck.contains(&id), "saga {id} is not among the stuck sagas {stuck:?}");
}

#[then("it is no longer listed among the stuck sagas")]
async fn not_listed_stuck(world: &mut World) {
    let id = world.saga().to_string();
    assert!(!stuck_ids(world).await.contains(&id), "saga {id} is still listed as stuck");
}

/// The API as operator `name`, with a key of their own made on first use.
async fn operator(world: &mut World, name: &str) -> super::Api {
    if !world.keys.contains_key(name) {
        super::access::make_key(world, name, "operator").await;
    }
    world.api_as(name).await
}

#[when(expr = "operator {string} retries the replenishment because {string}")]
async fn operator_retries(world: &mut World, name: String, reason: String) {
    let path = format!("/sagas/{}/retry", world.saga());
    let answer = operator(world, &name).await.post(&path, &json!({"reason": reason}), &[]).await;
    answer.expect(StatusCode::OK, "retrying the replenishment");
}

#[when(expr = "operator {string} resolves the replenishment noting {string}")]
async fn operator_resolves(world: &mut World, name: String, note: String) {
    let path = format!("/sagas/{}/resolve", world.saga());
    let answer = operator(world, &name).await.post(&path, &json!({"note": note}), &[]).await;
    answer.expect(StatusCode::OK, "resolving the replenishment");
}

#[when(expr = "operator {string} compensates the replenishment because {string}")]
async fn operator_compensates(world: &mut World, name: String, reason: String) {
    let path = format!("/sagas/{}/compensate", world.saga());
    let answer = operator(world, &name).await.post(&path, &json!({"reason": reason}), &[]).await;
    answer.expect(StatusCode::OK, "compensating the replenishment");
}

#[then(expr = "a retry by {string} is refused because the replenishment is {word}")]
async fn retry_refused(world: &mut World, name: String, state: String) {
    let path = format!("/sagas/{}/retry", world.saga());
    let answer = operator(world, &name).await.post(&path, &json!({"reason": "again"}), &[]).await;
    let problem = answer.expect(StatusCode::CONFLICT, "retrying a finished replenishment");
    assert!(text(&problem, "detail").contains(&state), "the refusal does not say why: {problem:#}");
}

#[then(expr = "its timeline shows {string} by {string}")]
async fn timeline_shows_action(world: &mut World, event: String, operator: String) {
    let saga = world.api().await.saga(world.saga()).await;
    let actor = format!("operator:{operator}");
    assert!(
        saga["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["event"] == event.as_str() && t["actor"] == actor.as_str()),
        "no {event} by {actor} in the timeline: {:#}",
        saga["transitions"]
    );
}

#[when("a malformed command reaches the warehouse")]
async fn malformed_command(world: &mut World) {
    world.ensure_started().await;
    let config = &world.env().config;
    let topology = sagas::registry().topology(config.namespace.clone());
    let connection = connect(&config.amqp_url, "scenario").await.expect("the broker is reachable");
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let properties = BasicProperties::default().with_message_id(uuid::Uuid::new_v4().to_string().into());
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    channel
        .basic_publish(
            topology.exchange(Exchange::Commands).into(),
            "warehouse".into(),
            options,
            b"{\"version\": 1, oops",
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    platform::messaging::close(&connection, "done").await;
}

async fn dead_letters(world: &mut World) -> Vec<Value> {
    let page = world.api().await.get("/dead-letters?limit=500").await.expect(StatusCode::OK, "listing dead letters");
    page["items"].as_array().unwrap().clone()
}

fn queue_name(world: &World, queue: &str) -> String {
    let topology = sagas::registry().topology(world.env().config.namespace.clone());
    let queue = topology.parse_queue(queue).unwrap_or_else(|| panic!("{queue:?} is not a queue"));
    topology.queue(queue)
}

#[then(expr = "it is kept as a dead letter of {string} saying it is {string}")]
async fn kept_as_dead_letter(world: &mut World, queue: String, reason: String) {
    let queue = queue_name(world, &queue);
    let api = world.api().await;
    let letters = settle(
        READ_SETTLES,
        "a dead letter",
        || async {
            let page = api.get("/dead-letters").await.expect(StatusCode::OK, "listing dead letters");
            page["items"].as_array().unwrap().clone()
        },
        |letters| !letters.is_empty(),
    )
    .await;
    let [letter] = letters.as_slice() else { panic!("one dead letter was expected: {letters:#?}") };
    assert_eq!(letter["queue"], queue.as_str(), "{letter:#}");
    assert!(text(letter, "reason").contains(&reason), "{letter:#}");
    assert!(letter["replayed_at"].is_null());
    world.dead_letter = letter["id"].as_i64();
}

#[when("an operator replays the dead letter")]
async fn replay(world: &mut World) {
    let path = format!("/dead-letters/{}/replay", world.dead_letter.expect("a dead letter was found"));
    let letter = world.api().await.post_empty(&path).await.expect(StatusCode::OK, "replaying");
    assert!(letter["replayed_at"].is_string(), "{letter:#}");
}

#[then("replaying it again is refused")]
async fn replay_refused(world: &mut World) {
    let path = format!("/dead-letters/{}/replay", world.dead_letter.expect("a dead letter was found"));
    world.api().await.post_empty(&path).await.expect(StatusCode::CONFLICT, "replaying twice");
}

#[then(expr = "the message was delivered to {string} again and is kept as a new dead letter")]
async fn delivered_again(world: &mut World, queue: String) {
    let queue = queue_name(world, &queue);
    let first = world.dead_letter.expect("a dead letter was found");
    let api = world.api().await;
    let letters = settle(
        Duration::from_secs(10),
        "the replayed message back",
        || async {
            let page = api.get("/dead-letters").await.expect(StatusCode::OK, "listing dead letters");
            page["items"].as_array().unwrap().clone()
        },
        |letters| letters.len() == 2,
    )
    .await;
    let original = letters.iter().find(|l| l["id"] == first).expect("the replayed dead letter is kept");
    let again = letters.iter().find(|l| l["id"] != first).unwrap_or_else(|| panic!("not back: {letters:#?}"));
    assert_eq!(again["queue"], queue.as_str());
    assert_eq!(again["body"], original["body"], "a replay sends the same bytes");
    assert!(again["replayed_at"].is_null());
}

#[when("an operator deletes the dead letter")]
async fn delete(world: &mut World) {
    let path = format!("/dead-letters/{}", world.dead_letter.expect("a dead letter was found"));
    world.api().await.delete(&path).await.expect(StatusCode::NO_CONTENT, "deleting");
}

#[then("it is no longer listed among the dead letters")]
async fn gone(world: &mut World) {
    let id = world.dead_letter.expect("a dead letter was found");
    let letters = dead_letters(world).await;
    assert!(letters.iter().all(|l| l["id"] != id), "still listed: {letters:#?}");
}
