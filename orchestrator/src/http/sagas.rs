//! `/sagas`: what every saga is doing, for operators.

use chrono::{DateTime, Utc};
use poem_openapi::{Object, OpenApi, param::Path, param::Query, payload::Json};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Tag,
    page::{self, page_of},
    problem::{ApiResult, Problem},
};
use crate::Context;

#[derive(Clone, Debug, Object)]
pub struct Saga {
    pub id: Uuid,
    /// The saga kind, e.g. `replenishment`.
    pub kind: String,
    /// For a replenishment: requested, dispatched, received, compensating, compensated or failed.
    pub state: String,
    /// The saga's own data (store, product, quantities, shipment).
    pub data: Value,
    /// Sends so far of the command the saga is waiting on.
    pub attempt: i32,
    /// When the outstanding command is resent (or the step given up) if no reply comes.
    pub deadline_at: Option<DateTime<Utc>>,
    /// Why the saga is unwinding or failed.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

/// One line of a saga's timeline.
#[derive(Clone, Debug, Object)]
pub struct Transition {
    /// Absent for the first line.
    pub from: Option<String>,
    pub to: String,
    /// What happened: the reply's type, `DeadlineExceeded`, `CommandResent`, …
    pub event: String,
    /// false when the event was refused by the transition function (recorded, not applied).
    pub applied: bool,
    /// Who acted: `low-stock`, `participant`, `engine`, or an operator.
    pub actor: String,
    pub at: DateTime<Utc>,
    pub detail: Value,
}

#[derive(Clone, Debug, Object)]
pub struct SagaDetail {
    #[oai(flatten)]
    pub saga: Saga,
    /// The timeline, oldest first.
    pub transitions: Vec<Transition>,
}

page_of!(SagaPage, Saga);

pub struct SagasApi {
    pub ctx: Context,
}

/// Cursor of the saga list: creation time and id of the last saga of the page.
fn parse_cursor(cursor: Option<&str>) -> ApiResult<Option<(DateTime<Utc>, Uuid)>> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let invalid = || Problem::unprocessable("cursor is not one this API issued");
    let (at, id) = cursor.split_once('~').ok_or_else(invalid)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| invalid())?.with_timezone(&Utc);
    Ok(Some((at, id.parse().map_err(|_| invalid())?)))
}

#[OpenApi(tag = "Tag::Sagas")]
impl SagasApi {
    /// List sagas
    ///
    /// Oldest first, filtered by kind, state, and the store and product a saga is about.
    #[oai(path = "/sagas", method = "get")]
    async fn list(
        &self,
        kind: Query<Option<String>>,
        state: Query<Option<String>>,
        store_id: Query<Option<Uuid>>,
        product_id: Query<Option<Uuid>>,
        limit: Query<Option<u32>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<SagaPage>> {
        let fetch = page::fetch_limit(limit.0)?;
        let after = parse_cursor(cursor.0.as_deref())?;
        let rows = sqlx::query_as!(
            Saga,
            "SELECT id, kind, state, data, attempt, deadline_at, last_error, created_at, updated_at, closed_at
             FROM saga
             WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))
               AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR state = $4)
               AND ($5::text IS NULL OR data->>'store_id' = $5)
               AND ($6::text IS NULL OR data->>'product_id' = $6)
             ORDER BY created_at, id LIMIT $7",
            after.map(|(at, _)| at),
            after.map_or(Uuid::nil(), |(_, id)| id),
            kind.0,
            state.0,
            store_id.0.map(|id| id.to_string()),
            product_id.0.map(|id| id.to_string()),
            fetch
        )
        .fetch_all(&self.ctx.pool)
        .await?;
        let (items, next_cursor) = page::split(rows, fetch, |s| format!("{}~{}", s.created_at.to_rfc3339(), s.id));
        Ok(Json(SagaPage { items, next_cursor }))
    }

    /// Get a saga with its timeline
    #[oai(path = "/sagas/:id", method = "get")]
    async fn get(&self, id: Path<Uuid>) -> ApiResult<Json<SagaDetail>> {
        let mut conn = self.ctx.pool.acquire().await?;
        let saga = sqlx::query_as!(
            Saga,
            "SELECT id, kind, state, data, attempt, deadline_at, last_error, created_at, updated_at, closed_at
             FROM saga WHERE id = $1",
            id.0
        )
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no saga {}", id.0)))?;
        let transitions = sqlx::query_as!(
            Transition,
            r#"SELECT from_state AS "from", to_state AS "to", event, applied, actor, at, detail
               FROM saga_transition WHERE saga_id = $1 ORDER BY id"#,
            id.0
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(Json(SagaDetail { saga, transitions }))
    }
}
