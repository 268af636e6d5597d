//! `/orders`: customers' orders, which reserve stock in one store.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json, types::Example};
use uuid::Uuid;

use super::example;
use super::role::{Client, Needs};
use super::{
    Tag,
    input::{Id, OneHeader, Text, Token},
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, SHORT_STOCK, UNAVAILABLE, UNPROCESSABLE},
};
use crate::{
    Context,
    access::audit::Audit,
    orders::{self, Placed},
};
use sagas::fulfilment::{Line, OrderStatus};

// The API's form of a `Line`: the same fields, with the API's strict id.
/// One line of an order: a product, and how many.
#[derive(Clone, Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct OrderItem {
    pub product_id: Id,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub quantity: i64,
}

impl Example for OrderItem {
    fn example() -> Self {
        Self { product_id: Id(example::PRODUCT), quantity: 6 }
    }
}

impl From<&OrderItem> for Line {
    fn from(item: &OrderItem) -> Self {
        Self { product_id: *item.product_id, quantity: item.quantity }
    }
}

impl From<Line> for OrderItem {
    fn from(line: Line) -> Self {
        Self { product_id: Id(line.product_id), quantity: line.quantity }
    }
}

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Order {
    pub id: Uuid,
    pub store_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Example for Order {
    fn example() -> Self {
        Self {
            id: example::ORDER,
            store_id: example::STORE,
            status: OrderStatus::Reserved,
            items: vec![OrderItem::example()],
            created_at: example::at(3),
            updated_at: example::at(3),
        }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct NewOrder {
    pub store_id: Id,
    #[oai(validator(min_items = 1, max_items = 100))]
    pub items: Vec<OrderItem>,
}

impl Example for NewOrder {
    fn example() -> Self {
        Self { store_id: Id(example::STORE), items: vec![OrderItem::example()] }
    }
}

impl From<orders::Order> for Order {
    fn from(o: orders::Order) -> Self {
        Self {
            id: o.id,
            store_id: o.store_id,
            status: o.status,
            items: o.items.into_iter().map(OrderItem::from).collect(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum PlaceResponse {
    /// The order is placed and its stock reserved. A retry with the same Idempotency-Key returns
    /// the same order, with `Idempotency-Replayed: true`, and reserves nothing more.
    #[oai(status = 201)]
    Created(Json<Order>, #[oai(header = "Idempotency-Replayed")] Option<bool>),
}

pub struct OrdersApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Orders")]
impl OrdersApi {
    /// Place an order
    ///
    /// Reserves every item in the store, or nothing: if any item is short, the answer is 409 with
    /// the short items listed. Send an `Idempotency-Key` to retry safely. An order costs at most
    /// 100,000,000,000 cents (its lines at the products' prices): a costlier one is a 422, and
    /// so is a product listed twice.
    #[oai(path = "/orders", method = "post", operation_id = "placeOrder")]
    async fn place(
        &self,
        _role: Needs<Client>,
        body: Json<NewOrder>,
        /// Any token of up to 255 visible ASCII characters, unique to this order: a retry with the
        /// same key and body returns the first order. The same key with another body is a 422.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: OneHeader<Option<Text<Token, 255>>>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<PlaceResponse, { NOT_FOUND | CONFLICT | SHORT_STOCK | UNPROCESSABLE | UNAVAILABLE }> {
        let items: Vec<Line> = body.items.iter().map(Line::from).collect();
        let key = idempotency_key.0.as_deref();
        audit.name("store_id", *body.store_id);
        Ok(match orders::place(&self.ctx, &audit, *body.store_id, &items, key).await? {
            Placed::Created(order) => PlaceResponse::Created(Json(order.into()), None),
            Placed::Replayed(order) => PlaceResponse::Created(Json(order.into()), Some(true)),
        })
    }

    /// Get an order
    #[oai(path = "/orders/:id", method = "get", operation_id = "getOrder")]
    async fn get(&self, _role: Needs<Client>, id: Path<Id>) -> ApiResult<Json<Order>, { NOT_FOUND | UNAVAILABLE }> {
        let mut conn = self.ctx.pool.acquire().await?;
        let order =
            orders::load(&mut conn, *id.0).await?.ok_or_else(|| Problem::not_found(format!("no order {}", *id.0)))?;
        Ok(Json(order.into()))
    }

    /// Hand an order over
    ///
    /// The picker's confirmation that the customer has the goods. The answer shows the order
    /// `fulfilled`; the store then records the hand-over (on_hand and reserved both drop) and the
    /// order's saga ends `fulfilled`. Only a paid order can be handed over, and only once: 409
    /// while its payment is pending, once it is being cancelled, or when it was handed over
    /// already.
    #[oai(path = "/orders/:id/fulfil", method = "post", operation_id = "fulfilOrder")]
    async fn fulfil(
        &self,
        _role: Needs<Client>,
        id: Path<Id>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<Order>, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        Ok(Json(orders::fulfil(&self.ctx, &audit, *id.0).await?.into()))
    }

    /// Cancel an order
    ///
    /// The order's fulfilment unwinds: its payment is refunded (if it was taken) and its goods go
    /// back to available stock. The answer shows it `cancelling`; it becomes `cancelled` when
    /// both are done. Cancelling again is harmless; an order handed over cannot be cancelled (409).
    #[oai(path = "/orders/:id/cancel", method = "post", operation_id = "cancelOrder")]
    async fn cancel(
        &self,
        _role: Needs<Client>,
        id: Path<Id>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<Order>, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        Ok(Json(orders::cancel(&self.ctx, &audit, *id.0).await?.into()))
    }
}
