//! Disconnecting a user from a server: the local grant is deleted first (so the gateway stops
//! using it whatever the provider says), then the refresh token is revoked at the provider
//! (RFC 7009), and the access token only if the provider answers `unsupported_token_type`.
//! Best effort, bounded by the OAuth call timeout; the outcome is reported, never raised.
//!
//! The request is the `oauth2` crate's, from the client [`crate::oauth_client`] builds (the
//! client id and secret form-encoded in HTTP Basic, RFC 6749 section 2.3.1, as in every
//! token request), sent by `Sender` (below).

use std::sync::atomic::{AtomicU16, Ordering};

use oauth2::basic::BasicTokenResponse;
use oauth2::{
    AccessToken, AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse, RefreshToken,
    RequestTokenError, RevocationErrorResponseType, RevocationUrl, StandardRevocableToken,
};
use serde::Serialize;

use super::Grants;
use super::endpoints;
use super::{GrantError, TokenSet, ring};
use crate::domain::McpServer;

/// What the provider said.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// The provider accepted the revocation of this token type.
    Revoked { token: &'static str },
    /// The provider offers no revocation endpoint.
    NotSupported,
    /// The revocation failed; the local grant is gone anyway.
    Failed { reason: String },
    /// A token the user stored themselves: there is no provider to tell.
    NotApplicable,
}

/// Deletes `user`'s grant for `server` and revokes it at the provider. `Ok(None)`: there was
/// no grant.
pub async fn disconnect(
    grants: &Grants,
    user: &str,
    server: &McpServer,
) -> Result<Option<Revocation>, GrantError> {
    let Some(grant) = grants.store.get_grant(user, &server.name).await? else {
        return Ok(None);
    };
    if !grants.store.delete_grant(user, &server.name).await? {
        return Ok(None);
    }
    grants.tokens.forget(user, &server.name);
    let tokens = match ring(grants).await.and_then(|r| {
        TokenSet::open(&r, &grant.sealed_tokens, user, &server.name).map_err(Into::into)
    }) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Some(Revocation::Failed {
                reason: format!("the stored tokens could not be opened ({})", e.code()),
            }));
        }
    };
    Ok(Some(revoke(grants, server, &tokens).await))
}

async fn revoke(grants: &Grants, server: &McpServer, tokens: &TokenSet) -> Revocation {
    let e = match endpoints::for_server(grants, server).await {
        Ok(e) => e,
        Err(e) => {
            return Revocation::Failed {
                reason: e.to_string(),
            };
        }
    };
    let Some(endpoint) = e.revocation.clone() else {
        return Revocation::NotSupported;
    };
    let creds = match super::registration::credentials(grants, server, &e).await {
        Ok(c) => c,
        Err(e) => {
            return Revocation::Failed {
                reason: format!("client credentials: {e}"),
            };
        }
    };
    let (url, sender) = match Sender::for_endpoint(&grants.oauth_http, &endpoint) {
        Ok(x) => x,
        Err(reason) => return Revocation::Failed { reason },
    };
    let client = crate::oauth_client::new::<BasicTokenResponse>(
        &creds.client_id,
        creds.client_secret.as_deref(),
    )
    .set_revocation_url(url);
    let mut candidates: Vec<(&'static str, StandardRevocableToken)> = Vec::new();
    if let Some(r) = &tokens.refresh_token {
        candidates.push((
            "refresh_token",
            StandardRevocableToken::RefreshToken(RefreshToken::new(r.clone())),
        ));
    }
    candidates.push((
        "access_token",
        StandardRevocableToken::AccessToken(AccessToken::new(tokens.access_token.clone())),
    ));
    let count = candidates.len();
    let mut last = Revocation::NotSupported;
    for (i, (hint, token)) in candidates.into_iter().enumerate() {
        let request = match client.revoke_token(token) {
            Ok(r) => r,
            Err(e) => {
                return Revocation::Failed {
                    reason: e.to_string(),
                };
            }
        };
        let code = match request.request_async(&sender).await {
            Ok(()) => return Revocation::Revoked { token: hint },
            Err(RequestTokenError::Request(e)) => {
                return Revocation::Failed {
                    reason: format!("network_error: {}", crate::http::error_chain(&e)),
                };
            }
            Err(RequestTokenError::ServerResponse(r)) => r.error().clone(),
            // Nothing was sent (the request could not be built).
            Err(e @ (RequestTokenError::Parse(..) | RequestTokenError::Other(_)))
                if !sender.answered() =>
            {
                return Revocation::Failed {
                    reason: e.to_string(),
                };
            }
            // No error document (an empty or unreadable body): the status says it.
            Err(RequestTokenError::Parse(..) | RequestTokenError::Other(_)) => {
                RevocationErrorResponseType::Basic(
                    oauth2::basic::BasicErrorResponseType::Extension(String::new()),
                )
            }
        };
        // Only an unsupported refresh-token revocation goes on to the access token.
        if code == RevocationErrorResponseType::UnsupportedTokenType && i == 0 && i + 1 < count {
            last = Revocation::Failed {
                reason: code.as_ref().to_owned(),
            };
            continue;
        }
        return Revocation::Failed {
            reason: format!(
                "upstream_error: HTTP {} {}",
                sender.last_status(),
                code.as_ref()
            ),
        };
    }
    last
}

/// Sends the crate's revocation request with the gateway's OAuth client, for one endpoint.
///
/// Two things the crate decides differently from the gateway, settled here:
/// - it refuses any revocation URL but `https` (RFC 7009 section 2), before any request. The
///   gateway's rule for plain `http` is the egress policy's, and it already passed this
///   endpoint ([`endpoints::for_server`] checks every stored endpoint at use; plain `http`
///   only where the policy allows it, as in local mode on loopback). So the crate is given
///   the `https` spelling of such an endpoint, and this sender puts the endpoint itself back
///   on the request before it leaves;
/// - it takes only `200` as success (RFC 7009 section 2.2), and its error keeps the body but
///   not the status. The gateway has always counted any 2xx (some providers answer `204 No
///   Content`) and reports the status of a refusal, so the status is noted here and a 2xx
///   passed on as `200`.
struct Sender<'a> {
    http: &'a reqwest::Client,
    /// The URI the crate was given for a plain-`http` endpoint, and the endpoint's own.
    respelled: Option<(http::Uri, http::Uri)>,
    status: AtomicU16,
}

