//! The message contract, published as an AsyncAPI 3.0 document beside the OpenAPI spec
//! (`openapi/asyncapi.json`, printed by `orchestrator asyncapi`): every exchange and queue with
//! its binding and arguments, and every command and reply of the registered saga kinds and every
//! domain event, each with the JSON Schema of its envelope and body, its headers, its routing and
//! an example.
//!
//! Nothing here restates the code: the exchanges, queues, arguments and bindings come from
//! [`Topology`], the schemas and descriptions from the message types and their doc comments, the
//! routing of each message from the code that writes it to the outbox ([`platform::contract`]),
//! and the headers from the relay's. A test fails when the committed document drifts.

use platform::{
    config::Config,
    contract::{self, MessageContract, Role},
    messaging::{
        Exchange, Queue, Topology, dead_letter,
        relay::VERSION_HEADER,
        topology::{DELIVERY_LIMIT, REPLY_ROUTE},
    },
    process,
    protocol::{DecodeError, Envelope, PROTOCOL_VERSION},
    saga::registry::Registry,
    trace::{self, TraceContext},
};
use schemars::SchemaGenerator;
use serde_json::{Map, Value, json};

use crate::http;

/// How the document writes the deployment's namespace, the prefix of every exchange and queue.
pub const NAMESPACE: &str = "{namespace}";

/// The AMQP 0-9-1 bindings' version that AsyncAPI 3.0 defines.
const BINDING_VERSION: &str = "0.3.0";

/// The document's id of the dead-letter message.
const DEAD_LETTER: &str = "dead-letter";

/// What a consumer may rely on, said of every event and in the document's introduction.
const GUARANTEES: &str = "**Delivery: at least once.** A message can arrive more than once: a relay that \
crashed after publishing, before it recorded the broker's confirmation, publishes it again, and the broker \
redelivers what a consumer did not acknowledge. Every copy has the same `message_id`: deduplicate on it.

**Ordering: per correlation id only.** Messages that share a `correlation_id` (one saga, or one order) are \
published in the order they happened, each following from the commit of the step before it; but a copy \
published again can arrive after later ones, so a consumer that needs order keeps, per correlation id, the \
latest `sent_at` it applied and ignores anything older. Nothing is ordered across correlation ids, nor \
across exchanges.

**Versioning.** Adding an optional field to a body, or a new message type, is compatible: it is done \
without a version bump, so ignore fields and types you do not know. Removing, renaming or retyping a \
field, or changing what it means, bumps the envelope `version` (and the `x-version` header) of every \
message; consumers refuse versions they do not know (ours dead-letter them), so a bump is a breaking \
change, announced in this document.";

/// The finished document as committed in `openapi/asyncapi.json`.
pub fn render(registry: &Registry) -> String {
    serde_json::to_string_pretty(&document(registry)).expect("a JSON value serializes")
}

