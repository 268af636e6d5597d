//! The replenishment saga under every failure the network and the participants can produce.
//!
//! In the spirit of omicron's saga test helpers: each step is failed in turn (refused, never
//! answered, answered but the answer lost) and the saga must unwind cleanly; each message is
//! delivered twice, and each command sent again, and there must be one effect. Messages travel
//! through the real outbox, inboxes and handlers on a real Postgres; only the broker hop is
//! replaced by [`Harness::pump`], which decides each message's fate, and time by
//! [`Harness::expire_deadlines`], so every interleaving is deterministic.

mod support;

// Each kind's runs, in a file of its own.
#[path = "saga_harness/fulfilment.rs"]
mod fulfilment;
#[path = "saga_harness/purchase_order.rs"]
mod purchase_order;
#[path = "saga_harness/replenishment.rs"]
mod replenishment;

use orchestrator::{
    Context,
    access::{audit::Audit, keys},
    inventory::{self, Reorder},
    orders::{self, Placed},
};
use participants::WORKERS;
use platform::{
    db,
    messaging::{Exchange, Participant, consumer::Deliver, outbox, topology::REPLY_ROUTE},
    process::{Services, Worker},
    protocol::Envelope,
    protocol::MessageFamily,
    saga::{
        Awaits, SagaKind, SagaState,
        registry::Registry,
        runner::{ReplyHandler, Sweeper},
    },
};
use sqlx::PgPool;
use stock::level::Levels;
use support::{TestEnv, assert_invariants};
use uuid::Uuid;

/// What the network does to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deliver,
    Twice,
    Lose,
}

struct Harness {
    env: TestEnv,
    ctx: Context,
    replies: ReplyHandler,
    /// The settings the workers are made with: a kind's test sets a participant's knob to make it
    /// refuse (`RECEIPT_FAILURE_RATE=1`, say).
    services: Services,
    /// Every participant's worker, as `participants::WORKERS` declares it.
    workers: Vec<(&'static str, Worker, Box<dyn Deliver>)>,
    sweeper: Sweeper,
    store_id: Uuid,
    product_id: Uuid,
    /// Every saga message delivered: (saga, route, message type), in order.
    delivered: std::sync::Mutex<Vec<(Uuid, String, String)>>,
}

/// What the harness's own changes are recorded as: the deployment's bootstrap admin key.
async fn audit(pool: &PgPool) -> Audit {
    let secret = platform::config::Secret(support::ADMIN_KEY.to_owned());
    keys::bootstrap(pool, Some(&secret)).await.unwrap();
    let ring = keys::KeyRing::default();
    ring.reload(pool).await.unwrap();
    let caller = ring.find(support::ADMIN_KEY).unwrap().expect("the bootstrap key is in use");
    Audit::new(caller, "PUT".into(), "/harness".into(), Default::default(), "harness".into(), String::new())
}

/// Stock the scenario starts with: the warehouse holds 100; the store 10, refilled at 3 to 20.
const WAREHOUSE: i64 = 100;

impl Harness {
    /// A fresh database and workers, each worker's settings at their defaults but for `settings`.
    async fn new(settings: &[(&str, &str)]) -> Self {
        let mut env = TestEnv::new().await;
        for (name, value) in settings {
            env.config.vars.set(name, value);
        }
        let pool = db::connect(&env.config).await.expect("test database migrates");
        let redis = platform::redis::Redis::new(&env.config.redis_url).unwrap();
        let timing = env.config.saga;
        let ctx = Context::build(
            &env.config,
            pool.clone(),
            redis,
            Default::default(),
            std::sync::Arc::new(sagas::registry()),
        );
        let registry = ctx.registry.clone();
        let services = Services::new(env.config.clone(), pool.clone(), &registry).unwrap();
        let (store_id, product_id) = seed(&pool).await;
        let audit = audit(&pool).await;
        inventory::set_warehouse(&ctx, &audit, product_id, WAREHOUSE, Reorder::Keep).await.unwrap();
        let levels = Levels { on_hand: 10, reorder_threshold: 3, target_level: 20 };
        inventory::set_levels(&ctx, &audit, store_id, product_id, levels).await.unwrap();
        Self {
            replies: ReplyHandler { registry: registry.clone(), timing },
            workers: workers(&services, &registry),
            services,
            sweeper: Sweeper { pool, registry, timing, outbox: Default::default() },
            env,
            ctx,
            store_id,
            product_id,
            delivered: Default::default(),
        }
    }

