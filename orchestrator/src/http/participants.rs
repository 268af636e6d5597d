//! `/participants`: which worker processes are alive, and how their queues are doing.

use chrono::{DateTime, Utc};
use platform::{heartbeat, messaging::Queue, saga::runner};
use poem_openapi::{Object, OpenApi, payload::Json, types::Example};
use uuid::Uuid;

use super::example;
use super::role::{Needs, Operator};
use super::{
    Tag,
    problem::{ApiResult, UNAVAILABLE},
};
use crate::Context;

/// How long the broker may take to report its queues.
const BROKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One process running a role.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Instance {
    pub id: Uuid,
    pub hostname: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Set when the process stopped gracefully.
    #[oai(nullable)]
    pub stopped_at: Option<DateTime<Utc>>,
    /// Reported within the last 15 s and not stopped.
    pub alive: bool,
}

impl Example for Instance {
    fn example() -> Self {
        Self {
            id: example::KEY,
            hostname: "worker-7f9c".into(),
            pid: 4182,
            started_at: example::at(0),
            last_seen_at: example::at(5),
            stopped_at: None,
            alive: true,
        }
    }
}

/// A role (the orchestrator's engine, or a participant of the saga kinds), its queue and its
/// processes.
#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct ParticipantStatus {
    pub role: String,
    /// The queue the role consumes.
    pub queue: String,
    /// Messages waiting in it; absent when the broker could not be asked.
    #[oai(nullable)]
    pub queue_depth: Option<u32>,
    /// Consumers attached to it, as the broker counts them.
    #[oai(nullable)]
    pub consumers: Option<u32>,
    /// At least one of its processes is alive.
    pub alive: bool,
    /// Its processes heard from in the last 24 hours.
    pub instances: Vec<Instance>,
}

impl Example for ParticipantStatus {
    fn example() -> Self {
        Self {
            role: "warehouse".into(),
            queue: "darkstores.warehouse.commands".into(),
            queue_depth: Some(0),
            consumers: Some(1),
            alive: true,
            instances: vec![Instance::example()],
        }
    }
}

#[derive(Clone, Debug, Object)]
#[oai(example)]
pub struct Participants {
    pub participants: Vec<ParticipantStatus>,
    /// Messages waiting in the dead-letter queue (not yet stored).
    #[oai(nullable)]
    pub dead_letter_queue_depth: Option<u32>,
    /// Why queue figures are missing, when they are.
    #[oai(nullable)]
    pub broker_error: Option<String>,
}

impl Example for Participants {
    fn example() -> Self {
        Self { participants: vec![ParticipantStatus::example()], dead_letter_queue_depth: Some(0), broker_error: None }
    }
}

pub struct ParticipantsApi {
    pub ctx: Context,
}

#[OpenApi(tag = "Tag::Participants")]
impl ParticipantsApi {
    /// Worker processes, their liveness and their queues
    #[oai(path = "/participants", method = "get", operation_id = "listParticipants")]
    async fn list(&self, _role: Needs<Operator>) -> ApiResult<Json<Participants>, UNAVAILABLE> {
        let mut conn = self.ctx.pool.acquire().await?;
        let instances = heartbeat::instances(&mut conn).await?;
        drop(conn);
        let stats = tokio::time::timeout(BROKER_TIMEOUT, self.ctx.broker.queue_stats())
            .await
            .map_err(|_| "the broker did not answer in time".to_owned())
            .and_then(|stats| stats.map_err(|error| error.to_string()));
        let of = |queue: Queue| stats.as_ref().ok().and_then(|s| s.iter().find(|q| q.queue == queue));
        // The engine, then every participant the saga kinds declare.
        let workers = self.ctx.topology.participants().iter().map(|p| (p.name, Queue::Commands(*p)));
        let participants = [(runner::ROLE, Queue::Replies)]
            .into_iter()
            .chain(workers)
            .map(|(role, queue)| {
                let instances: Vec<Instance> = instances
                    .iter()
                    .filter(|i| i.role == role)
                    .map(|i| Instance {
                        id: i.id,
                        hostname: i.hostname.clone(),
                        pid: i.pid,
                        started_at: i.started_at,
                        last_seen_at: i.last_seen_at,
                        stopped_at: i.stopped_at,
                        alive: i.alive,
                    })
                    .collect();
                ParticipantStatus {
                    role: role.to_owned(),
                    queue: self.ctx.topology.queue(queue),
                    queue_depth: of(queue).map(|q| q.messages),
                    consumers: of(queue).map(|q| q.consumers),
                    alive: instances.iter().any(|i| i.alive),
                    instances,
                }
            })
            .collect();
        Ok(Json(Participants {
            participants,
            dead_letter_queue_depth: of(Queue::DeadLetters).map(|q| q.messages),
            broker_error: stats.err(),
        }))
    }
}