/// The AsyncAPI 3.0 document of `registry`'s saga kinds and every domain event.
pub fn document(registry: &Registry) -> Value {
    let topology = registry.topology(NAMESPACE);
    let mut generator = contract::generator();
    let messages = contracts(registry, &mut generator);
    let envelope = contract::inline_schema::<Envelope>(&mut generator);

    // Every documented message with its route: (id, exchange, routing key, message object).
    let mut routed: Vec<(String, Exchange, String, Value)> = messages
        .iter()
        .enumerate()
        .map(|(n, message)| {
            let object = message_object(&topology, &envelope, message, n as u128);
            (message_id(message), message.example.exchange, message.example.routing_key.clone(), object)
        })
        .collect();
    let command = messages.iter().find(|m| m.role == Role::Command).expect("the kinds send commands");
    routed.push((DEAD_LETTER.to_owned(), Exchange::DeadLetter, String::new(), dead_letter_message(&topology, command)));

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut routes: Vec<(Exchange, &str)> = Vec::new();
    for (_, exchange, key, _) in &routed {
        if !routes.contains(&(*exchange, key.as_str())) {
            routes.push((*exchange, key.as_str()));
        }
    }
    for (exchange, key) in routes {
        let ids = ids_on(&routed, exchange, key);
        let id = route_channel(exchange, key);
        channels.insert(id.clone(), routing_channel(&topology, exchange, key, &ids));
        operations.insert(format!("publish.{id}"), publish(&id, exchange, key, &ids));
    }
    for (queue, exchange, key) in topology.bindings() {
        let ids = ids_on(&routed, exchange, key);
        let id = queue.name().to_owned();
        channels.insert(id.clone(), queue_channel(&topology, queue, exchange, key, &ids));
        operations.insert(format!("consume.{id}"), consume(&id, queue, &ids));
    }

    let mut schemas = generator.take_definitions(true);
    schemas.insert("MessageHeaders".into(), headers_schema());
    schemas.insert("DeadLetterHeaders".into(), dead_letter_headers_schema());
    let defaults = Config::default();
    json!({
        "asyncapi": "3.1.0",
        "info": {
            "title": "Dark-store replenishment: messages",
            "version": env!("CARGO_PKG_VERSION"),
            "description": introduction(),
            "contact": { "name": http::CONTACT },
            "license": { "name": http::LICENSE, "url": http::LICENSE_URL },
            "tags": tags(registry),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": process::authority(&defaults.amqp_url).unwrap_or_default(),
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The RabbitMQ broker at `AMQP_URL` (this is its default host).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": routed.into_iter().map(|(id, _, _, message)| (id, message)).collect::<Map<_, _>>(),
            "parameters": {
                "namespace": {
                    "description": "The deployment's `NAMESPACE`: the prefix of every exchange and queue name, so that \
                                    several deployments (and parallel tests) can share one broker.",
                    "default": defaults.namespace,
                    "examples": [defaults.namespace],
                }
            },
            "correlationIds": {
                "saga": {
                    "description": "The saga the message belongs to (for an order's fulfilment, the order id), \
                                    also sent as the AMQP `correlation-id` property.",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    })
}

/// Every message the document describes but the dead letter: the commands and replies of
/// `registry`'s kinds, then the domain events their flows emit. Their schemas refer to
/// `generator`'s definitions.
pub fn contracts(registry: &Registry, generator: &mut SchemaGenerator) -> Vec<MessageContract> {
    let mut messages: Vec<MessageContract> = Vec::new();
    for kind in registry.kinds() {
        messages.extend(registry.driver(kind).expect("a listed kind has a driver").messages(generator));
    }
    messages.extend(registry.events().iter().map(|event| (event.contract)(generator)));
    messages
}

/// The tags the messages carry: their role, and the saga kind whose they are.
fn tags(registry: &Registry) -> Vec<Value> {
    let mut tags = vec![
        json!({ "name": "command", "description": "Sent by the saga engine to a participant's queue." }),
        json!({ "name": "reply", "description": "A participant's answer, to the saga engine's queue." }),
        json!({ "name": "event", "description": "News for downstream teams, on a topic exchange." }),
    ];
    tags.extend(
        registry
            .kinds()
            .into_iter()
            .map(|kind| json!({ "name": kind, "description": format!("The {kind} saga's messages.") })),
    );
    tags
}

fn introduction() -> String {
    format!(
        "The messages of the dark-store network on RabbitMQ: the saga engine's commands to the participants' \
         workers, their replies, and the domain events published for downstream teams.

**Names.** Every exchange and queue name begins with the deployment's `NAMESPACE`, written `{NAMESPACE}` \
here. Exchanges and queues are durable; queues are quorum queues. A work queue dead-letters what its \
consumers reject, and what was delivered more than {DELIVERY_LIMIT} times, to `{dead_letter}`.

**Envelope.** Every message is a persistent JSON object `{{version, message_id, correlation_id, sent_at, type, \
payload}}`: `type` says which schema `payload` follows. The AMQP properties repeat the envelope: \
`content-type` `application/json`, `delivery-mode` 2, `message-id`, `correlation-id` (when set), `type`, and \
`timestamp` (`sent_at`, in seconds); the headers carry `{traceparent}` (W3C trace context) and \
`{VERSION_HEADER}` (the envelope version, {PROTOCOL_VERSION} in this version). Messages are published with \
publisher confirms, and saga traffic as mandatory: it must reach its queue.

**Failures.** A consumer dead-letters at once a message it cannot read (not JSON, an unknown version or \
type, a body that does not match its type) with the reason in a header, and one whose handling keeps \
failing after its retries.

{GUARANTEES}",
        dead_letter = Topology::new(NAMESPACE, &[], &[]).exchange(Exchange::DeadLetter),
        traceparent = trace::HEADER,
    )
}

/// The document's id of a message: a kind's commands and replies under the kind's name (two kinds
/// may name a message alike), an event under its own name.
pub fn message_id(message: &MessageContract) -> String {
    match message.kind {
        Some(kind) => format!("{kind}.{}", message.name()),
        None => message.name().to_owned(),
    }
}

/// The ids of the messages published to `exchange` with `key`.
fn ids_on(routed: &[(String, Exchange, String, Value)], exchange: Exchange, key: &str) -> Vec<String> {
    routed.iter().filter(|(_, e, k, _)| *e == exchange && k == key).map(|(id, ..)| id.clone()).collect()
}

/// The id of the channel of `key` on `exchange`: an event's own name, else the exchange's name
/// and the key.
fn route_channel(exchange: Exchange, key: &str) -> String {
    match exchange {
        Exchange::Events(_) => key.to_owned(),
        Exchange::DeadLetter => exchange.as_ref().to_owned(),
        _ => format!("{}.{key}", exchange.as_ref()),
    }
}

fn references(prefix: &str, ids: &[String]) -> Map<String, Value> {
    ids.iter().map(|id| (id.clone(), json!({ "$ref": format!("{prefix}/{id}") }))).collect()
}

/// A routing key on an exchange: where publishers send.
fn routing_channel(topology: &Topology, exchange: Exchange, key: &str, ids: &[String]) -> Value {
    let kind = exchange.kind().expect("messages go to declared exchanges");
    let name = topology.exchange(exchange);
    let description = match exchange {
        Exchange::Commands => {
            format!("Commands for the `{key}` participant: the direct exchange `{name}` routes them to its queue.")
        }
        Exchange::Replies => format!(
            "Participants' replies: the direct exchange `{name}` routes routing key `{REPLY_ROUTE}` to the saga \
             engine's queue."
        ),
        Exchange::DeadLetter => format!(
            "What consumers reject: the fanout exchange `{name}` (the routing key is ignored) delivers it to the \
             dead-letter queue."
        ),
        _ => format!(
            "Routing key `{key}` on the topic exchange `{name}`. No queue of ours is bound to it: bind your own \
             (durable, with a dead-letter exchange of yours) with this key, or a pattern such as `{}.#`.",
            key.split('.').next().unwrap_or(key)
        ),
    };
    json!({
        "address": (exchange != Exchange::DeadLetter).then_some(key),
        "title": format!("{name}: {}", if key.is_empty() { "any routing key" } else { key }),
        "description": description,
        "messages": references("#/components/messages", ids),
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": { "name": name, "type": kind.as_ref(), "durable": true, "autoDelete": false, "vhost": "/" },
                "bindingVersion": BINDING_VERSION,
            }
        },
    })
}

/// A queue: where consumers take messages from.
fn queue_channel(topology: &Topology, queue: Queue, exchange: Exchange, key: &str, ids: &[String]) -> Value {
    let name = topology.queue(queue);
    let arguments: Map<String, Value> = topology
        .arguments(queue)
        .into_iter()
        .map(|(key, value)| (key.to_owned(), serde_json::to_value(value).expect("arguments serialize")))
        .collect();
    json!({
        "address": name,
        "title": name,
        "description": format!(
            "The durable quorum queue `{name}`, bound to `{}` with routing key `{key}`. {}",
            topology.exchange(exchange),
            consumer(queue),
        ),
        "parameters": { "namespace": { "$ref": "#/components/parameters/namespace" } },
        "messages": references("#/components/messages", ids),
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": { "name": name, "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/" },
                "x-arguments": arguments,
                "x-bound-to": { "exchange": topology.exchange(exchange), "routingKey": key },
                "bindingVersion": BINDING_VERSION,
            }
        },
    })
}

