//! `/sagas` and `/replenishments`: what every saga is doing, why one is stuck, and the operators'
//! actions on it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use platform::saga::{Action, store};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json, types::Example};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::example;
use super::role::{Needs, Operator};
use super::{
    Tag,
    consistency::MayLag,
    input::{self, Free, Id, Line, Optional, Text},
    page::{self, Limit, page_of},
    problem::{ApiResult, CONFLICT, NOT_FOUND, Problem, UNAVAILABLE},
};
use crate::{Context, access::audit::Audit, inventory, operator};

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Saga {
    pub id: Uuid,
    /// The saga kind, e.g. `replenishment`.
    pub kind: String,
    /// One of its kind's states: for a replenishment, requested, dispatched, received,
    /// compensating, compensated, failed or resolved.
    pub state: String,
    /// What it waits on in that state, as its kind declares: `participant` (a worker's answer),
    /// `person` (a picker's), `operator` (nothing moves it until one acts), or `nothing` (done).
    pub awaits: String,
    /// Waiting for an operator, or open with nothing that will move it: past its deadline (no
    /// engine is sweeping) or without one (set aside as unreadable).
    pub stuck: bool,
    /// The saga's own data, as its kind keeps it.
    pub data: Value,
    /// Sends so far of the command the saga is waiting on.
    pub attempt: i32,
    /// When the outstanding command is resent (or the step given up) if no reply comes.
    #[oai(nullable)]
    pub deadline_at: Option<DateTime<Utc>>,
    /// Why the saga is unwinding or failed.
    #[oai(nullable)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it entered its current state.
    pub state_entered_at: DateTime<Utc>,
    #[oai(nullable)]
    pub closed_at: Option<DateTime<Utc>>,
    /// The W3C trace id every message of the saga carries in its `traceparent`.
    #[oai(nullable)]
    pub trace_id: Option<String>,
}

impl Example for Saga {
    fn example() -> Self {
        let data = sagas::replenishment::Data {
            shipment_id: Some(example::SHIPMENT),
            quantity_shipped: Some(16),
            ..sagas::replenishment::Data::new(example::STORE, example::PRODUCT, 16)
        };
        Self {
            id: example::SAGA,
            kind: "replenishment".into(),
            state: "received".into(),
            awaits: "nothing".into(),
            stuck: false,
            data: serde_json::to_value(data).unwrap_or_default(),
            attempt: 1,
            deadline_at: None,
            last_error: None,
            created_at: example::at(3),
            updated_at: example::at(4),
            state_entered_at: example::at(4),
            closed_at: Some(example::at(4)),
            trace_id: Some(example::TRACE_ID.into()),
        }
    }
}

/// One line of a saga's timeline.
#[derive(Clone, Debug, Object, serde::Deserialize)]
#[oai(example)]
pub struct Transition {
    /// Absent for the first line.
    #[oai(nullable)]
    pub from: Option<String>,
    pub to: String,
    /// What happened: the reply's type, `DeadlineExceeded`, `CommandResent`, `RetryRequested`, …
    pub event: String,
    /// false when the event was refused by the transition function (recorded, not applied).
    pub applied: bool,
    /// Who acted: `low-stock`, `participant`, `engine`, or `operator:<name>`.
    pub actor: String,
    pub at: DateTime<Utc>,
    /// For a line that left a state: how long the saga had been in it, in milliseconds.
    #[oai(nullable)]
    pub took_ms: Option<f64>,
    pub detail: Value,
}

impl Example for Transition {
    fn example() -> Self {
        Self {
            from: Some("requested".into()),
            to: "dispatched".into(),
            event: "ShipmentDispatched".into(),
            applied: true,
            actor: "participant".into(),
            at: example::at(3),
            took_ms: Some(41.5),
            detail: serde_json::json!({"shipment_id": example::SHIPMENT, "quantity": 16}),
        }
    }
}

/// The command a saga waits on.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct OutstandingCommand {
    /// e.g. `DispatchShipment`.
    #[oai(rename = "type")]
    pub kind: String,
    pub payload: Value,
}

