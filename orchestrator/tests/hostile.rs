//! The API as a hostile client meets it: every text field and filter given a NUL, a number or a
//! boolean; undecodable headers; invented methods by the thousand; malformed, half-sent and
//! endless requests; a database that refuses, drops or restarts under it. Every answer is a clear
//! 4xx (or the promised 503), the process stays bounded, and nothing is silently ignored.

mod support;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use orchestrator::app::Roles;
use platform::messaging::relay::RelayFaults;
use poem::{
    http::{HeaderValue, StatusCode},
    test::TestResponse,
};
use serde_json::{Map, Value, json};
use support::{ADMIN_KEY, Client, TestEnv, client};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Mutex,
};
use uuid::Uuid;

const API_ONLY: Roles = Roles { api: true, engine: false, workers: Vec::new() };

async fn problem(response: TestResponse, status: StatusCode, doing: &str) -> Value {
    let actual = response.0.status();
    let content_type = response.0.headers().get("content-type").cloned();
    let body: Value = response.0.into_body().into_json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "{doing}: {body}");
    assert_eq!(content_type.as_ref().and_then(|v| v.to_str().ok()), Some("application/problem+json"), "{doing}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{doing}: a problem says what went wrong: {body}");
    body
}

/// A value the schema accepts, for each field the schema names.
fn example(spec: &Value, schema: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return example(spec, &spec["components"]["schemas"][name]);
    }
    if let Some(first) =
        schema["oneOf"].as_array().and_then(|s| s.first()).or(schema["allOf"].as_array().and_then(|s| s.first()))
    {
        return example(spec, first);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("string") => match schema["format"].as_str() {
            Some("uuid") => json!(Uuid::new_v4()),
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            _ => json!("x"),
        },
        Some("integer") => json!(schema["minimum"].as_f64().map_or(1, |m| m.max(1.0) as i64)),
        Some("boolean") => json!(true),
        Some("array") => json!([example(spec, &schema["items"])]),
        _ => Value::Object(
            schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), example(spec, property)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// JSON pointers to every plain text field of `value` as built by [`example`] from `schema`.
fn text_fields(spec: &Value, schema: &Value, at: &str, into: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return text_fields(spec, &spec["components"]["schemas"][name], at, into);
    }
    match schema["type"].as_str() {
        Some("string") if schema["format"].is_null() && schema["enum"].is_null() => into.push(at.to_owned()),
        Some("array") => text_fields(spec, &schema["items"], &format!("{at}/0"), into),
        _ => {
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                text_fields(spec, property, &format!("{at}/{name}"), into);
            }
        }
    }
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') {
                if path.starts_with("/dead-letters") { "1".into() } else { Uuid::new_v4().to_string() }
            } else {
                s.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn text_is_text_everywhere_a_nul_a_number_or_a_boolean_is_a_400() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let spec: Value = serde_json::from_str(&orchestrator::http::spec(app.context())).unwrap();
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            // Every text field of every request body.
            if let Some(schema) = operation
                .pointer("/requestBody/content")
                .and_then(|c| c.as_object())
                .and_then(|c| c.values().next())
                .map(|m| &m["schema"])
            {
                let mut fields = Vec::new();
                text_fields(&spec, schema, "", &mut fields);
                for field in fields {
                    for hostile in
                        [json!("nul \u{0} inside"), json!(123), json!(12300000000000000000000.0), json!(false)]
                    {
                        let mut body = example(&spec, schema);
                        *body.pointer_mut(&field).unwrap() = hostile.clone();
                        let request = match method.as_str() {
                            "post" => api.post(concrete(path)),
                            "put" => api.put(concrete(path)),
                            other => panic!("a body on {other}"),
                        };
                        let doing = format!("{method} {path} with {field} = {hostile}");
                        problem(request.body_json(&body).send().await, StatusCode::BAD_REQUEST, &doing).await;
                        checked += 1;
                    }
                }
            }
            // Every text filter.
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "query"
                    && parameter["schema"]["type"] == "string"
                    && parameter["schema"]["format"].is_null()
                {
                    let name = parameter["name"].as_str().unwrap();
                    let doing = format!("{method} {path} with ?{name}=a%00b");
                    problem(
                        api.get(format!("{}?{name}=a%00b", concrete(path))).send().await,
                        StatusCode::BAD_REQUEST,
                        &doing,
                    )
                    .await;
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} inputs were tried");
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_idempotency_key_that_cannot_be_read_is_refused_not_ignored() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let (store_id, product_id) = support::stocked_store(&api).await;
    let order = json!({"store_id": store_id, "items": [{"product_id": product_id, "quantity": 1}]});
    let keys: [&[u8]; 4] = ["ключ-1".as_bytes(), b"caf\xe9", b"with space", &[b'k'; 256]];
    for key in keys {
        for _ in 0..2 {
            let sent = api
                .post("/orders")
                .header("Idempotency-Key", HeaderValue::from_bytes(key).unwrap())
                .body_json(&order)
                .send()
                .await;
            problem(sent, StatusCode::BAD_REQUEST, &format!("Idempotency-Key {:?}", String::from_utf8_lossy(key)))
                .await;
        }
    }
    let twice = api
        .post("/orders")
        .header("Idempotency-Key", "k-1")
        .header("Idempotency-Key", "k-2")
        .body_json(&order)
        .send()
        .await;
    problem(twice, StatusCode::BAD_REQUEST, "two Idempotency-Keys").await;
    let placed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_order").fetch_one(&env.pool().await).await.unwrap();
    assert_eq!(placed, 0, "no order was placed without its key");
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn numbers_carry_the_bounds_the_server_enforces() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let (store, product) = (Uuid::new_v4(), Uuid::new_v4());
    let inventory = format!("/stores/{store}/inventory/{product}");
    for body in [
        json!({"on_hand": 1_000_000_001_i64, "reorder_threshold": 1, "target_level": 10}),
        json!({"on_hand": -1, "reorder_threshold": 1, "target_level": 10}),
        json!({"on_hand": 1.5, "reorder_threshold": 1, "target_level": 10}),
        json!({"on_hand": "5", "reorder_threshold": 1, "target_level": 10}),
        json!({"on_hand": 99999999999999999999999_f64, "reorder_threshold": 1, "target_level": 10}),
    ] {
        problem(api.put(&inventory).body_json(&body).send().await, StatusCode::BAD_REQUEST, &body.to_string()).await;
    }
    for delta in [json!(0), json!(1_000_000_001_i64), json!(-1_000_000_001_i64), json!(true)] {
        let body = json!({"delta": delta, "reason": "count"});
        problem(
            api.post(format!("{inventory}/adjustments")).body_json(&body).send().await,
            StatusCode::BAD_REQUEST,
            &body.to_string(),
        )
        .await;
    }
    for limit in ["0", "501", "-1", "1e3", "99999999999"] {
        problem(api.get(format!("/stores?limit={limit}")).send().await, StatusCode::BAD_REQUEST, limit).await;
    }
    for query in ["?foo=1", "?limit=1&limit=2", "?store_id=x"] {
        problem(api.get(format!("/stock-movements{query}")).send().await, StatusCode::BAD_REQUEST, query).await;
    }
    // An optional field is left out or given a value: `null` is neither, and is refused.
    for price in [json!(null), json!(-1), json!(100_000_001), json!("100")] {
        let body = json!({"sku": "NULL-PRICE", "name": "Milk", "price_cents": price});
        problem(api.post("/products").body_json(&body).send().await, StatusCode::BAD_REQUEST, &body.to_string()).await;
    }
    let body = json!({"store_id": store, "product_id": product, "quantity": 1, "reason": null});
    problem(api.post("/replenishments").body_json(&body).send().await, StatusCode::BAD_REQUEST, "a null reason").await;
    let created = api.post("/products").body_json(&json!({"sku": "NO-PRICE", "name": "Milk"})).send().await;
    created.assert_status(StatusCode::CREATED);
    let created: Value = created.json().await.value().deserialize();
    assert_eq!(created["price_cents"], 100, "a product without a price costs the default: {created}");
    // A body where the operation takes none is refused, not ignored.
    problem(
        api.post(format!("/orders/{}/cancel", Uuid::new_v4())).body_json(&json!({"reason": "x"})).send().await,
        StatusCode::BAD_REQUEST,
        "a body on cancel",
    )
    .await;
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_order_costing_more_than_can_be_summed_is_a_422_and_reserves_nothing() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let store = api.post("/stores").body_json(&json!({"name": "Vault", "service_area": "C1"})).send().await;
    store.assert_status(StatusCode::CREATED);
    let store: Value = store.json().await.value().deserialize();
    let store = store["id"].as_str().unwrap().to_owned();
    // A hundred lines at the highest price and quantity the spec allows: their sum is 10^19
    // cents, past what 64 bits hold (it used to wrap to a negative amount, and be accepted).
    let mut items = Vec::new();
    for n in 0..100 {
        let body = json!({"sku": format!("GOLD-{n}"), "name": "Gold bar", "price_cents": 100_000_000});
        let product = api.post("/products").body_json(&body).send().await;
        product.assert_status(StatusCode::CREATED);
        let product: Value = product.json().await.value().deserialize();
        let id = product["id"].as_str().unwrap().to_owned();
        let levels = json!({"on_hand": 1_000_000_000, "reorder_threshold": 0, "target_level": 1_000_000_000});
        api.put(format!("/stores/{store}/inventory/{id}")).body_json(&levels).send().await.assert_status_is_ok();
        items.push(json!({"product_id": id, "quantity": 1_000_000_000}));
    }
    let order = json!({"store_id": store, "items": items});
    let refused =
        problem(api.post("/orders").body_json(&order).send().await, StatusCode::UNPROCESSABLE_ENTITY, "").await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("10000000000000000000 cents") && detail.contains("most one order may cost"), "{detail}");
    // Nothing was reserved, and no order or saga was made.
    let stock = api.get(format!("/stores/{store}/inventory")).send().await;
    let stock: Value = stock.json().await.value().deserialize();
    assert!(stock["items"].as_array().unwrap().iter().all(|level| level["reserved"] == 0), "{stock}");
    let pool = env.pool().await;
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_order").fetch_one(&pool).await.unwrap();
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM saga").fetch_one(&pool).await.unwrap();
    assert_eq!((orders, sagas), (0, 0));
    // One line at those bounds is 10^17 cents, over the maximum too: the same 422.
    let one = json!({"store_id": store, "items": [items[0]]});
    problem(api.post("/orders").body_json(&one).send().await, StatusCode::UNPROCESSABLE_ENTITY, "one line").await;
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_id_has_one_spelling_in_paths_queries_and_bodies() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let (store, product) = support::stocked_store(&api).await;
    let id: Uuid = store.parse().unwrap();
    let spellings =
        [id.to_string().to_uppercase(), id.simple().to_string(), id.braced().to_string(), id.urn().to_string()];
    for other in &spellings {
        let encoded: String = form_urlencoded::byte_serialize(other.as_bytes()).collect();
        problem(api.get(format!("/stores/{encoded}")).send().await, StatusCode::BAD_REQUEST, other).await;
        let query = format!("/stock-movements?store_id={encoded}");
        problem(api.get(query).send().await, StatusCode::BAD_REQUEST, other).await;
        let order = json!({"store_id": other, "items": [{"product_id": product, "quantity": 1}]});
        problem(api.post("/orders").body_json(&order).send().await, StatusCode::BAD_REQUEST, other).await;
        let by_hand = json!({"store_id": store, "product_id": other, "quantity": 1});
        problem(api.post("/replenishments").body_json(&by_hand).send().await, StatusCode::BAD_REQUEST, other).await;
    }
    // No other spelling reached the audit: a search by the id finds every change that named it.
    let audit: Value = api.get("/audit?limit=100").send().await.json().await.value().deserialize();
    for entry in audit["items"].as_array().unwrap() {
        for value in entry["ids"].as_object().unwrap().values() {
            let text = value.as_str().unwrap_or_default();
            assert!(!spellings.iter().any(|s| s == text), "the audit kept another spelling: {entry}");
        }
    }
    api.get(format!("/stores/{store}")).send().await.assert_status_is_ok();
    app.stop().await;
    env.teardown().await;
}