    fn pool(&self) -> &PgPool {
        &self.ctx.pool
    }

    /// Sets a worker's setting, and makes the workers again with it.
    fn set(&mut self, name: &str, value: &str) {
        self.services.config.vars.set(name, value);
        self.workers = workers(&self.services, &self.ctx.registry);
    }

    /// Places an order of 8, which starts its fulfilment and leaves the store low; returns the
    /// order's id (its fulfilment saga's id).
    async fn place_order(&self) -> Uuid {
        let line = sagas::fulfilment::Line { product_id: self.product_id, quantity: ORDERED };
        let placed = orders::place(&self.ctx, &audit(self.pool()).await, self.store_id, &[line], None).await.unwrap();
        let Placed::Created(order) = placed else { panic!("a new order, not a replay") };
        order.id
    }

    /// Places an order that leaves the store low, which starts a replenishment; returns its id.
    async fn start_saga(&self) -> Uuid {
        self.place_order().await;
        sqlx::query_scalar("SELECT saga_id FROM replenishment WHERE store_id = $1 AND product_id = $2")
            .bind(self.store_id)
            .bind(self.product_id)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Delivers saga traffic until the outbox is empty and no worker's clock has anything due,
    /// each message as `fate` decides.
    async fn pump(&self, fate: impl Fn(&Envelope) -> Fate) {
        loop {
            let mut tx = self.pool().begin().await.unwrap();
            let claimed = outbox::claim(&mut tx, 100).await.unwrap();
            tx.commit().await.unwrap();
            if claimed.is_empty() {
                // The workers' own clocks, at their default settings: what is due now.
                let mut done = 0;
                for clock in self.workers.iter().filter_map(|(_, worker, _)| worker.clock) {
                    done += clock(self.pool()).await.unwrap();
                }
                if done == 0 {
                    return;
                }
                continue;
            }
            for message in claimed {
                let saga_traffic = [Exchange::Commands, Exchange::Replies].map(|e| e.name());
                if !saga_traffic.contains(&message.exchange.as_str()) {
                    continue; // domain events have no consumer here
                }
                let copies = match fate(&message.envelope) {
                    Fate::Deliver => 1,
                    Fate::Twice => 2,
                    Fate::Lose => 0,
                };
                for _ in 0..copies {
                    let saga = message.envelope.correlation_id.unwrap_or_default();
                    let seen = (saga, message.routing_key.clone(), message.envelope.message_type.clone());
                    self.delivered.lock().unwrap().push(seen);
                    self.deliver(&message.routing_key, &message.envelope).await;
                }
            }
        }
    }

    async fn deliver(&self, route: &str, message: &Envelope) {
        match route {
            REPLY_ROUTE => self.replies.deliver(self.pool(), message).await.expect("the engine handles replies"),
            participant => {
                let (_, _, worker) = self
                    .workers
                    .iter()
                    .find(|(name, ..)| *name == participant)
                    .unwrap_or_else(|| panic!("no participant routes {participant}"));
                worker.deliver(self.pool(), message).await.expect("handlers succeed");
            }
        }
    }

    /// The saga's commands as they were delivered, each with the answer that came back before the
    /// next command (none for a command whose answer is a person's, or was lost).
    fn traffic(&self, saga: Uuid) -> Vec<(String, Option<String>)> {
        let mut traffic: Vec<(String, Option<String>)> = Vec::new();
        for (_, route, message_type) in self.delivered.lock().unwrap().iter().filter(|(s, ..)| *s == saga) {
            let repeated = traffic.last().is_some_and(|(last, _)| last == message_type);
            match (route.as_str(), traffic.last_mut()) {
                ("orchestrator", Some((_, answer @ None))) => *answer = Some(message_type.clone()),
                ("orchestrator", _) => {}
                // A command delivered twice, or sent again, is the same step.
                _ if repeated => {}
                _ => traffic.push((message_type.clone(), None)),
            }
        }
        traffic
    }

    /// Lets time pass: every open deadline is due now, and the sweeper acts on it.
    async fn expire_deadlines(&self) {
        sqlx::query("UPDATE saga SET deadline_at = now() - interval '1 millisecond' WHERE closed_at IS NULL AND deadline_at IS NOT NULL")
            .execute(self.pool())
            .await
            .unwrap();
        self.sweeper.sweep().await.unwrap();
    }

    /// Whether the saga is closed, and its state.
    async fn ended(&self, id: Uuid) -> (bool, String) {
        sqlx::query_as("SELECT closed_at IS NOT NULL, state FROM saga WHERE id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    async fn saga(&self, id: Uuid) -> (String, Option<String>) {
        sqlx::query_as("SELECT state, last_error FROM saga WHERE id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// The applied transitions' target states, in order.
    async fn timeline(&self, id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT to_state FROM saga_transition WHERE saga_id = $1 AND applied AND from_state IS DISTINCT FROM to_state ORDER BY id")
            .bind(id)
            .fetch_all(self.pool())
            .await
            .unwrap()
    }

    async fn stock(&self) -> (i64, i64) {
        let store: i64 = sqlx::query_scalar("SELECT on_hand FROM inventory WHERE store_id = $1 AND product_id = $2")
            .bind(self.store_id)
            .bind(self.product_id)
            .fetch_one(self.pool())
            .await
            .unwrap();
        let warehouse: i64 = sqlx::query_scalar("SELECT on_hand FROM warehouse_stock WHERE product_id = $1")
            .bind(self.product_id)
            .fetch_one(self.pool())
            .await
            .unwrap();
        (store, warehouse)
    }

    async fn finish(self) {
        assert_invariants(self.pool()).await;
        self.ctx.pool.close().await;
        self.env.teardown().await;
    }
}

/// Every participant of the registered kinds' worker, made from `services`.
fn workers(services: &Services, registry: &Registry) -> Vec<(&'static str, Worker, Box<dyn Deliver>)> {
    let made = |participant: &Participant| {
        let worker = Worker::of(WORKERS, *participant).unwrap();
        (participant.name, worker, (worker.handler)(services).expect("the workers' settings are valid"))
    };
    registry.participants().iter().map(made).collect()
}

async fn seed(pool: &PgPool) -> (Uuid, Uuid) {
    let store = sqlx::query_scalar("INSERT INTO store (name, service_area) VALUES ('Soho', 'W1') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap();
    let product = sqlx::query_scalar("INSERT INTO product (sku, name) VALUES ('MILK-1L', 'Milk') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap();
    (store, product)
}

fn is(message_type: &'static str) -> impl Fn(&Envelope) -> Fate + Copy {
    move |m| if m.message_type == message_type { Fate::Lose } else { Fate::Deliver }
}

/// What the harness's order asks for.
const ORDERED: i64 = 8;
/// The order leaves 2 available; the saga asks for 18 to reach the target of 20.
const REQUESTED: i64 = 18;

#[tokio::test]
async fn a_replenishment_completes_and_moves_the_stock_once() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    h.pump(|_| Fate::Deliver).await;
    assert_eq!(h.saga(saga).await.0, "received");
    assert_eq!(h.timeline(saga).await, ["requested", "dispatched", "received"]);
    assert_eq!(h.stock().await, (10 + REQUESTED, WAREHOUSE - REQUESTED));
    h.finish().await;
}

#[tokio::test]
async fn a_rejected_dispatch_ends_compensated_with_nothing_moved() {
    let h = Harness::new(&[]).await;
    inventory::set_warehouse(&h.ctx, &audit(h.pool()).await, h.product_id, 0, Reorder::Keep).await.unwrap();
    let saga = h.start_saga().await;
    h.pump(|_| Fate::Deliver).await;
    let (state, error) = h.saga(saga).await;
    assert_eq!(state, "compensated");
    assert!(error.unwrap().contains("none of this product"));
    assert_eq!(h.stock().await, (10, 0));
    h.finish().await;
}

#[tokio::test]
async fn an_unanswered_dispatch_unwinds_and_a_late_dispatch_ships_nothing() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    // Every DispatchShipment is lost on the way: the warehouse never hears of the saga.
    h.pump(is("DispatchShipment")).await;
    for _ in 0..3 {
        h.expire_deadlines().await;
        h.pump(is("DispatchShipment")).await;
    }
    assert_eq!(h.saga(saga).await.0, "compensated");
    assert_eq!(h.timeline(saga).await, ["requested", "compensating", "compensated"]);
    // A dispatch that was only delayed, not lost, arrives after the cancel: it must ship nothing.
    let (store_id, product_id) = (h.store_id, h.product_id);
    let late =
        sagas::replenishment::Command::DispatchShipment { saga_id: saga, store_id, product_id, quantity: REQUESTED };
    let late = platform::messaging::outbox::Outgoing::command(&late);
    let mut tx = h.pool().begin().await.unwrap();
    outbox::enqueue(&mut tx, &[late]).await.unwrap();
    tx.commit().await.unwrap();
    h.pump(|_| Fate::Deliver).await;
    assert_eq!(h.stock().await, (10, WAREHOUSE), "the late dispatch found the cancel's tombstone");
    assert_eq!(h.saga(saga).await.0, "compensated", "its reply is refused, not applied");
    h.finish().await;
}

#[tokio::test]
async fn a_dispatch_whose_answer_is_lost_is_cancelled_and_its_stock_returned() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    h.pump(is("ShipmentDispatched")).await;
    for _ in 0..3 {
        h.expire_deadlines().await;
        h.pump(is("ShipmentDispatched")).await;
    }
    assert_eq!(h.saga(saga).await.0, "compensated");
    assert_eq!(h.stock().await, (10, WAREHOUSE), "the goods went back to the warehouse");
    h.finish().await;
}

#[tokio::test]
async fn a_failed_receipt_compensates_and_returns_the_warehouse_stock() {
    let h = Harness::new(&[("RECEIPT_FAILURE_RATE", "1")]).await;
    let saga = h.start_saga().await;
    h.pump(|_| Fate::Deliver).await;
    let (state, error) = h.saga(saga).await;
    assert_eq!(state, "compensated");
    assert!(error.unwrap().contains("refused the delivery"));
    assert_eq!(h.timeline(saga).await, ["requested", "dispatched", "compensating", "compensated"]);
    assert_eq!(h.stock().await, (10, WAREHOUSE));
    h.finish().await;
}

#[tokio::test]
async fn a_receipt_whose_answer_is_lost_cannot_be_undone_and_fails_for_an_operator() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    h.pump(is("StockReceived")).await;
    for _ in 0..3 {
        h.expire_deadlines().await;
        h.pump(is("StockReceived")).await;
    }
    let (state, error) = h.saga(saga).await;
    assert_eq!(state, "failed", "the goods are in the store: the cancel is refused");
    assert!(error.unwrap().contains("already received"));
    assert_eq!(h.stock().await, (10 + REQUESTED, WAREHOUSE - REQUESTED), "the receipt happened exactly once");
    h.finish().await;
}

#[tokio::test]
async fn an_unconfirmed_cancellation_fails_the_saga() {
    let h = Harness::new(&[("RECEIPT_FAILURE_RATE", "1")]).await;
    let saga = h.start_saga().await;
    h.pump(is("ShipmentCancelled")).await;
    for _ in 0..3 {
        h.expire_deadlines().await;
        h.pump(is("ShipmentCancelled")).await;
    }
    let (state, error) = h.saga(saga).await;
    assert_eq!(state, "failed");
    assert!(error.unwrap().contains("not confirmed"));
    assert_eq!(h.stock().await, (10, WAREHOUSE), "the cancel ran once even though every answer was lost");
    h.finish().await;
}

#[tokio::test]
async fn every_message_delivered_twice_has_one_effect() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    h.pump(|_| Fate::Twice).await;
    assert_eq!(h.saga(saga).await.0, "received");
    assert_eq!(h.timeline(saga).await, ["requested", "dispatched", "received"]);
    assert_eq!(h.stock().await, (10 + REQUESTED, WAREHOUSE - REQUESTED));
    let duplicates_seen: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE correlation_id = $1")
        .bind(saga)
        .fetch_one(h.pool())
        .await
        .unwrap();
    assert_eq!(duplicates_seen, 4, "two commands and two replies, each recorded once");
    h.finish().await;
}

#[tokio::test]
async fn every_command_sent_again_after_its_deadline_has_one_effect() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    // Hold every reply back until the command has been resent, then deliver both answers.
    loop {
        h.pump(|_| Fate::Deliver).await;
        let (state, _) = h.saga(saga).await;
        if state == "received" {
            break;
        }
        assert_ne!(state, "compensating", "resends must not make the saga give up");
        h.expire_deadlines().await;
        h.pump(|_| Fate::Deliver).await;
    }
    assert_eq!(h.stock().await, (10 + REQUESTED, WAREHOUSE - REQUESTED));
    h.finish().await;
}

#[tokio::test]
async fn deadlines_that_pass_while_the_broker_is_away_use_up_no_attempt() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    // The first dispatch is lost; from then on the broker is away, so the resend waits in the
    // outbox through far more deadlines than a step has attempts.
    h.pump(is("DispatchShipment")).await;
    for _ in 0..10 {
        h.expire_deadlines().await;
    }
    let (state, attempt): (String, i32) =
        sqlx::query_as("SELECT state, attempt FROM saga WHERE id = $1").bind(saga).fetch_one(h.pool()).await.unwrap();
    assert_eq!((state.as_str(), attempt), ("requested", 2), "one resend, held while it waits to be published");
    // The broker is back: the held resend goes out and the saga carries on.
    h.pump(|_| Fate::Deliver).await;
    assert_eq!(h.saga(saga).await.0, "received");
    assert_eq!(h.stock().await, (10 + REQUESTED, WAREHOUSE - REQUESTED));
    h.finish().await;
}

