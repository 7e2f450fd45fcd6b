//! The egress policy through the real proxy: records written straight to the store (around
//! the admin API's registration check) that point an upstream, an OAuth token endpoint, an
//! authorization server's metadata or an identity provider's JWKS at a denied address fail
//! closed, and a counting listener at that address sees no connection at all; the same
//! records at an allowed address are contacted (baseline).

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use common::*;
use mcpgw::http::ErrorCause;
use mcpgw::store::ConfigKind;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// The address every test denies with `MCPGW_EGRESS_DENY`: loopback like the gateway's real
/// upstreams, so only the policy tells them apart.
const DENIED_IP: &str = "127.0.0.2";

/// A listener counting the connections it accepts; answers 404 to anything.
struct Counter {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Counter {
    async fn on(ip: &str) -> Self {
        let l = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::<AtomicUsize>::default();
        let seen = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        Self { addr, accepted }
    }

    /// Connections accepted, after giving the accept loop time to count any that were made.
    async fn accepted(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A gateway denying [`DENIED_IP`], with `servers` (name, document) written to the store
/// directly and one group admitting everyone to them.
async fn gateway_with_records(servers: &[(&str, Value)]) -> Gateway {
    let gw = gateway(&[("MCPGW_EGRESS_DENY", DENIED_IP)], &[]).await;
    for (name, doc) in servers {
        let mut doc = doc.clone();
        doc["name"] = json!(name);
        doc["created_at"] = json!(0);
        doc["updated_at"] = json!(0);
        gw.state
            .store
            .create_config(ConfigKind::Server, name, &doc)
            .await
            .unwrap();
    }
    if servers.is_empty() {
        return gw;
    }
    let names: Vec<&str> = servers.iter().map(|(n, _)| *n).collect();
    let admin = admin_api::app(gw.state.clone());
    let group = json!({"name": "everyone", "servers": names, "members": {"everyone": true}});
    let req = axum::http::Request::post("/admin/server-groups")
        .header(
            "authorization",
            format!("Bearer {}", mcpgw::testing::TEST_ADMIN_KEY),
        )
        .header("content-type", "application/json")
        .body(Body::from(group.to_string()))
        .unwrap();
    let resp = send(&admin, req).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    gw
}

/// An `initialize` to `endpoint`: (status, body, the cause kept for the log).
async fn initialize(gw: &Gateway, endpoint: &str) -> (u16, Value, String) {
    let req = mcp_request(Method::POST, endpoint, Some(&gw.alice))
        .body(Body::from(init_message(1).to_string()))
        .unwrap();
    let resp = gw.app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let cause = resp
        .extensions()
        .get::<ErrorCause>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap(), cause)
}

#[tokio::test]
async fn a_stored_upstream_at_a_denied_address_fails_closed_and_says_why_in_the_log() {
    let up = Upstream::start(Speaks::Sessions).await;
    let trap = Counter::on(DENIED_IP).await;
    // The upstreams' own credential, so that only the address differs between the records.
    let auth = json!({"type": "header", "headers": {"X-Api-Key": "secret://up-key"}});
    let gw = gateway_with_records(&[
        ("good", json!({"url": up.url, "auth": auth})),
        (
            "evil",
            json!({"url": format!("http://{}/mcp", trap.addr), "auth": auth}),
        ),
        (
            "mapped",
            json!({"url": format!("http://[::ffff:{DENIED_IP}]:{}/mcp", trap.addr.port()),
                   "auth": auth}),
        ),
        (
            "imds",
            json!({"url": "http://[::ffff:a9fe:a9fe]/latest/meta-data/", "auth": auth}),
        ),
    ])
    .await;
    // Baseline: the allowed upstream answers.
    let (s, body, _) = initialize(&gw, "good").await;
    assert_eq!(s, 200, "{body}");
    // Attack: every denied record is the generic upstream error to the client, with the
    // egress rule in the log's cause only.
    for (endpoint, rule) in [
        ("evil", "127.0.0.2/32 is in MCPGW_EGRESS_DENY"),
        ("mapped", "127.0.0.2/32 is in MCPGW_EGRESS_DENY"),
        ("imds", "cloud metadata addresses are always denied"),
    ] {
        let (s, body, cause) = initialize(&gw, endpoint).await;
        assert_eq!(
            (s, body["error"]["code"].clone(), body["id"].clone()),
            (502, json!(-32010), json!(1)),
            "{endpoint}: {body}"
        );
        assert_eq!(body["error"]["data"]["reason"], "upstream_unavailable");
        assert!(!body.to_string().contains("egress"), "{body}");
        assert!(
            cause.contains("refused by the egress policy") && cause.contains(rule),
            "{endpoint}: {cause}"
        );
    }
    assert_eq!(
        trap.accepted().await,
        0,
        "the denied address was never contacted"
    );
}

#[tokio::test]
async fn oauth_token_and_discovery_endpoints_at_a_denied_address_are_never_contacted() {
    let up = Upstream::start(Speaks::Sessions).await;
    let trap = Counter::on(DENIED_IP).await;
    let open = Counter::on("127.0.0.1").await;
    let machine = |token_url: Option<String>, issuer: Option<String>| {
        let mut auth = json!({"type": "oauth2_client_credentials", "client_id": "gw",
                              "client_secret": "secret://up-key"});
        if let Some(t) = token_url {
            auth["token_url"] = json!(t);
        }
        if let Some(i) = issuer {
            auth["issuer"] = json!(i);
        }
        json!({"url": up.url, "auth": auth})
    };
    let gw = gateway_with_records(&[
        (
            "token-denied",
            machine(Some(format!("http://{}/token", trap.addr)), None),
        ),
        (
            "discovery-denied",
            machine(None, Some(format!("http://{}", trap.addr))),
        ),
        (
            "token-open",
            machine(Some(format!("http://{}/token", open.addr)), None),
        ),
        (
            "discovery-open",
            machine(None, Some(format!("http://{}", open.addr))),
        ),
    ])
    .await;
    for endpoint in ["token-denied", "discovery-denied"] {
        let (s, body, _) = initialize(&gw, endpoint).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (502, Some("upstream_credential_unavailable")),
            "{endpoint}: {body}"
        );
    }
    assert_eq!(trap.accepted().await, 0, "the client secret went nowhere");
    // Baseline: the same records at an allowed address are contacted (and fail there, as the
    // listener is no authorization server).
    for endpoint in ["token-open", "discovery-open"] {
        let before = open.accepted().await;
        let (s, _, _) = initialize(&gw, endpoint).await;
        assert_eq!(s, 502, "{endpoint}");
        assert!(open.accepted().await > before, "{endpoint} was contacted");
    }
}

/// A JWT naming `iss` and key `k1`: enough for the gateway to look the key up (the signature
/// is never reached).
fn jwt_from(iss: &str) -> String {
    use base64::Engine;
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})),
        b64(json!({"iss": iss, "aud": "https://gw.example.com", "exp": 4_000_000_000u64}))
    )
}

