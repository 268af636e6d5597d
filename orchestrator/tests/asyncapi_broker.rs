//! The committed AsyncAPI document (`openapi/asyncapi.json`) against the real broker. Everything
//! here is read from the document, not from the code it was generated from, so it proves that
//! what downstream teams read is what the running system does:
//!
//! - the exchanges and queues are as documented: after the application declared its topology,
//!   each is declared again from the document alone (type, durability, queue arguments), and
//!   RabbitMQ refuses a declaration that differs from the existing one (PRECONDITION_FAILED);
//! - every message is sent by the code where the document says: its example, built from the Rust
//!   value and routed by the code that writes it to the outbox, goes to the exchange and routing
//!   key of its documented publish operation, and is published by the relay's own code;
//! - every command and reply lands in the queue its documented consume operation names
//!   (mandatory: a route the broker does not know fails the publish), with headers valid against
//!   the documented ones and the documented AMQP properties, with a body valid against its
//!   documented schema, and the consumer's own decoding accepts it: `Envelope::decode`, then
//!   `body::<Command>()` (or `Reply`) of its kind, which gives back exactly the documented body;
//! - every domain event reaches a queue bound the way the document tells downstream teams to bind
//!   (its exchange, its routing key), valid against its schema and headers, with the documented
//!   body;
//! - the documented dead letter is what a consumer makes of a message of an unknown version:
//!   published to the route its headers name, with the application's consumers running, it is
//!   kept with the documented reason, in the documented queue's name.

mod support;

use std::{cell::RefCell, collections::HashMap, time::Duration};

