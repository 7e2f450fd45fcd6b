//! The console calls the admin and self-service API in-process, as its signed-in user: the
//! same handlers, the same validation and the same error messages as `curl` gets. The
//! identity travels in a request extension ([`crate::ConsoleIdentity`]), which only code in
//! this crate can set: nothing from the network can claim one.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use mcpgw::identity::Principal;
use mcpgw::state::AppState;
use serde_json::Value;
use tower::ServiceExt;

/// What the API answered.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's own error message (never anything it did not put there).
    pub fn message(&self) -> String {
        match self.body["error"]["message"].as_str() {
            Some(m) => m.to_owned(),
            None => format!("the request failed ({})", self.status),
        }
    }
}

/// A path segment, percent-encoded (names and emails go into API paths).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `method path` with an optional JSON body, as `who`.
pub async fn call(
    state: &AppState,
    who: &Principal,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let Ok(mut req) = req.body(body) else {
        return Answer {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::json!({"error": {"message": "that name cannot be used in a request"}}),
        };
    };
    req.extensions_mut()
        .insert(crate::ConsoleIdentity(who.clone()));
    let resp = match crate::app(state.clone()).oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    // The API's answers are small JSON documents; a listing is bounded by its caps.
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}
