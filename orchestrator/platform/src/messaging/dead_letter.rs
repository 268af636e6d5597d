//! Dead letters: how a message that cannot be handled leaves its queue with the reason attached.
//! (The orchestrator keeps what arrives in the dead-letter queue, for operators.)
//!
//! Two ways lead to the dead-letter queue:
//! - a consumer that finds a message poison, or out of retries, hands it to a [`Rejecter`], which
//!   publishes it to the dead-letter exchange with the reason and origin in headers and only then
//!   acknowledges it (a plain reject would lose the reason);
//! - the broker itself dead-letters a message redelivered past its queue's delivery limit, or one a
//!   consumer could not republish; its `x-death` header says where and why.

use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, LongString},
};

use super::{Exchange, Queue, Topology};

/// Why the message was dead-lettered, set by a [`Rejecter`].
pub const REASON_HEADER: &str = "x-dead-letter-reason";
/// The queue the message was rejected from.
pub const QUEUE_HEADER: &str = "x-dead-letter-queue";
pub const EXCHANGE_HEADER: &str = "x-dead-letter-original-exchange";
pub const ROUTING_KEY_HEADER: &str = "x-dead-letter-original-routing-key";
/// `true` when the consumer found the message one that can never be handled (malformed, or
/// breaking a rule), `false` when it only ran out of retries.
pub const PERMANENT_HEADER: &str = "x-dead-letter-permanent";

/// Sends a consumer's rejected deliveries to the dead-letter exchange, reason attached.
#[derive(Clone)]
pub struct Rejecter {
    channel: Channel,
    exchange: String,
    queue: String,
}

impl Rejecter {
    /// A confirming channel on the consumer's connection.
    pub async fn open(connection: &Connection, topology: &Topology, queue: Queue) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel, exchange: topology.exchange(Exchange::DeadLetter), queue: topology.queue(queue) })
    }

    /// Dead-letters `delivery`: republished with `reason` and whether it is `permanent` (and
    /// confirmed), then acknowledged. If the
    /// republish fails, the delivery is rejected without requeue and the broker dead-letters it
    /// without the reason. A crash between the two leaves the delivery to be redelivered and
    /// rejected again; the store keeps one dead letter per (queue, message id) until it is replayed.
    pub async fn reject(&self, delivery: &Delivery, reason: &str, permanent: bool) {
        metrics::counter!("messages_dead_lettered_total", "queue" => self.logical_queue()).increment(1);
        tracing::error!(reason, permanent, "message dead-lettered");
        match self.republish(delivery, reason, permanent).await {
            Ok(()) => {
                if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(%error, "ack after dead-lettering failed; the redelivery is rejected again");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not republish to the dead letters; rejecting without the reason");
                let options = BasicNackOptions { requeue: false, ..Default::default() };
                if let Err(error) = delivery.nack(options).await {
                    tracing::warn!(%error, "nack failed; the broker will redeliver");
                }
            }
        }
    }

    fn logical_queue(&self) -> String {
        self.queue.split_once('.').map_or(self.queue.as_str(), |(_, logical)| logical).to_owned()
    }

    async fn republish(&self, delivery: &Delivery, reason: &str, permanent: bool) -> lapin::Result<()> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let mut set = |key: &str, value: &str| {
            headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
        };
        set(REASON_HEADER, reason);
        set(QUEUE_HEADER, &self.queue);
        set(EXCHANGE_HEADER, delivery.exchange.as_str());
        set(ROUTING_KEY_HEADER, delivery.routing_key.as_str());
        set(PERMANENT_HEADER, if permanent { "true" } else { "false" });
        let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Nack(_) => {
                Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Error)))
            }
            _ => Ok(()),
        }
    }
}