/// Who consumes a queue.
fn consumer(queue: Queue) -> String {
    match queue {
        Queue::Commands(participant) => format!(
            "The `{}` participant's workers consume it, competing, each command in a local transaction with its \
             inbox row and its reply, acknowledged after commit.",
            participant.name
        ),
        Queue::Replies => "The saga engine consumes it: each reply moves the saga its correlation id names, in one \
                           transaction with its inbox row, acknowledged after commit."
            .to_owned(),
        Queue::DeadLetters => "The orchestrator's dead-letter keeper stores each message with its reason for \
                               operators (`GET /dead-letters`), who may replay it once to the queue it died in, \
                               through the broker's default exchange, or delete it."
            .to_owned(),
    }
}

/// An operation's messages: its channel's, by reference.
fn operation_messages(channel: &str, ids: &[String]) -> Vec<Value> {
    ids.iter().map(|id| json!({ "$ref": format!("#/channels/{channel}/messages/{id}") })).collect()
}

fn publish(channel: &str, exchange: Exchange, key: &str, ids: &[String]) -> Value {
    let how = "persistent, with publisher confirms";
    let description = match exchange {
        Exchange::Commands => {
            format!("The saga engine sends these commands: {how}, as mandatory (unroutable is an error).")
        }
        Exchange::Replies => format!(
            "Participants' workers send these replies from their outbox, after the commit of the effect they \
             report: {how}, as mandatory (unroutable is an error)."
        ),
        Exchange::DeadLetter => format!(
            "Consumers republish what they reject here, with the reason in headers, {how}, before they acknowledge \
             it; the broker itself dead-letters a message delivered more than {DELIVERY_LIMIT} times."
        ),
        _ => format!("Published from the outbox of the transaction that made the change: {how}."),
    };
    let mut amqp = json!({
        "deliveryMode": 2,
        "mandatory": exchange.requires_route(),
        "timestamp": true,
        "bindingVersion": BINDING_VERSION,
    });
    if exchange != Exchange::DeadLetter {
        amqp["cc"] = json!([key]);
    }
    json!({
        "action": "send",
        "channel": { "$ref": format!("#/channels/{channel}") },
        "title": format!("Publish to {channel}"),
        "description": description,
        "messages": operation_messages(channel, ids),
        "bindings": { "amqp": amqp },
    })
}