#[tokio::test]
async fn each_kinds_invariants_find_the_rows_that_break_them() {
    let h = Harness::new(&[]).await;
    // The order leaves the store low: a replenishment starts with it.
    let replenishment = h.start_saga().await;
    let order: Uuid = sqlx::query_scalar("SELECT id FROM customer_order").fetch_one(h.pool()).await.unwrap();
    for _ in 0..2 {
        h.pump(|_| Fate::Deliver).await;
        fulfilment::FulfilmentUnderTest::act(&h, order).await;
    }
    assert_eq!(h.ended(replenishment).await, (true, "received".to_owned()));
    assert_eq!(h.ended(order).await, (true, "fulfilled".to_owned()));
    let broken = || async {
        let mut broken = Vec::new();
        for (kind, invariant) in sagas::registry().invariants() {
            let breaches: Vec<String> = sqlx::query_scalar(invariant.breaches).fetch_all(h.pool()).await.unwrap();
            broken.extend(breaches.into_iter().map(|breach| (kind, invariant.rule, breach)));
        }
        broken
    };
    assert_eq!(broken().await, [], "a clean run breaks nothing");
    // Rows tampered with behind the sagas' back.
    for tamper in [
        "UPDATE shipment SET status = 'dispatched' WHERE replenishment_id = $1",
        "UPDATE replenishment SET closed_at = NULL WHERE saga_id = $1",
        "UPDATE pick SET status = 'released' WHERE order_id = $2",
        "UPDATE customer_order SET status = 'paid' WHERE id = $2",
    ] {
        sqlx::query(tamper).bind(replenishment).bind(order).execute(h.pool()).await.unwrap();
    }
    let (replenishment, order) = (replenishment.to_string(), order.to_string());
    let mut found: Vec<(&str, &str)> = broken()
        .await
        .iter()
        .map(|(kind, rule, breach)| (*kind, if *breach == replenishment || *breach == order { *rule } else { "" }))
        .collect();
    found.sort_unstable();
    assert_eq!(
        found,
        [
            ("order_fulfilment", "a fulfilled order's goods were handed over at its store"),
            ("order_fulfilment", "an order whose saga closed is not half-way"),
            ("replenishment", "a received replenishment's shipment is in the store"),
            ("replenishment", "a replenishment's row follows its saga"),
        ]
    );
    // Not finish(): the rows are broken on purpose.
    h.ctx.pool.close().await;
    h.env.teardown().await;
}

