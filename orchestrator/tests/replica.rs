//! Reads that may lag, against the real replica `scripts/test` runs (`DATABASE_REPLICA_URL`):
//! which reads it serves, the consistency token while it replays late, the lag bound, the replica
//! stopped and started under reads and writes, replay paused, routing by each read's class, and a
//! replica that does not answer. One test, in
//! steps, since it slows, stops and starts the replica `scripts/test` runs.

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use orchestrator::{app::Roles, http::consistency::Token};
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

/// The replica `scripts/test` started from the Debian packages, stopped and started as it was.
struct ReplicaServer {
    bin: String,
    data: String,
    port: String,
}

impl ReplicaServer {
    async fn find(url: &str) -> Self {
        let mut conn = PgConnection::connect(url).await.expect("the replica answers");
        let (data, port, version): (String, String, String) = sqlx::query_as(
            "SELECT current_setting('data_directory'), current_setting('port'), current_setting('server_version_num')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let bin = format!("/usr/lib/postgresql/{}/bin", version.parse::<u32>().unwrap() / 10_000);
        assert!(
            std::path::Path::new(&data).is_dir() && std::path::Path::new(&bin).is_dir(),
            "the replica must run on this machine from Debian's packages, as scripts/test starts it \
             (data directory {data}, server binaries {bin})"
        );
        Self { bin, data, port }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout.trim_ascii() == b"0";
        let mut command = if root {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]);
            command.arg(format!("{}/pg_ctl", self.bin));
            command
        } else {
            std::process::Command::new(format!("{}/pg_ctl", self.bin))
        };
        let status = command.arg("-D").arg(&self.data).args(args).status().expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    fn start(&self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.data);
        let log = format!("{}/replica.log", self.data);
        self.pg_ctl(&["-w", "-l", &log, "-o", &options, "start"]);
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
    header.to_str().unwrap().parse::<Token>().expect("a token is a log position").0
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
    reader.get(&path).header("consistency-token", Token(written).to_string()).send().await.assert_status_is_ok();
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

