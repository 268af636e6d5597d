//! The saga kinds of the network. Each kind is one module that reads top to bottom: its states,
//! its data, its commands and replies, the one transition function, and the rules that start it
//! and follow from it. The engine that drives them all is [`platform::saga`].
//!
//! - [`replenishment`]: refill one product in one store from the central warehouse;
//! - [`fulfilment`]: take the customer's payment and hand the order over, or undo both.

pub mod fulfilment;
pub mod replenishment;

use platform::{messaging::Participant, saga::registry::Registry};

/// The central warehouse: dispatches and cancels shipments.
pub const WAREHOUSE: Participant = Participant { name: "warehouse", queue: "warehouse.commands" };
/// A store's inventory: takes shipments into stock, hands orders over, releases reservations.
pub const INVENTORY: Participant = Participant { name: "inventory", queue: "inventory.commands" };
/// The payment provider: charges and refunds orders.
pub const PAYMENT: Participant = Participant { name: "payment", queue: "payment.commands" };

/// Every saga kind this build drives.
pub fn registry() -> Registry {
    Registry::empty().with::<replenishment::Replenishment>().with::<fulfilment::Fulfilment>()
}