impl Example for OutstandingCommand {
    fn example() -> Self {
        Self {
            kind: "DispatchShipment".into(),
            payload: serde_json::json!({
                "saga_id": example::SAGA,
                "store_id": example::STORE,
                "product_id": example::PRODUCT,
                "quantity": 16,
            }),
        }
    }
}

/// A message of the saga: one it sent (from the outbox) or one a consumer received (from its inbox).
#[derive(Clone, Debug, Object, serde::Deserialize)]
#[oai(example)]
pub struct SagaMessage {
    /// `sent` or `received`.
    pub direction: String,
    pub message_id: Uuid,
    #[oai(rename = "type")]
    #[oai(nullable)]
    pub kind: Option<String>,
    /// Sent: `<exchange> <routing key>`; received: the consumer that handled it.
    pub route: String,
    /// Written to the outbox, or handled by the consumer.
    pub at: DateTime<Utc>,
    /// Sent: whether the broker has confirmed it (false while it waits to be published); absent
    /// for a received one.
    #[oai(nullable)]
    pub published: Option<bool>,
    /// Sent: its W3C `traceparent`.
    #[oai(nullable)]
    pub traceparent: Option<String>,
}

impl Example for SagaMessage {
    fn example() -> Self {
        Self {
            direction: "sent".into(),
            message_id: example::ORDER,
            kind: Some("DispatchShipment".into()),
            route: "darkstores.commands warehouse".into(),
            at: example::at(3),
            published: Some(true),
            traceparent: Some(example::TRACEPARENT.into()),
        }
    }
}

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct SagaDetail {
    #[oai(flatten)]
    pub saga: Saga,
    /// The command the saga waits on (resent at `deadline_at`, `attempt` sends so far); absent
    /// when it waits on nothing.
    #[oai(nullable)]
    pub outstanding: Option<OutstandingCommand>,
    /// The timeline, oldest first.
    pub transitions: Vec<Transition>,
    /// Messages sent and received for the saga, oldest first, as long as retention keeps them: a
    /// sent one for `OUTBOX_RETENTION_MS` after it was written, once published (1 hour by
    /// default), a received one for `INBOX_RETENTION_MS` (7 days).
    pub messages: Vec<SagaMessage>,
}

impl Example for SagaDetail {
    /// The walk's replenishment on the road: dispatched, waiting for the store to take it in.
    fn example() -> Self {
        let line = |from: Option<&str>, to: &str, event: &str| Transition {
            from: from.map(Into::into),
            to: to.into(),
            event: event.into(),
            took_ms: from.map(|_| 41.5),
            ..Transition::example()
        };
        let saga = Saga {
            state: "dispatched".into(),
            awaits: "participant".into(),
            deadline_at: Some(example::at(4)),
            updated_at: example::at(3),
            state_entered_at: example::at(3),
            closed_at: None,
            ..Saga::example()
        };
        Self {
            saga,
            outstanding: Some(OutstandingCommand::example()),
            transitions: vec![
                line(None, "requested", "Started"),
                line(Some("requested"), "dispatched", "ShipmentDispatched"),
            ],
            messages: vec![SagaMessage::example()],
        }
    }
}

page_of!(SagaPage, Saga);

/// Why an operator acts: it goes into the saga's timeline, beside the key that acted.
#[derive(Clone, Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct OperatorRequest {
    pub reason: Free<2000>,
}

impl Example for OperatorRequest {
    fn example() -> Self {
        Self { reason: Free::example("the warehouse confirmed by phone that the shipment left") }
    }
}

/// Closing a failed saga after a human put things right.
#[derive(Clone, Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct ResolveRequest {
    /// What was done by hand.
    pub note: Free<2000>,
}

impl Example for ResolveRequest {
    fn example() -> Self {
        Self { note: Free::example("counted on arrival: all 16 units are on the shelf") }
    }
}

/// A replenishment started by hand; the timeline names the key that started it.
#[derive(Clone, Debug, Object)]
#[oai(example)]
#[oai(deny_unknown_fields)]
pub struct NewReplenishment {
    pub store_id: Id,
    pub product_id: Id,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub quantity: i64,
    pub reason: Optional<Free<2000>>,
}

