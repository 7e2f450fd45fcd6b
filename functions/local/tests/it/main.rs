//! The integration tests of the `local` binary in ONE test binary (see
//! `functions/mcp-proxy/tests/it` for why): a new test file goes here as a module.
//! Run one module: `cargo test -p local --test it binary::`.

mod binary;
