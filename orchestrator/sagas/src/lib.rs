//! The saga kinds of the network. Each kind is one module that reads top to bottom: its states,
//! its data, its commands and replies, the one transition function, and the rules that start it
//! and follow from it. The engine that drives them all is [`platform::saga`].
//!
//! - [`replenishment`]: refill one product in one store from the central warehouse.

pub mod replenishment;

use platform::{messaging::Participant, saga::registry::Registry};

/// The central warehouse: dispatches and cancels shipments.
pub const WAREHOUSE: Participant = Participant { name: "warehouse", queue: "warehouse.commands" };
/// A store's inventory: takes shipments into stock.
pub const INVENTORY: Participant = Participant { name: "inventory", queue: "inventory.commands" };

/// Every saga kind this build drives.
pub fn registry() -> Registry {
    Registry::empty().with::<replenishment::Replenishment>()
}
