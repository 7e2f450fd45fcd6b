//! `per_user_token` servers end to end: each user stores their own token for an upstream
//! (`PUT /me/credentials/{server}`), and the official Python MCP client (both connect modes)
//! reaches the echo upstream, which reports the header it received: the user's token in the
//! server's configured header and format, never the caller's gateway key, never another
//! user's token. Before a token is stored, and after it is cleared, the call says where to
//! store one. On SQLite and on DynamoDB (moto).

use anyhow::{Context, Result, ensure};
use e2e::{StoreKind, TestGateway, call_json, python_mcp_call};
use reqwest::Method;
use serde_json::{Value, json};

async fn fixture(store: StoreKind) -> Result<Option<(TestGateway, String, String)>> {
    mcpgw::crypto::install_tls_provider();
    let Some(echo) = mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL") else {
        return Ok(None);
    };
    let gw = TestGateway::start(store, &[]).await?;
    for (name, header, format) in [
        ("tracker", "Authorization", "token {token}"),
        ("wiki", "X-Api-Key", "{token}"),
    ] {
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(json!({"name": name, "url": echo,
                    "auth": {"type": "per_user_token", "header": header, "format": format}})),
            )
            .await?;
        ensure!(s == 201, "registering {name}: {s} {body}");
    }
    gw.admit_everyone("everyone", &["tracker", "wiki"]).await?;
    let alice = gw.user_key("alice@example.com").await?;
    let bob = gw.user_key("bob@example.com").await?;
    Ok(Some((gw, alice, bob)))
}

async fn put_token(gw: &TestGateway, key: &str, server: &str, token: &str) -> Result<u16> {
    let (s, body) = call_json(
        Method::PUT,
        &format!("{}/me/credentials/{server}", gw.base),
        Some(key),
        Some(json!({"token": token})),
    )
    .await?;
    ensure!(
        !body.to_string().contains(token),
        "the token is never shown back: {body}"
    );
    Ok(s)
}

/// What the echo upstream saw, through the Python SDK.
async fn seen(gw: &TestGateway, key: &str, server: &str, mode: &str) -> Result<Value> {
    let out = python_mcp_call(&gw.mcp_url(server), key, "whoami", json!({}), mode).await?;
    ensure!(out["is_error"] == false, "{out}");
    Ok(serde_json::from_str(
        out["content"][0].as_str().context("text")?,
    )?)
}