/// A parameter that cannot be read is named as the spec names it, and the answer says what a valid
/// value looks like, in the API's words rather than the framework's.
#[tokio::test]
async fn an_unreadable_parameter_is_named_as_the_spec_names_it() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let cases = [
        ("/sagas/null", "path parameter `id` must be"),
        ("/stores/00000000-0000-0000-0000-000000000000/inventory/null", "path parameter `product_id` must be"),
        ("/stores/null/inventory/00000000-0000-0000-0000-000000000000", "path parameter `store_id` must be"),
        ("/warehouse/stock/null", "path parameter `product_id` must be an id, such as "),
        ("/dead-letters/abc", "path parameter `id` must be a whole number"),
        ("/sagas?store_id=null", "parameter `store_id` must be"),
        ("/sagas?limit=abc", "parameter `limit` must be a whole number from 1 to 500"),
    ];
    for (path, says) in cases {
        let body = problem(api.get(path).send().await, StatusCode::BAD_REQUEST, path).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with(says), "{path}: {detail}");
        for internal in ["param0", "param1", "failed to parse", "occurred while", "string_uuid", "integer_int64"] {
            assert!(!detail.contains(internal), "{path}: the answer speaks the framework's words: {detail}");
        }
    }
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_body_that_names_a_key_twice_is_a_400_not_its_last_value() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let twice = r#"{"name":"e10","role":"client","role":"admin"}"#;
    let response = api.post("/api-keys").content_type("application/json").body(twice).send().await;
    let refused = problem(response, StatusCode::BAD_REQUEST, "a repeated role").await;
    assert!(refused["detail"].as_str().unwrap().contains("\"role\""), "{refused}");
    let keys: Value = api.get("/api-keys").send().await.json().await.value().deserialize();
    assert!(keys["items"].as_array().unwrap().iter().all(|k| k["name"] != "e10"), "no key was made: {keys}");
    let nested = r#"{"store_id":"00000000-0000-0000-0000-000000000000","items":[{"product_id":"00000000-0000-0000-0000-000000000000","quantity":1,"quantity":9}]}"#;
    let response = api.post("/orders").content_type("application/json").body(nested).send().await;
    problem(response, StatusCode::BAD_REQUEST, "a repeated quantity").await;
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn invented_methods_are_a_405_with_allow_and_grow_no_metric_series() {
    let env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let before = api.get("/metrics").send().await.0.into_body().into_string().await.unwrap().len();
    for i in 0..2000 {
        let method = poem::http::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        let response = api.request(method, "/stores").send().await;
        if i == 0 {
            response.assert_header("allow", "GET, POST");
            problem(response, StatusCode::METHOD_NOT_ALLOWED, "an invented method").await;
        }
    }
    for method in ["TRACE", "PATCH", "OPTIONS", "HEAD"] {
        let response = api.request(poem::http::Method::from_bytes(method.as_bytes()).unwrap(), "/orders").send().await;
        response.assert_status(StatusCode::METHOD_NOT_ALLOWED);
        response.assert_header("allow", "POST");
    }
    let after = api.get("/metrics").send().await.0.into_body().into_string().await.unwrap();
    assert!(
        after.len() < before + 20_000,
        "2,000 invented methods grew /metrics from {before} to {} bytes",
        after.len()
    );
    assert!(!after.contains("method=\"M1"), "an invented method became a label");
    app.stop().await;
    env.teardown().await;
}

