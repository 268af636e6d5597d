//! The committed OpenAPI document is the published contract: this test fails when the code's
//! API and `openapi/openapi.json` differ. Regenerate with
//! `cargo run -p orchestrator -- openapi > openapi/openapi.json`.

use orchestrator::{Context, http};
use participants::config::Config;

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
