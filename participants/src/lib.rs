//! The saga participants — the warehouse and the store inventory — and the infrastructure they
//! share with the orchestrator: configuration, the database pool, the message protocol, RabbitMQ
//! plumbing (outbox, relay, inbox, consumers) and the Redis inventory cache.
//!
//! ```text
//! orchestrator ──commands──▶ saga.commands ──▶ warehouse.commands ──▶ WarehouseWorker
//!      ▲                                  └──▶ inventory.commands ──▶ InventoryWorker
//!      └──────── orchestrator.replies ◀── saga.replies ◀──── replies (via each outbox)
//! ```
//!
//! Each worker handles a command in one local transaction that also writes its inbox row and its
//! reply (to the outbox); the delivery is acknowledged only after that commits.

pub mod cache;
pub mod config;
pub mod db;
pub mod heartbeat;
pub mod inventory;
pub mod messaging;
pub mod process;
pub mod protocol;
pub mod redis;
pub mod shutdown;
pub mod trace;
pub mod warehouse;