#[tokio::test]
async fn an_unreadable_saga_is_set_aside_without_stalling_other_deadlines() {
    let h = Harness::new(&[]).await;
    let mystery = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO saga (id, kind, state, data, attempt, deadline_at, awaits)
         VALUES ($1, 'mystery', 'x', '{}', 1, now(), 'participant')",
    )
    .bind(mystery)
    .execute(h.pool())
    .await
    .unwrap();
    let saga = h.start_saga().await;
    h.pump(is("DispatchShipment")).await;
    h.expire_deadlines().await;
    h.pump(|_| Fate::Deliver).await;
    assert_eq!(h.saga(saga).await.0, "received", "the resend went out despite the unreadable saga");
    let (deadline, error): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as("SELECT deadline_at, last_error FROM saga WHERE id = $1")
            .bind(mystery)
            .fetch_one(h.pool())
            .await
            .unwrap();
    assert_eq!(deadline, None);
    assert!(error.unwrap().contains("mystery"));
    sqlx::query("DELETE FROM saga_transition WHERE saga_id = $1").bind(mystery).execute(h.pool()).await.unwrap();
    sqlx::query("DELETE FROM saga WHERE id = $1").bind(mystery).execute(h.pool()).await.unwrap();
    h.finish().await;
}

#[tokio::test]
async fn a_reply_for_a_state_already_left_is_recorded_not_applied() {
    let h = Harness::new(&[]).await;
    let saga = h.start_saga().await;
    h.pump(|_| Fate::Deliver).await;
    // A stale dispatch answer (a resend's reply arriving late) after the saga finished.
    let stale =
        sagas::replenishment::Reply::ShipmentDispatched { saga_id: saga, shipment_id: Uuid::new_v4(), quantity: 1 };
    let mut tx = h.pool().begin().await.unwrap();
    outbox::enqueue(&mut tx, &[platform::messaging::outbox::Outgoing::reply(&stale)]).await.unwrap();
    tx.commit().await.unwrap();
    h.pump(|_| Fate::Deliver).await;
    assert_eq!(h.saga(saga).await.0, "received");
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_transition WHERE saga_id = $1 AND NOT applied")
        .bind(saga)
        .fetch_one(h.pool())
        .await
        .unwrap();
    assert_eq!(refused, 1);
    h.finish().await;
}

