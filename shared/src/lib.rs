//! Library shared by every MCP gateway function: the domain, the ports (store, secrets, clock)
//! with their adapters (DynamoDB and SQLite; Secrets Manager and environment), the AEAD keyring,
//! caller authentication, and the HTTP plumbing the function routers are built from.
//!
//! Dependencies point down: `functions/*` -> `state` (assembles the services) -> `upstream`
//! (the gateway's MCP client and credentials) -> `grants`, `identity`, `policy` -> `servers`,
//! `keyring`, `store`, `secrets`, `crypto` -> `domain`. Unit tests live beside the code; the store contract suite is in
//! `tests/it/store_contract.rs` and runs against SQLite and against DynamoDB through moto.

pub mod audit;
pub mod aws;
pub mod browser;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod egress;
pub mod gcra;
pub mod grants;
pub mod http;
pub mod identity;
pub mod invocation;
pub mod keyring;
pub mod lambda_streaming;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod oauth_client;
pub mod oauth_metadata;
pub mod policy;
pub mod runtime;
pub mod secrets;
pub mod servers;
pub mod state;
pub mod store;
pub mod swr;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;
pub mod upstream;