impl Example for NewReplenishment {
    fn example() -> Self {
        Self {
            store_id: Id(example::STORE),
            product_id: Id(example::PRODUCT),
            quantity: 5,
            reason: Optional(Some(Free::example("festival weekend"))),
        }
    }
}

#[derive(ApiResponse)]
pub(super) enum Created {
    /// Started; the saga as it is now.
    #[oai(status = 201)]
    Saga(Json<SagaDetail>),
}

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct OldestSaga {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub age_seconds: f64,
}

impl Example for OldestSaga {
    fn example() -> Self {
        Self {
            id: example::SAGA,
            kind: "replenishment".into(),
            state: "dispatched".into(),
            created_at: example::at(3),
            age_seconds: 1.8,
        }
    }
}

/// Latency of one step (leaving `from` for `to`) over the window.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct StepLatency {
    pub kind: String,
    pub from: String,
    pub to: String,
    pub count: i64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Example for StepLatency {
    fn example() -> Self {
        Self {
            kind: "replenishment".into(),
            from: "requested".into(),
            to: "dispatched".into(),
            count: 1,
            p50_ms: 41.5,
            p95_ms: 41.5,
            p99_ms: 41.5,
        }
    }
}

/// How many sagas of a kind are in a state.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct StateCount {
    pub kind: String,
    pub state: String,
    pub count: i64,
}

impl Example for StateCount {
    fn example() -> Self {
        Self { kind: "replenishment".into(), state: "received".into(), count: 1 }
    }
}

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct SagaStats {
    /// Every saga ever started, by kind and state.
    pub counts: Vec<StateCount>,
    pub open: i64,
    /// Sagas stuck now (see `stuck` on a saga).
    pub stuck: i64,
    /// The open saga started longest ago.
    #[oai(nullable)]
    pub oldest_open: Option<OldestSaga>,
    /// Steps taken within the last `window_seconds`.
    pub step_latency: Vec<StepLatency>,
    pub window_seconds: i64,
}

impl Example for SagaStats {
    fn example() -> Self {
        let count = |kind: &str, state: &str| StateCount { kind: kind.into(), state: state.into(), count: 1 };
        Self {
            counts: vec![count("order_fulfilment", "paid"), count("replenishment", "received")],
            open: 1,
            stuck: 0,
            oldest_open: Some(OldestSaga {
                id: example::ORDER,
                kind: "order_fulfilment".into(),
                state: "paid".into(),
                created_at: example::at(3),
                age_seconds: 95.0,
            }),
            step_latency: vec![StepLatency::example()],
            window_seconds: 3600,
        }
    }
}

/// Step latency is reported over this recent window.
const LATENCY_WINDOW_SECONDS: i64 = 3600;

pub struct SagasApi {
    pub ctx: Context,
}

input::rule!(
    /// The saga list's cursor: the creation time (µs since the epoch) and id of a page's last saga.
    SagaCursor,
    "^[0-9]{1,16}-[0-9a-f]{32}$",
    "a cursor from a page's next_cursor"
);

/// A cursor [`SagaCursor`]'s pattern admitted: 16 digits of microseconds are within any date
/// chrono holds, so it always reads.
fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = cursor.split_once('-')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, Uuid::try_parse(id).ok()?))
}

fn cursor_of(saga: &Saga) -> String {
    format!("{}-{}", saga.created_at.timestamp_micros(), saga.id.simple())
}

/// Which sagas to read; every field left `None` matches all.
#[derive(Clone, Debug, Default)]
struct SagaFilter {
    id: Option<Uuid>,
    /// Keyset cursor: only sagas after this (created_at, id).
    after: Option<(DateTime<Utc>, Uuid)>,
    kind: Option<Line<64>>,
    state: Option<Line<64>>,
    store_id: Option<Uuid>,
    product_id: Option<Uuid>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    updated_after: Option<DateTime<Utc>>,
    updated_before: Option<DateTime<Utc>>,
    stuck: Option<bool>,
}

