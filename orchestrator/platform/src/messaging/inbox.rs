//! The inbox: one row per (consumer, message id) already handled, written in the same transaction
//! as the message's effect. A redelivered message finds its row and is acknowledged without effect.

use std::time::Duration;

use sqlx::PgConnection;

use crate::protocol::Envelope;

/// Records the message for `consumer`; `false` means it was handled before.
///
/// Two concurrent deliveries of one message serialize on the primary key: the second waits for the
/// first to commit, then sees the conflict.
pub async fn record(conn: &mut PgConnection, consumer: &str, message: &Envelope) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO inbox (consumer, message_id, message_type, correlation_id)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        consumer,
        message.message_id,
        message.message_type,
        message.correlation_id,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Deletes up to `limit` rows received more than `older_than` ago, oldest first; returns how many.
/// A message redelivered after its row is gone would be handled again, so `older_than` is the
/// deduplication window.
///
/// Rows another transaction holds are skipped, not waited for.
pub async fn delete_old(conn: &mut PgConnection, older_than: Duration, limit: i64) -> sqlx::Result<u64> {
    // By ctid: the key is two columns, and `= ANY(ARRAY(…))` lets the planner fetch exactly the
    // rows the subquery locked instead of joining against the whole table.
    let deleted = sqlx::query!(
        "DELETE FROM inbox WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM inbox WHERE received_at < now() - make_interval(secs => $1)
             ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
        older_than.as_secs_f64(),
        limit
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(deleted)
}
