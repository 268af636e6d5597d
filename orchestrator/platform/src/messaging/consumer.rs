//! The one consumer loop every queue uses: bounded prefetch, each delivery handled in a
//! transaction together with its inbox row, acknowledged only after commit.
//!
//! Deliveries already waiting when the loop takes one are handled together, in one transaction,
//! so that under load a commit (the costly part) serves many messages. They are applied in the
//! handler's lock order, so concurrent batches cannot deadlock on each other. If anything in a
//! batch fails, the batch rolls back and each of its messages is handled again on its own, so a
//! batch never changes what happens to a message, only how many commits it shares.
//!
//! A message that can never be handled (malformed, unknown version or type, a constraint it
//! breaks) goes to the dead letters at once, with the reason (see [`Rejecter`]). A failure
//! that may pass (database restarting) is retried with backoff, and dead-lettered only after
//! [`MAX_ATTEMPTS`]. On shutdown the consumer stops taking deliveries and finishes those in hand.

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::FutureExt;

use futures_lite::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{
    Queue, Topology, connect,
    dead_letter::Rejecter,
    inbox,
    outbox::{self, OutboxSignal, Outgoing},
};
use crate::{
    protocol::{Decode, DecodeError, Envelope, Received},
    shutdown::Shutdown,
    trace::{self, TraceContext},
};

/// Handling attempts of one delivery before a transient failure is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 8;
/// Deliveries handled in one transaction, at most.
const MAX_BATCH: usize = 64;
/// Batches of one consumer in flight at once.
const MAX_CONCURRENT_BATCHES: usize = 4;
/// How often a consumer checks that its connection and channel are still up.
const WATCHDOG: Duration = Duration::from_secs(1);

/// Why a message was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It will never succeed: dead-letter it.
    #[error("unprocessable message: {0}")]
    Poison(String),
    /// It may succeed if tried again (the state it read changed under it, say).
    #[error("transient: {0}")]
    Transient(String),
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
            Self::Transient(_) => true,
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

    /// What the messages of one batch share: rows locked for all of them at once, say.
    type Batch: Default + Send;

    /// What the handler reads each message as (its command family, say).
    type Message: Decode;

    /// Inbox key: one consumer name per queue.
    fn name(&self) -> &'static str;

    /// Time to wait before handling a delivery (the simulated road between warehouse and store).
    fn pause(&self) -> Duration;

    /// The order in which a batch applies its messages: the rows a message locks, so that every
    /// transaction takes its locks in the same order.
    fn lock_order(&self, message: &Self::Message) -> String;

    /// Prepares a batch, in its transaction, before any of its `messages` (those not handled
    /// before, in lock order) is handled. Not called when every message was handled before.
    fn prepare<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _messages: &'a [&'a Received<Self::Message>],
    ) -> impl Future<Output = Result<Self::Batch, HandleError>> + Send + 'a {
        async { Ok(Self::Batch::default()) }
    }

    /// Handles `message` in `tx`; the messages it sends go to `out`, which the loop writes to the
    /// outbox for the whole batch in one statement before the commit.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Received<Self::Message>,
        batch: &'a mut Self::Batch,
        out: &'a mut Vec<Outgoing>,
    ) -> impl Future<Output = Result<Self::Committed, HandleError>> + Send + 'a;

    /// Finishes a batch in its transaction, after its last message: writes what the messages
    /// left in `batch` (their ledger entries, say) together.
    fn finish<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _batch: Self::Batch,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + 'a {
        async { Ok(()) }
    }

    fn after_commit(&self, committed: Self::Committed) -> impl Future<Output = ()> + Send;
}

/// A handler with its message types erased: what a test that plays the broker drives, one
/// delivery at a time, whatever the participant.
pub trait Deliver: Send + Sync {
    /// The name its inbox records deliveries under.
    fn inbox_name(&self) -> &'static str;

    /// Handles one delivery as the consumer would (decode, inbox, transaction), then runs what
    /// follows its commit.
    fn deliver<'a>(
        &'a self,
        pool: &'a PgPool,
        envelope: &'a Envelope,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), HandleError>> + Send + 'a>>;
}

