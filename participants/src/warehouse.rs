//! The warehouse worker: dispatches replenishments' shipments and cancels them, and books
//! suppliers' deliveries in.
//!
//! Every command is idempotent by saga id, and every command of one saga first takes that saga's
//! advisory lock (a batch takes all of its own at once, in lock order), so a dispatch and its
//! cancel (or two sends of either) never interleave. A cancel that arrives before the dispatch
//! leaves a cancelled, empty shipment behind, which the late dispatch finds: the undo is safe
//! whether or not the step ever ran.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use platform::{
    config::SagaTiming,
    messaging::{
        consumer::{HandleError, Handler},
        outbox::Outgoing,
    },
    process::{Services, Worker, WorkerHandler},
    protocol::{CommandFamily, Decode, DecodeError, Envelope, MessageFamily, Received},
};
use sagas::{
    WAREHOUSE, purchase_order,
    replenishment::{Command, Reply, ShipmentDispatched},
};
use stock::{
    Movement, MovementReason, ledger,
    shipment::{self, NewShipment, Shipment, ShipmentStatus},
    warehouse,
};

use crate::locks::{self, Space};

/// What the warehouse's queue carries: the replenishment's commands (its shipments) and the
/// purchase order's (its deliveries).
#[derive(Clone, Debug, PartialEq)]
pub enum WarehouseCommand {
    Shipment(Command),
    Purchase(purchase_order::Command),
}

impl Decode for WarehouseCommand {
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        if purchase_order::Command::TYPES.contains(&envelope.message_type.as_str()) {
            envelope.body().map(Self::Purchase)
        } else {
            envelope.body().map(Self::Shipment)
        }
    }
}

impl WarehouseCommand {
    fn saga_and_product(&self) -> (Uuid, Uuid) {
        match self {
            Self::Shipment(
                Command::DispatchShipment { saga_id, product_id, .. }
                | Command::CancelShipment { saga_id, product_id, .. }
                | Command::ReceiveShipment { saga_id, product_id, .. },
            ) => (*saga_id, *product_id),
            Self::Purchase(command @ purchase_order::Command::PlacePurchase { product_id, .. })
            | Self::Purchase(command @ purchase_order::Command::CancelPurchase { product_id, .. })
            | Self::Purchase(command @ purchase_order::Command::ReceivePurchase { product_id, .. }) => {
                (command.saga_id(), *product_id)
            }
        }
    }
}

pub struct WarehouseWorker {
    /// The deadlines of the purchase orders its low-stock rule opens.
    pub timing: SagaTiming,
}

/// Its consumer.
pub const WORKER: Worker = Worker::consuming::<WarehouseWorker>(WAREHOUSE);

impl WorkerHandler for WarehouseWorker {
    fn build(services: &Services) -> anyhow::Result<Self> {
        Ok(Self { timing: services.config.saga })
    }
}

impl Handler for WarehouseWorker {
    type Committed = ();
    /// The batch's ledger entries, written together at its end.
    type Batch = Vec<Movement>;
    type Message = WarehouseCommand;

    fn name(&self) -> &'static str {
        "warehouse"
    }

    fn pause(&self) -> Duration {
        Duration::ZERO
    }

    /// A command locks its saga's shipment or delivery, then its product's warehouse stock.
    fn lock_order(&self, command: &WarehouseCommand) -> String {
        let (saga_id, product_id) = command.saga_and_product();
        format!("{product_id}/{saga_id}")
    }

    /// Takes the lock of every saga in the batch, in the batch's order, in one statement. Its own
    /// statement: what the commands then read is read after the locks are held.
    async fn prepare(
        &self,
        tx: &mut PgConnection,
        commands: &[&Received<WarehouseCommand>],
    ) -> Result<Vec<Movement>, HandleError> {
        let sagas: Vec<String> = commands.iter().map(|c| c.message.saga_and_product().0.to_string()).collect();
        locks::lock(tx, Space::Shipment, &sagas).await?;
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &Received<WarehouseCommand>,
        movements: &mut Vec<Movement>,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), HandleError> {
        let messages = match received.message.clone() {
            WarehouseCommand::Shipment(Command::DispatchShipment { saga_id, store_id, product_id, quantity }) => {
                let messages = dispatch(tx, movements, saga_id, store_id, product_id, quantity).await?;
                // The warehouse's own low-stock rule, in the transaction that took the stock.
                purchase_order::reorder_if_low(tx, &self.timing, product_id).await?;
                messages
            }
            WarehouseCommand::Shipment(Command::CancelShipment { saga_id, store_id, product_id }) => {
                vec![Outgoing::reply(&cancel(tx, movements, saga_id, store_id, product_id).await?)]
            }
            WarehouseCommand::Purchase(purchase_order::Command::ReceivePurchase {
                purchase_id,
                product_id,
                quantity,
            }) => {
                vec![Outgoing::reply(&book_in(tx, movements, purchase_id, product_id, quantity).await?)]
            }
            WarehouseCommand::Shipment(Command::ReceiveShipment { .. }) => {
                return Err(HandleError::Poison("ReceiveShipment is a store inventory command".into()));
            }
            WarehouseCommand::Purchase(
                purchase_order::Command::PlacePurchase { .. } | purchase_order::Command::CancelPurchase { .. },
            ) => {
                return Err(HandleError::Poison(format!("{} is a supplier command", received.envelope.message_type)));
            }
        };
        out.extend(messages);
        Ok(())
    }

    async fn finish(&self, tx: &mut PgConnection, movements: Vec<Movement>) -> Result<(), HandleError> {
        Ok(ledger::record(tx, &movements).await?)
    }

    async fn after_commit(&self, (): ()) {}
}

