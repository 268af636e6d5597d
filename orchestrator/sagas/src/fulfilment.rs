//! The order fulfilment saga: take the customer's money, then hand the order over in the store;
//! or give the money back and put the goods back on the shelf. Its id is the order's id, and it
//! starts with the order, in the transaction that reserves the stock.
//!
//! ```text
//! reserved ──ChargePayment──▶ payment
//!    │ PaymentApproved              PaymentDeclined ───────────────────────┐
//!    ▼                                                                      ▼
//! charged ──ListForPicking──▶ store            refunding ──RefundPayment──▶ payment
//!    │ PickerHandedOver (the picker, via the API)  ▲   │ PaymentRefunded
//!    │                        PickingFailed ───────┘   ▼
//!    ▼                                             releasing ──ReleaseReservation──▶ store
//! handing_over ──RecordHandOver──▶ store               │ ReservationReleased
//!    │ HandOverRecorded (its goods leave the stock)    ▼
//!    ▼                                             cancelled (done)
//! fulfilled (done)
//! ```
//!
//! The picker's tap is a person's answer ([`Picker`]), given through the API: the saga takes it
//! like an operator's action, with who gave it, and commands the store to record the hand-over.
//! Only the store writes its pick list and its stock, and it replies as every participant does.
//!
//! A customer's cancel, or an operator's, while the order is `reserved` or `charged` unwinds it:
//! `refunding`, then `releasing`. Refunding is safe whether or not the charge ever ran: a refund
//! that comes first voids the payment, so a late charge is declined. A charge never answered
//! unwinds the same way. The pick waits on a person, so its deadline is the person timeout; a
//! pickup window that runs out unwinds the order too, and once it unwinds the picker's tap is
//! refused. Once handed over, the order cannot be unwound: the goods are with the customer. An
//! undo that cannot be done (the store refuses the release because the order was handed over
//! meanwhile, or the refund or release is never confirmed), or a hand-over the store never
//! confirms, leaves the saga `failed` for an operator, who can retry (the undo from the refund, or
//! the hand-over's record; each step is idempotent) or, having put things right by hand, resolve it.

