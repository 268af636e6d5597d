//! The two loops that feed the [`engine`](super::engine): the reply consumer ([`ReplyHandler`])
//! and the deadline sweeper ([`Sweeper`]). Each finds the saga's kind in the [`Registry`] and
//! hands the input to the engine in its transaction.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use super::{
    engine::EngineError,
    registry::Registry,
    store::{self, SagaRow},
};
use crate::{
    config::SagaTiming,
    messaging::{
        consumer::{HandleError, Handler},
        outbox::{self, OutboxSignal, Outgoing},
        topology::ENGINE_INBOX,
    },
    protocol::{Decode, DecodeError, Envelope, Received},
    shutdown::Shutdown,
};

/// The heartbeat role of a process that runs the engine (reply consumer, sweeper).
pub const ROLE: &str = "orchestrator";

/// Consumes the orchestrator's reply queue: each reply is one transition.
pub struct ReplyHandler {
    pub registry: Arc<Registry>,
    pub timing: SagaTiming,
}

/// A reply, as the engine first reads it: the saga it answers. Its body is read by the saga's
/// kind, once the saga is locked.
#[derive(Clone, Copy, Debug)]
pub struct SagaReply {
    pub saga_id: Uuid,
}

impl Decode for SagaReply {
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        let saga_id =
            envelope.correlation_id.ok_or_else(|| DecodeError::Malformed("a reply without a correlation id".into()))?;
        Ok(Self { saga_id })
    }
}

impl Handler for ReplyHandler {
    type Committed = ();
    /// The batch's sagas, locked together up front.
    type Batch = HashMap<Uuid, SagaRow>;
    type Message = SagaReply;

    fn name(&self) -> &'static str {
        ENGINE_INBOX
    }

    fn pause(&self) -> Duration {
        Duration::ZERO
    }

    /// A reply locks its saga's row first.
    fn lock_order(&self, message: &SagaReply) -> String {
        message.saga_id.to_string()
    }

    async fn prepare(
        &self,
        tx: &mut PgConnection,
        messages: &[&Received<SagaReply>],
    ) -> Result<Self::Batch, HandleError> {
        let ids: Vec<Uuid> = messages.iter().map(|m| m.message.saga_id).collect();
        Ok(store::lock_all(tx, &ids).await?.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &Received<SagaReply>,
        locked: &mut Self::Batch,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), HandleError> {
        let (message, saga_id) = (&received.envelope, received.message.saga_id);
        // A second reply to one saga in the batch reads the row the first one wrote.
        let row = match locked.remove(&saga_id) {
            Some(row) => row,
            None => store::lock(tx, saga_id).await?.ok_or(EngineError::UnknownSaga(saga_id))?,
        };
        self.registry.driver(&row.kind)?.on_reply(tx, &self.timing, &row, message, out).await?;
        Ok(())
    }

    async fn after_commit(&self, (): ()) {}
}

/// A participant refused `command` of saga `saga_id` as one that can never succeed: its step fails
/// now ([`engine::on_refused`](super::engine::on_refused)), in the caller's transaction, with the
/// messages that sends left in `out`. `false` when the saga is gone or waits on something else.
pub async fn refused(
    tx: &mut PgConnection,
    registry: &Registry,
    timing: &SagaTiming,
    saga_id: Uuid,
    command: &str,
    reason: &str,
    out: &mut Vec<Outgoing>,
) -> Result<bool, EngineError> {
    let Some(row) = store::lock(tx, saga_id).await? else {
        return Ok(false);
    };
    registry.driver(&row.kind)?.on_refused(tx, timing, &row, command, reason, out).await
}

/// Resends commands whose deadline passed, in batches; several engines share the work through
/// `SKIP LOCKED`.
pub struct Sweeper {
    pub pool: PgPool,
    pub registry: Arc<Registry>,
    pub timing: SagaTiming,
    pub outbox: OutboxSignal,
}

const SWEEP_BATCH: i64 = 200;
/// Longest nap between sweeps; a deadline set by another process is noticed within it.
const SWEEP_IDLE: Duration = Duration::from_millis(250);

impl Sweeper {
    pub async fn run(self, mut shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            let nap = match self.sweep().await {
                Ok(handled) if handled as i64 == SWEEP_BATCH => Duration::ZERO,
                Ok(_) => self.until_next_deadline().await,
                Err(error) => {
                    tracing::warn!(%error, "deadline sweep failed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Handles every saga whose deadline has passed (up to a batch); returns how many.
    pub async fn sweep(&self) -> Result<usize, EngineError> {
        let mut tx = self.pool.begin().await?;
        let due = store::lock_due(&mut tx, SWEEP_BATCH).await?;
        let ids: Vec<Uuid> = due.iter().map(|row| row.id).collect();
        let held = outbox::still_waiting(&mut tx, &ids).await?;
        let mut out = Vec::new();
        for row in &due {
            let span = tracing::info_span!("deadline", saga_id = %row.id, trace_id = row.trace_id.as_deref());
            let held = held.contains(&row.id);
            let outcome = match self.registry.driver(&row.kind) {
                Ok(driver) => {
                    driver.on_deadline(&mut tx, &self.timing, row, held, &mut out).instrument(span.clone()).await
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {}
                // Found unreadable before anything was written for it: one such saga must not
                // stall every other deadline, so it is set aside, visibly, for an operator.
                Err(error @ (EngineError::UnknownKind(_) | EngineError::Corrupt { .. })) => {
                    span.in_scope(|| tracing::error!(%error, "saga cannot be driven; set aside for an operator"));
                    store::set_aside(&mut tx, row, &error.to_string()).await?;
                }
                Err(error) => return Err(error),
            }
        }
        outbox::enqueue(&mut tx, &out).await?;
        tx.commit().await?;
        if !due.is_empty() {
            self.outbox.notify();
        }
        Ok(due.len())
    }

    async fn until_next_deadline(&self) -> Duration {
        let next = match self.pool.acquire().await {
            Ok(mut conn) => store::next_deadline(&mut conn).await.ok().flatten(),
            Err(_) => None,
        };
        next.and_then(|at| (at - Utc::now()).to_std().ok()).map_or(SWEEP_IDLE, |wait| wait.min(SWEEP_IDLE))
    }
}
