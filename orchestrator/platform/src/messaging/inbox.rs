//! The inbox: one row per (consumer, message id) already handled, written in the same transaction
//! as the message's effect. A redelivered message finds its row and is acknowledged without effect.

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
