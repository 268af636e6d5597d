//! Liveness of the worker processes: each records a heartbeat per role it runs (orchestrator,
//! warehouse, inventory) in `worker_instance`, so operators can see which processes are alive
//! without access to the hosts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::shutdown::Shutdown;

/// How often a process reports.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// A process is alive while its last report is younger than this: three missed beats.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(15);
/// Stopped or silent processes stay listed this long, then are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One process's heartbeat.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    pub pool: PgPool,
    pub instance_id: Uuid,
    pub roles: Vec<&'static str>,
    /// The machine it runs on, as the configuration read it.
    pub hostname: String,
}

impl Heartbeat {
    pub fn new(pool: PgPool, roles: Vec<&'static str>, hostname: String) -> Self {
        Self { pool, instance_id: Uuid::new_v4(), roles, hostname }
    }

    /// Reports until shutdown, then says the process stopped. A failed report (database away) is
    /// tried again at the next beat: missing beats is exactly what the liveness view shows.
    pub async fn run(self, mut shutdown: Shutdown) {
        let hostname = &self.hostname;
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        loop {
            let beat = async {
                let mut conn = self.pool.acquire().await?;
                beat(&mut conn, self.instance_id, &self.roles, hostname, pid).await
            };
            if let Err(error) = beat.await {
                tracing::warn!(%error, "heartbeat not recorded");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        }
        if let Ok(mut conn) = self.pool.acquire().await
            && let Err(error) = stopped(&mut conn, self.instance_id).await
        {
            tracing::warn!(%error, "could not record the process as stopped");
        }
    }
}

pub async fn beat(
    conn: &mut PgConnection,
    instance_id: Uuid,
    roles: &[&str],
    hostname: &str,
    pid: i32,
) -> sqlx::Result<()> {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    sqlx::query!(
        "INSERT INTO worker_instance (id, role, hostname, pid)
         SELECT $1, role, $3, $4 FROM UNNEST($2::text[]) AS role
         ON CONFLICT (id, role) DO UPDATE SET last_seen_at = now(), stopped_at = NULL",
        instance_id,
        &roles,
        hostname,
        pid
    )
    .execute(&mut *conn)
    .await?;
    // Every live process tidies up after the long gone.
    let forget = FORGET_AFTER.as_secs_f64();
    sqlx::query!("DELETE FROM worker_instance WHERE last_seen_at < now() - make_interval(secs => $1)", forget)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn stopped(conn: &mut PgConnection, instance_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("UPDATE worker_instance SET stopped_at = now() WHERE id = $1", instance_id).execute(conn).await?;
    Ok(())
}

/// A process as last reported.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: Uuid,
    pub role: String,
    pub hostname: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub alive: bool,
}

/// Every process heard from within [`FORGET_AFTER`].
pub async fn instances(conn: &mut PgConnection) -> sqlx::Result<Vec<Instance>> {
    sqlx::query_as!(
        Instance,
        r#"SELECT id, role, hostname, pid, started_at, last_seen_at, stopped_at,
                  (stopped_at IS NULL AND last_seen_at > now() - make_interval(secs => $1)) AS "alive!"
           FROM worker_instance ORDER BY role, started_at"#,
        ALIVE_WITHIN.as_secs_f64()
    )
    .fetch_all(conn)
    .await
}
