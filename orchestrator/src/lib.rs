//! The orchestrator: the HTTP API, who may use it, and the process that runs the saga engine.
//!
//! Customers' orders reserve stock in a store ([`orders`]); people count and adjust stock
//! ([`inventory`]); every change that leaves a product low starts a replenishment saga in the
//! same transaction ([`sagas::replenishment`]). The saga engine ([`platform::saga`]) drives the
//! sagas with commands to the participants' workers, which this crate does not link: each owns its
//! tables, and hears from the saga only through its queue. Operators steer the sagas
//! ([`operator`]) and keep what no consumer could handle ([`dead_letters`]). The REST API
//! ([`http`]) serves clients and operators, behind [`access`] control. [`app::Application`]
//! assembles all of it (and the workers it is handed), so the binaries and the tests start exactly
//! the same thing. The message
//! contract downstream teams bind to is published as an AsyncAPI document ([`asyncapi`]).

pub mod access;
pub mod after_restore;
pub mod app;
pub mod asyncapi;
pub mod dead_letters;
pub mod error;
pub mod http;
pub mod inventory;
pub mod observe;
pub mod operator;
pub mod orders;
pub mod purchasing;

use std::{sync::Arc, time::Duration};

use access::{keys::KeyRing, limit::Limiter};
pub use observe::metrics_handle;
use platform::{
    config::{ApiConfig, Config, SagaTiming},
    messaging::{BrokerProbe, Topology, outbox::OutboxSignal},
    process::Services,
    redis::Redis,
    replica::Reads,
    saga::registry::Registry,
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use stock::Cache;

/// What request handlers and domain functions share.
#[derive(Clone, Debug)]
pub struct Context {
    /// The primary: every write, and every read that must be fresh.
    pub pool: PgPool,
    /// Where reads go: the primary, or a replica for those that may lag ([`platform::replica`]).
    pub reads: Reads,
    pub cache: Cache,
    pub timing: SagaTiming,
    pub amqp_url: Arc<str>,
    /// Wakes this process's outbox relay after a commit that wrote messages.
    pub outbox: OutboxSignal,
    /// The saga kinds this build drives.
    pub registry: Arc<Registry>,
    /// The deployment's broker names.
    pub topology: Topology,
    /// A broker connection for questions: queue depths, readiness.
    pub broker: BrokerProbe,
    /// The API keys in use.
    pub keys: KeyRing,
    /// Every caller's request budget.
    pub limiter: Limiter,
    /// How the API admits callers.
    pub api: ApiConfig,
}

impl Context {
    pub fn new(services: &Services, registry: Arc<Registry>) -> Self {
        Self::build(
            &services.config,
            services.pool.clone(),
            services.redis.clone(),
            services.outbox_signal.clone(),
            registry,
        )
    }

    /// A context on the given connections; nothing is connected here.
    pub fn build(config: &Config, pool: PgPool, redis: Redis, outbox: OutboxSignal, registry: Arc<Registry>) -> Self {
        let topology = registry.topology(config.namespace.clone());
        let amqp_url: Arc<str> = config.amqp_url.as_str().into();
        Self {
            reads: Reads::primary_only(pool.clone()),
            pool,
            limiter: Limiter::new(redis.clone(), &config.namespace, config.api.rate_limits),
            cache: Cache::new(redis, &config.namespace),
            timing: config.saga,
            broker: BrokerProbe::new(amqp_url.clone(), topology.clone()),
            amqp_url,
            outbox,
            registry,
            topology,
            keys: KeyRing::default(),
            api: config.api.clone(),
        }
    }

    /// A context that connects to nothing until used: enough to render the OpenAPI document.
    /// Its keys are never loaded, so it admits no keyed request.
    pub fn offline(config: &Config) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().acquire_timeout(Duration::from_secs(2)).connect_lazy(&config.database_url)?;
        let redis = Redis::new(&config.redis_url)?;
        Ok(Self::build(config, pool, redis, OutboxSignal::default(), Arc::new(sagas::registry())))
    }
}
