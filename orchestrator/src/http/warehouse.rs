//! `/warehouse/stock`: the central warehouse that refills the stores.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{
    Object, OpenApi,
    param::Path,
    payload::Json,
    types::{Example, MaybeUndefined},
};
use uuid::Uuid;

use super::example;
use super::role::{Needs, Operator};
use super::{
    Tag,
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, UNAVAILABLE, UNPROCESSABLE},
};
use crate::{
    Context,
    access::audit::Audit,
    inventory::{self, Reorder},
};

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct WarehouseStock {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    /// Shipped to stores and not yet received.
    pub in_transit: i64,
    /// When the product is reordered from its supplier; `null`: never by the rule.
    #[oai(nullable)]
    pub reorder: Option<ReorderLevels>,
}

impl Example for WarehouseStock {
    fn example() -> Self {
        // After the walk's replenishment of 16 left for Riverside and arrived.
        Self {
            product_id: example::PRODUCT,
            on_hand: 84,
            reserved: 0,
            in_transit: 0,
            reorder: Some(ReorderLevels::example()),
        }
    }
}

impl From<stock::warehouse::WarehouseLevel> for WarehouseStock {
    fn from(l: stock::warehouse::WarehouseLevel) -> Self {
        let reorder = l.reorder_point.zip(l.reorder_target).map(|(point, target)| ReorderLevels { point, target });
        Self { product_id: l.product_id, on_hand: l.on_hand, reserved: l.reserved, in_transit: l.in_transit, reorder }
    }
}

/// The warehouse's reorder levels of a product: when what it has and has on order (on hand −
/// reserved + open purchase orders) falls to `point` or below, a purchase order opens for enough
/// to reach `target`.
#[derive(Clone, Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct ReorderLevels {
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub point: i64,
    /// Above `point` (422 otherwise).
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub target: i64,
}

impl Example for ReorderLevels {
    fn example() -> Self {
        Self { point: 40, target: 200 }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct SetWarehouseStock {
    /// Not below what the warehouse has reserved (409 otherwise).
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub on_hand: i64,
    /// The reorder levels; absent: left as they are; `null`: never reordered by the rule.
    #[oai(nullable)]
    pub reorder: MaybeUndefined<ReorderLevels>,
}

impl Example for SetWarehouseStock {
    fn example() -> Self {
        Self { on_hand: 100, reorder: MaybeUndefined::Undefined }
    }
}

pub struct WarehouseApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Warehouse")]
impl WarehouseApi {
    /// Set the warehouse's stock of a product
    ///
    /// With `reorder`, also when it is reordered from its supplier. A stock left at or below its
    /// reorder point opens a purchase order in the same transaction.
    #[oai(path = "/warehouse/stock/:product_id", method = "put", operation_id = "setWarehouseStock")]
    async fn set(
        &self,
        _role: Needs<Operator>,
        product_id: Path<Uuid>,
        body: Json<SetWarehouseStock>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<WarehouseStock>, { NOT_FOUND | CONFLICT | UNPROCESSABLE | UNAVAILABLE }> {
        let SetWarehouseStock { on_hand, reorder } = body.0;
        let reorder = match reorder {
            MaybeUndefined::Undefined => Reorder::Keep,
            MaybeUndefined::Null => Reorder::Never,
            MaybeUndefined::Value(ReorderLevels { point, target }) => Reorder::At { point, target },
        };
        Ok(Json(inventory::set_warehouse(&self.ctx, &audit, product_id.0, on_hand, reorder).await?.into()))
    }

    /// Get the warehouse's stock of a product
    #[oai(path = "/warehouse/stock/:product_id", method = "get", operation_id = "getWarehouseStock")]
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
