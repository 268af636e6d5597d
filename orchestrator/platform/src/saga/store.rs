//! SQL on the `saga` and `saga_transition` tables. Plain functions that take the caller's
//! transaction; the engine decides what to write, these only write it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Awaits, Concerns};

/// A saga as the engine reads it, under its row lock.
#[derive(Clone, Debug)]
pub struct SagaRow {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub data: Value,
    pub version: i64,
    pub attempt: i32,
    pub state_entered_at: DateTime<Utc>,
    /// W3C trace id shared by every message of the saga.
    pub trace_id: Option<String>,
}

/// The columns a transition changes.
#[derive(Clone, Debug)]
pub struct SagaUpdate<'a> {
    pub state: &'a str,
    pub data: &'a Value,
    pub attempt: i32,
    pub deadline_at: Option<DateTime<Utc>>,
    pub last_error: Option<&'a str>,
    /// What the saga waits on in its new state; it is closed when that is an operator or nothing.
    pub awaits: Awaits,
}

/// One line of the timeline.
#[derive(Clone, Debug)]
pub struct TransitionRecord<'a> {
    pub saga_id: Uuid,
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub event: &'a str,
    pub applied: bool,
    pub detail: &'a Value,
    pub actor: &'a str,
    /// For a transition that leaves its state: how long the saga was in it.
    pub took_ms: Option<f64>,
}

/// One saga, locked.
pub async fn lock(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<SagaRow>> {
    Ok(lock_all(tx, &[id]).await?.pop())
}

/// Several sagas, locked in id order (as every batch locks them, so that batches cannot deadlock).
pub async fn lock_all(tx: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<SagaRow>> {
    sqlx::query_as!(
        SagaRow,
        "SELECT id, kind, state, data, version, attempt, state_entered_at, trace_id FROM saga
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        ids
    )
    .fetch_all(tx)
    .await
}

/// Open sagas whose deadline has passed, locked; rows another engine holds are skipped.
pub async fn lock_due(tx: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<SagaRow>> {
    sqlx::query_as!(
        SagaRow,
        "SELECT id, kind, state, data, version, attempt, state_entered_at, trace_id FROM saga
         WHERE closed_at IS NULL AND deadline_at <= now()
         ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit
    )
    .fetch_all(tx)
    .await
}

/// The earliest deadline among open sagas.
pub async fn next_deadline(conn: &mut PgConnection) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!("SELECT min(deadline_at) FROM saga WHERE closed_at IS NULL").fetch_one(conn).await
}

/// Writes a new saga, what it concerns and the first line of its timeline, in one statement.
pub async fn insert(
    tx: &mut PgConnection,
    id: Uuid,
    kind: &str,
    trace_id: &str,
    update: &SagaUpdate<'_>,
    record: &TransitionRecord<'_>,
    concerns: &Concerns,
) -> sqlx::Result<()> {
    // A saga that names no product still concerns its store: one row, without a product.
    let products: Vec<Option<Uuid>> =
        if concerns.products.is_empty() { vec![None] } else { concerns.products.iter().copied().map(Some).collect() };
    sqlx::query!(
        "WITH saga AS (
             INSERT INTO saga (id, kind, state, data, attempt, deadline_at, last_error, closed_at, trace_id, awaits)
             VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END, $9, $17) RETURNING id),
         concern AS (
             INSERT INTO saga_concern (saga_id, store_id, product_id)
             SELECT id, $18, product_id FROM saga, UNNEST($19::uuid[]) AS product_id
             WHERE $18::uuid IS NOT NULL OR product_id IS NOT NULL)
         INSERT INTO saga_transition (saga_id, from_state, to_state, event, applied, detail, actor, took_ms)
         SELECT id, $10, $11, $12, $13, $14, $15, $16 FROM saga",
        id,
        kind,
        update.state,
        update.data,
        update.attempt,
        update.deadline_at,
        update.last_error,
        update.awaits.is_closed(),
        trace_id,
        record.from,
        record.to,
        record.event,
        record.applied,
        record.detail,
        record.actor,
        record.took_ms,
        update.awaits.as_ref(),
        concerns.store,
        &products as &[Option<Uuid>],
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Writes a saga's new columns and, when given, the line of its timeline that says why, in one
/// statement, fenced by the version read under the lock. `false` writes nothing: another writer
/// got there first, which the row lock should make impossible, so the caller treats it as an
/// error.
pub async fn update(
    tx: &mut PgConnection,
    row: &SagaRow,
    update: &SagaUpdate<'_>,
    record: Option<&TransitionRecord<'_>>,
) -> sqlx::Result<bool> {
    let moved = sqlx::query_scalar!(
        r#"WITH moved AS (
               UPDATE saga SET state = $3, data = $4, attempt = $5, deadline_at = $6,
                      last_error = COALESCE($7, last_error), version = version + 1, updated_at = now(),
                      closed_at = CASE WHEN $8 THEN now() END, awaits = $17,
                      state_entered_at = CASE WHEN state = $3 THEN state_entered_at ELSE now() END
               WHERE id = $1 AND version = $2 RETURNING id),
           line AS (
               INSERT INTO saga_transition (saga_id, from_state, to_state, event, applied, detail, actor, took_ms)
               SELECT id, $10, $11, $12, $13, $14, $15, $16 FROM moved WHERE $9)
           SELECT count(*) AS "moved!" FROM moved"#,
        row.id,
        row.version,
        update.state,
        update.data,
        update.attempt,
        update.deadline_at,
        update.last_error,
        update.awaits.is_closed(),
        record.is_some(),
        record.and_then(|r| r.from),
        record.map(|r| r.to),
        record.map(|r| r.event),
        record.map(|r| r.applied),
        record.map(|r| r.detail),
        record.map(|r| r.actor),
        record.and_then(|r| r.took_ms),
        update.awaits.as_ref(),
    )
    .fetch_one(tx)
    .await?;
    Ok(moved == 1)
}

/// Takes a saga the engine cannot read off the deadline sweep, saying why in `last_error` and in
/// its timeline.
pub async fn set_aside(tx: &mut PgConnection, row: &SagaRow, reason: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE saga SET deadline_at = NULL, last_error = $2, version = version + 1, updated_at = now() WHERE id = $1",
        row.id,
        reason
    )
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({ "reason": reason });
    let record = TransitionRecord {
        saga_id: row.id,
        from: Some(&row.state),
        to: &row.state,
        event: "SetAside",
        applied: false,
        detail: &detail,
        actor: super::Actor::Engine.as_str(),
        took_ms: None,
    };
    record_transition(tx, &record).await
}

