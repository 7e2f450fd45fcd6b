//! The caller's credential is read from exactly one `Authorization: Bearer <b64token>` header,
//! through the real HTTP stack (the local runtime on a loopback port, raw HTTP/1.1 written
//! here so nothing between the test and the gateway merges or drops a header): hyper keeps
//! every repeated header, and the gateway used to take the first valid one. Two headers, in
//! any order and on every route that reads a credential (MCP endpoint, `/me`, the admin API,
//! the OAuth connect route), or two credentials joined with a comma as proxies join repeated
//! fields, are 400 `invalid_request` with the usual challenge; one valid header still works.
//!
//! No peers needed: `cargo test -p e2e --test it auth_header::`.

use anyhow::{Context, Result, ensure};
use axum::response::IntoResponse;
use e2e::{StoreKind, TestGateway};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the gateway answered, read off the wire.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request with exactly these `Authorization` header lines.
async fn raw(
    gw: &TestGateway,
    method: &str,
    path: &str,
    auth: &[&str],
    body: &str,
) -> Result<Answer> {
    let addr = gw.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Accept: application/json, text/event-stream\r\n"
    );
    for a in auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .context("the gateway did not answer")??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    // Bodies here are small JSON; a chunked one is de-chunked crudely (one chunk).
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n").nth(1).unwrap_or_default().to_owned()
    } else {
        body.to_owned()
    };
    Ok(Answer {
        status,
        head: head.to_owned(),
        body,
    })
}

/// A minimal session-era MCP server: answers `initialize` and nothing else matters here.
async fn upstream() -> Result<String> {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: String| async move {
            let msg: Value = serde_json::from_str(&body).unwrap_or_default();
            let result = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "tiny", "version": "1"}});
            let mut r = axum::Json(json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}))
                .into_response();
            r.headers_mut()
                .insert("mcp-session-id", "tiny-1".parse().unwrap());
            r
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Ok(url)
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn exactly_one_authorization_header_is_read_on_every_route() -> Result<()> {
    mcpgw::crypto::install_tls_provider();
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    let up = upstream().await?;
    let (status, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "tiny", "url": up, "auth": {"type": "none"}})),
        )
        .await?;
    ensure!(status == 201, "registering: {status} {body}");
    // The connect route reads the credential only for an OAuth server.
    let (status, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(
                json!({"name": "tiny-oauth", "url": up, "auth": {"type": "oauth2",
                "client_id": "gw", "authorization_url": "https://as.example.com/authorize",
                "token_url": "https://as.example.com/token"}}),
            ),
        )
        .await?;
    ensure!(status == 201, "registering: {status} {body}");
    gw.admit_everyone("everyone", &["tiny", "tiny-oauth"])
        .await?;
    let alice = format!("Bearer {}", gw.user_key("alice@example.com").await?);
    let admin = format!("Bearer {}", gw.admin_key);
    let junk = "Bearer mcpgw_not-a-key";

    // (method, path, body, the valid credential, the status one valid header gets)
    let routes: [(&str, &str, &str, &str, u16); 4] = [
        ("POST", "/mcp/tiny", INIT, &alice, 200),
        ("GET", "/me", "", &alice, 200),
        ("GET", "/admin/servers", "", &admin, 200),
        // The page that leads to the provider's sign-in.
        ("GET", "/oauth/connect/tiny-oauth", "", &alice, 200),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, good, ok_status) in routes {
        // Baseline: one valid header works.
        let a = raw(&gw, method, path, &[good], body).await?;
        if a.status != ok_status {
            wrong.push(format!(
                "{method} {path} with one header: {} {}",
                a.status, a.body
            ));
        }
        let joined = format!("{good}, {junk}");
        let attacks: [(&str, Vec<&str>); 5] = [
            ("valid then junk", vec![good, junk]),
            ("junk then valid", vec![junk, good]),
            ("the same twice", vec![good, good]),
            ("valid then Basic", vec![good, "Basic YWxpY2U6eA=="]),
            ("joined with a comma", vec![&joined]),
        ];
        for (what, headers) in attacks {
            let a = raw(&gw, method, path, &headers, body).await?;
            let challenge = a.header("www-authenticate").unwrap_or_default();
            let ok = a.status == 400
                && a.json()["error"]["code"] == "invalid_request"
                && challenge.starts_with("Bearer")
                && challenge.contains("error=\"invalid_request\"")
                && (!path.starts_with("/mcp/") || challenge.contains("resource_metadata="));
            if !ok {
                wrong.push(format!(
                    "{method} {path}, {what}: {} (WWW-Authenticate: {challenge}) {}",
                    a.status, a.body
                ));
            }
        }
    }
    ensure!(wrong.is_empty(), "wrong answers:\n  {}", wrong.join("\n  "));
    Ok(())
}
