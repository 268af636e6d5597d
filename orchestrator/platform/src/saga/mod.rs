//! The saga engine, generic over saga kinds (docs/design.md §3.2).
//!
//! A kind ([`SagaKind`]) supplies its states, the replies it understands, its data, and one pure
//! transition function. The [`engine`] does everything else, the same way for every kind: it
//! applies a transition in one transaction (lock the saga row, check the inbox, write the new
//! state fenced by version, the transition row and the outgoing commands), resends an outstanding
//! command when its deadline passes, and feeds [`Input::GaveUp`] to the kind when the attempts
//! run out, or when a participant refuses the command as one that can never succeed. A kind also declares its commands, its replies and the participants that carry its
//! commands out: the broker topology and the processes' roles follow from the kinds registered in
//! a [`registry::Registry`]. A new kind is new code beside the others; the engine does not change.

pub mod engine;
pub mod registry;
pub mod runner;
pub mod store;
pub mod table;

use std::{fmt::Debug, future::Future, str::FromStr};

use crate::{
    config::SagaTiming,
    contract::Event,
    messaging::{Participant, outbox::Outgoing},
    protocol::{CommandFamily, MessageFamily, ReplyFamily},
};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::PgConnection;
use strum::IntoEnumIterator;
use uuid::Uuid;

/// What can happen to a saga: `R` are its participants' replies, `P` the answers of the people
/// it waits on.
#[derive(Clone, Debug, PartialEq)]
pub enum Input<R, P = Nobody> {
    /// A participant answered.
    Reply(R),
    /// A person the saga waits on answered (a picker's tap), through the API: the timeline names
    /// who, as it does for an operator.
    Person(P),
    /// The engine gave up on the outstanding command: the step cannot be carried out.
    GaveUp(GaveUp),
    /// An operator asked for something.
    Operator(Action),
}

/// Why the engine gave up on a step's command. A kind treats both alike (the step failed), and
/// its message to operators says which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// It went unanswered through every resend: its outcome is unknown, so the undo must be
    /// safe whether or not it ran.
    Unanswered { attempts: i32 },
    /// Its participant refused it as a command that can never succeed (it was dead-lettered as
    /// such): sending it again would only be refused again.
    Refused { command: String, reason: String },
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unanswered { attempts } => write!(f, "no answer after {attempts} attempts"),
            Self::Refused { command, reason } => {
                write!(f, "{command} was refused as one that can never succeed: {reason}")
            }
        }
    }
}

/// What an operator can ask of any saga, whatever its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the current step again now, with its attempts reset (or, for a kind that allows it,
    /// take up a failed step again).
    Retry { reason: String },
    /// Unwind now.
    Compensate { reason: String },
    /// Close a failed saga whose leftovers were fixed by hand.
    Resolve { note: String },
}

/// What a person can answer a saga that waits on them, as its kind declares it: a typed input,
/// like an operator's action, never a reply made up on a participant's behalf.
pub trait PersonAnswer: Clone + Debug + PartialEq + Send + Sync + 'static {
    /// The answer's name in the timeline.
    fn name(&self) -> &'static str;
}

/// The people of a kind that waits on none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nobody {}

impl PersonAnswer for Nobody {
    fn name(&self) -> &'static str {
        match *self {}
    }
}

/// The input type of kind `K`.
pub type InputOf<K> = Input<<K as SagaKind>::Reply, <K as SagaKind>::Person>;

impl<R: MessageFamily, P: PersonAnswer> Input<R, P> {
    /// The event's name in the timeline.
    pub fn name(&self) -> String {
        match self {
            Self::Reply(reply) => reply.to_parts().0.to_owned(),
            Self::Person(answer) => answer.name().to_owned(),
            Self::GaveUp(GaveUp::Unanswered { .. }) => "DeadlineExceeded".into(),
            Self::GaveUp(GaveUp::Refused { .. }) => "CommandRefused".into(),
            Self::Operator(Action::Compensate { .. }) => "CompensateRequested".into(),
            Self::Operator(Action::Retry { .. }) => "RetryRequested".into(),
            Self::Operator(Action::Resolve { .. }) => "Resolved".into(),
        }
    }
}

/// Who moved a saga, as its timeline names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor<'a> {
    /// The engine itself: a resend, a step given up, a saga set aside.
    Engine,
    /// A participant's reply.
    Participant,
    /// One of a kind's rules, by name (`low-stock`).
    Rule(&'static str),
    /// A caller of the API, as `<role>:<key name>`.
    Caller(&'a str),
}

impl Actor<'_> {
    /// As stored in the timeline.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Engine => "engine",
            Self::Participant => "participant",
            Self::Rule(name) => name,
            Self::Caller(caller) => caller,
        }
    }

    /// For a metric's label: a caller by role only, so keys do not multiply the series.
    pub fn label(&self) -> &str {
        match self {
            Self::Caller(caller) => caller.split_once(':').map_or(*caller, |(role, _)| role),
            other => other.as_str(),
        }
    }
}

