//! The Postgres pool and the migrations every process runs at start-up.

use std::time::Duration;

use sqlx::{Connection, PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::config::Config;

/// The schema, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A pooled connection idle for longer is pinged before use.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Connects and migrates. Concurrent starts are safe: sqlx serializes migrations with an
/// advisory lock.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
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
        .connect(&config.database_url)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
