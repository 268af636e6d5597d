//! The API's contract for bad input: every mistake a client can make is a 4xx with an
//! `application/problem+json` body a person can act on, never a 5xx.

mod support;

use orchestrator::app::Roles;
use platform::messaging::relay::RelayFaults;
use poem::{http::StatusCode, test::TestResponse};
use serde_json::{Value, json};
use support::{ADMIN_KEY, TestEnv, client};

async fn problem(response: TestResponse, status: StatusCode) -> Value {
    response.assert_status(status);
    response.assert_header("content-type", "application/problem+json");
    let body: Value = response.0.into_body().into_json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "a problem says what went wrong: {body}");
    body
}

async fn created(response: TestResponse) -> Value {
    response.assert_status(StatusCode::CREATED);
    response.0.into_body().into_json().await.unwrap()
}

#[tokio::test]
async fn bad_input_is_a_client_error_with_a_problem_body() {
    let env = TestEnv::new().await;
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);

    let store =
        created(api.post("/stores").body_json(&json!({"name": "Soho", "service_area": "W1"})).send().await).await;
    let product = created(api.post("/products").body_json(&json!({"sku": "MILK", "name": "Milk"})).send().await).await;
    let (store_id, product_id) = (store["id"].as_str().unwrap(), product["id"].as_str().unwrap());
    let inventory = format!("/stores/{store_id}/inventory/{product_id}");
    api.put(&inventory)
        .body_json(&json!({"on_hand": 5, "reorder_threshold": 1, "target_level": 10}))
        .send()
        .await
        .assert_status_is_ok();
    let order = |items: Value| json!({"store_id": store_id, "items": items});

    let duplicate = api.post("/products").body_json(&json!({"sku": "MILK", "name": "Milk"})).send().await;
    assert!(problem(duplicate, StatusCode::CONFLICT).await["detail"].as_str().unwrap().contains("MILK"));

    for items in [
        json!([]),
        json!([{"product_id": product_id, "quantity": 0}]),
        json!([{"product_id": product_id, "quantity": -3}]),
    ] {
        problem(api.post("/orders").body_json(&order(items)).send().await, StatusCode::BAD_REQUEST).await;
    }
    let twice = json!([{"product_id": product_id, "quantity": 1}, {"product_id": product_id, "quantity": 1}]);
    problem(api.post("/orders").body_json(&order(twice)).send().await, StatusCode::UNPROCESSABLE_ENTITY).await;
    let absurd = json!([{"product_id": product_id, "quantity": 10_000_000_000_i64}]);
    problem(api.post("/orders").body_json(&order(absurd)).send().await, StatusCode::BAD_REQUEST).await;
    let unknown_product = json!([{"product_id": uuid::Uuid::new_v4(), "quantity": 1}]);
    problem(api.post("/orders").body_json(&order(unknown_product)).send().await, StatusCode::NOT_FOUND).await;
    let unknown_store = json!({"store_id": uuid::Uuid::new_v4(), "items": [{"product_id": product_id, "quantity": 1}]});
    problem(api.post("/orders").body_json(&unknown_store).send().await, StatusCode::NOT_FOUND).await;
    let too_many: Vec<Value> = (0..101).map(|_| json!({"product_id": uuid::Uuid::new_v4(), "quantity": 1})).collect();
    problem(api.post("/orders").body_json(&order(json!(too_many))).send().await, StatusCode::BAD_REQUEST).await;

    let malformed = api.post("/orders").content_type("application/json").body("{\"store_id\": ").send().await;
    problem(malformed, StatusCode::BAD_REQUEST).await;
    let huge = api.post("/stores").content_type("application/json").body("x".repeat(300_000)).send().await;
    problem(huge, StatusCode::PAYLOAD_TOO_LARGE).await;
    problem(api.get("/orders/not-a-uuid").send().await, StatusCode::BAD_REQUEST).await;
    problem(api.get(format!("/orders/{}", uuid::Uuid::new_v4())).send().await, StatusCode::NOT_FOUND).await;
    problem(api.get("/no/such/route").send().await, StatusCode::NOT_FOUND).await;
    problem(api.get("/sagas?limit=0").send().await, StatusCode::BAD_REQUEST).await;
    problem(api.get("/sagas?limit=501").send().await, StatusCode::BAD_REQUEST).await;
    problem(api.get("/sagas?cursor=garbage").send().await, StatusCode::BAD_REQUEST).await;
    problem(api.get("/stock-movements?cursor=-1").send().await, StatusCode::BAD_REQUEST).await;

    let levels = |on_hand: i64, threshold: i64, target: i64| json!({"on_hand": on_hand, "reorder_threshold": threshold, "target_level": target});
    problem(api.put(&inventory).body_json(&levels(5, 10, 10)).send().await, StatusCode::UNPROCESSABLE_ENTITY).await;
    problem(api.put(&inventory).body_json(&levels(-1, 1, 10)).send().await, StatusCode::BAD_REQUEST).await;
    let unknown_store_inventory = format!("/stores/{}/inventory/{product_id}", uuid::Uuid::new_v4());
    problem(api.put(&unknown_store_inventory).body_json(&levels(1, 1, 10)).send().await, StatusCode::NOT_FOUND).await;
    let adjust = format!("{inventory}/adjustments");
    problem(api.post(&adjust).body_json(&json!({"delta": 0, "reason": "x"})).send().await, StatusCode::BAD_REQUEST)
        .await;
    // Past the cap of 1,000,000,000 on hand: refused, as a negative stock is.
    problem(
        api.post(&adjust).body_json(&json!({"delta": 1_000_000_000, "reason": "x"})).send().await,
        StatusCode::CONFLICT,
    )
    .await;
    problem(api.post(&adjust).body_json(&json!({"delta": -6, "reason": "x"})).send().await, StatusCode::CONFLICT).await;

    // Short stock names the short item and reserves nothing.
    let short = problem(
        api.post("/orders").body_json(&order(json!([{"product_id": product_id, "quantity": 6}]))).send().await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(short["short_items"][0]["product_id"], product_id);
    assert_eq!(short["short_items"][0]["available"], 5);

    // One key, two different orders: refused rather than silently answered with the first.
    let first = api
        .post("/orders")
        .header("Idempotency-Key", "k-1")
        .body_json(&order(json!([{"product_id": product_id, "quantity": 1}])));
    created(first.send().await).await;
    let other = api
        .post("/orders")
        .header("Idempotency-Key", "k-1")
        .body_json(&order(json!([{"product_id": product_id, "quantity": 2}])));
    problem(other.send().await, StatusCode::UNPROCESSABLE_ENTITY).await;

    // A cancelled order cannot be fulfilled; cancelling again is harmless.
    let placed =
        created(api.post("/orders").body_json(&order(json!([{"product_id": product_id, "quantity": 1}]))).send().await)
            .await;
    let id = placed["id"].as_str().unwrap();
    // The answer to the POST is the order as stored.
    let stored: Value = api.get(format!("/orders/{id}")).send().await.0.into_body().into_json().await.unwrap();
    assert_eq!(placed, stored);
    api.post(format!("/orders/{id}/cancel")).send().await.assert_status_is_ok();
    api.post(format!("/orders/{id}/cancel")).send().await.assert_status_is_ok();
    problem(api.post(format!("/orders/{id}/fulfil")).send().await, StatusCode::CONFLICT).await;

    app.stop().await;
    support::assert_invariants(&env.pool().await).await;
    env.teardown().await;
}

