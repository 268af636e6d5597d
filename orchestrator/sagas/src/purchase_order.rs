//! The purchase order saga: the central warehouse reorders a product from its supplier.
//!
//! ```text
//! requested ──PlacePurchase──▶ supplier (answers after its lead time)
//!    │  PurchaseConfirmed                 PurchaseDeclined ──▶ cancelled (done)
//!    ▼
//! confirmed ──ReceivePurchase──▶ warehouse (books the goods in, once)
//!    │  PurchaseReceived
//!    ▼
//! received (done): the stores' low-stock rule runs for the product
//! ```
//!
//! A supplier that does not answer through every resend, or an operator's cancel while the order
//! is `requested`, unwinds with `CancelPurchase` (state `cancelling`), which the supplier
//! confirms (`cancelled`) or, when it has shipped already, refuses with `PurchaseAlreadyShipped`:
//! the goods are on their way, so the saga goes on to `confirmed` and books them in. Once
//! confirmed, the goods are at the warehouse's door and the order only goes forward: a booking
//! never confirmed waits for an operator (`failed`), whose retry books again.
//!
//! The rule that opens it: when a change leaves a product's warehouse stock (on hand − reserved +
//! on order) at or below its reorder point, an order opens for enough to reach the reorder
//! target, in the change's transaction. At most one is open per product.