fn consume(channel: &str, queue: Queue, ids: &[String]) -> Value {
    json!({
        "action": "receive",
        "channel": { "$ref": format!("#/channels/{channel}") },
        "title": format!("Consume {channel}"),
        "description": format!(
            "{} Bounded prefetch; manual acknowledgement after the effect is committed.",
            consumer(queue)
        ),
        "messages": operation_messages(channel, ids),
        "bindings": { "amqp": { "ack": true, "bindingVersion": BINDING_VERSION } },
    })
}

/// A command, reply or event as the document describes it: its envelope's schema with its body's,
/// its headers, and an example from its Rust value. `n` makes the example's ids its own.
fn message_object(topology: &Topology, envelope: &Value, message: &MessageContract, n: u128) -> Value {
    let name = message.name();
    let routing = &message.example;
    let exchange = topology.exchange(routing.exchange);
    let (role, details) = match (message.role, message.kind) {
        (Role::Command, Some(kind)) => (
            format!("{kind} command"),
            format!(
                "**Routing.** The saga engine sends it to the direct exchange `{exchange}` with routing key `{key}`, \
                 which delivers it to the queue `{queue}`.\n\n**Handling.** Idempotent by its saga: the engine \
                 sends it again, with a new `message_id`, when no reply comes before its deadline; a copy of one \
                 message (same `message_id`) is acknowledged without effect. The participant answers with one of \
                 the {kind} replies.",
                key = routing.routing_key,
                queue = command_queue(topology, &routing.routing_key),
            ),
        ),
        (Role::Reply, Some(kind)) => (
            format!("{kind} reply"),
            format!(
                "**Routing.** A participant sends it to the direct exchange `{exchange}` with routing key `{key}`, \
                 which delivers it to the saga engine's queue `{queue}`.\n\n**Handling.** The engine applies it to \
                 the saga its `correlation_id` names, in the saga's state at that moment; a reply that state does \
                 not expect is recorded in the saga's timeline and not applied, and a copy (same `message_id`) is \
                 acknowledged without effect.",
                key = routing.routing_key,
                queue = topology.queue(Queue::Replies),
            ),
        ),
        _ => (
            "domain event".to_owned(),
            format!(
                "**Routing.** Published to the topic exchange `{exchange}` with routing key `{name}` (also its \
                 `type`).\n\n{GUARANTEES}"
            ),
        ),
    };
    let example = contract::example_envelope(routing, n);
    let trace = TraceContext {
        trace_id: example.correlation_id.unwrap_or(example.message_id).as_u128(),
        span_id: 0x00f0_67aa_0ba9_0200 + n as u64,
    };
    let mut payload = envelope.clone();
    payload["title"] = json!(name);
    payload["description"] = json!(format!("The envelope of a `{name}`: its `payload` is the message's body."));
    payload["properties"]["version"]["const"] = json!(PROTOCOL_VERSION);
    payload["properties"]["type"]["const"] = json!(name);
    payload["properties"]["payload"] = message.schema.clone();
    let mut tags = vec![json!({ "name": message.role.as_ref() })];
    if let Some(kind) = message.kind {
        tags.push(json!({ "name": kind }));
    }
    json!({
        "name": name,
        "title": format!("{name} ({role})"),
        "summary": summary(&message.description),
        "description": format!("{}\n\n{details}", message.description),
        "contentType": "application/json",
        "tags": tags,
        "headers": { "$ref": "#/components/schemas/MessageHeaders" },
        "payload": payload,
        "correlationId": { "$ref": "#/components/correlationIds/saga" },
        "bindings": { "amqp": { "messageType": name, "bindingVersion": BINDING_VERSION } },
        "examples": [{
            "name": name,
            "summary": format!("{name}, as published"),
            "headers": { (trace::HEADER): trace.header(), (VERSION_HEADER): example.version },
            "payload": example,
        }],
    })
}

