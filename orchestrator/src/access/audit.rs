//! The audit trail: one append-only row per change requested through the API, by any key.
//!
//! A change writes its row in the transaction of its effect ([`Audit::record`]), so neither
//! exists without the other. A request that ends without committing an effect (refused,
//! invalid, failed) is recorded by the API layer once it is answered ([`Audit::finish`]). The
//! database refuses to update or delete a row.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use poem_openapi::{Object, types::Example};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Caller, Role};
use crate::http::example;

/// One request that asked for a change, as the audit keeps it.
#[derive(Debug)]
pub struct Audit {
    pub caller: Arc<Caller>,
    pub method: String,
    /// The operation's path pattern, e.g. `/orders/{id}/cancel`.
    pub route: Arc<str>,
    pub request_id: String,
    pub trace_id: String,
    /// Path parameters, then whatever the handler names (e.g. what it created).
    ids: Mutex<Map<String, Value>>,
    /// The status recorded with the effect, if a row was written in its transaction.
    recorded: Mutex<Option<u16>>,
}

impl Audit {
    pub fn new(
        caller: Arc<Caller>,
        method: String,
        route: Arc<str>,
        ids: Map<String, Value>,
        request_id: String,
        trace_id: String,
    ) -> Self {
        Self { caller, method, route, request_id, trace_id, ids: Mutex::new(ids), recorded: Mutex::new(None) }
    }

    /// How the caller appears in a saga's timeline.
    pub fn actor(&self) -> String {
        self.caller.actor()
    }

    /// Adds an id the request named or created to its row.
    pub fn name(&self, what: &str, id: impl ToString) {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).insert(what.to_owned(), Value::String(id.to_string()));
    }

    /// Writes the row in the caller's transaction, as answered with `status`: call it in the
    /// transaction that makes the change, just before its commit.
    pub async fn record(&self, tx: &mut PgConnection, status: u16) -> sqlx::Result<()> {
        self.insert(tx, status).await?;
        *self.recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        Ok(())
    }

    /// Once the request is answered with `status`: writes the row unless the change already
    /// wrote it with that status (a request answered otherwise than its effect recorded, say a
    /// commit that failed, gets a row for what it was answered).
    pub async fn finish(&self, pool: &PgPool, status: u16) {
        if *self.recorded.lock().unwrap_or_else(|p| p.into_inner()) == Some(status) {
            return;
        }
        let written = async { self.insert(&mut *pool.acquire().await?, status).await }.await;
        if let Err(error) = written {
            metrics::counter!("audit_write_failures_total").increment(1);
            tracing::error!(%error, route = &*self.route, status, "audit row could not be written");
        }
    }

    async fn insert(&self, conn: &mut PgConnection, status: u16) -> sqlx::Result<()> {
        let ids = Value::Object(self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone());
        sqlx::query!(
            "INSERT INTO audit (key_id, key_name, role, method, route, ids, request_id, trace_id, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            self.caller.key_id,
            self.caller.name,
            self.caller.role.as_ref(),
            self.method,
            &*self.route,
            ids,
            self.request_id,
            self.trace_id,
            status as i16
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// One change requested through the API, or a key's attempt beyond its role, as read back.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
    pub method: String,
    /// The operation's path pattern, e.g. `/orders/{id}/cancel`.
    pub route: String,
    /// What the request named: its path parameters and what it created.
    pub ids: Value,
    pub request_id: String,
    pub trace_id: String,
    /// The HTTP status it was answered with.
    pub status: u16,
}

impl Example for AuditEntry {
    fn example() -> Self {
        Self {
            id: 1,
            at: example::at(0),
            key_id: example::KEY,
            key_name: "admin".into(),
            role: Role::Admin,
            method: "POST".into(),
            route: "/stores".into(),
            ids: serde_json::json!({"store_id": example::STORE}),
            request_id: "0193f1a2-6b7c-7d8e-9f00-112233445566".into(),
            trace_id: example::TRACE_ID.into(),
            status: 201,
        }
    }
}

/// Which rows to read; `None` matches all.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only rows older than this id (the cursor: newest first).
    pub before: Option<i64>,
    pub key_id: Option<Uuid>,
    pub route: Option<String>,
    pub status: Option<u16>,
    /// `at` at or after.
    pub from: Option<DateTime<Utc>>,
    /// `at` before.
    pub to: Option<DateTime<Utc>>,
}

/// Rows matching `filter`, newest first.
pub async fn list(conn: &mut PgConnection, filter: &Filter, limit: i64) -> sqlx::Result<Vec<AuditEntry>> {
    let rows = sqlx::query!(
        "SELECT id, at, key_id, key_name, role, method, route, ids, request_id, trace_id, status FROM audit
         WHERE ($1::int8 IS NULL OR id < $1) AND ($2::uuid IS NULL OR key_id = $2)
           AND ($3::text IS NULL OR route = $3) AND ($4::int2 IS NULL OR status = $4)
           AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)
         ORDER BY id DESC LIMIT $7",
        filter.before,
        filter.key_id,
        filter.route,
        filter.status.map(|s| s as i16),
        filter.from,
        filter.to,
        limit
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AuditEntry {
                role: r.role.parse().map_err(|_| sqlx::Error::Decode(format!("unknown role {:?}", r.role).into()))?,
                id: r.id,
                at: r.at,
                key_id: r.key_id,
                key_name: r.key_name,
                method: r.method,
                route: r.route,
                ids: r.ids,
                request_id: r.request_id,
                trace_id: r.trace_id,
                status: u16::try_from(r.status).unwrap_or_default(),
            })
        })
        .collect()
}
