//! The gateway as an OAuth 2.0 client, through the `oauth2` crate. [`new`] is the one place
//! that says who the gateway is at an authorization server and how it proves it, whatever it
//! asks there: the code exchange, refresh and client-credentials token requests of
//! [`crate::grants`], the revocation of a disconnected grant (RFC 7009), and the console's
//! sign-in at an identity provider. So there is one credential encoding: with a secret, the
//! client id and the secret travel in HTTP Basic authentication, each form-urlencoded first
//! (RFC 6749 section 2.3.1, the crate's `AuthType::BasicAuth`), so an id or a secret holding
//! `:`, `+`, `%` or a space reaches the provider as it is; a public client (no secret) sends
//! its client id in the request body.
//!
//! The console's token request needs the answer's `id_token`, which the crate's standard
//! response type drops: [`OidcTokenResponse`] keeps it ([`IdTokenFields`]).
//!
//! Token requests are unit-tested below with a closure as the HTTP client (nothing is sent).

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, ExtraTokenFields, StandardRevocableToken,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

/// A client with no endpoint set yet, whose token endpoint answers `TR`.
pub type Client<TR> = oauth2::Client<
    BasicErrorResponse,
    TR,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
>;

/// The client `client_id` (confidential when it has `client_secret`); the caller sets the
/// endpoints it uses.
pub fn new<TR: TokenResponse>(client_id: &str, client_secret: Option<&str>) -> Client<TR> {
    // BasicAuth is the crate's default too; spelled out because it is the gateway's rule.
    let client =
        Client::<TR>::new(ClientId::new(client_id.to_owned())).set_auth_type(AuthType::BasicAuth);
    match client_secret {
        Some(s) => client.set_client_secret(ClientSecret::new(s.to_owned())),
        None => client,
    }
}

/// The OpenID Connect part of a token response (OIDC Core section 3.1.3.3): the ID token,
/// required. Never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    pub id_token: String,
}

impl std::fmt::Debug for IdTokenFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenFields").finish_non_exhaustive()
    }
}

impl ExtraTokenFields for IdTokenFields {}