// The harness generic over saga kinds. It learns a kind's steps from the kind itself: a run with
// nothing lost shows the commands its forward path sends and the answer to each; every command
// the kind declares that the forward path does not send is an undo. Then every forward step is
// refused, left unanswered, and answered with the answer lost, in turn; every undo's answer is
// lost; and the whole saga runs with every message delivered twice. Each run must close the saga
// (done, or waiting for an operator) with its effects where the end says, exactly once. A new step
// or a new kind is covered without a change here; a kind says only how to start a saga, how its
// participants refuse, what people do, and what its effects must be.

/// What the harness needs from a kind's tests.
trait KindUnderTest {
    type Kind: SagaKind;
    /// Starts one saga; returns its id.
    async fn start(h: &Harness) -> Uuid;
    /// Makes the participant of `command` refuse it, before the saga starts; `false` for a
    /// command no participant refuses.
    async fn refuse(h: &mut Harness, command: &str) -> bool;
    /// What people do for the saga when it waits on them (a picker handing an order over).
    async fn act(_h: &Harness, _saga: Uuid) {}
    /// The saga's effects agree with where it ended, and happened once.
    async fn check_effects(h: &Harness, saga: Uuid, end: &str);
}

/// How a run disturbs the saga: a refused command, and the message type lost at every send.
#[derive(Clone, Debug, Default)]
struct Disturbance {
    refusing: Option<&'static str>,
    losing: Vec<&'static str>,
    twice: bool,
}