use lapin::{
    BasicProperties, Channel, Confirmation, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use orchestrator::asyncapi;
use platform::{
    contract::{self, Role},
    messaging::{
        connect,
        outbox::{self, Outgoing},
        relay::RelayFaults,
        with_channel,
    },
    process::Services,
    protocol::{DecodeError, Envelope},
    trace::TraceContext,
};
use serde_json::{Value, json};
use support::{
    ADMIN_KEY, TestEnv,
    asyncapi::{channel_of, committed, deployed, errors, operation_messages, validator},
    client, eventually,
};

/// A message of the document, as the test publishes it.
struct Documented {
    id: String,
    exchange: String,
    routing_key: String,
    /// The queue it must be taken from.
    queue: String,
    example: Value,
}

#[tokio::test]
async fn every_documented_message_travels_the_broker_as_documented() {
    let env = TestEnv::new().await;
    let namespace = env.config.namespace.clone();
    let document = committed();
    // Migrates the database and declares the code's topology; no consumer runs.
    let services = Services::connect(env.config.clone(), &sagas::registry()).await.unwrap();
    let connection = connect(&env.config.amqp_url, "asyncapi-test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

    declare_as_documented(&channel, &document, &namespace).await;

    // Every command and reply: from its publish operation, its route; from the consume operation
    // that lists it, its queue.
    let mut consumed_from: HashMap<String, String> = HashMap::new();
    for (id, operation) in document["operations"].as_object().unwrap() {
        if operation["action"] == "receive" {
            let queue = &channel_of(&document, operation)["bindings"]["amqp"]["queue"]["name"];
            for message in operation_messages(operation) {
                let previous = consumed_from.insert(message, deployed(queue.as_str().unwrap(), &namespace));
                assert!(previous.is_none(), "{id}: a message consumed from two queues");
            }
        }
    }
    let mut documented = Vec::new();
    for (id, operation) in document["operations"].as_object().unwrap() {
        if operation["action"] != "send" || id == "publish.dead-letter" {
            continue;
        }
        let exchange = &channel_of(&document, operation)["bindings"]["amqp"]["exchange"]["name"];
        let exchange = deployed(exchange.as_str().unwrap(), &namespace);
        let routing_key = operation["bindings"]["amqp"]["cc"][0].as_str().unwrap().to_owned();
        for message in operation_messages(operation) {
            let queue = match consumed_from.get(&message) {
                Some(queue) => queue.clone(),
                // An event: a queue of the test's own, bound as a downstream team would bind it.
                None => bind_own_queue(&channel, &namespace, &exchange, &routing_key, &message).await,
            };
            let example = document["components"]["messages"][&message]["examples"][0].clone();
            documented.push(Documented {
                id: message,
                exchange: exchange.clone(),
                routing_key: routing_key.clone(),
                queue,
                example,
            });
        }
    }
    // Every kind's commands and replies, and every event, once.
    let registry = sagas::registry();
    let sent = |kind: &'static str| {
        let driver = registry.driver(kind).unwrap();
        driver.message_types(Role::Command).len() + driver.message_types(Role::Reply).len()
    };
    let messages: usize = registry.kinds().into_iter().map(sent).sum::<usize>() + registry.events().len();
    assert_eq!(documented.len(), messages, "every command, reply and event is documented, once");

    // Each message as the code writes it to the outbox, and published by the relay's own code: to
    // the documented exchange and routing key, which must be the code's.
    let topology = sagas::registry().topology(namespace.clone());
    let mut code: HashMap<String, Outgoing> = asyncapi::contracts(&sagas::registry(), &mut contract::generator())
        .into_iter()
        .map(|message| (asyncapi::message_id(&message), message.example))
        .collect();
    let outgoing: Vec<Outgoing> = documented
        .iter()
        .map(|m| {
            let written = code.remove(&m.id).unwrap_or_else(|| panic!("{} is documented, not sent by the code", m.id));
            let route = (topology.exchange(written.exchange), written.routing_key.clone());
            assert_eq!(route, (m.exchange.clone(), m.routing_key.clone()), "{}: the code routes it elsewhere", m.id);
            as_documented(written, m)
        })
        .collect();
    assert!(code.is_empty(), "sent by the code, not documented: {:?}", code.keys().collect::<Vec<_>>());
    let relay = services.relay(RelayFaults::default());
    let mut tx = services.pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &outgoing).await.unwrap();
    tx.commit().await.unwrap();
    let published = relay.publish_batch(&channel).await.expect("every message has a route");
    assert_eq!(published, documented.len());

    // Everything that arrives, by (queue, message id).
    let received = RefCell::new(HashMap::new());
    let mut queues: Vec<&str> = documented.iter().map(|m| m.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    eventually(Duration::from_secs(10), "every message in a queue", || async {
        for queue in &queues {
            while let Some(delivery) = take(&channel, queue).await {
                let message_id = delivery.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                received.borrow_mut().insert((queue.to_string(), message_id), delivery);
            }
        }
        (received.borrow().len() >= documented.len()).then_some(())
    })
    .await;
    let mut received = received.into_inner();
    for message in &documented {
        let message_id = message.example["payload"]["message_id"].as_str().unwrap().to_owned();
        let delivery = received
            .remove(&(message.queue.clone(), message_id))
            .unwrap_or_else(|| panic!("{} did not arrive in {}", message.id, message.queue));
        check(&document, message, &delivery);
    }
    assert!(received.is_empty(), "unexpected deliveries: {:?}", received.keys().collect::<Vec<_>>());

    platform::messaging::close(&connection, "done").await;
    dead_letter_as_documented(&env, &document).await;
    env.teardown().await;
}

/// Declares every exchange and queue the document's channels describe, as they describe it. A
/// difference from what the application declared closes the channel, failing the test.
async fn declare_as_documented(channel: &Channel, document: &Value, namespace: &str) {
    for (id, channel_doc) in document["channels"].as_object().unwrap() {
        let amqp = &channel_doc["bindings"]["amqp"];
        match amqp["is"].as_str().unwrap() {
            "routingKey" => {
                let exchange = &amqp["exchange"];
                let options = ExchangeDeclareOptions {
                    durable: exchange["durable"].as_bool().unwrap(),
                    auto_delete: exchange["autoDelete"].as_bool().unwrap(),
                    ..Default::default()
                };
                let name = deployed(exchange["name"].as_str().unwrap(), namespace);
                let kind = ExchangeKind::Custom(exchange["type"].as_str().unwrap().to_owned());
                channel
                    .exchange_declare(name.as_str().into(), kind, options, FieldTable::default())
                    .await
                    .unwrap_or_else(|error| panic!("{id}: the exchange {name} is not as documented: {error}"));
            }
            "queue" => {
                let queue = &amqp["queue"];
                let options = QueueDeclareOptions {
                    durable: queue["durable"].as_bool().unwrap(),
                    exclusive: queue["exclusive"].as_bool().unwrap(),
                    auto_delete: queue["autoDelete"].as_bool().unwrap(),
                    ..Default::default()
                };
                let mut arguments = FieldTable::default();
                for (key, value) in amqp["x-arguments"].as_object().unwrap() {
                    let value = match value {
                        Value::String(text) => {
                            AMQPValue::LongString(LongString::from(deployed(text, namespace).as_str()))
                        }
                        Value::Number(n) => AMQPValue::LongInt(i32::try_from(n.as_i64().unwrap()).unwrap()),
                        other => panic!("{id}: argument {key} = {other}"),
                    };
                    arguments.insert(key.as_str().into(), value);
                }
                let name = deployed(queue["name"].as_str().unwrap(), namespace);
                channel
                    .queue_declare(name.as_str().into(), options, arguments)
                    .await
                    .unwrap_or_else(|error| panic!("{id}: the queue {name} is not as documented: {error}"));
                // A queue's binding is checked by routing: the test binds nothing to it.
                let bound = &amqp["x-bound-to"];
                assert!(bound["exchange"].is_string() && bound["routingKey"].is_string(), "{id}: {bound}");
            }
            other => panic!("{id}: a channel that is a {other}"),
        }
    }
}

/// An exclusive queue bound to `exchange` with `routing_key`, for one event.
async fn bind_own_queue(channel: &Channel, namespace: &str, exchange: &str, routing_key: &str, event: &str) -> String {
    let name = format!("{namespace}.downstream.{event}");
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await.unwrap();
    channel
        .queue_bind(
            name.as_str().into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    name
}

/// The code's message with the documented example's message id (to know it when it arrives) and
/// trace.
fn as_documented(written: Outgoing, message: &Documented) -> Outgoing {
    let example = &message.example;
    let message_id = example["payload"]["message_id"].as_str().and_then(|id| id.parse().ok());
    Outgoing {
        message_id: message_id.expect("an example has a message id"),
        trace: example["headers"]["traceparent"].as_str().and_then(TraceContext::parse),
        ..written
    }
}

async fn take(channel: &Channel, queue: &str) -> Option<Delivery> {
    let got = channel.basic_get(queue.into(), BasicGetOptions::default()).await.unwrap();
    got.map(|message| message.delivery)
}

/// The AMQP headers as JSON, for their schema.
fn headers_json(delivery: &Delivery) -> Value {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let mut json = serde_json::Map::new();
    for (key, value) in headers.inner() {
        let value = match value {
            AMQPValue::LongString(text) => json!(String::from_utf8_lossy(text.as_bytes())),
            AMQPValue::ShortString(text) => json!(text.as_str()),
            AMQPValue::LongInt(int) => json!(int),
            AMQPValue::LongLongInt(int) => json!(int),
            other => panic!("header {key} is {other:?}"),
        };
        json.insert(key.to_string(), value);
    }
    Value::Object(json)
}

/// Checks a delivery of `message` against the document, and decodes it as its consumer does.
fn check(document: &Value, message: &Documented, delivery: &Delivery) {
    let id = &message.id;
    let doc = &document["components"]["messages"][id];
    let at = format!("/components/messages/{id}");
    let properties = &delivery.properties;
    let sent: Envelope = serde_json::from_value(message.example["payload"].clone()).unwrap();
    assert_eq!(properties.message_id().as_ref().map(|m| m.to_string()), Some(sent.message_id.to_string()), "{id}");
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.to_string()).as_deref(),
        doc["contentType"].as_str(),
        "{id}"
    );
    assert_eq!(
        properties.kind().as_ref().map(|k| k.to_string()).as_deref(),
        doc["bindings"]["amqp"]["messageType"].as_str()
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "{id} is persistent");
    assert_eq!(properties.correlation_id().as_ref().map(|c| c.to_string()), sent.correlation_id.map(|c| c.to_string()));

    let headers = headers_json(delivery);
    let wrong = errors(&validator(document, &format!("{at}/headers")), &headers);
    assert!(wrong.is_empty(), "{id}: headers {headers} are not as documented: {wrong:?}");
    let body: Value = serde_json::from_slice(&delivery.data).unwrap();
    let wrong = errors(&validator(document, &format!("{at}/payload")), &body);
    assert!(wrong.is_empty(), "{id}: body {body} is not as documented: {wrong:?}");

    // The consumer's own reading.
    let envelope = Envelope::decode(&delivery.data).unwrap_or_else(|error| panic!("{id}: {error}"));
    assert_eq!(envelope.message_type, sent.message_type);
    assert_eq!(envelope.payload, sent.payload, "{id}: the code's example is not the documented one");
    if let Some((kind, _)) = id.split_once('.').filter(|_| doc["tags"][0]["name"] != "event") {
        let decoded = decode(kind, &envelope).unwrap_or_else(|error| panic!("{id}: the consumer refuses it: {error}"));
        assert_eq!(decoded, sent.payload, "{id}: the body decoded is not the body sent");
    }
}

