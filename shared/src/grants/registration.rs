//! The gateway's OAuth client at an authorization server: configured (`client_id` and a
//! secret reference on the server), or, when no client id is configured, registered by the
//! gateway itself with dynamic client registration (RFC 7591) once per issuer and kept in the
//! store (config kind `ClientRegistration`, secrets sealed with the keyring).
//!
//! The callback is per server (`/oauth/callback/{server}`), so one client serves several
//! servers only if it lists each server's redirect URI:
//! - the first registration for an issuer lists the redirect URIs of every server that
//!   needs one from that issuer;
//! - a server added later is added to that client with RFC 7592 (client configuration
//!   endpoint) when the server offers it, so the client id never changes;
//! - otherwise that server gets a client of its own (`{issuer}#{server}`), looked up first,
//!   so grants issued to it keep refreshing with the client they were issued to.
//!
//! Concurrent first registrations (two processes, two users) both register at the provider,
//! but only the first write is kept (create-if-absent); the loser uses the winner's client.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Grants;
use super::endpoints::{self, Endpoints};
use super::{GrantError, ring};
use crate::domain::{McpServer, UpstreamAuth};
use crate::store::{ConfigKind, ConfigStoreExt, StoreError, to_doc};

const MAX_ANSWER: usize = 64 * 1024;
/// The name the gateway registers under (shown on the provider's consent screens).
const CLIENT_NAME: &str = "MCP Gateway";

/// Who the gateway is at a provider, secret included (never logged: no `Debug`).
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Option<String>,
}

/// A stored registration. The secret and the registration access token are sealed.
#[derive(Serialize, Deserialize, Clone)]
struct Registration {
    issuer: String,
    client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_secret: Option<String>,
    /// `client_secret_expires_at` (RFC 7591): 0 or absent means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_expires_at: Option<i64>,
    redirect_uris: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    token_endpoint_auth_method: String,
    /// RFC 7592 client configuration endpoint and its token, when the provider offers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    configuration_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_configuration_token: Option<String>,
    registered_at: i64,
}

/// What a registration or configuration endpoint answers (RFC 7591 section 3.2.1).
#[derive(Deserialize)]
struct Answer {
    client_id: String,
    client_secret: Option<String>,
    client_secret_expires_at: Option<i64>,
    registration_access_token: Option<String>,
    registration_client_uri: Option<String>,
    token_endpoint_auth_method: Option<String>,
}

/// The client for `server` at the authorization server `e`.
pub async fn credentials(
    grants: &Grants,
    server: &McpServer,
    e: &Endpoints,
) -> Result<ClientCredentials, GrantError> {
    let UpstreamAuth::OAuth2 {
        client_id,
        client_secret,
        ..
    } = &server.auth
    else {
        return Err(GrantError::NotOAuth);
    };
    let Some(client_id) = client_id else {
        return registered(grants, server, e).await;
    };
    let client_secret = match client_secret {
        Some(reference) => {
            if !grants.secret_scope.permits(reference) {
                return Err(GrantError::Secret(format!("{reference} is out of scope")));
            }
            let secret = grants
                .secrets
                .resolve(reference)
                .await
                .map_err(|e| GrantError::Secret(crate::http::error_chain(&e)))?;
            Some(secret.expose().to_owned())
        }
        None => None,
    };
    Ok(ClientCredentials {
        client_id: client_id.clone(),
        client_secret,
    })
}

/// Whether the gateway registers its own client for `server`.
pub fn self_registering(server: &McpServer) -> bool {
    matches!(
        server.auth,
        UpstreamAuth::OAuth2 {
            client_id: None,
            ..
        }
    )
}

fn issuer_of(e: &Endpoints) -> String {
    e.issuer.clone().unwrap_or_else(|| e.token.clone())
}

fn context(key: &str, what: &str) -> Vec<u8> {
    format!("client-registration:{what}:{key}").into_bytes()
}

async fn load(grants: &Grants, key: &str) -> Result<Option<Registration>, GrantError> {
    Ok(grants
        .store
        .get_typed(ConfigKind::ClientRegistration, key)
        .await?)
}

fn usable(r: &Registration, redirect: &str, now: i64) -> bool {
    r.redirect_uris.iter().any(|u| u == redirect)
        && r.secret_expires_at.is_none_or(|at| at == 0 || at > now)
}

