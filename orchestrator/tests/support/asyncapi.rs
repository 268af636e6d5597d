//! Reading the committed AsyncAPI document, and validating against its schemas.

use serde_json::{Value, json};

/// Where the document is committed, from the orchestrator crate.
pub const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/asyncapi.json");

/// The committed document (empty when missing, so that the drift test says how to make it).
pub fn committed_text() -> String {
    std::fs::read_to_string(PATH).unwrap_or_default()
}

pub fn committed() -> Value {
    serde_json::from_str(&committed_text()).expect("openapi/asyncapi.json is JSON")
}

/// A validator for the schema at `pointer` (`/components/messages/x/payload`) of `document`,
/// whose references into the document resolve.
pub fn validator(document: &Value, pointer: &str) -> jsonschema::Validator {
    assert!(document.pointer(pointer).is_some(), "no schema at {pointer}");
    // The whole document is the root, so `#/components/...` references resolve in it; draft 7 reads
    // only the `$ref` of a schema that has one.
    let mut root = document.clone();
    root["$ref"] = json!(format!("#{pointer}"));
    jsonschema::draft7::new(&root).unwrap_or_else(|error| panic!("the schema at {pointer} compiles: {error}"))
}

/// Why `instance` does not match `validator`, if it does not.
pub fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|error| format!("{} at {}", error, error.instance_path())).collect()
}

/// The deployed name of a name of the document.
pub fn deployed(name: &str, namespace: &str) -> String {
    name.replace("{namespace}", namespace)
}

/// The message ids an operation lists (the last segment of each reference).
pub fn operation_messages(operation: &Value) -> Vec<String> {
    operation["messages"]
        .as_array()
        .expect("an operation lists its messages")
        .iter()
        .map(|m| m["$ref"].as_str().expect("a reference").rsplit('/').next().unwrap().to_owned())
        .collect()
}

/// The channel an operation refers to.
pub fn channel_of<'a>(document: &'a Value, operation: &Value) -> &'a Value {
    let reference = operation["channel"]["$ref"].as_str().expect("an operation refers to its channel");
    document.pointer(&reference[1..]).expect("the channel exists")
}