use platform::{
    config::SagaTiming,
    contract::Event,
    domain_event,
    messaging::{EventExchange, Participant, outbox::Outgoing},
    protocol::{CommandFamily, MessageFamily, ReplyFamily},
    saga::{
        Action, Actor, Awaits, Concerns, GaveUp, Input, InputOf, Invariant, PersonAnswer, Refused, SagaKind, SagaState,
        Step,
        engine::{self, Start},
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use stock::level;
use uuid::Uuid;

use crate::{INVENTORY, PAYMENT, example, replenishment};

/// One line of the order, as the store needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Commands of the fulfilment saga; each is idempotent by order id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
#[serde(tag = "type", content = "payload")]
#[schemars(rename = "FulfilmentCommand")]
pub enum Command {
    /// Payment: take `amount_cents` for the order.
    ChargePayment { order_id: Uuid, amount_cents: i64 },
    /// Payment: give back what was taken for the order, if anything; void it otherwise.
    RefundPayment { order_id: Uuid },
    /// Store: put the order on the pick list. Nothing is answered unless the store cannot pick
    /// it: the picker's tap, through the API, is what the saga waits for.
    ListForPicking { order_id: Uuid, store_id: Uuid, items: Vec<Line> },
    /// Store: the picker handed the order over; take its goods out of stock and off the pick list.
    RecordHandOver { order_id: Uuid, store_id: Uuid, items: Vec<Line> },
    /// Store: put the order's goods back to available stock, and take it off the pick list.
    ReleaseReservation { order_id: Uuid, store_id: Uuid, items: Vec<Line> },
}

impl MessageFamily for Command {
    fn examples() -> Vec<Self> {
        let (order_id, store_id) = (example::ORDER, example::STORE);
        let items = vec![Line { product_id: example::PRODUCT, quantity: 2 }];
        vec![
            Self::ChargePayment { order_id, amount_cents: 598 },
            Self::RefundPayment { order_id },
            Self::ListForPicking { order_id, store_id, items: items.clone() },
            Self::RecordHandOver { order_id, store_id, items: items.clone() },
            Self::ReleaseReservation { order_id, store_id, items },
        ]
    }
}

impl CommandFamily for Command {
    fn participant(&self) -> Participant {
        match self {
            Self::ChargePayment { .. } | Self::RefundPayment { .. } => PAYMENT,
            Self::ListForPicking { .. } | Self::RecordHandOver { .. } | Self::ReleaseReservation { .. } => INVENTORY,
        }
    }

    fn saga_id(&self) -> Uuid {
        match self {
            Self::ChargePayment { order_id, .. }
            | Self::RefundPayment { order_id }
            | Self::ListForPicking { order_id, .. }
            | Self::RecordHandOver { order_id, .. }
            | Self::ReleaseReservation { order_id, .. } => *order_id,
        }
    }
}

/// The payment worker's and the store's answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
#[serde(tag = "type", content = "payload")]
#[schemars(rename = "FulfilmentReply")]
pub enum Reply {
    /// Payment: `amount_cents` was taken.
    PaymentApproved { order_id: Uuid, amount_cents: i64 },
    /// Payment: nothing was taken, for `reason`.
    PaymentDeclined { order_id: Uuid, reason: String },
    /// Payment: `amount_cents` went back to the customer (0 when nothing had been charged).
    PaymentRefunded { order_id: Uuid, amount_cents: i64 },
    /// Store: the order cannot be picked (its goods are not on the shelf).
    PickingFailed { order_id: Uuid, reason: String },
    /// Store: the hand-over is recorded: the order's goods left its stock.
    HandOverRecorded { order_id: Uuid },
    /// Store: the hand-over cannot be recorded: the order's goods were released back to stock.
    HandOverRefused { order_id: Uuid, reason: String },
    /// Store: the order's goods are back in available stock and off the pick list.
    ReservationReleased { order_id: Uuid },
    /// Store: the release cannot be done: the order was handed over.
    ReleaseRefused { order_id: Uuid, reason: String },
}

impl MessageFamily for Reply {
    fn examples() -> Vec<Self> {
        let order_id = example::ORDER;
        vec![
            Self::PaymentApproved { order_id, amount_cents: 598 },
            Self::PaymentDeclined { order_id, reason: "the card was declined (simulated)".into() },
            Self::PaymentRefunded { order_id, amount_cents: 598 },
            Self::PickingFailed { order_id, reason: "the order's goods are not on the shelf".into() },
            Self::HandOverRecorded { order_id },
            Self::HandOverRefused { order_id, reason: "the order's goods were released back to stock".into() },
            Self::ReservationReleased { order_id },
            Self::ReleaseRefused { order_id, reason: "the order was handed over".into() },
        ]
    }
}

impl ReplyFamily for Reply {
    fn saga_id(&self) -> Uuid {
        match self {
            Self::PaymentApproved { order_id, .. }
            | Self::PaymentDeclined { order_id, .. }
            | Self::PaymentRefunded { order_id, .. }
            | Self::PickingFailed { order_id, .. }
            | Self::HandOverRecorded { order_id }
            | Self::HandOverRefused { order_id, .. }
            | Self::ReservationReleased { order_id }
            | Self::ReleaseRefused { order_id, .. } => *order_id,
        }
    }
}

/// What the picker answers a paid order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picker {
    /// The picker handed the order to the customer.
    HandedOver,
}

impl PersonAnswer for Picker {
    fn name(&self) -> &'static str {
        match self {
            Self::HandedOver => "PickerHandedOver",
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
    Reserved,
    Charged,
    /// The picker handed it over; the store is recording it.
    HandingOver,
    Refunding,
    Releasing,
    Fulfilled,
    Cancelled,
    Failed,
    /// A failed saga an operator closed by hand.
    Resolved,
}

impl SagaState for State {
    fn awaits(self) -> Awaits {
        match self {
            Self::Reserved | Self::HandingOver | Self::Refunding | Self::Releasing => Awaits::Participant,
            // The picker hands the order over; people take minutes.
            Self::Charged => Awaits::Person,
            Self::Failed => Awaits::Operator,
            Self::Fulfilled | Self::Cancelled | Self::Resolved => Awaits::Nothing,
        }
    }
}

/// What the saga knows, stored as JSON in `saga.data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub store_id: Uuid,
    pub items: Vec<Line>,
    /// What the order costs, at the prices it was placed at.
    pub amount_cents: i64,
    /// The picker handed it over: from here on it is finished forward, never unwound.
    #[serde(default)]
    pub handed_over: bool,
}

// An order's saga's state, named for its customer and store; stored as text in
// `customer_order.status`, which the schema checks.
/// Where an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum OrderStatus {
    /// Its items are held for it; its payment is being taken.
    Reserved,
    /// Paid: on the store's pick list until the picker hands it over.
    Paid,
    /// Being unwound: its payment refunded, its items released.
    Cancelling,
    /// Handed to the customer.
    Fulfilled,
    /// Refunded, and its items back in available stock.
    Cancelled,
    /// Its cancellation could not be completed: an operator steps in (see its saga).
    Failed,
}

