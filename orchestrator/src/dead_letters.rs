//! The dead-letter keeper: consumes the dead-letter queue into the `dead_letter` table, and the
//! SQL operators' inspection, replay and deletion run on it.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures_lite::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use platform::{
    config::SagaTiming,
    messaging::{
        Queue, Topology, connect,
        dead_letter::{EXCHANGE_HEADER, PERMANENT_HEADER, QUEUE_HEADER, REASON_HEADER, ROUTING_KEY_HEADER},
        outbox::{self, OutboxSignal},
        supervise,
    },
    saga::{engine::EngineError, registry::Registry, runner},
    shutdown::Shutdown,
};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A dead letter as it arrived, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrived {
    /// The deployed name of the queue it died in.
    pub queue: String,
    pub reason: String,
    /// Its consumer found it one that can never be handled (not merely out of retries).
    pub permanent: bool,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub headers: Value,
    pub body: Vec<u8>,
}

/// A header value as JSON: strings for AMQP strings (lossy UTF-8), numbers, and nested tables.
fn json_of(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::Float(n) => f64::from(*n).into(),
        AMQPValue::Double(n) => (*n).into(),
        AMQPValue::ShortString(s) => s.as_str().into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(json_of).collect()),
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(bytes) => format!("{bytes:?}").into(),
        AMQPValue::DecimalValue(d) => format!("{}e-{}", d.value, d.scale).into(),
        AMQPValue::Void => Value::Null,
    }
}

fn table_json(table: &FieldTable) -> Value {
    Value::Object(table.into_iter().map(|(k, v)| (k.to_string(), json_of(v))).collect::<Map<_, _>>())
}

impl Arrived {
    /// Reads where a delivery of the dead-letter queue came from and why: the [`Rejecter`]'s
    /// headers when it was rejected by a consumer, else the broker's first `x-death` entry.
    pub fn from_delivery(delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers().as_ref().map_or(Value::Object(Map::new()), table_json);
        let text = |key: &str| headers.get(key).and_then(Value::as_str).map(str::to_owned);
        let death = headers.get("x-death").and_then(|d| d.get(0)).cloned().unwrap_or(Value::Null);
        let death_text = |key: &str| death.get(key).and_then(Value::as_str).map(str::to_owned);
        let reason = text(REASON_HEADER).unwrap_or_else(|| match death_text("reason").as_deref() {
            Some("delivery_limit") => "redelivered past the queue's delivery limit (its consumers kept failing)".into(),
            Some(other) => format!("dead-lettered by the broker: {other}"),
            None => "dead-lettered for an unknown reason".into(),
        });
        let queue = text(QUEUE_HEADER).or_else(|| death_text("queue")).unwrap_or_default();
        let exchange = text(EXCHANGE_HEADER).or_else(|| death_text("exchange"));
        let routing_key = text(ROUTING_KEY_HEADER)
            .or_else(|| death.get("routing-keys").and_then(|k| k.get(0)).and_then(Value::as_str).map(str::to_owned));
        let properties = &delivery.properties;
        let correlation_id =
            properties.correlation_id().as_ref().and_then(|id| id.as_str().parse().ok()).or_else(|| {
                let body: Value = serde_json::from_slice(&delivery.data).ok()?;
                body.get("correlation_id")?.as_str()?.parse().ok()
            });
        Self {
            queue,
            reason,
            permanent: text(PERMANENT_HEADER).as_deref() == Some("true"),
            message_id: properties.message_id().as_ref().map(|id| id.to_string()),
            message_type: properties.kind().as_ref().map(|kind| kind.to_string()),
            correlation_id,
            exchange,
            routing_key,
            headers,
            body: delivery.data.clone(),
        }
    }
}

/// Stores a dead letter; `false` when the same unreplayed failure is already stored.
pub async fn store(conn: &mut PgConnection, letter: &Arrived) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO dead_letter (queue, reason, message_id, message_type, correlation_id, exchange, routing_key,
                                  headers, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (queue, message_id) WHERE replayed_at IS NULL DO NOTHING",
        letter.queue,
        letter.reason,
        letter.message_id,
        letter.message_type,
        letter.correlation_id,
        letter.exchange,
        letter.routing_key,
        letter.headers,
        letter.body,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A stored dead letter.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: i64,
    pub queue: String,
    pub reason: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub headers: Value,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_message_id: Option<Uuid>,
}

/// Which dead letters to list.
#[derive(Clone, Debug, Default)]
pub struct Filter<'a> {
    /// Only this one.
    pub id: Option<i64>,
    /// Only those older than this id (the cursor).
    pub before: Option<i64>,
    pub queue: Option<&'a str>,
    /// Only those replayed (true) or not yet (false).
    pub replayed: Option<bool>,
}

