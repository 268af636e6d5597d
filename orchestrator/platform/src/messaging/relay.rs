//! The outbox relay: publishes pending outbox messages in batches, and commits their removal
//! from the pending list only once the broker has confirmed every one.
//!
//! It is woken by its process's [`OutboxSignal`] after each commit that wrote the outbox, and
//! polls besides, for rows that a process which died before publishing left behind. A crash between
//! publish and commit publishes the batch again: consumers' inboxes make that harmless. Several
//! relays may run at once; `FOR UPDATE SKIP LOCKED` gives each its own rows.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    Exchange, Queue, Topology, connect,
    outbox::{self, OutboxSignal},
};
use crate::{
    protocol::Envelope,
    shutdown::Shutdown,
    trace::{self, TraceContext},
};

/// Rows published per transaction: enough to amortise the confirm round trip.
const BATCH: i64 = 500;
/// Fallback poll, for rows written by processes that died before their relay published them.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("message {0} has no route: is the topology declared?")]
    Unroutable(Uuid),
    #[error("broker refused message {0}")]
    Nacked(Uuid),
    #[error("outbox row {0} names an unknown exchange")]
    UnknownExchange(i64),
}

/// Fault injection, for the tests that prove the system survives the network's usual tricks.
/// Production runs with the default: no faults.
#[derive(Clone, Debug, Default)]
pub struct RelayFaults {
    /// Publish every message twice (a duplicate delivery).
    pub publish_twice: bool,
    /// Replies still to be lost: taken off the pending list without being sent, like a reply
    /// lost in transit after the participant committed.
    pub lose_replies: Arc<AtomicU32>,
    /// Only replies of these types are lost, when set (one saga kind's, say).
    pub lose_only: Option<&'static [&'static str]>,
}

impl RelayFaults {
    fn lose(&self, exchange: Exchange, message_type: &str) -> bool {
        exchange == Exchange::Replies
            && self.lose_only.is_none_or(|types| types.contains(&message_type))
            && self.lose_replies.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[derive(Clone, Debug)]
pub struct Relay {
    pub pool: PgPool,
    pub topology: Topology,
    pub amqp_url: Arc<str>,
    pub faults: RelayFaults,
    pub signal: OutboxSignal,
}

impl Relay {
    /// Runs until shutdown, reconnecting to the broker and the database as needed.
    pub async fn run(self, shutdown: Shutdown) {
        super::supervise("outbox-relay", shutdown, |shutdown| self.session(shutdown)).await;
    }

    async fn session(&self, mut shutdown: Shutdown) -> Result<(), RelayError> {
        let connection = connect(&self.amqp_url, "outbox-relay").await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        loop {
            let published = self.publish_batch(&channel).await?;
            if published as i64 == BATCH {
                continue;
            }
            tokio::select! {
                _ = shutdown.wait() => {
                    super::close(&connection, "shutting down").await;
                    return Ok(());
                }
                _ = self.signal.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Publishes up to [`BATCH`] pending messages and, once all are confirmed, commits them as
    /// published; returns how many.
    pub async fn publish_batch(&self, channel: &Channel) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = outbox::claim(&mut tx, BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let copies = if self.faults.publish_twice { 2 } else { 1 };
        let mut confirms = Vec::with_capacity(rows.len() * copies);
        for row in &rows {
            let envelope = &row.envelope;
            let exchange = self.topology.parse_exchange(&row.exchange).ok_or(RelayError::UnknownExchange(row.id))?;
            if self.faults.lose(exchange, &envelope.message_type) {
                tracing::warn!(message_id = %envelope.message_id, "fault injection: reply lost");
                continue;
            }
            let body = row.raw.clone().unwrap_or_else(|| envelope.encode());
            let properties = properties(envelope);
            let options = BasicPublishOptions { mandatory: exchange.requires_route(), ..Default::default() };
            let (exchange_name, routing_key) = self.topology.route(exchange, &row.routing_key);
            for _ in 0..copies {
                let confirm = channel
                    .basic_publish(
                        exchange_name.as_str().into(),
                        routing_key.as_str().into(),
                        options,
                        &body,
                        properties.clone(),
                    )
                    .await?;
                confirms.push((envelope.message_id, confirm));
            }
        }
        for (message_id, confirm) in confirms {
            match confirm.await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_returned)) => return Err(RelayError::Unroutable(message_id)),
                Confirmation::Nack(_) => return Err(RelayError::Nacked(message_id)),
            }
        }
        tx.commit().await?;
        for row in &rows {
            if let Some(exchange) = self.topology.parse_exchange(&row.exchange) {
                metrics::counter!("messages_published_total", "queue" => destination(exchange, &row.routing_key))
                    .increment(1);
            }
        }
        Ok(rows.len())
    }
}

/// The metrics label of a message's destination: the logical queue for saga traffic (a command's
/// routing key is its participant), the exchange for domain events.
fn destination(exchange: Exchange, routing_key: &str) -> String {
    match exchange {
        Exchange::Commands => format!("{routing_key}.commands"),
        Exchange::Replies => Queue::Replies.name().to_owned(),
        Exchange::ToQueue => routing_key.to_owned(),
        other => other.as_ref().to_owned(),
    }
}

/// The header that repeats the envelope's version, so that a consumer can route or refuse a
/// message without parsing its body.
pub const VERSION_HEADER: &str = "x-version";

/// AMQP properties: persistent, JSON, with the ids consumers and tracing tools look for. The
/// published contract (the orchestrator's `asyncapi`) documents exactly these.
fn properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(trace::HEADER.into(), AMQPValue::LongString(LongString::from(traceparent(envelope))));
    headers.insert(VERSION_HEADER.into(), AMQPValue::LongInt(i32::try_from(envelope.version).unwrap_or(i32::MAX)));
    let mut properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(envelope.message_id.to_string()))
        .with_type(ShortString::from(envelope.message_type.as_str()))
        .with_timestamp(u64::try_from(envelope.sent_at.timestamp()).unwrap_or_default())
        .with_headers(headers);
    if let Some(correlation_id) = envelope.correlation_id {
        properties = properties.with_correlation_id(ShortString::from(correlation_id.to_string()));
    }
    properties
}

/// W3C trace context: the one the message was written in, else one derived from its saga (or its
/// own) id, so that every message of a saga still shares one trace.
fn traceparent(envelope: &Envelope) -> String {
    let trace =
        envelope.trace.unwrap_or_else(|| TraceContext::derived(envelope.correlation_id.unwrap_or(envelope.message_id)));
    trace.header()
}
