//! What every test shares: an isolated deployment (its own database and broker namespace) running
//! the real application, polling with a deadline, and the invariants every run must keep; and
//! ([`http`]) a client of the API in another process, for the benchmark and the fault suite.

#![allow(dead_code)] // each test target uses its own part of this module

pub mod asyncapi;
pub mod http;
pub mod process;

use std::{future::Future, time::Duration};

use orchestrator::app::{Application, Roles};
use platform::{
    config::{Budget, Config, RateLimits, Secret},
    messaging::{relay::RelayFaults, with_channel},
};
use poem::{EndpointExt, endpoint::BoxEndpoint, test::TestClient};
use sqlx::{Connection, PgConnection, PgPool};
use stock::MovementReason;
use strum::IntoEnumIterator;
use uuid::Uuid;

/// The whole system in one process, as the `darkstores` binary runs it: the API, the engine and
/// every participant's worker.
pub fn everything() -> Roles {
    Roles::all(participants::WORKERS).expect("this build has a worker for every participant")
}

/// The admin key every test deployment starts with (`BOOTSTRAP_ADMIN_KEY`).
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdefghijklmnopqrstuv";

/// A budget no test reaches unless it means to.
pub const UNLIMITED: Budget = Budget { per_second: 1_000_000, burst: 1_000_000 };

/// The routes of a running application, called in process with `key`.
pub type Client = TestClient<BoxEndpoint<'static>>;

pub fn client(app: &Application, key: &str) -> Client {
    anonymous(app).default_header("authorization", format!("Bearer {key}"))
}

/// The routes of a running application, called in process without any `Authorization` header.
pub fn anonymous(app: &Application) -> Client {
    TestClient::new(orchestrator::http::routes(app.context()).map_to_response().boxed())
}

/// Makes a key named `name` with `role` through the API, with an admin client; returns its secret.
pub async fn make_key(admin: &Client, name: &str, role: &str) -> String {
    let response = admin.post("/api-keys").body_json(&serde_json::json!({"name": name, "role": role})).send().await;
    response.assert_status(poem::http::StatusCode::CREATED);
    let body: serde_json::Value = response.0.into_body().into_json().await.unwrap();
    body["key"].as_str().expect("a new key carries its secret").to_owned()
}

/// A store stocking 10 of a product, refilled at 3 up to 20, and a warehouse holding 100 of it;
/// returns their ids.
pub async fn stocked_store(api: &Client) -> (String, String) {
    use poem::http::StatusCode;
    use serde_json::{Value, json};
    let mut ids = Vec::new();
    for (path, body) in [
        ("/stores", json!({"name": "Soho", "service_area": "W1"})),
        ("/products", json!({"sku": "OAT", "name": "Oat milk"})),
    ] {
        let response = api.post(path).body_json(&body).send().await;
        response.assert_status(StatusCode::CREATED);
        let created: Value = response.0.into_body().into_json().await.unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let (store_id, product_id) = (ids[0].clone(), ids[1].clone());
    api.put(format!("/warehouse/stock/{product_id}"))
        .body_json(&json!({"on_hand": 100}))
        .send()
        .await
        .assert_status_is_ok();
    api.put(format!("/stores/{store_id}/inventory/{product_id}"))
        .body_json(&json!({"on_hand": 10, "reorder_threshold": 3, "target_level": 20}))
        .send()
        .await
        .assert_status_is_ok();
    (store_id, product_id)
}

/// One test's own deployment. Created databases start with `test_` so that `scripts/test` can
/// sweep up what a crashed run left behind.
const REPLICA_URL: &str = "DATABASE_REPLICA_URL";

pub struct TestEnv {
    pub config: Config,
    pub database: String,
    admin_url: String,
}

impl TestEnv {
    /// A fresh database (migrated by the first application start) and a fresh namespace, with
    /// short deadlines so that timeouts happen within a test.
    pub async fn new() -> Self {
        Self::on(|_| {}).await
    }

    /// [`TestEnv::new`] on other servers: `servers` changes the environment's URLs first.
    pub async fn on(servers: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::from_env().expect("test environment is valid");
        servers(&mut config);
        let admin_url = config.database_url.clone();
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("test_{}", &id[..16]);
        let mut admin = PgConnection::connect(&admin_url).await.expect("Postgres is reachable (see scripts/test)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await
            .expect("can create a test database");
        config.database_url = with_database(&admin_url, &database);
        config.namespace = format!("test-{}", &id[..12]);
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.db_max_connections = 8;
        config.saga.command_timeout = Duration::from_millis(300);
        config.saga.max_timeout = Duration::from_secs(1);
        config.saga.max_attempts = 3;
        config.api.bootstrap_admin_key = Some(Secret(ADMIN_KEY.to_owned()));
        config.api.rate_limits =
            RateLimits { anonymous: UNLIMITED, client: UNLIMITED, operator: UNLIMITED, admin: UNLIMITED };
        // Reads stay on the primary unless a test asks for the replica ([`TestEnv::use_replica`]):
        // a test that writes behind the API's back must not read its own fixtures a moment old.
        config.vars.set(REPLICA_URL, "");
        Self { config, database, admin_url }
    }

    /// Reads that may lag go to the replica `scripts/test` runs (`DATABASE_REPLICA_URL`), in this
    /// test's database there.
    pub fn use_replica(&mut self) {
        let replica = Config::from_env()
            .expect("test environment is valid")
            .vars
            .get(REPLICA_URL)
            .map(str::to_owned)
            .expect("DATABASE_REPLICA_URL names the read replica (scripts/test starts one and sets it)");
        self.config.vars.set(REPLICA_URL, with_database(&replica, &self.database));
    }

    pub async fn start(&self, roles: Roles, faults: RelayFaults) -> Application {
        Application::build(self.config.clone(), roles, faults).await.expect("the application starts")
    }

    /// A pool for the test's own queries.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.config.database_url).await.expect("test database is reachable")
    }

    /// Drops the database and the broker names. Called at the end of a passing test; a failing
    /// test leaves them for inspection.
    pub async fn teardown(self) {
        delete_broker_names(&self.config.amqp_url, &self.config.namespace).await;
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await;
        }
    }
}

