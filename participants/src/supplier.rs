//! The supplier worker: a simulated supplier of the central warehouse. It takes purchase orders,
//! declines `SUPPLIER_DECLINE_RATE` of them (decided by the order's id, so a resend gets the
//! answer the first send got), and ships the others once `SUPPLIER_LEAD_TIME_MS` has passed,
//! answering `PurchaseConfirmed` then. Each order is taken, shipped or cancelled at most once,
//! whatever the number of sends: `supplier_order` holds one row per order, and every command of an
//! order, and its shipping, first takes that order's lock.
//!
//! The shipping is the supplier's own clock: a task of the worker's process ships the orders whose
//! lead time has passed, each with its answer in the same transaction.

use std::time::Duration;

use platform::{
    config::{ConfigError, Section, Vars},
    messaging::{
        consumer::{HandleError, Handler},
        outbox::{self, OutboxSignal, Outgoing},
    },
    process::{Services, Worker, WorkerHandler, start_consumer},
    protocol::{CommandFamily, Received},
    shutdown::Shutdown,
};
use sagas::purchase_order::{Command, Reply, SUPPLIER};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    decided,
    locks::{self, Space},
};

/// Where an order is at the supplier; stored as text, checked by the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum SupplierStatus {
    /// Taken; ships when its lead time has passed.
    Accepted,
    Shipped,
    Declined,
    /// Cancelled before it shipped (or before it arrived: a late order is declined).
    Cancelled,
}

/// The supplier, as its settings make it. Default: it takes every order and ships at once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SupplierWorker {
    /// `SUPPLIER_DECLINE_RATE`: the fraction (0.0–1.0) of purchase orders it declines.
    pub decline_rate: f64,
    /// `SUPPLIER_LEAD_TIME_MS`: the time between taking a purchase order and shipping it.
    pub lead_time: Duration,
}

impl Section for SupplierWorker {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let mut worker = Self::default();
        vars.rate("SUPPLIER_DECLINE_RATE", &mut worker.decline_rate)?;
        vars.millis("SUPPLIER_LEAD_TIME_MS", &mut worker.lead_time)?;
        Ok(worker)
    }
}

/// Its consumer, and the clock that ships what is due.
pub const WORKER: Worker = Worker {
    start: |services, queue, tasks, shutdown| {
        start_consumer::<SupplierWorker>(services, queue, tasks, shutdown)?;
        let (pool, signal) = (services.pool.clone(), services.outbox_signal.clone());
        tasks.spawn(ship_when_due(pool, signal, shutdown.clone()));
        Ok(())
    },
    clock: Some(|pool| Box::pin(async move { Ok(ship_due(pool).await?) })),
    rough: &[("SUPPLIER_DECLINE_RATE", "0.05"), ("SUPPLIER_LEAD_TIME_MS", "2000")],
    ..Worker::consuming::<SupplierWorker>(SUPPLIER)
};

impl WorkerHandler for SupplierWorker {
    fn build(services: &Services) -> anyhow::Result<Self> {
        Ok(services.config.section()?)
    }
}

impl Handler for SupplierWorker {
    type Committed = ();
    type Batch = ();
    type Message = Command;

    fn name(&self) -> &'static str {
        "supplier"
    }

    fn pause(&self) -> Duration {
        Duration::ZERO
    }

    fn lock_order(&self, command: &Command) -> String {
        command.saga_id().to_string()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &Received<Command>,
        (): &mut (),
        out: &mut Vec<Outgoing>,
    ) -> Result<(), HandleError> {
        let reply = match received.message.clone() {
            Command::PlacePurchase { purchase_id, product_id, quantity } => {
                if quantity <= 0 {
                    return Err(HandleError::Poison(format!("cannot order a quantity of {quantity}")));
                }
                self.place(tx, purchase_id, product_id, quantity).await?
            }
            Command::CancelPurchase { purchase_id, product_id } => Some(cancel(tx, purchase_id, product_id).await?),
            Command::ReceivePurchase { .. } => {
                return Err(HandleError::Poison("ReceivePurchase is a warehouse command".into()));
            }
        };
        out.extend(reply.as_ref().map(Outgoing::reply));
        Ok(())
    }

    async fn after_commit(&self, (): ()) {}
}

impl SupplierWorker {
    /// Takes the order (no answer until it ships), or answers what became of it already.
    async fn place(
        &self,
        tx: &mut PgConnection,
        purchase_id: Uuid,
        product_id: Uuid,
        quantity: i64,
    ) -> sqlx::Result<Option<Reply>> {
        let declined = || Reply::PurchaseDeclined {
            purchase_id,
            reason: "the supplier cannot deliver this product now (simulated)".into(),
        };
        Ok(match lock(tx, purchase_id).await? {
            None if decided(purchase_id, self.decline_rate) => {
                insert(tx, purchase_id, product_id, quantity, SupplierStatus::Declined, Duration::ZERO).await?;
                Some(declined())
            }
            None => {
                insert(tx, purchase_id, product_id, quantity, SupplierStatus::Accepted, self.lead_time).await?;
                None
            }
            Some((SupplierStatus::Accepted, _)) => None,
            Some((SupplierStatus::Shipped, quantity)) => Some(Reply::PurchaseConfirmed { purchase_id, quantity }),
            Some((SupplierStatus::Declined, _)) => Some(declined()),
            Some((SupplierStatus::Cancelled, _)) => Some(Reply::PurchaseDeclined {
                purchase_id,
                reason: "the order was cancelled before it reached the supplier".into(),
            }),
        })
    }
}

