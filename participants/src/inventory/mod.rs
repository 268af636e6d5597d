//! The store inventory worker: takes replenishments' shipments into stock ([`receipt`]), and
//! keeps the pick list of paid orders, which the picker hands over or which is released
//! ([`pick`]).

pub mod pick;
pub mod receipt;

use std::time::Duration;

use platform::{
    messaging::{
        consumer::{HandleError, Handler},
        outbox::Outgoing,
    },
    protocol::{Envelope, MessageFamily},
};
use sqlx::PgConnection;
use stock::{Cache, Movement, StockLevel, ledger};

use crate::simulation::Simulation;

/// The inventory worker: handles the replenishment's `ReceiveShipment` and the fulfilment's
/// `HandOver` and `ReleaseReservation`.
pub struct InventoryWorker {
    pub cache: Cache,
    pub simulation: Simulation,
}

impl Handler for InventoryWorker {
    /// The levels the message changed, written to the cache after the commit.
    type Committed = Vec<StockLevel>;
    /// The ledger entries of the batch's receipts, written together at its end.
    type Batch = Vec<Movement>;

    fn name(&self) -> &'static str {
        "inventory"
    }

    fn pause(&self) -> Duration {
        self.simulation.transit_delay
    }

    /// A message locks its store's inventory rows, as orders do, after its shipment or its pick.
    fn lock_order(&self, message: &Envelope) -> String {
        let payload = &message.payload;
        let product = payload.get("product_id").or_else(|| payload.pointer("/items/0/product_id"));
        let saga = payload.get("saga_id").or_else(|| payload.get("order_id"));
        format!("{}/{}/{}", payload["store_id"], product.unwrap_or(&serde_json::Value::Null), saga.unwrap_or_default())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &Envelope,
        movements: &mut Vec<Movement>,
        out: &mut Vec<Outgoing>,
    ) -> Result<Vec<StockLevel>, HandleError> {
        let (messages, levels) = if sagas::replenishment::Command::TYPES.contains(&message.message_type.as_str()) {
            let (messages, level) =
                receipt::handle(tx, movements, message, self.simulation.receipt_failure_rate).await?;
            (messages, level.into_iter().collect())
        } else {
            pick::handle(tx, message, self.simulation.picking_failure_rate).await?
        };
        out.extend(messages);
        // Gone before the commit, put back after it: see `Cache::forget`.
        self.cache.forget(levels.iter().map(|l| (l.store_id, l.product_id))).await;
        Ok(levels)
    }

    async fn finish(&self, tx: &mut PgConnection, movements: Vec<Movement>) -> Result<(), HandleError> {
        Ok(ledger::record(tx, &movements).await?)
    }

    async fn after_commit(&self, levels: Vec<StockLevel>) {
        for level in &levels {
            self.cache.put(level).await;
        }
    }
}