/// Deletes a namespace's exchanges and queues; gives up after a while rather than hang a test
/// run on a broker that stopped answering (whatever is left is only names).
pub async fn delete_broker_names(amqp_url: &str, namespace: &str) {
    let topology = sagas::registry().topology(namespace.to_owned());
    let delete = with_channel(amqp_url, "teardown", async |channel| topology.delete(channel).await);
    if tokio::time::timeout(Duration::from_secs(20), delete).await.is_err() {
        eprintln!("deleting the broker names of {namespace} timed out; they are left behind");
    }
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Polls `probe` until it returns `Some`, or panics after `within` saying what never happened.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The invariants of docs/design.md §8 that a database must satisfy at rest.
pub async fn assert_invariants(pool: &PgPool) {
    // The ledger sums to the current stock, in every store and in the warehouse.
    let drift: Vec<(Option<Uuid>, Uuid, i64, i64)> = sqlx::query_as(
        "WITH ledger AS (
             SELECT store_id, product_id, sum(on_hand_delta)::int8 AS on_hand, sum(reserved_delta)::int8 AS reserved
             FROM stock_movement GROUP BY store_id, product_id),
         stock AS (
             SELECT store_id, product_id, on_hand, reserved FROM inventory
             UNION ALL SELECT NULL, product_id, on_hand, reserved FROM warehouse_stock)
         SELECT s.store_id, s.product_id, s.on_hand, COALESCE(l.on_hand, 0)
         FROM stock s LEFT JOIN ledger l
           ON l.store_id IS NOT DISTINCT FROM s.store_id AND l.product_id = s.product_id
         WHERE s.on_hand <> COALESCE(l.on_hand, 0) OR s.reserved <> COALESCE(l.reserved, 0)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(drift.is_empty(), "the ledger does not sum to the stock: {drift:?}");

    // Conservation: warehouse + stores + in transit = what came in and went out from outside.
    let edge: Vec<String> =
        MovementReason::iter().filter(|reason| reason.crosses_the_edge()).map(|reason| reason.to_string()).collect();
    let (held, external): (i64, i64) = sqlx::query_as(
        "SELECT
           (SELECT COALESCE(sum(on_hand), 0) FROM warehouse_stock)::int8
             + (SELECT COALESCE(sum(on_hand), 0) FROM inventory)::int8
             + (SELECT COALESCE(sum(quantity), 0) FROM shipment WHERE status = 'dispatched')::int8,
           (SELECT COALESCE(sum(on_hand_delta), 0) FROM stock_movement WHERE reason = ANY($1))::int8",
    )
    .bind(&edge)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(held, external, "stock was created or destroyed inside the system");

    // No oversell: the schema refuses it, and this proves the constraint is there.
    let oversold: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory WHERE reserved > on_hand OR reserved < 0")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(oversold, 0);

    // Each kind's own rules about its rows.
    for (kind, invariant) in sagas::registry().invariants() {
        let breaches: Vec<String> = sqlx::query_scalar(invariant.breaches).fetch_all(pool).await.unwrap();
        assert!(breaches.is_empty(), "{kind}: {} does not hold for {breaches:?}", invariant.rule);
    }

    // A saga is closed exactly when it waits on nothing, or on an operator.
    let inconsistent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga WHERE (closed_at IS NULL) = (awaits IN ('operator', 'nothing'))")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(inconsistent, 0, "a saga's closed_at disagrees with its state");
}
