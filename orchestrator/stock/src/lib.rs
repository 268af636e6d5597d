//! What the stores and the central warehouse hold, and how it moved: the one home of the
//! `inventory`, `warehouse_stock`, `shipment` and `stock_movement` tables, used by orders, the API,
//! the saga kinds and the workers alike.
//!
//! - [`level`]: a store's stock of a product ([`StockLevel`]), and every change to it;
//! - [`warehouse`]: the central warehouse's stock;
//! - [`shipment`]: goods on their way from the warehouse to a store;
//! - [`ledger`]: the append-only record of every movement, with its cause;
//! - [`cache`]: store levels in Redis, for reads.
//!
//! Functions take the caller's transaction: what else happens in it (an order, a saga step) is
//! the caller's business.

pub mod cache;
pub mod ledger;
pub mod level;
pub mod shipment;
pub mod warehouse;

pub use cache::Cache;
pub use ledger::{Movement, MovementReason};
pub use level::StockLevel;

/// Upper bound on any quantity: larger numbers are typing mistakes, not stock.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
