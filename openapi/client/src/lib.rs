//! A client of the API that no one here wrote: progenitor generates it from the committed spec
//! (`openapi/openapi.json`) when this crate builds (`build.rs`), as it would for any user of the
//! API. `orchestrator/tests/generated_client.rs` drives the README's walk through it, so a spec
//! a client generator cannot read, or an answer that breaks its schema, fails the tests.

#![allow(clippy::all, missing_docs, unused)]

include!(concat!(env!("OUT_DIR"), "/client.rs"));
