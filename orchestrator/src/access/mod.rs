//! Who may call the API, how often, and what they did: API keys with roles ([`keys`]), where a
//! request comes from ([`client`]), token buckets per caller ([`limit`]), and the append-only
//! audit trail of every change ([`audit`]). Which role each operation needs is written once, in
//! `http::access`.

pub mod audit;
pub mod client;
pub mod keys;
pub mod limit;

use poem_openapi::Enum;
use uuid::Uuid;

/// What a key may do. Each role may do everything the roles before it may.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Enum,
    strum::EnumString,
    strum::AsRefStr,
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[oai(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// A store front or picker app: orders, and reading stores, products and inventory.
    Client,
    /// Runs the network: stock, sagas, dead letters, participants, metrics.
    Operator,
    /// Manages keys and reads the audit trail.
    Admin,
}

/// The holder of a valid key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub key_id: Uuid,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// How the caller appears in a saga's timeline: `operator:ann`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_ref(), self.name)
    }
}
