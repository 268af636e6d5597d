//! The replenishment saga: refill one product in one store from the central warehouse.
//!
//! ```text
//! requested ──DispatchShipment──▶ warehouse
//!    │  ShipmentDispatched(qty, shipment)            ShipmentRejected (nothing to send)
//!    ▼                                                      │
//! dispatched ──ReceiveShipment──▶ store                     ▼
//!    │  StockReceived                 ReceiptFailed ──▶ compensating ──CancelShipment──▶ warehouse
//!    ▼                                                      │  ShipmentCancelled
//! received (done)                                           ▼
//!                                                      compensated (done)
//! ```
//!
//! A step whose command goes unanswered through every resend has an unknown outcome, so the saga
//! unwinds with `CancelShipment`, which is safe whether or not the dispatch ran. When the undo
//! itself is refused or never confirmed, the saga is `failed` and waits for an operator, who can
//! retry the undo (back to `compensating`) or, having put things right by hand, resolve it
//! (`resolved`).
//!
//! Operators may also retry the step in hand (the same state, its command sent again at once with
//! the attempts reset) and force an unwind of a saga that has not yet received.

use platform::{
    config::SagaTiming,
    contract::Event,
    domain_event,
    messaging::{
        EventExchange, Participant,
        outbox::{self, Outgoing},
    },
    protocol::{CommandFamily, MessageFamily, ReplyFamily},
    saga::{
        Action, Actor, Awaits, Concerns, GaveUp, Input, Invariant, Nobody, Refused, SagaKind, SagaState, Step,
        engine::{self, Start},
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use stock::{StockLevel, level, shipment};
use uuid::Uuid;

use crate::{INVENTORY, WAREHOUSE, example};

/// Commands of the replenishment saga. Every command is idempotent by its saga id, so the engine
/// may send it again after a deadline without knowing whether the first one ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
#[serde(tag = "type", content = "payload")]
#[schemars(rename = "ReplenishmentCommand")]
pub enum Command {
    /// Warehouse: ship up to `quantity` of the product to the store.
    DispatchShipment { saga_id: Uuid, store_id: Uuid, product_id: Uuid, quantity: i64 },
    /// Warehouse: cancel the saga's shipment (if any) and put its stock back. Safe whether or not
    /// the dispatch ever ran: a cancel that comes first leaves a cancelled shipment behind, so a
    /// late dispatch ships nothing.
    CancelShipment { saga_id: Uuid, store_id: Uuid, product_id: Uuid },
    /// Store inventory: take the shipment into stock.
    ReceiveShipment { saga_id: Uuid, shipment_id: Uuid, store_id: Uuid, product_id: Uuid, quantity: i64 },
}

impl MessageFamily for Command {
    fn examples() -> Vec<Self> {
        let (saga_id, store_id, product_id) = (example::SAGA, example::STORE, example::PRODUCT);
        vec![
            Self::DispatchShipment { saga_id, store_id, product_id, quantity: 12 },
            Self::CancelShipment { saga_id, store_id, product_id },
            Self::ReceiveShipment { saga_id, shipment_id: example::SHIPMENT, store_id, product_id, quantity: 8 },
        ]
    }
}

impl CommandFamily for Command {
    fn participant(&self) -> Participant {
        match self {
            Self::DispatchShipment { .. } | Self::CancelShipment { .. } => WAREHOUSE,
            Self::ReceiveShipment { .. } => INVENTORY,
        }
    }

    fn saga_id(&self) -> Uuid {
        match self {
            Self::DispatchShipment { saga_id, .. }
            | Self::CancelShipment { saga_id, .. }
            | Self::ReceiveShipment { saga_id, .. } => *saga_id,
        }
    }
}

/// Participants' answers to [`Command`]s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
#[serde(tag = "type", content = "payload")]
#[schemars(rename = "ReplenishmentReply")]
pub enum Reply {
    /// Warehouse: the shipment left. `quantity` may be less than requested: the warehouse ships
    /// what it has.
    ShipmentDispatched { saga_id: Uuid, shipment_id: Uuid, quantity: i64 },
    /// Warehouse: nothing to ship (empty warehouse, or the shipment was already cancelled).
    ShipmentRejected { saga_id: Uuid, reason: String },
    /// Store inventory: the shipment is in stock (`quantity` is what the shipment held).
    StockReceived { saga_id: Uuid, shipment_id: Uuid, quantity: i64 },
    /// Store inventory: the shipment cannot be taken in (unknown, cancelled, or refused).
    ReceiptFailed { saga_id: Uuid, reason: String },
    /// Warehouse: the shipment is cancelled and `quantity_returned` went back to the warehouse (0
    /// when nothing had been dispatched).
    ShipmentCancelled { saga_id: Uuid, quantity_returned: i64 },
    /// Warehouse: the undo cannot be done (the goods were already received): an operator must
    /// decide.
    CancelRefused { saga_id: Uuid, reason: String },
}

impl MessageFamily for Reply {
    fn examples() -> Vec<Self> {
        let (saga_id, shipment_id) = (example::SAGA, example::SHIPMENT);
        vec![
            Self::ShipmentDispatched { saga_id, shipment_id, quantity: 8 },
            Self::ShipmentRejected { saga_id, reason: "the warehouse has none of this product to ship".into() },
            Self::StockReceived { saga_id, shipment_id, quantity: 8 },
            Self::ReceiptFailed { saga_id, reason: format!("shipment {shipment_id} was cancelled") },
            Self::ShipmentCancelled { saga_id, quantity_returned: 8 },
            Self::CancelRefused {
                saga_id,
                reason: format!("shipment {shipment_id} was already received by the store"),
            },
        ]
    }
}

impl ReplyFamily for Reply {
    fn saga_id(&self) -> Uuid {
        match self {
            Self::ShipmentDispatched { saga_id, .. }
            | Self::ShipmentRejected { saga_id, .. }
            | Self::StockReceived { saga_id, .. }
            | Self::ReceiptFailed { saga_id, .. }
            | Self::ShipmentCancelled { saga_id, .. }
            | Self::CancelRefused { saga_id, .. } => *saga_id,
        }
    }
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum State {
    Requested,
    Dispatched,
    Received,
    Compensating,
    Compensated,
    Failed,
    /// A failed saga an operator closed by hand.
    Resolved,
}

impl SagaState for State {
    fn awaits(self) -> Awaits {
        match self {
            Self::Requested | Self::Dispatched | Self::Compensating => Awaits::Participant,
            Self::Failed => Awaits::Operator,
            Self::Received | Self::Compensated | Self::Resolved => Awaits::Nothing,
        }
    }
}

/// What the saga knows, stored as JSON in `saga.data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub quantity_requested: i64,
    #[serde(default)]
    pub shipment_id: Option<Uuid>,
    #[serde(default)]
    pub quantity_shipped: Option<i64>,
}

impl Data {
    pub fn new(store_id: Uuid, product_id: Uuid, quantity_requested: i64) -> Self {
        Self { store_id, product_id, quantity_requested, shipment_id: None, quantity_shipped: None }
    }
}

pub struct Replenishment;

impl SagaKind for Replenishment {
    const KIND: &'static str = "replenishment";
    const PARTICIPANTS: &'static [Participant] = &[WAREHOUSE, INVENTORY];
    const EVENTS: &'static [Event] = &[
        Event::of::<StockLow>(),
        Event::of::<StockReplenished>(),
        Event::of::<ReplenishmentCreated>(),
        Event::of::<ShipmentDispatched>(),
        Event::of::<ShipmentReceived>(),
        Event::of::<ReplenishmentAborted>(),
    ];
    const INVARIANTS: &'static [Invariant] = &[
        Invariant {
            rule: "at most one replenishment is open per store and product",
            breaches: "SELECT store_id::text || ' ' || product_id::text FROM replenishment
                       WHERE closed_at IS NULL GROUP BY store_id, product_id HAVING count(*) > 1",
        },
        Invariant {
            rule: "a replenishment's row follows its saga",
            breaches: "SELECT r.saga_id::text FROM replenishment r JOIN saga s ON s.id = r.saga_id
                       WHERE r.status <> s.state OR (r.closed_at IS NULL) <> (s.closed_at IS NULL)",
        },
        Invariant {
            rule: "a received replenishment's shipment is in the store",
            breaches: "SELECT r.saga_id::text FROM replenishment r JOIN shipment sh ON sh.replenishment_id = r.saga_id
                       WHERE r.status = 'received' AND sh.status <> 'received'",
        },
        Invariant {
            rule: "a compensated replenishment left nothing on the road",
            breaches: "SELECT r.saga_id::text FROM replenishment r JOIN shipment sh ON sh.replenishment_id = r.saga_id
                       WHERE r.status = 'compensated' AND sh.status = 'dispatched'",
        },
    ];
    type State = State;
    type Command = Command;
    type Reply = Reply;
    type Data = Data;
    type Person = Nobody;

    fn transition(
        saga_id: Uuid,
        state: State,
        data: &Data,
        input: &Input<Reply>,
    ) -> Result<Step<State, Data, Command>, Refused> {
        use Action::{Compensate, Resolve, Retry};
        use Input::Operator;
        use Reply as R;
        use State::*;
        let mut data = data.clone();
        let (next, error) = match (state, input) {
            (Requested, Input::Reply(R::ShipmentDispatched { shipment_id, quantity, .. })) => {
                data.shipment_id = Some(*shipment_id);
                data.quantity_shipped = Some(*quantity);
                (Dispatched, None)
            }
            // Nothing left the warehouse, so there is nothing to undo.
            (Requested, Input::Reply(R::ShipmentRejected { reason, .. })) => (Compensated, Some(reason.clone())),
            (Dispatched, Input::Reply(R::StockReceived { quantity, .. })) => {
                data.quantity_shipped = Some(*quantity);
                (Received, None)
            }
            (Dispatched, Input::Reply(R::ReceiptFailed { reason, .. })) => (Compensating, Some(reason.clone())),
            (Requested | Dispatched, Input::GaveUp(why)) => (Compensating, Some(format!("{why}; unwinding"))),
            (Requested | Dispatched, Operator(Compensate { reason })) => (Compensating, Some(reason.clone())),
            (Compensating, Input::Reply(R::ShipmentCancelled { .. })) => (Compensated, None),
            (Compensating, Input::Reply(R::CancelRefused { reason, .. })) => (Failed, Some(reason.clone())),
            (Compensating, Input::GaveUp(GaveUp::Unanswered { attempts })) => {
                (Failed, Some(format!("the cancellation was not confirmed after {attempts} attempts")))
            }
            (Compensating, Input::GaveUp(why)) => (Failed, Some(format!("the cancellation failed ({why})"))),
            // The step in hand, again: the engine sends its command anew with the attempts reset.
            (Requested | Dispatched | Compensating, Operator(Retry { .. })) => (state, None),
            // The undo that failed, again: the cancel is safe to repeat.
            (Failed, Operator(Retry { .. })) => (Compensating, None),
            (Failed, Operator(Resolve { .. })) => (Resolved, None),
            _ => return Err(Refused { state: state.to_string(), event: input.name() }),
        };
        let commands = Self::outstanding(saga_id, next, &data).into_iter().collect();
        let events = events(saga_id, next, &data, error.as_deref());
        Ok(Step { next, data, commands, events, error })
    }

    fn concerns(data: &Data) -> Concerns {
        Concerns { store: Some(data.store_id), products: vec![data.product_id] }
    }

    fn conflict(constraint: &str) -> Option<&'static str> {
        // Taking up a failed replenishment again reopens it: another may have opened meanwhile.
        (constraint == "replenishment_one_open").then_some(
            "another replenishment of this product for this store has opened since; it must close before this one \
             can be taken up again",
        )
    }

    fn outstanding(saga_id: Uuid, state: State, data: &Data) -> Option<Command> {
        let Data { store_id, product_id, .. } = *data;
        match state {
            State::Requested => {
                Some(Command::DispatchShipment { saga_id, store_id, product_id, quantity: data.quantity_requested })
            }
            State::Dispatched => Some(Command::ReceiveShipment {
                saga_id,
                store_id,
                product_id,
                shipment_id: data.shipment_id?,
                quantity: data.quantity_shipped?,
            }),
            State::Compensating => Some(Command::CancelShipment { saga_id, store_id, product_id }),
            State::Received | State::Compensated | State::Failed | State::Resolved => None,
        }
    }

    async fn after_transition(
        tx: &mut PgConnection,
        timing: &SagaTiming,
        saga_id: Uuid,
        state: State,
        data: &Data,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE replenishment
             SET status = $2, quantity_shipped = $3, shipment_id = $4,
                 closed_at = CASE WHEN $5 THEN now() END
             WHERE saga_id = $1",
            saga_id,
            state.as_ref(),
            data.quantity_shipped,
            data.shipment_id,
            state.awaits().is_closed(),
        )
        .execute(&mut *tx)
        .await?;
        if state == State::Received {
            // Orders kept coming while the goods were on the road: the store may be low again.
            if let Some(level) = level::fetch(tx, data.store_id, data.product_id).await? {
                replenish_if_low(tx, timing, &level).await?;
            }
        }
        Ok(())
    }
}

