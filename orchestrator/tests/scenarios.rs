//! The behaviour of the product in the words of a store manager: the Gherkin in `features/`,
//! run against the real application (Postgres, RabbitMQ, Redis) with cucumber.
//!
//! Every scenario gets its own [`World`]: its own database and broker namespace ([`TestEnv`]),
//! its own running [`Application`], started by the first step that needs it, so that the steps
//! that decide how it runs (stopped workers, injected faults) can come first. The API is called
//! in process through the real routes. After each scenario the application is stopped, the
//! invariants of docs/design.md §8 are checked at rest, and the database and broker names are dropped
//! (a failed scenario keeps its database for inspection, and says which it is).
//!
//! Run with `cargo test -p orchestrator --test scenarios` (`DATABASE_URL` names the admin
//! database, as for every test). Cucumber's own options follow `--`, e.g. `-- --name 'lost reply'`
//! to run matching scenarios; `SCENARIO_TIMINGS=1` prints how long each scenario took.

mod steps;
mod support;

use std::{
    collections::HashMap,
    fmt,
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use cucumber::{World as _, event::ScenarioFinished};
use futures_util::FutureExt as _;
use orchestrator::app::{Application, Roles};
use platform::messaging::relay::RelayFaults;
use sqlx::PgPool;
use uuid::Uuid;

use steps::{Answer, Api, OrderRequest};
use support::{TestEnv, delete_broker_names};

/// Scenarios running at once: each runs a whole deployment, on a 2-core machine.
const CONCURRENT_SCENARIOS: usize = 4;
/// A graceful stop that takes longer than this is cut short (the tasks are aborted).
const STOP_WITHIN: Duration = Duration::from_secs(15);

/// One scenario's state.
#[derive(cucumber::World)]
#[world(init = Self::new)]
pub struct World {
    /// `None` only once the scenario is over.
    env: Option<TestEnv>,
    roles: Roles,
    faults: RelayFaults,
    app: Option<Application>,
    api: Option<Api>,
    pool: Option<PgPool>,
    /// Whether an application ever ran (and so migrated the database).
    started: bool,
    pub stores: HashMap<String, Uuid>,
    pub products: HashMap<String, Uuid>,
    /// The last order sent, to send it again.
    pub last_request: Option<OrderRequest>,
    /// Answers to orders, oldest first.
    pub answers: Vec<Answer>,
    /// The replenishment saga the scenario follows.
    pub saga: Option<Uuid>,
    /// The dead letter the scenario follows.
    pub dead_letter: Option<i64>,
    /// API keys made in the scenario: holder's name → (id, secret).
    pub keys: HashMap<String, (Uuid, String)>,
    /// What each holder was answered, by status, in the last burst of requests.
    pub tallies: HashMap<String, steps::access::Tally>,
    /// The last answer to a request a step sent outside of orders.
    pub last_answer: Option<Answer>,
    /// The order the scenario follows.
    pub order: Option<Uuid>,
    began: Instant,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("World");
        if let Some(env) = &self.env {
            s.field("database", &env.database).field("namespace", &env.config.namespace);
        }
        s.field("roles", &self.roles)
            .field("faults", &self.faults)
            .field("running", &self.app.is_some())
            .field("stores", &self.stores)
            .field("products", &self.products)
            .field("answers", &self.answers.len())
            .field("saga", &self.saga)
            .finish_non_exhaustive()
    }
}

impl World {
    async fn new() -> Self {
        Self {
            env: Some(TestEnv::new().await),
            roles: support::everything(),
            faults: RelayFaults::default(),
            app: None,
            api: None,
            pool: None,
            started: false,
            stores: HashMap::new(),
            products: HashMap::new(),
            last_request: None,
            answers: Vec::new(),
            saga: None,
            dead_letter: None,
            keys: HashMap::new(),
            tallies: HashMap::new(),
            last_answer: None,
            order: None,
            began: Instant::now(),
        }
    }

    pub fn env(&self) -> &TestEnv {
        self.env.as_ref().expect("the scenario is still running")
    }

    /// The deployment's configuration, for steps that change how the application starts.
    /// Panics once it has started: such a step must come before any step that uses it.
    pub fn configure(&mut self, what: &str) -> &mut TestEnv {
        self.assert_not_started(what);
        self.env.as_mut().expect("the scenario is still running")
    }

    pub fn set_roles(&mut self, what: &str, roles: Roles) {
        self.assert_not_started(what);
        self.roles = roles.clone();
    }

    pub fn faults(&mut self, what: &str) -> &mut RelayFaults {
        self.assert_not_started(what);
        &mut self.faults
    }

    fn assert_not_started(&self, what: &str) {
        assert!(
            !self.started,
            "\"{what}\" changes how the application starts, but it is already running: \
             put this step before the first step that uses the application"
        );
    }