#[tokio::test]
async fn health_and_docs_answer_without_a_key() {
    let env = TestEnv::new().await;
    let app = env.start(Roles::serve(), RelayFaults::default()).await;
    let api = client(&app, "no-such-key-but-long-enough-to-be-one-0123456789");
    api.get("/health/live").send().await.assert_status_is_ok();
    let ready = api.get("/health/ready").send().await;
    ready.assert_status_is_ok();
    ready
        .assert_json(json!({"status": "ok", "checks": {
            "postgres": {"status": "up"}, "rabbitmq": {"status": "up"}, "redis": {"status": "up"}}}))
        .await;
    api.get("/docs").send().await.assert_status_is_ok();
    api.get("/docs/").send().await.assert_status_is_ok();
    // The icon a browser asks for with every page: nothing, rather than a 404.
    api.get("/favicon.ico").send().await.assert_status(StatusCode::NO_CONTENT);
    let spec = api.get("/openapi.json").send().await;
    spec.assert_status_is_ok();
    let spec: Value = spec.0.into_body().into_json().await.unwrap();
    assert!(spec["paths"]["/orders"]["post"].is_object());
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    problem(api.get("/metrics").send().await, StatusCode::UNAUTHORIZED).await;
    app.stop().await;
    env.teardown().await;
}
