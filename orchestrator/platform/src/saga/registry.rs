//! The saga kinds the engine knows, looked up by the `kind` stored with each saga.
//!
//! The engine's functions are generic over [`SagaKind`]; this registry erases the type so that a
//! reply or a deadline, which arrives knowing only a saga id, reaches the right kind's code.

use std::{collections::HashMap, future::Future, marker::PhantomData, pin::Pin};

use crate::{
    config::SagaTiming,
    contract::{self, Event, MessageContract, Role},
    messaging::{EventExchange, Participant, Topology, outbox::Outgoing},
    protocol::{DecodeError, Envelope, MessageFamily},
};
use serde_json::Value;
use sqlx::PgConnection;
use strum::IntoEnumIterator;
use uuid::Uuid;

use super::{
    Action, Actor, Input, Invariant, SagaKind,
    engine::{self, Applied, EngineError},
    store::SagaRow,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One kind's engine entry points, without its types.
pub trait Driver: Send + Sync {
    fn on_reply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        message: &'a Envelope,
        out: &'a mut Vec<Outgoing>,
    ) -> BoxFuture<'a, Result<Applied, EngineError>>;

    fn on_deadline<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        held: bool,
        out: &'a mut Vec<Outgoing>,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// A participant refused `command` of a locked saga as one that can never succeed; see
    /// [`engine::on_refused`].
    fn on_refused<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        command: &'a str,
        reason: &'a str,
        out: &'a mut Vec<Outgoing>,
    ) -> BoxFuture<'a, Result<bool, EngineError>>;

    /// Applies an operator's action to a locked saga, as `actor`.
    fn act<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        action: Action,
        actor: Actor<'a>,
    ) -> BoxFuture<'a, Result<Applied, EngineError>>;

    /// The command a saga in `state` with `data` waits on, if any, as it would be sent.
    fn outstanding(&self, id: Uuid, state: &str, data: &Value) -> Result<Option<Outgoing>, EngineError>;

    /// Every state of the kind, as stored.
    fn states(&self) -> Vec<&'static str>;

    /// The kind's commands, then its replies, as the published contract documents them.
    fn messages(&self, generator: &mut schemars::SchemaGenerator) -> Vec<MessageContract>;

    /// The type names of its commands or of its replies (`role` is never an event).
    fn message_types(&self, role: Role) -> &'static [&'static str];

    /// A command or a reply of this kind read as its consumer reads it; its body, as sent.
    fn decode(&self, message: &Envelope) -> Result<Value, DecodeError>;

    /// The domain events of the kind's flow.
    fn events(&self) -> &'static [Event];

    /// What a violated constraint of the kind's tables means; see [`SagaKind::conflict`].
    fn conflict(&self, constraint: &str) -> Option<&'static str>;

    fn invariants(&self) -> &'static [Invariant];
}

struct Kind<K>(PhantomData<fn() -> K>);

