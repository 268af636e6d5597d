//! The pick list: a paid order waits on it until the picker hands it over or the fulfilment saga
//! releases it. The picker's tap reaches the saga through the API; the saga then has the store
//! record the hand-over. The `pick` table is the store's record of each order, written by the
//! store alone, so a command sent again finds what happened and changes nothing.

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

/// `ListForPicking`, `RecordHandOver` and `ReleaseReservation`: the replies to send and the levels
/// changed.
pub(super) async fn handle(
    tx: &mut PgConnection,
    command: &Command,
    failure_rate: f64,
) -> Result<(Vec<Outgoing>, Vec<StockLevel>), HandleError> {
    let (reply, levels) = match command.clone() {
        Command::ListForPicking { order_id, store_id, .. } => match lock(tx, order_id).await? {
            None if !decided(order_id, failure_rate) => {
                set(tx, order_id, store_id, PickStatus::Picking).await?;
                (None, Vec::new())
            }
            None => {
                set(tx, order_id, store_id, PickStatus::Failed).await?;
                let reason = "the goods could not be found on the shelf (simulated failure)".to_owned();
                (Some(Reply::PickingFailed { order_id, reason }), Vec::new())
            }
            // Listed already (this is a resend), or handed over: the picker's tap is the answer.
            Some(PickStatus::Picking | PickStatus::HandedOver) => (None, Vec::new()),
            Some(closed @ (PickStatus::Released | PickStatus::Failed)) => {
                let reason = format!("the order was {closed} before it could be picked");
                (Some(Reply::PickingFailed { order_id, reason }), Vec::new())
            }
        },
        Command::RecordHandOver { order_id, store_id, items } => match lock(tx, order_id).await? {
            // The picker had the goods in hand, whatever the list said: the listing may not have
            // arrived yet, or may have failed to find what the picker then found.
            None | Some(PickStatus::Picking | PickStatus::Failed) => {
                let levels = unreserve(tx, order_id, store_id, &items, true).await?;
                set(tx, order_id, store_id, PickStatus::HandedOver).await?;
                (Some(Reply::HandOverRecorded { order_id }), levels)
            }
            Some(PickStatus::HandedOver) => (Some(Reply::HandOverRecorded { order_id }), Vec::new()),
            Some(PickStatus::Released) => {
                let reason = "the order's goods were released back to available stock".to_owned();
                (Some(Reply::HandOverRefused { order_id, reason }), Vec::new())
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
