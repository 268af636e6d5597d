//! End-to-end benchmark: `darkstores` (API, engine, every worker) as its own process on
//! real Postgres, RabbitMQ and Redis, every step durable. Prints one JSON object on stdout.
//!
//! `cargo bench -p orchestrator --bench sagas`. Knobs (defaults in brackets):
//! - BENCH_STORES [50], BENCH_PRODUCTS [100]: the (store, product) grid. The warehouse holds
//!   1,000,000 of each product except every 20th, which it has none of: those sagas compensate;
//! - BENCH_SAGAS [5000]: replenishments per in-flight level, of 1–10 units at random pairs, each
//!   started with `POST /replenishments`;
//! - BENCH_IN_FLIGHT ["16,64"] and BENCH_LIGHT [200]: the in-flight levels, and the sagas run one
//!   at a time for the latency with no queueing;
//! - BENCH_ORDERS [10000]: orders placed by 64 clients. Each starts a fulfilment saga that takes
//!   the payment and then waits for a picker, so they are also the sagas held in flight when the
//!   orchestrator's memory is read;
//! - BENCH_READS [100000]: cached inventory reads by 64 clients;
//! - BENCH_LIST_READS [20000]: with `DATABASE_REPLICA_URL` naming a streaming replica of the
//!   database (`scripts/test` starts one), reads that may lag (stores and products, one by one and
//!   listed) by 64 clients, on a deployment reading from the replica and on one reading from the
//!   primary alone, in alternating order from run to run: the primary's CPU per read with and
//!   without the replica. The replica's lag is sampled during each in-flight level too;
//! - BENCH_HISTORY [0]: closed sagas stored before an extra run at the first in-flight level,
//!   reported as a ratio to the same level on an empty database;
//! - BENCH_RUNS [3]: runs, each on a fresh deployment; every figure is the median of the runs.
//! - BENCH_BINARY [this build's `darkstores`]: the command to run instead, with its arguments
//!   (`…/orchestrator all` for a build from before `darkstores`), to compare two builds side by
//!   side under the same workload;
//! - BENCH_SOAK_SECS [0]: instead of all the above, replenishments at 16 in flight for that long
//!   under a short retention (closed sagas and inbox rows kept 60 s, published outbox rows 10 s,
//!   the janitor every 5 s), printing the retained rows and the database size as it goes: they
//!   level off instead of growing.
//!
//! A saga is done when its goods reach the store (`stock.replenished`) or it is given up
//! (`replenishment.aborted`); its latency runs from sending its request to that event reaching
//! the benchmark. CPU time is read from `/proc` for the orchestrator, Postgres (every backend),
//! RabbitMQ and Redis, and divided by the work done; Postgres's counters are read after it has
//! flushed them (it does so at most once a second for a busy backend and after 10 s for an idle
//! one, hence the 11 s pause around each phase).

#[path = "../../tests/support/mod.rs"]
mod support;

mod history;
mod system;

