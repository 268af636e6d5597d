//! What every process of the network stands on, whatever saga kinds and participants it runs.
//!
//! - [`config`]: the deployment, read once from the environment;
//! - [`db`], [`redis`]: connections to Postgres (migrated at start-up) and Redis;
//! - [`replica`]: reads that may lag, taken off the primary by a streaming replica;
//! - [`protocol`]: the envelope every message travels in, and the typed message families;
//! - [`contract`]: what the published message contract says of each message type, from its type;
//! - [`messaging`]: RabbitMQ — topology, transactional outbox and its relay, the consumer loop with
//!   its inbox, dead letters;
//! - [`saga`]: the saga engine, generic over kinds;
//! - [`retention`]: the janitor that removes history past its retention, so tables stay bounded;
//! - [`process`], [`heartbeat`], [`shutdown`], [`trace`]: a process's life, liveness and traces.
//!
//! ```text
//! engine ──commands──▶ saga.commands ──▶ <participant>.commands ──▶ participant's handler
//!    ▲                                                                   │
//!    └──── orchestrator.replies ◀── saga.replies ◀── replies (each via its writer's outbox)
//! ```

pub mod config;
pub mod contract;
pub mod db;
pub mod heartbeat;
pub mod messaging;
pub mod process;
pub mod protocol;
pub mod redis;
pub mod replica;
pub mod retention;
pub mod saga;
pub mod shutdown;
pub mod trace;