/// The low-stock rule, as the timeline names it.
pub const LOW_STOCK: Actor<'static> = Actor::Rule("low-stock");

/// The low-stock rule, which every change to a store's stock goes through: when `level` is at or
/// below its reorder threshold and no replenishment is open for it, one starts, for enough to
/// reach the target level counting what is already on the road. Returns the new saga's id.
pub async fn replenish_if_low(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    level: &StockLevel,
) -> sqlx::Result<Option<Uuid>> {
    if !level.is_low() {
        return Ok(None);
    }
    let in_transit = shipment::in_transit_to(tx, level.store_id, level.product_id).await?;
    let quantity = level.target_level - level.available() - in_transit;
    if quantity <= 0 {
        return Ok(None);
    }
    let detail = json!({
        "available": level.available(), "reorder_threshold": level.reorder_threshold,
        "target_level": level.target_level, "in_transit": in_transit, "quantity_requested": quantity,
    });
    let Some(saga_id) = open(tx, timing, level.store_id, level.product_id, quantity, LOW_STOCK, detail).await? else {
        return Ok(None);
    };
    let low = StockLow {
        store_id: level.store_id,
        product_id: level.product_id,
        available: level.available(),
        reorder_threshold: level.reorder_threshold,
        saga_id,
    };
    outbox::enqueue(tx, &[Outgoing::event(&low)]).await?;
    Ok(Some(saga_id))
}

