//! `/dead-letters`: messages no consumer could handle, with the reason, for operators to inspect,
//! send back once to the queue they died in, or delete.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use platform::messaging::{
    Queue,
    outbox::{self, RawOutgoing},
};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json, types::Example};
use serde_json::Value;
use uuid::Uuid;

use super::example;
use super::role::{Needs, Operator};
use super::{
    Tag,
    input::Line,
    page::{self, Limit, page_of},
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, UNAVAILABLE},
};
use crate::{
    Context,
    access::audit::Audit,
    dead_letters::{self as dead_letter, Filter, Stored},
};

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct DeadLetter {
    pub id: i64,
    /// The queue the message died in.
    pub queue: String,
    /// Why: the consumer's error, or the broker's (e.g. past the delivery limit).
    pub reason: String,
    #[oai(nullable)]
    pub message_id: Option<String>,
    #[oai(rename = "type")]
    #[oai(nullable)]
    pub kind: Option<String>,
    /// The saga it belongs to, when known.
    #[oai(nullable)]
    pub correlation_id: Option<Uuid>,
    /// Where it had been published: exchange and routing key.
    #[oai(nullable)]
    pub exchange: Option<String>,
    #[oai(nullable)]
    pub routing_key: Option<String>,
    /// Its AMQP headers, including the broker's `x-death` when the broker dead-lettered it.
    pub headers: Value,
    /// The body as received (as text; bytes that are not UTF-8 are replaced).
    pub body: String,
    pub received_at: DateTime<Utc>,
    /// When it was sent back; a dead letter is replayed at most once.
    #[oai(nullable)]
    pub replayed_at: Option<DateTime<Utc>>,
    /// The id of the replayed message.
    #[oai(nullable)]
    pub replay_message_id: Option<Uuid>,
}

impl Example for DeadLetter {
    fn example() -> Self {
        Self {
            id: 1,
            queue: "warehouse.commands".into(),
            reason: "a command of version 9, which this build does not speak".into(),
            message_id: Some(example::ORDER.to_string()),
            kind: Some("DispatchShipment".into()),
            correlation_id: Some(example::SAGA),
            exchange: Some("darkstores.commands".into()),
            routing_key: Some("warehouse".into()),
            headers: serde_json::json!({"traceparent": example::TRACEPARENT}),
            body: r#"{"type":"DispatchShipment","version":9}"#.into(),
            received_at: example::at(6),
            replayed_at: None,
            replay_message_id: None,
        }
    }
}

impl From<Stored> for DeadLetter {
    fn from(s: Stored) -> Self {
        Self {
            id: s.id,
            queue: s.queue,
            reason: s.reason,
            message_id: s.message_id,
            kind: s.message_type,
            correlation_id: s.correlation_id,
            exchange: s.exchange,
            routing_key: s.routing_key,
            headers: s.headers,
            body: String::from_utf8_lossy(&s.body).into_owned(),
            received_at: s.received_at,
            replayed_at: s.replayed_at,
            replay_message_id: s.replay_message_id,
        }
    }
}

page_of!(DeadLetterPage, DeadLetter);

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Gone,
}

pub struct DeadLettersApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::DeadLetters")]
impl DeadLettersApi {
    /// List dead letters
    ///
    /// Newest first; filter by the queue they died in and whether they were replayed.
    #[oai(path = "/dead-letters", method = "get", operation_id = "listDeadLetters")]
    async fn list(
        &self,
        _role: Needs<Operator>,
        /// The queue they died in, e.g. `darkstores.warehouse.commands`.
        queue: Query<Option<Line<255>>>,
        replayed: Query<Option<bool>>,
        limit: Query<Option<Limit>>,
        cursor: Query<Option<page::IdCursor>>,
    ) -> ApiResult<Json<DeadLetterPage>, UNAVAILABLE> {
        let fetch = page::fetch_limit(limit.0);
        let before = cursor.0.map(|c| c.0);
        let filter = Filter { id: None, before, queue: queue.0.as_deref(), replayed: replayed.0 };
        let mut conn = self.ctx.pool.acquire().await?;
        let rows = dead_letter::list(&mut conn, &filter, fetch).await?;
        let (items, next_cursor) = page::split(rows, fetch, |d| d.id.to_string());
        Ok(Json(DeadLetterPage { items: items.into_iter().map(Into::into).collect(), next_cursor }))
    }

