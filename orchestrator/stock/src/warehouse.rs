//! The central warehouse's stock: the `warehouse_stock` table.

use sqlx::PgConnection;
use uuid::Uuid;

/// The central warehouse's stock of one product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarehouseLevel {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    /// Dispatched to stores and not yet received.
    pub in_transit: i64,
    pub reorder_point: Option<i64>,
    pub reorder_target: Option<i64>,
}

/// What the warehouse's low-stock rule reads of a product: its stock and its reorder levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReorderLevels {
    pub on_hand: i64,
    pub reserved: i64,
    /// At or below this (counting what is on order), the product is reordered; `None`: never.
    pub reorder_point: Option<i64>,
    /// What a reorder brings the product up to.
    pub reorder_target: Option<i64>,
}

impl ReorderLevels {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

pub async fn reorder_levels(conn: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Option<ReorderLevels>> {
    sqlx::query_as!(
        ReorderLevels,
        "SELECT on_hand, reserved, reorder_point, reorder_target FROM warehouse_stock WHERE product_id = $1",
        product_id
    )
    .fetch_optional(conn)
    .await
}

/// Sets (or, with `None`, clears) a product's reorder point and target. `false` when the
/// warehouse has no row for the product.
pub async fn set_reorder_levels(
    tx: &mut PgConnection,
    product_id: Uuid,
    levels: Option<(i64, i64)>,
) -> sqlx::Result<bool> {
    let (point, target) = (levels.map(|l| l.0), levels.map(|l| l.1));
    let updated = sqlx::query!(
        "UPDATE warehouse_stock SET reorder_point = $2, reorder_target = $3, version = version + 1, updated_at = now()
         WHERE product_id = $1",
        product_id,
        point,
        target
    )
    .execute(tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub async fn level(conn: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Option<WarehouseLevel>> {
    sqlx::query_as!(
        WarehouseLevel,
        r#"SELECT w.product_id, w.on_hand, w.reserved, w.reorder_point, w.reorder_target,
                  (SELECT COALESCE(sum(s.quantity), 0) FROM shipment s
                   WHERE s.product_id = w.product_id AND s.status = 'dispatched')::int8 AS "in_transit!"
           FROM warehouse_stock w WHERE w.product_id = $1"#,
        product_id
    )
    .fetch_optional(conn)
    .await
}

/// Sets the on-hand stock of a product, creating its row; returns what it replaced (0 for a new
/// row), for the ledger.
pub async fn set_on_hand(tx: &mut PgConnection, product_id: Uuid, on_hand: i64) -> sqlx::Result<i64> {
    sqlx::query!("INSERT INTO warehouse_stock (product_id, on_hand) VALUES ($1, 0) ON CONFLICT DO NOTHING", product_id)
        .execute(&mut *tx)
        .await?;
    let previous =
        sqlx::query_scalar!("SELECT on_hand FROM warehouse_stock WHERE product_id = $1 FOR UPDATE", product_id)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query!(
        "UPDATE warehouse_stock SET on_hand = $2, version = version + 1, updated_at = now() WHERE product_id = $1",
        product_id,
        on_hand
    )
    .execute(&mut *tx)
    .await?;
    Ok(previous)
}

/// What can be shipped of a product, with its row locked until the transaction ends (0 when the
/// warehouse has no row for it).
///
/// The caller writes in a statement of its own: a single statement that both locked and updated
/// through a CTE was seen, under concurrent dispatches of the same product, to subtract more than
/// it had read as available (a CHECK violation). Under the lock and with its own snapshot, the
/// update sees exactly the stock read.
pub async fn lock_available(tx: &mut PgConnection, product_id: Uuid) -> sqlx::Result<i64> {
    let available = sqlx::query_scalar!(
        r#"SELECT on_hand - reserved AS "available!" FROM warehouse_stock WHERE product_id = $1 FOR UPDATE"#,
        product_id
    )
    .fetch_optional(tx)
    .await?;
    Ok(available.unwrap_or(0))
}

/// Adds a delivery to the warehouse's stock of a product, creating its row if the warehouse never
/// held the product.
pub async fn book_in(tx: &mut PgConnection, product_id: Uuid, quantity: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO warehouse_stock (product_id, on_hand) VALUES ($1, $2)
         ON CONFLICT (product_id) DO UPDATE
         SET on_hand = warehouse_stock.on_hand + EXCLUDED.on_hand, version = warehouse_stock.version + 1,
             updated_at = now()",
        product_id,
        quantity
    )
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn add_on_hand(tx: &mut PgConnection, product_id: Uuid, delta: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE warehouse_stock SET on_hand = on_hand + $2, version = version + 1, updated_at = now()
         WHERE product_id = $1",
        product_id,
        delta
    )
    .execute(tx)
    .await?;
    Ok(())
}
