//! The stock ledger: one append-only row per movement of stock in a store or the warehouse, with
//! its cause. A cause is recorded once: a redelivered command cannot move stock twice.

use sqlx::PgConnection;
use uuid::Uuid;

/// Why stock moved; stored as text in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::Display, strum::EnumString, strum::EnumIter)]
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
    /// A supplier's delivery booked into the warehouse.
    PurchaseReceived,
}

impl MovementReason {
    /// Whether goods came into the network or left it (a count, an adjustment, a sale), rather
    /// than moved within it: the conservation law adds these up against what the network holds.
    pub fn crosses_the_edge(self) -> bool {
        match self {
            Self::StockSet | Self::WarehouseSet | Self::Adjustment | Self::OrderFulfilled | Self::PurchaseReceived => {
                true
            }
            Self::OrderReserved
            | Self::OrderCancelled
            | Self::ReplenishmentReceived
            | Self::ShipmentDispatched
            | Self::ShipmentCancelled => false,
        }
    }
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

/// Appends ledger entries in one statement. A repeat of the same (reason, reference, place,
/// product) violates `stock_movement_once`: the caller's transaction then rolls back whole.
pub async fn record(conn: &mut PgConnection, movements: &[Movement]) -> sqlx::Result<()> {
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

/// The on-hand change recorded for `reason` and `reference`, if any: whether a one-time movement
/// (a supplier's delivery booked in, say) happened already.
pub async fn recorded(conn: &mut PgConnection, reason: MovementReason, reference: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        r#"SELECT on_hand_delta AS "delta!" FROM stock_movement WHERE reason = $1 AND reference = $2 LIMIT 1"#,
        reason.as_ref(),
        reference
    )
    .fetch_optional(conn)
    .await
}
