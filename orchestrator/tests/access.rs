//! The door of the API: every operation of the spec answers each role exactly as
//! the role its handler declares, and docs/api.md says; keys are made, shown once, revoked everywhere
//! within the bound; rate limits hold per key, in Redis and without it; the audit keeps every
//! change and cannot be changed itself.

mod support;

use std::{collections::BTreeSet, time::Duration};

use orchestrator::{
    access::{
        keys,
        limit::{Bucket, Limiter, take_token},
    },
    app::Roles,
    http::{access::operations, role::Access},
};
use platform::{
    config::{Budget, RateLimits, Secret},
    messaging::relay::RelayFaults,
    redis::Redis,
};
use poem::{http::StatusCode, test::TestResponse};
use serde_json::{Value, json};
use support::{ADMIN_KEY, Client, TestEnv, client, eventually, make_key};
use uuid::Uuid;

async fn json_body(response: TestResponse) -> Value {
    response.0.into_body().into_json().await.unwrap_or(Value::Null)
}

/// A concrete path for a spec path: every parameter a fresh UUID (or an id number).
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{id}" if path.starts_with("/dead-letters") => "1".to_owned(),
            s if s.starts_with('{') => Uuid::new_v4().to_string(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(api: &Client, method: &str, path: &str) -> StatusCode {
    let path = concrete(path);
    let request = match method {
        "GET" => api.get(&path),
        "POST" => api.post(&path),
        "PUT" => api.put(&path),
        "DELETE" => api.delete(&path),
        other => panic!("no method {other} in the spec"),
    };
    // A body the schema refuses: the door answers before the body is read, and an allowed
    // request then fails on its body, never with 401 or 403.
    let request = if matches!(method, "POST" | "PUT") { request.body_json(&json!({})) } else { request };
    request.send().await.0.status()
}

#[tokio::test]
async fn every_operation_answers_each_role_as_the_table_says() {
    let env = TestEnv::new().await;
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let admin = client(&app, ADMIN_KEY);
    let principals = [
        ("no key", None, client(&app, "")),
        ("an unknown key", None, client(&app, "dsk_not-a-key-anyone-ever-made-0123456789abcdef")),
        ("client", Some(orchestrator::access::Role::Client), client(&app, &make_key(&admin, "c", "client").await)),
        (
            "operator",
            Some(orchestrator::access::Role::Operator),
            client(&app, &make_key(&admin, "o", "operator").await),
        ),
        ("admin", Some(orchestrator::access::Role::Admin), admin),
    ];
    let spec: Value = serde_json::from_str(&orchestrator::http::spec(app.context())).unwrap();
    let declared = operations(&spec);
    assert_eq!(
        declared.len(),
        spec["paths"].as_object().unwrap().values().map(|i| i.as_object().unwrap().len()).sum::<usize>()
    );
    for (method, path, access) in declared {
        {
            for (who, role, api) in &principals {
                let status = call(api, &method, &path).await;
                let expected = match (access, role) {
                    (Access::Public, _) => None,
                    (Access::Needs(_), None) => Some(StatusCode::UNAUTHORIZED),
                    (Access::Needs(needed), Some(role)) if role < &needed => Some(StatusCode::FORBIDDEN),
                    (Access::Needs(_), Some(_)) => None,
                };
                match expected {
                    Some(expected) => assert_eq!(status, expected, "{method} {path} as {who}"),
                    None => assert!(
                        status != StatusCode::UNAUTHORIZED
                            && status != StatusCode::FORBIDDEN
                            && !status.is_server_error(),
                        "{method} {path} as {who}: {status}"
                    ),
                }
            }
        }
    }
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn the_api_documents_table_says_what_the_code_says() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    let rows: BTreeSet<(String, String, String)> = readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", method @ ("GET" | "POST" | "PUT" | "DELETE"), path, role, ..]
                    if path.starts_with('`') && ["public", "client", "operator", "admin"].contains(role) =>
                {
                    Some(((*method).to_owned(), path.trim_matches('`').to_owned(), (*role).to_owned()))
                }
                _ => None,
            }
        })
        .collect();
    let config = platform::config::Config::default();
    let spec: Value =
        serde_json::from_str(&orchestrator::http::spec(&orchestrator::Context::offline(&config).unwrap())).unwrap();
    let code: BTreeSet<(String, String, String)> =
        operations(&spec).into_iter().map(|(method, path, access)| (method, path, access.name().to_owned())).collect();
    let missing: Vec<String> = code.difference(&rows).map(|(m, p, r)| format!("| {m} | `{p}` | {r} | … |")).collect();
    assert_eq!(
        rows,
        code,
        "the API table of docs/api.md and the roles the handlers declare disagree; the code's rows it lacks:\n{}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn a_key_is_shown_once_stored_as_a_hash_and_revoked_on_every_instance_within_seconds() {
    let env = TestEnv::new().await;
    let roles = Roles { api: true, engine: false, workers: Vec::new() };
    let (one, two) = (
        env.start(roles.clone(), RelayFaults::default()).await,
        env.start(roles.clone(), RelayFaults::default()).await,
    );
    let admin = client(&one, ADMIN_KEY);
    let made = admin.post("/api-keys").body_json(&json!({"name": "picker-1", "role": "client"})).send().await;
    made.assert_status(StatusCode::CREATED);
    let made = json_body(made).await;
    let secret = made["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("dsk_") && secret.len() >= 40, "{made}");

    // The secret is nowhere: not in the list, not in the database.
    let listed = json_body(admin.get("/api-keys").send().await).await;
    assert!(!listed.to_string().contains(&secret) && listed.to_string().contains("picker-1"), "{listed}");
    let pool = env.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM api_key WHERE position($1::bytea IN secret_sha256) > 0")
        .bind(secret.as_bytes())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // A name in use cannot be taken again; a malformed one is refused.
    let again = admin.post("/api-keys").body_json(&json!({"name": "picker-1", "role": "admin"})).send().await;
    again.assert_status(StatusCode::CONFLICT);
    let spaced = admin.post("/api-keys").body_json(&json!({"name": "picker 1", "role": "client"})).send().await;
    spaced.assert_status(StatusCode::BAD_REQUEST);

    // The new key works on the other instance within its reload.
    let on_two = client(&two, &secret);
    eventually(Duration::from_secs(5), "the key known to the second instance", || async {
        (on_two.get("/stores").send().await.0.status() == StatusCode::OK).then_some(())
    })
    .await;

    // Revoked on one instance: refused there at once, and on the other within the bound.
    let id = made["id"].as_str().unwrap();
    admin.delete(format!("/api-keys/{id}")).send().await.assert_status(StatusCode::NO_CONTENT);
    client(&one, &secret).get("/stores").send().await.assert_status(StatusCode::UNAUTHORIZED);
    let started = tokio::time::Instant::now();
    eventually(Duration::from_secs(5), "the revoked key refused on the second instance", || async {
        (on_two.get("/stores").send().await.0.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    eprintln!("revocation reached the second instance in {:?}", started.elapsed());
    // Revoking again changes nothing. An admin cannot revoke the key it acts with.
    admin.delete(format!("/api-keys/{id}")).send().await.assert_status(StatusCode::NO_CONTENT);
    let own: Uuid =
        sqlx::query_scalar("SELECT id FROM api_key WHERE name LIKE 'bootstrap-%'").fetch_one(&pool).await.unwrap();
    admin.delete(format!("/api-keys/{own}")).send().await.assert_status(StatusCode::CONFLICT);
    // Two admins revoking each other at once, each instance still trusting the other's key for
    // up to a second: the second revocation is refused, so an admin key always remains.
    make_key(&admin, "root-2", "admin").await;
    let other: Uuid =
        sqlx::query_scalar("SELECT id FROM api_key WHERE name = 'root-2'").fetch_one(&pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    keys::revoke(&mut tx, other, own).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let refused = keys::revoke(&mut tx, own, other).await.expect_err("the last admin key stays");
    assert!(refused.to_string().contains("last admin key"), "{refused}");
    drop(tx);

    one.stop().await;
    two.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_fresh_deployment_makes_one_admin_key_and_a_configured_one_is_honoured() {
    let mut env = TestEnv::new().await;
    env.config.api.bootstrap_admin_key = None;
    let roles = Roles { api: true, engine: false, workers: Vec::new() };
    let first = env.start(roles.clone(), RelayFaults::default()).await;
    let second = env.start(roles.clone(), RelayFaults::default()).await;
    let pool = env.pool().await;
    let admins: Vec<String> = sqlx::query_scalar("SELECT name FROM api_key").fetch_all(&pool).await.unwrap();
    assert_eq!(admins, ["admin"], "one key made, however many instances start");
    first.stop().await;
    second.stop().await;

    // A configured secret becomes an admin key; revoked, it stays revoked across restarts.
    env.config.api.bootstrap_admin_key = Some(Secret("a-configured-secret-0123456789abcdefghij".into()));
    let app = env.start(roles.clone(), RelayFaults::default()).await;
    client(&app, "a-configured-secret-0123456789abcdefghij").get("/api-keys").send().await.assert_status_is_ok();
    sqlx::query("UPDATE api_key SET revoked_at = now() WHERE name LIKE 'bootstrap-%'").execute(&pool).await.unwrap();
    app.stop().await;
    let app = env.start(roles.clone(), RelayFaults::default()).await;
    client(&app, "a-configured-secret-0123456789abcdefghij")
        .get("/stores")
        .send()
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn the_audit_keeps_changes_and_refusals_and_cannot_be_rewritten() {
    let env = TestEnv::new().await;
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let admin = client(&app, ADMIN_KEY);
    let picker = client(&app, &make_key(&admin, "picker-9", "client").await);
    let store =
        json_body(admin.post("/stores").body_json(&json!({"name": "Soho", "service_area": "W1"})).send().await).await;
    let store_id = store["id"].as_str().unwrap();
    // Refused for its role, for a value, for a state: each on record. An anonymous 401 is not.
    picker
        .post("/stores")
        .body_json(&json!({"name": "Mine", "service_area": "W2"}))
        .send()
        .await
        .assert_status(StatusCode::FORBIDDEN);
    picker.get("/sagas").send().await.assert_status(StatusCode::FORBIDDEN);
    let twice = json!({"store_id": store_id, "items": [{"product_id": Uuid::nil(), "quantity": 1}, {"product_id": Uuid::nil(), "quantity": 1}]});
    picker.post("/orders").body_json(&twice).send().await.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    client(&app, "").post("/stores").body_json(&json!({})).send().await.assert_status(StatusCode::UNAUTHORIZED);

    let page = json_body(admin.get("/audit?limit=10").send().await).await;
    let rows: Vec<(String, String, String, u64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key_name"].as_str().unwrap().into(),
                e["method"].as_str().unwrap().into(),
                e["route"].as_str().unwrap().into(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let picker = "picker-9".to_owned();
    assert_eq!(
        rows[..3],
        [
            (picker.clone(), "POST".into(), "/orders".into(), 422),
            (picker.clone(), "GET".into(), "/sagas".into(), 403),
            (picker, "POST".into(), "/stores".into(), 403),
        ],
        "newest first: {page:#}"
    );
    assert!(rows[3].0.starts_with("bootstrap-") && rows[3].1 == "POST" && rows[3].2 == "/stores" && rows[3].3 == 201);
    // The key made for the picker is on record too, with the admin that made it.
    assert_eq!((rows[4].2.as_str(), rows[4].3), ("/api-keys", 201), "{page:#}");
    assert_eq!(rows.len(), 5, "the anonymous 401 is not on record: {page:#}");
    assert_eq!(page["items"][3]["ids"]["store_id"], store_id);
    let by_route = json_body(admin.get("/audit?route=%2Fstores&status=201").send().await).await;
    assert_eq!(by_route["items"].as_array().unwrap().len(), 1, "{by_route:#}");

    // The database itself refuses to rewrite it.
    let pool = env.pool().await;
    for statement in ["UPDATE audit SET status = 200", "DELETE FROM audit", "TRUNCATE audit"] {
        let refused = sqlx::query(statement).execute(&pool).await.expect_err(statement);
        assert!(refused.to_string().contains("append-only"), "{statement}: {refused}");
    }
    app.stop().await;
    env.teardown().await;
}

const BUDGET: Budget = Budget { per_second: 5, burst: 4 };

#[tokio::test]
async fn a_key_over_its_budget_is_told_when_to_come_back_while_others_are_served() {
    let mut env = TestEnv::new().await;
    env.config.api.rate_limits =
        RateLimits { anonymous: BUDGET, client: BUDGET, operator: BUDGET, admin: support::UNLIMITED };
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let admin = client(&app, ADMIN_KEY);
    let (a, b) =
        (client(&app, &make_key(&admin, "a", "client").await), client(&app, &make_key(&admin, "b", "client").await));
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(a.get("/stores").send().await);
    }
    let ok = statuses.iter().filter(|r| r.0.status() == StatusCode::OK).count();
    assert!((4..=5).contains(&ok), "a burst of 4 (and perhaps one refilled): {ok}");
    let limited = statuses.into_iter().find(|r| r.0.status() == StatusCode::TOO_MANY_REQUESTS).expect("a 429");
    limited.assert_header("retry-after", "1");
    limited.assert_header("ratelimit-limit", "4");
    limited.assert_header("ratelimit-remaining", "0");
    limited.assert_header("content-type", "application/problem+json");
    // Another key's bucket is its own; so is each address's for requests without a key.
    let served = b.get("/stores").send().await;
    served.assert_status_is_ok();
    served.assert_header("ratelimit-limit", "4");
    served.assert_header("ratelimit-remaining", "3");
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn redis_and_the_in_process_buckets_count_alike_and_redis_down_still_limits() {
    let config = platform::config::Config::from_env().unwrap();
    let namespace = format!("test-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let bucket = Bucket::Key(Uuid::new_v4());
    // The same requests, at the same pace, through Redis's script (on Redis's clock) and the
    // Rust arithmetic (on the intended times). Time passes by setting the bucket's last count to
    // Redis's now less each pause, as if exactly the pause had been waited, whatever time the
    // test itself took; a limiter of its own for each request knows nothing in process, so
    // Redis's script decides. The pauses leave every bucket at least 0.3 of a token away from a
    // whole number, so the milliseconds between setting the clock and counting decide nothing.
    let pace = Budget { per_second: 10, burst: 3 };
    let budgets = RateLimits { anonymous: pace, client: pace, operator: pace, admin: pace };
    let key = bucket.redis_key(&namespace);
    let redis = deadpool_redis::redis::Client::open(config.redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let mut state = None;
    let mut at = 0;
    for (i, pause) in [0u64, 0, 0, 0, 150, 0, 120, 0, 350, 0, 0, 0].into_iter().enumerate() {
        let shared = Limiter::new(Redis::new(&config.redis_url).unwrap(), &namespace, budgets);
        if state.is_some() {
            let (seconds, micros): (i64, i64) =
                deadpool_redis::redis::cmd("TIME").query_async(&mut conn).await.unwrap();
            let last = seconds * 1000 + micros / 1000 - pause as i64;
            let _: i64 =
                deadpool_redis::redis::cmd("HSET").arg(&key).arg("at").arg(last).query_async(&mut conn).await.unwrap();
        }
        at += pause;
        let decision = shared.take(&bucket, None).await;
        let (next, taken) = take_token(state, at, pace);
        state = Some(next);
        assert_eq!((decision.allowed, decision.remaining), (taken, next.0.floor() as u32), "request {i} at {at} ms");
    }
    // Redis unreachable: each process keeps its own buckets, and still refuses past the burst.
    let budgets = RateLimits { anonymous: BUDGET, client: BUDGET, operator: BUDGET, admin: BUDGET };
    let alone = Limiter::new(Redis::new("redis://127.0.0.1:1").unwrap(), &namespace, budgets);
    let decisions: Vec<bool> = futures_util::future::join_all((0..8).map(|_| alone.take(&bucket, None)))
        .await
        .iter()
        .map(|d| d.allowed)
        .collect();
    assert_eq!(decisions.iter().filter(|allowed| **allowed).count(), 4, "{decisions:?}");
}

#[tokio::test]
async fn a_flood_is_refused_in_process_until_a_token_can_have_appeared() {
    let config = platform::config::Config::from_env().unwrap();
    let namespace = format!("test-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let slow = Budget { per_second: 2, burst: 1 };
    let limiter = Limiter::new(
        Redis::new(&config.redis_url).unwrap(),
        &namespace,
        RateLimits { anonymous: slow, client: slow, operator: slow, admin: slow },
    );
    let bucket = Bucket::Key(Uuid::new_v4());
    assert!(limiter.take(&bucket, None).await.allowed);
    let refused = limiter.take(&bucket, None).await;
    assert!(!refused.allowed && refused.retry_after_secs == 1, "{refused:?}");
    // Redis forgets the bucket (as if it had refilled): this process still knows that no token
    // can be there for another half second, and refuses without asking.
    let key = bucket.redis_key(&namespace);
    let client = deadpool_redis::redis::Client::open(config.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = deadpool_redis::redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    let refused_at = std::time::Instant::now();
    assert!(!limiter.take(&bucket, None).await.allowed, "refused in process");
    support::eventually(Duration::from_secs(3), "a token to appear", || async {
        limiter.take(&bucket, None).await.allowed.then_some(())
    })
    .await;
    let waited = refused_at.elapsed();
    assert!(waited >= Duration::from_millis(400), "allowed again after {waited:?}, before a token could be there");
}

/// A budget of 2 requests at once, refilled at 1 a second.
const TIGHT: Budget = Budget { per_second: 1, burst: 2 };

#[tokio::test]
async fn every_request_is_charged_and_a_known_keys_refusals_are_on_record() {
    let mut env = TestEnv::new().await;
    env.config.api.rate_limits =
        RateLimits { anonymous: TIGHT, client: TIGHT, operator: TIGHT, admin: support::UNLIMITED };
    env.config.api.cors_origins = vec!["https://ops.example.com".into()];
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let admin = client(&app, ADMIN_KEY);
    let anonymous = support::anonymous(&app);
    let status = |response: TestResponse| response.0.status().as_u16();

    // A method no operation has, and a CORS preflight, draw on the budget like any request: two
    // of them empty the anonymous bucket, and a health check is then a 429.
    assert_eq!(status(anonymous.request(poem::http::Method::PATCH, "/orders").send().await), 405);
    let preflight = anonymous
        .request(poem::http::Method::OPTIONS, "/orders")
        .header("Origin", "https://ops.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await;
    preflight.assert_header("access-control-allow-origin", "https://ops.example.com");
    assert_eq!(status(anonymous.get("/health/live").send().await), 429);
    // Over budget, a request without any key still learns that it needs one: 401, not 429.
    let without = anonymous.get("/stores").send().await;
    without.assert_status(StatusCode::UNAUTHORIZED);
    without.assert_header("ratelimit-remaining", "0");
    // A key that is not valid is charged to the same bucket, and refused for its budget first:
    // guessing keys is as slow as the budget allows.
    let guess = client(&app, &format!("dsk_{}", "x".repeat(43))).get("/stores").send().await;
    assert_eq!(status(guess), 429);

    // A known key's refusals are on record: a method the path lacks, and an origin CORS refuses.
    let operator = client(&app, &make_key(&admin, "ops-1", "operator").await);
    assert_eq!(status(operator.request(poem::http::Method::PATCH, "/stores").send().await), 405);
    let foreign = operator.get("/stores").header("Origin", "https://evil.example").send().await;
    assert_eq!(status(foreign), 403, "CORS refuses an origin it was not given");
    assert_eq!(status(operator.get("/stores").send().await), 429, "both refusals were charged");
    let page = json_body(admin.get("/audit?limit=2").send().await).await;
    let rows: Vec<(&str, &str, &str, u64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |field: &str| e[field].as_str().unwrap();
            (text("key_name"), text("method"), text("route"), e["status"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(rows, [("ops-1", "GET", "/stores", 403), ("ops-1", "PATCH", "/stores", 405)], "{page:#}");
    app.stop().await;
    env.teardown().await;
}