async fn registered(
    grants: &Grants,
    server: &McpServer,
    e: &Endpoints,
) -> Result<ClientCredentials, GrantError> {
    let issuer = issuer_of(e);
    let redirect = super::flow::redirect_uri(grants, &server.name);
    let own_key = format!("{issuer}#{}", server.name);
    let now = grants.clock.now();
    // A few rounds: a concurrent registration or update makes us read again.
    for _ in 0..3 {
        let shared = load(grants, &issuer).await?;
        if let Some(r) = &shared
            && usable(r, &redirect, now)
        {
            return open(grants, &issuer, r).await;
        }
        // A client of this server's own, made when the shared one could not take it.
        if let Some(r) = load(grants, &own_key).await?
            && usable(&r, &redirect, now)
        {
            return open(grants, &own_key, &r).await;
        }
        match shared {
            None => {
                let (uris, scopes) = peers_of(grants, server, &issuer, &redirect).await;
                if let Some(r) = register(grants, e, &issuer, uris, scopes, None).await? {
                    return open(grants, &issuer, &r).await;
                }
            }
            Some(r) if r.configuration_uri.is_some() && r.redirect_uris.len() < 100 => {
                match update(grants, &issuer, &r, &redirect, server).await {
                    Ok(Some(r)) => return open(grants, &issuer, &r).await,
                    Ok(None) => continue,
                    Err(err) => {
                        // The provider would not change the client: give this server its own.
                        tracing::warn!(issuer = %issuer, server = %server.name, error = %err,
                            "could not add a redirect URI to the registered client");
                        let scopes = server_scopes(server);
                        let key = own_key.clone();
                        let prior = load(grants, &key).await?;
                        if let Some(r) =
                            register(grants, e, &key, vec![redirect.clone()], scopes, prior).await?
                        {
                            return open(grants, &key, &r).await;
                        }
                    }
                }
            }
            Some(_) => {
                let prior = load(grants, &own_key).await?;
                let scopes = server_scopes(server);
                if let Some(r) =
                    register(grants, e, &own_key, vec![redirect.clone()], scopes, prior).await?
                {
                    return open(grants, &own_key, &r).await;
                }
            }
        }
    }
    Err(GrantError::Upstream(
        "the client registration kept changing while it was saved".into(),
    ))
}

fn server_scopes(server: &McpServer) -> Vec<String> {
    match &server.auth {
        UpstreamAuth::OAuth2 { scopes, .. } => scopes.clone(),
        _ => Vec::new(),
    }
}

/// The redirect URIs and scopes of every self-registering server of `issuer` (this one
/// included), so one registration serves them all.
async fn peers_of(
    grants: &Grants,
    server: &McpServer,
    issuer: &str,
    redirect: &str,
) -> (Vec<String>, Vec<String>) {
    let mut uris = vec![redirect.to_owned()];
    let mut scopes = server_scopes(server);
    let others: Vec<McpServer> = grants
        .store
        .list_typed(ConfigKind::Server)
        .await
        .unwrap_or_default();
    for other in others {
        if other.name == server.name || !self_registering(&other) {
            continue;
        }
        // Only endpoints already pinned (no network); a server pinned later is added with
        // RFC 7592, or gets its own client, when it connects.
        if let Some(Ok(found)) = endpoints::stored(&grants.egress, &other)
            && issuer_of(&found) == issuer
        {
            uris.push(super::flow::redirect_uri(grants, &other.name));
            scopes.extend(server_scopes(&other));
        }
    }
    uris.sort();
    uris.dedup();
    scopes.sort();
    scopes.dedup();
    (uris, scopes)
}

fn auth_method(e: &Endpoints) -> Result<&'static str, GrantError> {
    // RFC 8414: absent means client_secret_basic. A confidential client is preferred (the
    // gateway can keep a secret); a public one (PKCE only) where that is all there is.
    let supported = &e.auth_methods;
    if supported.is_empty() || supported.iter().any(|m| m == "client_secret_basic") {
        Ok("client_secret_basic")
    } else if supported.iter().any(|m| m == "none") {
        Ok("none")
    } else {
        Err(GrantError::Discovery(
            "the authorization server supports neither client_secret_basic nor public clients"
                .into(),
        ))
    }
}

fn metadata(uris: &[String], scopes: &[String], method: &str) -> Value {
    let mut m = json!({
        "client_name": CLIENT_NAME,
        "redirect_uris": uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    });
    if !scopes.is_empty() {
        m["scope"] = json!(scopes.join(" "));
    }
    m
}