/// Ships what the warehouse has, up to `quantity`; rejects when it has nothing. The stock it
/// takes goes into `movements`.
async fn dispatch(
    tx: &mut PgConnection,
    movements: &mut Vec<Movement>,
    saga_id: Uuid,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
) -> Result<Vec<Outgoing>, HandleError> {
    if quantity <= 0 {
        return Err(HandleError::Poison(format!("cannot dispatch a quantity of {quantity}")));
    }
    if let Some(shipment) = shipment::lock_for(tx, saga_id).await? {
        let reply = if shipment.status == ShipmentStatus::Cancelled {
            Reply::ShipmentRejected { saga_id, reason: "the shipment was cancelled before dispatch".into() }
        } else {
            Reply::ShipmentDispatched { saga_id, shipment_id: shipment.id, quantity: shipment.quantity }
        };
        return Ok(vec![Outgoing::reply(&reply)]);
    }
    let shipped = warehouse::lock_available(tx, product_id).await?.min(quantity);
    if shipped <= 0 {
        // Leave a tombstone so that no later send of this dispatch ships after the rejection.
        shipment::insert(tx, &tombstone(saga_id, store_id, product_id)).await?;
        let reason = "the warehouse has none of this product to ship".to_owned();
        return Ok(vec![Outgoing::reply(&Reply::ShipmentRejected { saga_id, reason })]);
    }
    warehouse::add_on_hand(tx, product_id, -shipped).await?;
    let shipment_id = Uuid::now_v7();
    let shipment = NewShipment {
        id: shipment_id,
        saga_id,
        store_id,
        product_id,
        quantity: shipped,
        status: ShipmentStatus::Dispatched,
    };
    shipment::insert(tx, &shipment).await?;
    movements.push(Movement::on_hand(None, product_id, -shipped, MovementReason::ShipmentDispatched, saga_id));
    let event = ShipmentDispatched {
        saga_id,
        shipment_id,
        store_id,
        product_id,
        quantity_requested: quantity,
        quantity: shipped,
    };
    Ok(vec![
        Outgoing::reply(&Reply::ShipmentDispatched { saga_id, shipment_id, quantity: shipped }),
        Outgoing::event(&event),
    ])
}

/// Cancels the saga's shipment and returns its stock (into `movements`); refuses once the store
/// has received it.
async fn cancel(
    tx: &mut PgConnection,
    movements: &mut Vec<Movement>,
    saga_id: Uuid,
    store_id: Uuid,
    product_id: Uuid,
) -> Result<Reply, HandleError> {
    let Some(Shipment { id, quantity, status }) = shipment::lock_for(tx, saga_id).await? else {
        shipment::insert(tx, &tombstone(saga_id, store_id, product_id)).await?;
        return Ok(Reply::ShipmentCancelled { saga_id, quantity_returned: 0 });
    };
    match status {
        ShipmentStatus::Cancelled => Ok(Reply::ShipmentCancelled { saga_id, quantity_returned: quantity }),
        ShipmentStatus::Received => {
            Ok(Reply::CancelRefused { saga_id, reason: format!("shipment {id} was already received by the store") })
        }
        ShipmentStatus::Dispatched => {
            shipment::set_status(tx, id, ShipmentStatus::Cancelled).await?;
            warehouse::add_on_hand(tx, product_id, quantity).await?;
            movements.push(Movement::on_hand(None, product_id, quantity, MovementReason::ShipmentCancelled, saga_id));
            Ok(Reply::ShipmentCancelled { saga_id, quantity_returned: quantity })
        }
    }
}

/// Books a supplier's delivery into the warehouse's stock (into `movements`), once: the ledger
/// entry is the record that it was, so a receipt sent again answers what was booked.
async fn book_in(
    tx: &mut PgConnection,
    movements: &mut Vec<Movement>,
    purchase_id: Uuid,
    product_id: Uuid,
    quantity: i64,
) -> Result<purchase_order::Reply, HandleError> {
    if quantity <= 0 {
        return Err(HandleError::Poison(format!("cannot book in a quantity of {quantity}")));
    }
    let reason = MovementReason::PurchaseReceived;
    let pending = movements.iter().find(|m| m.reason == reason && m.reference == Some(purchase_id));
    let booked = match pending {
        Some(movement) => Some(movement.on_hand_delta),
        None => ledger::recorded(tx, reason, purchase_id).await?,
    };
    if let Some(quantity) = booked {
        return Ok(purchase_order::Reply::PurchaseReceived { purchase_id, quantity });
    }
    warehouse::book_in(tx, product_id, quantity).await?;
    movements.push(Movement::on_hand(None, product_id, quantity, reason, purchase_id));
    Ok(purchase_order::Reply::PurchaseReceived { purchase_id, quantity })
}

/// A cancelled, empty shipment: whatever comes later for this saga finds nothing to ship.
fn tombstone(saga_id: Uuid, store_id: Uuid, product_id: Uuid) -> NewShipment {
    NewShipment { id: Uuid::new_v4(), saga_id, store_id, product_id, quantity: 0, status: ShipmentStatus::Cancelled }
}
