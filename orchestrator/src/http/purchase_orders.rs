//! `/purchase-orders`: an operator orders a product for the warehouse from its supplier by hand.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json, types::Example};

use super::example;
use super::role::{Needs, Operator};
use super::{
    Tag,
    input::{Free, Id, Optional},
    problem::{ApiResult, CONFLICT, NOT_FOUND, UNAVAILABLE},
    sagas::{Created, saga_detail},
};
use crate::{Context, access::audit::Audit, purchasing};

/// A purchase order started by hand; the timeline names the key that started it.
#[derive(Clone, Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct NewPurchaseOrder {
    pub product_id: Id,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub quantity: i64,
    pub reason: Optional<Free<2000>>,
}

impl Example for NewPurchaseOrder {
    fn example() -> Self {
        Self {
            product_id: Id(example::PRODUCT),
            quantity: 200,
            reason: Optional(Some(Free::example("a supplier promotion: stock up before the price rises"))),
        }
    }
}

/// Purchase orders started by hand: a saga of the `purchase_order` kind, answered with its detail.
pub struct PurchaseOrdersApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::PurchaseOrders")]
impl PurchaseOrdersApi {
    /// Order a product from its supplier by hand
    ///
    /// Whatever the warehouse's stock. 404 when there is no such product; 409 when a purchase
    /// order of it is already open.
    #[oai(path = "/purchase-orders", method = "post", operation_id = "startPurchaseOrder")]
    async fn start(
        &self,
        _role: Needs<Operator>,
        body: Json<NewPurchaseOrder>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Created, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let NewPurchaseOrder { product_id, quantity, reason } = body.0;
        let mut conn = self.ctx.pool.acquire().await?;
        let reason = reason.into_inner();
        let saga_id = purchasing::start(&self.ctx, &mut conn, &audit, *product_id, quantity, reason.as_deref()).await?;
        Ok(Created::Saga(Json(saga_detail(&mut conn, &self.ctx, saga_id).await?)))
    }
}