/// Registers a client under `key` (replacing `prior`, an unusable one, when given). `None`
/// when another writer stored one first: read again.
async fn register(
    grants: &Grants,
    e: &Endpoints,
    key: &str,
    uris: Vec<String>,
    scopes: Vec<String>,
    prior: Option<Registration>,
) -> Result<Option<Registration>, GrantError> {
    let Some(endpoint) = &e.registration else {
        return Err(GrantError::Discovery(
            "no client_id is configured and the authorization server offers no dynamic client \
             registration (RFC 7591): register a client there and set auth.client_id"
                .into(),
        ));
    };
    let method = auth_method(e)?;
    let answer = send(
        grants
            .oauth_http
            .post(endpoint)
            .json(&metadata(&uris, &scopes, method)),
        endpoint,
    )
    .await?;
    let record = seal(grants, key, &issuer_of(e), answer, uris, scopes, method).await?;
    let doc = to_doc(&record);
    let written = match prior {
        None => grants
            .store
            .create_config(ConfigKind::ClientRegistration, key, &doc)
            .await
            .map(|_| true)
            .or_else(|e| match e {
                StoreError::AlreadyExists { .. } => Ok(false),
                e => Err(e),
            })?,
        Some(_) => {
            grants
                .store
                .replace_config(ConfigKind::ClientRegistration, key, &doc)
                .await?;
            true
        }
    };
    if written {
        tracing::info!(issuer = %record.issuer, client_id = %record.client_id,
            "registered the gateway's OAuth client (RFC 7591)");
        Ok(Some(record))
    } else {
        Ok(None)
    }
}