async fn users_store_and_use_their_own_tokens(store: StoreKind) -> Result<()> {
    let Some((gw, alice, bob)) = fixture(store).await? else {
        return Ok(());
    };
    // GIVEN alice has stored nothing: the call says where to store a token
    let (s, body) = call_json(
        Method::POST,
        &gw.mcp_url("tracker"),
        Some(&alice),
        Some(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        ),
    )
    .await?;
    // (the gateway answers initialize itself, saying in its instructions where to store it)
    assert_eq!(s, 200, "{body}");
    assert!(
        body["result"]["instructions"]
            .as_str()
            .unwrap_or_default()
            .contains("/me/credentials/tracker"),
        "{body}"
    );

    // WHEN each user stores a token
    assert_eq!(
        put_token(&gw, &alice, "tracker", "alice-tracker-1").await?,
        204
    );
    assert_eq!(put_token(&gw, &bob, "tracker", "bob-tracker-1").await?, 204);
    assert_eq!(put_token(&gw, &alice, "wiki", "alice-wiki-1").await?, 204);

    // THEN each call carries the caller's own token, formatted, and no gateway key
    for mode in ["auto", "legacy"] {
        let a = seen(&gw, &alice, "tracker", mode).await?;
        assert_eq!(a["authorization"], "token alice-tracker-1", "{mode}: {a}");
        let b = seen(&gw, &bob, "tracker", mode).await?;
        assert_eq!(b["authorization"], "token bob-tracker-1", "{mode}: {b}");
        assert!(!a.to_string().contains(&alice) && !b.to_string().contains(&bob));
        // in a custom header, and then no Authorization at all upstream
        let w = seen(&gw, &alice, "wiki", mode).await?;
        assert!(w["authorization"].is_null(), "{mode}: {w}");
        assert!(
            w["header_names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h == "x-api-key"),
            "{mode}: {w}"
        );
    }
    // AND bob, who stored nothing for the wiki, is asked to
    let (s, body) = call_json(
        Method::POST,
        &gw.mcp_url("wiki"),
        Some(&bob),
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
    )
    .await?;
    assert_eq!(body["error"]["code"], "credential_required", "{s} {body}");

    // AND the stored tokens are sealed: no plaintext in the store
    let g = gw
        .state
        .store
        .get_grant("alice@example.com", "tracker")
        .await?
        .context("stored")?;
    assert!(
        !String::from_utf8_lossy(&g.sealed_tokens).contains("alice-tracker-1"),
        "sealed"
    );

    // WHEN alice replaces her token THEN the next call uses the new one
    assert_eq!(
        put_token(&gw, &alice, "tracker", "alice-tracker-2").await?,
        204
    );
    let a = seen(&gw, &alice, "tracker", "auto").await?;
    assert_eq!(a["authorization"], "token alice-tracker-2", "{a}");

    // AND her connections list it as connected, without the token
    let (_, list) = call_json(
        Method::GET,
        &format!("{}/me/connections", gw.base),
        Some(&alice),
        None,
    )
    .await?;
    let tracker = list["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["server"] == "tracker")
        .context("tracker listed")?;
    assert_eq!(
        (tracker["auth"].as_str(), tracker["status"].as_str()),
        (Some("per_user_token"), Some("connected")),
        "{list}"
    );
    assert!(!list.to_string().contains("alice-tracker"), "{list}");

    // WHEN she clears it THEN calls ask for a token again, and a second clear is 404
    let url = format!("{}/me/credentials/tracker", gw.base);
    let (s, _) = call_json(Method::DELETE, &url, Some(&alice), None).await?;
    assert_eq!(s, 204);
    let (s, body) = call_json(Method::DELETE, &url, Some(&alice), None).await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (_, body) = call_json(
        Method::POST,
        &gw.mcp_url("tracker"),
        Some(&alice),
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
    )
    .await?;
    assert_eq!(body["error"]["code"], "credential_required", "{body}");
    // AND bob's token is untouched
    let b = seen(&gw, &bob, "tracker", "auto").await?;
    assert_eq!(b["authorization"], "token bob-tracker-1", "{b}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn users_store_and_use_their_own_tokens_on_sqlite() -> Result<()> {
    users_store_and_use_their_own_tokens(StoreKind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread")]
async fn users_store_and_use_their_own_tokens_on_dynamodb() -> Result<()> {
    let Some(endpoint) = mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT") else {
        return Ok(());
    };
    users_store_and_use_their_own_tokens(StoreKind::Dynamo(endpoint)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_and_foreign_servers_are_refused_storing_nothing() -> Result<()> {
    let Some((gw, alice, _)) = fixture(StoreKind::Sqlite).await? else {
        return Ok(());
    };
    let url = format!("{}/me/credentials/tracker", gw.base);
    for (body, want, code) in [
        (json!({"token": ""}), 422, "invalid_field"),
        (json!({"token": "a b"}), 422, "invalid_field"),
        (json!({"token": "x\r\nInjected: 1"}), 422, "invalid_field"),
        (json!({"token": "x".repeat(9000)}), 422, "invalid_field"),
        (json!({"token": 5}), 400, "invalid_json"),
        (json!({"token": "ok", "extra": 1}), 400, "invalid_json"),
    ] {
        let (s, answer) = call_json(Method::PUT, &url, Some(&alice), Some(body.clone())).await?;
        assert_eq!(s, want, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    // unauthenticated, an OAuth or unknown server, a name that cannot exist
    let (s, _) = call_json(Method::PUT, &url, None, Some(json!({"token": "t"}))).await?;
    assert_eq!(s, 401);
    for server in ["nope", "bad%20name"] {
        let (s, body) = call_json(
            Method::PUT,
            &format!("{}/me/credentials/{server}", gw.base),
            Some(&alice),
            Some(json!({"token": "t"})),
        )
        .await?;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{body}"
        );
    }
    assert!(
        gw.state
            .store
            .list_grants_for_user("alice@example.com")
            .await?
            .is_empty(),
        "nothing stored"
    );
    Ok(())
}
