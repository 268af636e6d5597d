//! A store's stock of one product: the `inventory` table. Every statement returns whole rows
//! (`RETURNING *`), so [`StockLevel`] is the table's one column list.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// One (store, product) row of stock, as stored, cached and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StockLevel {
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    pub reorder_threshold: i64,
    pub target_level: i64,
    /// Bumped by every change; the cache keeps the newest.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// At or below the threshold: a replenishment is due unless one is already open.
    pub fn is_low(&self) -> bool {
        self.available() <= self.reorder_threshold
    }
}

/// The counted levels of one (store, product), as a person sets them.
#[derive(Clone, Copy, Debug)]
pub struct Levels {
    pub on_hand: i64,
    pub reorder_threshold: i64,
    pub target_level: i64,
}

pub async fn fetch(conn: &mut PgConnection, store_id: Uuid, product_id: Uuid) -> sqlx::Result<Option<StockLevel>> {
    sqlx::query_as!(StockLevel, "SELECT * FROM inventory WHERE store_id = $1 AND product_id = $2", store_id, product_id)
        .fetch_optional(conn)
        .await
}

/// Every store's level of a product, by store id.
pub async fn of_product(conn: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Vec<StockLevel>> {
    sqlx::query_as!(StockLevel, "SELECT * FROM inventory WHERE product_id = $1 ORDER BY store_id", product_id)
        .fetch_all(conn)
        .await
}

/// A page of a store's levels, by product id after `after`.
pub async fn list(conn: &mut PgConnection, store_id: Uuid, after: Uuid, limit: i64) -> sqlx::Result<Vec<StockLevel>> {
    sqlx::query_as!(
        StockLevel,
        "SELECT * FROM inventory WHERE store_id = $1 AND product_id > $2 ORDER BY product_id LIMIT $3",
        store_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Creates or overwrites the levels of a (store, product); returns the new level and the on-hand
/// stock it replaced (0 for a new row), for the ledger.
pub async fn set(
    tx: &mut PgConnection,
    store_id: Uuid,
    product_id: Uuid,
    levels: Levels,
) -> sqlx::Result<(StockLevel, i64)> {
    // Make sure the row exists, then lock it and read what it held. (One statement cannot do
    // both: a `FOR UPDATE` read skips the row its own statement updates.)
    sqlx::query!(
        "INSERT INTO inventory (store_id, product_id, on_hand, reorder_threshold, target_level)
         VALUES ($1, $2, 0, $3, $4) ON CONFLICT DO NOTHING",
        store_id,
        product_id,
        levels.reorder_threshold,
        levels.target_level
    )
    .execute(&mut *tx)
    .await?;
    let previous = sqlx::query_scalar!(
        "SELECT on_hand FROM inventory WHERE store_id = $1 AND product_id = $2 FOR UPDATE",
        store_id,
        product_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let level = sqlx::query_as!(
        StockLevel,
        "UPDATE inventory SET on_hand = $3, reorder_threshold = $4, target_level = $5,
                version = version + 1, updated_at = now()
         WHERE store_id = $1 AND product_id = $2 RETURNING *",
        store_id,
        product_id,
        levels.on_hand,
        levels.reorder_threshold,
        levels.target_level
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok((level, previous))
}

/// Adds `delta` to a store's on-hand stock; `None` when the store does not stock the product.
/// Counts, adjustments and receipts all change stock through here.
pub async fn add_on_hand(
    tx: &mut PgConnection,
    store_id: Uuid,
    product_id: Uuid,
    delta: i64,
) -> sqlx::Result<Option<StockLevel>> {
    sqlx::query_as!(
        StockLevel,
        "UPDATE inventory SET on_hand = on_hand + $3, version = version + 1, updated_at = now()
         WHERE store_id = $1 AND product_id = $2 RETURNING *",
        store_id,
        product_id,
        delta
    )
    .fetch_optional(tx)
    .await
}

/// Reserves `quantity` if that much is available; `None` when it is not (or not stocked at all).
/// One conditional statement, no read first: concurrent reservations cannot oversell.
pub async fn reserve(
    tx: &mut PgConnection,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
) -> sqlx::Result<Option<StockLevel>> {
    sqlx::query_as!(
        StockLevel,
        "UPDATE inventory SET reserved = reserved + $3, version = version + 1, updated_at = now()
         WHERE store_id = $1 AND product_id = $2 AND on_hand - reserved >= $3 RETURNING *",
        store_id,
        product_id,
        quantity
    )
    .fetch_optional(tx)
    .await
}

/// Ends a reservation of `quantity`: released back to available stock, or, when `handed_over`,
/// gone with the customer (on hand drops too).
pub async fn unreserve(
    tx: &mut PgConnection,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    handed_over: bool,
) -> sqlx::Result<StockLevel> {
    sqlx::query_as!(
        StockLevel,
        "UPDATE inventory SET on_hand = on_hand - $3::int8 * $4::int8, reserved = reserved - $3,
                version = version + 1, updated_at = now()
         WHERE store_id = $1 AND product_id = $2 RETURNING *",
        store_id,
        product_id,
        quantity,
        i64::from(handed_over)
    )
    .fetch_one(tx)
    .await
}

/// What is available of each product in a store, for products that exist (0 when the store does
/// not stock one); products that do not exist are left out.
pub async fn available(tx: &mut PgConnection, store_id: Uuid, products: &[Uuid]) -> sqlx::Result<Vec<(Uuid, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT p.id, COALESCE(i.on_hand - i.reserved, 0)::int8 AS "available!"
           FROM product p LEFT JOIN inventory i ON i.product_id = p.id AND i.store_id = $1
           WHERE p.id = ANY($2)"#,
        store_id,
        products
    )
    .fetch_all(tx)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.available)).collect())
}