/// Adds `redirect` (and the server's scopes) to the registered client with RFC 7592.
/// `None` when the stored registration changed meanwhile: read again.
async fn update(
    grants: &Grants,
    key: &str,
    r: &Registration,
    redirect: &str,
    server: &McpServer,
) -> Result<Option<Registration>, GrantError> {
    let (Some(uri), Some(sealed_token)) = (&r.configuration_uri, &r.sealed_configuration_token)
    else {
        return Err(GrantError::Upstream(
            "no client configuration endpoint".into(),
        ));
    };
    let ring = ring(grants).await?;
    let token = unseal(&ring, sealed_token, key, "configuration-token")?;
    let mut uris = r.redirect_uris.clone();
    uris.push(redirect.to_owned());
    let mut scopes = r.scopes.clone();
    scopes.extend(server_scopes(server));
    scopes.sort();
    scopes.dedup();
    // RFC 7592 section 2.2: the full metadata, the client id, and the secret if any.
    let mut body = metadata(&uris, &scopes, &r.token_endpoint_auth_method);
    body["client_id"] = json!(r.client_id);
    if let Some(s) = &r.sealed_secret {
        body["client_secret"] = json!(unseal(&ring, s, key, "secret")?);
    }
    let answer = send(
        grants.oauth_http.put(uri).bearer_auth(&token).json(&body),
        uri,
    )
    .await?;
    if answer.client_id != r.client_id {
        return Err(GrantError::Upstream(
            "the configuration endpoint changed the client id".into(),
        ));
    }
    let mut answer = answer;
    // Neither the secret nor the configuration token need to be sent back (7592 section 3).
    if answer.client_secret.is_none()
        && let Some(s) = &r.sealed_secret
    {
        answer.client_secret = Some(unseal(&ring, s, key, "secret")?);
    }
    if answer.registration_access_token.is_none() {
        answer.registration_access_token = Some(token);
    }
    if answer.registration_client_uri.is_none() {
        answer.registration_client_uri = Some(uri.clone());
    }
    let record = seal(
        grants,
        key,
        &r.issuer,
        answer,
        uris,
        scopes,
        &r.token_endpoint_auth_method,
    )
    .await?;
    // Last writer wins: a concurrent update for another server may be lost, and is made
    // again when that server's next connect finds its redirect URI missing.
    match grants
        .store
        .replace_config(ConfigKind::ClientRegistration, key, &to_doc(&record))
        .await
    {
        Ok(()) => Ok(Some(record)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn send(req: reqwest::RequestBuilder, url: &str) -> Result<Answer, GrantError> {
    let resp = req
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| GrantError::Network(format!("{url}: {}", crate::http::error_chain(&e))))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| GrantError::Network(format!("{url}: {e}")))?;
    if bytes.len() > MAX_ANSWER {
        return Err(GrantError::Upstream(format!("{url}: answer too large")));
    }
    if !status.is_success() {
        // The provider's error code only: its description could echo what we sent.
        let code = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        return Err(GrantError::Upstream(format!(
            "client registration refused: {code}"
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| GrantError::Upstream(format!("client registration answer: {e}")))
}

async fn seal(
    grants: &Grants,
    key: &str,
    issuer: &str,
    a: Answer,
    uris: Vec<String>,
    scopes: Vec<String>,
    method: &str,
) -> Result<Registration, GrantError> {
    let ring = ring(grants).await?;
    let sealed = |plain: &str, what: &str| -> Result<String, GrantError> {
        Ok(URL_SAFE_NO_PAD.encode(ring.seal(plain.as_bytes(), &context(key, what))?))
    };
    let method = a.token_endpoint_auth_method.as_deref().unwrap_or(method);
    if method != "none" && a.client_secret.is_none() {
        return Err(GrantError::Upstream(
            "the provider registered a confidential client but returned no secret".into(),
        ));
    }
    Ok(Registration {
        issuer: issuer.to_owned(),
        client_id: a.client_id,
        sealed_secret: a
            .client_secret
            .as_deref()
            .map(|s| sealed(s, "secret"))
            .transpose()?,
        secret_expires_at: a.client_secret_expires_at,
        redirect_uris: uris,
        scopes,
        token_endpoint_auth_method: method.to_owned(),
        configuration_uri: a.registration_client_uri,
        sealed_configuration_token: a
            .registration_access_token
            .as_deref()
            .map(|t| sealed(t, "configuration-token"))
            .transpose()?,
        registered_at: grants.clock.now(),
    })
}

fn unseal(
    ring: &crate::crypto::Keyring,
    sealed: &str,
    key: &str,
    what: &str,
) -> Result<String, GrantError> {
    let blob = URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| GrantError::Sealed(crate::crypto::KeyringError::Malformed))?;
    let plain = ring.open(&blob, &context(key, what))?;
    String::from_utf8(plain).map_err(|_| GrantError::Sealed(crate::crypto::KeyringError::Malformed))
}

async fn open(
    grants: &Grants,
    key: &str,
    r: &Registration,
) -> Result<ClientCredentials, GrantError> {
    let ring = ring(grants).await?;
    Ok(ClientCredentials {
        client_id: r.client_id.clone(),
        client_secret: r
            .sealed_secret
            .as_deref()
            .map(|s| unseal(&ring, s, key, "secret"))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(methods: &[&str]) -> Endpoints {
        Endpoints {
            authorization: "https://as/authorize".into(),
            token: "https://as/token".into(),
            revocation: None,
            issuer: Some("https://as".into()),
            registration: Some("https://as/reg".into()),
            auth_methods: methods.iter().map(|m| m.to_string()).collect(),
            iss_parameter_supported: false,
        }
    }

    #[test]
    fn a_confidential_client_is_preferred_and_a_public_one_taken_when_that_is_all() {
        assert_eq!(auth_method(&endpoints(&[])).unwrap(), "client_secret_basic");
        assert_eq!(
            auth_method(&endpoints(&["none", "client_secret_basic"])).unwrap(),
            "client_secret_basic"
        );
        assert_eq!(auth_method(&endpoints(&["none"])).unwrap(), "none");
        assert!(auth_method(&endpoints(&["private_key_jwt"])).is_err());
    }

    #[test]
    fn a_registration_serves_only_its_redirect_uris_until_its_secret_expires() {
        let r = Registration {
            issuer: "https://as".into(),
            client_id: "c".into(),
            sealed_secret: None,
            secret_expires_at: Some(100),
            redirect_uris: vec!["https://gw/oauth/callback/a".into()],
            scopes: vec![],
            token_endpoint_auth_method: "none".into(),
            configuration_uri: None,
            sealed_configuration_token: None,
            registered_at: 0,
        };
        assert!(usable(&r, "https://gw/oauth/callback/a", 99));
        assert!(!usable(&r, "https://gw/oauth/callback/a", 100));
        assert!(!usable(&r, "https://gw/oauth/callback/b", 99));
        let forever = Registration {
            secret_expires_at: Some(0),
            ..r
        };
        assert!(usable(&forever, "https://gw/oauth/callback/a", i64::MAX));
    }
}
