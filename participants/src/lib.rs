//! The saga participants: the workers that carry out the saga kinds' commands, each in one local
//! transaction that also writes its inbox row and its reply (to the outbox), acknowledged only
//! after that commits (the consumer loop is [`platform::messaging::consumer`]).
//!
//! - [`warehouse`]: dispatches and cancels shipments;
//! - [`inventory`]: takes shipments into a store's stock, keeps its pick list, releases orders;
//! - [`payment`]: charges and refunds orders (a simulated payment provider).
//!
//! [`spawn`] starts the worker of a participant the saga kinds declare, from [`WORKERS`]; the
//! binaries and `orchestrator all` start them through it. The workers act in a [`simulation`] of
//! the physical world.

pub mod inventory;
pub mod locks;
pub mod payment;
pub mod simulation;
pub mod warehouse;

use anyhow::Context as _;
use platform::{
    messaging::{Participant, Queue},
    process::Services,
    shutdown::Shutdown,
};
use sagas::{INVENTORY, PAYMENT, WAREHOUSE};
use simulation::Simulation;
use stock::Cache;
use tokio::task::JoinSet;

/// A participant's worker: how to start the consumer of its queue.
pub struct Worker {
    pub participant: Participant,
    start: fn(&Services, Queue, Simulation, &mut JoinSet<()>, &Shutdown),
}

/// Every participant this build has a worker for.
pub const WORKERS: &[Worker] = &[
    Worker {
        participant: WAREHOUSE,
        start: |services, queue, _, tasks, shutdown| {
            tasks.spawn(services.consumer(queue, warehouse::WarehouseWorker).run(shutdown.clone()));
        },
    },
    Worker {
        participant: INVENTORY,
        start: |services, queue, simulation, tasks, shutdown| {
            let cache = Cache::new(services.redis.clone(), &services.config.namespace);
            let worker = inventory::InventoryWorker { cache, simulation };
            tasks.spawn(services.consumer(queue, worker).run(shutdown.clone()));
        },
    },
    Worker {
        participant: PAYMENT,
        start: |services, queue, simulation, tasks, shutdown| {
            let worker = payment::PaymentWorker { decline_rate: simulation.payment_decline_rate };
            tasks.spawn(services.consumer(queue, worker).run(shutdown.clone()));
        },
    },
];

/// Starts the consumer of `participant`'s queue. Fails when this build has no worker for it, or
/// the simulation's settings are not valid.
pub fn spawn(
    services: &Services,
    participant: Participant,
    tasks: &mut JoinSet<()>,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let worker = WORKERS
        .iter()
        .find(|worker| worker.participant == participant)
        .with_context(|| format!("this build has no worker for participant {:?}", participant.name))?;
    let simulation = services.config.section::<Simulation>()?;
    (worker.start)(services, Queue::Commands(participant), simulation, tasks, shutdown);
    Ok(())
}

/// The whole life of a standalone worker process for `participant`.
pub async fn run_worker(participant: Participant) -> anyhow::Result<()> {
    let registry = sagas::registry();
    platform::process::run_worker(&registry, vec![participant.name], |services, tasks, shutdown| {
        spawn(services, participant, tasks, shutdown)
    })
    .await
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
