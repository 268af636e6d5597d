//! Step definitions, one module per domain concept, and what they share: the in-process API
//! client and the polling helpers.

pub mod access;
pub mod faults;
pub mod fulfilment;
pub mod operations;
pub mod orders;
pub mod purchasing;
pub mod replenishment;
pub mod replica;
pub mod stock;

use std::{future::Future, sync::Arc, time::Duration};

use orchestrator::app::Application;
use poem::{
    EndpointExt as _,
    endpoint::BoxEndpoint,
    http::{HeaderMap, StatusCode},
    test::{TestClient, TestRequestBuilder},
};
use serde_json::Value;
use uuid::Uuid;

use crate::support::eventually;

/// How long a read may take to show a change made in the background (a cache entry written
/// after a worker's commit).
pub const READ_SETTLES: Duration = Duration::from_secs(5);
/// How long a saga may take to end. Normal runs take milliseconds; unwinding after unanswered
/// commands takes a few seconds with the tests' short deadlines.
pub const SAGA_ENDS: Duration = Duration::from_secs(20);

/// The real routes of a running application, called in process with one API key.
#[derive(Clone)]
pub struct Api {
    routes: Arc<BoxEndpoint<'static>>,
    key: Arc<str>,
}

type Endpoint = Arc<BoxEndpoint<'static>>;

/// What the API answered.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The body, after checking the status; a surprise panics with the whole answer.
    pub fn expect(self, status: StatusCode, doing: &str) -> Value {
        assert_eq!(self.status, status, "{doing}: unexpected answer {}: {:#}", self.status, self.body);
        self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An order as sent, so that it can be sent again.
#[derive(Clone, Debug)]
pub struct OrderRequest {
    pub store_id: Uuid,
    pub items: Vec<(Uuid, i64)>,
    pub idempotency_key: Option<String>,
}

impl OrderRequest {
    pub fn body(&self) -> Value {
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|(product_id, quantity)| serde_json::json!({ "product_id": product_id, "quantity": quantity }))
            .collect();
        serde_json::json!({ "store_id": self.store_id, "items": items })
    }
}

impl Api {
    /// The API as the deployment's admin.
    pub fn new(app: &Application) -> Self {
        let routes = orchestrator::http::routes(app.context());
        Self { routes: Arc::new(routes.map_to_response().boxed()), key: crate::support::ADMIN_KEY.into() }
    }

    /// The same API, called with another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self { routes: self.routes.clone(), key: key.into() }
    }

    fn client(&self) -> TestClient<Endpoint> {
        TestClient::new(self.routes.clone()).default_header("authorization", format!("Bearer {}", self.key))
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let client = self.client();
        let mut request = client.get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    pub async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
        let client = self.client();
        let mut request = client.post(path).body_json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    /// A POST without a body, as a button in an app sends it.
    pub async fn post_empty(&self, path: &str) -> Answer {
        send(self.client().post(path)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        send(self.client().delete(path)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        send(self.client().put(path).body_json(body)).await
    }

    /// Places an order.
    pub async fn order(&self, request: &OrderRequest) -> Answer {
        let key = request.idempotency_key.as_deref();
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        self.post("/orders", &request.body(), &headers).await
    }

    /// One saga with its timeline.
    pub async fn saga(&self, id: Uuid) -> Value {
        self.get(&format!("/sagas/{id}")).await.expect(StatusCode::OK, "reading a saga")
    }

    /// Every saga of `kind` that concerns one product in one store, oldest first.
    pub async fn sagas_for(&self, kind: &str, store_id: Uuid, product_id: Uuid) -> Vec<Value> {
        let page = self
            .get(&format!("/sagas?kind={kind}&store_id={store_id}&product_id={product_id}&limit=100"))
            .await
            .expect(StatusCode::OK, "listing sagas");
        assert!(page["next_cursor"].is_null(), "more sagas than one page holds: {page:#}");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// Stock movements of a product (stores and warehouse), oldest first.
    pub async fn movements(&self, product_id: Uuid) -> Vec<Value> {
        let page = self
            .get(&format!("/stock-movements?product_id={product_id}&limit=100"))
            .await
            .expect(StatusCode::OK, "listing stock movements");
        assert!(page["next_cursor"].is_null(), "more movements than one page holds: {page:#}");
        page["items"].as_array().cloned().unwrap_or_default()
    }
}

async fn send(request: TestRequestBuilder<'_, Endpoint>) -> Answer {
    let response = request.send().await.0;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.into_body().into_string().await.expect("the answer has a readable body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Answer { status, headers, body }
}

/// Polls `probe` until `done` holds for what it saw, or `within` has passed, and returns the last
/// observation either way: the caller asserts on it, so a failure shows what was seen.
pub async fn settle<T, F, Fut>(within: Duration, what: &str, mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let give_up = tokio::time::Instant::now() + within;
    let done = &done;
    eventually(within + Duration::from_secs(5), what, move || {
        let observation = probe();
        async move {
            let seen = observation.await;
            (done(&seen) || tokio::time::Instant::now() >= give_up).then_some(seen)
        }
    })
    .await
}

/// A JSON integer field.
pub fn int(value: &Value, field: &str) -> i64 {
    value[field].as_i64().unwrap_or_else(|| panic!("{field} is not an integer in {value:#}"))
}

/// A JSON string field.
pub fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {value:#}"))
}

/// A JSON id field.
pub fn id(value: &Value, field: &str) -> Uuid {
    text(value, field).parse().unwrap_or_else(|_| panic!("{field} is not a UUID in {value:#}"))
}
