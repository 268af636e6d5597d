//! The transactional outbox: messages are rows written with the state change that causes them,
//! and reach the broker only after that change commits (the [`relay`](super::relay) publishes).
//!
//! A message is an `outbox` row, written once and never updated, and while the broker has not
//! confirmed it, an `outbox_pending` row with its id: the relay's work list. Publishing deletes
//! the pending row, which costs a few bytes of WAL where updating the message row would rewrite
//! it whole, with an entry in each of its indexes.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Exchange,
    topology::{REPLY_ROUTE, Route},
};
use crate::{
    protocol::{CommandFamily, DomainEvent, Envelope, PROTOCOL_VERSION, ReplyFamily},
    trace::{self, TraceContext},
};

/// Wakes this process's relay after a commit that wrote outbox rows.
///
/// Every process that writes to the outbox runs a relay, so an in-process signal reaches the
/// relay that should publish; rows left by a process that died are found by the relay's
/// fallback poll. (Postgres `NOTIFY` would do the same across processes, but it takes a
/// database-wide lock at commit and serialized every writer.)
#[derive(Clone, Debug, Default)]
pub struct OutboxSignal(Arc<tokio::sync::Notify>);

impl OutboxSignal {
    /// Call after commit. A signal sent while the relay is busy is kept for its next wait.
    pub fn notify(&self) {
        self.0.notify_one();
    }

    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

/// A message waiting to be written to the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub message_id: Uuid,
    pub exchange: Exchange,
    pub routing_key: String,
    pub message_type: String,
    pub correlation_id: Option<Uuid>,
    pub payload: Value,
    /// The trace the message belongs to; without one, the trace of the work in hand
    /// ([`trace::current`]) when it is written.
    pub trace: Option<TraceContext>,
}

impl Outgoing {
    /// Puts the message in `trace` (a saga's own trace, say) rather than the current one.
    #[must_use]
    pub fn in_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// A saga command, routed to the participant that executes it. Each send gets a fresh message
    /// id: a resend after a deadline is a new message, so the participant answers it again even
    /// though its inbox holds the first one.
    pub fn command(command: &impl CommandFamily) -> Self {
        let (name, payload) = command.to_parts();
        Self {
            message_id: Uuid::now_v7(),
            exchange: Exchange::Commands,
            routing_key: command.participant().name.to_owned(),
            message_type: name.into(),
            correlation_id: Some(command.saga_id()),
            payload,
            trace: None,
        }
    }

    pub fn reply(reply: &impl ReplyFamily) -> Self {
        let (name, payload) = reply.to_parts();
        Self {
            message_id: Uuid::now_v7(),
            exchange: Exchange::Replies,
            routing_key: REPLY_ROUTE.into(),
            message_type: name.into(),
            correlation_id: Some(reply.saga_id()),
            payload,
            trace: None,
        }
    }

    /// A domain event; its name is also its routing key (`stock.low`, `order.created`, …).
    pub fn event<E: DomainEvent>(event: &E) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            exchange: Exchange::Events(E::EXCHANGE),
            routing_key: E::NAME.into(),
            message_type: E::NAME.into(),
            correlation_id: event.correlation_id(),
            payload: serde_json::to_value(event).expect("domain events always serialize"),
            trace: None,
        }
    }
}

/// The headers stored with an outgoing message: its `traceparent`, a new span of its trace.
fn headers_of(trace: Option<TraceContext>) -> Value {
    match trace.or_else(trace::current) {
        Some(trace) => serde_json::json!({ "traceparent": trace.child().header() }),
        None => Value::Object(serde_json::Map::new()),
    }
}

