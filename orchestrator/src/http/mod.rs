//! The REST API (poem-openapi): one module per resource, each with its own routes. The OpenAPI
//! document is generated from these types and doc comments; `openapi/openapi.json` is a committed
//! copy that a test keeps in step.

pub mod health;
pub mod inventory;
pub mod movements;
pub mod orders;
pub mod page;
pub mod problem;
pub mod products;
pub mod sagas;
pub mod stores;
pub mod warehouse;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use poem::{
    Endpoint, EndpointExt, Request, Result as PoemResult, Route, get, handler,
    http::{StatusCode, header::CONTENT_LENGTH},
    middleware::Tracing,
    web::Data,
};
use poem_openapi::{OpenApiService, Tags};
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
    /// Replenishment sagas and their timelines.
    Sagas,
    /// The stock ledger.
    Reports,
    /// Liveness and readiness.
    Health,
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
    movements::MovementsApi,
    health::HealthApi,
);

pub fn service(ctx: &Context) -> OpenApiService<Apis, ()> {
    let apis = (
        stores::StoresApi { ctx: ctx.clone() },
        products::ProductsApi { ctx: ctx.clone() },
        inventory::InventoryApi { ctx: ctx.clone() },
        warehouse::WarehouseApi { ctx: ctx.clone() },
        orders::OrdersApi { ctx: ctx.clone() },
        sagas::SagasApi { ctx: ctx.clone() },
        movements::MovementsApi { ctx: ctx.clone() },
        health::HealthApi { ctx: ctx.clone() },
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

/// Every route: the API at the root, Swagger UI at `/docs`, the spec, and Prometheus metrics.
pub fn routes(ctx: &Context, metrics: PrometheusHandle) -> impl Endpoint + use<> {
    let api = service(ctx);
    Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest("/docs", api.swagger_ui())
        .at("/metrics", get(render_metrics).data(metrics))
        .nest("/", api)
        .around(limit_body)
        .with(Tracing)
        .catch_all_error(problem::from_poem)
}

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
    next.call(request).await.map(poem::IntoResponse::into_response)
}

#[handler]
fn render_metrics(handle: Data<&PrometheusHandle>) -> String {
    handle.render()
}

/// Cursors of lists ordered by a UUID are that UUID.
pub fn uuid_cursor(cursor: Option<&str>) -> ApiResult<Uuid> {
    cursor
        .map_or(Ok(Uuid::nil()), |c| c.parse().map_err(|_| Problem::unprocessable("cursor is not one this API issued")))
}
