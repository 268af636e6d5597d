//! Keys, roles, budgets and the audit trail, as the people who hold the keys meet them.

use std::{collections::BTreeMap, time::Duration};

use cucumber::{given, then, when};
use platform::config::Budget;
use poem::http::StatusCode;
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Answer, Api, id, text};
use crate::World;

/// What one key's holder was answered in a burst of requests.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub statuses: BTreeMap<u16, usize>,
    /// Each answer's latency, in order.
    pub latencies: Vec<Duration>,
    /// Whether every 429 carried `Retry-After`.
    pub retry_after_everywhere: bool,
    /// How long the burst lasted.
    pub elapsed: Duration,
}

impl Tally {
    fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.statuses.values().sum()
    }
}

/// Makes a key named `name` with `role`, as the deployment's admin, and keeps it in the world.
pub async fn make_key(world: &mut World, name: &str, role: &str) {
    let answer = world.api().await.post("/api-keys", &json!({"name": name, "role": role}), &[]).await;
    let key = answer.expect(StatusCode::CREATED, "making a key");
    world.keys.insert(name.to_owned(), (id(&key, "id"), text(&key, "key").to_owned()));
}

fn remember(world: &mut World, answer: Answer) {
    world.last_answer = Some(answer);
}

fn last(world: &World) -> &Answer {
    world.last_answer.as_ref().expect("an earlier step sent a request")
}

#[given(regex = r#"^"([^"]+)" holds an? (client|operator|admin) key$"#)]
async fn holds_key(world: &mut World, name: String, role: String) {
    make_key(world, &name, &role).await;
}

#[given(expr = "client keys may send {int} requests at once and {int} a second")]
async fn client_budget(world: &mut World, burst: u32, per_second: u32) {
    world.configure("client keys' budget").config.api.rate_limits.client = Budget { per_second, burst };
}

#[when(expr = "{string} asks to compensate the replenishment")]
async fn asks_to_compensate(world: &mut World, name: String) {
    let path = format!("/sagas/{}/compensate", world.saga());
    let answer =
        world.api_as(&name).await.post(&path, &json!({"reason": "the customer changed their mind"}), &[]).await;
    remember(world, answer);
}

#[then(expr = "{string} is refused because its role is {word}")]
async fn refused_for_role(world: &mut World, _name: String, role: String) {
    let problem = last(world).clone().expect(StatusCode::FORBIDDEN, "a request beyond the key's role");
    assert!(text(&problem, "detail").contains(&format!("this key's role is {role}")), "{problem:#}");
}

#[then(expr = "{string} can read the stores")]
async fn can_read(world: &mut World, name: String) {
    world.api_as(&name).await.get("/stores").await.expect(StatusCode::OK, "reading the stores");
}

#[when(expr = "the admin revokes the key of {string}")]
async fn revoke(world: &mut World, name: String) {
    let (key_id, _) = world.keys.get(&name).cloned().expect("the key was made in this scenario");
    world.api().await.delete(&format!("/api-keys/{key_id}")).await.expect(StatusCode::NO_CONTENT, "revoking a key");
}

#[then(expr = "{string} is refused as holding no valid key")]
async fn refused_as_unknown(world: &mut World, name: String) {
    let answer = world.api_as(&name).await.get("/stores").await;
    let challenge = answer.header("www-authenticate").unwrap_or_default().to_owned();
    answer.expect(StatusCode::UNAUTHORIZED, "a request with a revoked key");
    assert!(challenge.contains("invalid_token"), "WWW-Authenticate: {challenge:?}");
}

