//! Store inventory: the stock level type and ledger shared with the orchestrator's API, and the
//! inventory worker that takes shipments into stock.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    cache::Cache,
    config::Simulation,
    messaging::{
        Exchange,
        consumer::{HandleError, Handler},
        outbox::{self, Outgoing},
    },
    protocol::{Command, Envelope, Reply},
};

/// One (store, product) row of stock, as cached and as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StockLevel {
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    pub reorder_threshold: i64,
    pub target_level: i64,
    pub version: i64,
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

/// Why stock moved; stored as text in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum MovementReason {
    /// An inventory row created or overwritten by `PUT` (the opening count).
    StockSet,
    Adjustment,
    OrderReserved,
    OrderFulfilled,
    OrderCancelled,
    ReplenishmentReceived,
    /// Warehouse rows (store_id NULL) from here on.
    WarehouseSet,
    ShipmentDispatched,
    ShipmentCancelled,
}

/// One ledger entry; `store_id` `None` is the central warehouse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub store_id: Option<Uuid>,
    pub product_id: Uuid,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub reason: MovementReason,
    pub reference: Option<Uuid>,
    pub note: Option<String>,
}

impl Movement {
    /// A change of on-hand stock in a store (`Some`) or the warehouse (`None`), caused by
    /// `reference` (the saga, or a fresh id for a count or an adjustment).
    pub fn on_hand(
        store_id: Option<Uuid>,
        product_id: Uuid,
        delta: i64,
        reason: MovementReason,
        reference: Uuid,
    ) -> Self {
        Self {
            store_id,
            product_id,
            on_hand_delta: delta,
            reserved_delta: 0,
            reason,
            reference: Some(reference),
            note: None,
        }
    }
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
         WHERE store_id = $1 AND product_id = $2
         RETURNING store_id, product_id, on_hand, reserved, reorder_threshold, target_level, version",
        store_id,
        product_id,
        delta
    )
    .fetch_optional(tx)
    .await
}

