//! The one bounded GET every metadata document (and the JWKS an identity provider's metadata
//! names) is read with: `Accept: application/json`, at most a given number of bytes (checked
//! against `Content-Length` first, then while the body streams in, so a huge answer is never
//! buffered whole), within a bound per request. Redirects are the client's business: every
//! client the gateway passes here is built by the egress policy, which follows none.

use std::time::Duration;

use serde_json::Value;

/// Why a GET gave no JSON document.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Not reachable, timed out, or the connection broke while the body was read.
    #[error("request failed")]
    Network(#[source] reqwest::Error),
    /// Answered, but not with a 2xx.
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("is larger than {0} bytes")]
    TooLarge(usize),
    #[error("is not JSON")]
    NotJson,
}

/// The JSON document at `url`, at most `max` bytes. `timeout` bounds the whole request (body
/// included); `None` leaves the client's own bound.
pub async fn get_json(
    http: &reqwest::Client,
    url: &str,
    max: usize,
    timeout: Option<Duration>,
) -> Result<Value, GetError> {
    let mut req = http.get(url).header("accept", "application/json");
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let mut resp = req.send().await.map_err(GetError::Network)?;
    if !resp.status().is_success() {
        return Err(GetError::Status(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(GetError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(GetError::Network)? {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Err(GetError::TooLarge(max));
        }
    }
    serde_json::from_slice(&body).map_err(|_| GetError::NotJson)
}