impl<H: Handler> Deliver for H {
    fn inbox_name(&self) -> &'static str {
        self.name()
    }

    fn deliver<'a>(
        &'a self,
        pool: &'a PgPool,
        envelope: &'a Envelope,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), HandleError>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(committed) = handle_once(self, pool, envelope).await? {
                self.after_commit(committed).await;
            }
            Ok(())
        })
    }
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
    pub async fn run(self, shutdown: Shutdown) {
        super::supervise(self.queue.name(), shutdown, |shutdown| self.session(shutdown)).await;
    }

    async fn session(&self, mut shutdown: Shutdown) -> lapin::Result<()> {
        let queue = self.topology.queue(self.queue);
        let connection = connect(&self.amqp_url, &queue).await?;
        let channel = connection.create_channel().await?;
        channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        let rejecter = Rejecter::open(&connection, &self.topology, self.queue).await?;
        let mut deliveries = channel
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        tracing::info!(queue, "consuming");
        let mut in_flight = JoinSet::new();
        let mut watchdog = tokio::time::interval(WATCHDOG);
        let result = loop {
            // At the limit, wait for a batch to finish: deliveries queue up meanwhile and the
            // next batch is larger.
            if in_flight.len() >= MAX_CONCURRENT_BATCHES {
                reap(in_flight.join_next().await, &queue);
                continue;
            }
            tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                done = in_flight.join_next(), if !in_flight.is_empty() => reap(done, &queue),
                // A connection the broker dropped does not always end the delivery stream (seen
                // after a broker restart): without this the queue would silently lose its
                // consumer for good.
                _ = watchdog.tick() => if !(connection.status().connected() && channel.status().connected()) {
                    break Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                        lapin::ConnectionState::Closed,
                    )));
                },
                delivery = deliveries.next() => match delivery {
                    Some(Ok(first)) => {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match deliveries.next().now_or_never() {
                                Some(Some(Ok(delivery))) => batch.push(delivery),
                                _ => break,
                            }
                        }
                        let work = Batch {
                            handler: self.handler.clone(),
                            queue: self.queue.name(),
                            pool: self.pool.clone(),
                            shutdown: shutdown.clone(),
                            signal: self.signal.clone(),
                            rejecter: rejecter.clone(),
                        };
                        in_flight.spawn(work.run(batch));
                    }
                    Some(Err(error)) => break Err(error),
                    None => break Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                        lapin::ConnectionState::Closed,
                    ))),
                }
            }
        };
        // Finish what is in hand before the channel goes: its acks need it. A broken connection
        // takes no acks, so then the wait is bounded: whatever a batch left unacknowledged is
        // delivered again, and the inbox absorbs what had committed.
        let drain = async {
            while let Some(done) = in_flight.join_next().await {
                reap(Some(done), &queue);
            }
        };
        let within = if result.is_ok() { Duration::MAX } else { super::CLOSE_WITHIN };
        if tokio::time::timeout(within, drain).await.is_err() {
            tracing::warn!(queue, "batches still in hand on a broken connection; abandoned");
        }
        super::close(&connection, "shutting down").await;
        result
    }
}

fn reap(done: Option<Result<(), tokio::task::JoinError>>, queue: &str) {
    if let Some(Err(panic)) = done {
        tracing::error!(%panic, queue, "message handler panicked");
    }
}

/// What handling a batch needs.
struct Batch<H> {
    handler: Arc<H>,
    /// Logical queue name, the label of this consumer's metrics.
    queue: &'static str,
    pool: PgPool,
    shutdown: Shutdown,
    signal: OutboxSignal,
    rejecter: Rejecter,
}

/// The trace context a delivery carries in its `traceparent` header.
fn trace_of(delivery: &Delivery) -> Option<TraceContext> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(trace::HEADER)? {
        AMQPValue::LongString(value) => TraceContext::parse(std::str::from_utf8(value.as_bytes()).ok()?),
        AMQPValue::ShortString(value) => TraceContext::parse(value.as_str()),
        _ => None,
    }
}

