//! The REST API (poem-openapi): one module per resource, each with its own routes. The OpenAPI
//! document is generated from these types and doc comments; `openapi/openapi.json` is a committed
//! copy that a test keeps in step.

pub mod access;
pub mod api_keys;
pub mod audit;
pub mod consistency;
pub mod dead_letters;
pub mod example;
pub mod health;
pub mod input;
pub mod inventory;
pub mod movements;
pub mod orders;
pub mod page;
pub mod participants;
pub mod problem;
pub mod products;
pub mod prometheus;
pub mod purchase_orders;
pub mod refused;
pub mod role;
pub mod sagas;
pub mod server;
pub mod spec;
pub mod stores;
pub mod warehouse;

use std::sync::Arc;

use platform::trace::{self, TraceContext};
use poem::{
    Endpoint, EndpointExt, IntoResponse, PathPattern, Request, Response, Result as PoemResult, Route,
    endpoint::make_sync,
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Cors,
    web::Html,
};
use poem_openapi::{ContactObject, LicenseObject, OpenApiService, ServerObject, Tags};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::Context;
use access::Door;
use refused::Refusal;

/// The spec's tags, in the order a newcomer meets them: the network and its stock, orders, the
/// sagas that follow, then what operators and admins use.
#[derive(Tags, strum::EnumIter)]
pub enum Tag {
    /// The dark stores.
    Stores,
    /// The product catalogue.
    Products,
    /// The central warehouse's stock.
    Warehouse,
    /// Each store's stock: on hand, reserved, reorder levels.
    Inventory,
    /// Customers' orders, which reserve stock.
    Orders,
    /// Sagas of every kind, their timelines, and operators' actions on them.
    Sagas,
    /// Replenishments started by hand.
    Replenishments,
    /// Purchase orders from the warehouse's supplier, started by hand.
    #[oai(rename = "Purchase orders")]
    PurchaseOrders,
    /// Messages no consumer could handle: inspect, replay once, delete.
    #[oai(rename = "Dead letters")]
    DeadLetters,
    /// Worker processes' liveness and their queues.
    Participants,
    /// The stock ledger.
    Reports,
    /// Prometheus metrics.
    Metrics,
    /// Liveness and readiness.
    Health,
    /// API keys: made, listed, revoked.
    #[oai(rename = "API keys")]
    Keys,
    /// Who changed what through the API.
    Audit,
}

type Apis = (
    stores::StoresApi,
    products::ProductsApi,
    inventory::InventoryApi,
    warehouse::WarehouseApi,
    orders::OrdersApi,
    sagas::SagasApi,
    sagas::ReplenishmentsApi,
    purchase_orders::PurchaseOrdersApi,
    dead_letters::DeadLettersApi,
    participants::ParticipantsApi,
    movements::MovementsApi,
    health::HealthApi,
    prometheus::MetricsApi,
    api_keys::ApiKeysApi,
    audit::AuditApi,
);

pub fn service(ctx: &Context) -> OpenApiService<Apis, ()> {
    let apis = (
        stores::StoresApi { ctx: ctx.clone() },
        products::ProductsApi { ctx: ctx.clone() },
        inventory::InventoryApi { ctx: ctx.clone() },
        warehouse::WarehouseApi { ctx: ctx.clone() },
        orders::OrdersApi { ctx: ctx.clone() },
        sagas::SagasApi { ctx: ctx.clone() },
        sagas::ReplenishmentsApi { ctx: ctx.clone() },
        purchase_orders::PurchaseOrdersApi { ctx: ctx.clone() },
        dead_letters::DeadLettersApi { ctx: ctx.clone() },
        participants::ParticipantsApi { ctx: ctx.clone() },
        movements::MovementsApi { ctx: ctx.clone() },
        health::HealthApi::new(ctx),
        prometheus::MetricsApi { ctx: ctx.clone(), handle: crate::metrics_handle() },
        api_keys::ApiKeysApi { ctx: ctx.clone() },
        audit::AuditApi { ctx: ctx.clone() },
    );
    OpenApiService::new(apis, "Dark-store replenishment", env!("CARGO_PKG_VERSION"))
        .description(
            "Orders reserve stock in dark stores; when a product runs low, the orchestrator refills the store \
             from the central warehouse with a replenishment saga. Every operation but health needs an API key \
             (`Authorization: Bearer <key>`) of the role its description names. Errors are application/problem+json.",
        )
        // Relative: the instance that serves the document, wherever it listens.
        .server(ServerObject::new("/").description("this instance"))
        .contact(ContactObject::new().name(CONTACT))
        .license(LicenseObject::new(LICENSE).url(LICENSE_URL))
}

