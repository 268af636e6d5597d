//! How the world misbehaves: stopped workers, duplicated or lost messages, failing deliveries,
//! an unreachable cache, a killed orchestrator. Every step but the last configures how the
//! application starts, and so must come before the first step that uses it.

use std::sync::atomic::Ordering;

use cucumber::{given, when};
use orchestrator::app::Roles;

use crate::World;

#[given("the delivery workers are stopped")]
async fn workers_stopped(world: &mut World) {
    // The API and the saga engine run; the warehouse and the stores do not answer.
    let roles = Roles::serve();
    world.set_roles("the delivery workers are stopped", roles);
    // With nobody answering, the tests' short deadlines would make the saga give up within two
    // seconds: on a loaded machine, before the scenario has looked at it. These scenarios are
    // about an open saga, not its deadlines, so they get the production timing.
    world.configure("the delivery workers are stopped").config.saga = platform::config::Config::default().saga;
}

#[given("every message is delivered twice")]
async fn delivered_twice(world: &mut World) {
    world.faults("every message is delivered twice").publish_twice = true;
}

#[given("the next reply from a delivery worker is lost on the way")]
async fn next_reply_lost(world: &mut World) {
    let faults = world.faults("the next reply from a delivery worker is lost on the way");
    // A replenishment's reply: the order's own saga (payment, pick list) is not the one watched.
    faults.lose_only = Some(<sagas::replenishment::Reply as platform::protocol::MessageFamily>::TYPES);
    faults.lose_replies.store(1, Ordering::SeqCst);
}

#[given("deliveries fail at the store")]
async fn deliveries_fail(world: &mut World) {
    world.configure("deliveries fail at the store").config.vars.set("RECEIPT_FAILURE_RATE", 1.0);
}

#[given("the stock cache is down")]
async fn cache_down(world: &mut World) {
    // Nothing listens on port 1: every cache call fails, as with Redis down. The real Redis is
    // shared with other tests and stays up.
    world.configure("the stock cache is down").config.redis_url = "redis://127.0.0.1:1".into();
}

#[when("the orchestrator is killed and started again with its workers")]
async fn killed_and_restarted(world: &mut World) {
    world.ensure_started().await;
    world.crash_and_restart(crate::support::everything()).await;
}