/// Opens a replenishment of `quantity` unless one is open for the (store, product): its claim
/// row, its saga, and the `replenishment.created` event. `None` when one is open already, or when
/// the store does not stock the product.
/// `actor` is who asked: the low-stock rule, or a caller of the API.
pub async fn open(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    actor: Actor<'_>,
    detail: serde_json::Value,
) -> sqlx::Result<Option<Uuid>> {
    let saga_id = Uuid::now_v7();
    // The partial unique index is the guard: a concurrent or repeated signal claims nothing. Only
    // a product the store stocks is replenished.
    let claimed = sqlx::query_scalar!(
        "INSERT INTO replenishment (saga_id, store_id, product_id, quantity_requested, status)
         SELECT $1, store_id, product_id, $4, $5 FROM inventory WHERE store_id = $2 AND product_id = $3
         ON CONFLICT (store_id, product_id) WHERE closed_at IS NULL DO NOTHING
         RETURNING saga_id",
        saga_id,
        store_id,
        product_id,
        quantity,
        State::Requested.as_ref()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        return Ok(None);
    }
    let data = Data::new(store_id, product_id, quantity);
    let created = ReplenishmentCreated { saga_id, store_id, product_id, quantity_requested: quantity };
    let events = vec![Outgoing::event(&created)];
    let start = Start { saga_id, initial: State::Requested, data: &data, actor, detail, events };
    engine::start::<Replenishment>(tx, timing, start).await?;
    metrics::counter!("replenishments_started_total", "actor" => actor.label().to_owned()).increment(1);
    Ok(Some(saga_id))
}

