//! The saga participants: the workers that carry out the saga kinds' commands, each in one local
//! transaction that also writes its inbox row and its reply (to the outbox), acknowledged only
//! after that commits (the consumer loop is [`platform::messaging::consumer`]).
//!
//! - [`warehouse`]: dispatches and cancels shipments;
//! - [`inventory`]: takes shipments into a store's stock.
//!
//! [`spawn`] starts the worker of a participant the saga kinds declare; the binaries and
//! `orchestrator all` start them through it.

pub mod inventory;
pub mod warehouse;

use platform::{
    messaging::{Participant, Queue},
    process::Services,
    shutdown::Shutdown,
};
use sagas::{INVENTORY, WAREHOUSE};
use stock::Cache;
use tokio::task::JoinSet;

/// Every participant this build has a worker for.
pub const ALL: [Participant; 2] = [WAREHOUSE, INVENTORY];

/// Starts the consumer of `participant`'s queue; `false` when this build has no worker for it.
pub fn spawn(services: &Services, participant: Participant, tasks: &mut JoinSet<()>, shutdown: &Shutdown) -> bool {
    let queue = Queue::Commands(participant);
    if participant == WAREHOUSE {
        tasks.spawn(services.consumer(queue, warehouse::WarehouseWorker).run(shutdown.clone()));
    } else if participant == INVENTORY {
        let cache = Cache::new(services.redis.clone(), &services.config.namespace);
        let worker = inventory::InventoryWorker { cache, simulation: services.config.simulation };
        tasks.spawn(services.consumer(queue, worker).run(shutdown.clone()));
    } else {
        return false;
    }
    true
}

/// The whole life of a standalone worker process for `participant`.
pub async fn run_worker(participant: Participant) -> anyhow::Result<()> {
    let registry = sagas::registry();
    platform::process::run_worker(registry.participants(), vec![participant.name], |services, tasks, shutdown| {
        spawn(services, participant, tasks, shutdown);
    })
    .await
}
