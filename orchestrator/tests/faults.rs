//! The fault suite: the real binaries as separate processes, driven over HTTP by a few thousand
//! orders (each a fulfilment saga: paid, handed over or cancelled), the hundreds of
//! replenishments and purchase orders they cause, while processes are killed with SIGKILL, the
//! broker, the cache and the database are restarted under them, or every message is delivered
//! twice. After each fault the system must come to rest with every saga ended, stock conserved,
//! no movement twice, every order as its client was told, and no message lost (see
//! `faults/checks.rs`, and each saga kind's own checks in `faults/kinds/`).
//!
//! A test that stops a service stops a server of its own, started from the machine's packages
//! (`faults/services.rs`); the machine's own servers are only used, never stopped. The suite
//! takes several minutes per test, so it is not part of `cargo test --workspace`:
//!
//! ```sh
//! cargo build --workspace --bins
//! cargo test -p orchestrator --features fault-suite --test faults -- --test-threads=1
//! ```
//!
//! Each test appends its figures to `target/fault-suite.md`; process logs are kept under
//! `target/fault-suite/<test>/`, and the data and logs of a test's own servers under
//! `target/fault-suite/services/<test>/`. `FAULT_ORDERS` sets the orders per test (default 1,200).

mod support;

#[path = "faults/broker.rs"]
mod broker;
#[path = "faults/checks.rs"]
mod checks;
#[path = "faults/cluster.rs"]
mod cluster;
#[path = "faults/figures.rs"]
mod figures;
#[path = "faults/http.rs"]
mod http;
#[path = "faults/kinds/mod.rs"]
mod kinds;
#[path = "faults/load.rs"]
mod load;
#[path = "faults/services.rs"]
mod services;

use std::time::{Duration, Instant};

use checks::Checks;
use cluster::{Cluster, Role, Shape};
use figures::Figures;
use load::{Accepted, Load, Outcome, Plan, Random, Report, Shop};
use platform::config::{Config, SagaTiming};
use services::{Backups, Private, Service};
use sqlx::PgPool;
use support::TestEnv;
use uuid::Uuid;

/// One test's deployment, its shop and its figures.
struct Run {
    name: &'static str,
    env: TestEnv,
    pool: PgPool,
    cluster: Cluster,
    plan: Plan,
    shop: Shop,
    random: Random,
    started: Instant,
    faults: usize,
    /// The test's own server of the service it stops, dropped (stopped) after everything else.
    own: Option<Private>,
}

impl Run {
    /// Starts the processes of `shape` on a fresh database and namespace, and stocks the shop.
    async fn start(name: &'static str, shape: Shape, configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(name, shape, configure, None).await
    }

    /// [`Run::start`], with `service` a server of the test's own that it may stop and start:
    /// the machine's own servers are never stopped.
    async fn start_with_own(name: &'static str, service: Service) -> Self {
        let own = Private::start(service, name).await;
        Self::start_on(name, Shape::SINGLE, |_| {}, Some(own)).await
    }

    async fn start_on(
        name: &'static str,
        shape: Shape,
        configure: impl FnOnce(&mut Config),
        own: Option<Private>,
    ) -> Self {
        let mut env = TestEnv::on(|config| match &own {
            Some(own) if own.service == Service::Postgres => config.database_url = own.url(),
            Some(own) if own.service == Service::RabbitMq => config.amqp_url = own.url(),
            Some(own) => config.redis_url = own.url(),
            None => {}
        })
        .await;
        // Deadlines short enough that a saga whose step is lost gives up, unwinds and ends within
        // the test (a step is given up after 1 + 2 + 4 + 8 × 3 = 31 s). A broker restart (10 to
        // 35 s here) uses up no attempts: a deadline that passes while the saga's message still
        // waits in the outbox counts none.
        env.config.saga = SagaTiming {
            command_timeout: Duration::from_millis(1_000),
            max_timeout: Duration::from_millis(8_000),
            max_attempts: 6,
            // Orders the load leaves unpicked are given up at the end of the run, so that every
            // saga ends within the test.
            person_timeout: Duration::from_millis(3_000),
        };
        // Every worker in its rough world: failing some of what it is asked, taking its time.
        for (name, value) in participants::WORKERS.iter().flat_map(|worker| worker.rough) {
            env.config.vars.set(name, value);
        }
        env.config.db_max_connections = 6;
        configure(&mut env.config);
        let mut extra_env = Vec::new();
        if env.config.duplicate_delivery {
            // The consumers log each duplicate they absorb at debug level: the evidence that the
            // duplicates reached them.
            extra_env.push(("RUST_LOG".to_owned(), "info,platform::messaging::consumer=debug".to_owned()));
        }
        let log_dir = cluster::target_dir().join("fault-suite").join(name);
        let cluster = Cluster::start(&env.config, shape, extra_env, log_dir).await;
        let pool = env.pool().await;
        let plan = Plan::standard();
        let shop = load::stock_shop(&cluster.api(), &plan, &env.config.namespace).await;
        let random = Random::new(Uuid::new_v4().as_u64_pair().0);
        Self { name, env, pool, cluster, plan, shop, random, started: Instant::now(), faults: 0, own }
    }