#[tokio::test]
async fn an_identity_provider_whose_jwks_uri_is_denied_is_never_contacted() {
    let trap = Counter::on(DENIED_IP).await;
    let open = Counter::on("127.0.0.1").await;
    let gw = gateway_with_records(&[]).await;
    for (name, issuer, jwks) in [
        ("denied", "https://denied.idp.test", trap.addr),
        ("open", "https://open.idp.test", open.addr),
    ] {
        let doc = json!({"name": name, "issuer": issuer, "jwks_uri": format!("http://{jwks}/keys"),
                         "created_at": 0, "updated_at": 0});
        gw.state
            .store
            .create_config(ConfigKind::IdentityProvider, name, &doc)
            .await
            .unwrap();
    }
    let call = |iss: &str| {
        mcp_request(Method::POST, "anything", None)
            .header("authorization", format!("Bearer {}", jwt_from(iss)))
            .body(Body::from(init_message(1).to_string()))
            .unwrap()
    };
    let r = send(&gw.app, call("https://denied.idp.test")).await;
    assert_eq!(r.status, 401, "fail closed: {}", r.body);
    assert_eq!(
        trap.accepted().await,
        0,
        "the denied JWKS was never fetched"
    );
    // Baseline: the allowed provider's JWKS is fetched (and holds no key, so still 401).
    let r = send(&gw.app, call("https://open.idp.test")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(open.accepted().await, 1, "the allowed JWKS was fetched");
}
