//! The messages that cross RabbitMQ: one envelope for all of them, and the traits a saga kind's
//! typed commands, replies and events implement (the kinds declare the messages themselves).
//!
//! On the wire every message is a JSON object
//! `{"version", "message_id", "correlation_id", "sent_at", "type", "payload"}`. The version lets a
//! consumer refuse what it does not understand (such a message goes straight to the dead letters);
//! the message id is what inboxes deduplicate on; the correlation id is the saga id.
//!
//! Every message type derives its JSON Schema and gives an example of itself, from which the
//! published contract is generated (see [`crate::contract`]).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

use crate::messaging::EventExchange;

/// The envelope version this build writes and accepts.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message as it travels, with its body left as JSON so that any consumer can open the envelope
/// before knowing the body's type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// The envelope version. A consumer refuses a version it does not know: ours dead-letter it.
    pub version: u32,
    /// Unique per message sent; a copy delivered again has the same id, so consumers deduplicate
    /// on it.
    pub message_id: Uuid,
    /// The saga the message belongs to (for an order's saga, the order id); also the AMQP
    /// `correlation-id` property.
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
    /// When the message was written, in the transaction that caused it.
    pub sent_at: DateTime<Utc>,
    /// The message type: a command or reply name, or a domain event's name.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The body, whose schema depends on `type`.
    pub payload: Value,
    /// The `traceparent` it travelled with (an AMQP header, not part of the body).
    #[serde(skip)]
    pub trace: Option<crate::trace::TraceContext>,
}

/// Why an envelope or its body could not be read. Such a message will never be readable, so it
/// is dead-lettered at once rather than retried.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported message version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnknownVersion(u32),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
}

impl Envelope {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        // Peek at the version first so a future version with another shape is reported as such.
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        match raw.get("version").and_then(Value::as_u64) {
            Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
            Some(v) => return Err(DecodeError::UnknownVersion(u32::try_from(v).unwrap_or(u32::MAX))),
            None => return Err(DecodeError::Malformed("no numeric \"version\" field".into())),
        }
        serde_json::from_value(raw).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// Reads the body as one of a family of typed messages (adjacently tagged by `type`).
    pub fn body<T: MessageFamily>(&self) -> Result<T, DecodeError> {
        if !T::TYPES.contains(&self.message_type.as_str()) {
            return Err(DecodeError::UnknownType(self.message_type.clone()));
        }
        let tagged = serde_json::json!({ "type": self.message_type, "payload": self.payload });
        serde_json::from_value(tagged).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// A closed set of message types carried as `{"type", "payload"}`: an adjacently tagged enum
/// whose variant names are the types (strum's `VariantNames` lists them).
///
/// Its JSON Schema and [`examples`](Self::examples) make its part of the published contract;
/// each variant's doc comment is that message's description.
pub trait MessageFamily: Serialize + DeserializeOwned + JsonSchema + strum::VariantNames {
    /// Every `type` the family knows; anything else is an unknown type.
    const TYPES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    /// One message of each type, for the contract's examples (ids from [`example`]).
    fn examples() -> Vec<Self>;

    /// Splits a message into its type name and payload for the outbox.
    fn to_parts(&self) -> (&'static str, Value) {
        let Value::Object(mut tagged) = serde_json::to_value(self).expect("protocol messages always serialize") else {
            unreachable!("adjacently tagged enums serialize to objects")
        };
        let name = tagged.remove("type").and_then(|t| t.as_str().map(str::to_owned));
        let name = Self::TYPES.iter().find(|t| Some(**t) == name.as_deref()).expect("TYPES lists every variant");
        (name, tagged.remove("payload").unwrap_or(Value::Null))
    }
}

/// What a consumer reads a message as, from its envelope. A message it cannot read so will never
/// be readable, and goes to the dead letters at once.
pub trait Decode: Sized + Send + Sync + 'static {
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError>;
}

impl<F: MessageFamily + Send + Sync + 'static> Decode for F {
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        envelope.body()
    }
}

/// A message as a consumer received it: its envelope, and its body read as the consumer reads it.
#[derive(Clone, Debug)]
pub struct Received<M> {
    pub envelope: Envelope,
    pub message: M,
}

/// A family of saga commands: each is carried out by one participant and belongs to one saga.
pub trait CommandFamily: MessageFamily {
    /// Who carries the command out; its queue is where it is routed.
    fn participant(&self) -> crate::messaging::Participant;
    fn saga_id(&self) -> Uuid;
}

