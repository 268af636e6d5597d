//! `/stock-movements`: the append-only stock ledger, for reports.

use chrono::{DateTime, Utc};
use poem_openapi::{Object, OpenApi, param::Query, payload::Json, types::Example};
use uuid::Uuid;

use super::example;
use super::role::{Needs, Operator};
use super::{
    Tag,
    consistency::MayLag,
    input::Id,
    page::{self, Limit, page_of},
    problem::{ApiResult, UNAVAILABLE},
};
use crate::Context;

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct StockMovement {
    pub id: i64,
    /// Absent for the central warehouse: a client that follows store ids from a page
    /// never meets a null one.
    #[oai(skip_serializing_if_is_none)]
    pub store_id: Option<Uuid>,
    pub product_id: Uuid,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    /// stock_set, adjustment, order_reserved, order_fulfilled, order_cancelled,
    /// replenishment_received, warehouse_set, shipment_dispatched, shipment_cancelled or
    /// purchase_received.
    pub reason: String,
    /// The order, saga or adjustment that caused it.
    #[oai(nullable)]
    pub reference: Option<Uuid>,
    /// The person's words, for an adjustment.
    #[oai(nullable)]
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

impl Example for StockMovement {
    fn example() -> Self {
        // The walk's order of 6 reserving Riverside's oat milk.
        Self {
            id: 3,
            store_id: Some(example::STORE),
            product_id: example::PRODUCT,
            on_hand_delta: 0,
            reserved_delta: 6,
            reason: "order_reserved".into(),
            reference: Some(example::ORDER),
            note: None,
            at: example::at(3),
        }
    }
}

page_of!(StockMovementPage, StockMovement);

pub struct MovementsApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Reports")]
impl MovementsApi {
    /// List stock movements
    ///
    /// Oldest first, filtered by store, product and a time range (`from` inclusive, `to`
    /// exclusive; a range that ends before it starts holds nothing).
    #[oai(path = "/stock-movements", method = "get", operation_id = "listStockMovements")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _role: Needs<Operator>,
        store_id: Query<Option<Id>>,
        product_id: Query<Option<Id>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        limit: Query<Option<Limit>>,
        cursor: Query<Option<page::IdCursor>>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<StockMovementPage>, UNAVAILABLE> {
        let fetch = page::fetch_limit(limit.0);
        let after = cursor.0.map_or(0, |c| c.0);
        let (store_id, product_id, from, to) = (store_id.0.map(Uuid::from), product_id.0.map(Uuid::from), from.0, to.0);
        let rows = lag
            .run(&self.ctx.reads, "listStockMovements", |pool| async move {
                sqlx::query_as!(
                    StockMovement,
                    "SELECT id, store_id, product_id, on_hand_delta, reserved_delta, reason, reference, note, at
             FROM stock_movement
             WHERE id > $1 AND ($2::uuid IS NULL OR store_id = $2) AND ($3::uuid IS NULL OR product_id = $3)
               AND ($4::timestamptz IS NULL OR at >= $4) AND ($5::timestamptz IS NULL OR at < $5)
             ORDER BY id LIMIT $6",
                    after,
                    store_id,
                    product_id,
                    from,
                    to,
                    fetch
                )
                .fetch_all(&pool)
                .await
            })
            .await?;
        let (items, next_cursor) = page::split(rows, fetch, |m| m.id.to_string());
        Ok(Json(StockMovementPage { items, next_cursor }))
    }
}
