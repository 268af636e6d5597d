//! `/health`: liveness (the process answers) and readiness (its dependencies answer).

use std::time::Duration;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::Tag;
use crate::Context;

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Object)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency the service needs does not answer.
    pub status: String,
    #[oai(skip_serializing_if_is_none)]
    pub checks: Option<Checks>,
}

/// Each dependency: `ok` or what went wrong.
#[derive(Clone, Debug, Object)]
pub struct Checks {
    pub postgres: String,
    pub rabbitmq: String,
    /// Redis is a cache: without it the service is slower, not wrong, so it does not make the
    /// service unready.
    pub redis: String,
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
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// Liveness
    #[oai(path = "/health/live", method = "get")]
    async fn live(&self) -> Json<Health> {
        Json(Health { status: "ok".into(), checks: None })
    }

    /// Readiness: Postgres, RabbitMQ and Redis
    #[oai(path = "/health/ready", method = "get")]
    async fn ready(&self) -> Readiness {
        let postgres = async {
            match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&self.ctx.pool)).await {
                Ok(Ok(_)) => "ok".to_owned(),
                Ok(Err(error)) => format!("error: {error}"),
                Err(_) => "error: timed out".to_owned(),
            }
        };
        let rabbitmq = async {
            let probe = participants::messaging::connect(&self.ctx.amqp_url, "readiness");
            match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
                Ok(Ok(connection)) => {
                    participants::messaging::close(&connection, "probe").await;
                    "ok".to_owned()
                }
                Ok(Err(error)) => format!("error: {error}"),
                Err(_) => "error: timed out".to_owned(),
            }
        };
        let redis = async { if self.ctx.cache.ping().await { "ok".to_owned() } else { "error: no answer".to_owned() } };
        let (postgres, rabbitmq, redis) = tokio::join!(postgres, rabbitmq, redis);
        let ready = postgres == "ok" && rabbitmq == "ok";
        let health = Health {
            status: if ready { "ok" } else { "unavailable" }.into(),
            checks: Some(Checks { postgres, rabbitmq, redis }),
        };
        if ready { Readiness::Ready(Json(health)) } else { Readiness::Unavailable(Json(health)) }
    }
}