/// Sends `count` reads as `api`, `concurrency` at a time, and tallies the answers.
async fn burst(api: Api, count: usize, concurrency: usize) -> Tally {
    let started = Instant::now();
    let mut tally = Tally { retry_after_everywhere: true, ..Tally::default() };
    let mut sent = 0;
    while sent < count {
        let wave = concurrency.min(count - sent);
        let answers = futures_util::future::join_all((0..wave).map(|_| {
            let api = api.clone();
            async move {
                let began = Instant::now();
                let answer = api.get("/stores").await;
                (answer, began.elapsed())
            }
        }))
        .await;
        for (answer, latency) in answers {
            *tally.statuses.entry(answer.status.as_u16()).or_default() += 1;
            if answer.status == StatusCode::TOO_MANY_REQUESTS && answer.header("retry-after").is_none() {
                tally.retry_after_everywhere = false;
            }
            tally.latencies.push(latency);
        }
        sent += wave;
    }
    tally.elapsed = started.elapsed();
    tally
}

#[when(expr = "{string} sends {int} requests as fast as it can while {string} sends {int}, one at a time")]
async fn flood(world: &mut World, greedy: String, many: usize, calm: String, few: usize) {
    let (greedy_api, calm_api) = (world.api_as(&greedy).await, world.api_as(&calm).await);
    let (greedy_tally, calm_tally) = tokio::join!(burst(greedy_api, many, 16), burst(calm_api, few, 1));
    world.tallies.insert(greedy, greedy_tally);
    world.tallies.insert(calm, calm_tally);
}

#[then(expr = "most of {string}'s requests are refused with 429 and a Retry-After")]
async fn mostly_limited(world: &mut World, name: String) {
    let tally = &world.tallies[&name];
    assert!(tally.count(429) * 2 > tally.total(), "{name}: {:?}", tally.statuses);
    assert!(tally.retry_after_everywhere, "a 429 without Retry-After");
}

#[then(expr = "no more of {string}'s requests succeed than {int} at once and {int} a second allow")]
async fn within_budget(world: &mut World, name: String, burst: usize, per_second: usize) {
    let tally = &world.tallies[&name];
    let allowed = burst + (tally.elapsed.as_secs_f64() * per_second as f64).ceil() as usize;
    assert!(
        tally.count(200) <= allowed,
        "{name}: {} served in {:?}, budget {allowed}",
        tally.count(200),
        tally.elapsed
    );
    assert!(tally.count(200) >= burst, "{name}: its burst of {burst} is served: {:?}", tally.statuses);
}

#[then(expr = "every request of {string} succeeds")]
async fn all_served(world: &mut World, name: String) {
    let tally = &world.tallies[&name];
    assert_eq!(tally.count(200), tally.total(), "{name}: {:?}", tally.statuses);
}

#[when(expr = "{string} places an order of {int} {string} from {string} and cancels it")]
async fn order_and_cancel(world: &mut World, name: String, quantity: i64, product: String, store: String) {
    let body = json!({"store_id": world.store(&store), "items": [{"product_id": world.product(&product), "quantity": quantity}]});
    let api = world.api_as(&name).await;
    let order = api.post("/orders", &body, &[]).await.expect(StatusCode::CREATED, "placing an order");
    let order_id = id(&order, "id");
    api.post_empty(&format!("/orders/{order_id}/cancel")).await.expect(StatusCode::OK, "cancelling the order");
    world.order = Some(order_id);
}

#[then(expr = "the audit shows that {string} cancelled that order")]
async fn audit_shows_cancel(world: &mut World, name: String) {
    let order_id: Uuid = world.order.expect("an earlier step placed an order");
    let (key_id, _) = world.keys[&name].clone();
    let page = world
        .api()
        .await
        .get("/audit?route=%2Forders%2F%7Bid%7D%2Fcancel")
        .await
        .expect(StatusCode::OK, "reading the audit");
    let entries = page["items"].as_array().unwrap();
    let entry = entries
        .iter()
        .find(|e| e["ids"]["id"] == order_id.to_string())
        .unwrap_or_else(|| panic!("no audit entry for cancelling {order_id}: {page:#}"));
    assert_eq!(entry["key_name"], name.as_str());
    assert_eq!(entry["key_id"], key_id.to_string());
    assert_eq!(entry["role"], "client");
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["status"], 200);
    assert!(text(entry, "request_id").len() > 8 && text(entry, "trace_id").len() == 32, "{entry:#}");
}