/// Writes messages to the outbox, pending, in the caller's transaction, in one statement.
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
    let mut headers = Vec::with_capacity(messages.len());
    for m in messages {
        ids.push(m.message_id);
        exchanges.push(m.exchange.name().to_owned());
        routes.push(m.routing_key.clone());
        types.push(m.message_type.clone());
        correlations.push(m.correlation_id);
        bodies.push(m.payload.clone());
        headers.push(headers_of(m.trace));
    }
    sqlx::query!(
        "WITH written AS (
             INSERT INTO outbox (message_id, exchange, routing_key, message_type, correlation_id, body, headers)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::jsonb[], $7::jsonb[])
             RETURNING id)
         INSERT INTO outbox_pending (id) SELECT id FROM written",
        &ids,
        &exchanges,
        &routes,
        &types,
        &correlations as &[Option<Uuid>],
        &bodies,
        &headers,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Which of `correlations` have a message the broker has not taken yet: a command still waiting
/// here, or a reply or event on its way back.
pub async fn still_waiting(conn: &mut PgConnection, correlations: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    if correlations.is_empty() {
        return Ok(Vec::new());
    }
    // The pending set is small except while the broker is away; each of its rows is one lookup
    // by primary key.
    sqlx::query_scalar!(
        r#"SELECT DISTINCT o.correlation_id AS "correlation_id!" FROM outbox_pending p JOIN outbox o ON o.id = p.id
           WHERE o.correlation_id = ANY($1)"#,
        correlations
    )
    .fetch_all(conn)
    .await
}

/// A message to publish byte for byte as it was once received: a dead letter sent back.
#[derive(Clone, Debug)]
pub struct RawOutgoing<'a> {
    pub message_id: Uuid,
    /// Logical name of the queue to deliver to, through the broker's default exchange.
    pub queue: &'a str,
    pub message_type: Option<&'a str>,
    pub correlation_id: Option<Uuid>,
    pub body: &'a [u8],
    pub traceparent: Option<&'a str>,
}

/// Writes a raw message to the outbox, pending, in the caller's transaction.
pub async fn enqueue_raw(conn: &mut PgConnection, message: &RawOutgoing<'_>) -> sqlx::Result<()> {
    let headers = match message.traceparent {
        Some(traceparent) => serde_json::json!({ "traceparent": traceparent }),
        None => headers_of(None),
    };
    sqlx::query!(
        "WITH written AS (
             INSERT INTO outbox (message_id, exchange, routing_key, message_type, correlation_id, body, headers, raw)
             VALUES ($1, $2, $3, $4, $5, 'null', $6, $7)
             RETURNING id)
         INSERT INTO outbox_pending (id) SELECT id FROM written",
        message.message_id,
        Exchange::ToQueue.name(),
        message.queue,
        message.message_type.unwrap_or(""),
        message.correlation_id,
        headers,
        message.body,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An outbox row claimed for publishing, with its envelope rebuilt.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: i64,
    /// The exchange's logical name, which the relay looks up in its topology.
    pub exchange: String,
    pub routing_key: String,
    pub envelope: Envelope,
    /// The exact bytes to publish, for a raw message; otherwise the envelope is encoded.
    pub raw: Option<Vec<u8>>,
}

/// Takes up to `limit` pending messages, oldest first, skipping those another relay holds: their
/// pending rows are deleted in `tx`, so they count as published once `tx` commits (after the
/// broker confirmed them), and are pending again if it rolls back.
pub async fn claim(tx: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Claimed>> {
    let rows = sqlx::query!(
        "WITH claimed AS (
             DELETE FROM outbox_pending WHERE id = ANY(ARRAY(
                 SELECT id FROM outbox_pending ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED))
             RETURNING id)
         SELECT o.id, message_id, exchange, routing_key, message_type, correlation_id, body, created_at, headers, raw
         FROM outbox o JOIN claimed USING (id) ORDER BY o.id",
        limit
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Claimed {
            id: row.id,
            exchange: row.exchange,
            routing_key: row.routing_key,
            envelope: Envelope {
                version: PROTOCOL_VERSION,
                message_id: row.message_id,
                correlation_id: row.correlation_id,
                sent_at: row.created_at,
                message_type: row.message_type,
                payload: row.body,
                trace: row.headers.get("traceparent").and_then(Value::as_str).and_then(TraceContext::parse),
            },
            raw: row.raw,
        })
        .collect())
}