use platform::{
    config::SagaTiming,
    contract::Event,
    domain_event,
    messaging::{EventExchange, Participant, outbox::Outgoing},
    protocol::{CommandFamily, MessageFamily, ReplyFamily},
    saga::{
        Action, Actor, Awaits, Concerns, Input, Invariant, Nobody, Refused, SagaKind, SagaState, Step,
        engine::{self, Start},
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use stock::{level, warehouse};
use uuid::Uuid;

use crate::{WAREHOUSE, example, replenishment};

/// The supplier: takes purchase orders and ships them after its lead time. Only this kind speaks
/// to it.
pub const SUPPLIER: Participant = Participant { name: "supplier", queue: "supplier.commands" };

/// Commands of the purchase order saga, each idempotent by the order's id (`purchase_id`, its
/// saga's id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
#[serde(tag = "type", content = "payload")]
#[schemars(rename = "PurchaseOrderCommand")]
pub enum Command {
    /// Supplier: deliver `quantity` of the product to the warehouse. Answered once it ships.
    PlacePurchase { purchase_id: Uuid, product_id: Uuid, quantity: i64 },
    /// Supplier: cancel the order. Safe whether or not the order ever reached it: a cancel that
    /// comes first leaves a cancelled order behind, which a late `PlacePurchase` finds.
    CancelPurchase { purchase_id: Uuid, product_id: Uuid },
    /// Warehouse: book the delivered goods into stock.
    ReceivePurchase { purchase_id: Uuid, product_id: Uuid, quantity: i64 },
}

impl MessageFamily for Command {
    fn examples() -> Vec<Self> {
        let (purchase_id, product_id) = (example::SAGA, example::PRODUCT);
        vec![
            Self::PlacePurchase { purchase_id, product_id, quantity: 80 },
            Self::CancelPurchase { purchase_id, product_id },
            Self::ReceivePurchase { purchase_id, product_id, quantity: 80 },
        ]
    }
}

impl CommandFamily for Command {
    fn participant(&self) -> Participant {
        match self {
            Self::PlacePurchase { .. } | Self::CancelPurchase { .. } => SUPPLIER,
            Self::ReceivePurchase { .. } => WAREHOUSE,
        }
    }

    fn saga_id(&self) -> Uuid {
        match self {
            Self::PlacePurchase { purchase_id, .. }
            | Self::CancelPurchase { purchase_id, .. }
            | Self::ReceivePurchase { purchase_id, .. } => *purchase_id,
        }
    }
}

/// Participants' answers to [`Command`]s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
#[serde(tag = "type", content = "payload")]
#[schemars(rename = "PurchaseOrderReply")]
pub enum Reply {
    /// Supplier: the order shipped, after the supplier's lead time; the goods are at the
    /// warehouse's door.
    PurchaseConfirmed { purchase_id: Uuid, quantity: i64 },
    /// Supplier: it will not deliver (or the order was cancelled before it arrived).
    PurchaseDeclined { purchase_id: Uuid, reason: String },
    /// Supplier: the order is cancelled; nothing will ship.
    PurchaseCancelled { purchase_id: Uuid },
    /// Supplier: too late to cancel, the goods have shipped.
    PurchaseAlreadyShipped { purchase_id: Uuid, quantity: i64 },
    /// Warehouse: the goods are in stock.
    PurchaseReceived { purchase_id: Uuid, quantity: i64 },
}

impl MessageFamily for Reply {
    fn examples() -> Vec<Self> {
        let purchase_id = example::SAGA;
        vec![
            Self::PurchaseConfirmed { purchase_id, quantity: 80 },
            Self::PurchaseDeclined { purchase_id, reason: "the supplier cannot deliver this product now".into() },
            Self::PurchaseCancelled { purchase_id },
            Self::PurchaseAlreadyShipped { purchase_id, quantity: 80 },
            Self::PurchaseReceived { purchase_id, quantity: 80 },
        ]
    }
}

impl ReplyFamily for Reply {
    fn saga_id(&self) -> Uuid {
        match self {
            Self::PurchaseConfirmed { purchase_id, .. }
            | Self::PurchaseDeclined { purchase_id, .. }
            | Self::PurchaseCancelled { purchase_id }
            | Self::PurchaseAlreadyShipped { purchase_id, .. }
            | Self::PurchaseReceived { purchase_id, .. } => *purchase_id,
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
    Confirmed,
    Received,
    Cancelling,
    Cancelled,
    Failed,
    /// A failed order an operator closed by hand.
    Resolved,
}

impl SagaState for State {
    fn awaits(self) -> Awaits {
        match self {
            Self::Requested | Self::Confirmed | Self::Cancelling => Awaits::Participant,
            Self::Failed => Awaits::Operator,
            Self::Received | Self::Cancelled | Self::Resolved => Awaits::Nothing,
        }
    }
}

/// What the saga knows, stored as JSON in `saga.data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub product_id: Uuid,
    /// What was ordered.
    pub quantity: i64,
    /// What the supplier shipped, once it has.
    #[serde(default)]
    pub quantity_shipped: Option<i64>,
}

pub struct PurchaseOrder;

impl SagaKind for PurchaseOrder {
    const KIND: &'static str = "purchase_order";
    const PARTICIPANTS: &'static [Participant] = &[SUPPLIER, WAREHOUSE];
    const EVENTS: &'static [Event] = &[
        Event::of::<PurchaseOrderOpened>(),
        Event::of::<PurchaseOrderReceived>(),
        Event::of::<PurchaseOrderCancelled>(),
    ];
    const INVARIANTS: &'static [Invariant] = &[
        Invariant {
            rule: "at most one purchase order is open per product",
            breaches: "SELECT product_id::text FROM purchase_order WHERE closed_at IS NULL
                       GROUP BY product_id HAVING count(*) > 1",
        },
        Invariant {
            rule: "a purchase order's row follows its saga",
            breaches: "SELECT p.saga_id::text FROM purchase_order p JOIN saga s ON s.id = p.saga_id
                       WHERE p.status <> s.state OR (p.closed_at IS NULL) <> (s.closed_at IS NULL)",
        },
        Invariant {
            rule: "a received purchase order's goods were booked in, once",
            breaches: "SELECT p.saga_id::text FROM purchase_order p
                       LEFT JOIN stock_movement m ON m.reference = p.saga_id AND m.reason = 'purchase_received'
                       WHERE p.status = 'received' GROUP BY p.saga_id HAVING count(m.id) <> 1",
        },
        Invariant {
            rule: "a cancelled purchase order booked nothing in",
            breaches: "SELECT p.saga_id::text FROM purchase_order p JOIN stock_movement m
                         ON m.reference = p.saga_id AND m.reason = 'purchase_received'
                       WHERE p.status = 'cancelled'",
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
            (Requested, Input::Reply(R::PurchaseConfirmed { quantity, .. })) => {
                data.quantity_shipped = Some(*quantity);
                (Confirmed, None)
            }
            // Nothing was promised, so there is nothing to undo.
            (Requested, Input::Reply(R::PurchaseDeclined { reason, .. })) => (Cancelled, Some(reason.clone())),
            (Requested, Input::GaveUp(why)) => (Cancelling, Some(format!("the supplier: {why}; cancelling"))),
            (Requested, Operator(Compensate { reason })) => (Cancelling, Some(reason.clone())),
            (Confirmed, Input::Reply(R::PurchaseReceived { quantity, .. })) => {
                data.quantity_shipped = Some(*quantity);
                (Received, None)
            }
            // The goods are at the door: only a person can decide what becomes of them.
            (Confirmed, Input::GaveUp(why)) => {
                (Failed, Some(format!("the warehouse did not book the goods in: {why}")))
            }
            (Cancelling, Input::Reply(R::PurchaseCancelled { .. })) => (Cancelled, None),
            (Cancelling, Input::Reply(R::PurchaseAlreadyShipped { quantity, .. })) => {
                data.quantity_shipped = Some(*quantity);
                (Confirmed, Some("the supplier had shipped already; booking the goods in".to_owned()))
            }
            (Cancelling, Input::GaveUp(why)) => (Failed, Some(format!("the cancellation was not confirmed: {why}"))),
            // The step in hand, again: its command is sent anew with the attempts reset.
            (Requested | Confirmed | Cancelling, Operator(Retry { .. })) => (state, None),
            // Again, the way it was going: the booking once shipped, the cancel otherwise. Both
            // are safe to repeat.
            (Failed, Operator(Retry { .. })) => {
                (if data.quantity_shipped.is_some() { Confirmed } else { Cancelling }, None)
            }
            (Failed, Operator(Resolve { .. })) => (Resolved, None),
            _ => return Err(Refused { state: state.to_string(), event: input.name() }),
        };
        let commands = Self::outstanding(saga_id, next, &data).into_iter().collect();
        let events = events(saga_id, next, &data, error.as_deref());
        Ok(Step { next, data, commands, events, error })
    }

    fn outstanding(saga_id: Uuid, state: State, data: &Data) -> Option<Command> {
        let (purchase_id, product_id) = (saga_id, data.product_id);
        match state {
            State::Requested => Some(Command::PlacePurchase { purchase_id, product_id, quantity: data.quantity }),
            State::Confirmed => {
                Some(Command::ReceivePurchase { purchase_id, product_id, quantity: data.quantity_shipped? })
            }
            State::Cancelling => Some(Command::CancelPurchase { purchase_id, product_id }),
            State::Received | State::Cancelled | State::Failed | State::Resolved => None,
        }
    }

    fn concerns(data: &Data) -> Concerns {
        Concerns { store: None, products: vec![data.product_id] }
    }

    fn conflict(constraint: &str) -> Option<&'static str> {
        (constraint == "purchase_order_one_open").then_some(
            "another purchase order of this product has opened since; it must close before this one can be taken \
             up again",
        )
    }

    async fn after_transition(
        tx: &mut PgConnection,
        timing: &SagaTiming,
        saga_id: Uuid,
        state: State,
        data: &Data,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE purchase_order SET status = $2, closed_at = CASE WHEN $3 THEN now() END WHERE saga_id = $1",
            saga_id,
            state.as_ref(),
            state.awaits().is_closed(),
        )
        .execute(&mut *tx)
        .await?;
        // Stores refused for lack of stock can be refilled now. (A cancelled order is not placed
        // again here: a supplier that declines everything would be asked without end. The next
        // change that lowers the stock asks again.)
        if state == State::Received {
            for level in level::of_product(tx, data.product_id).await? {
                replenishment::replenish_if_low(tx, timing, &level).await?;
            }
        }
        Ok(())
    }
}

