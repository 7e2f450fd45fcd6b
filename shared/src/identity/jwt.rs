//! Verifying a JWT from a configured identity provider and turning it into a [`Principal`].
//!
//! The order matters: the unverified `iss` only selects a provider (nothing else is read before
//! the signature is checked); the header's `alg` must be one the provider is configured with,
//! so `none` and HMAC-with-the-public-key forgeries fail before any key is used; the key comes
//! from the provider's JWKS by `kid` among its signing keys (`use` absent or `sig`, `key_ops`
//! absent or holding `verify`) and must not name another algorithm; then signature, `iss`,
//! `aud`, `exp`, `nbf` and `iat` (60 s leeway each: a token issued in the future is refused),
//! the client the token was issued to (when the provider lists `allowed_client_ids`),
//! required scopes, and the email claim.

use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::providers::{FetchError, Providers};
use super::{AuthMethod, Principal};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 60;

/// Claims naming the OAuth client a token was issued to, in the order they are read: OIDC
/// `azp`, RFC 9068 `client_id`, Okta `cid`, Entra v1 `appid`. The first one present decides.
pub const CLIENT_ID_CLAIMS: [&str; 4] = ["azp", "client_id", "cid", "appid"];

/// Why a token was refused. Only [`JwtError::InsufficientScope`] reaches the caller as
/// something other than "invalid token"; the rest is for the log.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("no identity provider is configured for this issuer")]
    UnknownIssuer,
    #[error("algorithm not allowed for this identity provider")]
    Algorithm,
    #[error("no key with this kid in the identity provider's JWKS")]
    UnknownKey,
    #[error("identity provider keys unavailable")]
    Keys(#[from] FetchError),
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("token has no '{0}' claim")]
    MissingClaim(String),
    #[error("token lacks required scopes")]
    InsufficientScope { required: Vec<String> },
    #[error("token issued in the future (iat beyond the clock-skew leeway)")]
    IssuedInFuture,
    #[error("token issued to a client this identity provider does not allow")]
    ClientNotAllowed,
    #[error("identity providers could not be loaded")]
    Store(#[from] crate::store::StoreError),
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts). Gateway API keys
/// never are, so JWTs skip the store lookup and keys skip the JWT parsing.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("ey")
}

/// `local@domain`: one `@`, both sides non-empty, no whitespace or control characters, a
/// sane length, and not a name the gateway reserves for its own principals.
fn is_plain_email(v: &str) -> bool {
    let mut parts = v.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && v.len() <= 320
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && !v.starts_with(super::SERVICE_PREFIX)
}

fn unverified_claims(token: &str) -> Result<Map<String, Value>, JwtError> {
    let payload = token.split('.').nth(1).ok_or(JwtError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// `iat`, when present, is a NumericDate no later than `now` plus the leeway: a token from
/// the future was minted with a skewed or hostile clock, and would outlive what its issuer
/// meant once its `exp` is read relative to it.
fn check_issued_at(claims: &Map<String, Value>, now: u64) -> Result<(), JwtError> {
    match claims.get("iat") {
        None => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(iat) if iat <= now.saturating_add(LEEWAY_SECONDS) as f64 => Ok(()),
            Some(_) => Err(JwtError::IssuedInFuture),
            None => Err(JwtError::Rejected("iat is not a NumericDate".into())),
        },
        Some(_) => Err(JwtError::Rejected("iat is not a NumericDate".into())),
    }
}

/// With `allowed` set, the client the token names ([`CLIENT_ID_CLAIMS`], the first present)
/// must be one of them. `azp` present decides alone: a token whose `azp` is some other
/// client is refused even if its `client_id` is listed. No such claim at all: refused.
fn check_client(claims: &Map<String, Value>, allowed: &[String]) -> Result<(), JwtError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let named = CLIENT_ID_CLAIMS.iter().find_map(|c| claims.get(*c));
    match named {
        Some(Value::String(id)) if allowed.iter().any(|a| a == id) => Ok(()),
        Some(_) | None => Err(JwtError::ClientNotAllowed),
    }
}

