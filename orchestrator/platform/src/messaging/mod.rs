//! RabbitMQ plumbing shared by the orchestrator and the workers (docs/design.md §4).
//!
//! Nothing is published straight from a request or a handler: state changes write their messages
//! to the [`outbox`] in the same transaction, and the [`relay`] publishes committed rows with
//! publisher confirms. Consumers ([`consumer`]) record each message in the [`inbox`] in the same
//! transaction as its effect and acknowledge only after commit, so at-least-once delivery never
//! becomes a double effect.

pub mod consumer;
pub mod dead_letter;
pub mod inbox;
pub mod outbox;
pub mod relay;
pub mod topology;

pub use topology::{EventExchange, Exchange, Participant, Queue, Topology};

use std::{fmt::Display, future::Future, sync::Arc, time::Duration};

use lapin::{Connection, ConnectionProperties};
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// Opens a connection to the broker. Each long-running task owns its connection and opens a new
/// one after a failure, so one broken channel never stalls the others.
pub async fn connect(amqp_url: &str, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(amqp_url, properties).await
}

/// How long a polite close may take. A broker that has already dropped the connection may never
/// confirm the close, and an unbounded wait would hang a shutdown or a health probe.
pub(crate) const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Closes a connection (and its channels), waiting at most [`CLOSE_WITHIN`] for the broker.
pub async fn close(connection: &Connection, reason: &str) {
    if tokio::time::timeout(CLOSE_WITHIN, connection.close(200, reason.into())).await.is_err() {
        tracing::debug!(reason, "the broker did not confirm the close in time; dropping the connection");
    }
}

/// Runs `work` on a channel of a connection of its own, then closes the channel and the
/// connection, in that order, whatever `work` returned. Closing the connection first, or
/// dropping the channel on the way, races lapin's own closing of the channel, which it then
/// reports as a connection error.
pub async fn with_channel<T>(
    amqp_url: &str,
    name: &str,
    work: impl AsyncFnOnce(&lapin::Channel) -> lapin::Result<T>,
) -> lapin::Result<T> {
    let connection = connect(amqp_url, name).await?;
    match connection.create_channel().await {
        Ok(channel) => {
            let outcome = work(&channel).await;
            close_both(&connection, &channel).await;
            outcome
        }
        Err(error) => {
            close(&connection, "done").await;
            Err(error)
        }
    }
}

/// Backoff between reconnection attempts: 100 ms doubling to 5 s.
fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

/// A session that ran this long before failing was healthy: the backoff starts over.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Runs a long-lived broker session until shutdown, opening a new one after each failure (the
/// broker restarted, the connection dropped), with backoff. A session returns `Ok` only when it
/// stopped for shutdown.
pub async fn supervise<E, F>(what: &str, mut shutdown: Shutdown, mut session: impl FnMut(Shutdown) -> F)
where
    E: Display,
    F: Future<Output = Result<(), E>>,
{
    let mut failures = 0;
    while !shutdown.is_triggered() {
        let started = Instant::now();
        match session(shutdown.clone()).await {
            Ok(()) => return,
            Err(error) => {
                failures = if started.elapsed() > HEALTHY_SESSION { 1 } else { failures + 1 };
                tracing::warn!(%error, what, failures, "broker session interrupted; reconnecting");
                metrics::counter!("broker_reconnects_total", "task" => what.to_owned()).increment(1);
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(reconnect_delay(failures)) => {}
                }
            }
        }
    }
}

/// What the broker says of one of the deployment's queues.
#[derive(Clone, Copy, Debug)]
pub struct QueueStats {
    pub queue: Queue,
    /// Messages ready for delivery (not counting those delivered and not yet acknowledged).
    pub messages: u32,
    pub consumers: u32,
}

/// One broker connection kept for questions — queue depths, readiness — opened on first use and
/// again after it breaks, so that a health check or a status page costs a round trip, not a
/// connection.
#[derive(Clone)]
pub struct BrokerProbe {
    amqp_url: Arc<str>,
    topology: Topology,
    open: Arc<tokio::sync::Mutex<Option<(Connection, lapin::Channel)>>>,
}

impl std::fmt::Debug for BrokerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProbe").field("namespace", &self.topology.namespace()).finish_non_exhaustive()
    }
}

impl BrokerProbe {
    pub fn new(amqp_url: Arc<str>, topology: Topology) -> Self {
        Self { amqp_url, topology, open: Arc::default() }
    }

    /// Depth and consumer count of every queue of the deployment (a passive declare each, which
    /// changes nothing).
    pub async fn queue_stats(&self) -> lapin::Result<Vec<QueueStats>> {
        use lapin::{options::QueueDeclareOptions, types::FieldTable};
        let mut open = self.open.lock().await;
        if open
            .as_ref()
            .is_none_or(|(connection, channel)| !connection.status().connected() || !channel.status().connected())
        {
            if let Some((connection, channel)) = open.take() {
                close_both(&connection, &channel).await;
            }
            let connection = connect(&self.amqp_url, "probe").await?;
            let channel = connection.create_channel().await?;
            *open = Some((connection, channel));
        }
        let (_, channel) = open.as_ref().expect("opened above");
        let mut stats = Vec::new();
        for queue in self.topology.queues() {
            let options = QueueDeclareOptions { passive: true, ..Default::default() };
            let name = self.topology.queue(queue);
            match channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await {
                Ok(declared) => stats.push(QueueStats {
                    queue,
                    messages: declared.message_count(),
                    consumers: declared.consumer_count(),
                }),
                Err(error) => {
                    // The broker closes the channel on a failed declare: start afresh next time.
                    if let Some((connection, channel)) = open.take() {
                        close_both(&connection, &channel).await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(stats)
    }

    /// Closes the connection, if one is open.
    pub async fn close(&self) {
        if let Some((connection, channel)) = self.open.lock().await.take() {
            close_both(&connection, &channel).await;
        }
    }
}

/// Closes a channel, then its connection: closing the connection under an open channel makes
/// lapin report the channel's closing as a connection error.
async fn close_both(connection: &Connection, channel: &lapin::Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(CLOSE_WITHIN, channel.close(200, "done".into())).await;
    }
    close(connection, "done").await;
}