/// The warehouse's low-stock rule, as the timeline names it.
pub const WAREHOUSE_LOW: Actor<'static> = Actor::Rule("warehouse-low-stock");

/// The warehouse's low-stock rule, which every change that lowers the warehouse's stock goes
/// through: when what it has and has on order is at or below the product's reorder point, and no
/// order is open for it, one opens for enough to reach the reorder target. Returns its id.
pub async fn reorder_if_low(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    product_id: Uuid,
) -> sqlx::Result<Option<Uuid>> {
    let Some(levels) = warehouse::reorder_levels(tx, product_id).await? else {
        return Ok(None);
    };
    let (Some(point), Some(target)) = (levels.reorder_point, levels.reorder_target) else {
        return Ok(None);
    };
    let on_order = sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(quantity), 0)::int8 AS "on_order!" FROM purchase_order
           WHERE product_id = $1 AND closed_at IS NULL"#,
        product_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let position = levels.available() + on_order;
    if position > point {
        return Ok(None);
    }
    let quantity = target - position;
    let detail = json!({
        "available": levels.available(), "on_order": on_order, "reorder_point": point,
        "reorder_target": target, "quantity": quantity,
    });
    open(tx, timing, product_id, quantity, WAREHOUSE_LOW, detail).await
}

/// Opens a purchase order of `quantity` unless one is open for the product: its row, its saga and
/// the `purchase_order.opened` event. `None` when one is open already. `actor` is who asked: the
/// warehouse's low-stock rule, or a caller of the API.
pub async fn open(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    product_id: Uuid,
    quantity: i64,
    actor: Actor<'_>,
    detail: serde_json::Value,
) -> sqlx::Result<Option<Uuid>> {
    let saga_id = Uuid::now_v7();
    // The partial unique index is the guard: a concurrent or repeated signal claims nothing.
    let claimed = sqlx::query_scalar!(
        "INSERT INTO purchase_order (saga_id, product_id, quantity, status) VALUES ($1, $2, $3, $4)
         ON CONFLICT (product_id) WHERE closed_at IS NULL DO NOTHING
         RETURNING saga_id",
        saga_id,
        product_id,
        quantity,
        State::Requested.as_ref()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        return Ok(None);
    }
    let data = Data { product_id, quantity, quantity_shipped: None };
    let opened = PurchaseOrderOpened { purchase_id: saga_id, product_id, quantity };
    let events = vec![Outgoing::event(&opened)];
    let start = Start { saga_id, initial: State::Requested, data: &data, actor, detail, events };
    engine::start::<PurchaseOrder>(tx, timing, start).await?;
    metrics::counter!("purchase_orders_started_total", "actor" => actor.label().to_owned()).increment(1);
    Ok(Some(saga_id))
}