    fn load(&mut self) -> Load {
        self.started = Instant::now();
        load::start(&self.cluster.api(), &self.shop, &self.plan, &self.env.config.namespace)
    }

    /// The test's own server, which it may stop and start.
    fn own_server(&mut self) -> &mut Private {
        self.own.as_mut().expect("the test started with a server of its own")
    }

    /// A random-ish point of the run, as a fraction of the orders settled.
    fn moment(&mut self, low: f64, high: f64) -> f64 {
        self.random.between(low, high)
    }

    /// SIGKILLs process `n` of `role` once `load` reaches `fraction`, and starts a fresh one.
    async fn kill_and_restart(&mut self, load: &mut Load, role: Role, fraction: f64) {
        load.reached(fraction).await;
        self.cluster.kill(role, 0);
        self.faults += 1;
        self.cluster.restart(role, 0).await;
    }

    /// Waits for the load and for rest, checks everything, records the figures, and drops the
    /// deployment.
    async fn finish(self, load: Load) -> Figures {
        self.finish_with(load, |_, _| {}).await
    }

    /// [`Run::finish`], with the test's own checks run at rest, before the processes go.
    async fn finish_with(self, load: Load, own_checks: impl FnOnce(&mut Self, &mut Checks)) -> Figures {
        let report = load.finish().await;
        self.finish_after(report, own_checks).await
    }

    /// [`Run::finish_with`], the clients' record being `report`.
    async fn finish_after(mut self, report: Report, own_checks: impl FnOnce(&mut Self, &mut Checks)) -> Figures {
        checks::settle(&self.pool, &self.env.config).await;
        let seconds = self.started.elapsed().as_secs_f64();
        self.cluster.assert_running();
        let api = self.cluster.api();
        let (sagas, mut checks) = checks::verify(&self.pool, &self.env.config, &api, &self.shop, &report).await;
        checks.pass("every process still running (none died on its own, all reconnected)");
        own_checks(&mut self, &mut checks);
        let figures = Figures::new(self.name, &report, sagas, self.faults, self.cluster.killed, seconds, checks);
        figures.record();
        assert!(figures.sagas.total >= 100, "a run this size starts hundreds of sagas, not {}", figures.sagas.total);
        drop(self.cluster);
        self.pool.close().await;
        self.env.teardown().await;
        figures
    }
}

