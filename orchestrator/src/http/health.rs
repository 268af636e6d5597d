//! `/health`: liveness (the process answers) and readiness (its dependencies answer).
//!
//! Readiness is public, so it says only up or down for each dependency, with a generic reason;
//! the details go to the log. Its answer is kept for a second and shared by the probes that
//! arrive meanwhile, so probes cannot be turned into a flood on the dependencies.

use std::{sync::Arc, time::Duration};

use poem_openapi::{ApiResponse, Enum, Object, OpenApi, payload::Json, types::Example};
use tokio::{sync::Mutex, time::Instant};

use super::Tag;
use super::role::{Anyone, Needs};
use crate::Context;

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer is reused.
const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Up {
    Up,
    Down,
}

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Health {
    /// `unavailable` when a dependency the service needs does not answer.
    pub status: Status,
    #[oai(skip_serializing_if_is_none)]
    pub checks: Option<Checks>,
}

impl Example for Health {
    fn example() -> Self {
        Self { status: Status::Ok, checks: Some(Checks::example()) }
    }
}

/// One dependency.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Check {
    pub status: Up,
    /// Why it is down: `timed out` or `failed` (the log has the details).
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
}

impl Example for Check {
    fn example() -> Self {
        Self { status: Up::Up, reason: None }
    }
}

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Checks {
    pub postgres: Check,
    pub rabbitmq: Check,
    /// Redis is a cache: without it the service is slower, not wrong, so it does not make the
    /// service unready.
    pub redis: Check,
    /// The read replica, when one is configured: reads that may lag go to it while it is up,
    /// replaying and close enough, and to the primary otherwise, so it never makes the service
    /// unready. Down with a reason (`down`, `paused`, `lagging`) when reads avoid it.
    #[oai(skip_serializing_if_is_none)]
    pub replica: Option<Check>,
}

impl Example for Checks {
    fn example() -> Self {
        Self { postgres: Check::example(), rabbitmq: Check::example(), redis: Check::example(), replica: None }
    }
}

#[derive(ApiResponse)]
pub enum Readiness {
    /// Every required dependency answers.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// A required dependency does not answer.
    #[oai(status = 503)]
    Unavailable(Json<Health>),
}

pub struct HealthApi {
    ctx: Context,
    last: Arc<Mutex<Option<(Instant, Health)>>>,
}

impl HealthApi {
    pub fn new(ctx: &Context) -> Self {
        Self { ctx: ctx.clone(), last: Arc::default() }
    }

    async fn check(&self) -> Health {
        let checked =
            |name: &'static str, outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| match outcome {
                Ok(Ok(())) => Check { status: Up::Up, reason: None },
                Ok(Err(error)) => {
                    tracing::warn!(dependency = name, %error, "readiness: down");
                    Check { status: Up::Down, reason: Some("failed".into()) }
                }
                Err(_) => {
                    tracing::warn!(dependency = name, "readiness: no answer in time");
                    Check { status: Up::Down, reason: Some("timed out".into()) }
                }
            };
        let postgres = tokio::time::timeout(CHECK_TIMEOUT, async {
            sqlx::query("SELECT 1").execute(&self.ctx.pool).await.map(drop).map_err(|e| e.to_string())
        });
        let rabbitmq = tokio::time::timeout(CHECK_TIMEOUT, async {
            self.ctx.broker.queue_stats().await.map(drop).map_err(|e| e.to_string())
        });
        let redis = tokio::time::timeout(CHECK_TIMEOUT, async {
            if self.ctx.cache.ping().await { Ok(()) } else { Err("no answer to PING".to_owned()) }
        });
        let (postgres, rabbitmq, redis) = tokio::join!(postgres, rabbitmq, redis);
        let checks = Checks {
            postgres: checked("postgres", postgres),
            rabbitmq: checked("rabbitmq", rabbitmq),
            redis: checked("redis", redis),
            replica: self.ctx.reads.replica_state().map(|state| match state.avoided {
                None => Check { status: Up::Up, reason: None },
                Some(why) => Check { status: Up::Down, reason: Some(<&str>::from(why).to_owned()) },
            }),
        };
        let ready = checks.postgres.status == Up::Up && checks.rabbitmq.status == Up::Up;
        Health { status: if ready { Status::Ok } else { Status::Unavailable }, checks: Some(checks) }
    }
}

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// Liveness
    #[oai(path = "/health/live", method = "get", operation_id = "live")]
    async fn live(&self, _role: Needs<Anyone>) -> Json<Health> {
        Json(Health { status: Status::Ok, checks: None })
    }

    /// Readiness: Postgres, RabbitMQ and Redis
    ///
    /// Postgres and RabbitMQ must answer; Redis, and the read replica when there is one, are
    /// reported but not required. The answer is reused for a second.
    #[oai(path = "/health/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, _role: Needs<Anyone>) -> Readiness {
        let mut last = self.last.lock().await;
        let health = match last.as_ref() {
            Some((at, health)) if at.elapsed() < FRESH_FOR => health.clone(),
            _ => {
                let health = self.check().await;
                *last = Some((Instant::now(), health.clone()));
                health
            }
        };
        if health.status == Status::Ok { Readiness::Ready(Json(health)) } else { Readiness::Unavailable(Json(health)) }
    }
}
