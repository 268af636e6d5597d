//! The store inventory worker: takes shipments into stock.

use std::time::Duration;

use platform::{
    config::Simulation,
    messaging::{
        Exchange,
        consumer::{HandleError, Handler},
        outbox::{self, Outgoing},
    },
    protocol::Envelope,
};
use sagas::replenishment::{Command, Reply};
use sqlx::PgConnection;
use stock::{
    Cache, Movement, MovementReason, StockLevel, ledger, level,
    shipment::{self, ShipmentStatus},
};
use uuid::Uuid;

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
    let shipped = match shipment::lock(tx, shipment_id, saga_id).await? {
        None => {
            let reason = format!("no shipment {shipment_id} for replenishment {saga_id}");
            return Ok((Reply::ReceiptFailed { saga_id, reason }, None));
        }
        Some(s) if s.status == ShipmentStatus::Received => {
            return Ok((Reply::StockReceived { saga_id, shipment_id, quantity: s.quantity }, None));
        }
        Some(s) if s.status == ShipmentStatus::Cancelled => {
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
    shipment::set_status(tx, shipment_id, ShipmentStatus::Received).await?;
    let level = level::add_on_hand(tx, store_id, product_id, shipped)
        .await?
        .ok_or_else(|| HandleError::Poison(format!("store {store_id} does not stock product {product_id}")))?;
    let movement =
        Movement::on_hand(Some(store_id), product_id, shipped, MovementReason::ReplenishmentReceived, saga_id);
    ledger::record(tx, &[movement]).await?;
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
