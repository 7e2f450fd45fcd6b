//! The integration tests of admin-api, one module per concern, in ONE test binary: every
//! separate file under `tests/` would be its own binary linking the whole gateway (slow links,
//! gigabytes of target folder). A new test file goes here as a module, next to `common`.
//! Run one module: `cargo test -p admin-api --test it console::`.

mod admin;
mod api_keys;
mod audit;
mod audit_records;
mod common;
mod connections;
mod console;
mod console_markup;
mod egress;
mod me_and_providers;
mod openapi;
mod rate_limits;
