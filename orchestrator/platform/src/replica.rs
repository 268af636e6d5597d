//! Reads taken off the primary: a streaming replica (`DATABASE_REPLICA_URL`), used for the reads
//! that may lag while it is up, replaying, and close enough to the primary.
//!
//! Each read says what it needs ([`Freshness`]): a fresh one always goes to the primary; one that
//! may lag goes to the replica while its lag is under `REPLICA_MAX_LAG_MS`, and, when the client
//! sends back the [`Lsn`] of its last write (the consistency token), only once the replica has
//! replayed past it. A checker measures the lag every `REPLICA_CHECK_MS` from write-ahead-log
//! positions, not timestamps: it notes the primary's position with the time, and the lag is the age
//! of the oldest position the replica has not replayed yet, so an idle primary shows no lag. A
//! replica that is down, paused, lagging or failing sends its reads to the primary within one
//! check; a read that fails on it for a broken connection is run again on the primary.

use std::{
    collections::VecDeque,
    fmt,
    str::FromStr,
    sync::{Arc, RwLock},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::time::Instant;

use crate::{
    config::{ConfigError, Section, Vars},
    shutdown::Shutdown,
};

/// How the reads use a replica.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSettings {
    /// `DATABASE_REPLICA_URL`: the replica; none means every read goes to the primary.
    pub url: Option<String>,
    /// `REPLICA_MAX_LAG_MS`: reads that may lag leave the replica when it is further behind.
    pub max_lag: Duration,
    /// `REPLICA_CHECK_MS`: how often its position and health are read.
    pub check_every: Duration,
    /// `REPLICA_TIMEOUT_MS`: the longest a read waits for a replica connection, or a check for
    /// its answer, before the primary is used instead.
    pub timeout: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_lag: Duration::from_millis(1_000),
            check_every: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
        }
    }
}

impl Section for ReplicaSettings {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let mut settings = Self { url: vars.get("DATABASE_REPLICA_URL").map(str::to_owned), ..Self::default() };
        vars.millis("REPLICA_MAX_LAG_MS", &mut settings.max_lag)?;
        vars.millis("REPLICA_CHECK_MS", &mut settings.check_every)?;
        vars.millis("REPLICA_TIMEOUT_MS", &mut settings.timeout)?;
        if settings.check_every.is_zero() || settings.timeout.is_zero() {
            return Err(ConfigError {
                name: "REPLICA_CHECK_MS",
                value: format!("{:?}/{:?}", settings.check_every, settings.timeout),
                expected: "REPLICA_CHECK_MS and REPLICA_TIMEOUT_MS above zero",
            });
        }
        Ok(settings)
    }
}

/// A position in the primary's write-ahead log, as Postgres writes it (`16/B374D848`). Given to
/// clients as the consistency token, which they send back as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (high, low) = text.split_once('/').ok_or("a log position looks like 16/B374D848")?;
        let part = |hex: &str| {
            (!hex.is_empty() && hex.len() <= 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
                .then(|| u64::from_str_radix(hex, 16).ok())
                .flatten()
                .ok_or("a log position is two hexadecimal numbers of up to 8 digits (0-9, A-F), such as 16/B374D848")
        };
        Ok(Self((part(high)? << 32) | part(low)?))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a read needs, declared where its operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Freshness {
    /// The latest committed state: the order path, a read that decides a write, an operator
    /// action's pre-check.
    Fresh,
    /// A moment old is fine: lists, stats, ledgers, audit reads.
    MayLag,
}

/// Where a read went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Target {
    Primary,
    Replica,
}

/// Why a read that may lag went to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum Fallback {
    /// Not answering, or its last check failed.
    Down,
    /// Replay paused (`pg_wal_replay_pause()`).
    Paused,
    /// Further behind than `REPLICA_MAX_LAG_MS`.
    Lagging,
    /// Not yet past the client's consistency token.
    Behind,
    /// Not a copy of the primary's database: another cluster, or another database of it
    /// (`DATABASE_REPLICA_URL` names the wrong one).
    Mismatch,
    /// The read failed on the replica in a way that passes (a broken connection, a server
    /// shutting down), and ran again on the primary.
    Failed,
}

/// The replica as the last check saw it.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaState {
    /// Why reads avoid it now; none when it serves them.
    pub avoided: Option<Fallback>,
    /// What it has replayed.
    pub replayed: Lsn,
    /// How far behind the primary it is.
    pub lag: Duration,
}

struct Replica {
    pool: PgPool,
    settings: ReplicaSettings,
    state: RwLock<ReplicaState>,
}

/// The pools reads choose from. Cheap to clone.
#[derive(Clone)]
pub struct Reads {
    primary: PgPool,
    replica: Option<Arc<Replica>>,
}

