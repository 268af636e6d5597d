//! The message contract as the Rust types state it: for each command, reply and domain event,
//! the JSON Schema of its body, its doc comment, and an example built from a real value and
//! routed by the same code that publishes it ([`Outgoing`]). The orchestrator assembles these,
//! with the topology, into the published AsyncAPI document.

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::Value;

use crate::{
    messaging::{EventExchange, outbox::Outgoing},
    protocol::{DomainEvent, MessageFamily, example},
};

/// What a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::AsRefStr)]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Sent by the saga engine to a participant.
    Command,
    /// A participant's answer to the saga engine.
    Reply,
    /// News for downstream teams.
    Event,
}

/// One message type as the contract documents it.
#[derive(Clone, Debug)]
pub struct MessageContract {
    /// The saga kind the command or reply belongs to; `None` for a domain event.
    pub kind: Option<&'static str>,
    pub role: Role,
    /// The type's doc comment: what the message asks or says, and when it is sent.
    pub description: String,
    /// JSON Schema of the body (the envelope's `payload`); shared parts are references into the
    /// generator's definitions.
    pub schema: Value,
    /// An example, as it is written to the outbox: its exchange, routing key, type, correlation
    /// id and body. Its message id is the outbox's own (fresh each time): not for publishing in a
    /// document.
    pub example: Outgoing,
}

impl MessageContract {
    /// The message type (`DispatchShipment`, `order.created`).
    pub fn name(&self) -> &str {
        &self.example.message_type
    }
}

/// The generator of every schema of the contract: JSON Schema draft 7 (AsyncAPI 3.0's default
/// schema format), describing what is serialized, so fields that are always sent are required
/// and `None` is a `null`. Shared definitions go under `#/components/schemas/`.
pub fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .for_serialize()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator()
}

/// The commands or replies of a family (a saga kind's), one per type, in the order of
/// [`MessageFamily::TYPES`], each routed by `route` (the way the engine or a participant writes
/// it to the outbox).
///
/// # Panics
/// When a type has no example, or no variant in the family's schema: the contract would be
/// incomplete.
pub fn family<F: MessageFamily>(
    generator: &mut SchemaGenerator,
    kind: &'static str,
    role: Role,
    route: impl Fn(&F) -> Outgoing,
) -> Vec<MessageContract> {
    let schema = inline_schema::<F>(generator);
    let variants = schema.get("oneOf").and_then(Value::as_array).cloned().unwrap_or_default();
    let examples = F::examples();
    F::TYPES
        .iter()
        .map(|name| {
            let variant = variants
                .iter()
                .find(|variant| tag(variant) == Some(name))
                .unwrap_or_else(|| panic!("{kind}: no variant {name} in the schema of its family"));
            let example = examples
                .iter()
                .find(|example| example.to_parts().0 == *name)
                .unwrap_or_else(|| panic!("{kind}: {name} has no example"));
            MessageContract {
                kind: Some(kind),
                role,
                description: description(variant),
                schema: variant.pointer("/properties/payload").cloned().unwrap_or(Value::Bool(true)),
                example: route(example),
            }
        })
        .collect()
}

/// A domain event a saga kind's flow emits (its rules', or its participants'): its exchange, which
/// the deployment declares, and its contract, which the published document lists.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub name: &'static str,
    pub exchange: EventExchange,
    pub contract: fn(&mut SchemaGenerator) -> MessageContract,
}

impl Event {
    pub const fn of<E: DomainEvent>() -> Self {
        Self { name: E::NAME, exchange: E::EXCHANGE, contract: event::<E> }
    }
}

/// A domain event: its body's schema is a reference to the event type's definition.
pub fn event<E: DomainEvent>(generator: &mut SchemaGenerator) -> MessageContract {
    let inline = inline_schema::<E>(generator);
    MessageContract {
        kind: None,
        role: Role::Event,
        description: description(&inline),
        schema: generator.subschema_for::<E>().to_value(),
        example: Outgoing::event(&E::example()),
    }
}

/// The example's envelope, as it travels: the fixed example time, and a message id of its own
/// (the `n`th example's) so that the document stays the same from one generation to the next.
pub fn example_envelope(message: &Outgoing, n: u128) -> crate::protocol::Envelope {
    crate::protocol::Envelope {
        version: crate::protocol::PROTOCOL_VERSION,
        message_id: uuid::Uuid::from_u128(0x0193_1f6e_7c3b_7000_8000_0000_0000_0000 | n),
        correlation_id: message.correlation_id,
        sent_at: example::sent_at(),
        message_type: message.message_type.clone(),
        payload: message.payload.clone(),
        trace: None,
    }
}

