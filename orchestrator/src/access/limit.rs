//! Rate limits: a token bucket per API key, and per client address for requests without a
//! valid key.
//!
//! The buckets live in Redis, so every instance of the API draws on the same budget; one Lua
//! script refills and takes a token atomically, on Redis's own clock. When Redis does not answer,
//! each instance falls back to buckets of its own, in memory (so a deployment of N instances
//! then admits up to N times the budget) and the API keeps answering. The in-process buckets are
//! bounded: idle ones are dropped, and past [`LOCAL_BUCKETS`] the newcomers share one.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use deadpool_redis::redis;
use platform::{
    config::{Budget, RateLimits},
    redis::Redis,
};
use strum::IntoEnumIterator;
use uuid::Uuid;

use super::{Role, client::ClientAddr};

/// Requests refused for `role` (`None`: callers without a valid key).
fn refused_counter(role: Option<Role>) -> metrics::Counter {
    metrics::counter!("rate_limited_total", "role" => role.map_or("anonymous", Into::into))
}

/// Registers the refusal counter of every role, and of callers without a key, at zero: a
/// dashboard then shows no refusal as 0 rather than as nothing.
pub fn register_metrics() {
    for role in std::iter::once(None).chain(Role::iter().map(Some)) {
        refused_counter(role).increment(0);
    }
}

/// Refills the bucket `KEYS[1]` at `ARGV[1]` tokens per second up to `ARGV[2]`, then takes one
/// token if there is one. Returns `{taken (0 or 1), tokens left}`. The same arithmetic as
/// [`take_token`], which a test holds it to.
const TAKE: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
end
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {taken, tostring(tokens)}
";

/// In-process buckets kept at most, for when Redis is down.
pub const LOCAL_BUCKETS: usize = 10_000;

/// Whose budget a request draws on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    Key(Uuid),
    /// A client address, as [`ClientAddr`] shows it.
    Address(String),
}

impl Bucket {
    /// The bucket of a client address (`None`: a request from nowhere, as in-process tests send).
    pub fn address(client: Option<ClientAddr>) -> Self {
        Self::Address(client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()))
    }

    /// Where Redis keeps the bucket of the deployment `namespace`.
    pub fn redis_key(&self, namespace: &str) -> String {
        match self {
            Self::Key(id) => format!("{namespace}:ratelimit:key:{id}"),
            Self::Address(address) => format!("{namespace}:ratelimit:addr:{address}"),
        }
    }
}

/// What a bucket said to one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's size (`RateLimit-Limit`).
    pub limit: u32,
    /// Whole tokens left (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_secs: u64,
    /// Seconds until a token is there again (`Retry-After`), when refused.
    pub retry_after_secs: u64,
}

impl Decision {
    fn new(budget: Budget, tokens_left: f64, allowed: bool) -> Self {
        let rate = f64::from(budget.per_second);
        let tokens_left = tokens_left.clamp(0.0, f64::from(budget.burst));
        Self {
            allowed,
            limit: budget.burst,
            remaining: tokens_left.floor() as u32,
            reset_secs: ((f64::from(budget.burst) - tokens_left) / rate).ceil() as u64,
            retry_after_secs: if allowed { 0 } else { ((1.0 - tokens_left) / rate).ceil().max(1.0) as u64 },
        }
    }
}

/// A bucket's state: tokens, and when they were counted (ms).
type State = (f64, u64);

/// The tokens of a bucket last counted at `state`, refilled up to `now_ms`; a new bucket is full.
fn refill(state: Option<State>, now_ms: u64, budget: Budget) -> f64 {
    let burst = f64::from(budget.burst);
    match state {
        None => burst,
        Some((tokens, at)) if now_ms > at => {
            (tokens + (now_ms - at) as f64 * f64::from(budget.per_second) / 1000.0).min(burst)
        }
        Some((tokens, _)) => tokens,
    }
}

/// Refills a bucket last counted at `state` up to `now_ms`, and takes a token if there is one.
pub fn take_token(state: Option<State>, now_ms: u64, budget: Budget) -> (State, bool) {
    let mut tokens = refill(state, now_ms, budget);
    let taken = tokens >= 1.0;
    if taken {
        tokens -= 1.0;
    }
    ((tokens, now_ms), taken)
}

