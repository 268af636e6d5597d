//! The payment worker: a simulated payment provider. It charges and refunds orders, each at most
//! once, whatever the number of sends: the `payment` table holds one row per order, and every
//! command of an order first takes that order's lock. Whether a charge is declined is decided by
//! the order id, so a resend gets the answer the first send got.

use std::time::Duration;

use platform::{
    config::{ConfigError, Section, Vars},
    messaging::{
        consumer::{HandleError, Handler},
        outbox::Outgoing,
    },
    process::{Services, Worker, WorkerHandler},
    protocol::{CommandFamily, Received},
};
use sagas::{
    PAYMENT,
    fulfilment::{Command, Reply},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    decided,
    locks::{self, Space},
};

/// Where an order's money is; stored as text, checked by the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum PaymentStatus {
    Charged,
    Declined,
    Refunded,
    /// Refunded before any charge: a late charge is declined.
    Voided,
}

/// The payment provider, as its settings make it. Default: it declines nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PaymentWorker {
    /// `PAYMENT_DECLINE_RATE`: the fraction (0.0–1.0) of charges declined.
    pub decline_rate: f64,
}

impl Section for PaymentWorker {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let mut worker = Self::default();
        vars.rate("PAYMENT_DECLINE_RATE", &mut worker.decline_rate)?;
        Ok(worker)
    }
}

/// Its consumer.
pub const WORKER: Worker =
    Worker { rough: &[("PAYMENT_DECLINE_RATE", "0.05")], ..Worker::consuming::<PaymentWorker>(PAYMENT) };

impl WorkerHandler for PaymentWorker {
    fn build(services: &Services) -> anyhow::Result<Self> {
        Ok(services.config.section()?)
    }
}

impl Handler for PaymentWorker {
    type Committed = ();
    type Batch = ();
    type Message = Command;

    fn name(&self) -> &'static str {
        "payment"
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
        let message = &received.envelope;
        let reply = match received.message.clone() {
            Command::ChargePayment { order_id, amount_cents } => {
                charge(tx, order_id, amount_cents, self.decline_rate).await?
            }
            Command::RefundPayment { order_id } => refund(tx, order_id).await?,
            Command::ListForPicking { .. } | Command::RecordHandOver { .. } | Command::ReleaseReservation { .. } => {
                return Err(HandleError::Poison(format!("{} is a store command", message.message_type)));
            }
        };
        out.push(Outgoing::reply(&reply));
        Ok(())
    }

    async fn after_commit(&self, (): ()) {}
}

/// The order's payment, under the order's lock.
async fn lock(tx: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Option<(PaymentStatus, i64)>> {
    locks::lock(tx, Space::Payment, &[order_id.to_string()]).await?;
    let row = sqlx::query!("SELECT status, amount_cents FROM payment WHERE order_id = $1", order_id)
        .fetch_optional(&mut *tx)
        .await?;
    row.map(|r| {
        let status =
            r.status.parse().map_err(|_| sqlx::Error::Decode(format!("payment status {:?}", r.status).into()))?;
        Ok((status, r.amount_cents))
    })
    .transpose()
}

async fn set(tx: &mut PgConnection, order_id: Uuid, status: PaymentStatus, amount_cents: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO payment (order_id, status, amount_cents) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()",
        order_id,
        status.as_ref(),
        amount_cents
    )
    .execute(tx)
    .await?;
    Ok(())
}

async fn charge(tx: &mut PgConnection, order_id: Uuid, amount_cents: i64, decline_rate: f64) -> sqlx::Result<Reply> {
    Ok(match lock(tx, order_id).await? {
        None if decided(order_id, decline_rate) => {
            set(tx, order_id, PaymentStatus::Declined, 0).await?;
            Reply::PaymentDeclined { order_id, reason: "the card was declined (simulated)".into() }
        }
        None => {
            set(tx, order_id, PaymentStatus::Charged, amount_cents).await?;
            Reply::PaymentApproved { order_id, amount_cents }
        }
        Some((PaymentStatus::Charged | PaymentStatus::Refunded, charged)) => {
            Reply::PaymentApproved { order_id, amount_cents: charged }
        }
        Some((PaymentStatus::Declined, _)) => {
            Reply::PaymentDeclined { order_id, reason: "the card was declined (simulated)".into() }
        }
        Some((PaymentStatus::Voided, _)) => {
            Reply::PaymentDeclined { order_id, reason: "the payment was voided before the charge arrived".into() }
        }
    })
}

async fn refund(tx: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Reply> {
    Ok(match lock(tx, order_id).await? {
        None => {
            set(tx, order_id, PaymentStatus::Voided, 0).await?;
            Reply::PaymentRefunded { order_id, amount_cents: 0 }
        }
        Some((PaymentStatus::Charged, amount_cents)) => {
            set(tx, order_id, PaymentStatus::Refunded, amount_cents).await?;
            Reply::PaymentRefunded { order_id, amount_cents }
        }
        Some((PaymentStatus::Refunded, amount_cents)) => Reply::PaymentRefunded { order_id, amount_cents },
        Some((PaymentStatus::Declined | PaymentStatus::Voided, _)) => {
            Reply::PaymentRefunded { order_id, amount_cents: 0 }
        }
    })
}