/// The open replenishment of a (store, product), if any.
pub async fn open_for(tx: &mut PgConnection, store_id: Uuid, product_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT saga_id FROM replenishment WHERE store_id = $1 AND product_id = $2 AND closed_at IS NULL",
        store_id,
        product_id
    )
    .fetch_optional(tx)
    .await
}

/// Domain events downstream teams expect from the saga's own decisions (the participants emit
/// the ones about goods moving).
fn events(saga_id: Uuid, next: State, data: &Data, error: Option<&str>) -> Vec<Outgoing> {
    let state = match next {
        State::Compensated => AbortedState::Compensated,
        State::Failed => AbortedState::Failed,
        _ => return Vec::new(),
    };
    let aborted = ReplenishmentAborted {
        saga_id,
        store_id: data.store_id,
        product_id: data.product_id,
        state,
        reason: error.map(str::to_owned),
    };
    vec![Outgoing::event(&aborted)]
}

/// The store side's domain events: stock.low, stock.replenished.
pub const INVENTORY_EVENTS: EventExchange = EventExchange("inventory.events");
/// The warehouse side's: replenishment.created, shipment.dispatched, shipment.received, and
/// replenishment.aborted when a replenishment ends compensated or failed.
pub const WAREHOUSE_EVENTS: EventExchange = EventExchange("warehouse.events");

