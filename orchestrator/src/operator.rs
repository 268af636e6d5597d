//! Operators' actions on a saga. Each locks the saga and goes through the kind's transition
//! function like any other input, so an action the saga's state does not allow is refused with the
//! reason; either way it is recorded in the timeline with who asked and why.

use uuid::Uuid;

use platform::saga::{
    Action, Actor,
    engine::{Applied, EngineError},
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
    let driver = engine_outcome(ctx.registry.driver(&row.kind))?;
    let applied = engine_outcome(driver.act(&mut tx, &ctx.timing, &row, action, Actor::Caller(&actor)).await)?;
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

/// What an engine failure means to the operator who asked.
pub(crate) fn engine_outcome<T>(outcome: Result<T, EngineError>) -> Result<T> {
    outcome.or_else(|error| match error {
        // Taking up a failed saga again can meet the kind's one-open guard.
        EngineError::Database(error) => Err(error).on_constraint(|constraint| {
            (constraint == "replenishment_one_open").then(|| {
                Error::Conflict(
                    "another replenishment of this product for this store has opened since; \
                     it must close before this one can be taken up again"
                        .into(),
                )
            })
        }),
        EngineError::Fenced(id) => Err(Error::Conflict(format!("saga {id} changed meanwhile; try again"))),
        other => Err(Error::Conflict(format!("the engine cannot drive this saga: {other}"))),
    })
}