/// Decodes a command or reply as the kind's consumer does; gives back its body.
fn decode(kind: &str, envelope: &Envelope) -> Result<Value, DecodeError> {
    sagas::registry().driver(kind).unwrap_or_else(|_| panic!("no kind {kind}")).decode(envelope)
}

/// The document's dead-letter example: its body, published where its headers say it came from,
/// with the application's consumers running, is kept with the reason the document gives.
async fn dead_letter_as_documented(env: &TestEnv, document: &Value) {
    let app = env.start(support::everything(), RelayFaults::default()).await;
    let namespace = &env.config.namespace;
    let example = &document["components"]["messages"]["dead-letter"]["examples"][0];
    let headers = &example["headers"];
    let exchange = deployed(headers["x-dead-letter-original-exchange"].as_str().unwrap(), namespace);
    let routing_key = headers["x-dead-letter-original-routing-key"].as_str().unwrap();
    // Straight to the broker: the outbox writes only the version this build speaks.
    let body = serde_json::to_vec(&example["payload"]).unwrap();
    let confirm = with_channel(&env.config.amqp_url, "asyncapi-test", async |channel| {
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let properties =
            BasicProperties::default().with_message_id(example["payload"]["message_id"].as_str().unwrap().into());
        channel.basic_publish(exchange.as_str().into(), routing_key.into(), options, &body, properties).await?.await
    })
    .await
    .unwrap();
    assert!(matches!(confirm, Confirmation::Ack(None)), "routed and confirmed: {confirm:?}");

    let api = client(&app, ADMIN_KEY);
    let reason = headers["x-dead-letter-reason"].as_str().unwrap();
    let stored = eventually(Duration::from_secs(10), "the documented dead letter", || async {
        let response = api.get("/dead-letters").send().await;
        let page: Value = response.0.into_body().into_json().await.unwrap();
        page["items"].as_array().unwrap().iter().find(|l| l["reason"] == reason).cloned()
    })
    .await;
    assert_eq!(stored["queue"], deployed(headers["x-dead-letter-queue"].as_str().unwrap(), namespace));
    assert_eq!(serde_json::from_str::<Value>(stored["body"].as_str().unwrap()).unwrap(), example["payload"]);
    app.stop().await;
}
