//! Exchange and queue names, and their declaration at start-up.
//!
//! Every name carries the deployment's namespace as a prefix. All processes declare the whole
//! topology (declarations are idempotent), so no process depends on another having started first
//! and a command is never published to an exchange without its queue. The participants, and so
//! the command queues, are those the registered saga kinds declare.

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
        QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use std::sync::Arc;

/// A topic exchange of domain events, for downstream teams. The saga kind whose flow emits the
/// events names it (`order.events`); the deployment declares those its registered kinds use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventExchange(pub &'static str);

/// Logical exchanges; [`Topology::exchange`] gives the deployed name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exchange {
    /// Domain events, on the exchange their kind names.
    Events(EventExchange),
    /// Saga commands, routed by participant name to one queue per participant.
    Commands,
    /// Participants' replies, routed to the orchestrator's queue.
    Replies,
    /// Where every queue sends what it rejects.
    DeadLetter,
    /// Not an exchange of ours: the broker's default exchange, which delivers straight to the
    /// queue the routing key names (a logical queue name). A replayed dead letter goes back to the
    /// queue it died in this way.
    ToQueue,
}

impl Exchange {
    /// The saga engine's own exchanges, in every deployment whatever its kinds.
    pub const ENGINE: [Self; 3] = [Self::Commands, Self::Replies, Self::DeadLetter];

    /// The logical name, without the namespace: as the outbox stores it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Events(EventExchange(name)) => name,
            Self::Commands => "saga.commands",
            Self::Replies => "saga.replies",
            Self::DeadLetter => "dead-letter",
            Self::ToQueue => "queue",
        }
    }

    /// Saga traffic must reach a queue: it is published as mandatory and an unroutable message is
    /// an error. Domain events may have no subscriber yet.
    pub fn requires_route(self) -> bool {
        matches!(self, Self::Commands | Self::Replies | Self::ToQueue)
    }

    /// The AMQP type the exchange is declared with; `None` for the broker's default exchange,
    /// which is never declared.
    pub fn kind(self) -> Option<ExchangeType> {
        match self {
            Self::Events(_) => Some(ExchangeType::Topic),
            Self::Commands | Self::Replies => Some(ExchangeType::Direct),
            Self::DeadLetter => Some(ExchangeType::Fanout),
            Self::ToQueue => None,
        }
    }
}

impl AsRef<str> for Exchange {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

/// The AMQP exchange types in use, named as AMQP names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr)]
#[strum(serialize_all = "lowercase")]
pub enum ExchangeType {
    Topic,
    Direct,
    Fanout,
}

impl From<ExchangeType> for ExchangeKind {
    fn from(kind: ExchangeType) -> Self {
        match kind {
            ExchangeType::Topic => Self::Topic,
            ExchangeType::Direct => Self::Direct,
            ExchangeType::Fanout => Self::Fanout,
        }
    }
}

/// The value of a queue argument.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Argument {
    Text(String),
    Int(i32),
}

impl From<&Argument> for AMQPValue {
    fn from(argument: &Argument) -> Self {
        match argument {
            Argument::Text(text) => AMQPValue::LongString(LongString::from(text.as_str())),
            Argument::Int(int) => AMQPValue::LongInt(*int),
        }
    }
}

/// A worker that carries out saga commands, as a saga kind declares it: its name (its heartbeat
/// role and routing key) and its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Participant {
    pub name: &'static str,
    /// By convention `<name>.commands`.
    pub queue: &'static str,
}

/// Durable queues of the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// A participant's commands.
    Commands(Participant),
    /// Participants' replies, for the saga engine.
    Replies,
    DeadLetters,
}

/// Routing key of the replies exchange's single binding.
pub const REPLY_ROUTE: &str = "orchestrator";

/// The name the saga engine's inbox records the replies it handled under.
pub const ENGINE_INBOX: &str = "orchestrator";

/// Where the outbox's messages to one (exchange, routing key) are handled: the inbox that records
/// them. Exchanges are logical names, as the outbox stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub exchange: &'static str,
    pub routing_key: String,
    pub inbox: &'static str,
}