/// A store's available stock of a product fell to its reorder threshold or below, and a
/// replenishment was opened for it (`saga_id`). Emitted by the low-stock rule in the transaction
/// of the change that made the stock low (an order, an adjustment, a release), at most once per
/// replenishment: while one is open for the store and product, no other opens and no other
/// `stock.low` is emitted for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct StockLow {
    pub store_id: Uuid,
    pub product_id: Uuid,
    /// On hand less reserved, after the change.
    pub available: i64,
    pub reorder_threshold: i64,
    /// The replenishment opened for it.
    pub saga_id: Uuid,
}

domain_event!(StockLow, "stock.low" on INVENTORY_EVENTS, correlated by saga_id, example {
    let (store_id, product_id, saga_id) = (example::STORE, example::PRODUCT, example::SAGA);
    Self { store_id, product_id, available: 3, reorder_threshold: 3, saga_id }
});

/// A replenishment saga started: the warehouse is asked to ship `quantity_requested` of the
/// product to the store (enough to reach its target level, counting stock already on its way).
/// Emitted once per replenishment, in the transaction that opens it, whether the low-stock rule
/// or an operator opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReplenishmentCreated {
    pub saga_id: Uuid,
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub quantity_requested: i64,
}

domain_event!(ReplenishmentCreated, "replenishment.created" on WAREHOUSE_EVENTS, correlated by saga_id, example {
    let (saga_id, store_id, product_id) = (example::SAGA, example::STORE, example::PRODUCT);
    Self { saga_id, store_id, product_id, quantity_requested: 12 }
});

/// How an aborted replenishment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AbortedState {
    /// Unwound: nothing was shipped, or the shipment was cancelled and its stock is back in the
    /// warehouse.
    Compensated,
    /// The undo could not be done or confirmed: an operator must decide.
    Failed,
}

/// A replenishment ended without the goods being received: `compensated` (nothing shipped, or
/// the shipment cancelled and its stock returned to the warehouse) or `failed` (the undo could not
/// be done; an operator takes over). Emitted in the transaction of the transition to that state;
/// a failed replenishment that an operator sends back to compensating and that then compensates
/// emits it again, with `compensated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReplenishmentAborted {
    pub saga_id: Uuid,
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub state: AbortedState,
    /// Why it ended so, as operators see it: the warehouse's rejection, or why the undo failed.
    /// `null` when it ended with a confirmed cancellation: why the unwind began is in the saga's
    /// timeline.
    pub reason: Option<String>,
}

domain_event!(ReplenishmentAborted, "replenishment.aborted" on WAREHOUSE_EVENTS, correlated by saga_id, example {
    let (saga_id, store_id, product_id) = (example::SAGA, example::STORE, example::PRODUCT);
    let reason = Some("the warehouse has none of this product to ship".into());
    Self { saga_id, store_id, product_id, state: AbortedState::Compensated, reason }
});

/// A shipment left the warehouse for a store, for a replenishment (`saga_id`). Emitted once per
/// replenishment at most, by the warehouse worker, in the transaction that takes the stock out of
/// the warehouse; a dispatch sent again finds the shipment and emits nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ShipmentDispatched {
    pub saga_id: Uuid,
    pub shipment_id: Uuid,
    pub store_id: Uuid,
    pub product_id: Uuid,
    /// What the replenishment asked for.
    pub quantity_requested: i64,
    /// What left: at most what was asked for, less when the warehouse had less.
    pub quantity: i64,
}

domain_event!(ShipmentDispatched, "shipment.dispatched" on WAREHOUSE_EVENTS, correlated by saga_id, example {
    let (saga_id, shipment_id, store_id, product_id) =
        (example::SAGA, example::SHIPMENT, example::STORE, example::PRODUCT);
    Self { saga_id, shipment_id, store_id, product_id, quantity_requested: 12, quantity: 8 }
});

