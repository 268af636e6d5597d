//! The committed AsyncAPI document is the published message contract: these tests fail when the
//! code's messages and `openapi/asyncapi.json` differ, and check that the document holds
//! together (AsyncAPI 3.1's required fields, every reference resolves, every example matches its
//! own schemas). Regenerate with `cargo run -p orchestrator -- asyncapi > openapi/asyncapi.json`.
//! `asyncapi_broker.rs` takes the document to the real broker.

mod support;

use std::collections::BTreeSet;

use orchestrator::asyncapi;
use platform::contract::Role;
use serde_json::{Value, json};
use support::asyncapi::{channel_of, committed_text, errors, operation_messages, validator};

fn generated() -> Value {
    asyncapi::document(&sagas::registry())
}

#[test]
fn the_committed_document_matches_the_code() {
    let generated = asyncapi::render(&sagas::registry());
    assert!(
        generated.trim_end() == committed_text().trim_end(),
        "openapi/asyncapi.json is out of date with the code; regenerate it with\n  \
         cargo run -p orchestrator -- asyncapi > openapi/asyncapi.json\nand review the diff"
    );
}

/// Every `$ref` in `value`, with where it stands.
fn references(value: &Value, at: String, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref" {
                    found.push((at.clone(), inner.as_str().expect("a reference is a string").to_owned()));
                } else {
                    references(inner, format!("{at}/{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (n, inner) in items.iter().enumerate() {
                references(inner, format!("{at}/{n}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_is_asyncapi_3_and_every_reference_resolves() {
    let document = generated();
    assert_eq!(document["asyncapi"], "3.1.0");
    for field in ["title", "version", "description"] {
        assert!(document["info"][field].as_str().is_some_and(|s| !s.is_empty()), "info.{field}");
    }
    for section in ["channels", "operations"] {
        assert!(document[section].as_object().is_some_and(|s| !s.is_empty()), "{section}");
    }
    let key = regex::Regex::new(r"^[A-Za-z0-9.\-_]+$").unwrap();
    for section in ["/channels", "/operations", "/components/messages", "/components/schemas"] {
        for name in document.pointer(section).unwrap().as_object().unwrap().keys() {
            assert!(key.is_match(name), "{section}/{name} is not a valid component key");
        }
    }

    let mut found = Vec::new();
    references(&document, String::new(), &mut found);
    assert!(found.len() > 100, "{} references", found.len());
    for (at, reference) in &found {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {reference} is not local"));
        assert!(document.pointer(pointer).is_some(), "{at}: {reference} does not resolve");
    }

    // An operation's messages are its channel's; an address's parameters are defined.
    for (id, operation) in document["operations"].as_object().unwrap() {
        assert!(["send", "receive"].contains(&operation["action"].as_str().unwrap()), "{id}");
        let channel_ref = operation["channel"]["$ref"].as_str().unwrap();
        for message in operation["messages"].as_array().unwrap() {
            let message = message["$ref"].as_str().unwrap();
            assert!(message.starts_with(&format!("{channel_ref}/messages/")), "{id}: {message}");
        }
    }
    let parameter = regex::Regex::new(r"\{([^}]+)\}").unwrap();
    for (id, channel) in document["channels"].as_object().unwrap() {
        for name in parameter.captures_iter(channel["address"].as_str().unwrap_or_default()) {
            assert!(channel["parameters"].get(&name[1]).is_some(), "{id} uses {{{}}} undefined", &name[1]);
        }
    }
}

#[test]
fn every_command_reply_and_event_is_documented_with_its_route() {
    let document = generated();
    let messages = document["components"]["messages"].as_object().unwrap();
    // Every kind's commands and replies, from the kinds' own type lists (each kind pins its events'
    // names and exchanges in its own tests).
    let registry = sagas::registry();
    let typed = |role| -> BTreeSet<String> {
        let of_kind = |kind: &'static str| {
            let types = registry.driver(kind).unwrap().message_types(role);
            types.iter().map(move |t| format!("{kind}.{t}"))
        };
        registry.kinds().into_iter().flat_map(of_kind).collect()
    };
    let (commands, replies) = (typed(Role::Command), typed(Role::Reply));
    let events = registry.events();
    let mut expected: BTreeSet<String> = commands.union(&replies).cloned().collect();
    expected.extend(events.iter().map(|event| event.name.to_string()));
    expected.insert("dead-letter".into());
    assert_eq!(messages.keys().cloned().collect::<BTreeSet<_>>(), expected);

    for event in &events {
        let (name, exchange) = (event.name, event.exchange.0);
        let operation = &document["operations"][format!("publish.{name}")];
        let channel = channel_of(&document, operation);
        assert_eq!(channel["address"], name);
        let amqp = &channel["bindings"]["amqp"];
        assert_eq!(amqp["exchange"]["name"], format!("{{namespace}}.{exchange}"), "{name}");
        assert_eq!(amqp["exchange"]["type"], "topic");
        assert_eq!(operation["bindings"]["amqp"]["cc"], json!([name]));
        assert_eq!(operation_messages(operation), [name]);
    }
    // Commands go to their participant's queue, each command to one; replies to the engine's.
    let mut routed = BTreeSet::new();
    for participant in registry.participants() {
        let operation = &document["operations"][format!("consume.{}", participant.queue)];
        for message in operation_messages(operation) {
            assert!(commands.contains(&message), "{}'s queue takes {message}, which is no command", participant.name);
            assert!(routed.insert(message.clone()), "{message} goes to two queues");
        }
    }
    assert_eq!(routed, commands, "every command goes to a participant's queue");
    let answered = operation_messages(&document["operations"]["consume.orchestrator.replies"]);
    assert_eq!(answered.into_iter().collect::<BTreeSet<_>>(), replies);
    // How a participant's queue is declared and bound.
    let commands = &document["operations"]["consume.warehouse.commands"];
    let queue = &channel_of(&document, commands)["bindings"]["amqp"];
    assert_eq!(queue["queue"]["name"], "{namespace}.warehouse.commands");
    assert_eq!(
        queue["x-arguments"],
        json!({"x-queue-type": "quorum", "x-dead-letter-exchange": "{namespace}.dead-letter", "x-delivery-limit": 20})
    );
    assert_eq!(queue["x-bound-to"], json!({"exchange": "{namespace}.saga.commands", "routingKey": "warehouse"}));
}

#[test]
fn every_example_matches_its_own_schemas_and_the_schemas_refuse_what_they_should() {
    let document = generated();
    let messages = document["components"]["messages"].as_object().unwrap();
    for (id, message) in messages {
        let at = format!("/components/messages/{id}");
        let payload = validator(&document, &format!("{at}/payload"));
        let headers = validator(&document, &format!("{at}/headers"));
        let examples = message["examples"].as_array().unwrap();
        assert!(!examples.is_empty(), "{id} has no example");
        for example in examples {
            let wrong = errors(&payload, &example["payload"]);
            assert!(wrong.is_empty(), "{id}'s example payload: {wrong:?}");
            let wrong = errors(&headers, &example["headers"]);
            assert!(wrong.is_empty(), "{id}'s example headers: {wrong:?}");
        }
        if id == "dead-letter" {
            continue;
        }
        // The schemas say something: another type, another version, a missing field or a string
        // where a number belongs are refused.
        let example = &examples[0]["payload"];
        let mut other_type = example.clone();
        other_type["type"] = json!("LaunchRocket");
        let mut other_version = example.clone();
        other_version["version"] = json!(2);
        let mut no_id = example.clone();
        no_id.as_object_mut().unwrap().remove("message_id");
        for (what, instance) in [("type", other_type), ("version", other_version), ("message_id", no_id)] {
            assert!(!payload.is_valid(&instance), "{id} accepts a wrong {what}");
        }
        let body = example["payload"].as_object().unwrap();
        if let Some((field, _)) = body.iter().find(|(_, v)| v.is_i64()) {
            let mut retyped = example.clone();
            retyped["payload"][field] = json!("seven");
            assert!(!payload.is_valid(&retyped), "{id} accepts a string for {field}");
        }
        let (field, _) = body.iter().next().unwrap();
        let mut missing = example.clone();
        missing["payload"].as_object_mut().unwrap().remove(field);
        assert!(!payload.is_valid(&missing), "{id} accepts a body without {field}");
        let mut header = examples[0]["headers"].clone();
        header["x-version"] = json!(2);
        assert!(!headers.is_valid(&header), "{id} accepts another x-version header");
    }
}

#[test]
fn every_event_says_when_it_is_emitted_and_what_a_consumer_may_rely_on() {
    let document = generated();
    for (id, message) in document["components"]["messages"].as_object().unwrap() {
        let tags: Vec<&str> = message["tags"]
            .as_array()
            .map_or(Vec::new(), |tags| tags.iter().map(|t| t["name"].as_str().unwrap()).collect());
        if !tags.contains(&"event") {
            continue;
        }
        let description = message["description"].as_str().unwrap();
        for needle in ["Emitted", "at least once", "`message_id`", "correlation id", "bumps the envelope `version`"] {
            assert!(description.contains(needle), "{id}'s description does not say {needle:?}:\n{description}");
        }
        assert!(message["summary"].as_str().is_some_and(|s| s.len() > 20), "{id} has no summary");
    }
}

/// Domain events are listed by hand in `asyncapi::events()` (commands and replies come from the
/// registry). This reads the sources for every type that implements `DomainEvent`, directly or
/// through a macro, and fails when one is not the body of a documented message.
#[test]
fn every_domain_event_in_the_code_is_documented() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut sources = Vec::new();
    let mut pending: Vec<std::path::PathBuf> = [
        "orchestrator/src",
        "orchestrator/platform/src",
        "orchestrator/sagas/src",
        "orchestrator/stock/src",
        "participants/src",
    ]
    .iter()
    .map(|dir| std::path::Path::new(root).join(dir))
    .collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // Tests' own events are not published.
            sources.push(text.split("#[cfg(test)]").next().unwrap().to_owned());
        }
    }
    let direct = regex::Regex::new(r"impl DomainEvent for (\w+)").unwrap();
    // A macro that implements it (the platform's `domain_event!`), and its calls in any file.
    let macro_def =
        regex::Regex::new(r"macro_rules!\s*(\w+)\s*\{([^}]|\}[^;])*?impl (\$crate::protocol::)?DomainEvent for \$")
            .unwrap();
    let mut types = BTreeSet::new();
    let mut macros = BTreeSet::new();
    for text in &sources {
        types.extend(direct.captures_iter(text).map(|c| c[1].to_owned()));
        macros.extend(macro_def.captures_iter(text).map(|c| c[1].to_owned()));
    }
    for name in &macros {
        let call = regex::Regex::new(&format!(r"{name}!\(\s*(\w+)")).unwrap();
        for text in &sources {
            types.extend(call.captures_iter(text).map(|c| c[1].to_owned()));
        }
    }
    assert!(types.len() >= 11, "the scan found too few events to be working: {types:?}");
    let document = generated();
    let bodies: BTreeSet<String> = document["components"]["messages"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|message| message.pointer("/payload/properties/payload/$ref")?.as_str())
        .map(|reference| reference.trim_start_matches("#/components/schemas/").to_owned())
        .collect();
    let missing: Vec<_> = types.difference(&bodies).collect();
    assert!(
        missing.is_empty(),
        "events in the code but not in the document (add them to asyncapi::events): {missing:?}"
    );
}
