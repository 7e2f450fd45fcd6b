//! What a JWT may make of itself: never a reserved principal (`bootstrap-admin`,
//! `service:...`), never an identity from an email its provider marks unverified. Found by a
//! security review; each test failed before its fix.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const PUBLIC: &str = "https://gw.example.com";

struct Idp {
    issuer: String,
    pkcs8: Vec<u8>,
}

/// An identity provider on loopback: discovery document and a one-key JWKS (ES256, kid k1).
async fn idp() -> Idp {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let jwk = json!({"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let iss = issuer.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let iss = iss.clone();
                async move { axum::Json(json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                let jwk = jwk.clone();
                async move { axum::Json(json!({ "keys": [jwk] })) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Idp {
        issuer,
        pkcs8: doc.as_ref().to_vec(),
    }
}

impl Idp {
    fn token(&self, extra: Value) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({"iss": self.issuer, "aud": PUBLIC, "sub": "u-1",
            "exp": now + 300, "iat": now});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn state(
    idp: &Idp,
) -> (
    mcpgw::state::AppState,
    mcpgw::testing::tempfile_guard::TempDir,
) {
    mcpgw::testing::local_state(
        &[],
        &[
            ("MCPGW_PUBLIC_URL", PUBLIC),
            ("MCPGW_IDP_ISSUER", &idp.issuer),
            ("MCPGW_IDP_ALGORITHMS", "ES256"),
            ("MCPGW_ADMIN_EMAILS", "root@example.com"),
        ],
    )
}

/// The email claim becomes `Principal::user`, the name every key, session and (later) grant
/// is keyed by, with no check that it is an email. A token whose claim says
/// `bootstrap-admin` or `service:<name>` becomes that principal: through `/me/api-keys` it
/// lists and deletes the bootstrap admin's or a service account's keys (local mode's
/// generated admin key has id `bootstrap`), and mints keys that act as the service account.
/// Plausible wherever `email_claim` points at a user-chosen value (`preferred_username`,
/// `upn`, a self-service profile field).
#[tokio::test]
async fn a_jwt_cannot_claim_a_reserved_principal_name() {
    let idp = idp().await;
    let (state, _guard) = state(&idp);
    // The bootstrap admin's own key, as local mode or POST /me/api-keys by the admin makes it.
    mcpgw::identity::ensure_generated_bootstrap_key(state.store.as_ref(), 0)
        .await
        .unwrap();

    for claimed in ["bootstrap-admin", "service:build-bot"] {
        let token = idp.token(json!({ "email": claimed }));
        match state.auth.authenticate(&bearer(&token)).await {
            Err(_) => {}
            Ok(p) => {
                let visible = state.store.list_api_keys_for_owner(&p.user).await.unwrap();
                panic!(
                    "a JWT claiming {claimed:?} authenticated as user {:?}; /me/api-keys would show it {} key(s): {:?}",
                    p.user,
                    visible.len(),
                    visible.iter().map(|k| &k.id).collect::<Vec<_>>()
                );
            }
        }
    }
}

/// `email_verified: false` is accepted, and the email then matches `MCPGW_ADMIN_EMAILS` and
/// every key that owner holds. Many IdPs (Auth0/Okta social connections, Keycloak with
/// self-registration, multi-tenant Entra) let a user put any address in `email` unverified.
#[tokio::test]
async fn an_unverified_email_is_not_an_identity() {
    let idp = idp().await;
    let (state, _guard) = state(&idp);
    let token = idp.token(json!({"email": "root@example.com", "email_verified": false}));
    let got = state.auth.authenticate(&bearer(&token)).await;
    assert!(
        got.is_err(),
        "a token with email_verified=false authenticated as {:?}",
        got.map(|p| (p.user, p.is_admin))
    );
}