#[test]
fn every_saga_kind_has_its_part_in_the_suite() {
    kinds::assert_complete();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_killed_twice_mid_run() {
    let mut run = Run::start("orchestrator killed", Shape::SINGLE, |_| {}).await;
    let mut load = run.load();
    let (first, second) = (run.moment(0.15, 0.35), run.moment(0.5, 0.7));
    run.kill_and_restart(&mut load, Role::Orchestrator, first).await;
    run.kill_and_restart(&mut load, Role::Orchestrator, second).await;
    run.finish(load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_worker_killed_twice_mid_run() {
    let mut run = Run::start("warehouse worker killed", Shape::SINGLE, |_| {}).await;
    let mut load = run.load();
    let (first, second) = (run.moment(0.15, 0.35), run.moment(0.5, 0.7));
    run.kill_and_restart(&mut load, Role::Worker(sagas::WAREHOUSE), first).await;
    run.kill_and_restart(&mut load, Role::Worker(sagas::WAREHOUSE), second).await;
    run.finish(load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_worker_killed_twice_mid_run() {
    let mut run = Run::start("inventory worker killed", Shape::SINGLE, |_| {}).await;
    let mut load = run.load();
    let (first, second) = (run.moment(0.15, 0.35), run.moment(0.5, 0.7));
    run.kill_and_restart(&mut load, Role::Worker(sagas::INVENTORY), first).await;
    run.kill_and_restart(&mut load, Role::Worker(sagas::INVENTORY), second).await;
    run.finish(load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_worker_killed_twice_mid_run() {
    let mut run = Run::start("payment worker killed", Shape::SINGLE, |_| {}).await;
    let mut load = run.load();
    let (first, second) = (run.moment(0.15, 0.35), run.moment(0.5, 0.7));
    run.kill_and_restart(&mut load, Role::Worker(sagas::PAYMENT), first).await;
    run.kill_and_restart(&mut load, Role::Worker(sagas::PAYMENT), second).await;
    run.finish(load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_run() {
    let mut run = Run::start_with_own("RabbitMQ restarted", Service::RabbitMq).await;
    let mut load = run.load();
    let moment = run.moment(0.2, 0.4);
    load.reached(moment).await;
    run.own_server().restart().await;
    run.faults += 1;
    // Every process must find the broker again on its own: one consumer per process, back.
    run.cluster.wait_ready().await;
    run.finish(load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_then_started_mid_run() {
    let mut run = Run::start_with_own("Redis stopped, started", Service::Redis).await;
    let mut load = run.load();
    let moment = run.moment(0.2, 0.4);
    load.reached(moment).await;
    run.own_server().stop().await;
    run.faults += 1;
    // Orders go on without the cache for a fifth of the run.
    load.reached(moment + 0.2).await;
    run.own_server().start_again().await;
    run.finish(load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run() {
    let mut run = Run::start_with_own("Postgres restarted", Service::Postgres).await;
    let mut load = run.load();
    let moment = run.moment(0.2, 0.4);
    load.reached(moment).await;
    run.own_server().restart().await;
    run.faults += 1;
    run.cluster.wait_ready().await;
    run.finish(load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice() {
    let mut run = Run::start("every message delivered twice", Shape::SINGLE, |config| {
        config.duplicate_delivery = true;
    })
    .await;
    let load = run.load();
    run.finish_with(load, |run, checks| {
        let mut switched_on = 0;
        let roles = Role::all();
        let mut absorbed = vec![0; roles.len()];
        for (role, log) in run.cluster.logs() {
            let text = std::fs::read_to_string(log).expect("can read a process log");
            switched_on += usize::from(text.contains(platform::process::DUPLICATE_DELIVERY_WARNING));
            let role = roles.iter().position(|r| *r == role).expect("a known role");
            absorbed[role] += text.matches(DUPLICATE_ABSORBED).count();
        }
        assert_eq!(switched_on, run.cluster.logs().count(), "every process publishes twice");
        assert!(
            absorbed.iter().all(|&n| n > 0),
            "every consumer met duplicates: {:?}",
            roles.iter().zip(&absorbed).collect::<Vec<_>>()
        );
        checks.pass("every consumer received each message twice and applied it once");
        run.faults = absorbed.iter().sum();
    })
    .await;
}

/// What a consumer logs (at debug level) for a delivery its inbox had already seen.
const DUPLICATE_ABSORBED: &str = "duplicate delivery acknowledged without effect";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_each_with_one_of_each_killed() {
    let mut run = Run::start("two of each, one of each killed", Shape::DOUBLE, |_| {}).await;
    let mut load = run.load();
    let start = run.moment(0.2, 0.35);
    for (i, role) in Role::all().into_iter().enumerate() {
        load.reached(start + 0.1 * i as f64).await;
        run.cluster.kill(role, 0);
        run.faults += 1;
    }
    // The survivors carry on: one consumer left on each queue, and the load fails over to the
    // orchestrator still running.
    run.cluster.wait_ready().await;
    run.finish(load).await;
}

/// The machine running everything is lost, and the database restored from its backups
/// (`scripts/backup`, `scripts/restore`) to a moment in the middle of the load; the system starts on
/// the restored copy after `orchestrator after-restore`. Every saga open at that moment must end
/// as if nothing had happened, with every invariant holding. What the clients were told after the
/// moment is gone with it, so the record the checks hold the database to is the restored orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_to_a_point_mid_run() {
    let mut run = Run::start_with_own("restored to a point mid-run", Service::Postgres).await;
    let backups = Backups::start(run.own_server());
    let mut load = run.load();
    let base_at = run.moment(0.05, 0.15);
    load.reached(base_at).await;
    backups.base(run.own_server());
    let moment = run.moment(0.4, 0.6);
    load.reached(moment).await;
    let (point, lsn): (String, String) = sqlx::query_as("SELECT clock_timestamp()::text, pg_current_wal_lsn()::text")
        .fetch_one(&run.pool)
        .await
        .unwrap();
    // The load runs to its end, and the machine is lost with sagas in flight.
    drop(load.finish().await);
    run.cluster.kill_all();
    backups.streamed(run.own_server(), &lsn).await;
    run.pool.close().await;
    let lost_port = run.own_server().port();
    run.own_server().stop().await;
    run.own_server().restore(&backups, &point).await;
    run.faults += 1;
    let restored_port = run.own_server().port();
    run.env.config.database_url =
        run.env.config.database_url.replace(&format!(":{lost_port}/"), &format!(":{restored_port}/"));
    run.pool = run.env.pool().await;
    let open_at_point: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, kind, state FROM saga WHERE closed_at IS NULL").fetch_all(&run.pool).await.unwrap();
    assert!(!open_at_point.is_empty(), "the restored moment is in the middle of the load: sagas were open");

    run.cluster.reconfigure(&run.env.config);
    let cleared = run.cluster.run_once("after-restore");
    eprintln!("orchestrator after-restore:\n{cleared}");
    run.cluster.start_again().await;
    run.started = Instant::now();

    checks::settle(&run.pool, &run.env.config).await;
    let ids: Vec<Uuid> = open_at_point.iter().map(|(id, ..)| *id).collect();
    let ended: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT kind, state, awaits, count(*)::int8 FROM saga WHERE id = ANY($1) GROUP BY 1, 2, 3 ORDER BY 1, 2",
    )
    .bind(&ids)
    .fetch_all(&run.pool)
    .await
    .unwrap();
    let count: i64 = ended.iter().map(|(.., n)| n).sum();
    assert_eq!(count, ids.len() as i64, "every saga open at the restored moment is still there");
    eprintln!(
        "fault suite | restored to {point}: {} sagas open then; they ended: {}",
        ids.len(),
        ended.iter().map(|(kind, state, _, n)| format!("{n} {kind} {state}")).collect::<Vec<_>>().join(", ")
    );
    let report = restored_orders(&run.pool).await;
    run.finish_after(report, |_, checks| {
        checks.pass("every saga open at the restored moment finished or unwound on the restored copy");
    })
    .await;
}

/// The orders of a restored database, at rest, as the clients' record.
async fn restored_orders(pool: &PgPool) -> Report {
    let orders: Vec<(Uuid, Option<String>, String, Uuid)> =
        sqlx::query_as("SELECT id, idempotency_key, status, store_id FROM customer_order")
            .fetch_all(pool)
            .await
            .unwrap();
    let items: Vec<(Uuid, Uuid, i64)> =
        sqlx::query_as("SELECT order_id, product_id, quantity FROM order_item").fetch_all(pool).await.unwrap();
    let outcomes = orders
        .into_iter()
        .map(|(id, key, status, store)| {
            let status = match status.as_str() {
                "fulfilled" => "fulfilled",
                "cancelled" => "cancelled",
                other => panic!("order {id} is still {other} at rest"),
            };
            let items = items.iter().filter(|(order, ..)| *order == id).map(|(_, p, q)| (*p, *q)).collect();
            Outcome::Accepted(Accepted { key: key.expect("the load keys its orders"), id, store, items, status })
        })
        .collect();
    Report { outcomes, retries: Default::default() }
}