impl From<State> for OrderStatus {
    fn from(state: State) -> Self {
        match state {
            State::Reserved => Self::Reserved,
            State::Charged => Self::Paid,
            State::Refunding | State::Releasing => Self::Cancelling,
            // In the customer's hands: the store's record of it follows.
            State::HandingOver | State::Fulfilled => Self::Fulfilled,
            State::Cancelled => Self::Cancelled,
            State::Failed | State::Resolved => Self::Failed,
        }
    }
}

pub struct Fulfilment;

impl SagaKind for Fulfilment {
    const KIND: &'static str = "order_fulfilment";
    const PARTICIPANTS: &'static [Participant] = &[PAYMENT, INVENTORY];
    const EVENTS: &'static [Event] = &[
        Event::of::<OrderCreated>(),
        Event::of::<PaymentApproved>(),
        Event::of::<PaymentDeclined>(),
        Event::of::<OrderFulfilled>(),
        Event::of::<OrderCancelled>(),
    ];
    const INVARIANTS: &'static [Invariant] = &[
        Invariant {
            rule: "an order whose saga closed is not half-way",
            breaches: "SELECT o.id::text FROM customer_order o JOIN saga s ON s.id = o.id
                       WHERE s.closed_at IS NOT NULL AND o.status IN ('reserved', 'paid', 'cancelling')",
        },
        Invariant {
            rule: "a fulfilled order's goods were handed over at its store",
            breaches: "SELECT s.id::text FROM saga s LEFT JOIN pick p ON p.order_id = s.id
                       WHERE s.kind = 'order_fulfilment' AND s.state = 'fulfilled'
                         AND p.status IS DISTINCT FROM 'handed_over'",
        },
        Invariant {
            rule: "a cancelled order's goods were not handed over",
            breaches: "SELECT s.id::text FROM saga s JOIN pick p ON p.order_id = s.id
                       WHERE s.kind = 'order_fulfilment' AND s.state = 'cancelled' AND p.status = 'handed_over'",
        },
    ];
    type State = State;
    type Command = Command;
    type Reply = Reply;
    type Data = Data;
    type Person = Picker;

    fn transition(
        saga_id: Uuid,
        state: State,
        data: &Data,
        input: &InputOf<Self>,
    ) -> Result<Step<State, Data, Command>, Refused> {
        use Action::{Compensate, Resolve, Retry};
        use Input::Operator;
        use Reply as R;
        use State::*;
        let mut data = data.clone();
        let (next, error) = match (state, input) {
            (Reserved, Input::Reply(R::PaymentApproved { .. })) => (Charged, None),
            // Nothing was taken, so only the goods go back.
            (Reserved, Input::Reply(R::PaymentDeclined { reason, .. })) => (Releasing, Some(reason.clone())),
            (Reserved, Input::GaveUp(GaveUp::Unanswered { attempts })) => {
                (Refunding, Some(format!("the payment did not answer after {attempts} attempts; unwinding")))
            }
            (Reserved, Input::GaveUp(why)) => (Refunding, Some(format!("the payment failed ({why}); unwinding"))),
            (Charged, Input::Person(Picker::HandedOver)) => {
                data.handed_over = true;
                (HandingOver, None)
            }
            (Charged, Input::Reply(R::PickingFailed { reason, .. })) => (Refunding, Some(reason.clone())),
            (Charged, Input::GaveUp(GaveUp::Unanswered { attempts })) => {
                (Refunding, Some(format!("not handed over within {attempts} pickup windows; unwinding")))
            }
            (Charged, Input::GaveUp(why)) => (Refunding, Some(format!("the pick failed ({why}); unwinding"))),
            (Reserved | Charged, Operator(Compensate { reason })) => (Refunding, Some(reason.clone())),
            (HandingOver, Input::Reply(R::HandOverRecorded { .. })) => (Fulfilled, None),
            // The customer has the goods: only a person can put the books right.
            (HandingOver, Input::Reply(R::HandOverRefused { reason, .. })) => (Failed, Some(reason.clone())),
            (HandingOver, Input::GaveUp(GaveUp::Unanswered { attempts })) => {
                (Failed, Some(format!("the store did not confirm the hand-over after {attempts} attempts")))
            }
            (HandingOver, Input::GaveUp(why)) => (Failed, Some(format!("the hand-over's record failed ({why})"))),
            (Refunding, Input::Reply(R::PaymentRefunded { .. })) => (Releasing, None),
            (Releasing, Input::Reply(R::ReservationReleased { .. })) => (Cancelled, None),
            (Releasing, Input::Reply(R::ReleaseRefused { reason, .. })) => (Failed, Some(reason.clone())),
            (Refunding | Releasing, Input::GaveUp(GaveUp::Unanswered { attempts })) => {
                (Failed, Some(format!("the {state} step was not confirmed after {attempts} attempts")))
            }
            (Refunding | Releasing, Input::GaveUp(why)) => (Failed, Some(format!("the {state} step failed ({why})"))),
            // The step in hand, again: its command is sent anew with the attempts reset.
            (Reserved | Charged | HandingOver | Refunding | Releasing, Operator(Retry { .. })) => (state, None),
            // Again, the way it was going: the hand-over's record, or the undo from the refund.
            // Each of their steps is safe to repeat.
            (Failed, Operator(Retry { .. })) => (if data.handed_over { HandingOver } else { Refunding }, None),
            (Failed, Operator(Resolve { .. })) => (Resolved, None),
            _ => return Err(Refused { state: state.to_string(), event: input.name() }),
        };
        let commands = Self::outstanding(saga_id, next, &data).into_iter().collect();
        let events = events(saga_id, state, next, &data, input, error.as_deref());
        Ok(Step { next, data, commands, events, error })
    }

    fn outstanding(saga_id: Uuid, state: State, data: &Data) -> Option<Command> {
        let (order_id, store_id, items) = (saga_id, data.store_id, data.items.clone());
        match state {
            State::Reserved => Some(Command::ChargePayment { order_id, amount_cents: data.amount_cents }),
            State::Charged => Some(Command::ListForPicking { order_id, store_id, items }),
            State::HandingOver => Some(Command::RecordHandOver { order_id, store_id, items }),
            State::Refunding => Some(Command::RefundPayment { order_id }),
            State::Releasing => Some(Command::ReleaseReservation { order_id, store_id, items }),
            State::Fulfilled | State::Cancelled | State::Failed | State::Resolved => None,
        }
    }

    fn concerns(data: &Data) -> Concerns {
        Concerns { store: Some(data.store_id), products: data.items.iter().map(|line| line.product_id).collect() }
    }

    async fn after_transition(
        tx: &mut PgConnection,
        timing: &SagaTiming,
        saga_id: Uuid,
        state: State,
        data: &Data,
    ) -> sqlx::Result<()> {
        let status = OrderStatus::from(state);
        sqlx::query!(
            "UPDATE customer_order SET status = $2, updated_at = now() WHERE id = $1",
            saga_id,
            status.as_ref()
        )
        .execute(&mut *tx)
        .await?;
        if matches!(state, State::Fulfilled | State::Cancelled) {
            // The store's stock changed (the goods left, or went back to available stock): the
            // low-stock rule, as after every change.
            for line in &data.items {
                if let Some(level) = level::fetch(tx, data.store_id, line.product_id).await? {
                    replenishment::replenish_if_low(tx, timing, &level).await?;
                }
            }
        }
        Ok(())
    }
}

