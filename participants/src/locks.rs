//! The workers' advisory locks, in one place. A worker serializes what it does for one record (a
//! saga's shipment, an order's pick, an order's payment) with a transaction-scoped advisory lock
//! on the record's id, in a space of its own: the space is the seed of the id's hash, so two
//! workers that locked the same id in one space would wait on each other for nothing. A new worker
//! takes a new space here.

use sqlx::PgConnection;

/// The lock spaces, one per kind of record a worker serializes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// A replenishment's shipment or a purchase order's delivery, by saga id: the warehouse's
    /// dispatch, cancel and booking.
    Shipment = 0,
    /// An order's pick, by order id: the store's hand-over and release.
    Pick = 1,
    /// An order's payment, by order id: the payment provider's charge and refund.
    Payment = 2,
    /// A purchase order at the supplier, by its id: taking, shipping and cancelling it.
    SupplierOrder = 3,
}

/// Takes the locks of `keys` in `space`, in the order given (a batch gives them in its lock order,
/// so that batches cannot deadlock); they are released when the transaction ends.
pub async fn lock(tx: &mut PgConnection, space: Space, keys: &[String]) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended(key, $2))
         FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n) ORDER BY n",
        keys,
        space as i64
    )
    .execute(tx)
    .await?;
    Ok(())
}