impl<'a> Sender<'a> {
    /// The URL to give the crate for `endpoint`, and the sender that reaches it.
    fn for_endpoint(
        http: &'a reqwest::Client,
        endpoint: &str,
    ) -> Result<(RevocationUrl, Self), String> {
        let bad = |e: &dyn std::fmt::Display| format!("revocation endpoint: {e}");
        let url = url::Url::parse(endpoint).map_err(|e| bad(&e))?;
        let mut respelled = None;
        let mut given = url.clone();
        if url.scheme() == "http" {
            given
                .set_scheme("https")
                .map_err(|()| bad(&"cannot be spelled with https"))?;
            let uri = |u: &url::Url| u.as_str().parse::<http::Uri>().map_err(|e| bad(&e));
            respelled = Some((uri(&given)?, uri(&url)?));
        }
        let sender = Self {
            http,
            respelled,
            status: AtomicU16::new(0),
        };
        Ok((RevocationUrl::from_url(given), sender))
    }

    /// Whether the endpoint answered at all.
    fn answered(&self) -> bool {
        self.status.load(Ordering::Relaxed) != 0
    }

    /// The status of the last answer, for messages.
    fn last_status(&self) -> String {
        let s = self.status.load(Ordering::Relaxed);
        http::StatusCode::from_u16(s).map_or_else(|_| s.to_string(), |s| s.to_string())
    }

    async fn send(
        &self,
        mut req: HttpRequest,
    ) -> Result<HttpResponse, HttpClientError<reqwest::Error>> {
        if let Some((given, endpoint)) = &self.respelled
            && req.uri() == given
        {
            *req.uri_mut() = endpoint.clone();
        }
        let mut resp = self.http.call(req).await?;
        self.status.store(resp.status().as_u16(), Ordering::Relaxed);
        if resp.status().is_success() {
            *resp.status_mut() = http::StatusCode::OK;
        }
        Ok(resp)
    }
}

impl<'c> AsyncHttpClient<'c> for Sender<'_> {
    type Error = HttpClientError<reqwest::Error>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// A revocation endpoint on loopback (plain http): `/gone` answers 204 No Content,
    /// `/refuse` 400 `invalid_request`; the paths it was asked on.
    async fn endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            s.lock().unwrap().push(uri.path().to_owned());
            async move {
                match uri.path() {
                    "/gone" => (StatusCode::NO_CONTENT, String::new()),
                    _ => (
                        StatusCode::BAD_REQUEST,
                        r#"{"error":"invalid_request"}"#.to_owned(),
                    ),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, seen)
    }

    async fn revoke_at(
        http: &reqwest::Client,
        endpoint: &str,
    ) -> (
        Result<
            (),
            RequestTokenError<
                HttpClientError<reqwest::Error>,
                oauth2::basic::BasicRevocationErrorResponse,
            >,
        >,
        String,
    ) {
        let (url, sender) = Sender::for_endpoint(http, endpoint).unwrap();
        assert_eq!(url.url().scheme(), "https", "what the crate is given");
        let client =
            crate::oauth_client::new::<BasicTokenResponse>("c", None).set_revocation_url(url);
        let outcome = client
            .revoke_token(StandardRevocableToken::RefreshToken(RefreshToken::new(
                "rt".into(),
            )))
            .unwrap()
            .request_async(&sender)
            .await;
        (outcome, sender.last_status())
    }

    #[tokio::test]
    async fn a_plain_http_endpoint_is_reached_itself_and_any_2xx_is_a_revocation() {
        crate::crypto::install_tls_provider();
        let http = reqwest::Client::new();
        let (base, seen) = endpoint().await;
        let (outcome, status) = revoke_at(&http, &format!("{base}/gone")).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(status, "204 No Content");
        let (outcome, status) = revoke_at(&http, &format!("{base}/refuse")).await;
        assert!(
            matches!(&outcome, Err(RequestTokenError::ServerResponse(r)) if r.error().as_ref() == "invalid_request"),
            "{outcome:?}"
        );
        assert_eq!(status, "400 Bad Request");
        // Both reached the plain-http endpoint (the https spelling went nowhere).
        assert_eq!(*seen.lock().unwrap(), ["/gone", "/refuse"]);
    }
}
