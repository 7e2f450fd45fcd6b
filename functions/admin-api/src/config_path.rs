//! The 404s of the per-kind configuration endpoints (servers, identity providers, virtual
//! servers, teams, server groups), worded once from the kind's label so that every kind
//! answers an unknown name the same way.

use mcpgw::domain::validate_name;
use mcpgw::http::ApiError;
use mcpgw::store::ConfigKind;

/// No document of `kind` named `name` (a name that could have been saved: it is echoed).
pub fn not_found(kind: ConfigKind, name: &str) -> ApiError {
    ApiError::not_found(format!("{} '{name}' not found", kind.label()))
}

/// A name from a path, checked before it reaches the store: a name that could not have been
/// saved is the same 404 as an unknown one, without echoing it.
pub fn check_path_name(kind: ConfigKind, name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|_| ApiError::not_found(format!("{} not found", kind.label())))
}
