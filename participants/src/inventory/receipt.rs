//! Receipts: a store takes a replenishment's shipment into stock.

use platform::{
    messaging::{consumer::HandleError, outbox::Outgoing},
    protocol::MessageFamily,
};
use sagas::replenishment::{Command, Reply, ShipmentReceived, StockReplenished};
use sqlx::PgConnection;
use stock::{
    Movement, MovementReason, StockLevel, level,
    shipment::{self, ShipmentStatus},
};
use uuid::Uuid;

use crate::decided;

/// Takes a shipment into stock: the reply, the events, and the level it changed (if any); the
/// stock it took goes into `movements`.
pub(super) async fn handle(
    tx: &mut PgConnection,
    movements: &mut Vec<Movement>,
    command: &Command,
    failure_rate: f64,
) -> Result<(Vec<Outgoing>, Option<StockLevel>), HandleError> {
    let Command::ReceiveShipment { saga_id, shipment_id, store_id, product_id, quantity } = *command else {
        let (name, _) = command.to_parts();
        return Err(HandleError::Poison(format!("{name} is not a store inventory command")));
    };
    let receipt = Receipt { saga_id, shipment_id, store_id, product_id, quantity };
    let (reply, level) = receive(tx, movements, &receipt, failure_rate).await?;
    let mut messages = vec![Outgoing::reply(&reply)];
    if let Reply::StockReceived { quantity, .. } = reply
        && level.is_some()
    {
        let replenished = StockReplenished { saga_id, shipment_id, store_id, product_id, quantity };
        messages.push(Outgoing::event(&replenished));
        messages.push(Outgoing::event(&ShipmentReceived { saga_id, shipment_id, store_id, product_id, quantity }));
    }
    Ok((messages, level))
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
    movements: &mut Vec<Movement>,
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
        Some(_) if decided(shipment_id, failure_rate) => {
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
    movements.push(Movement::on_hand(
        Some(store_id),
        product_id,
        shipped,
        MovementReason::ReplenishmentReceived,
        saga_id,
    ));
    Ok((Reply::StockReceived { saga_id, shipment_id, quantity: shipped }, Some(level)))
}
