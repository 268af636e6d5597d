//! The inventory cache in Redis (docs/design.md §5): cache only, never the only copy of anything.
//!
//! Entries are JSON [`StockLevel`]s under `{namespace}:inv:{store}:{product}` with a short TTL.
//! Every write goes through one Lua script that keeps whichever version is newer, so a slow reader
//! that filled from an old snapshot can never put old stock back. When Redis fails, the cache
//! steps aside for a moment and callers read Postgres: slower, never wrong. Writers remove the
//! entry before their commit and write the new level after it, so a writer killed in between
//! leaves no old level behind. A write that failed leaves an old entry behind, so entries
//! remember when they were cached and a process ignores those cached before its last failed
//! write.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use deadpool_redis::redis;
use uuid::Uuid;

use platform::redis::{CallError, Redis, now_millis};

use sqlx::PgPool;

use crate::level::{self, StockLevel};

const TTL_SECONDS: u64 = 30;

/// SET unless a newer version is stored. The same version is written again: that refreshes an
/// entry's `cached_at` after a failed write made it suspect.
const SET_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and tonumber(decoded['version']) > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Inventory reads, by outcome: the hit rate.
fn requests_counter(hit: bool) -> metrics::Counter {
    metrics::counter!("cache_requests_total", "outcome" => if hit { "hit" } else { "miss" })
}

/// Redis calls of the cache that failed.
fn errors_counter() -> metrics::Counter {
    metrics::counter!("cache_errors_total")
}

/// Registers the cache's counters at zero: a dashboard then shows a cache not used yet as 0, not
/// as nothing.
pub fn register_metrics() {
    requests_counter(true).increment(0);
    requests_counter(false).increment(0);
    errors_counter().increment(0);
}

#[derive(Clone)]
pub struct Cache {
    redis: Redis,
    namespace: Arc<str>,
    set_if_newer: Arc<redis::Script>,
    /// When a write last failed (ms since the epoch): entries cached before it may be stale.
    last_failed_write: Arc<AtomicU64>,
}

/// What is stored: the level and when it was cached.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    #[serde(flatten)]
    level: StockLevel,
    cached_at_ms: u64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl Cache {
    /// The cache of deployment `namespace` on `redis` (which connects lazily, so a Redis that is
    /// down does not stop start-up).
    pub fn new(redis: Redis, namespace: &str) -> Self {
        Self {
            redis,
            namespace: namespace.into(),
            set_if_newer: Arc::new(redis::Script::new(SET_IF_NEWER)),
            last_failed_write: Arc::new(AtomicU64::new(0)),
        }
    }

    fn key(&self, store_id: Uuid, product_id: Uuid) -> String {
        format!("{}:inv:{store_id}:{product_id}", self.namespace)
    }

    /// The cached level, or `None` on a miss or when Redis is unavailable.
    pub async fn get(&self, store_id: Uuid, product_id: Uuid) -> Option<StockLevel> {
        let key = self.key(store_id, product_id);
        let cached: Option<String> =
            self.call(async |conn| redis::cmd("GET").arg(&key).query_async(conn).await).await.ok().flatten();
        let suspect_before = self.last_failed_write.load(Ordering::Relaxed);
        let level = cached
            .and_then(|json| serde_json::from_str::<Entry>(&json).ok())
            .filter(|entry| entry.cached_at_ms > suspect_before)
            .map(|entry| entry.level);
        requests_counter(level.is_some()).increment(1);
        level
    }

    /// Stores `level` unless a newer version is cached. Failures are logged, never raised:
    /// the entry simply expires or is refilled from Postgres.
    pub async fn put(&self, level: &StockLevel) {
        let key = self.key(level.store_id, level.product_id);
        let entry = Entry { level: level.clone(), cached_at_ms: now_millis() };
        let json = serde_json::to_string(&entry).expect("stock levels serialize");
        let script = self.set_if_newer.clone();
        let result: Result<i64, _> = self
            .call(async |conn| script.key(&key).arg(level.version).arg(&json).arg(TTL_SECONDS).invoke_async(conn).await)
            .await;
        if let Err(error) = result {
            self.last_failed_write.store(now_millis(), Ordering::Relaxed);
            tracing::debug!(%error, key, "cache write failed; older entries are ignored from now on");
        }
    }

    /// Removes every entry of the deployment; returns how many. For a database restored to an
    /// earlier moment: its levels carry versions the cache has already seen with other numbers,
    /// and the version check would keep the newer-looking stale entries.
    pub async fn clear(&self) -> Result<u64, CallError> {
        let pattern = format!("{}:inv:*", self.namespace);
        self.redis
            .call(async |conn| {
                let mut cursor = 0_u64;
                let mut removed = 0_u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(conn)
                        .await?;
                    if !keys.is_empty() {
                        removed += redis::cmd("UNLINK").arg(&keys).query_async::<u64>(conn).await?;
                    }
                    if next == 0 {
                        return Ok(removed);
                    }
                    cursor = next;
                }
            })
            .await
    }

    /// Removes the entries of levels about to change; call it before the commit that changes
    /// them. The new levels are [`put`](Self::put) after the commit, but a process killed between
    /// its commit and its put would otherwise leave the old level readable until the TTL. Now
    /// the entry is gone by then, unless a reader refilled it from the old level in the moments
    /// before the commit.
    pub async fn forget(&self, levels: impl IntoIterator<Item = (Uuid, Uuid)>) {
        let keys: Vec<String> = levels.into_iter().map(|(store, product)| self.key(store, product)).collect();
        if keys.is_empty() {
            return;
        }
        let result: Result<i64, _> = self.call(async |conn| redis::cmd("DEL").arg(&keys).query_async(conn).await).await;
        if let Err(error) = result {
            self.last_failed_write.store(now_millis(), Ordering::Relaxed);
            tracing::debug!(%error, "cache invalidation failed; older entries are ignored from now on");
        }
    }

    /// A store's level of a product: cached, or else read from Postgres and cached (never over a
    /// newer entry).
    pub async fn read(&self, pool: &PgPool, store_id: Uuid, product_id: Uuid) -> sqlx::Result<Option<StockLevel>> {
        if let Some(level) = self.get(store_id, product_id).await {
            return Ok(Some(level));
        }
        let level = level::fetch(&mut *pool.acquire().await?, store_id, product_id).await?;
        if let Some(level) = &level {
            self.put(level).await;
        }
        Ok(level)
    }

    /// Whether Redis answers a PING now (for readiness).
    pub async fn ping(&self) -> bool {
        self.redis.ping().await
    }

    /// A Redis call; a failure counts in `cache_errors_total`, and reads go to Postgres for a while.
    async fn call<T>(
        &self,
        op: impl AsyncFnOnce(&mut deadpool_redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, CallError> {
        let result = self.redis.call(op).await;
        if let Err(error) = &result
            && !matches!(error, CallError::Resting)
        {
            errors_counter().increment(1);
        }
        result
    }
}
