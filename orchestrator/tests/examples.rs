//! The spec's examples are what Swagger UI's "Try it out" starts from: every schema has one, and
//! the walk's requests succeed when sent as their examples are, on a fresh database. A request
//! that names what an earlier step created (an order's store and product) is sent with those ids,
//! as the walk tells its reader to do; nothing else in the example changes.

mod support;

use orchestrator::{Context, app::Roles, http};
use platform::{config::Config, messaging::relay::RelayFaults};
use poem::http::StatusCode;
use serde_json::Value;
use support::{ADMIN_KEY, TestEnv, client};

fn spec() -> Value {
    serde_json::from_str(&http::spec(&Context::offline(&Config::default()).unwrap())).unwrap()
}

/// The example of the request body of `method path`.
fn request_example(spec: &Value, method: &str, path: &str) -> Value {
    let operation = &spec["paths"][path][method];
    let content = operation["requestBody"]["content"].as_object().unwrap_or_else(|| panic!("{method} {path} body"));
    let reference = content.values().next().unwrap()["schema"]["$ref"].as_str().unwrap();
    let name = reference.trim_start_matches("#/components/schemas/");
    spec["components"]["schemas"][name]["example"].clone()
}

#[tokio::test]
async fn every_object_schema_has_an_example() {
    let spec = spec();
    let missing: Vec<&String> = spec["components"]["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, schema)| schema.get("enum").is_none() && schema.get("example").is_none())
        .map(|(name, _)| name)
        .collect();
    assert!(missing.is_empty(), "schemas without an example: {missing:?}");
}

#[tokio::test]
async fn only_the_operation_that_reserves_stock_shows_short_items() {
    let spec = spec();
    let mut showing = Vec::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].to_string();
            if responses.contains("ShortStockProblem") {
                showing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert_eq!(showing, ["POST /orders"]);
    let example = &spec["components"]["schemas"]["ShortStockProblem"]["example"];
    assert!(example["short_items"][0]["requested"].is_i64(), "{example}");
    assert!(spec["components"]["schemas"]["ProblemDetails"]["properties"].get("short_items").is_none());
}

#[tokio::test]
async fn the_walks_requests_succeed_as_their_examples_are() {
    let spec = spec();
    let env = TestEnv::new().await;
    let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let send = async |method: &str, path: &str, body: Value| -> (StatusCode, Value) {
        let request = match method {
            "post" => api.post(path),
            "put" => api.put(path),
            other => panic!("the walk does not {other}"),
        };
        let response = request.body_json(&body).send().await;
        let status = response.0.status();
        (status, response.0.into_body().into_json().await.unwrap_or_default())
    };

    let (status, store) = send("post", "/stores", request_example(&spec, "post", "/stores")).await;
    assert_eq!(status, StatusCode::CREATED, "{store}");
    assert_eq!(store["name"], "Riverside");
    let (status, product) = send("post", "/products", request_example(&spec, "post", "/products")).await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let (store_id, product_id) = (store["id"].as_str().unwrap(), product["id"].as_str().unwrap());

    let stock = request_example(&spec, "put", "/warehouse/stock/{product_id}");
    let (status, body) = send("put", &format!("/warehouse/stock/{product_id}"), stock).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["on_hand"], 100);
    let levels = request_example(&spec, "put", "/stores/{store_id}/inventory/{product_id}");
    let (status, body) = send("put", &format!("/stores/{store_id}/inventory/{product_id}"), levels).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["on_hand"].as_i64(), body["available"].as_i64()), (Some(10), Some(10)));

    let mut order = request_example(&spec, "post", "/orders");
    order["store_id"] = store_id.into();
    order["items"][0]["product_id"] = product_id.into();
    let (status, body) = send("post", "/orders", order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["items"][0]["quantity"], 6);

    let (status, body) = send("post", "/api-keys", request_example(&spec, "post", "/api-keys")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["role"], "client");

    let mut purchase = request_example(&spec, "post", "/purchase-orders");
    purchase["product_id"] = product_id.into();
    let (status, body) = send("post", "/purchase-orders", purchase).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    drop(app);
    env.teardown().await;
}