use std::{
    collections::{HashMap, HashSet},
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
use platform::{messaging::connect, protocol::DomainEvent};
use sagas::replenishment::{ReplenishmentAborted, StockReplenished};
use serde_json::{Value, json};
use support::http::{Answer, Connection};
use system::{Cpu, System};
use tokio::sync::{Mutex, oneshot};
use uuid::Uuid;

/// One request on a client's connection: the benchmark stops at the first that fails.
async fn send(client: &mut Connection, method: &str, path: &str, body: Option<&Value>) -> Answer {
    tokio::time::timeout(Duration::from_secs(60), client.send(method, path, &[], body))
        .await
        .expect("the API answers within a minute")
        .expect("the API answers")
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Postgres flushes an idle backend's counters after 10 s.
const STATS_FLUSH: Duration = Duration::from_secs(11);

/// A small, seeded generator: the same run draws the same pairs and quantities.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

/// Stores, products, their stock and the warehouse's, written straight to the database.
async fn seed(system: &System, stores: usize, products: usize) -> Vec<(Uuid, Uuid)> {
    let pool = &system.pool;
    sqlx::query("INSERT INTO store (name, service_area) SELECT 'S' || g, 'bench' FROM generate_series(1, $1) g")
        .bind(stores as i32)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO product (sku, name) SELECT 'SKU-' || g, 'P' || g FROM generate_series(1, $1) g")
        .bind(products as i32)
        .execute(pool)
        .await
        .unwrap();
    // Every 20th product (by SKU number) is out of stock at the warehouse.
    sqlx::query(
        "INSERT INTO warehouse_stock (product_id, on_hand)
         SELECT id, CASE WHEN substr(sku, 5)::int % 20 = 0 THEN 0 ELSE 1000000 END FROM product",
    )
    .execute(pool)
    .await
    .unwrap();
    // Far above the reorder level: no order or receipt here starts a replenishment of its own.
    sqlx::query(
        "INSERT INTO inventory (store_id, product_id, on_hand, reorder_threshold, target_level)
         SELECT s.id, p.id, 1000, 5, 100000 FROM store s CROSS JOIN product p",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_as("SELECT store_id, product_id FROM inventory ORDER BY store_id, product_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// What the benchmark hears of sagas ending: the time each one's closing event arrived.
#[derive(Default)]
struct Endings {
    waiting: HashMap<Uuid, oneshot::Sender<Instant>>,
    early: HashMap<Uuid, Instant>,
    aborted: usize,
}

/// Listens for `stock.replenished` and `replenishment.aborted` on a queue of its own.
async fn listen(system: &System) -> (Arc<Mutex<Endings>>, lapin::Connection) {
    let config = &system.env.config;
    let connection = connect(&config.amqp_url, "bench").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let queue = channel.queue_declare("".into(), exclusive, FieldTable::default()).await.unwrap();
    let topology = sagas::registry().topology(config.namespace.clone());
    for (exchange, key) in [
        (StockReplenished::EXCHANGE, StockReplenished::NAME),
        (ReplenishmentAborted::EXCHANGE, ReplenishmentAborted::NAME),
    ] {
        let exchange = topology.exchange(platform::messaging::Exchange::Events(exchange));
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut events =
        channel.basic_consume(queue.name().clone(), "".into(), no_ack, FieldTable::default()).await.unwrap();
    let endings: Arc<Mutex<Endings>> = Arc::default();
    let shared = endings.clone();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = events.next().await {
            let at = Instant::now();
            let event: Value = serde_json::from_slice(&delivery.data).unwrap();
            let Some(saga) = event["correlation_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else { continue };
            let mut endings = shared.lock().await;
            if event["type"] == "replenishment.aborted" {
                endings.aborted += 1;
            }
            match endings.waiting.remove(&saga) {
                Some(done) => {
                    let _ = done.send(at);
                }
                None => {
                    endings.early.insert(saga, at);
                }
            }
        }
    });
    (endings, connection)
}

/// Measures a phase: CPU from `/proc` and Postgres's counters before and after it, and its wall time.
struct Meter {
    cpu: Cpu,
    pg: system::PgCounters,
    start: Instant,
}

/// What a [`Meter`] measured, per unit of work.
struct Measured {
    per_sec: f64,
    cpu: Value,
    postgres: Value,
}

impl Meter {
    /// Waits for Postgres to flush what came before, then reads the starting figures.
    async fn start(system: &System) -> Self {
        tokio::time::sleep(STATS_FLUSH).await;
        let (cpu, pg) = (Cpu::read(system.pid(), system.postmasters), system.pg_counters().await);
        Self { cpu, pg, start: Instant::now() }
    }

    async fn finish(self, system: &System, units: usize) -> Measured {
        let took = self.start.elapsed();
        let cpu = Cpu::read(system.pid(), system.postmasters);
        tokio::time::sleep(STATS_FLUSH).await;
        let pg = system.pg_counters().await;
        let units = units as f64;
        Measured {
            per_sec: units / took.as_secs_f64(),
            cpu: self.cpu.per(&cpu, units),
            postgres: self.pg.per(&pg, units),
        }
    }
}

/// One in-flight level's figures.
struct SagaPhase {
    measured: Measured,
    latencies: Vec<f64>,
    aborted: usize,
    conflicts: usize,
}

/// Runs `count` replenishments with `in_flight` clients, each starting its next saga when its
/// last one is done. A pair with a saga open is skipped (the API would answer 409).
async fn replenish(
    system: &System,
    endings: &Arc<Mutex<Endings>>,
    pairs: &[(Uuid, Uuid)],
    count: usize,
    in_flight: usize,
    seed: u64,
) -> SagaPhase {
    let meter = Meter::start(system).await;
    let aborted_before = endings.lock().await.aborted;
    let busy: Arc<Mutex<(HashSet<usize>, Draw)>> = Arc::new(Mutex::new((HashSet::new(), Draw(seed))));
    let (next, conflicts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pairs = Arc::new(pairs.to_vec());
    let mut clients = Vec::new();
    for _ in 0..in_flight {
        let (pairs, next, busy, endings, conflicts) =
            (pairs.clone(), next.clone(), busy.clone(), endings.clone(), conflicts.clone());
        let addr = system.addr;
        clients.push(tokio::spawn(async move {
            let mut client = Connection::open(addr).await.expect("the API accepts connections");
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                loop {
                    let (pair, quantity) = {
                        let (busy, draw) = &mut *busy.lock().await;
                        let pair = loop {
                            let pair = draw.next(pairs.len());
                            if busy.insert(pair) {
                                break pair;
                            }
                        };
                        (pair, 1 + draw.next(10))
                    };
                    let (store, product) = pairs[pair];
                    let body = json!({"store_id": store, "product_id": product, "quantity": quantity});
                    let sent = Instant::now();
                    let Answer { status, body: answer } =
                        send(&mut client, "POST", "/replenishments", Some(&body)).await;
                    if status == 409 {
                        // The pair's last saga has delivered but not yet closed: draw another.
                        conflicts.fetch_add(1, Ordering::Relaxed);
                        busy.lock().await.0.remove(&pair);
                        continue;
                    }
                    assert_eq!(status, 201, "{answer}");
                    let saga: Uuid = answer["id"].as_str().unwrap().parse().unwrap();
                    let arrival = {
                        let mut endings = endings.lock().await;
                        match endings.early.remove(&saga) {
                            Some(at) => Ok(at),
                            None => {
                                let (done, arrival) = oneshot::channel();
                                endings.waiting.insert(saga, done);
                                Err(arrival)
                            }
                        }
                    };
                    let done = match arrival {
                        Ok(at) => at,
                        Err(arrival) => tokio::time::timeout(Duration::from_secs(120), arrival)
                            .await
                            .expect("every saga ends within two minutes")
                            .unwrap(),
                    };
                    latencies.push(done.duration_since(sent).as_secs_f64() * 1000.0);
                    busy.lock().await.0.remove(&pair);
                    break;
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    let measured = meter.finish(system, count).await;
    latencies.sort_by(f64::total_cmp);
    SagaPhase {
        measured,
        latencies,
        aborted: endings.lock().await.aborted - aborted_before,
        conflicts: conflicts.load(Ordering::Relaxed),
    }
}

/// Runs `count` requests built by `request` with `clients` clients; returns what was measured
/// per request and the sorted latencies.
async fn drive<F>(system: &System, count: usize, clients: usize, request: F) -> (Measured, Vec<f64>)
where
    F: Fn(usize) -> (&'static str, String, Option<Value>, u16) + Send + Sync + 'static,
{
    let meter = Meter::start(system).await;
    let (next, request) = (Arc::new(AtomicUsize::new(0)), Arc::new(request));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, request, addr) = (next.clone(), request.clone(), system.addr);
        tasks.push(tokio::spawn(async move {
            let mut client = Connection::open(addr).await.expect("the API accepts connections");
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break latencies;
                }
                let (method, path, body, expected) = request(i);
                let sent = Instant::now();
                let Answer { status, body: answer } = send(&mut client, method, &path, body.as_ref()).await;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(status, expected, "{method} {path}: {answer}");
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let measured = meter.finish(system, count).await;
    latencies.sort_by(f64::total_cmp);
    (measured, latencies)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The median of each numeric leaf over the runs' objects of the same shape.
fn median_of(runs: &[Value]) -> Value {
    match &runs[0] {
        Value::Object(first) => Value::Object(
            first
                .keys()
                .map(|k| (k.clone(), median_of(&runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>())))
                .collect(),
        ),
        Value::Number(_) => {
            let xs: Vec<f64> = runs.iter().filter_map(Value::as_f64).collect();
            json!((median(&xs) * 100.0).round() / 100.0)
        }
        other => other.clone(),
    }
}

fn saga_figures(phase: &SagaPhase) -> Value {
    json!({
        "sagas_per_sec": round(phase.measured.per_sec),
        "latency_ms": {
            "p50": round(percentile(&phase.latencies, 50.0)),
            "p95": round(percentile(&phase.latencies, 95.0)),
            "p99": round(percentile(&phase.latencies, 99.0)),
        },
        "aborted": phase.aborted,
        "conflicts_redrawn": phase.conflicts,
        "cpu_ms_per_saga": phase.measured.cpu,
        "postgres_per_saga": phase.measured.postgres,
    })
}

/// Replenishments at 16 in flight for `seconds`, under a short retention; samples what is stored.
async fn soak(stores: usize, products: usize, seconds: u64) -> Value {
    let short = [
        ("SAGA_RETENTION_MS", "60000".to_owned()),
        ("INBOX_RETENTION_MS", "60000".to_owned()),
        ("OUTBOX_RETENTION_MS", "10000".to_owned()),
        ("RETENTION_INTERVAL_MS", "5000".to_owned()),
    ];
    let system = System::start(&short).await;
    let pairs = seed(&system, stores, products).await;
    let (endings, connection) = listen(&system).await;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut chunk = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        chunk += 1;
        let phase = replenish(&system, &endings, &pairs, 2000, 16, chunk).await;
        let (rows, mib) = system.size().await;
        let sample = json!({
            "after_s": start.elapsed().as_secs(),
            "sagas_per_sec": round(phase.measured.per_sec),
            "retained": system.retained_rows().await,
            "all_rows": rows,
            "size_mib": round(mib),
        });
        eprintln!("soak: {sample}");
        samples.push(sample);
    }
    platform::messaging::close(&connection, "done").await;
    system.stop().await;
    json!({ "soak_seconds": seconds, "samples": samples })
}

/// Reads that may lag, on a deployment reading from the replica and on one reading from
/// the primary alone (which goes first alternates with `run`): reads/s, latency, and CPU per read
/// of every process, the primary's and the replica's apart.
async fn list_reads_figures(stores: usize, products: usize, count: usize, run: usize) -> Value {
    let mut figures = serde_json::Map::new();
    let mut setups = vec![("with_replica", true), ("primary_only", false)];
    if run.is_multiple_of(2) {
        setups.reverse();
    }
    for (name, replica) in setups {
        let system = if replica { System::start_with_replica().await } else { System::start(&[]).await };
        let pairs = seed(&system, stores, products).await;
        if replica {
            replica_serving(&system).await;
        }
        let stores: Vec<Uuid> = pairs.iter().map(|(s, _)| *s).collect::<HashSet<_>>().into_iter().collect();
        let products: Vec<Uuid> = pairs.iter().map(|(_, p)| *p).collect::<HashSet<_>>().into_iter().collect();
        let (measured, latencies) = drive(&system, count, 64, move |i| {
            let path = match i % 4 {
                0 => "/stores?limit=50".to_owned(),
                1 => format!("/stores/{}", stores[i / 4 % stores.len()]),
                2 => "/products?limit=50".to_owned(),
                _ => format!("/products/{}", products[i / 4 % products.len()]),
            };
            ("GET", path, None, 200)
        })
        .await;
        let primary_per_read = measured.cpu["postgres"].clone();
        figures.insert(
            name.into(),
            json!({
                "reads_per_sec": round(measured.per_sec),
                "latency_ms": { "p50": round(percentile(&latencies, 50.0)), "p99": round(percentile(&latencies, 99.0)) },
                "primary_cpu_ms_per_read": primary_per_read,
                "cpu_ms_per_read": measured.cpu,
            }),
        );
        system.stop().await;
    }
    let primary = |name: &str| figures[name]["primary_cpu_ms_per_read"].as_f64().unwrap_or(f64::NAN);
    let ratio = primary("with_replica") / primary("primary_only");
    figures.insert("primary_cpu_ratio".into(), json!((ratio * 1000.0).round() / 1000.0));
    Value::Object(figures)
}

/// The replica's lag while a phase writes, sampled every 100 ms from the primary's
/// `pg_stat_replication`: how far its replay is behind, in time (`replay_lag`: from a commit's
/// flush on the primary to its replay, none when all is replayed) and in bytes of log.
struct ReplicaLag {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(f64, f64)>>,
}

impl ReplicaLag {
    fn sample(pool: sqlx::PgPool) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let sample: Option<(f64, f64)> = sqlx::query_as(
                    "SELECT COALESCE(max(extract(epoch FROM replay_lag)) * 1000, 0)::float8,
                            COALESCE(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::float8
                     FROM pg_stat_replication WHERE application_name <> 'pg_receivewal'",
                )
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten();
                samples.extend(sample);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        });
        Self { stop, task }
    }

    async fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.unwrap_or_default();
        let mut ms: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let mut kib: Vec<f64> = samples.iter().map(|s| s.1 / 1024.0).collect();
        ms.sort_by(f64::total_cmp);
        kib.sort_by(f64::total_cmp);
        json!({
            "samples": samples.len(),
            "replay_lag_ms": { "p50": round(percentile(&ms, 50.0)), "p99": round(percentile(&ms, 99.0)), "max": round(ms.last().copied().unwrap_or(0.0)) },
            "behind_kib": { "p50": round(percentile(&kib, 50.0)), "max": round(kib.last().copied().unwrap_or(0.0)) },
        })
    }
}

/// Waits until the deployment reports its replica up, so that the reads measured go to it.
async fn replica_serving(system: &System) {
    support::eventually(Duration::from_secs(30), "the replica to serve reads", || async {
        let mut client = Connection::open(system.addr).await.ok()?;
        let answer = client.send("GET", "/health/ready", &[], None).await.ok()?;
        (answer.body["checks"]["replica"]["status"] == "up").then_some(())
    })
    .await;
}

#[tokio::main]
async fn main() {
    let stores = knob("BENCH_STORES", 50);
    let products = knob("BENCH_PRODUCTS", 100);
    let sagas = knob("BENCH_SAGAS", 5000);
    let light = knob("BENCH_LIGHT", 200);
    let orders = knob("BENCH_ORDERS", 10_000);
    let reads = knob("BENCH_READS", 100_000);
    let list_reads = knob("BENCH_LIST_READS", 20_000);
    let replica = std::env::var("DATABASE_REPLICA_URL").ok().filter(|url| !url.is_empty());
    let history = knob("BENCH_HISTORY", 0);
    let runs = knob("BENCH_RUNS", 3).max(1);
    let soak_secs = knob("BENCH_SOAK_SECS", 0);
    if soak_secs > 0 {
        println!("{}", serde_json::to_string_pretty(&soak(stores, products, soak_secs as u64).await).unwrap());
        return;
    }
    let levels: Vec<usize> = std::env::var("BENCH_IN_FLIGHT")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let mut reports = Vec::new();
    for run in 1..=runs {
        let mut report = serde_json::Map::new();
        let system = System::start(&[]).await;
        let pairs = seed(&system, stores, products).await;
        let (endings, connection) = listen(&system).await;

        let one = replenish(&system, &endings, &pairs, light, 1, run as u64).await;
        report.insert("in_flight_1".into(), saga_figures(&one));
        let mut first_level = None;
        for &level in &levels {
            let sampler = replica.is_some().then(|| ReplicaLag::sample(system.pool.clone()));
            let phase = replenish(&system, &endings, &pairs, sagas, level, run as u64 * 7919 + level as u64).await;
            first_level.get_or_insert(phase.measured.per_sec);
            let mut figures = saga_figures(&phase);
            if let Some(sampler) = sampler {
                figures["replica_lag"] = sampler.finish().await;
            }
            report.insert(format!("in_flight_{level}"), figures);
        }

        // Orders of one unit, spread over the grid; each leaves a fulfilment saga waiting for a picker.
        let grid = Arc::new(pairs.clone());
        let targets = grid.clone();
        let (orders_measured, latencies) = drive(&system, orders, 64, move |i| {
            let (store, product) = targets[i % targets.len()];
            let order = json!({"store_id": store, "items": [{"product_id": product, "quantity": 1}]});
            ("POST", "/orders".to_owned(), Some(order), 201)
        })
        .await;
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM saga WHERE closed_at IS NULL")
            .fetch_one(&system.pool)
            .await
            .unwrap();
        let (rss, peak) = system.memory();
        report.insert(
            "orders".into(),
            json!({
                "orders_per_sec": round(orders_measured.per_sec),
                "latency_ms": { "p50": round(percentile(&latencies, 50.0)), "p99": round(percentile(&latencies, 99.0)) },
                "cpu_ms_per_order": orders_measured.cpu,
                "postgres_per_order": orders_measured.postgres,
            }),
        );
        report
            .insert("memory".into(), json!({ "open_sagas": open, "rss_mib": round(rss), "peak_rss_mib": round(peak) }));

        // Cached reads: the first read of a pair fills the cache; these come after the orders did.
        let targets = grid.clone();
        let (reads_measured, latencies) = drive(&system, reads, 64, move |i| {
            let (store, product) = targets[i % targets.len()];
            ("GET", format!("/stores/{store}/inventory/{product}"), None, 200)
        })
        .await;
        report.insert(
            "cached_reads".into(),
            json!({
                "reads_per_sec": round(reads_measured.per_sec),
                "latency_ms": { "p50": round(percentile(&latencies, 50.0)), "p99": round(percentile(&latencies, 99.0)) },
                "cpu_ms_per_read": reads_measured.cpu,
            }),
        );
        let (rows, mib) = system.size().await;
        report.insert("database".into(), json!({ "rows": rows, "size_mib": round(mib) }));
        platform::messaging::close(&connection, "done").await;
        system.stop().await;

        if history > 0
            && let (Some(&level), Some(empty)) = (levels.first(), first_level)
        {
            let system = System::start(&[]).await;
            let pairs = seed(&system, stores, products).await;
            history::store(&system.pool, history).await;
            let (endings, connection) = listen(&system).await;
            let phase = replenish(&system, &endings, &pairs, sagas, level, run as u64 * 7919 + level as u64).await;
            let (rows, mib) = system.size().await;
            let mut figures = saga_figures(&phase);
            figures["closed_sagas_stored"] = json!(history);
            figures["ratio_to_empty"] = json!((phase.measured.per_sec / empty * 1000.0).round() / 1000.0);
            figures["database"] = json!({ "rows": rows, "size_mib": round(mib) });
            report.insert(format!("history_in_flight_{level}"), figures);
            platform::messaging::close(&connection, "done").await;
            system.stop().await;
        }
        if replica.is_some() && list_reads > 0 {
            report.insert("list_reads".into(), list_reads_figures(stores, products, list_reads, run).await);
        }
        eprintln!("run {run}/{runs}: {}", Value::Object(report.clone()));
        reports.push(Value::Object(report));
    }
    let summary = json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "services": "Postgres, RabbitMQ and Redis on the same machine",
        },
        "workload": {
            "stores": stores, "products": products, "sagas_per_level": sagas, "light_sagas": light,
            "in_flight": levels, "orders": orders, "reads": reads, "history": history, "runs": runs,
            "list_reads": if replica.is_some() { json!(list_reads) } else { json!("skipped: no DATABASE_REPLICA_URL") },
        },
        "median_of_runs": median_of(&reports),
        "runs": reports,
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
}