/// Sagas matching `filter`, oldest first.
async fn find(conn: &mut PgConnection, filter: SagaFilter, limit: i64) -> sqlx::Result<Vec<Saga>> {
    sqlx::query_as!(
        Saga,
        r#"SELECT id, kind, state, awaits, saga_stuck(awaits, closed_at, deadline_at) AS "stuck!", data, attempt,
                  deadline_at, last_error, created_at, updated_at, state_entered_at, closed_at, trace_id
           FROM saga
           WHERE ($1::uuid IS NULL OR id = $1)
             AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
             AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR state = $5)
             AND (($6::uuid IS NULL AND $7::uuid IS NULL) OR id IN (
                 SELECT saga_id FROM saga_concern
                 WHERE ($6::uuid IS NULL OR store_id = $6) AND ($7::uuid IS NULL OR product_id = $7)))
             AND ($8::timestamptz IS NULL OR created_at >= $8) AND ($9::timestamptz IS NULL OR created_at <= $9)
             AND ($10::timestamptz IS NULL OR updated_at >= $10) AND ($11::timestamptz IS NULL OR updated_at <= $11)
             AND ($12::bool IS NULL OR saga_stuck(awaits, closed_at, deadline_at) = $12)
           ORDER BY created_at, id LIMIT $13"#,
        filter.id,
        filter.after.map(|(at, _)| at),
        filter.after.map_or(Uuid::nil(), |(_, id)| id),
        filter.kind.as_deref(),
        filter.state.as_deref(),
        filter.store_id,
        filter.product_id,
        filter.created_after,
        filter.created_before,
        filter.updated_after,
        filter.updated_before,
        filter.stuck,
        limit
    )
    .fetch_all(conn)
    .await
}

pub(super) async fn saga_detail(conn: &mut PgConnection, ctx: &Context, id: Uuid) -> Result<SagaDetail, Problem> {
    // The saga, its timeline and its messages in one statement, each list aggregated to JSON in
    // its order.
    let row = sqlx::query!(
        r#"SELECT id, kind, state, awaits, saga_stuck(awaits, closed_at, deadline_at) AS "stuck!", data, attempt,
                  deadline_at, last_error, created_at, updated_at, state_entered_at, closed_at, trace_id,
             (SELECT COALESCE(json_agg(t ORDER BY t.id), '[]')
              FROM (SELECT id, from_state AS "from", to_state AS "to", event, applied, actor, at, took_ms, detail
                    FROM saga_transition WHERE saga_id = $1) t) AS "transitions!: sqlx::types::Json<Vec<Transition>>",
             (SELECT COALESCE(json_agg(m ORDER BY m.at, m.direction DESC), '[]')
              FROM (SELECT 'sent' AS direction, message_id, message_type AS kind,
                           exchange || ' ' || routing_key AS route, created_at AS at,
                           NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id) AS published,
                           headers->>'traceparent' AS traceparent
                    FROM outbox o WHERE correlation_id = $1
                    UNION ALL
                    SELECT 'received', message_id, message_type, consumer, received_at, NULL::bool, NULL
                    FROM inbox WHERE correlation_id = $1) m) AS "messages!: sqlx::types::Json<Vec<SagaMessage>>"
           FROM saga WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Problem::not_found(format!("no saga {id}")))?;
    let saga = Saga {
        id: row.id,
        kind: row.kind,
        state: row.state,
        awaits: row.awaits,
        stuck: row.stuck,
        data: row.data,
        attempt: row.attempt,
        deadline_at: row.deadline_at,
        last_error: row.last_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        state_entered_at: row.state_entered_at,
        closed_at: row.closed_at,
        trace_id: row.trace_id,
    };
    // A saga the engine cannot read shows no outstanding command; its `last_error` says why.
    let outstanding = ctx
        .registry
        .driver(&saga.kind)
        .and_then(|driver| driver.outstanding(saga.id, &saga.state, &saga.data))
        .ok()
        .flatten()
        .map(|command| OutstandingCommand { kind: command.message_type, payload: command.payload });
    Ok(SagaDetail { saga, outstanding, transitions: row.transitions.0, messages: row.messages.0 })
}

/// What an operator's action may answer besides the saga.
const ACTION_ERRORS: u8 = NOT_FOUND | CONFLICT | UNAVAILABLE;