/// A family of participants' answers, each to one saga.
pub trait ReplyFamily: MessageFamily {
    fn saga_id(&self) -> Uuid;
}

/// A domain event for downstream teams: a typed body, published to [`EXCHANGE`](Self::EXCHANGE)
/// with its [`NAME`](Self::NAME) as both its type and its routing key.
///
/// The type's doc comment becomes the event's description in the published contract: it says
/// when the event is emitted. The saga kind whose flow emits it lists it in `SagaKind::EVENTS`.
pub trait DomainEvent: Serialize + JsonSchema {
    /// `order.created`, `stock.low`, …
    const NAME: &'static str;
    const EXCHANGE: EventExchange;

    /// The saga (or order) the event belongs to: the envelope's correlation id.
    fn correlation_id(&self) -> Option<Uuid>;

    /// An event for the contract's example (ids from [`example`]).
    fn example() -> Self;
}

/// Implements [`DomainEvent`]: the event's name (its type and routing key), its exchange, the
/// field that is its correlation id, and the value the contract shows as its example.
///
/// ```ignore
/// domain_event!(StockLow, "stock.low" on INVENTORY_EVENTS, correlated by saga_id, example {
///     StockLow { saga_id: example::SAGA, .. }
/// });
/// ```
#[macro_export]
macro_rules! domain_event {
    ($event:ty, $name:literal on $exchange:path, correlated by $field:ident, example $example:expr) => {
        impl $crate::protocol::DomainEvent for $event {
            const NAME: &'static str = $name;
            const EXCHANGE: $crate::messaging::EventExchange = $exchange;

            fn correlation_id(&self) -> ::core::option::Option<::uuid::Uuid> {
                ::core::option::Option::Some(self.$field)
            }

            fn example() -> Self {
                $example
            }
        }
    };
}

/// A fixed saga id and a fixed time for the examples of the published contract, so that the
/// generated document is stable. The domain's example ids (stores, products…) are the kinds'.
pub mod example {
    use chrono::{DateTime, TimeZone, Utc};
    use uuid::Uuid;

    pub const SAGA: Uuid = Uuid::from_u128(0x0193_1f6e_7c3a_7b2e_9d41_5a6b_7c8d_9e0f);

    /// When the examples were "sent".
    pub fn sent_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 9, 30, 0).single().expect("a valid time")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A family of two messages, as a saga kind declares its own.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
    #[serde(tag = "type", content = "payload")]
    enum Answer {
        Done { saga_id: Uuid, quantity: i64 },
        Refused { saga_id: Uuid, reason: String },
    }

    impl MessageFamily for Answer {
        fn examples() -> Vec<Self> {
            vec![
                Self::Done { saga_id: example::SAGA, quantity: 7 },
                Self::Refused { saga_id: example::SAGA, reason: "none left".into() },
            ]
        }
    }

    fn envelope(message_type: &str, payload: Value) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            message_id: Uuid::new_v4(),
            correlation_id: None,
            sent_at: Utc::now(),
            message_type: message_type.into(),
            payload,
            trace: None,
        }
    }

    #[test]
    fn messages_round_trip_through_the_envelope() {
        let answer = Answer::Done { saga_id: Uuid::new_v4(), quantity: 7 };
        let (name, payload) = answer.to_parts();
        assert_eq!(name, "Done");
        let decoded = Envelope::decode(&envelope(name, payload).encode()).unwrap();
        assert_eq!(decoded.body::<Answer>().unwrap(), answer);
    }

    #[test]
    fn every_listed_type_is_a_variant() {
        let answer = Answer::Refused { saga_id: Uuid::nil(), reason: "x".into() };
        assert_eq!(answer.to_parts().0, "Refused");
    }

    #[test]
    fn unreadable_messages_say_why() {
        assert!(matches!(Envelope::decode(b"{not json"), Err(DecodeError::Malformed(_))));
        let mut future = serde_json::to_value(envelope("Done", Value::Null)).unwrap();
        future["version"] = 2.into();
        let bytes = serde_json::to_vec(&future).unwrap();
        assert!(matches!(Envelope::decode(&bytes), Err(DecodeError::UnknownVersion(2))));
        let odd = envelope("LaunchRocket", serde_json::json!({}));
        assert!(matches!(odd.body::<Answer>(), Err(DecodeError::UnknownType(_))));
        let wrong = envelope("Done", serde_json::json!({"saga_id": "nope"}));
        assert!(matches!(wrong.body::<Answer>(), Err(DecodeError::Malformed(_))));
    }
}