/// The open purchase order of a product, if any.
pub async fn open_for(tx: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("SELECT saga_id FROM purchase_order WHERE product_id = $1 AND closed_at IS NULL", product_id)
        .fetch_optional(tx)
        .await
}

/// Domain events of the saga's own decisions.
fn events(purchase_id: Uuid, next: State, data: &Data, error: Option<&str>) -> Vec<Outgoing> {
    let product_id = data.product_id;
    match next {
        State::Received => {
            let quantity = data.quantity_shipped.unwrap_or_default();
            vec![Outgoing::event(&PurchaseOrderReceived { purchase_id, product_id, quantity })]
        }
        State::Cancelled => {
            let reason = error.map(str::to_owned);
            vec![Outgoing::event(&PurchaseOrderCancelled { purchase_id, product_id, reason })]
        }
        _ => Vec::new(),
    }
}

/// The purchasing side's domain events.
pub const PURCHASING_EVENTS: EventExchange = EventExchange("purchasing.events");

/// A purchase order opened: the supplier is asked for `quantity` of the product. Emitted once per
/// order, in the transaction that opens it, whether the warehouse's low-stock rule or an operator
/// opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PurchaseOrderOpened {
    pub purchase_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
}

domain_event!(PurchaseOrderOpened, "purchase_order.opened" on PURCHASING_EVENTS, correlated by purchase_id, example {
    Self { purchase_id: example::SAGA, product_id: example::PRODUCT, quantity: 80 }
});

/// A purchase order's goods are in the warehouse's stock: `quantity` more on hand. Emitted once,
/// in the transaction of the saga's move to `received`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PurchaseOrderReceived {
    pub purchase_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
}

domain_event!(PurchaseOrderReceived, "purchase_order.received" on PURCHASING_EVENTS, correlated by purchase_id, example {
    Self { purchase_id: example::SAGA, product_id: example::PRODUCT, quantity: 80 }
});

/// A purchase order ended without goods: the supplier declined it, or it was cancelled (by an
/// operator, or because the supplier did not answer). Emitted in the transaction of the move to
/// `cancelled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PurchaseOrderCancelled {
    pub purchase_id: Uuid,
    pub product_id: Uuid,
    /// The supplier's words when it declined; `null` after a confirmed cancel, whose cause is in
    /// the saga's timeline.
    pub reason: Option<String>,
}

domain_event!(PurchaseOrderCancelled, "purchase_order.cancelled" on PURCHASING_EVENTS, correlated by purchase_id, example {
    let reason = Some("the supplier cannot deliver this product now".into());
    Self { purchase_id: example::SAGA, product_id: example::PRODUCT, reason }
});

#[cfg(test)]
mod tests {
    use platform::saga::{GaveUp, table};
    use strum::IntoEnumIterator;

    use super::*;

    fn saga() -> (Uuid, Data) {
        (Uuid::new_v4(), Data { product_id: Uuid::new_v4(), quantity: 80, quantity_shipped: Some(80) })
    }

    /// One input of each kind, built for `purchase_id`.
    fn every_input(purchase_id: Uuid) -> Vec<Input<Reply>> {
        vec![
            Input::Reply(Reply::PurchaseConfirmed { purchase_id, quantity: 80 }),
            Input::Reply(Reply::PurchaseDeclined { purchase_id, reason: "no".into() }),
            Input::Reply(Reply::PurchaseCancelled { purchase_id }),
            Input::Reply(Reply::PurchaseAlreadyShipped { purchase_id, quantity: 80 }),
            Input::Reply(Reply::PurchaseReceived { purchase_id, quantity: 80 }),
            Input::GaveUp(GaveUp::Unanswered { attempts: 5 }),
            Input::GaveUp(GaveUp::Refused { command: "PlacePurchase".into(), reason: "malformed".into() }),
            Input::Operator(Action::Compensate { reason: "operator".into() }),
            Input::Operator(Action::Retry { reason: "operator".into() }),
            Input::Operator(Action::Resolve { note: "fixed by hand".into() }),
        ]
    }

