//! The inbox: one row per (consumer, message id) already handled, written in the same transaction
//! as the message's effect. A redelivered message finds its row and is acknowledged without effect.

use std::{collections::HashSet, time::Duration};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::protocol::Envelope;

/// Records the messages for `consumer`, in one statement; for each, `false` means it was handled
/// before (or appears earlier in `messages`).
///
/// Two concurrent deliveries of one message serialize on the primary key: the second waits for the
/// first to commit, then sees the conflict.
pub async fn record(conn: &mut PgConnection, consumer: &str, messages: &[&Envelope]) -> sqlx::Result<Vec<bool>> {
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    let types: Vec<&str> = messages.iter().map(|m| m.message_type.as_str()).collect();
    let correlations: Vec<Option<Uuid>> = messages.iter().map(|m| m.correlation_id).collect();
    let mut inserted: HashSet<Uuid> = sqlx::query_scalar!(
        "INSERT INTO inbox (consumer, message_id, message_type, correlation_id)
         SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::uuid[])
         ON CONFLICT DO NOTHING RETURNING message_id",
        consumer,
        &ids,
        &types as &[&str],
        &correlations as &[Option<Uuid>],
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .collect();
    // `remove`: a second copy of a message in the same batch is a duplicate of the first.
    Ok(ids.iter().map(|id| inserted.remove(id)).collect())
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