impl fmt::Debug for Reads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reads").field("replica", &self.replica_state()).finish_non_exhaustive()
    }
}

impl Reads {
    /// Every read on the primary.
    pub fn primary_only(primary: PgPool) -> Self {
        Self { primary, replica: None }
    }

    /// Reads on `primary` and, as `settings` say, a replica; checked until `shutdown`. The
    /// replica is avoided until its first check passes.
    pub fn start(primary: PgPool, settings: &ReplicaSettings, shutdown: &Shutdown) -> Result<Self, sqlx::Error> {
        let Some(url) = &settings.url else { return Ok(Self::primary_only(primary)) };
        let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(settings.timeout).connect_lazy(url)?;
        let state = ReplicaState { avoided: Some(Fallback::Down), replayed: Lsn::default(), lag: Duration::ZERO };
        let replica = Arc::new(Replica { pool, settings: settings.clone(), state: RwLock::new(state) });
        tokio::spawn(check(primary.clone(), replica.clone(), shutdown.clone()));
        Ok(Self { primary, replica: Some(replica) })
    }

    pub fn primary(&self) -> &PgPool {
        &self.primary
    }

    /// Whether a replica is configured.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// The replica as last checked; none without one.
    pub fn replica_state(&self) -> Option<ReplicaState> {
        self.replica.as_ref().map(|replica| *replica.state.read().expect("not poisoned"))
    }

    /// Where a read of `freshness` goes, for a client whose last write is `after`.
    pub fn target(&self, freshness: Freshness, after: Option<Lsn>) -> Result<Target, Option<Fallback>> {
        let Some(replica) = &self.replica else { return Err(None) };
        if freshness == Freshness::Fresh {
            return Err(None);
        }
        let state = *replica.state.read().expect("not poisoned");
        match (state.avoided, after) {
            (Some(why), _) => Err(Some(why)),
            (None, Some(token)) if state.replayed < token => Err(Some(Fallback::Behind)),
            (None, _) => Ok(Target::Replica),
        }
    }

    /// Runs `read` where [`Reads::target`] says, and again on the primary if the replica's
    /// connection broke under it.
    pub async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        freshness: Freshness,
        after: Option<Lsn>,
        read: F,
    ) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let class: &'static str = freshness.into();
        match (self.target(freshness, after), &self.replica) {
            (Ok(Target::Replica), Some(replica)) => {
                count(operation, class, Target::Replica);
                match read(replica.pool.clone()).await {
                    Err(error) if crate::db::unavailable(&error) => {
                        tracing::warn!(%error, operation, "a read failed on the replica; running it on the primary");
                        fell_back(Fallback::Failed);
                        replica.avoid(Fallback::Down);
                        count(operation, class, Target::Primary);
                        read(self.primary.clone()).await
                    }
                    answer => answer,
                }
            }
            (routed, _) => {
                if let Err(Some(why)) = routed {
                    fell_back(why);
                }
                count(operation, class, Target::Primary);
                read(self.primary.clone()).await
            }
        }
    }

    /// The consistency token for a write just committed: the primary's current log position,
    /// which is at or past the write's commit. None without a replica, where every read is fresh.
    pub async fn token(&self) -> Option<Lsn> {
        self.replica.as_ref()?;
        let position: String =
            sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(&self.primary).await.ok()?;
        position.parse().ok()
    }
}

impl Replica {
    fn avoid(&self, why: Fallback) {
        self.state.write().expect("not poisoned").avoided = Some(why);
    }
}

/// Puts the replica's series on `/metrics` from the start, at zero, so dashboards find them in a
/// deployment without a replica too; `db_reads_total` comes with the reads, labelled by operation.
pub fn register_metrics() {
    for why in <Fallback as strum::IntoEnumIterator>::iter() {
        let reason: &'static str = why.into();
        metrics::counter!("db_replica_fallbacks_total", "reason" => reason).absolute(0);
    }
    metrics::gauge!("db_replica_lag_seconds").set(0.0);
    metrics::gauge!("db_replica_serving").set(0.0);
}

fn count(operation: &'static str, class: &'static str, target: Target) {
    let target: &'static str = target.into();
    metrics::counter!("db_reads_total", "operation" => operation, "class" => class, "target" => target).increment(1);
}

fn fell_back(why: Fallback) {
    let reason: &'static str = why.into();
    metrics::counter!("db_replica_fallbacks_total", "reason" => reason).increment(1);
}