#[derive(Clone)]
pub struct Limiter {
    redis: Redis,
    namespace: Arc<str>,
    budgets: RateLimits,
    script: Arc<redis::Script>,
    local: Arc<Mutex<HashMap<Bucket, (State, Budget)>>>,
    /// Buckets Redis found empty, and until when (ms): no token can appear in them before then,
    /// whatever any instance does, so a flood is refused here without asking Redis each time.
    empty_until: Arc<Mutex<HashMap<Bucket, u64>>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("budgets", &self.budgets).finish_non_exhaustive()
    }
}

impl Limiter {
    pub fn new(redis: Redis, namespace: &str, budgets: RateLimits) -> Self {
        Self {
            redis,
            namespace: namespace.into(),
            budgets,
            script: Arc::new(redis::Script::new(TAKE)),
            local: Arc::default(),
            empty_until: Arc::default(),
        }
    }

    /// The budget of a key's role, or of a caller without a valid key.
    pub fn budget(&self, role: Option<Role>) -> Budget {
        match role {
            None => self.budgets.anonymous,
            Some(Role::Client) => self.budgets.client,
            Some(Role::Operator) => self.budgets.operator,
            Some(Role::Admin) => self.budgets.admin,
        }
    }

    /// Takes a token from `bucket`, sized for `role`.
    pub async fn take(&self, bucket: &Bucket, role: Option<Role>) -> Decision {
        let budget = self.budget(role);
        let decision = match self.still_empty(bucket, budget) {
            Some(refused) => refused,
            None => self.ask_redis(bucket, budget).await,
        };
        if !decision.allowed {
            refused_counter(role).increment(1);
        }
        decision
    }

    async fn ask_redis(&self, bucket: &Bucket, budget: Budget) -> Decision {
        let key = bucket.redis_key(&self.namespace);
        let script = self.script.clone();
        let shared: Result<(i64, String), _> = self
            .redis
            .call(async |conn| script.key(&key).arg(budget.per_second).arg(budget.burst).invoke_async(conn).await)
            .await;
        match shared {
            Ok((taken, tokens)) => {
                let tokens: f64 = tokens.parse().unwrap_or(0.0);
                if taken != 1 {
                    self.remember_empty(bucket, budget, tokens);
                }
                self.mirror(bucket, budget, tokens);
                Decision::new(budget, tokens, taken == 1)
            }
            Err(_) => {
                metrics::counter!("rate_limit_local_decisions_total").increment(1);
                self.take_locally(bucket, budget)
            }
        }
    }

    /// The refusal for a bucket Redis found empty, while no token can have appeared in it.
    fn still_empty(&self, bucket: &Bucket, budget: Budget) -> Option<Decision> {
        let until = *self.empty_until.lock().unwrap_or_else(|p| p.into_inner()).get(bucket)?;
        let now = platform::redis::now_millis();
        (now < until).then(|| {
            let tokens = 1.0 - (until - now) as f64 * f64::from(budget.per_second) / 1000.0;
            Decision::new(budget, tokens, false)
        })
    }

    fn remember_empty(&self, bucket: &Bucket, budget: Budget, tokens: f64) {
        let now = platform::redis::now_millis();
        let wait = ((1.0 - tokens).max(0.0) * 1000.0 / f64::from(budget.per_second)).floor() as u64;
        let mut empty = self.empty_until.lock().unwrap_or_else(|p| p.into_inner());
        if empty.len() >= LOCAL_BUCKETS {
            empty.retain(|_, until| *until > now);
        }
        if empty.len() < LOCAL_BUCKETS {
            empty.insert(bucket.clone(), now + wait);
        }
    }

    /// Keeps the in-process bucket at what Redis last counted, so that a fallback after a
    /// Redis failure carries on from there instead of granting a fresh burst.
    fn mirror(&self, bucket: &Bucket, budget: Budget, tokens: f64) {
        let now = platform::redis::now_millis();
        let mut buckets = self.local.lock().unwrap_or_else(|p| p.into_inner());
        // Answers to concurrent requests arrive in any order: an older, fuller count must not
        // undo a newer, emptier one, or a fallback would grant tokens Redis already gave out.
        let tokens = buckets.get(bucket).map_or(tokens, |(state, _)| tokens.min(refill(Some(*state), now, budget)));
        if buckets.len() < LOCAL_BUCKETS || buckets.contains_key(bucket) {
            buckets.insert(bucket.clone(), ((tokens, now), budget));
        }
    }