/// Deletes published messages written more than `older_than` ago, oldest first, taking them from
/// the `limit` oldest published rows; returns how many. A short count means the oldest rows left
/// are younger than that, or held by another transaction.
///
/// Row ids grow with time, so the oldest rows come first on the primary key and no index on
/// time is kept. Rows another transaction holds are skipped, not waited for, and pending messages
/// are never touched.
pub async fn delete_published(conn: &mut PgConnection, older_than: Duration, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM outbox WHERE id = ANY(ARRAY(
             SELECT id FROM (
                 SELECT id, created_at FROM outbox o
                 WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id)
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) oldest
             WHERE created_at < now() - make_interval(secs => $1)))",
        older_than.as_secs_f64(),
        limit
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// The routes as three columns, for `UNNEST`.
fn route_columns(routes: &[Route]) -> [Vec<String>; 3] {
    [
        routes.iter().map(|r| r.exchange.to_owned()).collect(),
        routes.iter().map(|r| r.routing_key.clone()).collect(),
        routes.iter().map(|r| r.inbox.to_owned()).collect(),
    ]
}

/// Messages written within `window` to an exchange that `routes` serve, whose consumer's inbox
/// holds no record of them, counted by inbox (`"no route"` for a routing key no route covers):
/// waiting to be published, in the broker, or lost. Only the window counts because a consumer
/// forgets what it handled after its deduplication window (the inbox retention): an older message
/// without a record was handled, not lost.
pub async fn unhandled(
    conn: &mut PgConnection,
    routes: &[Route],
    window: Duration,
) -> sqlx::Result<Vec<(String, i64)>> {
    let [exchanges, keys, inboxes] = route_columns(routes);
    let rows = sqlx::query!(
        r#"WITH route (exchange, routing_key, inbox) AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))
           SELECT COALESCE(r.inbox, 'no route') AS "inbox!", count(*) AS "count!"
           FROM outbox o LEFT JOIN route r USING (exchange, routing_key)
           WHERE o.exchange IN (SELECT exchange FROM route)
             AND o.created_at > now() - make_interval(secs => $4)
             AND (r.inbox IS NULL
                  OR NOT EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = r.inbox AND i.message_id = o.message_id))
           GROUP BY 1 ORDER BY 1"#,
        &exchanges,
        &keys,
        &inboxes,
        window.as_secs_f64(),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.inbox, row.count)).collect())
}

/// Marks the published messages that [`unhandled`] finds as waiting again, so that the relay
/// sends them again; returns how many. For a database restored to an earlier moment, whose
/// messages then in the broker are gone with the broker's purge (`orchestrator after-restore`):
/// a consumer that had handled one after all finds its record and does nothing.
pub async fn resend_unhandled(conn: &mut PgConnection, routes: &[Route], window: Duration) -> sqlx::Result<u64> {
    let [exchanges, keys, inboxes] = route_columns(routes);
    let resent = sqlx::query!(
        "WITH route (exchange, routing_key, inbox) AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))
         INSERT INTO outbox_pending (id)
         SELECT o.id FROM outbox o JOIN route r USING (exchange, routing_key)
         WHERE o.created_at > now() - make_interval(secs => $4)
           AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = r.inbox AND i.message_id = o.message_id)
         ON CONFLICT (id) DO NOTHING",
        &exchanges,
        &keys,
        &inboxes,
        window.as_secs_f64(),
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(resent)
}

/// Messages waiting to be published, and the age in seconds of the oldest.
pub async fn backlog(conn: &mut PgConnection) -> sqlx::Result<(i64, f64)> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "waiting!", COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS "oldest!"
           FROM outbox_pending JOIN outbox USING (id)"#
    )
    .fetch_one(conn)
    .await?;
    Ok((row.waiting, row.oldest))
}