    /// The whole table: for every state and input, the expected next state or a refusal.
    fn expected(state: State, input: &Input<Reply>) -> Option<State> {
        use State::*;
        match (state, input.name().as_str()) {
            (Requested, "PurchaseConfirmed") => Some(Confirmed),
            (Requested, "PurchaseDeclined") => Some(Cancelled),
            (Requested, "DeadlineExceeded" | "CommandRefused" | "CompensateRequested") => Some(Cancelling),
            (Confirmed, "PurchaseReceived") => Some(Received),
            (Confirmed, "DeadlineExceeded" | "CommandRefused") => Some(Failed),
            (Cancelling, "PurchaseCancelled") => Some(Cancelled),
            (Cancelling, "PurchaseAlreadyShipped") => Some(Confirmed),
            (Cancelling, "DeadlineExceeded" | "CommandRefused") => Some(Failed),
            (Requested | Confirmed | Cancelling, "RetryRequested") => Some(state),
            // The test's saga has shipped: its retry books the goods in.
            (Failed, "RetryRequested") => Some(Confirmed),
            (Failed, "Resolved") => Some(Resolved),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_input_pair_is_either_listed_or_refused() {
        let (saga_id, data) = saga();
        let legal = table::check_table::<PurchaseOrder>(saga_id, &data, &every_input(saga_id), expected);
        assert_eq!(
            legal, 17,
            "the diagram, its deadlines, its refused commands and the operators' actions make 17 legal pairs"
        );
    }

    #[test]
    fn closed_states_accept_nothing_but_an_operator_taking_up_a_failure() {
        let (saga_id, data) = saga();
        for state in State::iter().filter(|s| s.awaits().is_closed()) {
            for input in every_input(saga_id) {
                let operator = matches!(input, Input::Operator(Action::Retry { .. } | Action::Resolve { .. }));
                let accepted = PurchaseOrder::transition(saga_id, state, &data, &input).is_ok();
                assert_eq!(accepted, state == State::Failed && operator, "{state} on {}", input.name());
            }
            assert_eq!(PurchaseOrder::outstanding(saga_id, state, &data), None);
        }
    }

    #[test]
    fn a_failed_order_is_taken_up_the_way_it_was_going() {
        let (saga_id, shipped) = saga();
        let retry = Input::Operator(Action::Retry { reason: "warehouse back".into() });
        let step = PurchaseOrder::transition(saga_id, State::Failed, &shipped, &retry).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::ReceivePurchase { quantity: 80, .. }]));
        let unshipped = Data { quantity_shipped: None, ..shipped };
        let step = PurchaseOrder::transition(saga_id, State::Failed, &unshipped, &retry).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::CancelPurchase { .. }]));
    }

    #[test]
    fn a_cancel_too_late_books_the_shipped_goods_in() {
        let (saga_id, data) = saga();
        let data = Data { quantity_shipped: None, ..data };
        let late = Input::Reply(Reply::PurchaseAlreadyShipped { purchase_id: saga_id, quantity: 60 });
        let step = PurchaseOrder::transition(saga_id, State::Cancelling, &data, &late).unwrap();
        assert_eq!(step.next, State::Confirmed);
        assert_eq!(
            step.commands,
            vec![Command::ReceivePurchase { purchase_id: saga_id, product_id: data.product_id, quantity: 60 }]
        );
    }

    #[test]
    fn every_non_terminal_state_awaits_exactly_the_command_it_sent() {
        let (saga_id, data) = saga();
        table::check_awaits_what_it_sent::<PurchaseOrder>(saga_id, &data, &every_input(saga_id));
    }

    /// The events downstream teams bind to, and their exchanges: renaming one, or moving it, is a
    /// breaking change that must be made on purpose, here.
    #[test]
    fn its_events_are_the_published_contract() {
        assert_eq!(
            table::published_events::<PurchaseOrder>(),
            [
                ("purchase_order.opened", "purchasing.events"),
                ("purchase_order.received", "purchasing.events"),
                ("purchase_order.cancelled", "purchasing.events")
            ]
        );
    }
}
