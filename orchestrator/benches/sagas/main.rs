//! End-to-end benchmark: the whole system (API, engine, every worker) on real Postgres, RabbitMQ
//! and Redis, driven over HTTP at a fixed concurrency, every step durable. Prints one JSON object.
//!
//! `cargo bench -p orchestrator --bench sagas`; knobs: BENCH_CONCURRENCY (32), BENCH_ORDERS
//! (4000), BENCH_SAGAS (2000), BENCH_STORES (20), BENCH_LIGHT (50), BENCH_RUNS (3; each figure is
//! the median).
//!
//! The data has the shape of a city's network: `BENCH_STORES` stores, each stocking its share of
//! the (store, product) pairs, so a product's warehouse row is shared by every store at once. All
//! replenishments of one product take that row's lock in turn: fewer stores per product means
//! less waiting.
//!
//! Phases, each on a fresh deployment:
//! - orders: orders that start no replenishment, `BENCH_CONCURRENCY` clients at once → orders/s.
//!   Each starts its own fulfilment saga, which takes the payment and puts the order on the pick
//!   list while the orders keep coming: that work is part of what an order costs;
//! - sagas: each order leaves its (store, product) low and so starts one replenishment. Each of
//!   `BENCH_CONCURRENCY` clients places an order and waits for its goods to arrive (the
//!   `stock.replenished` event) before the next, so that many sagas are in flight at once →
//!   sagas completed/s (first order to last `received`) and latency percentiles from the order's
//!   transaction to `received`, read from the sagas' own timestamps, and the commands resent
//!   (a sign of overload: the deadlines are the production defaults);
//! - light: one order at a time, each saga awaited before the next → latency with no queueing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_lite::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use orchestrator::app::{Application, Roles};
use platform::messaging::{Exchange, Topology, connect, relay::RelayFaults};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{TestEnv, eventually};
use tokio::sync::{Mutex, oneshot};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use uuid::Uuid;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A keep-alive HTTP/1.1 client: just enough to send JSON and read the status and body.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream: BufReader::new(stream) }
    }

    async fn send(&mut self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            support::ADMIN_KEY,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

struct Deployment {
    env: TestEnv,
    app: Application,
    addr: SocketAddr,
    pool: PgPool,
}

async fn deploy() -> Deployment {
    let mut env = TestEnv::new().await;
    env.config.saga = platform::config::Config::default().saga;
    env.config.db_max_connections = 32;
    let app = env.start(Roles::all(), RelayFaults::default()).await;
    let addr = app.addr().unwrap();
    let pool = env.pool().await;
    Deployment { env, app, addr, pool }
}

impl Deployment {
    /// `pairs` (store, product) pairs over `stores` stores, each holding `on_hand` with the given
    /// levels; the warehouse holds plenty of every product.
    async fn stock(&self, pairs: usize, stores: usize, on_hand: i64, threshold: i64, target: i64) -> Vec<(Uuid, Uuid)> {
        let mut client = Client::connect(self.addr).await;
        let stores = stores.clamp(1, pairs);
        let per_store = pairs.div_ceil(stores);
        let mut ids = Vec::with_capacity(pairs);
        let mut products = Vec::new();
        for p in 0..per_store {
            let (_, product) = client.send("POST", "/products", &json!({"sku": format!("SKU-{p}"), "name": "x"})).await;
            let id = product["id"].as_str().unwrap().to_owned();
            client.send("PUT", &format!("/warehouse/stock/{id}"), &json!({"on_hand": 1_000_000})).await;
            products.push(id);
        }
        for s in 0..stores {
            let (_, store) =
                client.send("POST", "/stores", &json!({"name": format!("S{s}"), "service_area": "x"})).await;
            let store = store["id"].as_str().unwrap().to_owned();
            for product in products.iter().take(pairs.saturating_sub(s * per_store)) {
                let levels = json!({"on_hand": on_hand, "reorder_threshold": threshold, "target_level": target});
                let (status, _) = client.send("PUT", &format!("/stores/{store}/inventory/{product}"), &levels).await;
                assert_eq!(status, 200);
                ids.push((store.parse().unwrap(), product.parse().unwrap()));
            }
        }
        ids
    }

    /// Places one order of 1 unit for each pair, `concurrency` clients at a time; returns the
    /// wall time.
    async fn order_each(&self, pairs: &[(Uuid, Uuid)], concurrency: usize) -> Duration {
        let pairs = Arc::new(pairs.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..concurrency {
            let (pairs, next, addr) = (pairs.clone(), next.clone(), self.addr);
            clients.push(tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((store, product)) = pairs.get(i) else { break };
                    let order = json!({"store_id": store, "items": [{"product_id": product, "quantity": 1}]});
                    let (status, body) = client.send("POST", "/orders", &order).await;
                    assert_eq!(status, 201, "{body}");
                }
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
        start.elapsed()
    }

    /// Places one order per pair with at most `concurrency` replenishments in flight: a client's
    /// next order waits until the goods of its last one arrived (`stock.replenished`).
    async fn replenish_each(&self, pairs: &[(Uuid, Uuid)], concurrency: usize) -> Duration {
        let connection = connect(&self.env.config.amqp_url, "bench").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), exclusive, FieldTable::default()).await.unwrap();
        let exchange = Topology::new(self.env.config.namespace.clone(), sagas::registry().participants())
            .exchange(Exchange::InventoryEvents);
        let (queue_name, key) = (queue.name().clone(), "stock.replenished");
        channel
            .queue_bind(
                queue_name.clone(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let mut events = channel.basic_consume(queue_name, "".into(), no_ack, FieldTable::default()).await.unwrap();

        // Each client waits for its own replenishment's goods before it places the next order.
        let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>> = Arc::default();
        let arrivals = {
            let (waiting, total) = (waiting.clone(), pairs.len());
            tokio::spawn(async move {
                for _ in 0..total {
                    let delivery = events.next().await.expect("the event stream stays open").unwrap();
                    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
                    let pair = format!("{}/{}", event["payload"]["store_id"], event["payload"]["product_id"]);
                    if let Some(arrived) = waiting.lock().await.remove(&pair) {
                        let _ = arrived.send(());
                    }
                }
            })
        };
        let pairs = Arc::new(pairs.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..concurrency {
            let (pairs, next, waiting, addr) = (pairs.clone(), next.clone(), waiting.clone(), self.addr);
            clients.push(tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                while let Some((store, product)) = pairs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (arrived, arrival) = oneshot::channel();
                    waiting.lock().await.insert(format!("\"{store}\"/\"{product}\""), arrived);
                    let order = json!({"store_id": store, "items": [{"product_id": product, "quantity": 1}]});
                    let (status, body) = client.send("POST", "/orders", &order).await;
                    assert_eq!(status, 201, "{body}");
                    tokio::time::timeout(Duration::from_secs(120), arrival).await.expect("the goods arrive").unwrap();
                }
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
        arrivals.await.unwrap();
        let took = start.elapsed();
        platform::messaging::close(&connection, "done").await;
        took
    }

    async fn resent(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM saga_transition WHERE event = 'CommandResent'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn received(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM saga WHERE state = 'received'").fetch_one(&self.pool).await.unwrap()
    }

    /// Saga latencies (order transaction → received), in milliseconds, sorted.
    async fn latencies(&self) -> Vec<f64> {
        let mut ms: Vec<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (closed_at - created_at))::float8 * 1000 FROM saga WHERE state = 'received'",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        ms.sort_by(f64::total_cmp);
        ms
    }

    async fn close(self) {
        self.app.stop().await;
        self.pool.close().await;
        self.env.teardown().await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[tokio::main]
async fn main() {
    let concurrency = knob("BENCH_CONCURRENCY", 32);
    let orders = knob("BENCH_ORDERS", 4000);
    let sagas = knob("BENCH_SAGAS", 2000);
    let light = knob("BENCH_LIGHT", 50);
    let stores = knob("BENCH_STORES", 20);
    let runs = knob("BENCH_RUNS", 3).max(1);
    let patience = Duration::from_secs(300);

    let (mut orders_per_sec, mut sagas_per_sec, mut resent) = (vec![], vec![], vec![]);
    let (mut p50, mut p95, mut p99, mut light_p50) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        // Orders that start no replenishment: 100 pairs with plenty of stock and a threshold of 0.
        let d = deploy().await;
        let pairs = d.stock(100, 1, 1_000_000, 0, 2_000_000).await;
        let targets: Vec<_> = (0..orders).map(|i| pairs[i % pairs.len()]).collect();
        let took = d.order_each(&targets, concurrency).await;
        orders_per_sec.push(orders as f64 / took.as_secs_f64());
        d.close().await;

        // Each order leaves its pair at the threshold: one replenishment per order.
        let d = deploy().await;
        let pairs = d.stock(sagas, stores, 6, 5, 10).await;
        let start = Instant::now();
        d.replenish_each(&pairs, concurrency).await;
        let done = sagas as i64;
        eventually(patience, "every saga received", || async { (d.received().await >= done).then_some(()) }).await;
        sagas_per_sec.push(sagas as f64 / start.elapsed().as_secs_f64());
        resent.push(d.resent().await as f64);
        let latencies = d.latencies().await;
        p50.push(percentile(&latencies, 50.0));
        p95.push(percentile(&latencies, 95.0));
        p99.push(percentile(&latencies, 99.0));
        d.close().await;

        // Light load: one saga at a time.
        let d = deploy().await;
        let pairs = d.stock(light, 1, 6, 5, 10).await;
        for (i, pair) in pairs.iter().enumerate() {
            d.order_each(std::slice::from_ref(pair), 1).await;
            let done = i as i64 + 1;
            eventually(patience, "the saga received", || async { (d.received().await >= done).then_some(()) }).await;
        }
        light_p50.push(percentile(&d.latencies().await, 50.0));
        d.close().await;
        eprintln!("run {run}/{runs} done");
    }
    let report = json!({
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "runs": runs,
        "concurrency": concurrency,
        "orders": { "count": orders, "per_sec_median": round(median(orders_per_sec.clone())), "per_sec_runs": orders_per_sec.iter().map(|x| round(*x)).collect::<Vec<_>>() },
        "replenishment_sagas": {
            "count": sagas,
            "stores": stores,
            "completed_per_sec_median": round(median(sagas_per_sec.clone())),
            "completed_per_sec_runs": sagas_per_sec.iter().map(|x| round(*x)).collect::<Vec<_>>(),
            "in_flight": concurrency,
            "commands_resent_median": median(resent),
            "latency_ms_median_of_runs": { "p50": round(median(p50)), "p95": round(median(p95)), "p99": round(median(p99)) },
        },
        "light_load": { "sagas": light, "latency_ms_p50_median": round(median(light_p50)) },
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