/// Starts the fulfilment of order `order_id` in the transaction that placed it (which wrote the
/// order as `reserved`); `events` (the order's own) are written with its first command.
pub async fn start(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    order_id: Uuid,
    data: &Data,
    actor: Actor<'_>,
    events: Vec<Outgoing>,
) -> sqlx::Result<()> {
    let detail = json!({ "amount_cents": data.amount_cents, "items": data.items.len() });
    let start = Start { saga_id: order_id, initial: State::Reserved, data, actor, detail, events };
    engine::start::<Fulfilment>(tx, timing, start).await
}

/// Domain events of the saga's own decisions.
fn events(
    order_id: Uuid,
    from: State,
    next: State,
    data: &Data,
    input: &InputOf<Fulfilment>,
    error: Option<&str>,
) -> Vec<Outgoing> {
    let (store_id, amount_cents) = (data.store_id, data.amount_cents);
    let mut events = Vec::new();
    match (from, next, input) {
        (State::Reserved, State::Charged, _) => {
            events.push(Outgoing::event(&PaymentApproved { order_id, store_id, amount_cents }));
        }
        (State::Reserved, State::Releasing, Input::Reply(Reply::PaymentDeclined { reason, .. })) => {
            events.push(Outgoing::event(&PaymentDeclined { order_id, store_id, reason: reason.clone() }));
        }
        _ => {}
    }
    match next {
        State::Fulfilled if from != next => {
            events.push(Outgoing::event(&OrderFulfilled { order_id, store_id, amount_cents }));
        }
        State::Cancelled if from != next => {
            events.push(Outgoing::event(&OrderCancelled { order_id, store_id, reason: error.map(str::to_owned) }));
        }
        _ => {}
    }
    events
}