/// The result of a legal transition.
#[derive(Clone, Debug, PartialEq)]
pub struct Step<S, D, C> {
    pub next: S,
    pub data: D,
    /// Commands to send; an empty list means nothing is awaited (no deadline).
    pub commands: Vec<C>,
    /// Domain events for downstream teams.
    pub events: Vec<Outgoing>,
    /// Why the saga is unwinding or failed, shown to operators.
    pub error: Option<String>,
}

/// The step type of kind `K`.
pub type StepOf<K> = Step<<K as SagaKind>::State, <K as SagaKind>::Data, <K as SagaKind>::Command>;

/// A pair (state, input) the kind does not list: recorded in the timeline, never applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no transition from {state} on {event}")]
pub struct Refused {
    pub state: String,
    pub event: String,
}

/// What a saga waits on in a state, as its kind declares it. The engine stores it with the saga
/// (`saga.awaits`): the deadlines, the stuck list, the operators' views and retention read it,
/// never a kind's state names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Awaits {
    /// A participant's answer to the command it was sent; each resend doubles the deadline.
    Participant,
    /// A person's answer (a picker's) to the command it was sent; the deadline does not double.
    Person,
    /// An operator: nothing moves the saga until one acts. It counts as stuck, and is kept.
    Operator,
    /// Nothing: the saga is done.
    Nothing,
}

impl Awaits {
    /// No command is outstanding, and none will be unless an operator steps in.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Operator | Self::Nothing)
    }
}

/// The states of a kind: a strum enum stored as text. The states can be listed, so that a gauge
/// reports every one of them, at zero when no saga is in it.
pub trait SagaState:
    Copy + Eq + Debug + AsRef<str> + Into<&'static str> + FromStr + IntoEnumIterator + Send + Sync + 'static
{
    /// What a saga in this state waits on.
    fn awaits(self) -> Awaits;
}

/// What a saga concerns, for the lists that find sagas by store and product: a store (none for
/// the warehouse's own sagas) and the products.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Concerns {
    pub store: Option<Uuid>,
    pub products: Vec<Uuid>,
}

/// A rule about a kind's own rows that holds whatever happened: any crash, redelivery or race.
/// Tests check every registered kind's after each run.
#[derive(Clone, Copy, Debug)]
pub struct Invariant {
    /// The rule, in words.
    pub rule: &'static str,
    /// A query that returns one text (a saga or a row) for each breach of the rule: no row when
    /// the rule holds.
    pub breaches: &'static str,
}

/// One kind of saga.
pub trait SagaKind: Send + Sync + 'static {
    /// Stored in `saga.kind`.
    const KIND: &'static str;
    type State: SagaState;
    type Command: CommandFamily + Clone + Debug + PartialEq + Send + Sync;
    type Reply: ReplyFamily + Debug + Send + Sync;
    type Data: Serialize + DeserializeOwned + Clone + Debug + Send + Sync;
    /// What the people it waits on (in the states that await [`Awaits::Person`]) can answer;
    /// [`Nobody`] for a kind that waits on none.
    type Person: PersonAnswer;
    /// Every participant the kind's commands go to: each gets a queue.
    const PARTICIPANTS: &'static [Participant];
    /// The domain events the kind's flow emits, its rules' and its participants': their exchanges
    /// are declared, and the published contract lists them.
    const EVENTS: &'static [Event];
    /// The rules its own rows keep.
    const INVARIANTS: &'static [Invariant] = &[];

    /// The one transition function: `(state, input) → (next state, commands)`. Pure.
    fn transition(
        saga_id: Uuid,
        state: Self::State,
        data: &Self::Data,
        input: &InputOf<Self>,
    ) -> Result<StepOf<Self>, Refused>;

    /// The command a state waits on, which the engine sends again when its deadline passes.
    fn outstanding(saga_id: Uuid, state: Self::State, data: &Self::Data) -> Option<Self::Command>;

    /// The store and products a saga with `data` concerns.
    fn concerns(data: &Self::Data) -> Concerns;

    /// What a violated constraint of the kind's own tables means to whoever asked, when an input
    /// meets it (taking up a failed saga again can meet a one-open rule, say); `None` for one the
    /// kind does not know.
    fn conflict(_constraint: &str) -> Option<&'static str> {
        None
    }

    /// After each applied transition, in its transaction: keeps the kind's own rows in step (the
    /// `replenishment` row, say) and applies the kind's rules that follow from the new state.
    /// Not called at [`engine::start`]: whoever starts a saga writes the kind's rows itself.
    fn after_transition(
        tx: &mut PgConnection,
        timing: &SagaTiming,
        saga_id: Uuid,
        state: Self::State,
        data: &Self::Data,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}