impl<K: SagaKind> Driver for Kind<K> {
    fn on_reply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        message: &'a Envelope,
        out: &'a mut Vec<Outgoing>,
    ) -> BoxFuture<'a, Result<Applied, EngineError>> {
        Box::pin(async move {
            let reply: K::Reply = message.body()?;
            engine::decide::<K>(tx, timing, row, &Input::Reply(reply), Actor::Participant, out).await
        })
    }

    fn on_deadline<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        held: bool,
        out: &'a mut Vec<Outgoing>,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(engine::on_deadline::<K>(tx, timing, row, held, out))
    }

    fn on_refused<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        command: &'a str,
        reason: &'a str,
        out: &'a mut Vec<Outgoing>,
    ) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(engine::on_refused::<K>(tx, timing, row, command, reason, out))
    }

    fn act<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        timing: &'a SagaTiming,
        row: &'a SagaRow,
        action: Action,
        actor: Actor<'a>,
    ) -> BoxFuture<'a, Result<Applied, EngineError>> {
        Box::pin(async move { engine::apply::<K>(tx, timing, row, &Input::Operator(action), actor).await })
    }

    fn outstanding(&self, id: Uuid, state: &str, data: &Value) -> Result<Option<Outgoing>, EngineError> {
        let (state, data) = engine::parse_parts::<K>(id, state, data)?;
        Ok(K::outstanding(id, state, &data).map(|command| Outgoing::command(&command)))
    }

    fn states(&self) -> Vec<&'static str> {
        K::State::iter().map(Into::into).collect()
    }

    fn messages(&self, generator: &mut schemars::SchemaGenerator) -> Vec<MessageContract> {
        let mut messages = contract::family::<K::Command>(generator, K::KIND, Role::Command, Outgoing::command);
        messages.extend(contract::family::<K::Reply>(generator, K::KIND, Role::Reply, Outgoing::reply));
        messages
    }

    fn message_types(&self, role: Role) -> &'static [&'static str] {
        match role {
            Role::Command => K::Command::TYPES,
            Role::Reply => K::Reply::TYPES,
            Role::Event => &[],
        }
    }

    fn decode(&self, message: &Envelope) -> Result<Value, DecodeError> {
        if K::Command::TYPES.contains(&message.message_type.as_str()) {
            Ok(message.body::<K::Command>()?.to_parts().1)
        } else {
            Ok(message.body::<K::Reply>()?.to_parts().1)
        }
    }

    fn events(&self) -> &'static [Event] {
        K::EVENTS
    }

    fn conflict(&self, constraint: &str) -> Option<&'static str> {
        K::conflict(constraint)
    }

    fn invariants(&self) -> &'static [Invariant] {
        K::INVARIANTS
    }
}

/// The kinds a build drives, and the participants they command.
pub struct Registry {
    kinds: HashMap<&'static str, Box<dyn Driver>>,
    participants: Vec<Participant>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    pub fn empty() -> Self {
        Self { kinds: HashMap::new(), participants: Vec::new() }
    }

    pub fn with<K: SagaKind>(mut self) -> Self {
        self.kinds.insert(K::KIND, Box::new(Kind::<K>(PhantomData)));
        for participant in K::PARTICIPANTS {
            if !self.participants.contains(participant) {
                self.participants.push(*participant);
            }
        }
        self
    }

    /// The kinds' names, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = self.kinds.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }

    /// Each kind's name with every state it has, kinds sorted: the bounded label values of the
    /// saga metrics.
    pub fn kinds_and_states(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        self.kinds().into_iter().map(|kind| (kind, self.kinds[kind].states())).collect()
    }

    /// Every participant of the registered kinds, in the order the kinds declare them.
    pub fn participants(&self) -> &[Participant] {
        &self.participants
    }

    /// The domain events of every registered kind, each once, by name.
    pub fn events(&self) -> Vec<Event> {
        let mut events: Vec<Event> =
            self.kinds().into_iter().flat_map(|kind| self.kinds[kind].events()).copied().collect();
        events.sort_by_key(|event| event.name);
        events.dedup_by_key(|event| event.name);
        events
    }

    /// The exchanges those events are published on, each once.
    pub fn event_exchanges(&self) -> Vec<EventExchange> {
        let mut exchanges: Vec<EventExchange> = self.events().iter().map(|event| event.exchange).collect();
        exchanges.sort();
        exchanges.dedup();
        exchanges
    }

    /// The names of a deployment of these kinds, under `namespace`.
    pub fn topology(&self, namespace: impl Into<String>) -> Topology {
        Topology::new(namespace, &self.participants, &self.event_exchanges())
    }

    /// Every registered kind's invariants, with its name.
    pub fn invariants(&self) -> Vec<(&'static str, Invariant)> {
        self.kinds()
            .into_iter()
            .flat_map(|kind| self.kinds[kind].invariants().iter().map(move |rule| (kind, *rule)))
            .collect()
    }

    pub fn driver(&self, kind: &str) -> Result<&dyn Driver, EngineError> {
        self.kinds.get(kind).map(|d| &**d).ok_or_else(|| EngineError::UnknownKind(kind.to_owned()))
    }
}
