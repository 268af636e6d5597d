//! The one consumer loop every queue uses: bounded prefetch, each delivery handled in its own
//! transaction together with its inbox row, acknowledged only after commit.
//!
//! A message that can never be handled (malformed, unknown version or type, a constraint it
//! breaks) is rejected without requeue and so goes to the dead-letter exchange at once. A failure
//! that may pass (database restarting) is retried with backoff, and dead-lettered only after
//! [`MAX_ATTEMPTS`]. On shutdown the consumer stops taking deliveries and finishes those in hand.

use std::{future::Future, sync::Arc, time::Duration};

use futures_lite::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinSet;

use super::{Queue, Topology, connect, inbox, outbox::OutboxSignal, reconnect_delay};
use crate::{
    protocol::{DecodeError, Envelope},
    shutdown::Shutdown,
};

/// Handling attempts of one delivery before a transient failure is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 8;

/// Why a message was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It will never succeed: dead-letter it.
    #[error("unprocessable message: {0}")]
    Poison(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<DecodeError> for HandleError {
    fn from(error: DecodeError) -> Self {
        Self::Poison(error.to_string())
    }
}

impl HandleError {
    /// Whether trying again may succeed. A violated constraint will be violated again.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Poison(_) => false,
            Self::Database(sqlx::Error::Database(db)) => {
                !db.code().is_some_and(|code| code.starts_with("23") || code.starts_with("22"))
            }
            Self::Database(_) => true,
        }
    }
}

/// What a queue's consumer does with one message, inside the transaction the loop opened.
pub trait Handler: Send + Sync + 'static {
    /// Work to do after commit (a cache write, say); failures there must not undo the message.
    type Committed: Send + 'static;

    /// Inbox key: one consumer name per queue.
    fn name(&self) -> &'static str;

    /// Time to wait before handling a delivery (the simulated road between warehouse and store).
    fn pause(&self) -> Duration;

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Envelope,
    ) -> impl Future<Output = Result<Self::Committed, HandleError>> + Send + 'a;

    fn after_commit(&self, committed: Self::Committed) -> impl Future<Output = ()> + Send;
}

/// A consumer of one queue.
pub struct Consumer<H> {
    pub handler: Arc<H>,
    pub queue: Queue,
    pub pool: PgPool,
    pub topology: Topology,
    pub amqp_url: Arc<str>,
    pub prefetch: u16,
    /// Handlers write their replies to the outbox: wake the relay after each commit.
    pub signal: OutboxSignal,
}

impl<H: Handler> Consumer<H> {
    /// Runs until shutdown, reconnecting after broker failures. Deliveries in flight when a
    /// connection drops are redelivered by the broker; the inbox absorbs the repeats.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut failures = 0;
        while !shutdown.is_triggered() {
            match self.session(&mut shutdown, &mut failures).await {
                Ok(()) => return,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, queue = self.queue.as_ref(), failures, "consumer interrupted; reconnecting");
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(reconnect_delay(failures)) => {}
                    }
                }
            }
        }
    }

    async fn session(&self, shutdown: &mut Shutdown, failures: &mut u32) -> lapin::Result<()> {
        let queue = self.topology.queue(self.queue);
        let connection = connect(&self.amqp_url, &queue).await?;
        let channel = connection.create_channel().await?;
        channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        let mut deliveries = channel
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        tracing::info!(queue, "consuming");
        let mut in_flight = JoinSet::new();
        let result = loop {
            tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(panic) = done {
                        tracing::error!(%panic, queue, "message handler panicked");
                    }
                }
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        *failures = 0;
                        let (handler, pool, shutdown) = (self.handler.clone(), self.pool.clone(), shutdown.clone());
                        in_flight.spawn(process(handler, pool, delivery, shutdown, self.signal.clone()));
                    }
                    Some(Err(error)) => break Err(error),
                    None => break Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                        lapin::ConnectionState::Closed,
                    ))),
                }
            }
        };
        // Finish what is in hand before the channel goes: its acks need it.
        while in_flight.join_next().await.is_some() {}
        let _ = channel.close(200, "shutting down".into()).await;
        let _ = connection.close(200, "shutting down".into()).await;
        result
    }
}

async fn process<H: Handler>(
    handler: Arc<H>,
    pool: PgPool,
    delivery: Delivery,
    mut shutdown: Shutdown,
    signal: OutboxSignal,
) {
    let queue = handler.name();
    let message = match Envelope::decode(&delivery.data) {
        Ok(message) => message,
        Err(error) => return dead_letter(&delivery, queue, &error.to_string()).await,
    };
    let span = tracing::info_span!("message", queue, message_id = %message.message_id,
        saga_id = ?message.correlation_id, r#type = message.message_type);
    let _entered = span.enter();
    let pause = handler.pause();
    if !pause.is_zero() {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    let mut attempt = 1;
    loop {
        match handle_once(&*handler, &pool, &message).await {
            Ok(outcome) => {
                if outcome.is_some() {
                    signal.notify();
                }
                ack(&delivery).await;
                match outcome {
                    Some(committed) => {
                        metrics::counter!("messages_consumed_total", "queue" => queue).increment(1);
                        handler.after_commit(committed).await;
                    }
                    None => {
                        metrics::counter!("messages_duplicate_total", "queue" => queue).increment(1);
                        tracing::debug!("duplicate delivery acknowledged without effect");
                    }
                }
                return;
            }
            Err(error) if error.retryable() && attempt < MAX_ATTEMPTS => {
                metrics::counter!("messages_retried_total", "queue" => queue).increment(1);
                tracing::warn!(%error, attempt, "handling failed; will retry");
                let backoff = Duration::from_millis(50u64 << attempt.min(8));
                tokio::select! {
                    // Leave the delivery unacknowledged: the broker gives it to another consumer.
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                attempt += 1;
            }
            Err(error) => return dead_letter(&delivery, queue, &error.to_string()).await,
        }
    }
}

/// One attempt: inbox row, effect, commit. `None` when the message was handled before.
pub async fn handle_once<H: Handler>(
    handler: &H,
    pool: &PgPool,
    message: &Envelope,
) -> Result<Option<H::Committed>, HandleError> {
    let mut tx = pool.begin().await?;
    if !inbox::record(&mut tx, handler.name(), message).await? {
        return Ok(None);
    }
    let committed = handler.handle(&mut tx, message).await?;
    tx.commit().await?;
    Ok(Some(committed))
}

async fn ack(delivery: &Delivery) {
    // If the ack is lost the broker redelivers and the inbox skips the repeat.
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(%error, "ack failed after commit; the redelivery will be skipped");
    }
}

async fn dead_letter(delivery: &Delivery, queue: &'static str, reason: &str) {
    metrics::counter!("messages_dead_lettered_total", "queue" => queue).increment(1);
    tracing::error!(reason, "message dead-lettered");
    let options = BasicNackOptions { requeue: false, ..Default::default() };
    if let Err(error) = delivery.nack(options).await {
        tracing::warn!(%error, "nack failed; the broker will redeliver");
    }
}