pub async fn record_transition(tx: &mut PgConnection, record: &TransitionRecord<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO saga_transition (saga_id, from_state, to_state, event, applied, detail, actor, took_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        record.saga_id,
        record.from,
        record.to,
        record.event,
        record.applied,
        record.detail,
        record.actor,
        record.took_ms,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// How many sagas of a kind are in a state.
#[derive(Clone, Debug)]
pub struct StateCount {
    pub kind: String,
    pub state: String,
    pub count: i64,
}

/// Sagas by kind and state: for the stats route and the `sagas` gauge.
pub async fn count_by_state(conn: &mut PgConnection) -> sqlx::Result<Vec<StateCount>> {
    sqlx::query_as!(
        StateCount,
        r#"SELECT kind, state, count(*) AS "count!" FROM saga GROUP BY kind, state ORDER BY kind, state"#
    )
    .fetch_all(conn)
    .await
}

/// Stuck sagas (`saga_stuck`: waiting for an operator, or open with nothing that will move them)
/// by kind, for the `sagas_stuck` gauge; kinds with none are absent. Only open sagas and those
/// waiting for an operator can be stuck, so their partial indexes bound the scan.
pub async fn count_stuck_by_kind(conn: &mut PgConnection) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT kind, count(*) AS "count!" FROM saga
           WHERE (closed_at IS NULL OR awaits = 'operator') AND saga_stuck(awaits, closed_at, deadline_at)
           GROUP BY kind"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.kind, row.count)).collect())
}

/// Deletes up to `limit` sagas closed more than `older_than` ago, the longest closed first, with their
/// timelines and their kinds' rows (the foreign keys cascade); returns how many sagas.
///
/// A saga waiting for an operator is closed, but kept until someone acts on it.
/// Sagas another transaction holds (a late reply being refused, say) are skipped, not waited for.
pub async fn delete_closed(conn: &mut PgConnection, older_than: Duration, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM saga WHERE id = ANY(ARRAY(
             SELECT id FROM saga WHERE closed_at < now() - make_interval(secs => $1) AND awaits <> 'operator'
             ORDER BY closed_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
        older_than.as_secs_f64(),
        limit
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(deleted)
}