    // Stopped and started again under reads: none refused, none older than the writer's token.
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let reads = app.context().reads.clone();
    serving(&reads).await;
    let server = ReplicaServer::find(&replica_url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for n in 0..4 {
        let (api, stop) = (client(&app, ADMIN_KEY), stop.clone());
        readers.spawn(async move {
            let mut refused = Vec::new();
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                let sku = format!("UNDER-LOAD-{n}-{done}");
                let made = api.post("/products").body_json(&json!({"sku": sku, "name": "load"})).send().await;
                let status = made.0.status();
                if status != StatusCode::CREATED {
                    refused.push(format!("POST /products: {status}"));
                    continue;
                }
                let id = made.0.into_body().into_json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
                // The writer's own read, and its list, see the write whatever the replica's state.
                let read = api.get(format!("/products/{id}")).send().await.0.status();
                if read != StatusCode::OK {
                    refused.push(format!("GET /products/{id} after writing it: {read}"));
                }
                done += 1;
            }
            (done, refused)
        });
    }
    // The lag the checker sees while four clients write as fast as they can.
    let mut most = Duration::ZERO;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        most = most.max(reads.replica_state().map_or(Duration::ZERO, |state| state.lag));
    }
    eprintln!("replica lag under four writing clients: at most {most:?} over 0.5 s");
    server.stop();
    eventually(Duration::from_secs(5), "the stopped replica to be avoided", || async {
        (reads.replica_state()?.avoided == Some(Fallback::Down)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.start();
    serving(&reads).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    while let Some(outcome) = readers.join_next().await {
        let (done, refused) = outcome.unwrap();
        assert!(refused.is_empty(), "answers other than success while the replica stopped and started: {refused:?}");
        total += done;
    }
    assert!(total > 10, "the readers wrote and read {total} times: the check would prove little");
    eprintln!("replica stopped and started under load: {total} writes, each read back at once, none refused");
    drop(app);

    // Replay paused (`pg_wal_replay_pause()`): avoided from the next check on, and a read with a
    // token newer than the replica goes to the primary; resumed, it serves again.
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let reads = app.context().reads.clone();
    let api = client(&app, ADMIN_KEY);
    serving(&reads).await;
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&mut replica).await.unwrap();
    let created = api.post("/stores").body_json(&json!({"name": "Paused", "service_area": "p"})).send().await;
    created.assert_status(StatusCode::CREATED);
    let written = token(&created);
    let store: Value = created.0.into_body().into_json().await.unwrap();
    let path = format!("/stores/{}", store["id"].as_str().unwrap());
    eventually(Duration::from_secs(2), "the paused replica to be avoided", || async {
        (reads.replica_state()?.avoided == Some(Fallback::Paused)).then_some(())
    })
    .await;
    let made = api.post("/api-keys").body_json(&json!({"name": "paused-reader", "role": "client"})).send().await;
    let made: Value = made.0.into_body().into_json().await.unwrap();
    let reader = client(&app, made["key"].as_str().unwrap());
    reader.get(&path).header("consistency-token", Token(written).to_string()).send().await.assert_status_is_ok();
    let health: Value = api.get("/health/ready").send().await.0.into_body().into_json().await.unwrap();
    assert_eq!(
        (health["status"].as_str(), health["checks"]["replica"]["reason"].as_str()),
        (Some("ok"), Some("paused"))
    );
    sqlx::query("SELECT pg_wal_replay_resume()").execute(&mut replica).await.unwrap();
    serving(&reads).await;

    // Routing by class: once the replica has replayed the key's last write, every read declared
    // as one that may lag goes to it.
    let latest = token(&api.post("/products").body_json(&json!({"sku": "CLASS-1", "name": "c"})).send().await);
    eventually(Duration::from_secs(10), "the replica to replay the key's last write", || async {
        (reads.replica_state()?.replayed >= latest).then_some(())
    })
    .await;
    let may_lag = [
        ("listStores", "/stores".to_owned()),
        ("getStore", path.clone()),
        ("listProducts", "/products".to_owned()),
        ("listSagas", "/sagas".to_owned()),
        ("sagaStats", "/sagas/stats".to_owned()),
        ("listStockMovements", "/stock-movements".to_owned()),
        ("listAudit", "/audit".to_owned()),
    ];
    let before = replica_reads(&api).await;
    for (_, path) in &may_lag {
        api.get(path).send().await.assert_status_is_ok();
    }
    // Stock is read fresh, through the cache: a cache miss fills from the primary, never from a
    // replica that may hold an older version.
    api.get(format!("{path}/inventory")).send().await.assert_status_is_ok();
    let after = replica_reads(&api).await;
    for (operation, path) in &may_lag {
        let count = |reads: &BTreeMap<String, u64>| reads.get(*operation).copied().unwrap_or(0);
        assert!(count(&after) > count(&before), "GET {path} ({operation}) may lag, yet it did not read the replica");
    }
    let moved: Vec<&String> = after.iter().filter(|(op, n)| before.get(*op) != Some(n)).map(|(op, _)| op).collect();
    assert_eq!(moved.len(), may_lag.len(), "only these reads reached the replica: {moved:?}");
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

    // A replica URL naming another database of the replica (a mistake in the URL): never read.
    let other = replica_url.rsplit_once('/').map(|(server, _)| format!("{server}/postgres")).unwrap();
    env.config.vars.set("DATABASE_REPLICA_URL", other);
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let reads = app.context().reads.clone();
    let api = client(&app, ADMIN_KEY);
    eventually(Duration::from_secs(5), "the other database to be found no copy of this one", || async {
        (reads.replica_state()?.avoided == Some(Fallback::Mismatch)).then_some(())
    })
    .await;
    for path in ["/stores", "/products", "/sagas", "/stock-movements"] {
        api.get(path).send().await.assert_status_is_ok();
    }
    let health: Value = api.get("/health/ready").send().await.0.into_body().into_json().await.unwrap();
    assert_eq!(
        (health["status"].as_str(), health["checks"]["replica"]["reason"].as_str()),
        (Some("ok"), Some("mismatch"))
    );
    drop(app);
    env.teardown().await;
}

/// Reads served by the replica so far, by operation, from `/metrics`.
async fn replica_reads(api: &poem::test::TestClient<impl poem::Endpoint>) -> BTreeMap<String, u64> {
    let text = api.get("/metrics").send().await.0.into_body().into_string().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("db_reads_total{") && line.contains(r#"target="replica""#))
        .filter_map(|line| {
            let operation = line.split(r#"operation=""#).nth(1)?.split('"').next()?.to_owned();
            Some((operation, line.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}
