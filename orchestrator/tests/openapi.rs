//! The committed OpenAPI document is the published contract: this test fails when the code's
//! API and `openapi/openapi.json` differ. Regenerate with
//! `cargo run -p orchestrator -- openapi > openapi/openapi.json`.

use orchestrator::{Context, http};
use platform::config::Config;

#[tokio::test]
async fn the_committed_spec_matches_the_code() {
    let generated = http::spec(&Context::offline(&Config::default()).unwrap());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated.trim_end() == committed.trim_end(),
        "openapi/openapi.json is out of date with the code; regenerate it with\n  \
         cargo run -p orchestrator -- openapi > openapi/openapi.json\nand review the diff"
    );
}

#[tokio::test]
async fn every_operation_is_tagged_and_summarised() {
    let spec: serde_json::Value =
        serde_json::from_str(&http::spec(&Context::offline(&Config::default()).unwrap())).unwrap();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path} has no tag");
            assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path} has no summary");
        }
    }
}

/// Request bodies refuse fields they do not name (a test in `hostile.rs` holds the server to it),
/// so every object a request body holds says `additionalProperties: false`.
#[tokio::test]
async fn every_request_body_refuses_unknown_fields() {
    let spec: serde_json::Value =
        serde_json::from_str(&http::spec(&Context::offline(&Config::default()).unwrap())).unwrap();
    let schemas = &spec["components"]["schemas"];
    let mut pending: Vec<String> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|operations| operations.as_object().unwrap().values())
        .filter_map(|operation| operation.pointer("/requestBody/content"))
        .flat_map(|content| content.as_object().unwrap().values())
        .filter_map(|media| media["schema"]["$ref"].as_str().map(str::to_owned))
        .collect();
    assert!(pending.len() >= 10, "request bodies: {pending:?}");
    while let Some(reference) = pending.pop() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let schema = &schemas[name];
        assert_eq!(schema["additionalProperties"], false, "{name} takes fields it does not name");
        let text = schema.to_string();
        for nested in text.split("\"$ref\":\"").skip(1) {
            pending.push(nested.split('"').next().unwrap().to_owned());
        }
    }
}
