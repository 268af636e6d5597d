//! Applies inputs to sagas, each in the caller's transaction; the loops that feed it are in
//! [`runner`](super::runner).
//!
//! Every change follows the same order: the saga row is locked, the transition function decides,
//! then the new state (fenced by version) and its transition row (one statement), the kind's
//! projection and the outgoing messages are written in the same transaction ([`decide`] leaves
//! the messages to its caller, who writes a whole batch's at once). A crash at any point loses
//! nothing: either all of it committed, and the relay and sweeper carry on from there, or none of
//! it did, and the redelivered reply or the still-passed deadline brings the engine back to the
//! same decision.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Action, Actor, Awaits, GaveUp, Input, InputOf, PersonAnswer, SagaKind, SagaState,
    store::{self, SagaRow, SagaUpdate, TransitionRecord},
};
use crate::{
    config::SagaTiming,
    messaging::{
        consumer::HandleError,
        outbox::{self, Outgoing},
    },
    protocol::{DecodeError, MessageFamily},
    trace::{self, TraceContext},
};

/// Registers each kind's counters at zero, so that a dashboard shows no resend as 0 rather than
/// as nothing. (Transitions and step times are labelled by the steps sagas actually take, and
/// appear with the first.)
pub fn register_metrics(kinds: &[&'static str]) {
    for kind in kinds {
        refused_counter(kind).increment(0);
        resent_counter(kind).increment(0);
    }
}

fn refused_counter(kind: &'static str) -> metrics::Counter {
    metrics::counter!("saga_transitions_refused_total", "kind" => kind)
}

fn resent_counter(kind: &'static str) -> metrics::Counter {
    metrics::counter!("saga_commands_resent_total", "kind" => kind)
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("saga {0} does not exist")]
    UnknownSaga(Uuid),
    #[error("no saga kind {0:?} is registered")]
    UnknownKind(String),
    #[error("saga {id} is unreadable: {reason}")]
    Corrupt { id: Uuid, reason: String },
    /// Someone else moved the saga: trying again reads the new state.
    #[error("saga {0} changed under its lock")]
    Fenced(Uuid),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl From<EngineError> for HandleError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Database(error) => Self::Database(error),
            EngineError::Fenced(_) => Self::Transient(error.to_string()),
            other => Self::Poison(other.to_string()),
        }
    }
}

/// What an input did to a saga.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Moved {
        from: String,
        to: String,
    },
    /// The transition function refused the pair; it is in the timeline as not applied.
    Refused {
        state: String,
        reason: String,
    },
}

/// When the command of `state`, sent for the `attempt`-th time, is due: a worker's timeout
/// doubles with each resend; a person's stays the same.
pub fn deadline<K: SagaKind>(timing: &SagaTiming, state: K::State, attempt: i32) -> DateTime<Utc> {
    let wait = if state.awaits() == Awaits::Person {
        timing.person_timeout
    } else {
        timing.command_timeout.saturating_mul(1 << (attempt - 1).clamp(0, 16)).min(timing.max_timeout)
    };
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

/// A saga to start: who asked, why, and the events that announce it.
pub struct Start<'a, K: SagaKind> {
    pub saga_id: Uuid,
    pub initial: K::State,
    pub data: &'a K::Data,
    pub actor: Actor<'a>,
    /// The first timeline entry's detail.
    pub detail: Value,
    /// Domain events written with the first command (one statement for both).
    pub events: Vec<Outgoing>,
}

