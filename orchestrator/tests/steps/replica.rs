//! Steps for reads served by the read replica `scripts/test` runs, and for its failover.

use cucumber::{given, then, when};
use poem::http::StatusCode;
use serde_json::json;

use crate::World;

#[given("reads that may lag are served by the read replica")]
async fn served_by_the_replica(world: &mut World) {
    world.configure("reads that may lag are served by the read replica").use_replica();
}

#[given("the read replica does not answer")]
async fn replica_silent(world: &mut World) {
    // Nothing listens on the discard port.
    let silent = "postgres://postgres@127.0.0.1:9/none?connect_timeout=1";
    world.configure("the read replica does not answer").config.vars.set("DATABASE_REPLICA_URL", silent);
}

#[when(expr = "the operator creates the dark store {string}")]
async fn creates_store(world: &mut World, name: String) {
    let answer =
        world.api().await.post("/stores", &json!({"name": name, "service_area": "the river district"}), &[]).await;
    world.stores.insert(name, crate::steps::id(&answer.clone().expect(StatusCode::CREATED, "creating a store"), "id"));
    world.last_answer = Some(answer);
}

#[then("the write answers with a consistency token")]
async fn answers_with_token(world: &mut World) {
    let answer = world.last_answer.as_ref().expect("a write was made");
    let token = answer.header("consistency-token").expect("a write answers with Consistency-Token");
    assert!(token.parse::<orchestrator::http::consistency::Token>().is_ok(), "{token:?} is a consistency token");
}

async fn lists(world: &mut World, key: Option<&str>, token: Option<&str>, name: &str) -> bool {
    let api = match key {
        Some(holder) => world.api_as(holder).await,
        None => world.api().await,
    };
    let headers: Vec<(&str, &str)> = token.map(|t| ("consistency-token", t)).into_iter().collect();
    let page = api.get_with("/stores?limit=500", &headers).await.expect(StatusCode::OK, "listing stores");
    page["items"].as_array().is_some_and(|items| items.iter().any(|store| store["name"] == name))
}

#[then(expr = "the operator's list of stores shows {string}")]
async fn operator_lists(world: &mut World, name: String) {
    assert!(lists(world, None, None, &name).await, "the store's creator lists the stores without {name:?}");
}

#[then(expr = "{string} holding a client key sees {string} in the list of stores when it sends the operator's token")]
async fn other_key_with_token(world: &mut World, holder: String, name: String) {
    let token = world.last_answer.as_ref().and_then(|a| a.header("consistency-token")).map(str::to_owned);
    let token = token.expect("the write answered with a token");
    crate::steps::access::make_key(world, &holder, "client").await;
    assert!(lists(world, Some(&holder), Some(&token), &name).await, "{holder} sent the token, yet lists no {name:?}");
}

#[then("the service is ready, with the replica reported down")]
async fn ready_with_replica_down(world: &mut World) {
    let health = world.api().await.get("/health/ready").await.expect(StatusCode::OK, "reading readiness");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["checks"]["replica"]["status"], "down", "{health}");
}