impl Disturbance {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.refusing.map(|c| format!("{c} refused")));
        parts.extend(self.losing.iter().map(|m| format!("every {m} lost")));
        if self.twice {
            parts.push("every message delivered twice".into());
        }
        if parts.is_empty() { "nothing lost".into() } else { parts.join(", then ") }
    }
}

/// One run's result: where the saga ended, and its traffic as (command, answer) pairs in order.
struct Run {
    end: String,
    traffic: Vec<(String, Option<String>)>,
}

/// Drives a saga until it closes: messages as `fate` decides, people acting, deadlines passing.
async fn run_to_the_end<K: KindUnderTest>(h: &Harness, saga: Uuid, fate: impl Fn(&Envelope) -> Fate) -> String {
    for _ in 0..12 {
        h.pump(&fate).await;
        K::act(h, saga).await;
        h.pump(&fate).await;
        let (closed, state) = h.ended(saga).await;
        if closed {
            return state;
        }
        h.expire_deadlines().await;
    }
    panic!("{} {saga} did not end: {:?}", K::Kind::KIND, h.saga(saga).await)
}

/// One run on a fresh harness: the saga must close with its effects where its end says.
async fn one_run<K: KindUnderTest>(how: &Disturbance) -> Option<Run> {
    let mut h = Harness::new(&[]).await;
    if let Some(command) = how.refusing
        && !K::refuse(&mut h, command).await
    {
        h.finish().await;
        return None;
    }
    let saga = K::start(&h).await;
    let fate = |m: &Envelope| {
        if how.losing.contains(&m.message_type.as_str()) {
            Fate::Lose
        } else if how.twice {
            Fate::Twice
        } else {
            Fate::Deliver
        }
    };
    let end = run_to_the_end::<K>(&h, saga, fate).await;
    let what = format!("{} with {}", K::Kind::KIND, how.describe());
    assert!(awaits::<K>(&end).is_closed(), "{what}: ended {end}, which is not closed");
    K::check_effects(&h, saga, &end).await;
    let traffic = h.traffic(saga);
    h.finish().await;
    Some(Run { end, traffic })
}

