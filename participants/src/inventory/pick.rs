//! The pick list: a paid order waits on it until the picker hands it over (through the API) or
//! the fulfilment saga releases it. The `pick` table is the store's record of each order, so a
//! command sent again, or a picker's second tap, finds what happened and changes nothing.

use platform::{
    messaging::{consumer::HandleError, outbox::Outgoing},
    protocol::MessageFamily,
};
use sagas::fulfilment::{Command, Line, Reply};
use sqlx::PgConnection;
use stock::{Movement, MovementReason, StockLevel, ledger, level};
use uuid::Uuid;

use crate::{
    decided,
    locks::{self, Space},
};

/// Where an order is on the store's pick list; stored as text, checked by the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum PickStatus {
    /// On the list, waiting for the picker.
    Picking,
    HandedOver,
    /// Its goods went back to available stock; it can no longer be handed over.
    Released,
    /// The store could not pick it.
    Failed,
}

/// Serializes everything the store does for one order, and reads where the order is.
async fn lock(tx: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Option<PickStatus>> {
    locks::lock(tx, Space::Pick, &[order_id.to_string()]).await?;
    let status =
        sqlx::query_scalar!("SELECT status FROM pick WHERE order_id = $1", order_id).fetch_optional(&mut *tx).await?;
    status.map(|s| s.parse().map_err(|_| sqlx::Error::Decode(format!("pick status {s:?}").into()))).transpose()
}

async fn set(tx: &mut PgConnection, order_id: Uuid, store_id: Uuid, status: PickStatus) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO pick (order_id, store_id, status) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()",
        order_id,
        store_id,
        status.as_ref()
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes the order's goods off their reservation: gone with the customer (`handed_over`), or
/// back to available stock.
async fn unreserve(
    tx: &mut PgConnection,
    order_id: Uuid,
    store_id: Uuid,
    items: &[Line],
    handed_over: bool,
) -> sqlx::Result<Vec<StockLevel>> {
    let reason = if handed_over { MovementReason::OrderFulfilled } else { MovementReason::OrderCancelled };
    let mut levels = Vec::with_capacity(items.len());
    let mut movements = Vec::with_capacity(items.len());
    for item in items {
        levels.push(level::unreserve(tx, store_id, item.product_id, item.quantity, handed_over).await?);
        movements.push(Movement {
            store_id: Some(store_id),
            product_id: item.product_id,
            on_hand_delta: if handed_over { -item.quantity } else { 0 },
            reserved_delta: -item.quantity,
            reason,
            reference: Some(order_id),
            note: None,
        });
    }
    ledger::record(tx, &movements).await?;
    Ok(levels)
}

/// Why the picker cannot hand an order over.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    #[error("the order is not on the pick list yet: its payment has not been approved")]
    NotReady,
    #[error("the order can no longer be handed over: it was {0}")]
    Closed(PickStatus),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The picker hands order `order_id` over: its goods leave the shelf. `Ok(None)` when it was
/// handed over already.
pub async fn hand_over(
    tx: &mut PgConnection,
    order_id: Uuid,
    store_id: Uuid,
    items: &[Line],
) -> Result<Option<Vec<StockLevel>>, HandOverError> {
    match lock(tx, order_id).await? {
        None => Err(HandOverError::NotReady),
        Some(PickStatus::HandedOver) => Ok(None),
        Some(closed @ (PickStatus::Released | PickStatus::Failed)) => Err(HandOverError::Closed(closed)),
        Some(PickStatus::Picking) => {
            let levels = unreserve(tx, order_id, store_id, items, true).await?;
            set(tx, order_id, store_id, PickStatus::HandedOver).await?;
            Ok(Some(levels))
        }
    }
}

/// `HandOver` and `ReleaseReservation`: the replies to send and the levels changed.
pub(super) async fn handle(
    tx: &mut PgConnection,
    command: &Command,
    failure_rate: f64,
) -> Result<(Vec<Outgoing>, Vec<StockLevel>), HandleError> {
    let (reply, levels) = match command.clone() {
        Command::HandOver { order_id, store_id, .. } => match lock(tx, order_id).await? {
            // The picker's answer comes through the API: nothing to say until then.
            Some(PickStatus::Picking) => (None, Vec::new()),
            None if !decided(order_id, failure_rate) => {
                set(tx, order_id, store_id, PickStatus::Picking).await?;
                (None, Vec::new())
            }
            None => {
                set(tx, order_id, store_id, PickStatus::Failed).await?;
                let reason = "the goods could not be found on the shelf (simulated failure)".to_owned();
                (Some(Reply::HandOverFailed { order_id, reason }), Vec::new())
            }
            Some(PickStatus::HandedOver) => (Some(Reply::HandedOver { order_id }), Vec::new()),
            Some(closed) => {
                let reason = format!("the order was {closed} before it could be handed over");
                (Some(Reply::HandOverFailed { order_id, reason }), Vec::new())
            }
        },
        Command::ReleaseReservation { order_id, store_id, items } => match lock(tx, order_id).await? {
            Some(PickStatus::HandedOver) => {
                let reason = "the order was already handed over to the customer".to_owned();
                (Some(Reply::ReleaseRefused { order_id, reason }), Vec::new())
            }
            Some(PickStatus::Released) => (Some(Reply::ReservationReleased { order_id }), Vec::new()),
            None | Some(PickStatus::Picking | PickStatus::Failed) => {
                let levels = unreserve(tx, order_id, store_id, &items, false).await?;
                set(tx, order_id, store_id, PickStatus::Released).await?;
                (Some(Reply::ReservationReleased { order_id }), levels)
            }
        },
        Command::ChargePayment { .. } | Command::RefundPayment { .. } => {
            return Err(HandleError::Poison(format!("{} is a payment command", command.to_parts().0)));
        }
    };
    Ok((reply.iter().map(Outgoing::reply).collect(), levels))
}