/// The customer's payment for the order was taken. Emitted once per order, in the transaction
/// that records the payment's approval; the order now waits for the picker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PaymentApproved {
    pub order_id: Uuid,
    pub store_id: Uuid,
    /// What the customer paid, at the prices the order was placed at.
    pub amount_cents: i64,
}

/// The payment for the order was declined: nothing was taken, and the order's reserved stock is
/// being released (an `order.cancelled` normally follows once it is). Emitted at most once per
/// order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    pub store_id: Uuid,
    /// The payment provider's reason.
    pub reason: String,
}

/// The picker handed the order over: the sale is complete and its goods left the store's stock.
/// Emitted once per order, when the store has recorded the hand-over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct OrderFulfilled {
    pub order_id: Uuid,
    pub store_id: Uuid,
    pub amount_cents: i64,
}

/// The order is cancelled: any payment was refunded or never taken, and its reserved stock is
/// available again. Emitted once per order, when the store confirms the release, whatever started
/// the cancellation (the customer, an operator, a declined payment, a failed hand-over, a pickup
/// window that ran out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub store_id: Uuid,
    /// `null` in this version: the release that ends a cancellation gives no reason, and why the
    /// cancellation began is in the saga's timeline. A later version may fill it in (a compatible
    /// change).
    pub reason: Option<String>,
}

/// The order's domain events: order.created, payment.approved, payment.declined,
/// order.fulfilled, order.cancelled.
pub const ORDER_EVENTS: EventExchange = EventExchange("order.events");

domain_event!(PaymentApproved, "payment.approved" on ORDER_EVENTS, correlated by order_id, example {
    PaymentApproved { order_id: example::ORDER, store_id: example::STORE, amount_cents: 598 }
});
domain_event!(PaymentDeclined, "payment.declined" on ORDER_EVENTS, correlated by order_id, example {
    PaymentDeclined {
        order_id: example::ORDER,
        store_id: example::STORE,
        reason: "the card was declined (simulated)".into()
    }
});
domain_event!(OrderFulfilled, "order.fulfilled" on ORDER_EVENTS, correlated by order_id, example {
    OrderFulfilled { order_id: example::ORDER, store_id: example::STORE, amount_cents: 598 }
});
domain_event!(OrderCancelled, "order.cancelled" on ORDER_EVENTS, correlated by order_id, example {
    OrderCancelled { order_id: example::ORDER, store_id: example::STORE, reason: None }
});

/// A customer placed an order: its items are reserved in the store, and its payment is being
/// taken. Emitted once per order, in the transaction that places it (a retry with the same
/// `Idempotency-Key` returns the first order and emits nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub store_id: Uuid,
    /// What was ordered, as the customer listed it.
    pub items: Vec<Line>,
}

