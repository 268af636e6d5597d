//! The warehouse worker: dispatches shipments and cancels them.
//!
//! Both commands are idempotent by saga id, and every command of one saga first takes that saga's
//! advisory lock, so a dispatch and its cancel (or two sends of either) never interleave. A cancel
//! that arrives before the dispatch leaves a cancelled, empty shipment behind, which the late
//! dispatch finds: the undo is safe whether or not the step ever ran.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    inventory::{Movement, MovementReason, record_movements},
    messaging::{
        Exchange,
        consumer::{HandleError, Handler},
        outbox::{self, Outgoing},
    },
    protocol::{Command, Envelope, Reply},
};

pub struct WarehouseWorker;

impl Handler for WarehouseWorker {
    type Committed = ();

    fn name(&self) -> &'static str {
        "warehouse"
    }

    fn pause(&self) -> Duration {
        Duration::ZERO
    }

    /// A command locks its saga's shipment, then its product's warehouse stock.
    fn lock_order(&self, message: &Envelope) -> String {
        format!("{}/{}", message.payload["product_id"], message.payload["saga_id"])
    }

    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandleError> {
        let command: Command = message.body()?;
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", command.saga_id().to_string())
            .execute(&mut *tx)
            .await?;
        let messages = match command {
            Command::DispatchShipment { saga_id, store_id, product_id, quantity } => {
                dispatch(tx, saga_id, store_id, product_id, quantity).await?
            }
            Command::CancelShipment { saga_id, store_id, product_id } => {
                vec![Outgoing::reply(&cancel(tx, saga_id, store_id, product_id).await?)]
            }
            Command::ReceiveShipment { .. } => {
                return Err(HandleError::Poison("ReceiveShipment is a store inventory command".into()));
            }
        };
        outbox::enqueue(tx, &messages).await?;
        Ok(())
    }

    async fn after_commit(&self, (): ()) {}
}

struct ShipmentRow {
    id: Uuid,
    quantity: i64,
    status: String,
}

async fn existing_shipment(tx: &mut PgConnection, saga_id: Uuid) -> sqlx::Result<Option<ShipmentRow>> {
    sqlx::query_as!(
        ShipmentRow,
        "SELECT id, quantity, status FROM shipment WHERE replenishment_id = $1 FOR UPDATE",
        saga_id
    )
    .fetch_optional(tx)
    .await
}

/// Ships what the warehouse has, up to `quantity`; rejects when it has nothing.
async fn dispatch(
    tx: &mut PgConnection,
    saga_id: Uuid,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
) -> Result<Vec<Outgoing>, HandleError> {
    if quantity <= 0 {
        return Err(HandleError::Poison(format!("cannot dispatch a quantity of {quantity}")));
    }
    if let Some(shipment) = existing_shipment(tx, saga_id).await? {
        let reply = if shipment.status == "cancelled" {
            Reply::ShipmentRejected { saga_id, reason: "the shipment was cancelled before dispatch".into() }
        } else {
            Reply::ShipmentDispatched { saga_id, shipment_id: shipment.id, quantity: shipment.quantity }
        };
        return Ok(vec![Outgoing::reply(&reply)]);
    }
    // Lock the product's row first, then write in a statement of its own: a single statement that
    // both locked and updated through a CTE was seen, under concurrent dispatches of the same
    // product, to subtract more than it had read as available (a CHECK violation). Under the lock
    // and with its own snapshot, the UPDATE sees exactly the stock read.
    let available = sqlx::query_scalar!(
        r#"SELECT on_hand - reserved AS "available!" FROM warehouse_stock WHERE product_id = $1 FOR UPDATE"#,
        product_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(0);
    let shipped = available.min(quantity);
    if shipped <= 0 {
        // Leave a tombstone so that no later send of this dispatch ships after the rejection.
        insert_shipment(tx, Uuid::new_v4(), saga_id, store_id, product_id, 0, "cancelled").await?;
        let reason = "the warehouse has none of this product to ship".to_owned();
        return Ok(vec![Outgoing::reply(&Reply::ShipmentRejected { saga_id, reason })]);
    }
    sqlx::query!(
        "UPDATE warehouse_stock SET on_hand = on_hand - $2, version = version + 1, updated_at = now()
         WHERE product_id = $1",
        product_id,
        shipped
    )
    .execute(&mut *tx)
    .await?;
    let shipment_id = Uuid::new_v4();
    insert_shipment(tx, shipment_id, saga_id, store_id, product_id, shipped, "dispatched").await?;
    let movement = Movement::on_hand(None, product_id, -shipped, MovementReason::ShipmentDispatched, saga_id);
    record_movements(tx, &[movement]).await?;
    let event = serde_json::json!({
        "saga_id": saga_id, "shipment_id": shipment_id, "store_id": store_id,
        "product_id": product_id, "quantity_requested": quantity, "quantity": shipped,
    });
    Ok(vec![
        Outgoing::reply(&Reply::ShipmentDispatched { saga_id, shipment_id, quantity: shipped }),
        Outgoing::event(Exchange::WarehouseEvents, "shipment.dispatched", Some(saga_id), event),
    ])
}

/// Cancels the saga's shipment and returns its stock; refuses once the store has received it.
async fn cancel(tx: &mut PgConnection, saga_id: Uuid, store_id: Uuid, product_id: Uuid) -> Result<Reply, HandleError> {
    let Some(shipment) = existing_shipment(tx, saga_id).await? else {
        insert_shipment(tx, Uuid::new_v4(), saga_id, store_id, product_id, 0, "cancelled").await?;
        return Ok(Reply::ShipmentCancelled { saga_id, quantity_returned: 0 });
    };
    match shipment.status.as_str() {
        "cancelled" => Ok(Reply::ShipmentCancelled { saga_id, quantity_returned: shipment.quantity }),
        "received" => Ok(Reply::CancelRefused {
            saga_id,
            reason: format!("shipment {} was already received by the store", shipment.id),
        }),
        _ => {
            sqlx::query!("UPDATE shipment SET status = 'cancelled', updated_at = now() WHERE id = $1", shipment.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query!(
                "UPDATE warehouse_stock SET on_hand = on_hand + $2, version = version + 1, updated_at = now()
                 WHERE product_id = $1",
                product_id,
                shipment.quantity
            )
            .execute(&mut *tx)
            .await?;
            let movement =
                Movement::on_hand(None, product_id, shipment.quantity, MovementReason::ShipmentCancelled, saga_id);
            record_movements(tx, &[movement]).await?;
            Ok(Reply::ShipmentCancelled { saga_id, quantity_returned: shipment.quantity })
        }
    }
}

async fn insert_shipment(
    tx: &mut PgConnection,
    id: Uuid,
    saga_id: Uuid,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    status: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO shipment (id, replenishment_id, store_id, product_id, quantity, status)
         VALUES ($1, $2, $3, $4, $5, $6)",
        id,
        saga_id,
        store_id,
        product_id,
        quantity,
        status
    )
    .execute(tx)
    .await?;
    Ok(())
}
