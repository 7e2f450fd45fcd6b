//! The integration tests of mcp-proxy, one module per concern, in ONE test binary: every
//! separate file under `tests/` would be its own binary linking the whole gateway (slow links,
//! gigabytes of target folder). A new test file goes here as a module, next to `common`.
//! Run one module: `cargo test -p mcp-proxy --test it proxy::`.

mod common;
mod deny_spelling;
mod egress;
mod eras;
mod governance;
mod hostile_upstreams;
mod observability;
mod policy;
mod proxy;
mod regressions;
mod sse_resumption;
mod strict_messages;