domain_event!(OrderCreated, "order.created" on ORDER_EVENTS, correlated by order_id, example {
    let items = vec![Line { product_id: example::PRODUCT, quantity: 2 }];
    Self { order_id: example::ORDER, store_id: example::STORE, items }
});

#[cfg(test)]
mod tests {
    use platform::saga::table;

    use super::*;

    fn saga() -> (Uuid, Data) {
        let items = vec![Line { product_id: Uuid::new_v4(), quantity: 2 }];
        (Uuid::new_v4(), Data { store_id: Uuid::new_v4(), items, amount_cents: 500, handed_over: false })
    }

    /// One input of each kind, built for `order_id`.
    fn every_input(order_id: Uuid) -> Vec<InputOf<Fulfilment>> {
        vec![
            Input::Reply(Reply::PaymentApproved { order_id, amount_cents: 500 }),
            Input::Reply(Reply::PaymentDeclined { order_id, reason: "card expired".into() }),
            Input::Reply(Reply::PaymentRefunded { order_id, amount_cents: 500 }),
            Input::Person(Picker::HandedOver),
            Input::Reply(Reply::PickingFailed { order_id, reason: "not on the shelf".into() }),
            Input::Reply(Reply::HandOverRecorded { order_id }),
            Input::Reply(Reply::HandOverRefused { order_id, reason: "released".into() }),
            Input::Reply(Reply::ReservationReleased { order_id }),
            Input::Reply(Reply::ReleaseRefused { order_id, reason: "handed over".into() }),
            Input::GaveUp(GaveUp::Unanswered { attempts: 5 }),
            Input::GaveUp(GaveUp::Refused { command: "ChargePayment".into(), reason: "amount out of range".into() }),
            Input::Operator(Action::Compensate { reason: "the customer cancelled".into() }),
            Input::Operator(Action::Retry { reason: "operator".into() }),
            Input::Operator(Action::Resolve { note: "fixed by hand".into() }),
        ]
    }

