//! What operators see and do, through the real API: processes' liveness, metrics, one trace per
//! saga from the HTTP request through every message, the saga detail, and the actions a saga's
//! state allows or refuses.

mod support;

use std::time::Duration;

use orchestrator::app::Roles;
use platform::messaging::relay::RelayFaults;
use poem::{http::StatusCode, test::TestResponse};
use serde_json::{Value, json};
use support::{ADMIN_KEY, Client as Api, TestEnv, client, eventually, make_key, stocked_store};

async fn body(response: TestResponse, status: StatusCode) -> Value {
    response.assert_status(status);
    response.0.into_body().into_json().await.unwrap()
}

async fn saga(api: &Api, id: &str) -> Value {
    body(api.get(format!("/sagas/{id}")).send().await, StatusCode::OK).await
}

#[tokio::test]
async fn one_trace_runs_from_the_request_through_every_message_and_operators_see_it_all() {
    let env = TestEnv::new().await;
    let app = env.start(support::everything(), RelayFaults::default()).await;
    let api: Api = client(&app, ADMIN_KEY);
    let (store_id, product_id) = stocked_store(&api).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let order = api
        .post("/orders")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", "order-42")
        .body_json(&json!({"store_id": store_id, "items": [{"product_id": product_id, "quantity": 8}]}))
        .send()
        .await;
    order.assert_status(StatusCode::CREATED);
    order.assert_header("x-request-id", "order-42");
    let echoed = order.0.headers().get("traceparent").unwrap().to_str().unwrap().to_owned();
    assert!(echoed.starts_with(&format!("00-{trace_id}-")), "{echoed}");

    let listed = eventually(Duration::from_secs(10), "the replenishment received", || async {
        let page =
            body(api.get(format!("/sagas?store_id={store_id}&state=received")).send().await, StatusCode::OK).await;
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    let id = listed["id"].as_str().unwrap();
    let detail = saga(&api, id).await;
    assert_eq!(detail["trace_id"], trace_id);
    assert!(detail["outstanding"].is_null(), "a received saga waits on nothing: {detail}");
    assert_eq!(detail["stuck"], false);
    let messages = detail["messages"].as_array().unwrap();
    let sent: Vec<&Value> = messages.iter().filter(|m| m["direction"] == "sent").collect();
    for kind in ["DispatchShipment", "ShipmentDispatched", "ReceiveShipment", "StockReceived", "replenishment.created"]
    {
        assert!(sent.iter().any(|m| m["type"] == kind), "{kind} is not among the saga's messages: {detail}");
    }
    for message in &sent {
        let traceparent = message["traceparent"].as_str().unwrap_or_default();
        assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "a message left the trace: {message}");
        assert_eq!(message["published"], true, "{message}");
    }
    for consumer in ["warehouse", "inventory", "orchestrator"] {
        assert!(
            messages.iter().any(|m| m["direction"] == "received" && m["route"] == consumer),
            "{consumer} received nothing for the saga: {detail}"
        );
    }
    let left: Vec<&Value> = detail["transitions"].as_array().unwrap().iter().filter(|t| t["from"] != t["to"]).collect();
    assert!(left.iter().skip(1).all(|t| t["took_ms"].as_f64().is_some_and(|ms| ms >= 0.0)), "{detail}");

    // The order's own saga waits on the picker: hand the order over, and nothing is open.
    let order_id = body(order, StatusCode::CREATED).await["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the order paid and handed over", || async {
        let answer = api.post(format!("/orders/{order_id}/fulfil")).send().await;
        (answer.0.status() == StatusCode::OK).then_some(())
    })
    .await;
    // The store records the hand-over, and the saga closes.
    let fulfilment = eventually(Duration::from_secs(10), "the hand-over recorded", || async {
        let fulfilment = saga(&api, &order_id).await;
        (fulfilment["state"] == "fulfilled").then_some(fulfilment)
    })
    .await;
    assert_eq!(fulfilment["trace_id"], trace_id, "the order's saga continues the request's trace");

    let stats = body(api.get("/sagas/stats").send().await, StatusCode::OK).await;
    assert!(stats["counts"].as_array().unwrap().iter().any(|c| c["state"] == "received" && c["count"] == 1), "{stats}");
    assert!(
        stats["step_latency"].as_array().unwrap().iter().any(|s| s["from"] == "requested" && s["to"] == "dispatched"),
        "{stats}"
    );
    assert_eq!(stats["open"], 0);

    let participants = eventually(Duration::from_secs(10), "every role alive with a consumer", || async {
        let view = body(api.get("/participants").send().await, StatusCode::OK).await;
        let all_up = view["participants"].as_array().unwrap().iter().all(|p| {
            p["alive"] == true && p["consumers"].as_u64().is_some_and(|c| c >= 1) && p["queue_depth"].is_u64()
        });
        all_up.then_some(view)
    })
    .await;
    // The engine, then the participants of every kind.
    let roles = participants["participants"].as_array().unwrap().len();
    assert_eq!(roles, 1 + sagas::registry().participants().len(), "{participants}");

    // A stock read goes through the cache.
    api.get(format!("/stores/{store_id}/inventory/{product_id}")).send().await.assert_status_is_ok();
    let metrics = api.get("/metrics").send().await.0.into_body().into_string().await.unwrap();
    for family in [
        r#"http_requests_total{method="POST",route="/orders",status="201"}"#,
        "http_request_duration_seconds_bucket",
        r#"saga_transitions_total{kind="replenishment",from="requested",to="dispatched"}"#,
        r#"saga_step_seconds_bucket{kind="replenishment",from="requested",to="dispatched""#,
        r#"sagas{kind="replenishment",state="received"} 1"#,
        r#"messages_published_total{queue="warehouse.commands"}"#,
        r#"messages_consumed_total{queue="orchestrator.replies"}"#,
        "outbox_backlog",
        "outbox_oldest_age_seconds",
        "cache_requests_total",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}");
    }

    app.stop().await;
    // A stopped process says so: it is no longer alive.
    let pool = env.pool().await;
    let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM worker_instance WHERE stopped_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(alive, 0);
    support::assert_invariants(&pool).await;
    env.teardown().await;
}