    /// Starts the application with the configured roles and faults, unless it runs already.
    pub async fn ensure_started(&mut self) {
        if self.app.is_some() {
            return;
        }
        assert!(!self.started, "the application was stopped during the scenario and not started again");
        let app = self.env().start(self.roles.clone(), self.faults.clone()).await;
        self.api = Some(Api::new(&app));
        self.pool = Some(self.env().pool().await);
        self.app = Some(app);
        self.started = true;
    }

    /// The API of the running application, starting it first if needed.
    pub async fn api(&mut self) -> Api {
        self.ensure_started().await;
        self.api.clone().expect("the application is running")
    }

    /// A pool on the scenario's database, for the invariants.
    pub async fn pool(&mut self) -> PgPool {
        self.ensure_started().await;
        self.pool.clone().expect("the application is running")
    }

    /// Kills the application as `kill -9` would, then starts a new one with `roles` on the same
    /// database and broker namespace, without faults.
    pub async fn crash_and_restart(&mut self, roles: Roles) {
        let app = self.app.take().expect("the application is running");
        self.api = None;
        app.crash();
        self.roles = roles.clone();
        self.faults = RelayFaults::default();
        let app = self.env().start(roles, self.faults.clone()).await;
        self.api = Some(Api::new(&app));
        self.app = Some(app);
    }

    /// Stops the application gracefully, then starts it again with `roles` on the same database
    /// and broker namespace, keeping its faults.
    pub async fn restart(&mut self, roles: Roles) {
        let app = self.app.take().expect("the application is running");
        self.api = None;
        if tokio::time::timeout(STOP_WITHIN, app.stop()).await.is_err() {
            eprintln!("the application did not stop within {STOP_WITHIN:?}; its tasks were aborted");
        }
        self.roles = roles.clone();
        let app = self.env().start(roles, self.faults.clone()).await;
        self.api = Some(Api::new(&app));
        self.app = Some(app);
    }

    pub fn store(&self, name: &str) -> Uuid {
        *self.stores.get(name).unwrap_or_else(|| panic!("no dark store {name:?} was set up in this scenario"))
    }

    pub fn product(&self, name: &str) -> Uuid {
        *self.products.get(name).unwrap_or_else(|| panic!("no product {name:?} was set up in this scenario"))
    }

    /// The name of a product, for messages.
    pub fn product_name(&self, id: Uuid) -> String {
        self.products.iter().find(|(_, p)| **p == id).map_or_else(|| id.to_string(), |(name, _)| name.clone())
    }

    /// The API as the holder of the key named `name`, made earlier in the scenario.
    pub async fn api_as(&mut self, name: &str) -> Api {
        let (_, secret) =
            self.keys.get(name).unwrap_or_else(|| panic!("no key for {name:?} was made in this scenario")).clone();
        self.api().await.with_key(&secret)
    }

    pub fn saga(&self) -> Uuid {
        self.saga.expect("an earlier step names the replenishment this scenario follows")
    }

    /// The end of a scenario: stop the application gracefully, then, if the scenario passed,
    /// check the invariants at rest and drop its database and broker names.
    async fn finish(&mut self, passed: bool) {
        self.api = None;
        if let Some(app) = self.app.take()
            && tokio::time::timeout(STOP_WITHIN, app.stop()).await.is_err()
        {
            eprintln!("the application did not stop within {STOP_WITHIN:?}; its tasks were aborted");
        }
        let pool = self.pool.take();
        let Some(env) = self.env.take() else { return };
        if !passed {
            // The database tells what happened (sagas, timelines, outbox, dead letters) and
            // `scripts/test` sweeps leftover test databases; nothing sweeps the broker.
            delete_broker_names(&env.config.amqp_url, &env.config.namespace).await;
            eprintln!("scenario failed: its database {} is kept for inspection", env.database);
            return;
        }
        if let Some(pool) = pool {
            let checked = AssertUnwindSafe(support::assert_invariants(&pool)).catch_unwind().await;
            pool.close().await;
            if let Err(failure) = checked {
                delete_broker_names(&env.config.amqp_url, &env.config.namespace).await;
                eprintln!("the invariants do not hold at rest: database {} is kept for inspection", env.database);
                std::panic::resume_unwind(failure);
            }
        }
        env.teardown().await;
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        platform::process::init_logging(false);
    }
    World::cucumber()
        .max_concurrent_scenarios(CONCURRENT_SCENARIOS)
        .fail_on_skipped()
        .after(|_feature, _rule, scenario, finished, world| {
            let passed = matches!(finished, ScenarioFinished::StepPassed);
            async move {
                if let Some(world) = world {
                    world.finish(passed).await;
                    if std::env::var_os("SCENARIO_TIMINGS").is_some() {
                        eprintln!("{:>6.2} s  {}", world.began.elapsed().as_secs_f64(), scenario.name);
                    }
                }
            }
            .boxed_local()
        })
        .run_and_exit(concat!(env!("CARGO_MANIFEST_DIR"), "/../features"))
        .await;
}
