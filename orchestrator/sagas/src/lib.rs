//! The saga kinds of the network. Each kind is one module that reads top to bottom: its states,
//! its data, its commands and replies, the one transition function, and the rules that start it
//! and follow from it. The engine that drives them all is [`platform::saga`].
//!
//! - [`replenishment`]: refill one product in one store from the central warehouse;
//! - [`fulfilment`]: take the customer's payment and hand the order over, or undo both;
//! - [`purchase_order`]: reorder a product for the central warehouse from its supplier.

pub mod fulfilment;
pub mod purchase_order;
pub mod replenishment;

use platform::{messaging::Participant, saga::registry::Registry};

/// The central warehouse: dispatches and cancels shipments, books suppliers' deliveries in.
pub const WAREHOUSE: Participant = Participant { name: "warehouse", queue: "warehouse.commands" };
/// A store's inventory: takes shipments into stock, hands orders over, releases reservations.
pub const INVENTORY: Participant = Participant { name: "inventory", queue: "inventory.commands" };
/// The payment provider: charges and refunds orders.
pub const PAYMENT: Participant = Participant { name: "payment", queue: "payment.commands" };

/// Fixed ids for the examples of the published contract, so that the generated document is
/// stable and its examples tell one story: a replenishment's commands, replies and events name
/// the same saga (`platform::protocol::example::SAGA`), store, product and shipment.
pub mod example {
    pub use platform::protocol::example::{SAGA, sent_at};
    use uuid::Uuid;

    pub const ORDER: Uuid = Uuid::from_u128(0x0193_1f6e_7c3a_7b2e_8c30_4f5e_6a7b_8c9d);
    pub const STORE: Uuid = Uuid::from_u128(0x0193_1f6d_2a10_7e4f_a1b2_c3d4_e5f6_0718);
    pub const PRODUCT: Uuid = Uuid::from_u128(0x0193_1f6d_2b20_7f50_b2c3_d4e5_f607_1829);
    pub const SHIPMENT: Uuid = Uuid::from_u128(0x0193_1f6e_8d4b_7c3f_ae52_6b7c_8d9e_0f1a);
}

/// Every saga kind this build drives.
pub fn registry() -> Registry {
    Registry::empty()
        .with::<replenishment::Replenishment>()
        .with::<fulfilment::Fulfilment>()
        .with::<purchase_order::PurchaseOrder>()
}