/// `T`'s own schema, not a reference to it (what it refers to goes to the generator's
/// definitions), kept within draft 7 by the generator's transforms.
pub fn inline_schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    let mut schema = T::json_schema(generator);
    for transform in generator.transforms_mut() {
        transform.transform(&mut schema);
    }
    schema.to_value()
}

/// The `type` an adjacently tagged variant's schema stands for.
fn tag(variant: &Value) -> Option<&str> {
    let tag = variant.pointer("/properties/type")?;
    tag.get("const").or_else(|| tag.pointer("/enum/0"))?.as_str()
}

/// A schema's doc comment (schemars splits a first paragraph off as its title), each paragraph
/// on one line: the source's line breaks are not the text's.
fn description(schema: &Value) -> String {
    let text = |key: &str| schema.get(key).and_then(Value::as_str).unwrap_or_default();
    let text = match (text("title"), text("description")) {
        ("", description) => description.to_owned(),
        (title, "") => title.to_owned(),
        (title, description) => format!("{title}\n\n{description}"),
    };
    text.split("\n\n").map(|paragraph| paragraph.replace('\n', " ")).collect::<Vec<_>>().join("\n\n")
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    use super::*;
    use crate::messaging::{Exchange, outbox::Outgoing, topology::REPLY_ROUTE};

    /// Answers of a kind, one documented.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, strum::VariantNames)]
    #[serde(tag = "type", content = "payload")]
    enum Answer {
        /// The work is done.
        ///
        /// `quantity` says how much.
        Done {
            saga_id: Uuid,
            quantity: i64,
            note: Option<String>,
        },
        Refused {
            saga_id: Uuid,
        },
    }

    impl MessageFamily for Answer {
        fn examples() -> Vec<Self> {
            vec![
                Self::Refused { saga_id: example::SAGA },
                Self::Done { saga_id: example::SAGA, quantity: 3, note: None },
            ]
        }
    }

    impl crate::protocol::ReplyFamily for Answer {
        fn saga_id(&self) -> Uuid {
            match self {
                Self::Done { saga_id, .. } | Self::Refused { saga_id } => *saga_id,
            }
        }
    }

    const THINGS: EventExchange = EventExchange("thing.events");

    /// Something happened.
    #[derive(Serialize, JsonSchema)]
    struct Happened {
        saga_id: Uuid,
    }

    impl DomainEvent for Happened {
        const NAME: &'static str = "thing.happened";
        const EXCHANGE: EventExchange = THINGS;

        fn correlation_id(&self) -> Option<Uuid> {
            Some(self.saga_id)
        }

        fn example() -> Self {
            Self { saga_id: example::SAGA }
        }
    }

    #[test]
    fn a_family_gives_each_type_its_payload_schema_doc_and_routed_example() {
        let mut generator = generator();
        let answers = family::<Answer>(&mut generator, "kind", Role::Reply, Outgoing::reply);
        let names: Vec<&str> = answers.iter().map(MessageContract::name).collect();
        assert_eq!(names, ["Done", "Refused"], "in the order of TYPES, whatever the examples' order");
        let done = &answers[0];
        assert_eq!(done.description, "The work is done.\n\n`quantity` says how much.");
        assert_eq!(done.schema["properties"]["quantity"]["type"], "integer", "{}", done.schema);
        assert_eq!(done.schema["properties"]["note"]["type"], serde_json::json!(["string", "null"]));
        let required = done.schema["required"].as_array().unwrap();
        assert!(required.contains(&"note".into()), "a None is sent as null: {}", done.schema);
        assert_eq!(done.example.exchange, Exchange::Replies);
        assert_eq!(done.example.routing_key, REPLY_ROUTE);
        assert_eq!(done.example.correlation_id, Some(example::SAGA));
        assert_eq!(done.example.payload["quantity"], 3);
    }

    #[test]
    fn an_event_refers_to_its_definition_and_is_routed_by_its_name() {
        let mut generator = generator();
        let happened = event::<Happened>(&mut generator);
        assert_eq!(happened.schema["$ref"], "#/components/schemas/Happened");
        assert_eq!(happened.description, "Something happened.");
        assert_eq!(happened.example.routing_key, "thing.happened");
        assert_eq!(happened.example.exchange, Exchange::Events(THINGS));
        let definitions = generator.take_definitions(true);
        assert_eq!(definitions["Happened"]["required"], serde_json::json!(["saga_id"]));
    }

    #[test]
    fn example_envelopes_are_the_same_every_time_and_distinct_from_each_other() {
        let message = Outgoing::event(&Happened::example());
        assert_eq!(example_envelope(&message, 1), example_envelope(&message, 1));
        assert_ne!(example_envelope(&message, 1).message_id, example_envelope(&message, 2).message_id);
    }
}
