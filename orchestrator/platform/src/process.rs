//! What every process does at start-up and shutdown: logging, connections, topology, and the
//! long-running tasks (relay, consumers) it hosts.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::{
    config::Config,
    db,
    heartbeat::Heartbeat,
    messaging::{
        Participant, Queue, Topology,
        consumer::{Consumer, Deliver, Handler},
        outbox::OutboxSignal,
        relay::{Relay, RelayFaults},
    },
    redis::Redis,
    saga::registry::Registry,
    shutdown::{Shutdown, ShutdownTrigger},
};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A worker's clock, run once: how many things it did.
pub type Clock = for<'a> fn(&'a PgPool) -> BoxFuture<'a, anyhow::Result<usize>>;

/// A participant's worker, as the crate that carries out the participant's commands declares it:
/// how to start the consumer of its queue. A process that hosts workers is handed the list, so
/// neither the platform nor the API links a participant's code; a test that plays the broker and
/// the clock drives the same handlers through it, whatever the participant.
#[derive(Clone, Copy)]
pub struct Worker {
    pub participant: Participant,
    /// Starts the consumer of `queue` (the participant's) and anything else the worker runs; fails
    /// when its settings are not valid.
    pub start: fn(&Services, Queue, &mut JoinSet<()>, &Shutdown) -> anyhow::Result<()>,
    /// Its handler alone, made as `start` makes it.
    pub handler: fn(&Services) -> anyhow::Result<Box<dyn Deliver>>,
    /// What the worker does on its own clock, done once for whatever is due now (ships what a
    /// simulated lead time let go, say); returns how many things it did. `start` runs it in a
    /// loop; a test that plays the clock calls it.
    pub clock: Option<Clock>,
    /// Its settings in a rough world, where it fails some of what it is asked and takes its time:
    /// what the fault suite runs it with.
    pub rough: &'static [(&'static str, &'static str)],
}

/// A participant's handler, made from what its process has (its settings, its connections).
pub trait WorkerHandler: Handler + Sized {
    fn build(services: &Services) -> anyhow::Result<Self>;
}

impl Worker {
    /// The worker of `participant` that runs a consumer of `H`, and nothing else.
    pub const fn consuming<H: WorkerHandler>(participant: Participant) -> Self {
        Self { participant, start: start_consumer::<H>, handler: erased::<H>, clock: None, rough: &[] }
    }

    /// The worker of `participant` among `workers`.
    pub fn of(workers: &[Worker], participant: Participant) -> anyhow::Result<Worker> {
        workers
            .iter()
            .find(|worker| worker.participant == participant)
            .copied()
            .with_context(|| format!("this build has no worker for participant {:?}", participant.name))
    }

    /// Starts this worker's consumer in `tasks`.
    pub fn spawn(&self, services: &Services, tasks: &mut JoinSet<()>, shutdown: &Shutdown) -> anyhow::Result<()> {
        (self.start)(services, Queue::Commands(self.participant), tasks, shutdown)
    }
}

/// Starts the consumer of `queue` with a handler of type `H`.
pub fn start_consumer<H: WorkerHandler>(
    services: &Services,
    queue: Queue,
    tasks: &mut JoinSet<()>,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    tasks.spawn(services.consumer(queue, H::build(services)?).run(shutdown.clone()));
    Ok(())
}

fn erased<H: WorkerHandler>(services: &Services) -> anyhow::Result<Box<dyn Deliver>> {
    Ok(Box::new(H::build(services)?))
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Worker").field(&self.participant.name).finish()
    }
}

impl PartialEq for Worker {
    fn eq(&self, other: &Self) -> bool {
        self.participant == other.participant
    }
}

impl Eq for Worker {}

/// How long start-up waits for the broker before giving up with a clear error.
const BROKER_WAIT: Duration = Duration::from_secs(30);

/// Connections shared by every task of a process.
#[derive(Clone, Debug)]
pub struct Services {
    pub config: Config,
    pub pool: PgPool,
    pub redis: Redis,
    pub topology: Topology,
    pub amqp_url: Arc<str>,
    /// Wakes this process's relay; see [`OutboxSignal`].
    pub outbox_signal: OutboxSignal,
}

impl Services {
    /// Connects to Postgres (and migrates), prepares Redis, and declares the broker topology of a
    /// deployment of the `registry`'s kinds.
    pub async fn connect(config: Config, registry: &Registry) -> anyhow::Result<Self> {
        let pool = db::connect(&config)
            .await
            .with_context(|| format!("connecting to Postgres at {}", redacted(&config.database_url)))?;
        let services = Self::new(config, pool, registry)?;
        declare_topology(&services.amqp_url, &services.topology).await?;
        Ok(services)
    }