/// Sends raw bytes to a real listening server and returns what it answered before closing, or
/// before `wait`.
async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, Duration) {
    let started = tokio::time::Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test]
async fn malformed_half_sent_and_endless_requests_are_bounded() {
    let mut env = TestEnv::new().await;
    env.config.api.read_timeout = Duration::from_millis(600);
    env.config.api.max_connections = 4;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let addr = app.addr().unwrap();
    let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");

    let chunked = format!(
        "POST /stores HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n"
    );
    let (answer, _) = raw(addr, chunked.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "a malformed chunk size: {answer}");

    let (answer, took) = raw(addr, b"GET /stores HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(5)).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(3), "half-sent headers held the connection for {took:?}");

    let half_body = format!(
        "POST /stores HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na"
    );
    let (answer, took) = raw(addr, half_body.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "a half-sent body: {answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Four idle connections fill the server; a fifth is served at once, the longest-idle one
    // closed to make room, and none is held longer than the read timeout.
    // Each is answered once first, so the server has surely taken it in: idle, kept alive.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "an idle connection's first answer");
        idle.push(stream);
    }
    let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (answer, took) = raw(addr, request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_millis(500), "the fifth connection waited {took:?}");
    for mut stream in idle {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "an idle connection was kept open");
    }
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn cors_stays_closed_unless_configured_and_answers_carry_security_headers() {
    let mut env = TestEnv::new().await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    async fn preflight(api: &Client, origin: &'static str) -> TestResponse {
        api.request(poem::http::Method::OPTIONS, "/orders/00000000-0000-0000-0000-000000000000/cancel")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
    }
    let closed = preflight(&api, "https://evil.example").await;
    assert!(closed.0.headers().get("access-control-allow-origin").is_none(), "CORS is closed by default");
    for response in [
        api.get("/stores").send().await,
        api.get("/nowhere").send().await,
        client(&app, "").get("/stores").send().await,
    ] {
        response.assert_header("x-content-type-options", "nosniff");
        response.assert_header("x-frame-options", "DENY");
        response.assert_header("content-security-policy", "default-src 'none'; frame-ancestors 'none'");
    }
    app.stop().await;

    env.config.api.cors_origins = vec!["https://ops.example.com".into()];
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let allowed = preflight(&api, "https://ops.example.com").await;
    allowed.assert_header("access-control-allow-origin", "https://ops.example.com");
    let refused = preflight(&api, "https://evil.example").await;
    assert!(refused.0.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
    env.teardown().await;
}

/// A TCP proxy in front of Postgres that a test can cut, stall (connections stay open and
/// nothing passes, as with a server frozen or a network gone quiet), or make answer every new
/// connection as a starting or full server would.
#[derive(Clone)]
struct Proxy {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    cut: tokio::sync::watch::Sender<u64>,
    stalled: tokio::sync::watch::Sender<bool>,
}

/// Copies `from` to `to`, holding every chunk while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else { return };
        if n == 0 || stalled.wait_for(|s| !*s).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Forward,
    /// Accepts and closes at once: a server that is gone.
    Drop,
    /// Answers the start-up with this SQLSTATE.
    Refuse(&'static str),
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(Mode::Forward)),
            cut: tokio::sync::watch::channel(0).0,
            stalled: tokio::sync::watch::channel(false).0,
        };
        let this = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mode = *this.mode.lock().await;
                let mut cut = this.cut.subscribe();
                let stalled = this.stalled.subscribe();
                tokio::spawn(async move {
                    match mode {
                        Mode::Forward => {
                            let Ok(outbound) = TcpStream::connect(target).await else { return };
                            let ((in_read, in_write), (out_read, out_write)) =
                                (inbound.into_split(), outbound.into_split());
                            tokio::select! {
                                _ = pump(in_read, out_write, stalled.clone()) => {}
                                _ = pump(out_read, in_write, stalled) => {}
                                _ = cut.changed() => {}
                            }
                        }
                        Mode::Drop => {}
                        Mode::Refuse(code) => {
                            let mut startup = [0u8; 4];
                            let _ = inbound.read_exact(&mut startup).await;
                            let length = u32::from_be_bytes(startup) as usize;
                            let mut rest = vec![0u8; length.saturating_sub(4).min(10_000)];
                            let _ = inbound.read_exact(&mut rest).await;
                            let mut fields = Vec::new();
                            for (tag, value) in
                                [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', "the server says no")]
                            {
                                fields.push(tag);
                                fields.extend_from_slice(value.as_bytes());
                                fields.push(0);
                            }
                            fields.push(0);
                            let mut message = vec![b'E'];
                            message.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
                            message.extend_from_slice(&fields);
                            let _ = inbound.write_all(&message).await;
                        }
                    }
                });
            }
        });
        proxy
    }

    /// Cuts every open connection, and treats new ones as `mode` says.
    async fn set(&self, mode: Mode) {
        *self.mode.lock().await = mode;
        self.cut.send_modify(|n| *n += 1);
    }

    /// Holds everything in both directions until `stall(false)`; connections stay open.
    fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// A test deployment whose database is reached through a new proxy.
    async fn in_front_of(env: &mut TestEnv) -> Self {
        let url = env.config.database_url.clone();
        let host_port = url.split_once("://").unwrap().1.split_once('@').unwrap().1.split_once('/').unwrap().0;
        let target: SocketAddr = tokio::net::lookup_host(host_port).await.unwrap().next().unwrap();
        let proxy = Self::start(target).await;
        env.config.database_url = url.replace(host_port, &proxy.addr.to_string());
        proxy
    }
}