/// A store took a replenishment's shipment into stock: its on-hand stock grew by `quantity`.
/// Emitted once per shipment by the store's inventory worker, in the transaction that adds the
/// stock (a receipt sent again finds the shipment received and emits nothing), together with
/// `shipment.received` on the warehouse's exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct StockReplenished {
    pub saga_id: Uuid,
    pub shipment_id: Uuid,
    pub store_id: Uuid,
    pub product_id: Uuid,
    /// What the shipment held, now on hand in the store.
    pub quantity: i64,
}

/// A shipment reached its store and was taken into stock: the warehouse's view of
/// `stock.replenished`. Emitted with it, in the same transaction, with the same body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ShipmentReceived {
    pub saga_id: Uuid,
    pub shipment_id: Uuid,
    pub store_id: Uuid,
    pub product_id: Uuid,
    /// What the shipment held.
    pub quantity: i64,
}

domain_event!(StockReplenished, "stock.replenished" on INVENTORY_EVENTS, correlated by saga_id, example {
    let (saga_id, shipment_id, store_id, product_id) =
        (example::SAGA, example::SHIPMENT, example::STORE, example::PRODUCT);
    Self { saga_id, shipment_id, store_id, product_id, quantity: 8 }
});

domain_event!(ShipmentReceived, "shipment.received" on WAREHOUSE_EVENTS, correlated by saga_id, example {
    let StockReplenished { saga_id, shipment_id, store_id, product_id, quantity } = StockReplenished::example();
    Self { saga_id, shipment_id, store_id, product_id, quantity }
});

#[cfg(test)]
mod tests {
    use platform::saga::table;
    use strum::IntoEnumIterator;

    use super::*;

    fn saga() -> (Uuid, Data) {
        (Uuid::new_v4(), Data::new(Uuid::new_v4(), Uuid::new_v4(), 12))
    }

    fn dispatched_data(data: &Data, shipment_id: Uuid) -> Data {
        Data { shipment_id: Some(shipment_id), quantity_shipped: Some(8), ..data.clone() }
    }

    /// One input of each kind, built for `saga_id`.
    fn every_input(saga_id: Uuid) -> Vec<Input<Reply>> {
        let shipment_id = Uuid::new_v4();
        vec![
            Input::Reply(Reply::ShipmentDispatched { saga_id, shipment_id, quantity: 8 }),
            Input::Reply(Reply::ShipmentRejected { saga_id, reason: "empty".into() }),
            Input::Reply(Reply::StockReceived { saga_id, shipment_id, quantity: 8 }),
            Input::Reply(Reply::ReceiptFailed { saga_id, reason: "damaged".into() }),
            Input::Reply(Reply::ShipmentCancelled { saga_id, quantity_returned: 8 }),
            Input::Reply(Reply::CancelRefused { saga_id, reason: "received".into() }),
            Input::GaveUp(GaveUp::Unanswered { attempts: 5 }),
            Input::GaveUp(GaveUp::Refused { command: "DispatchShipment".into(), reason: "malformed".into() }),
            Input::Operator(Action::Compensate { reason: "operator".into() }),
            Input::Operator(Action::Retry { reason: "operator".into() }),
            Input::Operator(Action::Resolve { note: "fixed by hand".into() }),
        ]
    }