/// Starts a saga in the caller's transaction: its row, its first transition, its first command.
/// The kind's own rows are the caller's to write.
pub async fn start<K: SagaKind>(tx: &mut PgConnection, timing: &SagaTiming, start: Start<'_, K>) -> sqlx::Result<()> {
    let Start { saga_id, initial, data, actor, detail, events } = start;
    let command = K::outstanding(saga_id, initial, data);
    // The saga continues the trace of whatever started it (an HTTP request, a message).
    let trace = trace::current().unwrap_or_else(TraceContext::root);
    let data_json = serde_json::to_value(data).expect("saga data serializes");
    let update = SagaUpdate {
        state: initial.as_ref(),
        data: &data_json,
        attempt: i32::from(command.is_some()),
        deadline_at: command.as_ref().map(|_| deadline::<K>(timing, initial, 1)),
        last_error: None,
        awaits: initial.awaits(),
    };
    let record = TransitionRecord {
        saga_id,
        from: None,
        to: initial.as_ref(),
        event: "Started",
        applied: true,
        detail: &detail,
        actor: actor.as_str(),
        took_ms: None,
    };
    store::insert(tx, saga_id, K::KIND, &trace.trace_id_hex(), &update, &record, &K::concerns(data)).await?;
    let mut messages: Vec<Outgoing> = command.iter().map(|c| Outgoing::command(c).in_trace(trace)).collect();
    messages.extend(events.into_iter().map(|e| e.in_trace(trace)));
    outbox::enqueue(tx, &messages).await?;
    metrics::counter!("saga_transitions_total", "kind" => K::KIND, "from" => "", "to" => Into::<&'static str>::into(initial))
        .increment(1);
    tracing::info!(%saga_id, kind = K::KIND, state = initial.as_ref(), "saga started");
    Ok(())
}

fn parse<K: SagaKind>(row: &SagaRow) -> Result<(K::State, K::Data), EngineError> {
    parse_parts::<K>(row.id, &row.state, &row.data)
}

/// A saga's stored state and data, typed for its kind.
pub(crate) fn parse_parts<K: SagaKind>(
    id: Uuid,
    state: &str,
    data: &Value,
) -> Result<(K::State, K::Data), EngineError> {
    let corrupt = |reason: String| EngineError::Corrupt { id, reason };
    let typed = state.parse().map_err(|_| corrupt(format!("unknown state {state:?}")))?;
    let data = serde_json::from_value(data.clone()).map_err(|e| corrupt(e.to_string()))?;
    Ok((typed, data))
}

fn detail<R: MessageFamily, P: PersonAnswer>(input: &Input<R, P>) -> Value {
    match input {
        Input::Reply(reply) => reply.to_parts().1,
        Input::Person(_) => Value::Null,
        Input::GaveUp(GaveUp::Unanswered { attempts }) => json!({ "attempts": attempts }),
        Input::GaveUp(GaveUp::Refused { command, reason }) => json!({ "command": command, "reason": reason }),
        Input::Operator(Action::Compensate { reason } | Action::Retry { reason }) => json!({ "reason": reason }),
        Input::Operator(Action::Resolve { note }) => json!({ "note": note }),
    }
}

/// The trace every message of the saga belongs to.
fn trace_of(row: &SagaRow) -> TraceContext {
    row.trace_id.as_deref().and_then(TraceContext::from_trace_id).unwrap_or_else(|| TraceContext::derived(row.id))
}

/// Applies one input to a saga whose row the caller has locked, and writes what it sends.
pub async fn apply<K: SagaKind>(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    row: &SagaRow,
    input: &InputOf<K>,
    actor: Actor<'_>,
) -> Result<Applied, EngineError> {
    let mut out = Vec::new();
    let applied = decide::<K>(tx, timing, row, input, actor, &mut out).await?;
    outbox::enqueue(tx, &out).await?;
    Ok(applied)
}

/// [`apply`], with the messages it sends left in `out` for the caller to write before it
/// commits: a consumer writes a whole batch's in one statement.
pub async fn decide<K: SagaKind>(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    row: &SagaRow,
    input: &InputOf<K>,
    actor: Actor<'_>,
    out: &mut Vec<Outgoing>,
) -> Result<Applied, EngineError> {
    let (state, data) = parse::<K>(row)?;
    let event = input.name();
    let mut detail = detail(input);
    let step = match K::transition(row.id, state, &data, input) {
        Ok(step) => step,
        Err(refused) => {
            tracing::warn!(saga_id = %row.id, state = state.as_ref(), event, "transition refused");
            refused_counter(K::KIND).increment(1);
            detail = json!({ "refused": refused.to_string(), "input": detail });
            let record = TransitionRecord {
                saga_id: row.id,
                from: Some(state.as_ref()),
                to: state.as_ref(),
                event: &event,
                applied: false,
                detail: &detail,
                actor: actor.as_str(),
                took_ms: None,
            };
            store::record_transition(tx, &record).await?;
            return Ok(Applied::Refused { state: state.as_ref().to_owned(), reason: refused.to_string() });
        }
    };
    let data_json = serde_json::to_value(&step.data).expect("saga data serializes");
    let awaiting = !step.commands.is_empty();
    let update = SagaUpdate {
        state: step.next.as_ref(),
        data: &data_json,
        attempt: i32::from(awaiting),
        deadline_at: awaiting.then(|| deadline::<K>(timing, step.next, 1)),
        last_error: step.error.as_deref(),
        awaits: step.next.awaits(),
    };
    // A step's latency runs from entering a state to leaving it; staying (a retry) is no step.
    let took_ms = (step.next != state).then(|| (Utc::now() - row.state_entered_at).as_seconds_f64() * 1000.0);
    let record = TransitionRecord {
        saga_id: row.id,
        from: Some(state.as_ref()),
        to: step.next.as_ref(),
        event: &event,
        applied: true,
        detail: &detail,
        actor: actor.as_str(),
        took_ms,
    };
    if !store::update(tx, row, &update, Some(&record)).await? {
        return Err(EngineError::Fenced(row.id));
    }
    let trace = trace_of(row);
    out.extend(step.commands.iter().map(|c| Outgoing::command(c).in_trace(trace)));
    out.extend(step.events.iter().cloned().map(|e| e.in_trace(trace)));
    K::after_transition(tx, timing, row.id, step.next, &step.data).await?;
    let (from, to): (&'static str, &'static str) = (state.into(), step.next.into());
    metrics::counter!("saga_transitions_total", "kind" => K::KIND, "from" => from, "to" => to).increment(1);
    if let Some(took_ms) = took_ms {
        metrics::histogram!("saga_step_seconds", "kind" => K::KIND, "from" => from, "to" => to)
            .record(took_ms / 1000.0);
    }
    tracing::info!(saga_id = %row.id, from = state.as_ref(), to = step.next.as_ref(), event, "saga transition");
    Ok(Applied::Moved { from: state.as_ref().to_owned(), to: step.next.as_ref().to_owned() })
}

/// A locked saga's deadline passed: send its command again (into `out`), or give up on the step.
/// `held`: a message of the saga still waits in the outbox, so the broker never took the last
/// send (or the answer is on its way back): the wait starts again and no attempt is counted, so
/// a broker outage, however long, never uses up a step's attempts.
pub async fn on_deadline<K: SagaKind>(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    row: &SagaRow,
    held: bool,
    out: &mut Vec<Outgoing>,
) -> Result<(), EngineError> {
    let (state, data) = parse::<K>(row)?;
    let Some(command) = K::outstanding(row.id, state, &data) else {
        // Nothing is awaited: a deadline left behind by hand. Clear it.
        let update = SagaUpdate {
            state: state.as_ref(),
            data: &row.data,
            attempt: 0,
            deadline_at: None,
            last_error: None,
            awaits: state.awaits(),
        };
        store::update(tx, row, &update, None).await?;
        return Ok(());
    };
    if held {
        let update = SagaUpdate {
            state: state.as_ref(),
            data: &row.data,
            attempt: row.attempt,
            deadline_at: Some(deadline::<K>(timing, state, row.attempt)),
            last_error: None,
            awaits: state.awaits(),
        };
        if !store::update(tx, row, &update, None).await? {
            return Err(EngineError::Fenced(row.id));
        }
        metrics::counter!("saga_deadline_held_total", "kind" => K::KIND).increment(1);
        tracing::debug!(saga_id = %row.id, state = state.as_ref(), "deadline passed while a message waits in the outbox; waiting again");
        return Ok(());
    }
    if row.attempt >= timing.max_attempts {
        let gave_up = Input::GaveUp(GaveUp::Unanswered { attempts: row.attempt });
        decide::<K>(tx, timing, row, &gave_up, Actor::Engine, out).await?;
        return Ok(());
    }
    let attempt = row.attempt + 1;
    let message = Outgoing::command(&command).in_trace(trace_of(row));
    let update = SagaUpdate {
        state: state.as_ref(),
        data: &row.data,
        attempt,
        deadline_at: Some(deadline::<K>(timing, state, attempt)),
        // A resend is routine, not an error: the timeline and the attempt count show it.
        last_error: None,
        awaits: state.awaits(),
    };
    let detail = json!({ "attempt": attempt, "command": message.message_type, "message_id": message.message_id });
    let record = TransitionRecord {
        saga_id: row.id,
        from: Some(state.as_ref()),
        to: state.as_ref(),
        event: "CommandResent",
        applied: true,
        detail: &detail,
        actor: Actor::Engine.as_str(),
        took_ms: None,
    };
    if !store::update(tx, row, &update, Some(&record)).await? {
        return Err(EngineError::Fenced(row.id));
    }
    out.push(message);
    resent_counter(K::KIND).increment(1);
    tracing::warn!(saga_id = %row.id, state = state.as_ref(), attempt, "deadline passed; command resent");
    Ok(())
}

/// A participant refused `command` (a message type) of a locked saga as one that can never
/// succeed: if the saga still waits on that command, the step fails now, with the reason, rather
/// than after every resend was refused the same way. `false` when it waits on something else.
pub async fn on_refused<K: SagaKind>(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    row: &SagaRow,
    command: &str,
    reason: &str,
    out: &mut Vec<Outgoing>,
) -> Result<bool, EngineError> {
    let (state, data) = parse::<K>(row)?;
    let awaited = K::outstanding(row.id, state, &data).map(|c| Outgoing::command(&c).message_type);
    if awaited.as_deref() != Some(command) {
        return Ok(false);
    }
    let gave_up = Input::GaveUp(GaveUp::Refused { command: command.to_owned(), reason: reason.to_owned() });
    decide::<K>(tx, timing, row, &gave_up, Actor::Engine, out).await?;
    Ok(true)
}
