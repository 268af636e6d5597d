//! `orchestrator after-restore`: makes the broker and the cache agree with a database restored to
//! an earlier moment (`scripts/restore`), before the system starts on it.
//!
//! Everything the system and its participants know is in that one database, so the restore moved
//! all of them back together. What did not move back is outside it: the messages in RabbitMQ and
//! the cached stock levels come from a future the database no longer has. A command in a queue
//! may belong to a step its saga has not taken yet, or will take differently; acting on it would
//! be an effect the restored records do not show. So the deployment's queues are purged, the
//! cache is emptied, and every message the restored outbox had sent but no consumer's inbox
//! records as handled is marked to be sent again: those were in the broker, or on their way, at
//! the restored moment. A consumer that had handled one after all finds its record and does
//! nothing. Sagas then resume from their restored state; their deadlines have passed, so each
//! sends its step again, which the participants absorb by the business key of the step.
//!
//! It refuses while a process of the deployment consumes from a queue.

use anyhow::Context as _;
use platform::{
    config::Config,
    db,
    messaging::{self, outbox},
    redis::Redis,
};
use stock::Cache;

/// What `after-restore` did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Each queue emptied, with the messages it held.
    pub purged: Vec<(String, u32)>,
    /// Messages marked to be sent again.
    pub resent: u64,
    /// Cached stock levels removed.
    pub uncached: u64,
    /// Sagas not closed: they resume when the system starts.
    pub open_sagas: i64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let purged: u64 = self.purged.iter().map(|(_, count)| u64::from(*count)).sum();
        writeln!(f, "purged {purged} message(s) from {} queue(s):", self.purged.len())?;
        for (queue, count) in &self.purged {
            writeln!(f, "  {queue}: {count}")?;
        }
        writeln!(f, "marked {} message(s) the restored outbox had sent, unhandled, to be sent again", self.resent)?;
        writeln!(f, "removed {} cached stock level(s)", self.uncached)?;
        write!(f, "{} saga(s) open: they resume when the system starts", self.open_sagas)
    }
}

pub async fn run(config: &Config) -> anyhow::Result<Summary> {
    let pool = db::connect(config).await.context("connecting to the restored database (DATABASE_URL)")?;
    let recovering: bool =
        sqlx::query_scalar!(r#"SELECT pg_is_in_recovery() AS "recovering!""#).fetch_one(&pool).await?;
    anyhow::ensure!(!recovering, "the database at DATABASE_URL is still recovering: wait until it takes writes");

    let topology = sagas::registry().topology(config.namespace.as_str());
    let connection = messaging::connect(&config.amqp_url, "after-restore").await.context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    let purged = topology.purge(&channel).await;
    messaging::close(&connection, "after-restore done").await;
    let mut summary = Summary { purged: purged?, ..Summary::default() };

    let mut tx = pool.begin().await?;
    summary.resent = outbox::resend_unhandled(&mut tx, &topology.routes(), config.retention.inbox).await?;
    summary.open_sagas = sqlx::query_scalar!(r#"SELECT count(*) AS "open!" FROM saga WHERE closed_at IS NULL"#)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;

    let cache = Cache::new(Redis::new(&config.redis_url)?, &config.namespace);
    summary.uncached = cache.clear().await.context("emptying the stock cache in Redis")?;
    pool.close().await;
    Ok(summary)
}