    /// The whole table: for every state and input, the expected next state or a refusal.
    fn expected(state: State, input: &InputOf<Fulfilment>) -> Option<State> {
        use State::*;
        let event = input.name();
        match (state, event.as_str()) {
            (Reserved, "PaymentApproved") => Some(Charged),
            (Reserved, "PaymentDeclined") => Some(Releasing),
            (Reserved | Charged, "DeadlineExceeded" | "CommandRefused" | "CompensateRequested") => Some(Refunding),
            (Charged, "PickerHandedOver") => Some(HandingOver),
            (Charged, "PickingFailed") => Some(Refunding),
            (HandingOver, "HandOverRecorded") => Some(Fulfilled),
            (HandingOver, "HandOverRefused" | "DeadlineExceeded" | "CommandRefused") => Some(Failed),
            (Refunding, "PaymentRefunded") => Some(Releasing),
            (Releasing, "ReservationReleased") => Some(Cancelled),
            (Releasing, "ReleaseRefused") => Some(Failed),
            (Refunding | Releasing, "DeadlineExceeded" | "CommandRefused") => Some(Failed),
            (Reserved | Charged | HandingOver | Refunding | Releasing, "RetryRequested") => Some(state),
            (Failed, "RetryRequested") => Some(Refunding),
            (Failed, "Resolved") => Some(Resolved),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_input_pair_is_either_listed_or_refused() {
        let (order_id, data) = saga();
        let legal = table::check_table::<Fulfilment>(order_id, &data, &every_input(order_id), expected);
        assert_eq!(
            legal, 28,
            "the diagram, its deadlines, its refused commands and the operators' actions make 28 legal pairs"
        );
    }

    #[test]
    fn every_non_terminal_state_awaits_exactly_the_command_it_sent() {
        let (order_id, data) = saga();
        table::check_awaits_what_it_sent::<Fulfilment>(order_id, &data, &every_input(order_id));
    }

    #[test]
    fn a_paid_order_waits_on_the_picker_and_a_declined_one_only_releases() {
        let (order_id, data) = saga();
        let approved = Input::Reply(Reply::PaymentApproved { order_id, amount_cents: 500 });
        let step = Fulfilment::transition(order_id, State::Reserved, &data, &approved).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::ListForPicking { .. }]));
        assert_eq!(step.next.awaits(), Awaits::Person);
        assert_eq!(step.events[0].message_type, "payment.approved");
        let declined = Input::Reply(Reply::PaymentDeclined { order_id, reason: "card expired".into() });
        let step = Fulfilment::transition(order_id, State::Reserved, &data, &declined).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::ReleaseReservation { .. }]));
        assert_eq!(step.events[0].message_type, "payment.declined");
    }

    #[test]
    fn the_pickers_tap_has_the_store_record_the_hand_over_and_is_never_unwound() {
        let (order_id, data) = saga();
        let tap = Input::Person(Picker::HandedOver);
        let step = Fulfilment::transition(order_id, State::Charged, &data, &tap).unwrap();
        assert_eq!(step.next, State::HandingOver);
        assert!(matches!(step.commands.as_slice(), [Command::RecordHandOver { .. }]));
        assert!(step.data.handed_over, "the tap is remembered");
        assert_eq!(OrderStatus::from(step.next), OrderStatus::Fulfilled, "the customer has the goods");
        let cancel = Input::Operator(Action::Compensate { reason: "too late".into() });
        assert!(Fulfilment::transition(order_id, State::HandingOver, &step.data, &cancel).is_err());
        assert!(Fulfilment::transition(order_id, State::HandingOver, &step.data, &tap).is_err(), "one tap");
        // Given up, then taken up again: the record of the hand-over, not a refund.
        let lost = Input::GaveUp(GaveUp::Unanswered { attempts: 5 });
        let failed = Fulfilment::transition(order_id, State::HandingOver, &step.data, &lost).unwrap();
        let retry = Input::Operator(Action::Retry { reason: "the store is back".into() });
        let again = Fulfilment::transition(order_id, failed.next, &failed.data, &retry).unwrap();
        assert!(matches!(again.commands.as_slice(), [Command::RecordHandOver { .. }]));
        let recorded = Input::Reply(Reply::HandOverRecorded { order_id });
        let done = Fulfilment::transition(order_id, State::HandingOver, &step.data, &recorded).unwrap();
        assert_eq!(done.next, State::Fulfilled);
        assert_eq!(done.events[0].message_type, "order.fulfilled");
    }

    #[test]
    fn a_cancel_refunds_before_it_releases_and_ends_cancelled() {
        let (order_id, data) = saga();
        let cancel = Input::Operator(Action::Compensate { reason: "the customer cancelled".into() });
        let step = Fulfilment::transition(order_id, State::Charged, &data, &cancel).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::RefundPayment { .. }]));
        let refunded = Input::Reply(Reply::PaymentRefunded { order_id, amount_cents: 500 });
        let step = Fulfilment::transition(order_id, State::Refunding, &data, &refunded).unwrap();
        assert!(matches!(step.commands.as_slice(), [Command::ReleaseReservation { .. }]));
        let released = Input::Reply(Reply::ReservationReleased { order_id });
        let step = Fulfilment::transition(order_id, State::Releasing, &data, &released).unwrap();
        assert_eq!(step.next, State::Cancelled);
        assert_eq!(step.events[0].message_type, "order.cancelled");
        assert_eq!(OrderStatus::from(State::Refunding).as_ref(), "cancelling");
    }

    #[test]
    fn commands_go_to_the_participant_that_carries_them_out() {
        let (order_id, data) = saga();
        assert_eq!(Fulfilment::outstanding(order_id, State::Reserved, &data).unwrap().participant(), PAYMENT);
        assert_eq!(Fulfilment::outstanding(order_id, State::Charged, &data).unwrap().participant(), INVENTORY);
        assert_eq!(Fulfilment::outstanding(order_id, State::Releasing, &data).unwrap().saga_id(), order_id);
    }

    /// The events downstream teams bind to, and their exchanges: renaming one, or moving it, is a
    /// breaking change that must be made on purpose, here.
    #[test]
    fn its_events_are_the_published_contract() {
        assert_eq!(
            table::published_events::<Fulfilment>(),
            [
                ("order.created", "order.events"),
                ("payment.approved", "order.events"),
                ("payment.declined", "order.events"),
                ("order.fulfilled", "order.events"),
                ("order.cancelled", "order.events")
            ]
        );
    }
}