/// An OpenID provider's token response: the standard fields and the ID token.
pub type OidcTokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use oauth2::basic::BasicTokenResponse;
    use oauth2::{
        AuthorizationCode, HttpRequest, HttpResponse, PkceCodeVerifier, RedirectUrl, RefreshToken,
        RevocationUrl, TokenUrl,
    };
    use std::sync::Mutex;

    /// An id and a secret with every character RFC 6749 section 2.3.1 makes a difference
    /// for: `:` (the Basic separator), `+` and `%` (form-encoding's own), a space, non-ASCII.
    const ID: &str = "gw:client+1 %41";
    const SECRET: &str = "s3:cr+t %zz/=ü";

    /// Runs `send` with a closure HTTP client answering `answer` (200); the request it got.
    async fn capture<F, Fut, E>(answer: &str, send: F) -> (HttpRequest, Result<(), String>)
    where
        F: FnOnce(
            Box<dyn Fn(HttpRequest) -> std::future::Ready<Result<HttpResponse, std::io::Error>>>,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let seen = std::sync::Arc::new(Mutex::new(None));
        let (s, body) = (seen.clone(), answer.as_bytes().to_vec());
        let http = Box::new(move |req: HttpRequest| {
            *s.lock().unwrap() = Some(req);
            std::future::ready(Ok(http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(body.clone())
                .unwrap()))
        });
        let outcome = send(http).await.map_err(|e| e.to_string());
        let req = seen.lock().unwrap().take().expect("a request was sent");
        (req, outcome)
    }

    /// The (id, secret) of a Basic header, decoded strictly by RFC 6749 section 2.3.1: each
    /// part may hold only what form-encoding produces, and is decoded back.
    fn basic(req: &HttpRequest) -> Option<(String, String)> {
        let h = req.headers().get("authorization")?.to_str().ok()?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.strip_prefix("Basic ")?)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (id, secret) = raw.split_once(':')?;
        let decode = |part: &str| {
            assert!(
                part.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "*-._+%".contains(c)),
                "{part} is not form-encoded"
            );
            url::form_urlencoded::parse(format!("v={part}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        Some((decode(id)?, decode(secret)?))
    }

    fn form(req: &HttpRequest) -> Vec<(String, String)> {
        url::form_urlencoded::parse(req.body())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    const TOKEN: &str = r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#;

    #[tokio::test]
    async fn a_confidential_client_sends_both_parts_form_encoded_in_basic() {
        let c = new::<BasicTokenResponse>(ID, Some(SECRET))
            .set_token_uri(TokenUrl::new("https://as.example.com/token".into()).unwrap());
        let (req, outcome) = capture(TOKEN, |http| async move {
            c.exchange_refresh_token(&RefreshToken::new("rt".into()))
                .request_async(&http)
                .await
                .map(|_| ())
        })
        .await;
        outcome.unwrap();
        assert_eq!(basic(&req), Some((ID.to_owned(), SECRET.to_owned())));
        let f = form(&req);
        assert!(
            f.iter()
                .all(|(k, _)| k != "client_id" && k != "client_secret"),
            "{f:?}"
        );
    }

    #[tokio::test]
    async fn a_public_client_names_itself_in_the_body() {
        let c = new::<BasicTokenResponse>(ID, None)
            .set_token_uri(TokenUrl::new("https://as.example.com/token".into()).unwrap());
        let (req, outcome) = capture(TOKEN, |http| async move {
            c.exchange_client_credentials()
                .request_async(&http)
                .await
                .map(|_| ())
        })
        .await;
        outcome.unwrap();
        assert!(req.headers().get("authorization").is_none());
        assert!(form(&req).contains(&("client_id".to_owned(), ID.to_owned())));
    }

    #[tokio::test]
    async fn revocation_uses_the_same_encoding() {
        let c = new::<BasicTokenResponse>(ID, Some(SECRET)).set_revocation_url(
            RevocationUrl::new("https://as.example.com/revoke".into()).unwrap(),
        );
        let (req, outcome) = capture("", |http| async move {
            c.revoke_token(StandardRevocableToken::RefreshToken(RefreshToken::new(
                "rt".into(),
            )))
            .unwrap()
            .request_async(&http)
            .await
        })
        .await;
        outcome.unwrap();
        assert_eq!(basic(&req), Some((ID.to_owned(), SECRET.to_owned())));
        let f = form(&req);
        assert!(f.contains(&("token".to_owned(), "rt".to_owned())), "{f:?}");
        assert!(
            f.contains(&("token_type_hint".to_owned(), "refresh_token".to_owned())),
            "{f:?}"
        );
    }

    #[tokio::test]
    async fn an_oidc_token_response_keeps_the_id_token_and_needs_one() {
        let c = new::<OidcTokenResponse>(ID, Some(SECRET))
            .set_token_uri(TokenUrl::new("https://idp.example.com/token".into()).unwrap())
            .set_redirect_uri(
                RedirectUrl::new("https://gw.example.com/console/callback".into()).unwrap(),
            );
        let exchange = |answer: &'static str| {
            let c = c.clone();
            async move {
                let got = std::sync::Arc::new(Mutex::new(None));
                let g = got.clone();
                let (req, outcome) = capture(answer, |http| async move {
                    let r = c
                        .exchange_code(AuthorizationCode::new("code".into()))
                        .set_pkce_verifier(PkceCodeVerifier::new("v".repeat(43)))
                        .request_async(&http)
                        .await;
                    r.map(|r| *g.lock().unwrap() = Some(r))
                })
                .await;
                let r = got.lock().unwrap().take();
                (req, outcome, r)
            }
        };
        let (req, outcome, r) = exchange(
            r#"{"access_token":"at","token_type":"Bearer","id_token":"header.claims.sig"}"#,
        )
        .await;
        outcome.unwrap();
        let r = r.unwrap();
        assert_eq!(r.extra_fields().id_token, "header.claims.sig");
        assert!(!format!("{r:?}").contains("header.claims.sig"), "{r:?}");
        assert_eq!(basic(&req), Some((ID.to_owned(), SECRET.to_owned())));
        let f = form(&req);
        assert!(
            f.contains(&(
                "redirect_uri".to_owned(),
                "https://gw.example.com/console/callback".to_owned()
            )),
            "{f:?}"
        );
        assert!(f.contains(&("code_verifier".to_owned(), "v".repeat(43))));
        // Without an ID token the answer is refused, not read as a sign-in without one.
        let (_, outcome, r) = exchange(TOKEN).await;
        assert!(outcome.is_err() && r.is_none(), "{outcome:?}");
    }
}