/// Appends ledger entries in one statement. A repeat of the same (reason, reference, place,
/// product) violates `stock_movement_once`: the caller's transaction then rolls back whole.
pub async fn record_movements(conn: &mut PgConnection, movements: &[Movement]) -> sqlx::Result<()> {
    let movements: Vec<&Movement> =
        movements.iter().filter(|m| m.on_hand_delta != 0 || m.reserved_delta != 0).collect();
    if movements.is_empty() {
        return Ok(());
    }
    let stores: Vec<Option<Uuid>> = movements.iter().map(|m| m.store_id).collect();
    let products: Vec<Uuid> = movements.iter().map(|m| m.product_id).collect();
    let on_hand: Vec<i64> = movements.iter().map(|m| m.on_hand_delta).collect();
    let reserved: Vec<i64> = movements.iter().map(|m| m.reserved_delta).collect();
    let reasons: Vec<String> = movements.iter().map(|m| m.reason.to_string()).collect();
    let references: Vec<Option<Uuid>> = movements.iter().map(|m| m.reference).collect();
    let notes: Vec<Option<String>> = movements.iter().map(|m| m.note.clone()).collect();
    sqlx::query!(
        "INSERT INTO stock_movement (store_id, product_id, on_hand_delta, reserved_delta, reason, reference, note)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::int8[], $5::text[], $6::uuid[], $7::text[])",
        &stores as &[Option<Uuid>],
        &products,
        &on_hand,
        &reserved,
        &reasons,
        &references as &[Option<Uuid>],
        &notes as &[Option<String>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn fetch_level(
    conn: &mut PgConnection,
    store_id: Uuid,
    product_id: Uuid,
) -> sqlx::Result<Option<StockLevel>> {
    sqlx::query_as!(
        StockLevel,
        "SELECT store_id, product_id, on_hand, reserved, reorder_threshold, target_level, version
         FROM inventory WHERE store_id = $1 AND product_id = $2",
        store_id,
        product_id
    )
    .fetch_optional(conn)
    .await
}

/// Cache first; on a miss, Postgres, then fill the cache (never over a newer entry).
pub async fn read_level(
    pool: &PgPool,
    cache: &Cache,
    store_id: Uuid,
    product_id: Uuid,
) -> sqlx::Result<Option<StockLevel>> {
    if let Some(level) = cache.get(store_id, product_id).await {
        return Ok(Some(level));
    }
    let level = fetch_level(&mut *pool.acquire().await?, store_id, product_id).await?;
    if let Some(level) = &level {
        cache.put(level).await;
    }
    Ok(level)
}

/// The inventory worker: handles `ReceiveShipment`.
pub struct InventoryWorker {
    pub cache: Cache,
    pub simulation: Simulation,
}

impl Handler for InventoryWorker {
    type Committed = Option<StockLevel>;

    fn name(&self) -> &'static str {
        "inventory"
    }

    fn pause(&self) -> Duration {
        self.simulation.transit_delay
    }

    /// A receipt locks its shipment, then the store's inventory row, as orders do.
    fn lock_order(&self, message: &Envelope) -> String {
        format!("{}/{}/{}", message.payload["store_id"], message.payload["product_id"], message.payload["saga_id"])
    }

    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<Option<StockLevel>, HandleError> {
        let Command::ReceiveShipment { saga_id, shipment_id, store_id, product_id, quantity } = message.body()? else {
            return Err(HandleError::Poison(format!("{} is not a store inventory command", message.message_type)));
        };
        let receipt = Receipt { saga_id, shipment_id, store_id, product_id, quantity };
        let (reply, level) = receive(tx, &receipt, self.simulation.receipt_failure_rate).await?;
        let mut messages = vec![Outgoing::reply(&reply)];
        if let Reply::StockReceived { quantity, .. } = reply
            && level.is_some()
        {
            let event = serde_json::json!({
                "saga_id": saga_id, "shipment_id": shipment_id, "store_id": store_id,
                "product_id": product_id, "quantity": quantity,
            });
            messages.push(Outgoing::event(
                Exchange::InventoryEvents,
                "stock.replenished",
                Some(saga_id),
                event.clone(),
            ));
            messages.push(Outgoing::event(Exchange::WarehouseEvents, "shipment.received", Some(saga_id), event));
        }
        outbox::enqueue(tx, &messages).await?;
        if let Some(level) = &level {
            // Gone before the commit, put back after it: see `Cache::forget`.
            self.cache.forget([(level.store_id, level.product_id)]).await;
        }
        Ok(level)
    }

    async fn after_commit(&self, level: Option<StockLevel>) {
        if let Some(level) = level {
            self.cache.put(&level).await;
        }
    }
}

struct Receipt {
    saga_id: Uuid,
    shipment_id: Uuid,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
}

/// Takes a dispatched shipment into stock. A repeat finds it received and answers the same; a
/// shipment cancelled meanwhile is refused. The shipment row lock orders this against a cancel.
/// The simulated refusal applies only to goods not yet taken in: a resend after a lost answer
/// must not deny a receipt that happened.
async fn receive(
    tx: &mut PgConnection,
    receipt: &Receipt,
    failure_rate: f64,
) -> Result<(Reply, Option<StockLevel>), HandleError> {
    let Receipt { saga_id, shipment_id, store_id, product_id, quantity } = *receipt;
    let shipment = sqlx::query!(
        "SELECT status, quantity FROM shipment WHERE id = $1 AND replenishment_id = $2 FOR UPDATE",
        shipment_id,
        saga_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let shipped = match shipment {
        None => {
            let reason = format!("no shipment {shipment_id} for replenishment {saga_id}");
            return Ok((Reply::ReceiptFailed { saga_id, reason }, None));
        }
        Some(s) if s.status == "received" => {
            return Ok((Reply::StockReceived { saga_id, shipment_id, quantity: s.quantity }, None));
        }
        Some(s) if s.status == "cancelled" => {
            let reason = format!("shipment {shipment_id} was cancelled");
            return Ok((Reply::ReceiptFailed { saga_id, reason }, None));
        }
        Some(_) if refuses(shipment_id, failure_rate) => {
            let reason = "the store refused the delivery (simulated failure)".to_owned();
            return Ok((Reply::ReceiptFailed { saga_id, reason }, None));
        }
        Some(s) => s.quantity,
    };
    if shipped != quantity {
        tracing::warn!(shipped, quantity, "receipt quantity differs from the shipment; taking the shipment's");
    }
    sqlx::query!("UPDATE shipment SET status = 'received', updated_at = now() WHERE id = $1", shipment_id)
        .execute(&mut *tx)
        .await?;
    let level = add_on_hand(tx, store_id, product_id, shipped)
        .await?
        .ok_or_else(|| HandleError::Poison(format!("store {store_id} does not stock product {product_id}")))?;
    let movement =
        Movement::on_hand(Some(store_id), product_id, shipped, MovementReason::ReplenishmentReceived, saga_id);
    record_movements(tx, &[movement]).await?;
    Ok((Reply::StockReceived { saga_id, shipment_id, quantity: shipped }, Some(level)))
}

/// Whether the store refuses this shipment, with probability `rate`. Decided by the shipment's
/// (random, v4) id rather than drawn at each send: a refusal is not recorded, so a fresh draw
/// would let a resent `ReceiveShipment` take in goods that an earlier send had refused, after
/// the saga had started to unwind on that refusal; its cancel would then be refused and the saga
/// end `failed` for want of a consistent store.
fn refuses(shipment_id: Uuid, rate: f64) -> bool {
    rate >= 1.0 || (rate > 0.0 && ((shipment_id.as_u128() >> 64) as f64 / 2f64.powi(64)) < rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shipment_is_refused_at_every_send_or_at_none() {
        let shipments: Vec<Uuid> = (0..10_000).map(|_| Uuid::new_v4()).collect();
        let refused: Vec<bool> = shipments.iter().map(|&s| refuses(s, 0.25)).collect();
        assert!(shipments.iter().zip(&refused).all(|(&s, &first)| refuses(s, 0.25) == first));
        let share = refused.iter().filter(|&&r| r).count() as f64 / shipments.len() as f64;
        assert!((0.2..0.3).contains(&share), "refused {share} of the shipments at a rate of 0.25");
        assert!(shipments.iter().all(|&s| refuses(s, 1.0) && !refuses(s, 0.0)));
    }
}
