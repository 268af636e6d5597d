//! The transactional outbox: messages are rows written with the state change that causes them,
//! and reach the broker only after that change commits (the [`relay`](super::relay) publishes).

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Exchange, topology::REPLY_ROUTE};
use crate::protocol::{Command, MessageFamily, Reply};

/// A message waiting to be written to the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub message_id: Uuid,
    pub exchange: Exchange,
    pub routing_key: String,
    pub message_type: String,
    pub correlation_id: Option<Uuid>,
    pub payload: Value,
}

impl Outgoing {
    /// A saga command, routed to the participant that executes it. Each send gets a fresh message
    /// id: a resend after a deadline is a new message, so the participant answers it again even
    /// though its inbox holds the first one.
    pub fn command(command: &Command) -> Self {
        let (name, payload) = command.into_parts();
        Self {
            message_id: Uuid::new_v4(),
            exchange: Exchange::Commands,
            routing_key: command.participant().to_string(),
            message_type: name.into(),
            correlation_id: Some(command.saga_id()),
            payload,
        }
    }

    pub fn reply(reply: &Reply) -> Self {
        let (name, payload) = reply.into_parts();
        Self {
            message_id: Uuid::new_v4(),
            exchange: Exchange::Replies,
            routing_key: REPLY_ROUTE.into(),
            message_type: name.into(),
            correlation_id: Some(reply.saga_id()),
            payload,
        }
    }

    /// A domain event; its name is also its routing key (`stock.low`, `order.created`, …).
    pub fn event(exchange: Exchange, name: &str, correlation_id: Option<Uuid>, payload: Value) -> Self {
        Self {
            message_id: Uuid::new_v4(),
            exchange,
            routing_key: name.into(),
            message_type: name.into(),
            correlation_id,
            payload,
        }
    }
}

/// Writes messages to the outbox in the caller's transaction, in one statement.
pub async fn enqueue(conn: &mut PgConnection, messages: &[Outgoing]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(messages.len());
    let mut exchanges = Vec::with_capacity(messages.len());
    let mut routes = Vec::with_capacity(messages.len());
    let mut types = Vec::with_capacity(messages.len());
    let mut correlations = Vec::with_capacity(messages.len());
    let mut bodies = Vec::with_capacity(messages.len());
    for m in messages {
        ids.push(m.message_id);
        exchanges.push(m.exchange.as_ref().to_owned());
        routes.push(m.routing_key.clone());
        types.push(m.message_type.clone());
        correlations.push(m.correlation_id);
        bodies.push(m.payload.clone());
    }
    sqlx::query!(
        "INSERT INTO outbox (message_id, exchange, routing_key, message_type, correlation_id, body)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::jsonb[])",
        &ids,
        &exchanges,
        &routes,
        &types,
        &correlations as &[Option<Uuid>],
        &bodies,
    )
    .execute(conn)
    .await?;
    Ok(())
}
