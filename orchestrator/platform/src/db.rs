//! The Postgres pool and the migrations every process runs at start-up.

use std::time::Duration;

use sqlx::{
    Connection, Executor, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Config;

/// The schema, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A pooled connection idle for longer is pinged before use.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Connects and migrates. Concurrent starts are safe: sqlx serializes migrations with an
/// advisory lock. Every connection carries the statement timeout, so that a statement stuck on
/// a lock or a runaway query is cancelled by Postgres itself and its transaction rolled back.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.database_url.parse()?;
    let timeout = config.db_statement_timeout.as_millis().to_string();
    let options = options.options([("statement_timeout", timeout.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // A ping before every use is one more round trip per checkout. Only a connection idle for
        // a while, across which the server may have restarted, is checked; a busy one would fail
        // its next statement anyway, like any in flight.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_CHECK {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    // A migration may rewrite a large table: it runs without the statement timeout.
    let mut conn = pool.acquire().await?;
    conn.execute("SET statement_timeout = 0").await?;
    let migrated = MIGRATOR.run(&mut *conn).await;
    conn.execute("RESET statement_timeout").await?;
    migrated?;
    Ok(pool)
}

/// Whether the database failed in a way that passes, so that the client should retry rather
/// than report a fault: it cannot be reached or the connection broke (I/O, TLS, protocol, class
/// 08), it is out of connections or resources (a pool timeout, class 53), it is shutting down or
/// starting up (class 57), it lost its system resources (class 58), or the transaction lost a
/// race it can win on a retry (class 40: serialization failure, deadlock).
pub fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class)))
        }
        _ => false,
    }
}
