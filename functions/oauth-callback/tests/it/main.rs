//! The integration tests of oauth-callback in ONE test binary (see `functions/mcp-proxy/tests/it`
//! for why): a new test file goes here as a module.
//! Run one module: `cargo test -p oauth-callback --test it browser_binding::`.

mod browser_binding;
mod markup;
