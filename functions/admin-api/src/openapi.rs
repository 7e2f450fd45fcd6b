//! `GET /admin/openapi.json`: the OpenAPI 3.1 description of this API (`openapi.json` beside
//! `Cargo.toml`, compiled in). Admins only, like the routes it describes in detail.
//! `tests/it/openapi.rs` keeps it in step with the router; the e2e crate runs schemathesis
//! against a live gateway with it.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::state::AppState;

use crate::Admin;

/// The document, as committed.
pub const DOCUMENT: &str = include_str!("../openapi.json");

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/openapi.json", get(document))
}

async fn document(_: Admin) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