/// Verifies `token` for a request whose acceptable audiences (besides each provider's own
/// aliases) are `audiences`.
pub async fn verify(
    providers: &Providers,
    http: &reqwest::Client,
    token: &str,
    audiences: &[String],
    admin_emails: &[String],
) -> Result<Principal, JwtError> {
    verify_as(
        providers,
        http,
        token,
        Expect::Access { audiences },
        admin_emails,
    )
    .await
}

/// What a token is checked for besides the provider's keys, issuer and claims.
#[derive(Clone, Copy)]
pub enum Expect<'a> {
    /// An access token for this gateway: `aud` one of `audiences` (or a provider alias), and
    /// the provider's required scopes.
    Access { audiences: &'a [String] },
    /// The ID token of a console sign-in at the provider `issuer`: `aud` is the console's
    /// client id (nothing else), `nonce` the one the sign-in sent. Scopes are an access
    /// token's business, not an ID token's.
    IdToken {
        issuer: &'a str,
        client_id: &'a str,
        nonce: &'a str,
    },
}

/// [`verify`] for what `expect` says.
pub async fn verify_as(
    providers: &Providers,
    http: &reqwest::Client,
    token: &str,
    expect: Expect<'_>,
    admin_emails: &[String],
) -> Result<Principal, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    let unverified = unverified_claims(token)?;
    let issuer = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(JwtError::UnknownIssuer)?;
    let all = providers.all().await?;
    let provider = all.get(issuer).ok_or(JwtError::UnknownIssuer)?;
    let config = &provider.config;
    if let Expect::IdToken { issuer: want, .. } = expect
        && want != config.issuer
    {
        return Err(JwtError::UnknownIssuer);
    }
    let allowed: Vec<Algorithm> = config
        .algorithms
        .iter()
        .filter_map(|a| Algorithm::from_str(a).ok())
        .collect();
    if !allowed.contains(&header.alg) {
        return Err(JwtError::Algorithm);
    }
    let jwk = provider
        .key(http, header.kid.as_deref())
        .await?
        .ok_or(JwtError::UnknownKey)?;
    // A key published for one algorithm verifies nothing else (RFC 7517 §4.4, RFC 8725 §3.1).
    if let Some(alg) = jwk.common.key_algorithm
        && Algorithm::try_from(alg).ok() != Some(header.alg)
    {
        return Err(JwtError::Algorithm);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| JwtError::Rejected(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_issuer(&[config.issuer.as_str()]);
    let accepted: Vec<&str> = match expect {
        Expect::Access { audiences } => audiences
            .iter()
            .chain(&config.audiences)
            .map(String::as_str)
            .collect(),
        Expect::IdToken { client_id, .. } => vec![client_id],
    };
    validation.set_audience(&accepted);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| JwtError::Rejected(format!("{:?}", e.kind())))?
        .claims;
    // jsonwebtoken reads `exp` and `nbf` on the same clock, but never `iat`.
    check_issued_at(&claims, jsonwebtoken::get_current_timestamp())?;
    match expect {
        Expect::Access { .. } => check_client(&claims, &config.allowed_client_ids)?,
        // OIDC Core 3.1.3.7: an ID token's `azp`, when present, is the client it was for.
        Expect::IdToken { client_id, .. } => match claims.get("azp") {
            None => {}
            Some(azp) if azp.as_str() == Some(client_id) => {}
            Some(_) => return Err(JwtError::ClientNotAllowed),
        },
    }

    if let Expect::IdToken { nonce, .. } = expect {
        let got = claims
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !crate::crypto::constant_time_eq(got.as_bytes(), nonce.as_bytes()) {
            return Err(JwtError::Rejected(
                "the ID token's nonce is not this sign-in's".into(),
            ));
        }
    }
    if matches!(expect, Expect::Access { .. }) && !config.required_scopes.is_empty() {
        let mut granted = strings(claims.get("scope"));
        granted.extend(strings(claims.get("scp")));
        if !config.required_scopes.iter().all(|s| granted.contains(s)) {
            return Err(JwtError::InsufficientScope {
                required: config.required_scopes.clone(),
            });
        }
    }
    let email = claims
        .get(&config.email_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::MissingClaim(config.email_claim.clone()))?
        .to_lowercase();
    // The email becomes the principal everything is keyed by: it must be an email (never a
    // reserved principal such as `bootstrap-admin` or `service:...`), verified when the
    // provider says, and in the provider's domains when it has some.
    if !is_plain_email(&email) {
        return Err(JwtError::Rejected(
            "the email claim is not an email address".into(),
        ));
    }
    let unverified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("false"),
        _ => false,
    };
    if unverified {
        return Err(JwtError::Rejected("email_verified is false".into()));
    }
    if !config.email_domains.is_empty() {
        let domain = email.rsplit('@').next().unwrap_or_default();
        if !config
            .email_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return Err(JwtError::Rejected(
                "email domain not allowed for this provider".into(),
            ));
        }
    }
    let groups = strings(claims.get(&config.groups_claim));
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or(&email)
        .to_owned();
    let is_admin =
        admin_emails.contains(&email) || groups.iter().any(|g| config.admin_groups.contains(g));
    Ok(Principal {
        user: email.clone(),
        email: Some(email),
        subject,
        groups,
        is_admin,
        service_account: false,
        method: AuthMethod::Jwt {
            issuer: config.issuer.clone(),
            provider: config.name.clone(),
        },
        api_key_id: None,
    })
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::domain::IdentityProvider;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    struct Key {
        pkcs8: Vec<u8>,
        jwk: Value,
    }

    fn es256_key(kid: &str) -> Key {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty":"EC","crv":"P-256","kid":kid,"alg":"ES256","use":"sig",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
        Key {
            pkcs8: doc.as_ref().to_vec(),
            jwk,
        }
    }

    /// An identity provider: discovery document and JWKS on loopback, counting JWKS fetches.
    async fn idp(keys: Vec<Value>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, iss) = (hits.clone(), issuer.clone());
        let app =
            axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    axum::routing::get(move || {
                        let iss = iss.clone();
                        async move {
                            axum::Json(json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")}))
                        }
                    }),
                )
                .route(
                    "/jwks",
                    axum::routing::get(move || {
                        h.fetch_add(1, Ordering::SeqCst);
                        let keys = keys.clone();
                        async move { axum::Json(json!({ "keys": keys })) }
                    }),
                );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (issuer, hits)
    }

    fn provider(issuer: &str) -> IdentityProvider {
        serde_json::from_value(json!({"name":"corp","issuer":issuer,"algorithms":["ES256"],
            "admin_groups":["admins"]}))
        .unwrap()
    }

    fn providers(p: IdentityProvider) -> (Providers, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (
            Providers::new(Arc::new(store), Some(p), Duration::from_secs(60)),
            dir,
        )
    }

    use std::time::Duration;

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims(issuer: &str) -> Value {
        json!({"iss": issuer, "aud": "https://gw.example.com/mcp/docs", "sub": "u-1",
            "email": "Alice@Example.com", "groups": ["eng", "admins"],
            "exp": now() + 300, "iat": now(), "scope": "openid mcp:read"})
    }

    fn sign(key: &Key, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap()
    }

    async fn check(p: &Providers, token: &str) -> Result<Principal, JwtError> {
        let audiences = vec!["https://gw.example.com/mcp/docs".to_owned()];
        verify(p, &reqwest::Client::new(), token, &audiences, &[]).await
    }

    #[tokio::test]
    async fn valid_tokens_become_principals_and_every_forgery_fails() {
        crate::crypto::install_tls_provider();
        let key = es256_key("k1");
        let (issuer, hits) = idp(vec![key.jwk.clone()]).await;
        let (p, _dir) = providers(provider(&issuer));

        let ok = check(&p, &sign(&key, "k1", &claims(&issuer)))
            .await
            .unwrap();
        assert_eq!(ok.user, "alice@example.com");
        assert_eq!(ok.subject, "u-1");
        assert_eq!(ok.groups, vec!["eng", "admins"]);
        assert!(ok.is_admin, "member of an admin group");
        assert!(matches!(ok.method, AuthMethod::Jwt { ref provider, .. } if provider == "corp"));

        let reject = |mutate: &dyn Fn(&mut Value)| {
            let mut c = claims(&issuer);
            mutate(&mut c);
            sign(&key, "k1", &c)
        };
        let cases: Vec<(&str, String)> = vec![
            (
                "wrong issuer",
                reject(&|c| c["iss"] = "http://elsewhere.example".into()),
            ),
            (
                "wrong audience",
                reject(&|c| c["aud"] = "https://other.example/mcp/docs".into()),
            ),
            (
                "missing audience",
                reject(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
            ("expired", reject(&|c| c["exp"] = (now() - 3600).into())),
            (
                "not yet valid",
                reject(&|c| c["nbf"] = (now() + 3600).into()),
            ),
            (
                "no email",
                reject(&|c| {
                    c.as_object_mut().unwrap().remove("email");
                }),
            ),
            (
                "other key, same kid",
                sign(&es256_key("k1"), "k1", &claims(&issuer)),
            ),
        ];
        for (what, token) in cases {
            assert!(check(&p, &token).await.is_err(), "{what} was accepted");
        }
        // alg none: header and claims, no signature.
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            B64.encode(claims(&issuer).to_string())
        );
        assert!(check(&p, &none).await.is_err());
        // HS256 keyed with the public key: the algorithm is not one the provider allows.
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        let forged = jsonwebtoken::encode(
            &hs,
            &claims(&issuer),
            &EncodingKey::from_secret(key.jwk.to_string().as_bytes()),
        )
        .unwrap();
        assert!(matches!(check(&p, &forged).await, Err(JwtError::Algorithm)));
        assert_eq!(hits.load(Ordering::SeqCst), 1, "the JWKS is cached");
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        crate::crypto::install_tls_provider();
        let key = es256_key("k1");
        let (issuer, hits) = idp(vec![key.jwk.clone()]).await;
        let (p, _dir) = providers(provider(&issuer));
        for i in 0..20 {
            let token = sign(&key, &format!("made-up-{i}"), &claims(&issuer));
            assert!(matches!(check(&p, &token).await, Err(JwtError::UnknownKey)));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(p.all().await.unwrap()[&issuer].jwks_fetches(), 1);
    }

    #[tokio::test]
    async fn scopes_are_enforced_and_an_unreachable_idp_verifies_nothing() {
        crate::crypto::install_tls_provider();
        let key = es256_key("k1");
        let (issuer, _) = idp(vec![key.jwk.clone()]).await;
        let mut config = provider(&issuer);
        config.required_scopes = vec!["mcp:write".into()];
        let (p, _dir) = providers(config);
        let token = sign(&key, "k1", &claims(&issuer));
        assert!(matches!(
            check(&p, &token).await,
            Err(JwtError::InsufficientScope { .. })
        ));

        let mut config = provider(&issuer);
        config.email_domains = vec!["corp.example".into()];
        let (p, _dir2) = providers(config);
        assert!(
            matches!(check(&p, &token).await, Err(JwtError::Rejected(_))),
            "foreign domain"
        );
        let mut c = claims(&issuer);
        c["email"] = "bob@CORP.example".into();
        assert_eq!(
            check(&p, &sign(&key, "k1", &c)).await.unwrap().user,
            "bob@corp.example"
        );

        // Nothing listens on port 9: discovery fails, so does the token, promptly.
        let down = "http://127.0.0.1:9";
        let (p, _dir) = providers(provider(down));
        let started = std::time::Instant::now();
        let err = check(&p, &sign(&key, "k1", &claims(down)))
            .await
            .unwrap_err();
        assert!(matches!(err, JwtError::Keys(_)), "{err:?}");
        assert!(matches!(
            check(&p, &sign(&key, "k1", &claims(down))).await,
            Err(JwtError::Keys(FetchError::Backoff))
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// A JWKS endpoint that answers at once the first time and after `delay` from then on.
    async fn slow_after_first(keys: Vec<Value>, delay: Duration) -> String {
        let served = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (keys, served) = (keys.clone(), served.clone());
                async move {
                    if served.fetch_add(1, Ordering::SeqCst) > 0 {
                        tokio::time::sleep(delay).await;
                    }
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn a_refetch_for_an_unknown_kid_never_stalls_tokens_with_known_keys() {
        crate::crypto::install_tls_provider();
        let key = es256_key("k1");
        let (issuer, _) = idp(vec![]).await;
        let mut config = provider(&issuer);
        config.jwks_uri =
            Some(slow_after_first(vec![key.jwk.clone()], Duration::from_secs(3)).await);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let p = Arc::new(
            Providers::new(Arc::new(store), Some(config), Duration::from_secs(60))
                .with_refetch_interval(Duration::from_millis(200)),
        );
        let good = sign(&key, "k1", &claims(&issuer));
        check(&p, &good)
            .await
            .expect("the first use fetches the JWKS");
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Someone sends a made-up kid: a (slow) refetch starts.
        let (p2, forged) = (p.clone(), sign(&key, "made-up", &claims(&issuer)));
        let attacker = tokio::spawn(async move { check(&p2, &forged).await.is_err() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        check(&p, &good).await.unwrap();
        let waited = started.elapsed();
        assert!(attacker.await.unwrap());
        assert!(
            waited < Duration::from_secs(1),
            "a known key waited {waited:?} behind a refetch"
        );
    }

    /// A provider (ES256) serving `keys`, with `edit` applied to its configuration.
    async fn provider_with(
        keys: Vec<Value>,
        edit: impl FnOnce(&mut IdentityProvider),
    ) -> (Providers, tempfile::TempDir, String) {
        crate::crypto::install_tls_provider();
        let (issuer, _) = idp(keys).await;
        let mut config = provider(&issuer);
        edit(&mut config);
        let (p, dir) = providers(config);
        (p, dir, issuer)
    }

    #[tokio::test]
    async fn tokens_issued_in_the_future_are_refused() {
        let key = es256_key("k1");
        let (p, _dir, issuer) = provider_with(vec![key.jwk.clone()], |_| {}).await;
        let with_iat = |iat: Value| {
            let mut c = claims(&issuer);
            c["iat"] = iat;
            sign(&key, "k1", &c)
        };
        // Baseline: now, a minute ago, within the leeway ahead, and no iat at all.
        for ok in [
            json!(now()),
            json!(now() - 60),
            json!(now() + 30),
            json!(now() as f64 + 0.5),
        ] {
            assert!(check(&p, &with_iat(ok.clone())).await.is_ok(), "iat {ok}");
        }
        let mut c = claims(&issuer);
        c.as_object_mut().unwrap().remove("iat");
        assert!(check(&p, &sign(&key, "k1", &c)).await.is_ok(), "no iat");
        // Attack: minted to live longer than its exp says, or with a broken clock.
        for future in [now() + 120, now() + 3600, now() + 10 * 365 * 86_400] {
            assert!(
                matches!(
                    check(&p, &with_iat(json!(future))).await,
                    Err(JwtError::IssuedInFuture)
                ),
                "iat {future}"
            );
        }
        for junk in [json!("yesterday"), json!(null), json!([1]), json!(true)] {
            assert!(
                matches!(
                    check(&p, &with_iat(junk.clone())).await,
                    Err(JwtError::Rejected(_))
                ),
                "iat {junk}"
            );
        }
    }

    #[tokio::test]
    async fn only_keys_published_for_signature_verification_verify() {
        let key = es256_key("k1");
        let token = |c: &Value| sign(&key, "k1", c);
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut jwk = key.jwk.clone();
            edit(&mut jwk);
            jwk
        };
        let drop_use = |j: &mut Value| {
            j.as_object_mut().unwrap().remove("use");
        };
        let cases: Vec<(&str, Vec<Value>, bool)> = vec![
            ("use sig", vec![key.jwk.clone()], true),
            ("neither use nor key_ops", vec![with(&drop_use)], true),
            (
                "key_ops verify",
                vec![with(&|j| {
                    drop_use(j);
                    j["key_ops"] = json!(["verify"]);
                })],
                true,
            ),
            ("use enc", vec![with(&|j| j["use"] = "enc".into())], false),
            ("use other", vec![with(&|j| j["use"] = "SIG".into())], false),
            (
                "key_ops without verify",
                vec![with(&|j| {
                    drop_use(j);
                    j["key_ops"] = json!(["encrypt", "wrapKey"]);
                })],
                false,
            ),
            (
                "an encryption key under the kid, then the signing key",
                vec![with(&|j| j["use"] = "enc".into()), key.jwk.clone()],
                true,
            ),
            (
                "published for ES384",
                vec![with(&|j| j["alg"] = "ES384".into())],
                false,
            ),
        ];
        for (what, keys, accepted) in cases {
            let (p, _dir, issuer) = provider_with(keys, |_| {}).await;
            let got = check(&p, &token(&claims(&issuer))).await;
            assert_eq!(got.is_ok(), accepted, "{what}: {got:?}");
        }
        // A token without kid takes the only signing key, never an encryption key.
        let mut enc = es256_key("k2").jwk;
        enc["use"] = "enc".into();
        let (p, _dir, issuer) = provider_with(vec![enc, key.jwk.clone()], |_| {}).await;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = None;
        let no_kid = jsonwebtoken::encode(
            &header,
            &claims(&issuer),
            &EncodingKey::from_ec_der(&key.pkcs8),
        )
        .unwrap();
        assert!(check(&p, &no_kid).await.is_ok());
    }

    #[tokio::test]
    async fn allowed_client_ids_admit_only_listed_clients() {
        let key = es256_key("k1");
        let (p, _dir, issuer) = provider_with(vec![key.jwk.clone()], |c| {
            c.allowed_client_ids = vec!["mcp-cli".into(), "0oa-okta".into()];
        })
        .await;
        let token = |client: Value| {
            let mut c = claims(&issuer);
            for (k, v) in client.as_object().unwrap() {
                c[k] = v.clone();
            }
            sign(&key, "k1", &c)
        };
        for ok in [
            json!({"azp": "mcp-cli"}),
            json!({"client_id": "mcp-cli"}),
            json!({"cid": "0oa-okta"}),
            json!({"appid": "mcp-cli"}),
            json!({"azp": "mcp-cli", "client_id": "someone-else"}),
        ] {
            assert!(check(&p, &token(ok.clone())).await.is_ok(), "{ok}");
        }
        for bad in [
            json!({}),
            json!({"azp": "other-app"}),
            json!({"azp": "other-app", "client_id": "mcp-cli"}),
            json!({"client_id": "MCP-CLI"}),
            json!({"client_id": ["mcp-cli"]}),
            json!({"azp": null, "client_id": "mcp-cli"}),
            json!({"cid": "mcp-cli "}),
        ] {
            assert!(
                matches!(
                    check(&p, &token(bad.clone())).await,
                    Err(JwtError::ClientNotAllowed)
                ),
                "{bad}"
            );
        }
        // Without the list, the client is not looked at.
        let (open, _dir2, issuer2) = provider_with(vec![key.jwk.clone()], |_| {}).await;
        let mut c = claims(&issuer2);
        c["azp"] = "anyone".into();
        assert!(check(&open, &sign(&key, "k1", &c)).await.is_ok());
    }

    #[tokio::test]
    async fn an_id_token_for_another_authorized_party_is_refused() {
        let key = es256_key("k1");
        let (p, _dir, issuer) = provider_with(vec![key.jwk.clone()], |_| {}).await;
        let id_token = |azp: Option<&str>| {
            let mut c = claims(&issuer);
            c["aud"] = "console".into();
            c["nonce"] = "n-1".into();
            if let Some(a) = azp {
                c["azp"] = a.into();
            }
            sign(&key, "k1", &c)
        };
        let verify = |t: String| {
            let p = &p;
            let issuer = issuer.clone();
            async move {
                let expect = Expect::IdToken {
                    issuer: &issuer,
                    client_id: "console",
                    nonce: "n-1",
                };
                verify_as(p, &reqwest::Client::new(), &t, expect, &[]).await
            }
        };
        assert!(verify(id_token(None)).await.is_ok());
        assert!(verify(id_token(Some("console"))).await.is_ok());
        assert!(matches!(
            verify(id_token(Some("other"))).await,
            Err(JwtError::ClientNotAllowed)
        ));
    }

    #[test]
    fn emails() {
        assert!(is_plain_email("alice@example.com"));
        for bad in [
            "bootstrap-admin",
            "service:bot@x.com",
            "a@b",
            "@x.com",
            "a@x.com@y.com",
            "a b@x.com",
            "a@.com",
            "a@x.",
        ] {
            assert!(!is_plain_email(bad), "{bad}");
        }
    }

    #[test]
    fn shapes() {
        assert!(looks_like_jwt("eyJh.eyJi.sig"));
        assert!(!looks_like_jwt("mcpgw_abc"));
        assert!(!looks_like_jwt("eyJh.eyJi"));
        assert_eq!(strings(Some(&json!("a b"))), vec!["a", "b"]);
        assert_eq!(strings(Some(&json!(["a", 1, "b"]))), vec!["a", "b"]);
    }
}
