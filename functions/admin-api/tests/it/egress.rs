//! The egress policy at registration: an upstream, an OAuth endpoint or an identity provider
//! the gateway may not contact is a 422 `egress_denied` naming the field and the rule, in
//! every spelling of the address, and nothing is stored; the same registration at an allowed
//! address is a 201.

use crate::common;

use common::{Api, api_with, assert_error};
use serde_json::{Value, json};

/// The settings of a Lambda deployment (loopback denied by default) on the test's SQLite
/// store, the keyring from an env secret.
const LAMBDA: [(&str, &str); 4] = [
    ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
    ("MCPGW_TABLE_NAME", "unused"),
    ("MCPGW_SECRETS", "env"),
    ("MCPGW_KEYRING_SECRET", "secret://gw/keyring"),
];

fn lambda_api(extra: &[(&str, &str)]) -> Api {
    let mut vars = LAMBDA.to_vec();
    vars.extend_from_slice(extra);
    api_with(&vars)
}

fn server(name: &str, url: &str) -> Value {
    json!({"name": name, "url": url, "auth": {"type": "none"}})
}

/// Asserts a 422 `egress_denied` whose message names `field` and `words` of the rule.
fn assert_denied(status: axum::http::StatusCode, body: &Value, field: &str, words: &str) {
    assert_error(status, body, 422, "egress_denied");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{field}: egress to ")) && message.contains(words),
        "{message}"
    );
}

#[tokio::test]
async fn an_upstream_at_a_denied_address_is_refused_in_every_spelling() {
    let api = api_with(&[("MCPGW_EGRESS_DENY", "10.0.0.0/8")]);
    for (url, words) in [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://2852039166/", "cloud metadata"),
        ("http://0xa9fea9fe/", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://169.254.1.2:8080/mcp", "link-local"),
        ("http://[fe80::1]/mcp", "link-local"),
        ("http://0.0.0.0:3001/mcp", "unspecified"),
        ("http://[::]:3001/mcp", "unspecified"),
        ("http://224.0.0.1/mcp", "multicast"),
        ("http://255.255.255.255/mcp", "broadcast"),
        ("http://10.1.2.3/mcp", "10.0.0.0/8 is in MCPGW_EGRESS_DENY"),
        ("http://012.1.2.3/mcp", "MCPGW_EGRESS_DENY"),
    ] {
        let (s, b) = api
            .admin("POST", "/admin/servers", Some(server("up", url)))
            .await;
        assert_denied(s, &b, "url", words);
        assert_eq!(api.server_count().await, 0, "{url}: nothing stored");
    }
    // Baseline: loopback (local mode), a VPC address and a DNS name are fine.
    for (i, url) in [
        "http://127.0.0.1:3001/mcp",
        "http://192.168.1.10/mcp",
        "https://mcp.example.com/mcp",
    ]
    .into_iter()
    .enumerate()
    {
        let (s, b) = api
            .admin(
                "POST",
                "/admin/servers",
                Some(server(&format!("ok{i}"), url)),
            )
            .await;
        assert_eq!(s, 201, "{url}: {b}");
    }
    // A replacement that points an existing server at a denied address changes nothing.
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/servers/ok0",
            Some(server("ok0", "http://[::ffff:a9fe:a9fe]/")),
        )
        .await;
    assert_denied(s, &b, "url", "cloud metadata");
    let (_, b) = api.admin("GET", "/admin/servers/ok0", None).await;
    assert_eq!(b["url"], "http://127.0.0.1:3001/mcp");
}