    /// The services of a deployment of the `registry`'s kinds on `pool`, without touching the
    /// broker: what a test that plays the broker itself hands the workers.
    pub fn new(config: Config, pool: PgPool, registry: &Registry) -> anyhow::Result<Self> {
        Ok(Self {
            redis: Redis::new(&config.redis_url)?,
            topology: registry.topology(config.namespace.clone()),
            amqp_url: config.amqp_url.as_str().into(),
            config,
            pool,
            outbox_signal: OutboxSignal::default(),
        })
    }

    pub fn relay(&self, faults: RelayFaults) -> Relay {
        Relay {
            pool: self.pool.clone(),
            topology: self.topology.clone(),
            amqp_url: self.amqp_url.clone(),
            faults,
            signal: self.outbox_signal.clone(),
        }
    }

    pub fn consumer<H: Handler>(&self, queue: Queue, handler: H) -> Consumer<H> {
        Consumer {
            handler: Arc::new(handler),
            queue,
            pool: self.pool.clone(),
            topology: self.topology.clone(),
            amqp_url: self.amqp_url.clone(),
            prefetch: self.config.prefetch,
            signal: self.outbox_signal.clone(),
        }
    }

    /// Starts this process's heartbeat, reporting `roles`.
    pub fn spawn_heartbeat(&self, tasks: &mut JoinSet<()>, roles: Vec<&'static str>, shutdown: &Shutdown) {
        tasks.spawn(Heartbeat::new(self.pool.clone(), roles, self.config.hostname.clone()).run(shutdown.clone()));
    }
}

async fn declare_topology(amqp_url: &str, topology: &Topology) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        match crate::messaging::with_channel(amqp_url, "topology", async |channel| topology.declare(channel).await)
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "RabbitMQ not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("declaring the topology on {}", redacted(amqp_url)));
            }
        }
    }
}

/// Logged at start-up by a process that publishes everything twice; the fault suite looks for it
/// to know the switch reached every process.
pub const DUPLICATE_DELIVERY_WARNING: &str = "fault injection: every message this process publishes is published twice";

/// The relay faults a process's configuration asks for: none, unless the fault suite switched
/// on duplicate delivery for a process it runs (see [`Config::duplicate_delivery`]).
pub fn relay_faults(config: &Config) -> RelayFaults {
    if config.duplicate_delivery {
        tracing::warn!("{DUPLICATE_DELIVERY_WARNING}");
    }
    RelayFaults { publish_twice: config.duplicate_delivery, ..RelayFaults::default() }
}

/// A URL with its password hidden, for logs and errors. Parsed as the Postgres, Redis and
/// RabbitMQ clients parse it, so the part hidden is the part they would send as the password.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only a URL without a host refuses a password, and that one has none to hide.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.into()
        }
        // Not shown: where a parser finds no structure, it cannot tell the password apart.
        Err(error) => format!("an unparsable URL ({error})"),
    }
}

/// Logs to stderr as text, or as JSON objects with `LOG_JSON=true`; `RUST_LOG` filters.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours for a person at a terminal only: in a file or a log collector they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Runs `tasks` until SIGINT/SIGTERM, then triggers shutdown and waits for them to finish.
pub async fn run_until_signal(trigger: ShutdownTrigger, mut tasks: JoinSet<()>) {
    crate::shutdown::signal().await;
    tracing::info!("signal received; shutting down");
    trigger.trigger();
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
}

/// The whole life of a standalone worker process: `worker`'s consumer (and anything else it
/// runs), in a deployment of the `registry`'s kinds.
pub async fn run_worker(registry: &Registry, worker: Worker) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    init_logging(config.log_json);
    let services = Services::connect(config, registry).await?;
    let (trigger, shutdown) = crate::shutdown::channel();
    let mut tasks = JoinSet::new();
    worker.spawn(&services, &mut tasks, &shutdown)?;
    let roles = vec![worker.participant.name];
    tracing::info!(?roles, namespace = services.topology.namespace(), "worker started");
    services.spawn_heartbeat(&mut tasks, roles, &shutdown);
    tasks.spawn(services.relay(relay_faults(&services.config)).run(shutdown.clone()));
    run_until_signal(trigger, tasks).await;
    Ok(())
}

/// Where a URL points: its host and port, without credentials or path (`127.0.0.1:5672`).
pub fn authority(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(parsed.port().map_or_else(|| host.to_owned(), |port| format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::{authority, redacted};

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redacted("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
        assert_eq!(redacted("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redacted("amqp://guest:guest@h:5672/%2f"), "amqp://guest:***@h:5672/%2f");
        // An `@` after the host belongs to the path or query, not to the credentials.
        assert_eq!(
            redacted("postgres://u:secret@h/db?application_name=a@b"),
            "postgres://u:***@h/db?application_name=a@b"
        );
        assert!(!redacted("postgres://u:secret@h:no-port/db").contains("secret"));
    }

    #[test]
    fn an_authority_is_host_and_port_only() {
        assert_eq!(authority("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(), Some("127.0.0.1:5672"));
        assert_eq!(authority("amqp://broker:5672").as_deref(), Some("broker:5672"));
    }
}