#[tokio::test]
async fn a_database_that_refuses_drops_or_restarts_is_a_503_to_retry_and_readiness_stays_discreet() {
    let mut env = TestEnv::new().await;
    let database = env.database.clone();
    let proxy = Proxy::in_front_of(&mut env).await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    api.post("/stores")
        .body_json(&json!({"name": "Soho", "service_area": "W1"}))
        .send()
        .await
        .assert_status(StatusCode::CREATED);

    let mut seen = BTreeMap::new();
    for (mode, what) in [
        (Mode::Drop, "stopped: connections dropped"),
        (Mode::Refuse("57P03"), "starting up"),
        (Mode::Refuse("57P01"), "shutting down"),
        (Mode::Refuse("53300"), "out of connections"),
        (Mode::Refuse("08006"), "connection failure"),
    ] {
        proxy.set(mode).await;
        for (method, path) in [("GET", "/stores"), ("POST", "/stores")] {
            let request = if method == "GET" {
                api.get(path)
            } else {
                api.post(path).body_json(&json!({"name": "Mayfair", "service_area": "W1"}))
            };
            let body = problem(
                request.send().await,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{method} {path}, database {what}"),
            )
            .await;
            assert!(body["detail"].as_str().unwrap().contains("retry"), "{body}");
            seen.insert(what, body);
        }
        // A client of its own, whose readiness has no answer kept from the mode before.
        let ready = client(&app, ADMIN_KEY).get("/health/ready").send().await;
        ready.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        let ready = ready.0.into_body().into_string().await.unwrap();
        assert!(
            ready.contains(r#""postgres":{"reason":"#) || ready.contains(r#""postgres":{"status":"down""#),
            "{ready}"
        );
        for secret in [database.as_str(), "server says no", "57P", "proxy", &proxy.addr.port().to_string()] {
            assert!(!ready.contains(secret), "readiness tells {secret:?}: {ready}");
        }
    }
    proxy.set(Mode::Forward).await;
    support::eventually(Duration::from_secs(10), "the database back", || async {
        (api.get("/stores").send().await.0.status() == StatusCode::OK).then_some(())
    })
    .await;
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_database_gone_silent_is_a_503_in_time_and_what_was_asked_is_not_done_later() {
    let mut env = TestEnv::new().await;
    env.config.api.request_timeout = Duration::from_secs(2);
    let proxy = Proxy::in_front_of(&mut env).await;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    api.get("/stores").send().await.assert_status_is_ok();

    proxy.stall(true);
    let started = std::time::Instant::now();
    let response = api.post("/stores").body_json(&json!({"name": "Limbo", "service_area": "Nowhere"})).send().await;
    let waited = started.elapsed();
    response.assert_header("retry-after", "1");
    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE, "a write while the database is silent").await;
    assert!(body["detail"].as_str().unwrap().contains("retry"), "{body}");
    assert!(waited < Duration::from_secs(4), "the request waited {waited:?}, past its 2 s");

    // The database speaks again: the abandoned request left nothing behind.
    proxy.stall(false);
    support::eventually(Duration::from_secs(15), "the database back", || async {
        (api.get("/stores").send().await.0.status() == StatusCode::OK).then_some(())
    })
    .await;
    // Once no session of the database has a transaction open, the abandoned one is over: it
    // committed or it rolled back, and nothing can make it commit later.
    let pool = env.pool().await;
    support::eventually(Duration::from_secs(15), "the abandoned transaction over", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
    let made: i64 =
        sqlx::query_scalar("SELECT count(*) FROM store WHERE name = 'Limbo'").fetch_one(&pool).await.unwrap();
    assert_eq!(made, 0, "the store answered with a 503 was made after all");
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_statement_stuck_behind_a_lock_is_cancelled_by_postgres_and_answered_503() {
    let mut env = TestEnv::new().await;
    env.config.db_statement_timeout = Duration::from_millis(500);
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let (store, product) = support::stocked_store(&api).await;
    // Someone holds the stock row, and does not let go.
    let pool = env.pool().await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM inventory WHERE store_id = $1::uuid FOR UPDATE")
        .bind(&store)
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let adjustment = json!({"delta": 5, "reason": "found a box"});
    let response =
        api.post(format!("/stores/{store}/inventory/{product}/adjustments")).body_json(&adjustment).send().await;
    response.assert_header("retry-after", "1");
    problem(response, StatusCode::SERVICE_UNAVAILABLE, "a write behind a held lock").await;
    assert!(started.elapsed() < Duration::from_secs(3), "cancelled after {:?}", started.elapsed());
    holder.rollback().await.unwrap();
    let stock: Value =
        api.get(format!("/stores/{store}/inventory/{product}")).send().await.json().await.value().deserialize();
    assert_eq!(stock["on_hand"], 10, "the cancelled adjustment was rolled back: {stock}");
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_action_the_saga_refuses_is_a_409_whatever_its_words_and_however_many_race() {
    let env = TestEnv::new().await;
    // No engine: the saga waits in `requested` while operators act on it.
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let json_of = |response: TestResponse| async move { response.0.into_body().into_json::<Value>().await.unwrap() };
    let (store_id, product_id) = support::stocked_store(&api).await;
    let started = api
        .post("/replenishments")
        .body_json(&json!({"store_id": store_id, "product_id": product_id, "quantity": 5}))
        .send()
        .await;
    started.assert_status(StatusCode::CREATED);
    let id = json_of(started).await["id"].as_str().unwrap().to_owned();
    // Resolving a saga that has not failed is refused; words that cannot be stored are a 400,
    // before anything is recorded.
    let nul = api.post(format!("/sagas/{id}/resolve")).body_json(&json!({"note": "fixed \u{0} by hand"})).send().await;
    problem(nul, StatusCode::BAD_REQUEST, "a refused action with a NUL in its note").await;
    let refused = api.post(format!("/sagas/{id}/resolve")).body_json(&json!({"note": "fixed by hand"})).send().await;
    problem(refused, StatusCode::CONFLICT, "a refused action").await;
    // Twenty actions at once on one saga: each is applied or refused, none fails.
    let actions = (0..20).map(|i| {
        let (api, id) = (&api, &id);
        async move {
            let action = ["retry", "compensate", "resolve"][i % 3];
            let field = if action == "resolve" { "note" } else { "reason" };
            api.post(format!("/sagas/{id}/{action}"))
                .body_json(&json!({field: format!("race {i}")}))
                .send()
                .await
                .0
                .status()
        }
    });
    let statuses = futures_util::future::join_all(actions).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "concurrent actions answered {statuses:?}"
    );
    app.stop().await;
    env.teardown().await;
}
