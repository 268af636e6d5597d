//! Builds a running orchestrator from a [`Config`]: the API, the saga engine and, in the
//! all-in-one mode, both workers. Tests start it on port 0 with their own database and namespace.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use participants::{
    config::Config,
    messaging::{Queue, dead_letter::DeadLetterConsumer, relay::RelayFaults},
    process::{self, Services},
    protocol::Participant,
    shutdown::{self, ShutdownTrigger},
};
use poem::{
    Server,
    listener::{Acceptor, Listener, TcpListener},
};
use tokio::task::JoinSet;

use crate::{
    Context, http,
    saga::engine::{ReplyHandler, Sweeper},
};

/// Which parts run in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    /// Reply consumer, deadline sweeper, outbox relay.
    pub engine: bool,
    pub warehouse: bool,
    pub inventory: bool,
}

impl Roles {
    /// `orchestrator serve`: API and engine.
    pub const SERVE: Self = Self { api: true, engine: true, warehouse: false, inventory: false };
    /// `orchestrator all`: everything in one process.
    pub const ALL: Self = Self { api: true, engine: true, warehouse: true, inventory: true };

    /// The roles this process reports heartbeats for (the API alone is seen through its health routes).
    fn reported(self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if self.engine {
            roles.push(ORCHESTRATOR_ROLE);
        }
        if self.warehouse {
            roles.push(Participant::Warehouse.into());
        }
        if self.inventory {
            roles.push(Participant::Inventory.into());
        }
        roles
    }
}

/// The heartbeat role of the saga engine (reply consumer, sweeper, dead-letter keeper).
pub const ORCHESTRATOR_ROLE: &str = "orchestrator";

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
        let services = Services::connect(config).await?;
        let ctx = Context::new(&services);
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        // Every role writes to the outbox, so every process publishes what it wrote.
        tasks.spawn(services.relay(faults).run(shutdown.clone()));
        if roles.engine {
            let registry = ctx.registry.clone();
            let replies = ReplyHandler { registry: registry.clone(), timing: ctx.timing };
            tasks.spawn(services.consumer(Queue::OrchestratorReplies, replies).run(shutdown.clone()));
            let sweeper = Sweeper { pool: ctx.pool.clone(), registry, timing: ctx.timing, outbox: ctx.outbox.clone() };
            tasks.spawn(sweeper.run(shutdown.clone()));
            let dead_letters = DeadLetterConsumer {
                pool: ctx.pool.clone(),
                topology: ctx.topology.clone(),
                amqp_url: ctx.amqp_url.clone(),
            };
            tasks.spawn(dead_letters.run(shutdown.clone()));
        }
        if roles.warehouse {
            services.spawn_participant(&mut tasks, Participant::Warehouse, &shutdown);
        }
        if roles.inventory {
            services.spawn_participant(&mut tasks, Participant::Inventory, &shutdown);
        }
        let reported = roles.reported();
        if !reported.is_empty() {
            services.spawn_heartbeat(&mut tasks, reported, &shutdown);
        }
        let mut addr = None;
        if roles.api {
            let acceptor = TcpListener::bind(http_addr)
                .into_acceptor()
                .await
                .with_context(|| format!("listening on {http_addr}"))?;
            addr = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied());
            let routes = http::routes(&ctx);
            let mut stop = shutdown.clone();
            tasks.spawn(async move {
                let server = Server::new_with_acceptor(acceptor);
                if let Err(error) =
                    server.run_with_graceful_shutdown(routes, async move { stop.wait().await }, Some(DRAIN)).await
                {
                    tracing::error!(%error, "HTTP server stopped");
                }
            });
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
    }

    /// Stops at once, as a killed process would: tasks are dropped wherever they are, and
    /// uncommitted transactions and unacknowledged deliveries are left to the database and broker.
    pub fn crash(mut self) {
        self.tasks.abort_all();
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully.
    pub async fn run_until_signal(self) {
        process::run_until_signal(self.trigger, self.tasks).await;
    }
}
