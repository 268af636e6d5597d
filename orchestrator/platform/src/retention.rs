//! Retention: the janitor that keeps the tables written by every message and every saga bounded.
//!
//! Without it, `outbox` (published rows), `inbox` (one row per handled message) and `saga` with
//! its timeline and its kinds' rows grow for as long as the deployment runs. Every
//! [`Retention::interval`] the [`Janitor`] removes, from each in turn, what is older than its
//! [`Retention`]: published messages, inbox rows past the deduplication window, and sagas closed
//! long ago (never one that waits for an operator). The SQL lives with each table
//! ([`outbox::delete_published`], [`inbox::delete_old`], [`store::delete_closed`]).
//!
//! Each batch is one short statement, its own transaction, over rows found through an index and
//! locked with `SKIP LOCKED`: it never scans a hot table, never waits for a row someone else
//! holds, and never blocks the relay, the consumers or the engine for long. The same skipping
//! lets any number of janitors run at once (one per engine process) without getting in each
//! other's way: each takes the rows the others have not. Workers' outbox and inbox rows are in
//! the same database, so the orchestrator's janitor removes theirs too.

use sqlx::PgPool;

use crate::{
    config::Retention,
    messaging::{inbox, outbox},
    saga::store,
    shutdown::Shutdown,
};

/// Rows removed per batch: few enough that each transaction stays short; a backlog is worked off
/// batch after batch.
pub const BATCH: i64 = 1_000;

/// The tables the janitor prunes, as `retention_deleted_total` labels them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Table {
    Outbox,
    Inbox,
    /// Sagas; their timelines and kinds' rows go with them.
    Saga,
}

impl Table {
    pub const ALL: [Self; 3] = [Self::Outbox, Self::Inbox, Self::Saga];
}

/// Rows removed by one pass, by table (sagas counted without their timelines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub outbox: u64,
    pub inbox: u64,
    pub sagas: u64,
}

/// Removes what has outlived its retention, in batches of `batch` rows.
#[derive(Clone, Debug)]
pub struct Janitor {
    pub pool: PgPool,
    pub retention: Retention,
    pub batch: i64,
}

impl Janitor {
    pub fn new(pool: PgPool, retention: Retention) -> Self {
        Self { pool, retention, batch: BATCH }
    }

    /// A pass at once, then one every interval, until shutdown. A pass that fails is logged and
    /// tried again at the next interval.
    pub async fn run(self, mut shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            self.pass(&shutdown).await;
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.retention.interval) => {}
            }
        }
    }

    /// Prunes each table until a batch comes back short (or shutdown is triggered), and returns
    /// what it removed. An error on one table is logged and does not stop the others.
    pub async fn pass(&self, shutdown: &Shutdown) -> Removed {
        let mut removed = Removed::default();
        for table in Table::ALL {
            if shutdown.is_triggered() {
                break;
            }
            let count = match table {
                Table::Outbox => &mut removed.outbox,
                Table::Inbox => &mut removed.inbox,
                Table::Saga => &mut removed.sagas,
            };
            let outcome = self.prune(table, shutdown, count).await;
            let name: &'static str = table.into();
            if *count > 0 {
                tracing::info!(table = name, removed = *count, "removed rows past their retention");
            }
            if let Err(error) = outcome {
                tracing::warn!(table = name, %error, "retention pass failed; retrying at the next interval");
            }
        }
        removed
    }

    /// Batches on `table` until one comes back short, adding each to `removed` as it commits.
    async fn prune(&self, table: Table, shutdown: &Shutdown, removed: &mut u64) -> sqlx::Result<()> {
        let name: &'static str = table.into();
        let batch = self.batch.max(1);
        loop {
            let deleted = {
                let mut conn = self.pool.acquire().await?;
                match table {
                    Table::Outbox => outbox::delete_published(&mut conn, self.retention.outbox, batch).await?,
                    Table::Inbox => inbox::delete_old(&mut conn, self.retention.inbox, batch).await?,
                    Table::Saga => store::delete_closed(&mut conn, self.retention.saga, batch).await?,
                }
            };
            *removed += deleted;
            metrics::counter!("retention_deleted_total", "table" => name).increment(deleted);
            if deleted < batch.unsigned_abs() || shutdown.is_triggered() {
                return Ok(());
            }
            // A long backlog is worked off batch after batch; let the process's other tasks in.
            tokio::task::yield_now().await;
        }
    }
}
