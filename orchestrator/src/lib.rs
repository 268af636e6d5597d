//! The orchestrator of dark-store replenishment.
//!
//! Customers' orders reserve stock in a store ([`orders`]); any change that leaves a product low
//! starts a replenishment saga in the same transaction ([`stock`]); the saga engine ([`saga`])
//! persists each saga as a state machine in Postgres and drives it with commands to the
//! participant workers over RabbitMQ. The REST API ([`http`]) serves clients and operators.
//! [`app::Application`] assembles all of it, so `main` and the tests start exactly the same thing.

pub mod app;
pub mod error;
pub mod http;
pub mod observe;
pub mod orders;
pub mod saga;
pub mod stock;

use std::{sync::Arc, time::Duration};

pub use observe::metrics_handle;
use participants::{
    cache::Cache,
    config::{Config, SagaTiming},
    messaging::{Topology, outbox::OutboxSignal},
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
}

impl Context {
    pub fn new(services: &Services) -> Self {
        Self {
            pool: services.pool.clone(),
            cache: services.cache.clone(),
            timing: services.config.saga,
            amqp_url: services.amqp_url.clone(),
            outbox: services.outbox_signal.clone(),
            registry: Arc::new(Registry::standard()),
            topology: services.topology.clone(),
        }
    }

    /// A context that connects to nothing until used: enough to render the OpenAPI document.
    pub fn offline(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            pool: PgPoolOptions::new().acquire_timeout(Duration::from_secs(2)).connect_lazy(&config.database_url)?,
            cache: Cache::new(&config.redis_url, &config.namespace)?,
            timing: config.saga,
            amqp_url: config.amqp_url.as_str().into(),
            outbox: OutboxSignal::default(),
            registry: Arc::new(Registry::standard()),
            topology: Topology::new(config.namespace.clone()),
        })
    }
}
