//! `/warehouse/stock`: the central warehouse that refills the stores.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::role::{Needs, Operator};
use super::{
    Tag,
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, UNAVAILABLE},
};
use crate::{Context, access::audit::Audit, inventory};

#[derive(Clone, Debug, Object)]
pub struct WarehouseStock {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    /// Shipped to stores and not yet received.
    pub in_transit: i64,
}

impl From<stock::warehouse::WarehouseLevel> for WarehouseStock {
    fn from(l: stock::warehouse::WarehouseLevel) -> Self {
        Self { product_id: l.product_id, on_hand: l.on_hand, reserved: l.reserved, in_transit: l.in_transit }
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SetWarehouseStock {
    /// Not below what the warehouse has reserved (409 otherwise).
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub on_hand: i64,
}

pub struct WarehouseApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Warehouse")]
impl WarehouseApi {
    /// Set the warehouse's stock of a product
    #[oai(path = "/warehouse/stock/:product_id", method = "put")]
    async fn set(
        &self,
        _role: Needs<Operator>,
        product_id: Path<Uuid>,
        body: Json<SetWarehouseStock>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<WarehouseStock>, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        Ok(Json(inventory::set_warehouse(&self.ctx, &audit, product_id.0, body.on_hand).await?.into()))
    }

    /// Get the warehouse's stock of a product
    #[oai(path = "/warehouse/stock/:product_id", method = "get")]
    async fn get(
        &self,
        _role: Needs<Operator>,
        product_id: Path<Uuid>,
    ) -> ApiResult<Json<WarehouseStock>, { NOT_FOUND | UNAVAILABLE }> {
        let mut conn = self.ctx.pool.acquire().await?;
        let level = stock::warehouse::level(&mut conn, product_id.0).await?.ok_or_else(|| {
            Problem::not_found(format!("the warehouse holds no stock record for product {}", product_id.0))
        })?;
        Ok(Json(level.into()))
    }
}