/// Who answers for the API and the messages, and under which license, as both documents say.
pub const CONTACT: &str = "Dark-store replenishment maintainers";
pub const LICENSE: &str = env!("CARGO_PKG_LICENSE");
/// The text of [`LICENSE`], the workspace's (Cargo.toml).
pub const LICENSE_URL: &str = "https://opensource.org/licenses/MIT";

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/`.
pub fn spec(ctx: &Context) -> String {
    spec::render(&spec::finish(&service(ctx).spec(), &tag_order()))
}

/// The tags' names in [`Tag`]'s order, which Swagger UI shows them in.
fn tag_order() -> Vec<&'static str> {
    use poem_openapi::Tags as _;
    use strum::IntoEnumIterator;
    Tag::iter().map(|tag| tag.name()).collect()
}

/// Every route: the API at the root (`/metrics` included), Swagger UI at `/docs`, and the spec,
/// behind the door ([`access`]), CORS when configured, and what every answer gets ([`observe`]).
pub fn routes(ctx: &Context) -> impl Endpoint + use<> {
    let api = service(ctx);
    let generated = api.spec();
    let finished = spec::finish(&generated, &tag_order());
    let rendered = spec::render(&finished);
    let page = spec::swagger_page(&api.swagger_ui_html(), &generated, &rendered);
    let door = Door::new(&finished, ctx.keys.clone(), ctx.limiter.clone(), ctx.pool.clone(), &ctx.api);
    let writes = consistency::Writes::new(ctx.reads.clone());
    let page: Arc<str> = page.into();
    let docs = move || {
        let page = page.clone();
        make_sync(move |_| Html(page.to_string()))
    };
    let document =
        make_sync(move |_| Response::builder().content_type("application/json; charset=utf-8").body(rendered.clone()));
    let cors = Cors::new()
        .allow_origins(ctx.api.cors_origins.iter().map(String::as_str))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
            "traceparent",
            consistency::HEADER,
        ])
        .expose_headers([
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
            "retry-after",
            "x-request-id",
            "traceparent",
            "idempotency-replayed",
            consistency::HEADER,
        ]);
    // CORS inside the door: its preflights and refusals are charged and audited like the rest.
    Route::new()
        .at("/openapi.json", document)
        .at("/docs", docs())
        .at("/docs/", docs())
        .at(access::FAVICON, make_sync(|_| StatusCode::NO_CONTENT))
        .nest("/", api)
        .around(move |next, request| {
            let writes = writes.clone();
            Box::pin(async move { writes.track(next.as_ref(), request).await })
        })
        .with_if(!ctx.api.cors_origins.is_empty(), cors)
        .around(move |next, request| {
            let door = door.clone();
            // Boxed: the door's future nested in every layer's makes a type too deep for the
            // compiler to lay out in release builds.
            Box::pin(async move { door.guard(next.as_ref(), request).await })
        })
        .around(observe)
}

/// Longest `X-Request-Id` taken from a client; longer or odd ones are replaced by our own.
const MAX_REQUEST_ID: usize = 128;

/// Every request: any error, the framework's included, answered as a problem; an id (the client's
/// `X-Request-Id`, or a new one) on every log line it causes and in the response; its W3C trace
/// context (the client's `traceparent`, or a new trace) for every message it causes; the HTTP
/// metrics, labelled by route pattern; and one log line, its path cut short, unless the door
/// refused it (then it is summed up with the others, [`refused`]). Every 503 says when to retry.
async fn observe<E: Endpoint>(next: Arc<E>, mut request: Request) -> PoemResult<poem::Response> {
    let request_id = request
        .header(REQUEST_ID)
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let trace = request
        .header("traceparent")
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::root, TraceContext::child);
    let method = method_label(request.method());
    let docs = request.uri().path().starts_with("/docs");
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id, trace_id = %trace.trace_id_hex(), method,
        path = %refused::short(&path));
    request.set_data(RequestId(request_id.clone()));
    let started = Instant::now();
    let (mut response, route) = async {
        match trace::scope(trace, next.call(request)).await {
            Ok(response) => {
                let response = response.into_response();
                // The operation the door matched, in the spec's form; else the router's pattern
                // (Swagger UI, the spec).
                let route = response
                    .data::<access::RouteLabel>()
                    .map(|r| r.0.to_string().into())
                    .or_else(|| response.data::<PathPattern>().map(|p| p.0.clone()));
                (response, route)
            }
            Err(error) => {
                let route = error.data::<PathPattern>().map(|p| p.0.clone());
                (problem::from_poem(error, None).await, route)
            }
        }
    }
    .instrument(span.clone())
    .await;
    let elapsed = started.elapsed();
    let status = response.status();
    let route = route.map_or_else(|| "unmatched".to_owned(), |r| r.to_string());
    match response.data::<access::Refused>() {
        Some(access::Refused(client)) => {
            refused::record(Refusal::Request(status.as_u16()), || refused::describe(*client, method, &path));
        }
        None => {
            let millis = elapsed.as_secs_f64() * 1000.0;
            span.in_scope(|| {
                if path == access::FAVICON {
                    tracing::debug!(status = status.as_u16(), millis, "request");
                } else {
                    tracing::info!(status = status.as_u16(), millis, "request");
                }
            });
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(header::RETRY_AFTER) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_UNAVAILABLE));
    }
    let labels = [("method", method.to_owned()), ("route", route), ("status", status.as_u16().to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.header()) {
        response.headers_mut().insert("traceparent", value);
    }
    secure(&mut response, docs);
    Ok(response)
}

const REQUEST_ID: &str = "x-request-id";

/// `Retry-After` of a 503: seconds, as long as a database or key reload hiccup usually lasts.
pub const RETRY_UNAVAILABLE: &str = "1";

/// The request's id, as [`observe`] chose it, for the layers inside.
#[derive(Clone, Debug)]
struct RequestId(String);

/// A request's id and trace id, for its audit row.
pub fn request_ids(request: &Request) -> (String, String) {
    let request_id = request.data::<RequestId>().map_or_else(String::new, |id| id.0.clone());
    let trace_id = trace::current().map_or_else(String::new, |t| t.trace_id_hex());
    (request_id, trace_id)
}

/// The method as a metric label: one of the methods HTTP defines, or `other`, so that a client
/// inventing methods cannot grow the metrics without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Headers that keep a browser from misreading or framing an answer. Swagger UI's page runs its
/// own inline script and styles; every other answer is data and may load nothing.
fn secure(response: &mut Response, docs: bool) {
    let csp = if docs {
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