/// Dead letters, newest first.
pub async fn list(conn: &mut PgConnection, filter: &Filter<'_>, limit: i64) -> sqlx::Result<Vec<Stored>> {
    sqlx::query_as!(
        Stored,
        "SELECT id, queue, reason, message_id, message_type, correlation_id, exchange, routing_key, headers, body,
                received_at, replayed_at, replay_message_id
         FROM dead_letter
         WHERE ($1::int8 IS NULL OR id = $1) AND ($2::int8 IS NULL OR id < $2) AND ($3::text IS NULL OR queue = $3)
           AND ($4::bool IS NULL OR (replayed_at IS NOT NULL) = $4)
         ORDER BY id DESC LIMIT $5",
        filter.id,
        filter.before,
        filter.queue,
        filter.replayed,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<Stored>> {
    Ok(list(conn, &Filter { id: Some(id), ..Filter::default() }, 1).await?.pop())
}

/// What a replay sends back.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The deployed name of the queue the message died in.
    pub queue: String,
    pub message_type: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub body: Vec<u8>,
    pub headers: Value,
}

/// Marks a dead letter replayed by the outbox message `replay_message_id`, unless it already was.
/// `None` when it does not exist or was replayed already: a dead letter is replayed once.
pub async fn claim_replay(conn: &mut PgConnection, id: i64, replay_message_id: Uuid) -> sqlx::Result<Option<Replay>> {
    sqlx::query_as!(
        Replay,
        "UPDATE dead_letter SET replayed_at = now(), replay_message_id = $2
         WHERE id = $1 AND replayed_at IS NULL
         RETURNING queue, message_type, correlation_id, body, headers",
        id,
        replay_message_id
    )
    .fetch_optional(conn)
    .await
}

/// Dead letters not replayed yet.
pub async fn waiting(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM dead_letter WHERE replayed_at IS NULL"#)
        .fetch_one(conn)
        .await
}

/// Deletes a dead letter; `false` when there was none.
pub async fn delete(conn: &mut PgConnection, id: i64) -> sqlx::Result<bool> {
    Ok(sqlx::query!("DELETE FROM dead_letter WHERE id = $1", id).execute(conn).await?.rows_affected() == 1)
}

/// Dead letters kept in Postgres.
fn stored_counter() -> metrics::Counter {
    metrics::counter!("dead_letters_stored_total")
}

/// Registers the keeper's counter at zero: a dashboard then shows no dead letter as 0.
pub fn register_metrics() {
    stored_counter().increment(0);
}

/// Consumes the dead-letter queue into the `dead_letter` table, acknowledging after commit. A
/// command its participant refused as one that can never succeed also fails its saga's step, in
/// the same transaction: resending it would only be refused again.
pub struct DeadLetterConsumer {
    pub pool: PgPool,
    pub topology: Topology,
    pub amqp_url: Arc<str>,
    pub registry: Arc<Registry>,
    pub timing: SagaTiming,
    /// Wakes the relay for what a failed step sends.
    pub outbox: OutboxSignal,
}

/// Deliveries of the dead-letter queue in hand at once.
const PREFETCH: u16 = 64;

impl DeadLetterConsumer {
    pub async fn run(self, shutdown: Shutdown) {
        supervise("dead-letters", shutdown, |shutdown| self.session(shutdown)).await;
    }

    async fn session(&self, mut shutdown: Shutdown) -> lapin::Result<()> {
        let queue = self.topology.queue(Queue::DeadLetters);
        let connection = connect(&self.amqp_url, &queue).await?;
        let channel = connection.create_channel().await?;
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let mut deliveries = channel
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let result = loop {
            tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        if !self.keep(&delivery, &mut shutdown).await {
                            break Ok(());
                        }
                    }
                    Some(Err(error)) => break Err(error),
                    None => break Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                        lapin::ConnectionState::Closed,
                    ))),
                }
            }
        };
        platform::messaging::close(&connection, "shutting down").await;
        result
    }

    /// Stores a dead letter and, for a command refused for good, fails its saga's step; `false`
    /// when it was stored before.
    async fn store_and_follow(&self, letter: &Arrived) -> Result<bool, EngineError> {
        let mut tx = self.pool.begin().await?;
        let new = store(&mut tx, letter).await?;
        let mut out = Vec::new();
        if new
            && letter.permanent
            && let (Some(saga_id), Some(command)) = (letter.correlation_id, &letter.message_type)
        {
            match runner::refused(&mut tx, &self.registry, &self.timing, saga_id, command, &letter.reason, &mut out)
                .await
            {
                Ok(failed) => {
                    if failed {
                        tracing::warn!(%saga_id, command, "a refused command failed its saga's step");
                    }
                }
                Err(EngineError::Database(error)) => return Err(error.into()),
                // A saga that cannot be driven is the sweeper's to set aside; the letter is kept.
                Err(error) => tracing::warn!(%error, %saga_id, "a refused command's saga could not follow"),
            }
        }
        outbox::enqueue(&mut tx, &out).await?;
        tx.commit().await?;
        if !out.is_empty() {
            self.outbox.notify();
        }
        Ok(new)
    }

    /// Stores one delivery, retrying while the database is away; `false` if shutdown came first
    /// (the delivery stays unacknowledged and comes back).
    async fn keep(&self, delivery: &Delivery, shutdown: &mut Shutdown) -> bool {
        let letter = Arrived::from_delivery(delivery);
        let mut attempt = 0u32;
        loop {
            match self.store_and_follow(&letter).await {
                Ok(new) => {
                    if new {
                        stored_counter().increment(1);
                        tracing::warn!(queue = letter.queue, reason = letter.reason, message_id = ?letter.message_id,
                            "dead letter stored");
                    }
                    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                        tracing::warn!(%error, "ack of a stored dead letter failed; its redelivery is absorbed");
                    }
                    return true;
                }
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "storing a dead letter failed; retrying");
                    let backoff = Duration::from_millis(100u64 << attempt.min(6));
                    tokio::select! {
                        _ = shutdown.wait() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
}