/// Cancels the order unless it shipped; a cancel that comes first leaves a cancelled order that a
/// late `PlacePurchase` finds.
async fn cancel(tx: &mut PgConnection, purchase_id: Uuid, product_id: Uuid) -> sqlx::Result<Reply> {
    Ok(match lock(tx, purchase_id).await? {
        None => {
            insert(tx, purchase_id, product_id, 0, SupplierStatus::Cancelled, Duration::ZERO).await?;
            Reply::PurchaseCancelled { purchase_id }
        }
        Some((SupplierStatus::Accepted, _)) => {
            set_status(tx, purchase_id, SupplierStatus::Cancelled).await?;
            Reply::PurchaseCancelled { purchase_id }
        }
        Some((SupplierStatus::Shipped, quantity)) => Reply::PurchaseAlreadyShipped { purchase_id, quantity },
        Some((SupplierStatus::Declined | SupplierStatus::Cancelled, _)) => Reply::PurchaseCancelled { purchase_id },
    })
}

/// The order's status and quantity at the supplier, under the order's lock.
async fn lock(tx: &mut PgConnection, purchase_id: Uuid) -> sqlx::Result<Option<(SupplierStatus, i64)>> {
    locks::lock(tx, Space::SupplierOrder, &[purchase_id.to_string()]).await?;
    read(tx, purchase_id).await
}

async fn read(tx: &mut PgConnection, purchase_id: Uuid) -> sqlx::Result<Option<(SupplierStatus, i64)>> {
    let row = sqlx::query!("SELECT status, quantity FROM supplier_order WHERE purchase_id = $1", purchase_id)
        .fetch_optional(&mut *tx)
        .await?;
    row.map(|r| {
        let status =
            r.status.parse().map_err(|_| sqlx::Error::Decode(format!("supplier status {:?}", r.status).into()))?;
        Ok((status, r.quantity))
    })
    .transpose()
}

async fn insert(
    tx: &mut PgConnection,
    purchase_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    status: SupplierStatus,
    lead_time: Duration,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO supplier_order (purchase_id, product_id, quantity, status, ships_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        purchase_id,
        product_id,
        quantity,
        status.as_ref(),
        lead_time.as_secs_f64()
    )
    .execute(tx)
    .await?;
    Ok(())
}

async fn set_status(tx: &mut PgConnection, purchase_id: Uuid, status: SupplierStatus) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE supplier_order SET status = $2, updated_at = now() WHERE purchase_id = $1",
        purchase_id,
        status.as_ref()
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// How many due orders one shipping transaction takes.
const SHIP_BATCH: i64 = 100;
/// The longest the supplier waits before it looks again: an order taken meanwhile ships at most
/// this late.
const SHIP_IDLE: Duration = Duration::from_millis(500);

/// Ships the orders whose lead time has passed, with their answers, until shut down.
pub async fn ship_when_due(pool: PgPool, outbox_signal: OutboxSignal, mut shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        let nap = match ship_due(&pool).await {
            Ok(shipped) if shipped as i64 == SHIP_BATCH => {
                outbox_signal.notify();
                Duration::ZERO
            }
            Ok(shipped) => {
                if shipped > 0 {
                    outbox_signal.notify();
                }
                until_next_due(&pool).await
            }
            Err(error) => {
                tracing::warn!(%error, "shipping the supplier's due orders failed; retrying");
                SHIP_IDLE
            }
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

async fn until_next_due(pool: &PgPool) -> Duration {
    let wait_ms = sqlx::query_scalar!(
        "SELECT GREATEST(0, EXTRACT(EPOCH FROM min(ships_at) - now()) * 1000)::int8 FROM supplier_order
         WHERE status = 'accepted'"
    )
    .fetch_one(pool)
    .await
    .ok()
    .flatten();
    wait_ms.map_or(SHIP_IDLE, |ms| Duration::from_millis(ms.unsigned_abs()).min(SHIP_IDLE))
}

/// Ships up to a batch of due orders in one transaction; returns how many.
pub async fn ship_due(pool: &PgPool) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let mut due = sqlx::query_scalar!(
        "SELECT purchase_id FROM supplier_order WHERE status = 'accepted' AND ships_at <= now()
         ORDER BY ships_at LIMIT $1",
        SHIP_BATCH
    )
    .fetch_all(&mut *tx)
    .await?;
    // The orders' locks, as their commands take them and in the order a batch of commands takes
    // them, so that neither waits on the other in a circle. Under them, each status is read again:
    // another process may have shipped or cancelled the order meanwhile.
    due.sort_by_cached_key(Uuid::to_string);
    let keys: Vec<String> = due.iter().map(Uuid::to_string).collect();
    locks::lock(&mut tx, Space::SupplierOrder, &keys).await?;
    let mut replies = Vec::with_capacity(due.len());
    for purchase_id in due {
        if let Some((SupplierStatus::Accepted, quantity)) = read(&mut tx, purchase_id).await? {
            set_status(&mut tx, purchase_id, SupplierStatus::Shipped).await?;
            replies.push(Outgoing::reply(&Reply::PurchaseConfirmed { purchase_id, quantity }));
        }
    }
    outbox::enqueue(&mut tx, &replies).await?;
    tx.commit().await?;
    Ok(replies.len())
}
