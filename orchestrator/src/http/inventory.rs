//! `/stores/{store_id}/inventory`: what each store holds, read through the Redis cache.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Path, param::Query, payload::Json, types::Example};
use stock::{StockLevel, level};
use uuid::Uuid;

use super::example;
use super::role::{Client, Needs, Operator};
use super::{
    Tag,
    input::{Delta, Free, Id},
    page::{self, Limit, page_of},
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, UNAVAILABLE, UNPROCESSABLE},
};
use crate::{Context, access::audit::Audit, inventory};

/// One product's stock in one store.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Inventory {
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub on_hand: i64,
    /// Held for open orders.
    pub reserved: i64,
    /// on_hand − reserved: what new orders can take.
    pub available: i64,
    /// At or below this available stock, a replenishment starts.
    pub reorder_threshold: i64,
    /// A replenishment refills up to this level.
    pub target_level: i64,
    /// Grows with every change.
    pub version: i64,
}

impl Example for Inventory {
    fn example() -> Self {
        // After the walk's order of 6 and the replenishment of 16 it caused.
        Self {
            store_id: example::STORE,
            product_id: example::PRODUCT,
            on_hand: 26,
            reserved: 6,
            available: 20,
            reorder_threshold: 5,
            target_level: 20,
            version: 4,
        }
    }
}

impl From<StockLevel> for Inventory {
    fn from(l: StockLevel) -> Self {
        Self {
            available: l.available(),
            store_id: l.store_id,
            product_id: l.product_id,
            on_hand: l.on_hand,
            reserved: l.reserved,
            reorder_threshold: l.reorder_threshold,
            target_level: l.target_level,
            version: l.version,
        }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct SetInventory {
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub on_hand: i64,
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub reorder_threshold: i64,
    /// Must be above reorder_threshold (422 otherwise).
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub target_level: i64,
}

impl Example for SetInventory {
    fn example() -> Self {
        Self { on_hand: 10, reorder_threshold: 5, target_level: 20 }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct Adjustment {
    /// Units to add (positive) or remove (negative); not zero. The result must stay between
    /// what open orders reserve and 1,000,000,000 (409 otherwise).
    pub delta: Delta,
    /// Why, for the stock ledger ("damaged", "recount", …).
    pub reason: Free<500>,
}

impl Example for Adjustment {
    fn example() -> Self {
        Self { delta: Delta(-2), reason: Free::example("two cartons damaged in the cold room") }
    }
}

page_of!(InventoryPage, Inventory);

pub struct InventoryApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Inventory")]
impl InventoryApi {
    /// Set a product's stock and levels in a store
    ///
    /// Creates the row or overwrites it (a count). If the result is at or below the reorder
    /// threshold, a replenishment starts.
    #[oai(path = "/stores/:store_id/inventory/:product_id", method = "put", operation_id = "setInventory")]
    async fn set(
        &self,
        _role: Needs<Operator>,
        store_id: Path<Id>,
        product_id: Path<Id>,
        body: Json<SetInventory>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<Inventory>, { NOT_FOUND | CONFLICT | UNPROCESSABLE | UNAVAILABLE }> {
        let levels = level::Levels {
            on_hand: body.on_hand,
            reorder_threshold: body.reorder_threshold,
            target_level: body.target_level,
        };
        let level = inventory::set_levels(&self.ctx, &audit, *store_id.0, *product_id.0, levels).await?;
        Ok(Json(level.into()))
    }

    /// Get a product's stock in a store
    ///
    /// Served from the Redis cache, which every change updates after commit (never over a newer
    /// version) and which expires entries after 30 s; on a miss, or with Redis down, from Postgres.
    #[oai(path = "/stores/:store_id/inventory/:product_id", method = "get", operation_id = "getInventory")]
    async fn get(
        &self,
        _role: Needs<Client>,
        store_id: Path<Id>,
        product_id: Path<Id>,
    ) -> ApiResult<Json<Inventory>, { NOT_FOUND | UNAVAILABLE }> {
        let level = self.ctx.cache.read(&self.ctx.pool, *store_id.0, *product_id.0).await?.ok_or_else(|| {
            Problem::not_found(format!("store {} has no inventory of product {}", *store_id.0, *product_id.0))
        })?;
        Ok(Json(level.into()))
    }

    /// List a store's inventory
    #[oai(path = "/stores/:store_id/inventory", method = "get", operation_id = "listInventory")]
    async fn list(
        &self,
        _role: Needs<Client>,
        store_id: Path<Id>,
        limit: Query<Option<Limit>>,
        /// A page's next_cursor.
        cursor: Query<Option<Id>>,
    ) -> ApiResult<Json<InventoryPage>, { NOT_FOUND | UNAVAILABLE }> {
        let fetch = page::fetch_limit(limit.0);
        let after = cursor.0.map_or(Uuid::nil(), Uuid::from);
        let mut conn = self.ctx.pool.acquire().await?;
        let exists = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM store WHERE id = $1) AS "e!""#, *store_id.0)
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            return Err(Problem::not_found(format!("no store {}", *store_id.0)).into());
        }
        let rows = level::list(&mut conn, *store_id.0, after, fetch).await?;
        let (items, next_cursor) = page::split(rows, fetch, |l| l.product_id.to_string());
        Ok(Json(InventoryPage { items: items.into_iter().map(Inventory::from).collect(), next_cursor }))
    }

    /// Adjust a product's stock in a store
    ///
    /// For stock found, lost or damaged; recorded in the stock ledger with its reason.
    #[oai(
        path = "/stores/:store_id/inventory/:product_id/adjustments",
        method = "post",
        operation_id = "adjustInventory"
    )]
    async fn adjust(
        &self,
        _role: Needs<Operator>,
        store_id: Path<Id>,
        product_id: Path<Id>,
        body: Json<Adjustment>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<Inventory>, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let level =
            inventory::adjust(&self.ctx, &audit, *store_id.0, *product_id.0, body.delta.0, &body.reason).await?;
        Ok(Json(level.into()))
    }
}