impl<H: Handler> Batch<H> {
    async fn run(mut self, deliveries: Vec<Delivery>) {
        let queue = self.queue;
        let mut messages = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let read = Envelope::decode(&delivery.data)
                .and_then(|envelope| Ok(Received { message: H::Message::decode(&envelope)?, envelope }));
            match read {
                Ok(mut received) => {
                    received.envelope.trace = trace_of(&delivery);
                    messages.push((self.handler.lock_order(&received.message), received, delivery));
                }
                Err(error) => self.rejecter.reject(&delivery, &error.to_string(), true).await,
            }
        }
        if messages.is_empty() {
            return;
        }
        messages.sort_by(|a, b| a.0.cmp(&b.0));
        let pause = self.handler.pause();
        if !pause.is_zero() {
            tokio::select! {
                _ = self.shutdown.wait() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if messages.len() > 1 {
            let received: Vec<&Received<H::Message>> = messages.iter().map(|(_, received, _)| received).collect();
            match handle_together(&*self.handler, &self.pool, &received).await {
                Ok(outcomes) => {
                    self.signal.notify();
                    for ((_, _, delivery), outcome) in messages.iter().zip(outcomes) {
                        self.settled(delivery, outcome).await;
                    }
                    metrics::counter!("message_batches_total", "queue" => queue).increment(1);
                    return;
                }
                Err(error) => {
                    metrics::counter!("message_batches_split_total", "queue" => queue).increment(1);
                    tracing::debug!(%error, size = messages.len(), "batch failed; handling its messages one by one");
                }
            }
        }
        for (_, received, delivery) in &messages {
            let message = &received.envelope;
            let span = tracing::info_span!("message", queue, message_id = %message.message_id,
                r#type = message.message_type, saga_id = tracing::field::Empty, trace_id = tracing::field::Empty);
            if let Some(saga_id) = message.correlation_id {
                span.record("saga_id", tracing::field::display(saga_id));
            }
            if let Some(trace) = message.trace {
                span.record("trace_id", trace.trace_id_hex());
            }
            self.alone(received, delivery).instrument(span).await;
        }
    }

    /// Handles one message in its own transaction, retrying what may pass.
    async fn alone(&mut self, message: &Received<H::Message>, delivery: &Delivery) {
        let queue = self.queue;
        let mut attempt = 1;
        loop {
            match handle_together(&*self.handler, &self.pool, &[message]).await.map(|mut o| o.pop().flatten()) {
                Ok(outcome) => {
                    if outcome.is_some() {
                        self.signal.notify();
                    }
                    return self.settled(delivery, outcome).await;
                }
                Err(error) if error.retryable() && attempt < MAX_ATTEMPTS => {
                    metrics::counter!("messages_retried_total", "queue" => queue).increment(1);
                    tracing::warn!(%error, attempt, "handling failed; will retry");
                    let backoff = Duration::from_millis(50u64 << attempt.min(8));
                    tokio::select! {
                        // Leave the delivery unacknowledged: the broker gives it to another consumer.
                        _ = self.shutdown.wait() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    attempt += 1;
                }
                Err(error) => {
                    // Out of retries is not proof that it can never succeed: only a poison one is.
                    return self.rejecter.reject(delivery, &error.to_string(), !error.retryable()).await;
                }
            }
        }
    }

    /// After commit: acknowledge, then the handler's follow-up work.
    async fn settled(&self, delivery: &Delivery, outcome: Option<H::Committed>) {
        let queue = self.queue;
        ack(delivery).await;
        match outcome {
            Some(committed) => {
                metrics::counter!("messages_consumed_total", "queue" => queue).increment(1);
                self.handler.after_commit(committed).await;
            }
            None => {
                metrics::counter!("messages_duplicate_total", "queue" => queue).increment(1);
                tracing::debug!("duplicate delivery acknowledged without effect");
            }
        }
    }
}

/// One attempt at a message as it arrives: read, then inbox row, effect, outbox rows, commit.
/// `None` when the message was handled before.
pub async fn handle_once<H: Handler>(
    handler: &H,
    pool: &PgPool,
    envelope: &Envelope,
) -> Result<Option<H::Committed>, HandleError> {
    let received = Received { message: H::Message::decode(envelope)?, envelope: envelope.clone() };
    Ok(handle_together(handler, pool, &[&received]).await?.pop().flatten())
}

/// Several messages in one transaction, in the order given; all or nothing.
async fn handle_together<H: Handler>(
    handler: &H,
    pool: &PgPool,
    messages: &[&Received<H::Message>],
) -> Result<Vec<Option<H::Committed>>, HandleError> {
    let mut tx = pool.begin().await?;
    let envelopes: Vec<&Envelope> = messages.iter().map(|m| &m.envelope).collect();
    let fresh = inbox::record(&mut tx, handler.name(), &envelopes).await?;
    let new: Vec<&Received<H::Message>> =
        messages.iter().zip(&fresh).filter(|(_, fresh)| **fresh).map(|(m, _)| *m).collect();
    // A batch of repeats only acknowledges: nothing to prepare.
    let mut batch = if new.is_empty() { H::Batch::default() } else { handler.prepare(&mut tx, &new).await? };
    let mut outcomes = Vec::with_capacity(messages.len());
    let mut out = Vec::new();
    for (message, fresh) in messages.iter().zip(fresh) {
        let outcome = if fresh {
            let sent = out.len();
            let handled = handler.handle(&mut tx, message, &mut batch, &mut out);
            let outcome = match message.envelope.trace {
                Some(trace) => trace::scope(trace, handled).await?,
                None => handled.await?,
            };
            // Whatever the handler sends continues the trace of the message it handles.
            if let Some(trace) = message.envelope.trace {
                out[sent..].iter_mut().for_each(|m| _ = m.trace.get_or_insert(trace));
            }
            Some(outcome)
        } else {
            None
        };
        outcomes.push(outcome);
    }
    handler.finish(&mut tx, batch).await?;
    outbox::enqueue(&mut tx, &out).await?;
    tx.commit().await?;
    Ok(outcomes)
}

async fn ack(delivery: &Delivery) {
    // If the ack is lost the broker redelivers and the inbox skips the repeat.
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(%error, "ack failed after commit; the redelivery will be skipped");
    }
}