/// Reads the primary's and the replica's positions every `check_every`, until `shutdown`.
async fn check(primary: PgPool, replica: Arc<Replica>, mut shutdown: Shutdown) {
    // The primary's positions with when they were read, oldest first, until the replica passes
    // them.
    let mut written: VecDeque<(Instant, Lsn)> = VecDeque::new();
    let mut ticks = tokio::time::interval(replica.settings.check_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.wait() => return,
        }
        let timeout = replica.settings.timeout;
        // Each side's identity too: the cluster's system identifier, which a streaming copy
        // shares, and the database. Reads from anything else would answer about other data.
        let position = tokio::time::timeout(timeout, async {
            let (primary, primary_is) = sqlx::query_as(
                "SELECT pg_current_wal_lsn()::text,
                        (SELECT system_identifier FROM pg_control_system())::text, current_database()::text",
            )
            .fetch_one(&primary)
            .await
            .map(|(lsn, system, database): (String, String, String)| (lsn, (system, database)))?;
            let (replayed, paused, replica_is) = sqlx::query_as(
                "SELECT pg_last_wal_replay_lsn()::text, pg_is_wal_replay_paused(),
                        (SELECT system_identifier FROM pg_control_system())::text, current_database()::text",
            )
            .fetch_one(&replica.pool)
            .await
            .map(|(lsn, paused, system, database): (Option<String>, bool, String, String)| {
                (lsn, paused, (system, database))
            })?;
            Ok::<_, sqlx::Error>((primary, replayed, paused, primary_is == replica_is))
        })
        .await;
        let now = Instant::now();
        let next = match position {
            Ok(Ok((_, _, _, false))) => {
                let last = *replica.state.read().expect("not poisoned");
                if last.avoided != Some(Fallback::Mismatch) {
                    tracing::error!(
                        "DATABASE_REPLICA_URL names no copy of DATABASE_URL's database (another cluster, or another \
                         database): reads stay on the primary"
                    );
                }
                ReplicaState { avoided: Some(Fallback::Mismatch), ..last }
            }
            Ok(Ok((primary, Some(replayed), paused, true))) => {
                match (primary.parse::<Lsn>(), replayed.parse::<Lsn>()) {
                    (Ok(primary), Ok(replayed)) => {
                        if written.back().is_none_or(|(_, last)| *last < primary) {
                            written.push_back((now, primary));
                        }
                        while written.front().is_some_and(|(_, position)| *position <= replayed) {
                            written.pop_front();
                        }
                        let lag = written.front().map_or(Duration::ZERO, |(at, _)| now - *at);
                        let avoided = if paused {
                            Some(Fallback::Paused)
                        } else if lag > replica.settings.max_lag {
                            Some(Fallback::Lagging)
                        } else {
                            None
                        };
                        ReplicaState { avoided, replayed, lag }
                    }
                    _ => down(&replica),
                }
            }
            // Not a replica at all (`pg_last_wal_replay_lsn()` is null on a primary), unreachable,
            // failing or too slow: avoided until a check passes.
            _ => down(&replica),
        };
        metrics::gauge!("db_replica_lag_seconds").set(next.lag.as_secs_f64());
        metrics::gauge!("db_replica_serving").set(if next.avoided.is_none() { 1.0 } else { 0.0 });
        let before = std::mem::replace(&mut *replica.state.write().expect("not poisoned"), next);
        if before.avoided != next.avoided {
            match next.avoided {
                None => tracing::info!(lag_ms = next.lag.as_millis() as u64, "the replica serves reads that may lag"),
                Some(why) => tracing::warn!(reason = <&str>::from(why), "reads that may lag go to the primary"),
            }
        }
    }
}

fn down(replica: &Replica) -> ReplicaState {
    let last = *replica.state.read().expect("not poisoned");
    ReplicaState { avoided: Some(Fallback::Down), ..last }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_position_reads_and_writes_as_postgres_writes_it() {
        for text in ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(text.parse::<Lsn>().unwrap().to_string(), text);
        }
        assert!("16/B374D848".parse::<Lsn>().unwrap() > "16/B374D847".parse().unwrap());
        assert!("1/0".parse::<Lsn>().unwrap() > "0/FFFFFFFF".parse().unwrap());
        for bad in ["", "16", "16/", "/1", "x/1", "123456789/0", "1/2/3", "1/ 2", "-1/2", "b/a"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settings_default_to_the_primary_alone() {
        let settings = ReplicaSettings::read(&Vars::default()).unwrap();
        assert_eq!(settings, ReplicaSettings::default());
        let vars = [("DATABASE_REPLICA_URL", "postgres://r"), ("REPLICA_MAX_LAG_MS", "250")].into_iter().collect();
        let settings = ReplicaSettings::read(&vars).unwrap();
        assert_eq!(settings.url.as_deref(), Some("postgres://r"));
        assert_eq!(settings.max_lag, Duration::from_millis(250));
        let vars = [("REPLICA_CHECK_MS", "0")].into_iter().collect();
        assert!(ReplicaSettings::read(&vars).is_err());
    }
}
