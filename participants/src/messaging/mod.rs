//! RabbitMQ plumbing shared by the orchestrator and the workers (DESIGN.md §4).
//!
//! Nothing is published straight from a request or a handler: state changes write their messages
//! to the [`outbox`] in the same transaction, and the [`relay`] publishes committed rows with
//! publisher confirms. Consumers ([`consumer`]) record each message in the [`inbox`] in the same
//! transaction as its effect and acknowledge only after commit, so at-least-once delivery never
//! becomes a double effect.

pub mod consumer;
pub mod inbox;
pub mod outbox;
pub mod relay;
pub mod topology;

pub use topology::{Exchange, Queue, Topology};

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// Opens a connection to the broker. Each long-running task owns its connection and opens a new
/// one after a failure, so one broken channel never stalls the others.
pub async fn connect(amqp_url: &str, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(amqp_url, properties).await
}

/// How long a polite close may take. A broker that has already dropped the connection may never
/// confirm the close, and an unbounded wait would hang a shutdown or a health probe.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Closes a connection (and its channels), waiting at most [`CLOSE_WITHIN`] for the broker.
pub async fn close(connection: &Connection, reason: &str) {
    if tokio::time::timeout(CLOSE_WITHIN, connection.close(200, reason.into())).await.is_err() {
        tracing::debug!(reason, "the broker did not confirm the close in time; dropping the connection");
    }
}

/// Backoff between reconnection attempts: 100 ms doubling to 5 s.
pub(crate) fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}