impl SagasApi {
    async fn act(&self, audit: &Audit, id: Uuid, action: Action) -> ApiResult<Json<SagaDetail>, ACTION_ERRORS> {
        operator::act(&self.ctx, audit, id, action).await?;
        let mut conn = self.ctx.pool.acquire().await?;
        Ok(Json(saga_detail(&mut conn, &self.ctx, id).await?))
    }
}

#[OpenApi(tag = "Tag::Sagas")]
impl SagasApi {
    /// List sagas
    ///
    /// Oldest first. Filters combine: kind, state, the store and product a saga concerns (for every
    /// kind: an order's saga concerns each product it lists), when it was created and last
    /// changed, and `stuck=true` for sagas waiting for an operator or that nothing will move on
    /// (past their deadline, or set aside as unreadable).
    #[oai(path = "/sagas", method = "get", operation_id = "listSagas")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _role: Needs<Operator>,
        /// e.g. `replenishment`.
        kind: Query<Option<Line<64>>>,
        /// e.g. `dispatched`.
        state: Query<Option<Line<64>>>,
        store_id: Query<Option<Id>>,
        product_id: Query<Option<Id>>,
        /// Created at or after this instant (RFC 3339).
        created_after: Query<Option<DateTime<Utc>>>,
        /// Created at or before this instant.
        created_before: Query<Option<DateTime<Utc>>>,
        /// Last changed at or after this instant.
        updated_after: Query<Option<DateTime<Utc>>>,
        /// Last changed at or before this instant.
        updated_before: Query<Option<DateTime<Utc>>>,
        /// true: only stuck sagas; false: only those that are not.
        stuck: Query<Option<bool>>,
        limit: Query<Option<Limit>>,
        cursor: Query<Option<Text<SagaCursor, 49>>>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<SagaPage>, UNAVAILABLE> {
        let fetch = page::fetch_limit(limit.0);
        let filter = SagaFilter {
            id: None,
            after: cursor.0.as_deref().and_then(parse_cursor),
            kind: kind.0,
            state: state.0,
            store_id: store_id.0.map(Uuid::from),
            product_id: product_id.0.map(Uuid::from),
            created_after: created_after.0,
            created_before: created_before.0,
            updated_after: updated_after.0,
            updated_before: updated_before.0,
            stuck: stuck.0,
        };
        let rows = lag
            .run(&self.ctx.reads, "listSagas", |pool| {
                let filter = filter.clone();
                async move { find(&mut *pool.acquire().await?, filter, fetch).await }
            })
            .await?;
        let (items, next_cursor) = page::split(rows, fetch, cursor_of);
        Ok(Json(SagaPage { items, next_cursor }))
    }

    /// Saga counts, the oldest open saga, and step latency
    #[oai(path = "/sagas/stats", method = "get", operation_id = "sagaStats")]
    async fn stats(
        &self,
        _role: Needs<Operator>,
        #[oai(name = "Consistency-Token")] lag: MayLag,
    ) -> ApiResult<Json<SagaStats>, UNAVAILABLE> {
        let stats = lag
            .run(&self.ctx.reads, "sagaStats", |pool| async move { saga_stats(&mut *pool.acquire().await?).await })
            .await?;
        Ok(Json(stats))
    }

    /// Get a saga: its timeline, the command it waits on, and its messages
    #[oai(path = "/sagas/:id", method = "get", operation_id = "getSaga")]
    async fn get(
        &self,
        _role: Needs<Operator>,
        id: Path<Id>,
    ) -> ApiResult<Json<SagaDetail>, { NOT_FOUND | UNAVAILABLE }> {
        let mut conn = self.ctx.pool.acquire().await?;
        Ok(Json(saga_detail(&mut conn, &self.ctx, *id.0).await?))
    }

