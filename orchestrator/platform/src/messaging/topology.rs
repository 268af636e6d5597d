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
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use std::sync::Arc;

/// Logical exchanges; [`Topology::exchange`] gives the deployed name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::EnumString, strum::EnumIter)]
pub enum Exchange {
    /// Domain events for downstream teams: order.created, order.cancelled.
    #[strum(serialize = "order.events")]
    OrderEvents,
    /// stock.low, stock.replenished.
    #[strum(serialize = "inventory.events")]
    InventoryEvents,
    /// replenishment.created, shipment.dispatched, shipment.received, and replenishment.aborted
    /// when a replenishment ends compensated or failed.
    #[strum(serialize = "warehouse.events")]
    WarehouseEvents,
    /// Saga commands, routed by participant name to one queue per participant.
    #[strum(serialize = "saga.commands")]
    Commands,
    /// Participants' replies, routed to the orchestrator's queue.
    #[strum(serialize = "saga.replies")]
    Replies,
    /// Where every queue sends what it rejects.
    #[strum(serialize = "dead-letter")]
    DeadLetter,
    /// Not an exchange of ours: the broker's default exchange, which delivers straight to the
    /// queue the routing key names (a logical queue name). A replayed dead letter goes back to the
    /// queue it died in this way.
    #[strum(serialize = "queue")]
    ToQueue,
}

impl Exchange {
    /// Saga traffic must reach a queue: it is published as mandatory and an unroutable message is
    /// an error. Domain events may have no subscriber yet.
    pub fn requires_route(self) -> bool {
        matches!(self, Self::Commands | Self::Replies | Self::ToQueue)
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
}

/// Redeliveries before the broker itself dead-letters a message that keeps killing its consumer.
const DELIVERY_LIMIT: i32 = 20;

impl Topology {
    /// The names of a deployment whose saga kinds command `participants`.
    pub fn new(namespace: impl Into<String>, participants: &[Participant]) -> Self {
        Self { namespace: namespace.into(), participants: participants.into() }
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
            _ => format!("{}.{}", self.namespace, exchange.as_ref()),
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

    /// Declares every exchange, queue and binding. Arguments never change between versions:
    /// RabbitMQ refuses to re-declare a queue with other arguments.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        for exchange in [Exchange::OrderEvents, Exchange::InventoryEvents, Exchange::WarehouseEvents] {
            channel
                .exchange_declare(
                    self.name(self.exchange(exchange)),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for exchange in [Exchange::Commands, Exchange::Replies] {
            channel
                .exchange_declare(
                    self.name(self.exchange(exchange)),
                    ExchangeKind::Direct,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .exchange_declare(
                self.name(self.exchange(Exchange::DeadLetter)),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;

        let queue_options = QueueDeclareOptions { durable: true, ..Default::default() };
        let mut dead_letters = FieldTable::default();
        dead_letters.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
        channel.queue_declare(self.name(self.queue(Queue::DeadLetters)), queue_options, dead_letters).await?;
        self.bind(channel, Queue::DeadLetters, Exchange::DeadLetter, "").await?;

        let mut work = FieldTable::default();
        work.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
        work.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.exchange(Exchange::DeadLetter).as_str())),
        );
        work.insert("x-delivery-limit".into(), AMQPValue::LongInt(DELIVERY_LIMIT));
        let participants = self.participants.iter().map(|p| (Queue::Commands(*p), Exchange::Commands, p.name));
        for (queue, exchange, route) in participants.chain([(Queue::Replies, Exchange::Replies, REPLY_ROUTE)]) {
            channel.queue_declare(self.name(self.queue(queue)), queue_options, work.clone()).await?;
            self.bind(channel, queue, exchange, route).await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of the namespace: for tests, which each make their own.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.queues() {
            channel.queue_delete(self.name(self.queue(queue)), QueueDeleteOptions::default()).await?;
        }
        for exchange in <Exchange as strum::IntoEnumIterator>::iter().filter(|e| *e != Exchange::ToQueue) {
            channel.exchange_delete(self.name(self.exchange(exchange)), ExchangeDeleteOptions::default()).await?;
        }
        Ok(())
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
