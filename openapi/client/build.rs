//! Generates the client from the committed spec, as a user of the API would, with progenitor.

use std::{env, fs, path::Path};

/// Operations a generator of this kind cannot type, with why: progenitor needs every error answer
/// of an operation to share one type, and readiness answers its 503 with its own `Health` (which
/// checks failed), not a problem like the rest.
const LEFT_OUT: &[&str] = &["/health/ready"];

fn main() {
    let spec_path = "../openapi.json";
    println!("cargo::rerun-if-changed={spec_path}");
    let text = fs::read_to_string(spec_path).expect("openapi/openapi.json is readable");
    let mut spec: serde_json::Value = serde_json::from_str(&text).expect("the spec is JSON");
    let paths = spec["paths"].as_object_mut().expect("the spec has paths");
    for path in LEFT_OUT {
        assert!(paths.remove(*path).is_some(), "{path} is no longer in the spec: take it off LEFT_OUT");
    }
    let spec: openapiv3::OpenAPI = serde_json::from_value(spec).expect("the spec is OpenAPI 3.0");
    let tokens = progenitor::Generator::default().generate_tokens(&spec).expect("progenitor reads the spec");
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("client.rs");
    fs::write(out, tokens.to_string()).expect("OUT_DIR is writable");
}
