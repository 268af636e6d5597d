//! The orchestrator of dark-store replenishment.
//!
//! Customers' orders reserve stock in a store ([`orders`]); any change that leaves a product low
//! starts a replenishment saga in the same transaction ([`stock`]); the saga engine ([`saga`])
//! persists each saga as a state machine in Postgres and drives it with commands to the
//! participant workers over RabbitMQ. The REST API ([`http`]) serves clients and operators.
//! [`app::Application`] assembles all of it, so `main` and the tests start exactly the same thing.

pub mod access;
pub mod app;
pub mod error;
pub mod http;
pub mod observe;
pub mod orders;
pub mod saga;
pub mod stock;

use std::{sync::Arc, time::Duration};

use access::{keys::KeyRing, limit::Limiter};
pub use observe::metrics_handle;
use participants::{
    cache::Cache,
    config::{ApiConfig, Config, SagaTiming},
    messaging::{BrokerProbe, Topology, outbox::OutboxSignal},
    process::Services,
};
use saga::registry::Registry;
use sqlx::{PgPool, postgres::PgPoolOptions};

/// What request handlers and domain functions share.
#[derive(Clone, Debug)]
pub struct Context {
    pub pool: PgPool,
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
    pub fn new(services: &Services) -> Self {
        Self::build(&services.config, services.pool.clone(), services.cache.clone(), services.outbox_signal.clone())
    }

    /// A context on the given connections; nothing is connected here.
    pub fn build(config: &Config, pool: PgPool, cache: Cache, outbox: OutboxSignal) -> Self {
        let topology = Topology::new(config.namespace.clone());
        let amqp_url: Arc<str> = config.amqp_url.as_str().into();
        Self {
            pool,
            limiter: Limiter::new(cache.redis().clone(), &config.namespace, config.api.rate_limits),
            cache,
            timing: config.saga,
            broker: BrokerProbe::new(amqp_url.clone(), topology.clone()),
            amqp_url,
            outbox,
            registry: Arc::new(Registry::standard()),
            topology,
            keys: KeyRing::default(),
            api: config.api.clone(),
        }
    }

    /// A context that connects to nothing until used: enough to render the OpenAPI document.
    /// Its keys are never loaded, so it admits no keyed request.
    pub fn offline(config: &Config) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().acquire_timeout(Duration::from_secs(2)).connect_lazy(&config.database_url)?;
        let cache = Cache::new(&config.redis_url, &config.namespace)?;
        Ok(Self::build(config, pool, cache, OutboxSignal::default()))
    }
}