    /// Get a dead letter
    #[oai(path = "/dead-letters/:id", method = "get", operation_id = "getDeadLetter")]
    async fn get(
        &self,
        _role: Needs<Operator>,
        id: Path<i64>,
    ) -> ApiResult<Json<DeadLetter>, { NOT_FOUND | UNAVAILABLE }> {
        let mut conn = self.ctx.pool.acquire().await?;
        let letter = dead_letter::get(&mut conn, id.0).await?;
        Ok(Json(letter.ok_or_else(|| Problem::not_found(format!("no dead letter {}", id.0)))?.into()))
    }

    /// Replay a dead letter
    ///
    /// Publishes the message again, byte for byte, to the queue it died in: once. 409 when it was
    /// replayed already or came from a queue of another deployment.
    #[oai(path = "/dead-letters/:id/replay", method = "post", operation_id = "replayDeadLetter")]
    async fn replay(
        &self,
        _role: Needs<Operator>,
        id: Path<i64>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<DeadLetter>, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let mut tx = self.ctx.pool.begin().await?;
        let replay_id = Uuid::new_v4();
        let Some(replay) = dead_letter::claim_replay(&mut tx, id.0, replay_id).await? else {
            return Err(Problem::into(match dead_letter::get(&mut tx, id.0).await? {
                Some(letter) => Problem::conflict(format!(
                    "dead letter {} was replayed already, at {}",
                    id.0,
                    letter.replayed_at.map_or_else(String::new, |at| at.to_rfc3339())
                )),
                None => Problem::not_found(format!("no dead letter {}", id.0)),
            }));
        };
        let queue = self
            .ctx
            .topology
            .logical_queue(&replay.queue)
            .filter(|logical| self.ctx.topology.parse_queue(logical).is_some_and(|q| q != Queue::DeadLetters))
            .ok_or_else(|| {
                Problem::conflict(format!("it died in {:?}, not a work queue of this deployment", replay.queue))
            })?;
        let message = RawOutgoing {
            message_id: replay_id,
            queue,
            message_type: replay.message_type.as_deref(),
            correlation_id: replay.correlation_id,
            body: &replay.body,
            traceparent: replay.headers.get("traceparent").and_then(Value::as_str),
        };
        outbox::enqueue_raw(&mut tx, &message).await?;
        let letter = dead_letter::get(&mut tx, id.0).await?;
        audit.name("replay_message_id", replay_id);
        audit.record(&mut tx, 200).await?;
        tx.commit().await?;
        self.ctx.outbox.notify();
        tracing::info!(dead_letter = id.0, %replay_id, queue, "dead letter replayed");
        Ok(Json(letter.ok_or_else(|| Problem::not_found(format!("no dead letter {}", id.0)))?.into()))
    }

    /// Delete a dead letter
    #[oai(path = "/dead-letters/:id", method = "delete", operation_id = "deleteDeadLetter")]
    async fn delete(
        &self,
        _role: Needs<Operator>,
        id: Path<i64>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Deleted, { NOT_FOUND | UNAVAILABLE }> {
        let mut tx = self.ctx.pool.begin().await?;
        if !dead_letter::delete(&mut tx, id.0).await? {
            return Err(Problem::not_found(format!("no dead letter {}", id.0)).into());
        }
        audit.record(&mut tx, 204).await?;
        tx.commit().await?;
        Ok(Deleted::Gone)
    }
}
