//! The REST API (poem-openapi): one module per resource, each with its own routes. The OpenAPI
//! document is generated from these types and doc comments; `openapi/openapi.json` is a committed
//! copy that a test keeps in step.

pub mod dead_letters;
pub mod health;
pub mod inventory;
pub mod movements;
pub mod orders;
pub mod page;
pub mod participants;
pub mod problem;
pub mod products;
pub mod prometheus;
pub mod sagas;
pub mod stores;
pub mod warehouse;

use std::sync::Arc;

use ::participants::trace::{self, TraceContext};
use poem::{
    Endpoint, EndpointExt, IntoResponse, PathPattern, Request, Result as PoemResult, Route,
    http::{HeaderValue, StatusCode, header::CONTENT_LENGTH},
};
use poem_openapi::{OpenApiService, Tags};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::Context;
use problem::{ApiResult, Problem};

#[derive(Tags)]
pub enum Tag {
    /// The dark stores.
    Stores,
    /// The product catalogue.
    Products,
    /// Each store's stock: on hand, reserved, reorder levels.
    Inventory,
    /// The central warehouse's stock.
    Warehouse,
    /// Customers' orders, which reserve stock.
    Orders,
    /// Replenishment sagas, their timelines, and operators' actions on them.
    Sagas,
    /// Messages no consumer could handle: inspect, replay once, delete.
    DeadLetters,
    /// Worker processes' liveness and their queues.
    Participants,
    /// The stock ledger.
    Reports,
    /// Liveness and readiness.
    Health,
    /// Prometheus metrics.
    Observability,
}

/// Largest request body accepted: orders of 100 items are far smaller.
const MAX_BODY: usize = 256 * 1024;

type Apis = (
    stores::StoresApi,
    products::ProductsApi,
    inventory::InventoryApi,
    warehouse::WarehouseApi,
    orders::OrdersApi,
    sagas::SagasApi,
    dead_letters::DeadLettersApi,
    participants::ParticipantsApi,
    movements::MovementsApi,
    health::HealthApi,
    prometheus::MetricsApi,
);

pub fn service(ctx: &Context) -> OpenApiService<Apis, ()> {
    let apis = (
        stores::StoresApi { ctx: ctx.clone() },
        products::ProductsApi { ctx: ctx.clone() },
        inventory::InventoryApi { ctx: ctx.clone() },
        warehouse::WarehouseApi { ctx: ctx.clone() },
        orders::OrdersApi { ctx: ctx.clone() },
        sagas::SagasApi { ctx: ctx.clone() },
        dead_letters::DeadLettersApi { ctx: ctx.clone() },
        participants::ParticipantsApi { ctx: ctx.clone() },
        movements::MovementsApi { ctx: ctx.clone() },
        health::HealthApi { ctx: ctx.clone() },
        prometheus::MetricsApi { ctx: ctx.clone(), handle: crate::metrics_handle() },
    );
    OpenApiService::new(apis, "Dark-store replenishment", env!("CARGO_PKG_VERSION")).description(
        "Orders reserve stock in dark stores; when a product runs low, the orchestrator refills the store \
         from the central warehouse with a replenishment saga. Errors are application/problem+json.",
    )
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/`.
pub fn spec(ctx: &Context) -> String {
    service(ctx).spec()
}

/// Every route: the API at the root (`/metrics` included), Swagger UI at `/docs`, and the spec.
pub fn routes(ctx: &Context) -> impl Endpoint + use<> {
    let api = service(ctx);
    Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest("/docs", api.swagger_ui())
        .nest("/", api)
        .around(limit_body)
        .around(observe)
}

/// Longest `X-Request-Id` taken from a client; longer or odd ones are replaced by our own.
const MAX_REQUEST_ID: usize = 128;

/// Every request: any error, the framework's included, answered as a problem; an id (the client's
/// `X-Request-Id`, or a new one) on every log line it causes
/// and in the response; its W3C trace context (the client's `traceparent`, or a new trace) for
/// every message it causes; one log line and the HTTP metrics, labelled by route pattern.
async fn observe<E: Endpoint>(next: Arc<E>, request: Request) -> PoemResult<poem::Response> {
    let request_id = request
        .header(REQUEST_ID)
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let trace = request
        .header("traceparent")
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::root, TraceContext::child);
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id, trace_id = %trace.trace_id_hex(), %method,
        path = %request.uri().path());
    let started = Instant::now();
    let (mut response, route) = async {
        match trace::scope(trace, next.call(request)).await {
            Ok(response) => {
                let response = response.into_response();
                let route = response.data::<PathPattern>().map(|p| p.0.clone());
                (response, route)
            }
            Err(error) => {
                let route = error.data::<PathPattern>().map(|p| p.0.clone());
                (problem::from_poem(error).await, route)
            }
        }
    }
    .instrument(span.clone())
    .await;
    let elapsed = started.elapsed();
    let status = response.status();
    let route = route.map_or_else(|| "unmatched".to_owned(), |r| r.to_string());
    span.in_scope(|| tracing::info!(status = status.as_u16(), millis = elapsed.as_secs_f64() * 1000.0, "request"));
    let labels = [("method", method.to_string()), ("route", route), ("status", status.as_u16().to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.header()) {
        response.headers_mut().insert("traceparent", value);
    }
    Ok(response)
}

const REQUEST_ID: &str = "x-request-id";

/// Refuses a body over [`MAX_BODY`] with 413: at once when its `Content-Length` says so, else
/// (a chunked body) once that much has been read. poem's `SizeLimit` would also refuse every
/// request without a `Content-Length`, GETs included.
async fn limit_body<E: Endpoint>(next: Arc<E>, mut request: Request) -> PoemResult<poem::Response> {
    let too_large = || {
        poem::Error::from_string(
            format!("the request body is larger than {MAX_BODY} bytes"),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    match request.header(CONTENT_LENGTH).map(str::parse::<usize>) {
        Some(Ok(declared)) if declared > MAX_BODY => return Err(too_large()),
        Some(_) => {}
        None => {
            let body = request.take_body().into_bytes_limit(MAX_BODY).await.map_err(|_| too_large())?;
            request.set_body(body);
        }
    }
    next.call(request).await.map(IntoResponse::into_response)
}

/// Cursors of lists ordered by a UUID are that UUID.
pub fn uuid_cursor(cursor: Option<&str>) -> ApiResult<Uuid> {
    cursor
        .map_or(Ok(Uuid::nil()), |c| c.parse().map_err(|_| Problem::unprocessable("cursor is not one this API issued")))
}
