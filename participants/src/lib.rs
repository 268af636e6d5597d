//! The saga participants: the workers that carry out the saga kinds' commands, each in one local
//! transaction that also writes its inbox row and its reply (to the outbox), acknowledged only
//! after that commits (the consumer loop is [`platform::messaging::consumer`]).
//!
//! - [`warehouse`]: dispatches and cancels shipments;
//! - [`inventory`]: takes shipments into a store's stock, keeps its pick list, releases orders;
//! - [`payment`]: charges and refunds orders (a simulated payment provider);
//! - [`supplier`]: takes purchase orders and ships them after its lead time (a simulated supplier).
//!
//! [`WORKERS`] says how to start the worker of each participant the saga kinds declare; the
//! binaries and `darkstores` start them from it. Each worker reads its own settings, which
//! simulate the physical world it acts in (the store's are in [`simulation`]).

pub mod inventory;
pub mod locks;
pub mod payment;
pub mod simulation;
pub mod supplier;
pub mod warehouse;

use platform::{process::Worker, saga::registry::Registry};

/// Every participant this build has a worker for, each declared by its own module. A process that
/// hosts workers (a worker binary, or `darkstores`) is handed this list.
pub const WORKERS: &[Worker] = &[warehouse::WORKER, inventory::WORKER, payment::WORKER, supplier::WORKER];

/// The whole life of a standalone worker process for `participant`.
pub async fn run_worker(participant: platform::messaging::Participant) -> anyhow::Result<()> {
    let registry: Registry = sagas::registry();
    platform::process::run_worker(&registry, Worker::of(WORKERS, participant)?).await
}

/// Whether the simulated world fails the thing named by `id`, with probability `rate`. Decided by
/// the id rather than drawn at each send: a failure is not always recorded, so a fresh draw would
/// let a command sent again succeed after an earlier send had failed and the saga had started to
/// unwind on that failure. The id's low 32 bits are random in a v4 and in a v7 id alike (a v7's
/// high bits are its time, then a counter that keeps ids made in one millisecond in order).
fn decided(id: uuid::Uuid, rate: f64) -> bool {
    let draw = id.as_u128() as u32;
    rate >= 1.0 || (rate > 0.0 && (f64::from(draw) / 2f64.powi(32)) < rate)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::decided;

    #[test]
    fn a_thing_fails_at_every_send_or_at_none() {
        // Ids made one after the other, as the system makes them: v7, whose high bits are the time.
        let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
        let failed: Vec<bool> = ids.iter().map(|&id| decided(id, 0.25)).collect();
        assert!(ids.iter().zip(&failed).all(|(&id, &first)| decided(id, 0.25) == first));
        let share = failed.iter().filter(|&&f| f).count() as f64 / ids.len() as f64;
        assert!((0.2..0.3).contains(&share), "failed {share} of the ids at a rate of 0.25");
        assert!(ids.iter().all(|&id| decided(id, 1.0) && !decided(id, 0.0)));
    }
}