/// The headers the relay sets on every message.
fn headers_schema() -> Value {
    json!({
        "type": "object",
        "description": "The AMQP headers every message is published with. A message taken from one of our \
                        (quorum) queues also has the broker's `x-delivery-count`.",
        "required": [trace::HEADER, VERSION_HEADER],
        "properties": {
            (trace::HEADER): {
                "type": "string",
                "pattern": trace::HEADER_PATTERN,
                "description": "W3C trace context: the trace of the request or saga that caused the message, with a \
                                span of its own.",
            },
            (VERSION_HEADER): {
                "type": "integer",
                "const": PROTOCOL_VERSION,
                "description": "The envelope's `version`, repeated so that a consumer can refuse a message without \
                                parsing its body.",
            },
        },
    })
}

/// The headers of a dead letter: the message's own, and why and where it died.
fn dead_letter_headers_schema() -> Value {
    json!({
        "type": "object",
        "description": "The rejected message's own headers, and these. A message the broker dead-lettered itself \
                        (past the delivery limit) has the broker's `x-death` header instead of the reason.",
        "properties": {
            (dead_letter::REASON_HEADER): { "type": "string", "description": "Why the consumer rejected it." },
            (dead_letter::QUEUE_HEADER): { "type": "string", "description": "The queue it was rejected from." },
            (dead_letter::EXCHANGE_HEADER): { "type": "string", "description": "The exchange it was published to." },
            (dead_letter::ROUTING_KEY_HEADER): { "type": "string", "description": "Its routing key." },
            (dead_letter::PERMANENT_HEADER): {
                "type": "string",
                "enum": ["true", "false"],
                "description": "`true` when the consumer found it one that can never be handled (malformed, or \
                                breaking a rule), `false` when it only ran out of retries. A command refused for \
                                good fails its saga's step at once.",
            },
            "x-death": { "type": "array", "description": "Set by the broker when it dead-lettered the message." },
        },
    })
}

/// A message a consumer rejected, as the dead-letter queue holds it; its example is `command`'s,
/// in a version this build does not speak, refused for that reason.
fn dead_letter_message(topology: &Topology, command: &MessageContract) -> Value {
    let mut envelope = contract::example_envelope(&command.example, 0xdead);
    envelope.version = PROTOCOL_VERSION + 1;
    json!({
        "name": "DeadLetter",
        "title": "A rejected message",
        "summary": "A message no consumer could handle, kept for operators.",
        "description": "The rejected message byte for byte, with its properties and headers, and headers that say \
                        why and where it died. It is usually one of the messages of this document, but need not be \
                        readable: that may be why it died.",
        "headers": { "$ref": "#/components/schemas/DeadLetterHeaders" },
        "payload": { "description": "The rejected message's body, unchanged." },
        "examples": [{
            "name": "unknown-version",
            "summary": "A command of a version this build does not speak",
            "headers": {
                (dead_letter::REASON_HEADER): DecodeError::UnknownVersion(envelope.version).to_string(),
                (dead_letter::QUEUE_HEADER): command_queue(topology, &command.example.routing_key),
                (dead_letter::EXCHANGE_HEADER): topology.exchange(command.example.exchange),
                (dead_letter::ROUTING_KEY_HEADER): command.example.routing_key,
                (dead_letter::PERMANENT_HEADER): "true",
            },
            "payload": envelope,
        }],
    })
}

/// The queue of the participant a command's routing key names.
fn command_queue(topology: &Topology, routing_key: &str) -> String {
    let participant = topology.participants().iter().find(|p| p.name == routing_key);
    topology.queue(Queue::Commands(*participant.expect("a command is routed to a participant's queue")))
}

/// A description's first sentence.
fn summary(description: &str) -> String {
    let paragraph = description.split("\n\n").next().unwrap_or_default().replace('\n', " ");
    match paragraph.split_once(". ") {
        Some((first, _)) => format!("{first}."),
        None => paragraph,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_keep_one_sentence() {
        assert_eq!(summary("Ships it. Then more.\n\nDetails."), "Ships it.");
        assert_eq!(summary("One line\nwrapped"), "One line wrapped");
    }
}