#[tokio::test]
async fn operator_actions_the_state_does_not_allow_are_refused_with_the_reason() {
    let env = TestEnv::new().await;
    // No engine: sagas wait where they are, and their deadlines pass.
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let admin: Api = client(&app, ADMIN_KEY);
    let (store_id, product_id) = stocked_store(&admin).await;
    // Each operator acts with a key of their own, which the timeline names.
    let api = client(&app, &make_key(&admin, "ann", "operator").await);
    let bob = client(&app, &make_key(&admin, "bob", "operator").await);
    let start = |quantity: i64| json!({"store_id": store_id, "product_id": product_id, "quantity": quantity, "reason": "festival weekend"});

    let started = body(api.post("/replenishments").body_json(&start(12)).send().await, StatusCode::CREATED).await;
    assert_eq!(started["state"], "requested");
    assert_eq!(started["outstanding"]["type"], "DispatchShipment");
    assert_eq!(started["transitions"][0]["actor"], "operator:ann");
    let id = started["id"].as_str().unwrap().to_owned();
    let again = body(api.post("/replenishments").body_json(&start(5)).send().await, StatusCode::CONFLICT).await;
    assert!(again["detail"].as_str().unwrap().contains(&id), "{again}");
    body(api.post("/replenishments").body_json(&start(0)).send().await, StatusCode::BAD_REQUEST).await;
    let elsewhere = json!({"store_id": store_id, "product_id": uuid::Uuid::new_v4(), "quantity": 3});
    body(api.post("/replenishments").body_json(&elsewhere).send().await, StatusCode::NOT_FOUND).await;

    // Its deadline passes with no engine to resend: it is stuck.
    eventually(Duration::from_secs(5), "the saga listed as stuck", || async {
        let page = body(api.get("/sagas?stuck=true").send().await, StatusCode::OK).await;
        page["items"].as_array().unwrap().iter().any(|s| s["id"] == id.as_str()).then_some(())
    })
    .await;

    let who = json!({"reason": "warehouse says it never got it"});
    let retried = body(bob.post(format!("/sagas/{id}/retry")).body_json(&who).send().await, StatusCode::OK).await;
    assert_eq!((retried["state"].as_str(), retried["attempt"].as_i64()), (Some("requested"), Some(1)));
    assert_eq!(retried["stuck"], false, "a retry gives the step a new deadline: {retried}");
    let resolve = json!({"note": "done by phone"});
    let refused =
        body(bob.post(format!("/sagas/{id}/resolve")).body_json(&resolve).send().await, StatusCode::CONFLICT).await;
    assert!(refused["detail"].as_str().unwrap().contains("requested"), "{refused}");
    body(bob.post(format!("/sagas/{id}/compensate")).body_json(&who).send().await, StatusCode::OK).await;
    let detail = saga(&api, &id).await;
    assert_eq!(detail["state"], "compensating");
    assert_eq!(detail["outstanding"]["type"], "CancelShipment");
    let timeline: Vec<(String, bool, String)> = detail["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (t["event"].as_str().unwrap().into(), t["applied"].as_bool().unwrap(), t["actor"].as_str().unwrap().into())
        })
        .collect();
    let by_bob = "operator:bob".to_owned();
    assert_eq!(
        timeline[1..],
        [
            ("RetryRequested".into(), true, by_bob.clone()),
            ("Resolved".into(), false, by_bob.clone()),
            ("CompensateRequested".into(), true, by_bob)
        ],
        "every action is in the timeline, refused ones too"
    );
    // Sent again, with a fresh deadline: the retry's command is among the saga's messages.
    let dispatches = detail["messages"].as_array().unwrap().iter().filter(|m| m["type"] == "DispatchShipment").count();
    assert_eq!(dispatches, 2);

    body(
        api.post(format!("/sagas/{}/retry", uuid::Uuid::new_v4())).body_json(&who).send().await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Naming oneself in the body, as before keys, is refused rather than ignored.
    body(
        api.post(format!("/sagas/{id}/retry")).body_json(&json!({"operator": "mallory", "reason": "me"})).send().await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // A range that ends before it starts holds nothing.
    let range = "/sagas?created_after=2026-02-01T00:00:00Z&created_before=2026-01-01T00:00:00Z";
    assert_eq!(body(api.get(range).send().await, StatusCode::OK).await["items"], json!([]));
    let recent = body(
        api.get("/sagas?created_after=2000-01-01T00:00:00Z&updated_before=2100-01-01T00:00:00Z").send().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(recent["items"].as_array().unwrap().len(), 1);

    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn sagas_are_found_by_the_store_and_products_they_concern_whatever_their_kind() {
    let env = TestEnv::new().await;
    let app = env.start(support::everything(), RelayFaults::default()).await;
    let api: Api = client(&app, ADMIN_KEY);
    let (store_id, product_id) = stocked_store(&api).await;
    // An order that leaves the product low: its own fulfilment saga, and a replenishment.
    let order = api
        .post("/orders")
        .body_json(&json!({"store_id": store_id, "items": [{"product_id": product_id, "quantity": 8}]}))
        .send()
        .await;
    let order = body(order, StatusCode::CREATED).await;
    let kinds = |page: Value| -> Vec<String> {
        let mut kinds: Vec<String> =
            page["items"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap().to_owned()).collect();
        kinds.sort();
        kinds
    };
    let by_product = body(api.get(format!("/sagas?product_id={product_id}")).send().await, StatusCode::OK).await;
    assert_eq!(kinds(by_product), ["order_fulfilment", "replenishment"], "an order's saga concerns its products");
    let by_store = body(api.get(format!("/sagas?store_id={store_id}")).send().await, StatusCode::OK).await;
    assert_eq!(kinds(by_store), ["order_fulfilment", "replenishment"]);
    let both = format!("/sagas?store_id={store_id}&product_id={product_id}&kind=order_fulfilment");
    let orders = body(api.get(both).send().await, StatusCode::OK).await;
    assert_eq!(orders["items"][0]["id"], order["id"], "the order's saga has the order's id");
    let elsewhere = format!("/sagas?store_id={}&product_id={product_id}", uuid::Uuid::new_v4());
    assert_eq!(kinds(body(api.get(elsewhere).send().await, StatusCode::OK).await), Vec::<String>::new());
    app.stop().await;
    env.teardown().await;
}