    fn take_locally(&self, bucket: &Bucket, budget: Budget) -> Decision {
        let now = platform::redis::now_millis();
        let mut buckets = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= LOCAL_BUCKETS && !buckets.contains_key(bucket) {
            // A bucket that is full again is the same as no bucket.
            buckets.retain(|_, (state, budget)| refill(Some(*state), now, *budget) < f64::from(budget.burst));
        }
        let slot = if buckets.len() >= LOCAL_BUCKETS && !buckets.contains_key(bucket) {
            Bucket::Address("overflow".to_owned())
        } else {
            bucket.clone()
        };
        let (state, taken) = take_token(buckets.get(&slot).map(|(state, _)| *state), now, budget);
        buckets.insert(slot, (state, budget));
        Decision::new(budget, state.0, taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { per_second: 10, burst: 3 };

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut state = None;
        let mut allowed = 0;
        for _ in 0..5 {
            let (next, taken) = take_token(state, 1_000, BUDGET);
            state = Some(next);
            allowed += usize::from(taken);
        }
        assert_eq!(allowed, 3, "a burst of 3, then nothing at the same instant");
        // 10 per second: one token every 100 ms.
        assert!(!take_token(state, 1_050, BUDGET).1);
        assert!(take_token(state, 1_100, BUDGET).1);
        // Never more than the burst, however long it waited.
        let (full, _) = take_token(state, 100_000, BUDGET);
        assert_eq!(full.0, 2.0);
    }

    #[test]
    fn decisions_say_when_to_come_back() {
        let refused = Decision::new(BUDGET, 0.25, false);
        assert_eq!((refused.limit, refused.remaining, refused.retry_after_secs), (3, 0, 1));
        assert_eq!(refused.reset_secs, 1, "2.75 tokens at 10/s is 275 ms: a second, rounded up");
        let slow = Decision::new(Budget { per_second: 1, burst: 100 }, 0.0, false);
        assert_eq!((slow.retry_after_secs, slow.reset_secs), (1, 100));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let bucket = |ip: &str| Bucket::address(Some(ClientAddr::of(ip.parse().unwrap())));
        assert_eq!(bucket("2001:db8:1:2:aaaa::1"), bucket("2001:db8:1:2:bbbb::9"));
        assert_ne!(bucket("2001:db8:1:2:aaaa::1"), bucket("2001:db8:1:3::1"));
        assert_eq!(bucket("::ffff:10.0.0.1"), Bucket::Address("10.0.0.1".into()));
    }

    #[test]
    fn in_process_buckets_are_bounded() {
        let limiter = without_redis();
        for i in 0..LOCAL_BUCKETS + 500 {
            limiter.take_locally(&Bucket::Address(i.to_string()), BUDGET);
        }
        assert!(limiter.local.lock().unwrap().len() <= LOCAL_BUCKETS + 1);
    }

    /// A limiter whose Redis never answers: every decision is its own.
    fn without_redis() -> Limiter {
        Limiter::new(
            Redis::new("redis://127.0.0.1:1").unwrap(),
            "t",
            RateLimits { anonymous: BUDGET, client: BUDGET, operator: BUDGET, admin: BUDGET },
        )
    }

    #[test]
    fn a_fallback_carries_on_from_what_redis_last_counted() {
        let limiter = without_redis();
        let bucket = Bucket::Address("10.0.0.7".into());
        // Redis said the bucket is empty: a Redis failure now must not open a fresh burst.
        limiter.mirror(&bucket, BUDGET, 0.0);
        assert!(!limiter.take_locally(&bucket, BUDGET).allowed);
        let other = Bucket::Address("10.0.0.8".into());
        assert!(limiter.take_locally(&other, BUDGET).allowed, "a bucket Redis never counted starts full");
    }

    #[test]
    fn an_older_fuller_count_arriving_late_does_not_refill_the_fallback() {
        let limiter = without_redis();
        let bucket = Bucket::Address("10.0.0.9".into());
        // Two concurrent requests: the one Redis counted second answers first.
        limiter.mirror(&bucket, BUDGET, 0.0);
        limiter.mirror(&bucket, BUDGET, f64::from(BUDGET.burst) - 1.0);
        assert!(!limiter.take_locally(&bucket, BUDGET).allowed, "the late, fuller count was taken as the truth");
    }
}