impl Queue {
    /// The logical name, without the namespace.
    pub fn name(self) -> &'static str {
        match self {
            Self::Commands(participant) => participant.queue,
            Self::Replies => "orchestrator.replies",
            Self::DeadLetters => "dead-letters",
        }
    }
}

impl std::fmt::Display for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A deployment's names.
#[derive(Clone, Debug)]
pub struct Topology {
    namespace: String,
    participants: Arc<[Participant]>,
    events: Arc<[EventExchange]>,
}

/// Why the queues were not purged.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("queue {queue} has {consumers} consumer(s): stop every process of the deployment first")]
    Consumed { queue: String, consumers: u32 },
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// Redeliveries before the broker itself dead-letters a message that keeps killing its consumer.
pub const DELIVERY_LIMIT: i32 = 20;

impl Topology {
    /// The names of a deployment whose saga kinds command `participants` and publish their
    /// events on `events`.
    pub fn new(namespace: impl Into<String>, participants: &[Participant], events: &[EventExchange]) -> Self {
        Self { namespace: namespace.into(), participants: participants.into(), events: events.into() }
    }

    /// Every exchange the deployment declares: the engine's, and its kinds' event exchanges.
    pub fn exchanges(&self) -> impl Iterator<Item = Exchange> + '_ {
        Exchange::ENGINE.into_iter().chain(self.events.iter().map(|e| Exchange::Events(*e)))
    }

    /// The exchange a logical name (as the outbox stores it) stands for, in this deployment.
    pub fn parse_exchange(&self, name: &str) -> Option<Exchange> {
        self.exchanges().chain([Exchange::ToQueue]).find(|e| e.name() == name)
    }

    pub fn participants(&self) -> &[Participant] {
        &self.participants
    }

    /// Every queue of the deployment.
    pub fn queues(&self) -> impl Iterator<Item = Queue> + '_ {
        self.participants.iter().map(|p| Queue::Commands(*p)).chain([Queue::Replies, Queue::DeadLetters])
    }

    /// The queue a logical name (`warehouse.commands`) stands for.
    pub fn parse_queue(&self, logical: &str) -> Option<Queue> {
        self.queues().find(|q| q.name() == logical)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn exchange(&self, exchange: Exchange) -> String {
        match exchange {
            Exchange::ToQueue => String::new(),
            _ => format!("{}.{}", self.namespace, exchange.name()),
        }
    }

    /// Where a message to `exchange` with `routing_key` is published: (exchange, routing key).
    pub fn route(&self, exchange: Exchange, routing_key: &str) -> (String, String) {
        match exchange {
            Exchange::ToQueue => (String::new(), format!("{}.{routing_key}", self.namespace)),
            _ => (self.exchange(exchange), routing_key.to_owned()),
        }
    }

    /// The logical name of one of this deployment's queues (`warehouse.commands`), from its
    /// deployed name; `None` for a queue of another namespace.
    pub fn logical_queue<'a>(&self, deployed: &'a str) -> Option<&'a str> {
        deployed.strip_prefix(self.namespace.as_str())?.strip_prefix('.')
    }

    pub fn queue(&self, queue: Queue) -> String {
        format!("{}.{}", self.namespace, queue.name())
    }

    /// The arguments `queue` is declared with: every queue is a quorum queue; a work queue sends
    /// what it rejects, and what was redelivered [`DELIVERY_LIMIT`] times, to the dead letters.
    pub fn arguments(&self, queue: Queue) -> Vec<(&'static str, Argument)> {
        let mut arguments = vec![("x-queue-type", Argument::Text("quorum".into()))];
        if queue != Queue::DeadLetters {
            arguments.push(("x-dead-letter-exchange", Argument::Text(self.exchange(Exchange::DeadLetter))));
            arguments.push(("x-delivery-limit", Argument::Int(DELIVERY_LIMIT)));
        }
        arguments
    }

    /// Every queue with the exchange it is bound to and the binding's routing key: each queue has
    /// exactly one binding.
    pub fn bindings(&self) -> impl Iterator<Item = (Queue, Exchange, &'static str)> + '_ {
        let participants = self.participants.iter().map(|p| (Queue::Commands(*p), Exchange::Commands, p.name));
        [(Queue::DeadLetters, Exchange::DeadLetter, "")].into_iter().chain(participants).chain([(
            Queue::Replies,
            Exchange::Replies,
            REPLY_ROUTE,
        )])
    }

    /// Every way the outbox reaches a consumer with an inbox: its queue's binding, and a message
    /// sent back to the queue itself (a replayed dead letter). A participant's worker records what
    /// it handled under the participant's name, the engine under [`ENGINE_INBOX`]; the dead
    /// letters have no inbox (the engine stores them as it takes them).
    pub fn routes(&self) -> Vec<Route> {
        let inbox = |queue: Queue| match queue {
            Queue::Commands(participant) => Some(participant.name),
            Queue::Replies => Some(ENGINE_INBOX),
            Queue::DeadLetters => None,
        };
        self.bindings()
            .filter_map(|(queue, exchange, route)| {
                let inbox = inbox(queue)?;
                Some([
                    Route { exchange: exchange.name(), routing_key: route.to_owned(), inbox },
                    Route { exchange: Exchange::ToQueue.name(), routing_key: queue.name().to_owned(), inbox },
                ])
            })
            .flatten()
            .collect()
    }

    /// Declares every exchange, queue and binding: all durable. Arguments never change between
    /// versions: RabbitMQ refuses to re-declare a queue with other arguments.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        for exchange in self.exchanges() {
            if let Some(kind) = exchange.kind() {
                let name = self.name(self.exchange(exchange));
                channel.exchange_declare(name, kind.into(), durable, FieldTable::default()).await?;
            }
        }
        let queue_options = QueueDeclareOptions { durable: true, ..Default::default() };
        for (queue, exchange, route) in self.bindings() {
            let mut arguments = FieldTable::default();
            for (key, value) in self.arguments(queue) {
                arguments.insert(key.into(), (&value).into());
            }
            channel.queue_declare(self.name(self.queue(queue)), queue_options, arguments).await?;
            self.bind(channel, queue, exchange, route).await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of the namespace: for tests, which each make their own.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.queues() {
            channel.queue_delete(self.name(self.queue(queue)), QueueDeleteOptions::default()).await?;
        }
        for exchange in self.exchanges() {
            channel.exchange_delete(self.name(self.exchange(exchange)), ExchangeDeleteOptions::default()).await?;
        }
        Ok(())
    }

    /// Empties every queue of the namespace; returns each queue's name and how many messages it
    /// held. Refuses, purging nothing, while any queue has a consumer: a running process would
    /// lose what it holds unacknowledged, and take what it should not.
    pub async fn purge(&self, channel: &Channel) -> Result<Vec<(String, u32)>, PurgeError> {
        let mut queues = Vec::new();
        for queue in self.queues() {
            let name = self.queue(queue);
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            let declared = channel.queue_declare(self.name(name.clone()), passive, FieldTable::default()).await?;
            if declared.consumer_count() > 0 {
                return Err(PurgeError::Consumed { queue: name, consumers: declared.consumer_count() });
            }
            queues.push(name);
        }
        let mut purged = Vec::new();
        for name in queues {
            let count = channel.queue_purge(self.name(name.clone()), QueuePurgeOptions::default()).await?;
            purged.push((name, count));
        }
        Ok(purged)
    }

    async fn bind(&self, channel: &Channel, queue: Queue, exchange: Exchange, route: &str) -> lapin::Result<()> {
        channel
            .queue_bind(
                self.name(self.queue(queue)),
                self.name(self.exchange(exchange)),
                route.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    fn name(&self, name: String) -> ShortString {
        // Names are namespace (≤ 64 bytes, checked in config) + a short fixed suffix: well under
        // AMQP's 255-byte limit, where ShortString would panic.
        ShortString::from(name)
    }
}
