//! The load: a small shop network stocked through the API, and clients placing, fulfilling and
//! cancelling orders over HTTP while the faults happen.
//!
//! The data is shaped so that most orders leave a product low and start a replenishment: store
//! stock is small and the reorder threshold high. The warehouse holds about half of what the
//! stores will ask for, so it runs out mid-run and later sagas are rejected (compensated); the
//! stores refuse a share of deliveries, so some sagas unwind after a dispatch too.
//!
//! Clients behave as a careful client app must when the server may die mid-request: every order
//! carries an `Idempotency-Key`, and a request whose outcome is unknown (connection lost, timeout,
//! 5xx) is sent again, to the next API instance, until it gets an answer. Each client records
//! what it was told, so the checks can hold the database to it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{
    http::{Answer, Client},
    kinds::KINDS,
};

/// How long one request may go unanswered across retries: longer than any outage the suite
/// causes, so a client only gives up on a system that does not recover.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// The shape of the shop network and of the load.
#[derive(Clone, Debug)]
pub struct Plan {
    pub orders: usize,
    pub clients: usize,
    pub stores: usize,
    pub products: usize,
    pub store_on_hand: i64,
    pub reorder_threshold: i64,
    pub target_level: i64,
    pub warehouse_on_hand: i64,
}

impl Plan {
    /// `FAULT_ORDERS` (default 1,200) orders from 16 clients over 10 stores × 6 products.
    pub fn standard() -> Self {
        let orders = std::env::var("FAULT_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_200);
        Self {
            orders,
            clients: 16,
            stores: 10,
            products: 6,
            store_on_hand: 8,
            reorder_threshold: 4,
            target_level: 12,
            // About half of the demand an order stream of this size makes (an order takes 2.4
            // units on average), so the warehouse runs low in the second half of the run.
            warehouse_on_hand: (orders as i64 * 12 / 10 / 6).max(20),
        }
    }
}

/// The shop network as the API created it.
#[derive(Clone, Debug)]
pub struct Shop {
    pub stores: Vec<Uuid>,
    pub products: Vec<Uuid>,
    /// Units of each product the setup put into the system: every store's and the warehouse's
    /// opening stock.
    pub opening_stock: i64,
}

/// What a client was finally told about one order.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// 409: nothing was reserved.
    Refused {
        key: String,
    },
    Accepted(Accepted),
}

#[derive(Clone, Debug)]
pub struct Accepted {
    pub key: String,
    pub id: Uuid,
    pub store: Uuid,
    pub items: Vec<(Uuid, i64)>,
    /// How the order must end, from what its client was told: `fulfilled` when the picker's
    /// hand-over was accepted; `cancelled` otherwise (cancelled by the client, declined, not
    /// pickable, or never picked within the pickup window).
    pub status: &'static str,
}

/// Requests that had to be sent again, by reason (`503`, `connection refused`, …).
pub type Retries = BTreeMap<String, usize>;

pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub retries: Retries,
}

/// A running load; [`Load::progress`] counts the orders settled so far.
pub struct Load {
    pub total: usize,
    progress: Arc<AtomicUsize>,
    clients: JoinSet<Vec<Outcome>>,
    /// Outcomes of the clients already done.
    finished: Vec<Outcome>,
    retries: Arc<Mutex<Retries>>,
}

impl Load {
    pub fn progress(&self) -> usize {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits until `fraction` of the orders are settled: the moment to inject a fault. A client
    /// that panicked (an unexpected answer, or no answer for too long) fails the test at once.
    pub async fn reached(&mut self, fraction: f64) {
        let goal = (self.total as f64 * fraction) as usize;
        while self.progress() < goal {
            while let Some(client) = self.clients.try_join_next() {
                self.finished.extend(client.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic())));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for every client to finish.
    pub async fn finish(mut self) -> Report {
        let mut outcomes = std::mem::take(&mut self.finished);
        while let Some(client) = self.clients.join_next().await {
            outcomes.extend(client.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic())));
        }
        assert_eq!(outcomes.len(), self.total, "every order has an outcome");
        let retries = std::mem::take(&mut *self.retries.lock().unwrap());
        Report { outcomes, retries }
    }
}

