//! Builds a running orchestrator from a [`Config`]: the API, the saga engine and, when it is
//! handed them, participants' workers (the all-in-one `darkstores` binary hands it every one).
//! Tests start it on port 0 with their own database and namespace.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use platform::{
    config::Config,
    messaging::{Queue, relay::RelayFaults},
    process::{self, Services, Worker},
    replica::{Reads, ReplicaSettings},
    retention::Janitor,
    saga::{
        registry::Registry,
        runner::{self, ReplyHandler, Sweeper},
    },
    shutdown::{self, ShutdownTrigger},
};
use tokio::task::JoinSet;

use crate::{
    Context,
    access::keys::{self, Bootstrap},
    dead_letters::DeadLetterConsumer,
    http::{
        self,
        server::{Limits, Server},
    },
    observe,
};

/// Which parts run in this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    /// Reply consumer, deadline sweeper, dead-letter keeper, retention janitor.
    pub engine: bool,
    /// The participants' workers that run here.
    pub workers: Vec<Worker>,
}

impl Roles {
    /// `orchestrator serve`: API and engine.
    pub fn serve() -> Self {
        Self { api: true, engine: true, workers: Vec::new() }
    }

    /// Everything in one process: the API, the engine, and the worker of every participant the
    /// saga kinds declare, from `workers`. Fails when one has none there.
    pub fn all(workers: &[Worker]) -> anyhow::Result<Self> {
        let participants = sagas::registry().participants().to_vec();
        let workers = participants.into_iter().map(|p| Worker::of(workers, p)).collect::<anyhow::Result<_>>()?;
        Ok(Self { api: true, engine: true, workers })
    }

    /// The roles this process reports heartbeats for (the API alone is seen through its health routes).
    fn reported(&self) -> Vec<&'static str> {
        let engine = self.engine.then_some(runner::ROLE);
        engine.into_iter().chain(self.workers.iter().map(|w| w.participant.name)).collect()
    }
}

/// In-flight requests get this long to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub struct Application {
    addr: Option<SocketAddr>,
    ctx: Context,
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
}

impl Application {
    pub async fn build(config: Config, roles: Roles, faults: RelayFaults) -> anyhow::Result<Self> {
        let http_addr = config.http_addr;
        let registry = Arc::new(sagas::registry());
        let services = Services::connect(config, &registry).await?;
        let mut ctx = Context::new(&services, registry);
        register_known_series(&ctx.registry);
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        // Every role writes to the outbox, so every process publishes what it wrote.
        tasks.spawn(services.relay(faults).run(shutdown.clone()));
        if roles.engine {
            let registry = ctx.registry.clone();
            let replies = ReplyHandler { registry: registry.clone(), timing: ctx.timing };
            tasks.spawn(services.consumer(Queue::Replies, replies).run(shutdown.clone()));
            let sweeper = Sweeper { pool: ctx.pool.clone(), registry, timing: ctx.timing, outbox: ctx.outbox.clone() };
            tasks.spawn(sweeper.run(shutdown.clone()));
            let dead_letters = DeadLetterConsumer {
                pool: ctx.pool.clone(),
                topology: ctx.topology.clone(),
                amqp_url: ctx.amqp_url.clone(),
                registry: ctx.registry.clone(),
                timing: ctx.timing,
                outbox: ctx.outbox.clone(),
            };
            tasks.spawn(dead_letters.run(shutdown.clone()));
            // One per engine process: janitors skip each other's rows, so several are safe. The
            // workers' outbox and inbox rows share the database, so this one prunes theirs too.
            tasks.spawn(Janitor::new(ctx.pool.clone(), services.config.retention).run(shutdown.clone()));
        }
        for worker in &roles.workers {
            worker.spawn(&services, &mut tasks, &shutdown)?;
        }
        let reported = roles.reported();
        if !reported.is_empty() {
            services.spawn_heartbeat(&mut tasks, reported, &shutdown);
        }
        let mut addr = None;
        if roles.api {
            let settings: ReplicaSettings = services.config.section()?;
            ctx.reads = Reads::start(ctx.pool.clone(), &settings, &shutdown).context("the read replica's settings")?;
            admit_someone(&ctx, &services.config).await?;
            ctx.keys.reload(&ctx.pool).await.context("loading the API keys")?;
            tasks.spawn(ctx.keys.clone().run(ctx.pool.clone(), shutdown.clone()));
            let api = &services.config.api;
            let server =
                Server::bind(http_addr, Limits::of(api)).await.with_context(|| format!("listening on {http_addr}"))?;
            addr = Some(server.local_addr());
            tasks.spawn(server.run(http::routes(&ctx), shutdown.clone(), DRAIN));
            tracing::info!(?addr, "API listening; Swagger UI at /docs");
        }
        Ok(Self { addr, ctx, trigger, tasks })
    }

    /// Where the API listens (with its real port when the config asked for port 0).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Graceful stop: no new work, in-flight work finished.
    pub async fn stop(mut self) {
        self.trigger.trigger();
        while self.tasks.join_next().await.is_some() {}
        self.ctx.broker.close().await;
    }

    /// Stops at once, as a killed process would: tasks are dropped wherever they are, and
    /// uncommitted transactions and unacknowledged deliveries are left to the database and broker.
    pub fn crash(mut self) {
        self.tasks.abort_all();
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully.
    pub async fn run_until_signal(self) {
        process::run_until_signal(self.trigger, self.tasks).await;
        self.ctx.broker.close().await;
    }
}

/// Makes sure the deployment has an admin: the configured bootstrap key, or, when no key exists
/// at all, a new admin key printed once on standard output.
async fn admit_someone(ctx: &Context, config: &Config) -> anyhow::Result<()> {
    match keys::bootstrap(&ctx.pool, config.api.bootstrap_admin_key.as_ref()).await.context("bootstrapping API keys")? {
        Bootstrap::Configured => tracing::info!("BOOTSTRAP_ADMIN_KEY is an admin key"),
        Bootstrap::ConfiguredButRevoked => {
            tracing::warn!("BOOTSTRAP_ADMIN_KEY names a revoked key: it stays revoked and opens nothing");
        }
        Bootstrap::Created(key) => {
            println!(
                "\n================================================================================\n\
                 No API key existed, so this admin key was made. It is shown this once:\n\n    \
                 {}\n\nSend it as 'Authorization: Bearer <key>' (in Swagger UI: Authorize). Make \
                 other keys with POST /api-keys.\n\
                 ================================================================================\n",
                key.secret
            );
            tracing::info!(api_key_id = %key.record.id, "first admin key made and printed on standard output");
        }
        Bootstrap::Nothing => {}
    }
    Ok(())
}

/// Installs the recorder, then registers at zero every counter whose labels come from a known,
/// bounded set (the kinds, the roles, the cache's outcomes...), so that a dashboard shows 0 from
/// the first scrape rather than nothing. Series labelled by what traffic brings (HTTP routes and
/// statuses, the steps sagas take) appear with their first event.
fn register_known_series(registry: &Registry) {
    observe::metrics_handle();
    platform::saga::engine::register_metrics(&registry.kinds());
    crate::access::limit::register_metrics();
    http::access::register_metrics();
    stock::cache::register_metrics();
    crate::dead_letters::register_metrics();
    crate::orders::register_metrics();
    platform::replica::register_metrics();
}
