//! The values of the spec's examples, telling one story: the README's walk. Riverside stocks oat
//! milk (10 on hand, reordered at 5, up to 20); an order of 6 leaves 4 available, and a
//! replenishment brings 16 from the warehouse's 100. The ids are the message contract's own
//! (`sagas::example`), so both documents name the same store, product, order and saga. Swagger
//! UI's "Try it out" starts from these, so a request's example must succeed as it is, on data
//! where what it names exists.

use chrono::{DateTime, Duration, Utc};
pub use sagas::example::{ORDER, PRODUCT, SAGA, SHIPMENT, STORE};
use uuid::Uuid;

pub const STORE_NAME: &str = "Riverside";
pub const SERVICE_AREA: &str = "the river district";
pub const SKU: &str = "OAT-MILK-1L";
pub const PRODUCT_NAME: &str = "Oat milk 1 l";
pub const PRICE_CENTS: i64 = 189;
/// The admin key that made the examples' changes.
pub const KEY: Uuid = Uuid::from_u128(0x0193_1f6c_9a00_7d1e_8f20_3a4b_5c6d_7e8f);
/// A purchase order's saga.
pub const PURCHASE: Uuid = Uuid::from_u128(0x0193_1f6f_1a2b_7c3d_8e4f_5a6b_7c8d_9eaf);
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `minutes` after the walk began.
pub fn at(minutes: i64) -> DateTime<Utc> {
    sagas::example::sent_at() + Duration::minutes(minutes)
}
