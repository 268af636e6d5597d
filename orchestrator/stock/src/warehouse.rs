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
}

pub async fn level(conn: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Option<WarehouseLevel>> {
    sqlx::query_as!(
        WarehouseLevel,
        r#"SELECT w.product_id, w.on_hand, w.reserved,
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
