//! `/warehouse/stock`: the central warehouse that refills the stores.

use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{
    Tag,
    problem::{ApiResult, Problem},
};
use crate::{Context, stock};

#[derive(Clone, Debug, Object)]
pub struct WarehouseStock {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    /// Shipped to stores and not yet received.
    pub in_transit: i64,
}

impl From<stock::WarehouseLevel> for WarehouseStock {
    fn from(l: stock::WarehouseLevel) -> Self {
        Self { product_id: l.product_id, on_hand: l.on_hand, reserved: l.reserved, in_transit: l.in_transit }
    }
}

#[derive(Debug, Object)]
pub struct SetWarehouseStock {
    #[oai(validator(minimum(value = "0")))]
    pub on_hand: i64,
}

pub struct WarehouseApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Warehouse")]
impl WarehouseApi {
    /// Set the warehouse's stock of a product
    #[oai(path = "/warehouse/stock/:product_id", method = "put")]
    async fn set(&self, product_id: Path<Uuid>, body: Json<SetWarehouseStock>) -> ApiResult<Json<WarehouseStock>> {
        Ok(Json(stock::set_warehouse(&self.ctx, product_id.0, body.on_hand).await?.into()))
    }

    /// Get the warehouse's stock of a product
    #[oai(path = "/warehouse/stock/:product_id", method = "get")]
    async fn get(&self, product_id: Path<Uuid>) -> ApiResult<Json<WarehouseStock>> {
        let mut conn = self.ctx.pool.acquire().await?;
        let level = stock::warehouse_level(&mut conn, product_id.0).await?.ok_or_else(|| {
            Problem::not_found(format!("the warehouse holds no stock record for product {}", product_id.0))
        })?;
        Ok(Json(level.into()))
    }
}
