//! Reads that may lag, against the real replica `scripts/test` runs (`DATABASE_REPLICA_URL`):
//! which reads it serves, the consistency token while it replays late, the lag bound, and a
//! replica that does not answer. One test, in steps, since it slows the shared replica's replay.

mod support;

use std::time::Duration;

use orchestrator::app::Roles;
use platform::{
    messaging::relay::RelayFaults,
    replica::{Fallback, Freshness, Lsn, Reads, Target},
};
use poem::http::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use support::{ADMIN_KEY, TestEnv, client, eventually};

/// The replica's own connection, to slow its replay down and back.
struct Delay(String);

impl Delay {
    /// Makes the replica apply what it receives `delay` late.
    async fn set(url: &str, delay: Duration) -> Self {
        let mut conn = PgConnection::connect(url).await.expect("the replica answers");
        let setting = format!("ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'", delay.as_millis());
        sqlx::query(sqlx::AssertSqlSafe(setting)).execute(&mut conn).await.expect("can slow the replica");
        sqlx::query("SELECT pg_reload_conf()").execute(&mut conn).await.unwrap();
        Self(url.to_owned())
    }
}

impl Drop for Delay {
    /// Back to replaying at once, whatever the test's outcome.
    fn drop(&mut self) {
        let url = self.0.clone();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&url).await {
                    let _ = sqlx::query("ALTER SYSTEM RESET recovery_min_apply_delay").execute(&mut conn).await;
                    let _ = sqlx::query("SELECT pg_reload_conf()").execute(&mut conn).await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

/// Waits until the replica serves reads that may lag.
async fn serving(reads: &Reads) {
    eventually(Duration::from_secs(10), "the replica to serve reads", || async {
        (reads.replica_state()?.avoided.is_none()).then_some(())
    })
    .await;
}

fn token(response: &poem::test::TestResponse) -> Lsn {
    let header = response.0.headers().get("consistency-token").expect("a write answers with its token");
    header.to_str().unwrap().parse().expect("a token is a log position")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_may_lag_follow_the_replica_and_the_token() {
    let mut env = TestEnv::new().await;
    env.use_replica();
    env.config.vars.set("REPLICA_CHECK_MS", 100);
    env.config.vars.set("REPLICA_MAX_LAG_MS", 10_000);
    let replica_url = env.config.vars.get("DATABASE_REPLICA_URL").unwrap().to_owned();
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let reads = app.context().reads.clone();
    let api = client(&app, ADMIN_KEY);

    // Serving once its first check passes; a fresh read never goes to it.
    serving(&reads).await;
    assert_eq!(reads.target(Freshness::MayLag, None), Ok(Target::Replica));
    assert_eq!(reads.target(Freshness::Fresh, None), Err(None));

    // Replaying 3 s late, under a lag bound of 10 s: it serves, and is behind every new write.
    let delay = Delay::set(&replica_url, Duration::from_secs(3)).await;
    let created = api.post("/stores").body_json(&json!({"name": "Riverside", "service_area": "river"})).send().await;
    created.assert_status(StatusCode::CREATED);
    let written = token(&created);
    let store: Value = created.0.into_body().into_json().await.unwrap();
    let path = format!("/stores/{}", store["id"].as_str().unwrap());
    assert_eq!(reads.target(Freshness::MayLag, Some(written)), Err(Some(Fallback::Behind)));
    // The writer's own key reads its write without sending anything back, and so does anyone who
    // sends the token; a key with neither may read the replica's older state.
    api.get(&path).send().await.assert_status_is_ok();
    let made = api.post("/api-keys").body_json(&json!({"name": "reader", "role": "client"})).send().await;
    made.assert_status(StatusCode::CREATED);
    let made: Value = made.0.into_body().into_json().await.unwrap();
    let reader = client(&app, made["key"].as_str().unwrap());
    reader.get(&path).header("consistency-token", written.to_string()).send().await.assert_status_is_ok();
    let stale = reader.get(&path).send().await;
    assert_eq!(stale.0.status(), StatusCode::NOT_FOUND, "a key that sends no token reads the replica, a moment old");
    // Once replayed past the token, the replica serves it.
    eventually(Duration::from_secs(10), "the replica to replay the write", || async {
        (reads.replica_state()?.replayed >= written).then_some(())
    })
    .await;
    assert_eq!(reads.target(Freshness::MayLag, Some(written)), Ok(Target::Replica));
    reader.get(&path).send().await.assert_status_is_ok();
    drop(delay);
    drop(app);

    // The lag bound: replaying 3 s late under a bound of 1 s, it is avoided once it falls behind.
    env.config.vars.set("REPLICA_MAX_LAG_MS", 1_000);
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let reads = app.context().reads.clone();
    let api = client(&app, ADMIN_KEY);
    serving(&reads).await;
    let delay = Delay::set(&replica_url, Duration::from_secs(3)).await;
    api.post("/products")
        .body_json(&json!({"sku": "LAG-1", "name": "lag"}))
        .send()
        .await
        .assert_status(StatusCode::CREATED);
    let lagging = eventually(Duration::from_secs(5), "the replica to be avoided for its lag", || async {
        let state = reads.replica_state()?;
        (state.avoided == Some(Fallback::Lagging)).then_some(state)
    })
    .await;
    assert!(lagging.lag > Duration::from_secs(1), "{lagging:?}");
    let listed: Value = api.get("/products").send().await.0.into_body().into_json().await.unwrap();
    assert_eq!(listed["items"][0]["sku"], "LAG-1", "a lagging replica's reads go to the primary");
    let health: Value = api.get("/health/ready").send().await.0.into_body().into_json().await.unwrap();
    assert_eq!(
        (health["status"].as_str(), health["checks"]["replica"]["reason"].as_str()),
        (Some("ok"), Some("lagging"))
    );
    drop(delay);
    serving(&reads).await;
    drop(app);

    // A replica that does not answer: every read on the primary, none refused.
    env.config.vars.set("DATABASE_REPLICA_URL", "postgres://postgres@127.0.0.1:9/none?connect_timeout=1");
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    for path in ["/stores", "/products", "/sagas", "/stock-movements"] {
        api.get(path).send().await.assert_status_is_ok();
    }
    let health = api.get("/health/ready").send().await;
    health.assert_status_is_ok();
    let health: Value = health.0.into_body().into_json().await.unwrap();
    assert_eq!(health["checks"]["replica"]["status"], "down");
    drop(app);
    env.teardown().await;
}