    /// The whole table: for every state and input, the expected next state or a refusal.
    fn expected(state: State, input: &Input<Reply>) -> Option<State> {
        use State::*;
        let event = input.name();
        match (state, event.as_str()) {
            (Requested, "ShipmentDispatched") => Some(Dispatched),
            (Requested, "ShipmentRejected") => Some(Compensated),
            (Dispatched, "StockReceived") => Some(Received),
            (Dispatched, "ReceiptFailed") => Some(Compensating),
            (Requested | Dispatched, "DeadlineExceeded" | "CommandRefused" | "CompensateRequested") => {
                Some(Compensating)
            }
            (Compensating, "ShipmentCancelled") => Some(Compensated),
            (Compensating, "CancelRefused" | "DeadlineExceeded" | "CommandRefused") => Some(Failed),
            (Requested | Dispatched | Compensating, "RetryRequested") => Some(state),
            (Failed, "RetryRequested") => Some(Compensating),
            (Failed, "Resolved") => Some(Resolved),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_input_pair_is_either_listed_or_refused() {
        let (saga_id, data) = saga();
        let data = dispatched_data(&data, Uuid::new_v4());
        let legal = table::check_table::<Replenishment>(saga_id, &data, &every_input(saga_id), expected);
        assert_eq!(
            legal, 19,
            "the diagram, its deadlines, its refused commands and the operators' actions make 19 legal pairs"
        );
    }

    #[test]
    fn closed_states_accept_nothing_but_an_operator_taking_up_a_failure() {
        let (saga_id, data) = saga();
        for state in State::iter().filter(|s| s.awaits().is_closed()) {
            for input in every_input(saga_id) {
                let operator = matches!(input, Input::Operator(Action::Retry { .. } | Action::Resolve { .. }));
                let accepted = Replenishment::transition(saga_id, state, &data, &input).is_ok();
                assert_eq!(accepted, state == State::Failed && operator, "{state} on {}", input.name());
            }
            assert_eq!(Replenishment::outstanding(saga_id, state, &data), None);
        }
    }

    #[test]
    fn a_retried_step_sends_its_command_again() {
        let (saga_id, data) = saga();
        let data = dispatched_data(&data, Uuid::new_v4());
        let retry = Input::Operator(Action::Retry { reason: "worker back".into() });
        let step = Replenishment::transition(saga_id, State::Dispatched, &data, &retry).unwrap();
        assert_eq!(step.next, State::Dispatched);
        assert!(matches!(step.commands.as_slice(), [Command::ReceiveShipment { .. }]));
        let step = Replenishment::transition(saga_id, State::Failed, &data, &retry).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::CancelShipment { .. }]));
    }

    #[test]
    fn dispatch_records_the_shipment_and_asks_the_store_to_receive_it() {
        let (saga_id, data) = saga();
        let shipment_id = Uuid::new_v4();
        let reply = Input::Reply(Reply::ShipmentDispatched { saga_id, shipment_id, quantity: 8 });
        let step = Replenishment::transition(saga_id, State::Requested, &data, &reply).unwrap();
        assert_eq!(step.data.shipment_id, Some(shipment_id));
        assert_eq!(step.data.quantity_shipped, Some(8), "a partial shipment is recorded as such");
        assert_eq!(
            step.commands,
            vec![Command::ReceiveShipment {
                saga_id,
                shipment_id,
                store_id: data.store_id,
                product_id: data.product_id,
                quantity: 8
            }]
        );
    }

    #[test]
    fn every_non_terminal_state_awaits_exactly_the_command_it_sent() {
        let (saga_id, data) = saga();
        let data = dispatched_data(&data, Uuid::new_v4());
        table::check_awaits_what_it_sent::<Replenishment>(saga_id, &data, &every_input(saga_id));
    }

    #[test]
    fn unwinding_always_cancels_the_shipment_and_says_why() {
        let (saga_id, data) = saga();
        let data = dispatched_data(&data, Uuid::new_v4());
        let failure = Input::Reply(Reply::ReceiptFailed { saga_id, reason: "damaged".into() });
        let step = Replenishment::transition(saga_id, State::Dispatched, &data, &failure).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::CancelShipment { .. }]));
        assert_eq!(step.error.as_deref(), Some("damaged"));
        let refused = Input::Reply(Reply::CancelRefused { saga_id, reason: "already received".into() });
        let step = Replenishment::transition(saga_id, State::Compensating, &data, &refused).unwrap();
        assert_eq!(step.next, State::Failed);
        assert_eq!(step.events[0].message_type, "replenishment.aborted");
    }

    #[test]
    fn states_are_stored_in_snake_case() {
        assert_eq!(State::Compensating.as_ref(), "compensating");
        assert_eq!("received".parse::<State>().unwrap(), State::Received);
    }

    /// The events downstream teams bind to, and their exchanges: renaming one, or moving it, is a
    /// breaking change that must be made on purpose, here.
    #[test]
    fn its_events_are_the_published_contract() {
        assert_eq!(
            table::published_events::<Replenishment>(),
            [
                ("stock.low", "inventory.events"),
                ("stock.replenished", "inventory.events"),
                ("replenishment.created", "warehouse.events"),
                ("shipment.dispatched", "warehouse.events"),
                ("shipment.received", "warehouse.events"),
                ("replenishment.aborted", "warehouse.events")
            ]
        );
    }
}
