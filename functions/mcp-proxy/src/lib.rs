//! MCP proxy: `POST/GET/DELETE /mcp/{endpoint}` forwards MCP Streamable HTTP to the
//! registered upstream with the gateway's credential for it, and
//! `GET /.well-known/oauth-protected-resource/mcp/{endpoint}` describes the endpoint as an
//! OAuth protected resource (RFC 9728).
//!
//! The caller authenticates with a gateway credential that never travels upstream: only the
//! allowlisted transport headers do (see `mcpgw::upstream`). Client messages are read strictly
//! and forwarded as the gateway parsed and authorized them, re-serialized
//! (`mcpgw::mcp::jsonrpc::parse_client_message`). Answers are checked before they reach the
//! client (`relay`): JSON whole, SSE event by event, as they arrive; one that is not JSON-RPC
//! or answers another id becomes the gateway's `upstream_bad_answer` error. Tested in
//! `tests/it/{proxy,strict_messages,hostile_upstreams}.rs` against
//! in-process upstreams and in the `e2e` crate against server-everything and the Python MCP SDK.
//!
//! # Layers
//!
//! A request reads top to bottom: admit (authenticate and decide, once), resolve the
//! caller's credential, hand the message to its era, forward, adapt the answer, answer. Each
//! module belongs to one layer and uses modules of its own layer or below, never above, and
//! no `use crate::` forms a circle (`tests::modules_use_their_layer_or_below`).
//!
//! 1. handlers: `observe`, `handlers`, `admission`, `metadata`
//!    The HTTP methods of `/mcp/{endpoint}` and the resource metadata; who is calling and
//!    what they may use, decided once per request; around them, each request's trace context,
//!    metrics and span.
//! 2. eras: `session_era`, `stateless_era`, `virtual_endpoint`, `connect_prompt`
//!    What each kind of client gets: session-era clients, 2026-07-28 clients, virtual
//!    servers (the gateway is the MCP server), and callers still missing their own
//!    credential (the in-band connect prompt).
//! 3. relay: `call`, `govern`, `sessions`, `relay`, `owed`, `adapt`, `rewrite`, `cancel`, `connect_watch`, `inputs`, `input_rounds`
//!    One admitted call; its decision point (rate limits and the audit ticket, for
//!    registered and virtual servers alike); the gateway's sealed sessions; the answer streamed back, checked
//!    against what is owed, adapted by access control and between eras, and cancelled
//!    upstream when the client goes away; the stream held for an unconnected caller until
//!    they connect; an upstream's requests to a bridged client (and a stateless upstream's
//!    `input_required` to a session client).
//! 4. wire: `answers`, `headers`, `results`, `initialize`
//!    JSON-RPC error answers; transport headers (session id, version, Accept); results in
//!    the client's era (the one place that decides what a result carries); what the
//!    gateway reads of a client's `initialize` and envelope.
//!
//! The gateway's MCP client (credentials, handshakes, the catalog) is `mcpgw::upstream`.

mod adapt;
mod admission;
mod answers;
mod call;
mod cancel;
mod connect_prompt;
mod connect_watch;
mod govern;
mod handlers;
mod headers;
mod initialize;
mod input_rounds;
mod inputs;
mod metadata;
mod observe;
mod owed;
mod relay;
mod results;
mod rewrite;
mod session_era;
mod sessions;
mod stateless_era;
mod virtual_endpoint;

use axum::Router;
use axum::routing::get;
use mcpgw::state::AppState;

/// The proxy routes, without the common layers (see [`app`]). `/mcp/{endpoint}` carries the
/// observing layer (trace context, request metrics, spans) wherever it is mounted.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/mcp/{endpoint}",
            get(handlers::get)
                .post(handlers::post)
                .delete(handlers::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .route(
            "/.well-known/oauth-protected-resource/mcp/{endpoint}",
            get(metadata::resource_metadata),
        )
        .with_state(state)
}

/// The deployable router: [`routes`] plus `/healthz`, fallbacks and error logging.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    mcpgw::http::finish(routes(state), limit)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use mcpgw::testing::module_graph::ModuleGraph;

    /// The layers of the `//!` map above: module file -> layer number (1 is the top).
    fn layers(lib: &str) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for line in lib.lines() {
            let Some(rest) = line.strip_prefix("//! ") else {
                continue;
            };
            let Some((n, names)) = rest.split_once(". ") else {
                continue;
            };
            let (Ok(n), Some((_, names))) = (n.parse::<u32>(), names.split_once(':')) else {
                continue;
            };
            for name in names.split('`').skip(1).step_by(2) {
                out.insert(format!("{name}.rs"), n);
            }
        }
        out
    }

    /// Every use that points up a layer, at the crate root, or around a circle.
    fn violations(graph: &ModuleGraph, layers: &BTreeMap<String, u32>) -> Vec<String> {
        let mut found = Vec::new();
        for (file, uses) in &graph.uses {
            let Some(own) = layers.get(file) else {
                continue;
            };
            for used in uses {
                match layers.get(used) {
                    Some(layer) if layer < own => found.push(format!(
                        "{file} (layer {own}) uses {used} (layer {layer}), a layer above it"
                    )),
                    Some(_) => {}
                    None => found.push(format!("{file} uses {used}, which is in no layer")),
                }
            }
        }
        let modules: BTreeSet<String> = layers.keys().cloned().collect();
        for cycle in graph.cycles_among(&modules) {
            found.push(format!("a circle: {}", cycle.join(" -> ")));
        }
        found
    }

    #[test]
    fn modules_use_their_layer_or_below() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let layers = layers(&lib);
        // Every module is in the map, and the map names only modules.
        let declared: BTreeSet<String> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
            .map(|m| format!("{m}.rs"))
            .collect();
        let mapped: BTreeSet<String> = layers.keys().cloned().collect();
        assert_eq!(declared, mapped, "the layer map and the modules differ");
        let graph = ModuleGraph::read(&src).unwrap();
        assert!(
            graph.uses["handlers.rs"].contains("session_era.rs"),
            "the graph is read"
        );
        let found = violations(&graph, &layers);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    #[test]
    fn an_upward_use_or_a_circle_is_found() {
        let layers = layers("//! 1. top: `a`\n//! 2. low: `b`, `c`\n");
        assert_eq!(layers.len(), 3);
        let graph = ModuleGraph::from_sources(&[
            ("lib.rs", "mod a; mod b; mod c; pub fn root() {}"),
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "use crate::{a::Y, c};"),
            ("c.rs", "fn f() { crate::b::g(); crate::root(); }"),
        ]);
        let found = violations(&graph, &layers);
        assert!(
            found
                .iter()
                .any(|v| v.starts_with("b.rs (layer 2) uses a.rs")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|v| v == "c.rs uses lib.rs, which is in no layer"),
            "{found:?}"
        );
        assert!(found.iter().any(|v| v.starts_with("a circle")), "{found:?}");
    }
}
