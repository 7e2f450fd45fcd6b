//! The end-to-end tests, one module per feature, in ONE test binary: every separate file under
//! `tests/tests/` would be its own binary linking the whole gateway (slow links, gigabytes of
//! target folder). A new test file goes here as a module. Helpers shared by modules live in
//! the `e2e` library (`tests/src`).
//! Run one module: `cargo test -p e2e --test it console::` (peers: see `scripts/peers.sh`).

mod access_control;
mod answer_schemas;
mod audit;
mod auth_header;
mod bridge;
mod client_auth;
mod clients;
mod conformance;
mod connect_journey;
mod console;
mod discovery;
mod identity;
mod lambda_mode;
mod mcp_eras;
mod oauth_connect;
mod observability;
mod openapi;
mod rate_limits;
mod user_tokens;
mod walkthrough;
