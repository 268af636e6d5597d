//! Operators' actions on a saga. Each locks the saga and goes through the kind's transition
//! function like any other input, so an action the saga's state does not allow is refused with the
//! reason; either way it is recorded in the timeline with who asked and why.

use uuid::Uuid;

use platform::saga::{
    Action, Actor,
    engine::{Applied, EngineError},
    registry::Driver,
    store,
};

use crate::{
    Context,
    access::audit::Audit,
    error::{Error, OnConstraint, Result},
};

/// Applies `action` to saga `id` on behalf of the key in `audit`, which the timeline names; a
/// refusal is a [`Error::Conflict`] with the reason (and stays in the timeline).
pub async fn act(ctx: &Context, audit: &Audit, id: Uuid, action: Action) -> Result<()> {
    let mut tx = ctx.pool.begin().await?;
    let row = store::lock(&mut tx, id).await?.ok_or_else(|| Error::NotFound(format!("no saga {id}")))?;
    let actor = audit.actor();
    let driver = engine_outcome(ctx.registry.driver(&row.kind), None)?;
    let acted = driver.act(&mut tx, &ctx.timing, &row, action, Actor::Caller(&actor)).await;
    let applied = engine_outcome(acted, Some(driver))?;
    // A refusal is recorded in the timeline, so its audit row goes with it.
    audit.record(&mut tx, if matches!(applied, Applied::Moved { .. }) { 200 } else { 409 }).await?;
    tx.commit().await?;
    match applied {
        Applied::Moved { from, to } => {
            tracing::info!(saga_id = %id, actor, from, to, "operator action applied");
            ctx.outbox.notify();
            Ok(())
        }
        Applied::Refused { state, reason } => {
            tracing::info!(saga_id = %id, actor, state, reason, "operator action refused");
            Err(Error::Conflict(format!("the saga is {state}: {reason}")))
        }
    }
}

/// What an engine failure means to whoever asked; a violated constraint as the saga's kind
/// (`driver`) explains it.
pub(crate) fn engine_outcome<T>(outcome: Result<T, EngineError>, driver: Option<&dyn Driver>) -> Result<T> {
    outcome.or_else(|error| match error {
        EngineError::Database(error) => Err(error).on_constraint(|constraint| {
            driver.and_then(|driver| driver.conflict(constraint)).map(|meaning| Error::Conflict(meaning.into()))
        }),
        EngineError::Fenced(id) => Err(Error::Conflict(format!("saga {id} changed meanwhile; try again"))),
        other => Err(Error::Conflict(format!("the engine cannot drive this saga: {other}"))),
    })
}