/// Sends a request until it is answered with something other than a 503 (or no answer at all).
async fn answered(
    client: &mut Client,
    retries: &Mutex<Retries>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(25);
    loop {
        let why = match client.send(method, path, headers, body).await {
            Ok(answer) if answer.status < 500 => return answer,
            // A fault in a dependency is a 503 to retry; any other 5xx is a bug in the service.
            Ok(answer) if answer.status != 503 => {
                panic!("{method} {path} answered {} during a fault: {}", answer.status, answer.body)
            }
            Ok(answer) => answer.status.to_string(),
            Err(error) => error.kind().to_string(),
        };
        *retries.lock().unwrap().entry(why.clone()).or_default() += 1;
        assert!(started.elapsed() < ANSWER_WITHIN, "{method} {path} got no answer in {ANSWER_WITHIN:?}; last: {why}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// The picker hands order `id` over once it is paid; what the order must end as. An order that
/// is not paid (declined) or cannot be picked is being cancelled by its saga instead.
async fn hand_over(client: &mut Client, retries: &Mutex<Retries>, id: Uuid) -> &'static str {
    let started = Instant::now();
    loop {
        let order = answered(client, retries, "GET", &format!("/orders/{id}"), &[], &Value::Null).await;
        match order.body["status"].as_str() {
            Some("reserved") => {}
            Some("paid") => {
                let path = format!("/orders/{id}/fulfil");
                let answer = answered(client, retries, "POST", &path, &[], &Value::Null).await;
                if answer.status == 200 {
                    assert_eq!(answer.body["status"], "fulfilled", "handing over order {id}");
                    return "fulfilled";
                }
                // Refused when the store could not pick it (the saga is unwinding it), or when a
                // retry finds the first tap went through.
                assert_eq!(answer.status, 409, "handing over order {id}: {}", answer.body);
            }
            Some("cancelling" | "cancelled") => return "cancelled",
            // A tap that went through, though its answer was lost (the process died): the
            // retry was told it is handed over already.
            Some("fulfilled") => return "fulfilled",
            other => panic!("order {id} is {other:?} while waiting to hand it over: {}", order.body),
        }
        assert!(started.elapsed() < ANSWER_WITHIN, "order {id} was not paid within {ANSWER_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn expect_status(answer: &Answer, status: u16, what: &str) -> Uuid {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    answer.body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no id in {}", answer.body))
}

/// The setup's client of the API: it retries what a fault left unanswered.
pub struct Setup {
    client: Client,
    retries: Mutex<Retries>,
}

impl Setup {
    /// Sends one request until it is answered (`body` unless it is `Null`).
    pub async fn send(&mut self, method: &str, path: &str, body: &Value) -> Answer {
        answered(&mut self.client, &self.retries, method, path, &[], body).await
    }
}

/// Creates the stores, products and stock of `plan` through the API, then lets each saga kind
/// prepare what it needs (`faults/kinds/`).
pub async fn stock_shop(api: &[SocketAddr], plan: &Plan, run: &str) -> Shop {
    let mut setup = Setup { client: Client::new(api.to_vec(), 0), retries: Mutex::default() };
    let mut products = Vec::with_capacity(plan.products);
    for p in 0..plan.products {
        let body = json!({"sku": format!("{run}-{p}"), "name": format!("product {p}")});
        let product = expect_status(&setup.send("POST", "/products", &body).await, 201, "creating a product");
        let stock = json!({"on_hand": plan.warehouse_on_hand});
        let answer = setup.send("PUT", &format!("/warehouse/stock/{product}"), &stock).await;
        assert_eq!(answer.status, 200, "setting warehouse stock: {}", answer.body);
        products.push(product);
    }
    let mut stores = Vec::with_capacity(plan.stores);
    for s in 0..plan.stores {
        let body = json!({"name": format!("store {s}"), "service_area": "fault suite"});
        let store = expect_status(&setup.send("POST", "/stores", &body).await, 201, "creating a store");
        for product in &products {
            let levels = json!({
                "on_hand": plan.store_on_hand,
                "reorder_threshold": plan.reorder_threshold,
                "target_level": plan.target_level,
            });
            let path = format!("/stores/{store}/inventory/{product}");
            let answer = setup.send("PUT", &path, &levels).await;
            assert_eq!(answer.status, 200, "setting store stock: {}", answer.body);
        }
        stores.push(store);
    }
    let opening_stock = plan.stores as i64 * plan.store_on_hand + plan.warehouse_on_hand;
    let shop = Shop { stores, products, opening_stock };
    for kind in KINDS {
        (kind.prepare)(&mut setup, plan, &shop).await;
    }
    shop
}

/// Starts `plan.clients` clients placing `plan.orders` orders between them, spread over the API
/// instances. About half of the accepted orders are handed over once paid (a sale), a sixth
/// cancelled, and the rest left for their pickup window to run out.
pub fn start(api: &[SocketAddr], shop: &Shop, plan: &Plan, run: &str) -> Load {
    let progress = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(Mutex::new(Retries::new()));
    let mut clients = JoinSet::new();
    for c in 0..plan.clients {
        let mut client = Client::new(api.to_vec(), c);
        let (progress, next, retries) = (progress.clone(), next.clone(), retries.clone());
        let (shop, total, run) = (shop.clone(), plan.orders, run.to_owned());
        let mut random = Random::new(Uuid::new_v4().as_u64_pair().0);
        clients.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return outcomes;
                }
                let key = format!("{run}-{n}");
                let store = shop.stores[random.below(shop.stores.len())];
                let mut items = vec![(shop.products[random.below(shop.products.len())], 1 + random.below(3) as i64)];
                if random.below(5) == 0 {
                    let other = shop.products[random.below(shop.products.len())];
                    if other != items[0].0 {
                        items.push((other, 1 + random.below(3) as i64));
                    }
                }
                let body = json!({
                    "store_id": store,
                    "items": items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
                });
                let answer =
                    answered(&mut client, &retries, "POST", "/orders", &[("idempotency-key", &key)], &body).await;
                let outcome = match answer.status {
                    409 => {
                        assert!(answer.body["short_items"].is_array(), "a 409 that is not a shortage: {}", answer.body);
                        Outcome::Refused { key }
                    }
                    _ => {
                        let id = expect_status(&answer, 201, "placing an order");
                        let status = match random.below(6) {
                            0..=2 => hand_over(&mut client, &retries, id).await,
                            3 => {
                                let path = format!("/orders/{id}/cancel");
                                let answer = answered(&mut client, &retries, "POST", &path, &[], &Value::Null).await;
                                assert_eq!(answer.status, 200, "cancelling order {id}: {}", answer.body);
                                let status = &answer.body["status"];
                                assert!(
                                    status == "cancelling" || status == "cancelled",
                                    "cancelled order {id}: {status}"
                                );
                                "cancelled"
                            }
                            // Left for the pickup window to run out.
                            _ => "cancelled",
                        };
                        Outcome::Accepted(Accepted { key, id, store, items, status })
                    }
                };
                outcomes.push(outcome);
                progress.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Load { total: plan.orders, progress, clients, finished: Vec::new(), retries }
}

/// SplitMix64: enough randomness to vary the load, without a dependency.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A fraction in `low..high`.
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
