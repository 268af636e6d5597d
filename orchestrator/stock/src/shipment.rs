//! Goods on their way from the central warehouse to a store: the `shipment` table, one row per
//! replenishment. A cancel that comes before the dispatch leaves a cancelled, empty row, so a late
//! dispatch finds it and ships nothing.

use sqlx::PgConnection;
use uuid::Uuid;

/// Where a shipment is; stored as text, checked by the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum ShipmentStatus {
    /// On the road: counted as in transit to the store.
    Dispatched,
    Received,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shipment {
    pub id: Uuid,
    pub quantity: i64,
    pub status: ShipmentStatus,
}

fn typed(id: Uuid, quantity: i64, status: &str) -> sqlx::Result<Shipment> {
    let status = status.parse().map_err(|_| sqlx::Error::Decode(format!("shipment status {status:?}").into()))?;
    Ok(Shipment { id, quantity, status })
}

/// The shipment of replenishment `saga_id`, locked.
pub async fn lock_for(tx: &mut PgConnection, saga_id: Uuid) -> sqlx::Result<Option<Shipment>> {
    let row = sqlx::query!("SELECT id, quantity, status FROM shipment WHERE replenishment_id = $1 FOR UPDATE", saga_id)
        .fetch_optional(tx)
        .await?;
    row.map(|r| typed(r.id, r.quantity, &r.status)).transpose()
}

/// Shipment `id` of replenishment `saga_id`, locked.
pub async fn lock(tx: &mut PgConnection, id: Uuid, saga_id: Uuid) -> sqlx::Result<Option<Shipment>> {
    let row = sqlx::query!(
        "SELECT id, quantity, status FROM shipment WHERE id = $1 AND replenishment_id = $2 FOR UPDATE",
        id,
        saga_id
    )
    .fetch_optional(tx)
    .await?;
    row.map(|r| typed(r.id, r.quantity, &r.status)).transpose()
}

pub struct NewShipment {
    pub id: Uuid,
    pub saga_id: Uuid,
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
    pub status: ShipmentStatus,
}

pub async fn insert(tx: &mut PgConnection, shipment: &NewShipment) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO shipment (id, replenishment_id, store_id, product_id, quantity, status)
         VALUES ($1, $2, $3, $4, $5, $6)",
        shipment.id,
        shipment.saga_id,
        shipment.store_id,
        shipment.product_id,
        shipment.quantity,
        shipment.status.as_ref()
    )
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn set_status(tx: &mut PgConnection, id: Uuid, status: ShipmentStatus) -> sqlx::Result<()> {
    sqlx::query!("UPDATE shipment SET status = $2, updated_at = now() WHERE id = $1", id, status.as_ref())
        .execute(tx)
        .await?;
    Ok(())
}

/// What is on the road to a store, of one product.
pub async fn in_transit_to(tx: &mut PgConnection, store_id: Uuid, product_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(quantity), 0)::int8 AS "quantity!" FROM shipment
           WHERE store_id = $1 AND product_id = $2 AND status = 'dispatched'"#,
        store_id,
        product_id
    )
    .fetch_one(tx)
    .await
}
