//! The integration tests of mcpgw-shared, one module per concern, in ONE test binary: every
//! separate file under `tests/` would be its own binary linking the whole crate and the AWS SDK.
//! A new test file goes here as a module.
//! Run one module: `cargo test -p mcpgw-shared --test it store_contract::`.

mod audit_trail;
mod grant_quirks;
mod jwt_principals;
mod secrets_moto;
mod store_contract;
