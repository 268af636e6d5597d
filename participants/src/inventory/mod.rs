//! The store inventory worker: takes replenishments' shipments into stock ([`receipt`]), and
//! keeps the pick list of paid orders and records their hand-over or their release
//! ([`pick`]).

pub mod pick;
pub mod receipt;

use std::time::Duration;

use platform::{
    messaging::{
        consumer::{HandleError, Handler},
        outbox::Outgoing,
    },
    process::{Services, Worker, WorkerHandler},
    protocol::{Decode, DecodeError, Envelope, MessageFamily, Received},
};
use sagas::{INVENTORY, fulfilment, replenishment};
use sqlx::PgConnection;
use stock::{Cache, Movement, StockLevel, ledger};
use uuid::Uuid;

use crate::simulation::Simulation;

/// What the store's queue carries: the replenishment's commands (its receipts) and the
/// fulfilment's (its pick list).
#[derive(Clone, Debug, PartialEq)]
pub enum StoreCommand {
    Receipt(replenishment::Command),
    Pick(fulfilment::Command),
}

impl Decode for StoreCommand {
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        if replenishment::Command::TYPES.contains(&envelope.message_type.as_str()) {
            envelope.body().map(Self::Receipt)
        } else {
            envelope.body().map(Self::Pick)
        }
    }
}

/// The inventory worker: handles the replenishment's `ReceiveShipment` and the fulfilment's
/// `ListForPicking`, `RecordHandOver` and `ReleaseReservation`.
pub struct InventoryWorker {
    pub cache: Cache,
    pub simulation: Simulation,
}

/// Its consumer, which writes the levels it changes to the cache.
pub const WORKER: Worker = Worker {
    rough: &[("RECEIPT_FAILURE_RATE", "0.05"), ("PICKING_FAILURE_RATE", "0.05")],
    ..Worker::consuming::<InventoryWorker>(INVENTORY)
};

impl WorkerHandler for InventoryWorker {
    fn build(services: &Services) -> anyhow::Result<Self> {
        let cache = Cache::new(services.redis.clone(), &services.config.namespace);
        Ok(Self { cache, simulation: services.config.section()? })
    }
}

impl Handler for InventoryWorker {
    /// The levels the message changed, written to the cache after the commit.
    type Committed = Vec<StockLevel>;
    /// The ledger entries of the batch's receipts, written together at its end.
    type Batch = Vec<Movement>;
    type Message = StoreCommand;

    fn name(&self) -> &'static str {
        "inventory"
    }

    fn pause(&self) -> Duration {
        self.simulation.transit_delay
    }

    /// A message locks its store's inventory rows, as orders do (by store, then product), after
    /// its shipment or its pick.
    fn lock_order(&self, command: &StoreCommand) -> String {
        let (store_id, product_id, saga_id) = match command {
            StoreCommand::Receipt(
                replenishment::Command::ReceiveShipment { store_id, product_id, saga_id, .. }
                | replenishment::Command::DispatchShipment { store_id, product_id, saga_id, .. }
                | replenishment::Command::CancelShipment { store_id, product_id, saga_id },
            ) => (*store_id, Some(*product_id), *saga_id),
            StoreCommand::Pick(
                fulfilment::Command::ListForPicking { order_id, store_id, items }
                | fulfilment::Command::RecordHandOver { order_id, store_id, items }
                | fulfilment::Command::ReleaseReservation { order_id, store_id, items },
            ) => (*store_id, items.iter().map(|line| line.product_id).min(), *order_id),
            StoreCommand::Pick(
                fulfilment::Command::ChargePayment { order_id, .. } | fulfilment::Command::RefundPayment { order_id },
            ) => (Uuid::nil(), None, *order_id),
        };
        format!("{store_id}/{}/{saga_id}", product_id.unwrap_or_default())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &Received<StoreCommand>,
        movements: &mut Vec<Movement>,
        out: &mut Vec<Outgoing>,
    ) -> Result<Vec<StockLevel>, HandleError> {
        let (messages, levels) = match &received.message {
            StoreCommand::Receipt(command) => {
                let (messages, level) =
                    receipt::handle(tx, movements, command, self.simulation.receipt_failure_rate).await?;
                (messages, level.into_iter().collect())
            }
            StoreCommand::Pick(command) => pick::handle(tx, command, self.simulation.picking_failure_rate).await?,
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