#[tokio::test]
async fn loopback_is_refused_in_lambda_unless_egress_allow_admits_it() {
    let api = lambda_api(&[]);
    for url in [
        "http://127.0.0.1:3001/mcp",
        "http://127.1:3001/mcp",
        "http://2130706433:3001/mcp",
        "http://0x7f000001:3001/mcp",
        "http://017700000001:3001/mcp",
        "http://[::ffff:127.0.0.1]:3001/mcp",
        "http://[::1]:3001/mcp",
        "http://localhost:3001/mcp",
    ] {
        let (s, b) = api
            .admin("POST", "/admin/servers", Some(server("up", url)))
            .await;
        assert_denied(s, &b, "url", "loopback addresses are denied in Lambda");
    }
    // Baseline: a stack whose EgressAllow names loopback.
    let api = lambda_api(&[("MCPGW_EGRESS_ALLOW", "127.0.0.0/8")]);
    let (s, b) = api
        .admin(
            "POST",
            "/admin/servers",
            Some(server("up", "http://127.1:3001/mcp")),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn oauth_endpoints_at_denied_addresses_are_refused() {
    let api = api_with(&[]);
    for (field, auth) in [
        (
            "auth.token_url",
            json!({"type": "oauth2_client_credentials", "client_id": "c",
                   "client_secret": "secret://upstream-key", "token_url": "http://169.254.169.254/token"}),
        ),
        (
            "auth.issuer",
            json!({"type": "oauth2_client_credentials", "client_id": "c",
                   "client_secret": "secret://upstream-key", "issuer": "https://[fd00:ec2::254]"}),
        ),
        (
            "auth.revocation_url",
            json!({"type": "oauth2", "client_id": "c",
                   "authorization_url": "https://as.example.com/authorize",
                   "token_url": "https://as.example.com/token",
                   "revocation_url": "http://0.0.0.0/revoke"}),
        ),
        (
            "auth.authorization_url",
            json!({"type": "oauth2", "client_id": "c",
                   "authorization_url": "http://169.254.0.9/authorize",
                   "token_url": "https://as.example.com/token"}),
        ),
    ] {
        let body = json!({"name": "notes", "url": "https://notes.example.com/mcp", "auth": auth});
        let (s, b) = api.admin("POST", "/admin/servers", Some(body)).await;
        assert_error(s, &b, 422, "egress_denied");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{b}"
        );
    }
    assert_eq!(api.server_count().await, 0);
    // Baseline: the same endpoints on public names.
    let body = json!({"name": "notes", "url": "https://notes.example.com/mcp", "auth":
        {"type": "oauth2_client_credentials", "client_id": "c", "client_secret": "secret://upstream-key",
         "token_url": "https://as.example.com/token"}});
    let (s, b) = api.admin("POST", "/admin/servers", Some(body)).await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn an_identity_provider_the_gateway_may_not_reach_is_refused() {
    let api = lambda_api(&[]);
    for (body, field, words) in [
        (
            json!({"name": "corp", "issuer": "https://169.254.169.254/idp"}),
            "issuer",
            "cloud metadata",
        ),
        (
            json!({"name": "corp", "issuer": "https://login.example.com",
                   "jwks_uri": "https://[::ffff:169.254.3.4]/keys"}),
            "jwks_uri",
            "link-local",
        ),
        (
            json!({"name": "corp", "issuer": "https://login.example.com",
                   "jwks_uri": "http://127.0.0.1:9/keys"}),
            "jwks_uri",
            "loopback",
        ),
    ] {
        let (s, b) = api
            .admin("POST", "/admin/identity-providers", Some(body))
            .await;
        assert_denied(s, &b, field, words);
    }
    let (_, b) = api.admin("GET", "/admin/identity-providers", None).await;
    assert_eq!(b["identity_providers"], json!([]), "nothing stored");
    // Baseline: a public issuer, then a replacement that would point its keys at a denied
    // address is refused and leaves it as it was.
    let (s, b) = api
        .admin(
            "POST",
            "/admin/identity-providers",
            Some(json!({"name": "corp", "issuer": "https://login.example.com"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/identity-providers/corp",
            Some(json!({"issuer": "https://login.example.com",
                        "jwks_uri": "https://[fe80::1]/keys"})),
        )
        .await;
    assert_denied(s, &b, "jwks_uri", "link-local");
    let (_, b) = api
        .admin("GET", "/admin/identity-providers/corp", None)
        .await;
    assert!(b.get("jwks_uri").is_none_or(Value::is_null), "{b}");
}