    /// Retry the saga's current step now
    ///
    /// Sends the command the saga waits on again at once, with its attempts reset. For a failed
    /// replenishment, takes up the failed cancellation again (back to compensating). 409 when the
    /// saga waits on nothing that can be retried (received, compensated, resolved).
    #[oai(path = "/sagas/:id/retry", method = "post", operation_id = "retrySaga")]
    async fn retry(
        &self,
        _role: Needs<Operator>,
        id: Path<Id>,
        body: Json<OperatorRequest>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<SagaDetail>, ACTION_ERRORS> {
        self.act(&audit, *id.0, Action::Retry { reason: body.0.reason.into_inner() }).await
    }

    /// Unwind the saga now
    ///
    /// Compensates a saga that has not finished its forward steps. 409 when its state does not allow it.
    #[oai(path = "/sagas/:id/compensate", method = "post", operation_id = "compensateSaga")]
    async fn compensate(
        &self,
        _role: Needs<Operator>,
        id: Path<Id>,
        body: Json<OperatorRequest>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<SagaDetail>, ACTION_ERRORS> {
        self.act(&audit, *id.0, Action::Compensate { reason: body.0.reason.into_inner() }).await
    }

    /// Close a failed saga after a human fixed things
    ///
    /// 409 unless the saga is `failed`.
    #[oai(path = "/sagas/:id/resolve", method = "post", operation_id = "resolveSaga")]
    async fn resolve(
        &self,
        _role: Needs<Operator>,
        id: Path<Id>,
        body: Json<ResolveRequest>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Json<SagaDetail>, ACTION_ERRORS> {
        self.act(&audit, *id.0, Action::Resolve { note: body.0.note.into_inner() }).await
    }
}

/// Replenishments started by hand: a saga of the `replenishment` kind, answered with its detail.
pub struct ReplenishmentsApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Replenishments")]
impl ReplenishmentsApi {
    /// Start a replenishment by hand
    ///
    /// Whatever the store's stock level. 404 when the store does not stock the product; 409 when a
    /// replenishment of it is already open.
    #[oai(path = "/replenishments", method = "post", operation_id = "startReplenishment")]
    async fn start(
        &self,
        _role: Needs<Operator>,
        body: Json<NewReplenishment>,
        audit: Data<&Arc<Audit>>,
    ) -> ApiResult<Created, { NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let NewReplenishment { store_id, product_id, quantity, reason } = body.0;
        // One connection for the start and the answer.
        let mut conn = self.ctx.pool.acquire().await?;
        let reason = reason.into_inner();
        let (store_id, product_id) = (*store_id, *product_id);
        let start = inventory::Start { store_id, product_id, quantity, reason: reason.as_deref() };
        let saga_id = inventory::start_replenishment(&self.ctx, &mut conn, &audit, start).await?;
        Ok(Created::Saga(Json(saga_detail(&mut conn, &self.ctx, saga_id).await?)))
    }
}

/// Saga counts by kind and state, the open and stuck ones, the oldest open, and step latency.
async fn saga_stats(conn: &mut PgConnection) -> sqlx::Result<SagaStats> {
    let counts = store::count_by_state(&mut *conn).await?;
    let totals = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE closed_at IS NULL) AS "open!",
                  count(*) FILTER (WHERE saga_stuck(awaits, closed_at, deadline_at)) AS "stuck!"
           FROM saga WHERE closed_at IS NULL OR awaits = 'operator'"#
    )
    .fetch_one(&mut *conn)
    .await?;
    let oldest_open = sqlx::query_as!(
        OldestSaga,
        r#"SELECT id, kind, state, created_at,
                  extract(epoch FROM now() - created_at)::float8 AS "age_seconds!"
           FROM saga WHERE closed_at IS NULL ORDER BY created_at LIMIT 1"#
    )
    .fetch_optional(&mut *conn)
    .await?;
    let step_latency = sqlx::query_as!(
        StepLatency,
        r#"SELECT s.kind, t.from_state AS "from!", t.to_state AS "to", count(*) AS "count!",
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY t.took_ms) AS "p50_ms!",
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY t.took_ms) AS "p95_ms!",
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY t.took_ms) AS "p99_ms!"
           FROM saga_transition t JOIN saga s ON s.id = t.saga_id
           WHERE t.took_ms IS NOT NULL AND t.at > now() - make_interval(secs => $1)
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"#,
        LATENCY_WINDOW_SECONDS as f64
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(SagaStats {
        counts: counts.into_iter().map(|c| StateCount { kind: c.kind, state: c.state, count: c.count }).collect(),
        open: totals.open,
        stuck: totals.stuck,
        oldest_open,
        step_latency,
        window_seconds: LATENCY_WINDOW_SECONDS,
    })
}
