//! A Redis pool that steps aside when Redis is sick. Redis only ever speeds things up here (the
//! inventory cache, the API's shared rate limits), so every call has a short deadline and, after
//! a failure, Redis is left alone for a moment: callers take their fallback (Postgres for reads,
//! an in-process bucket for rate limits) instead of waiting on it, request after request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use deadpool_redis::{Pool, Runtime, redis};

/// A call slower than this counts as a failure: requests must not wait on a sick Redis.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, Redis is left alone this long before it is tried again.
const BACK_OFF: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    /// Milliseconds since the epoch until which Redis is skipped.
    resting_until: Arc<AtomicU64>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid REDIS_URL: {0}")]
pub struct RedisConfigError(String);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis call timed out")]
    Timeout,
    #[error("redis is resting after a failure")]
    Resting,
}

impl Redis {
    /// Builds the pool; it connects lazily, so a Redis that is down does not stop start-up.
    pub fn new(redis_url: &str) -> Result<Self, RedisConfigError> {
        let pool = deadpool_redis::Config::from_url(redis_url)
            .builder()
            .map_err(|e| RedisConfigError(e.to_string()))?
            .max_size(16)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| RedisConfigError(e.to_string()))?;
        Ok(Self { pool, resting_until: Arc::new(AtomicU64::new(0)) })
    }

    /// Runs `op` on a pooled connection within [`CALL_TIMEOUT`]; after a failure, fails at once
    /// for [`BACK_OFF`].
    pub async fn call<T>(
        &self,
        op: impl AsyncFnOnce(&mut deadpool_redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, CallError> {
        if now_millis() < self.resting_until.load(Ordering::Relaxed) {
            return Err(CallError::Resting);
        }
        let result = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut conn = self.pool.get().await?;
            Ok::<T, CallError>(op(&mut conn).await?)
        })
        .await
        .unwrap_or(Err(CallError::Timeout));
        if let Err(error) = &result {
            tracing::warn!(%error, "redis unavailable; left alone for {} ms", BACK_OFF.as_millis());
            self.resting_until.store(now_millis() + BACK_OFF.as_millis() as u64, Ordering::Relaxed);
        }
        result
    }

    /// Whether Redis answers a PING now (for readiness), whether or not it is resting.
    pub async fn ping(&self) -> bool {
        let mut conn = match tokio::time::timeout(CALL_TIMEOUT, self.pool.get()).await {
            Ok(Ok(conn)) => conn,
            _ => return false,
        };
        let pong: Result<Result<String, _>, _> =
            tokio::time::timeout(CALL_TIMEOUT, redis::cmd("PING").query_async(&mut conn)).await;
        matches!(pong, Ok(Ok(_)))
    }
}

pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}