/// What a saga of the kind waits on in state `state`, as the kind declares it.
fn awaits<K: KindUnderTest>(state: &str) -> Awaits {
    let parsed: Option<<K::Kind as SagaKind>::State> = state.parse().ok();
    parsed.unwrap_or_else(|| panic!("{} has no state {state}", K::Kind::KIND)).awaits()
}

/// The commands of a run, in order.
fn commands(run: &Run) -> Vec<&str> {
    run.traffic.iter().map(|(command, _)| command.as_str()).collect()
}

/// Every step of kind `K` fails in turn; returns how many runs it took.
async fn every_step_fails_in_turn<K: KindUnderTest>() -> usize {
    let kind = K::Kind::KIND;
    let declared = <<K::Kind as SagaKind>::Command as MessageFamily>::TYPES;
    let happy = one_run::<K>(&Disturbance::default()).await.expect("a run that refuses nothing runs");
    assert_eq!(awaits::<K>(&happy.end), Awaits::Nothing, "{kind} with nothing lost ended {}", happy.end);
    let twice = one_run::<K>(&Disturbance { twice: true, ..Default::default() }).await.unwrap();
    assert_eq!(twice.end, happy.end, "{kind} with every message delivered twice");
    let mut runs = 2;

    let forward: Vec<(&'static str, Option<String>)> = happy
        .traffic
        .iter()
        .map(|(command, answer)| (*declared.iter().find(|d| *d == command).unwrap(), answer.clone()))
        .collect();
    // Where each undo was seen, with its answer: the run that made the saga unwind.
    let mut undos: Vec<(&'static str, Disturbance, String)> = Vec::new();
    for &(command, ref answer) in &forward {
        let mut disturbances = vec![
            Disturbance { refusing: Some(command), ..Default::default() },
            Disturbance { losing: vec![command], ..Default::default() },
        ];
        if let Some(answer) = answer {
            let answer = *<<K::Kind as SagaKind>::Reply as MessageFamily>::TYPES.iter().find(|r| *r == answer).unwrap();
            disturbances.push(Disturbance { losing: vec![answer], ..Default::default() });
        }
        for how in disturbances {
            let Some(run) = one_run::<K>(&how).await else { continue };
            runs += 1;
            if how.refusing.is_some() {
                assert_ne!(run.end, happy.end, "{kind} with {}: a refused step cannot end done", how.describe());
            }
            for (sent, answer) in &run.traffic {
                let undo = !forward.iter().any(|(f, _)| f == sent);
                if undo && !undos.iter().any(|(u, ..)| u == sent) {
                    let undo = *declared.iter().find(|d| *d == sent).unwrap();
                    let answer = answer.clone().unwrap_or_else(|| panic!("{kind}: the undo {undo} was not answered"));
                    undos.push((undo, how.clone(), answer));
                }
            }
        }
    }
    for (undo, how, answer) in &undos {
        // The undo's answer, lost at every send: the saga waits for an operator, the undo done once.
        let answer = *<<K::Kind as SagaKind>::Reply as MessageFamily>::TYPES.iter().find(|r| *r == answer).unwrap();
        let mut lost = how.clone();
        lost.losing.push(answer);
        let run = one_run::<K>(&lost).await.expect("the unwinding run ran before");
        runs += 1;
        assert_eq!(awaits::<K>(&run.end), Awaits::Operator, "{kind} with {}: ended {}", lost.describe(), run.end);
        assert!(commands(&run).contains(undo), "{kind} with {}: {undo} was sent", lost.describe());
    }
    let covered: Vec<&str> = forward.iter().map(|(c, _)| *c).chain(undos.iter().map(|(u, ..)| *u)).collect();
    for command in declared {
        assert!(covered.contains(command), "{kind}: no run sent {command}, so the harness cannot fail it");
    }
    eprintln!(
        "{kind}: {runs} runs over {} forward steps ({:?}) and {} undos ({:?})",
        forward.len(),
        forward.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        undos.len(),
        undos.iter().map(|(u, ..)| *u).collect::<Vec<_>>()
    );
    runs
}
