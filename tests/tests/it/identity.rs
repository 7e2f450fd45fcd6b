//! Identity providers end to end: the gateway accepts JWT access tokens from a real OIDC
//! provider (`tests/peers/oidc_provider.mjs`, panva's oidc-provider, logins approved at once)
//! and refuses every token that is forged, expired, meant for someone else or unverifiable.
//!
//! - A real authorization-code + PKCE login (`tests/clients/oidc_login.py`) with the endpoint
//!   as resource indicator (RFC 8707) gives a token the official Python MCP client calls a tool
//!   with; `GET /me` shows the user, groups and roles the token carries.
//! - Tokens minted here with the IdP's real signing key, each wrong in one way (issuer,
//!   audience, expiry, not-before, issued-at in the future, signature, algorithm, endpoint),
//!   are 401 `invalid_token`, next to controls that differ only in that one way and are
//!   accepted.
//! - A provider's `allowed_client_ids` admits the real login's token only while it lists the
//!   IdP's client; tokens for another client (`azp` or `client_id`) or naming none are refused.
//! - Two `Authorization` headers (two users' real tokens) are 400 `invalid_request`.
//! - Random key ids cannot make the gateway hammer the IdP's JWKS (a counting relay in front
//!   of it); an unreachable IdP means 401, quickly, never a 5xx.
//! - The endpoint's protected-resource metadata names the IdP, 401s point at it, and
//!   mcp-remote, a real MCP client doing OAuth discovery, dynamic client registration and PKCE
//!   itself, gets from the bare URL to a tool call (its browser is `tests/peers/fake-browser.sh`).
//!
//! Needs the peers of `scripts/test-all.sh` (`MCPGW_TEST_OIDC_*`, `MCPGW_TEST_ECHO_URL`,
//! `MCPGW_TEST_PYTHON`, `MCPGW_TEST_NODE_MODULES`); skips without them unless
//! `MCPGW_REQUIRE_PEERS=1`. By hand: `d=$(mktemp -d); scripts/peers.sh start "$d" && . "$d/env";
//! cargo test -p e2e --test it identity:: -- --nocapture; scripts/peers.sh stop "$d"`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::{
    OidcPeer, StoreKind, TestGateway, call_json, json_strings, jwt_audiences as audiences,
    jwt_claims as claims_of, python_mcp_call,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcpgw::testing::peer_url;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};

/// The identity provider's name in the gateway.
const PROVIDER: &str = "corp";
/// The echo server is registered twice, to tell the endpoints' audiences apart.
const ENDPOINT: &str = "echo";
const OTHER_ENDPOINT: &str = "echo2";
/// The group that holds the admin role (alice is in it, bob is not).
const ADMIN_GROUP: &str = "mcp-admins";
/// Bound on answers that must be quick: refusals, with the IdP down included.
const QUICK: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread")]
async fn token_from_a_real_login_calls_a_tool_through_the_gateway() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    // GIVEN alice's token from a real login, for the echo endpoint
    let url = fx.gw.mcp_url(ENDPOINT);
    let token = fx.login(&url, "alice").await?;

    // WHEN the official Python MCP client calls tools with it, in both protocol eras
    let out = python_mcp_call(&url, &token, "whoami", json!({}), "auto")
        .await
        .context("whoami through the gateway with alice's token")?;
    // THEN the calls go through...
    ensure!(out["is_error"] == false, "whoami failed: {out}");
    let tools = out["tools"].as_array().context("no tools listed")?;
    ensure!(tools.iter().any(|t| t == "echo"), "tools: {out}");
    // ...AND the caller's token never reaches the upstream
    ensure!(
        !out.to_string().contains(&token),
        "the caller's JWT reached the upstream: {out}"
    );
    let message = format!("hello {}", mcpgw::crypto::random_token(6));
    let out = python_mcp_call(&url, &token, "echo", json!({"message": message}), "legacy")
        .await
        .context("echo through the gateway with alice's token")?;
    ensure!(
        out["is_error"] == false && out["content"][0] == message.as_str(),
        "echo answered {out}"
    );

    // AND the same token is refused on another endpoint and on the admin API: its audience is
    // the echo endpoint only
    let other = mcp_initialize(&fx.gw.mcp_url(OTHER_ENDPOINT), Some(&token)).await?;
    refused(&other).context("alice's echo token on the echo2 endpoint")?;
    let me = get(&format!("{}/me", fx.gw.base), Some(&token)).await?;
    refused(&me).context("alice's echo token on /me")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn me_shows_the_user_groups_and_roles_of_the_token() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    for (user, groups, admin) in [
        ("alice", json!(["eng", ADMIN_GROUP]), true),
        ("bob", json!(["sales"]), false),
    ] {
        // GIVEN a token from a real login whose audience is the gateway itself
        let token = fx.login(&fx.gw.base, user).await?;
        // WHEN the user asks who they are
        let (status, me) = call_json(
            Method::GET,
            &format!("{}/me", fx.gw.base),
            Some(&token),
            None,
        )
        .await?;
        // THEN the gateway knows them by the token's claims
        ensure!(status == 200, "GET /me as {user}: {status} {me}");
        let email = format!("{user}@example.com");
        ensure!(
            me["user"] == email.as_str() && me["email"] == email.as_str(),
            "{user}: {me}"
        );
        ensure!(
            me["subject"] == user,
            "{user}: subject is the IdP's sub: {me}"
        );
        ensure!(me["groups"] == groups, "{user}: groups {groups}: {me}");
        let roles = me["roles"].as_array().context("no roles")?;
        ensure!(roles.iter().any(|r| r == "user"), "{user}: {me}");
        ensure!(
            roles.iter().any(|r| r == "admin") == admin,
            "{user}: admin must be {admin} ({ADMIN_GROUP} is the admin group): {me}"
        );
        ensure!(me["service_account"] == false, "{user}: {me}");
        ensure!(
            me["auth"] == json!({"type": "jwt", "issuer": fx.idp.issuer, "provider": PROVIDER}),
            "{user}: {me}"
        );
        // AND a token for the gateway itself is good on every endpoint
        let answer = mcp_initialize(&fx.gw.mcp_url(ENDPOINT), Some(&token)).await?;
        initialized(&answer).with_context(|| format!("{user}'s gateway token on /mcp/echo"))?;
    }
    // AND only alice may use the admin API
    let alice = fx.login(&fx.gw.base, "alice").await?;
    let bob = fx.login(&fx.gw.base, "bob").await?;
    let list = format!("{}/admin/servers", fx.gw.base);
    let (status, body) = call_json(Method::GET, &list, Some(&alice), None).await?;
    ensure!(status == 200, "alice lists servers: {status} {body}");
    let (status, body) = call_json(Method::GET, &list, Some(&bob), None).await?;
    ensure!(status == 403, "bob lists servers: {status} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_misdirected_tokens_are_refused() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    let idp = &fx.idp;
    let echo = Target::Mcp(fx.gw.mcp_url(ENDPOINT));
    let echo2 = Target::Mcp(fx.gw.mcp_url(OTHER_ENDPOINT));
    let me = Target::Me(format!("{}/me", fx.gw.base));
    let endpoint_aud = json!(fx.gw.mcp_url(ENDPOINT));
    let now = unix_now();
    // alice's claims for `aud`, changed by `edit`, signed with the IdP's real key
    let token = |aud: &Value, edit: &dyn Fn(&mut Value)| {
        let mut claims = idp.claims(aud.clone(), "alice");
        edit(&mut claims);
        idp.mint(&claims)
    };
    let keep = |_: &mut Value| {};

    // Each refusal differs from an accepted control in one way only, so a refusal for the
    // wrong reason (say, every JWT refused) fails the controls.
    let cases: Vec<(&str, &Target, String, bool)> = vec![
        // controls, accepted
        (
            "aud is the endpoint",
            &echo,
            token(&endpoint_aud, &keep),
            true,
        ),
        (
            "aud is a list holding the endpoint",
            &echo,
            token(
                &json!(["https://elsewhere.example/", fx.gw.mcp_url(ENDPOINT)]),
                &keep,
            ),
            true,
        ),
        (
            "aud is the gateway",
            &echo,
            token(&json!(fx.gw.base), &keep),
            true,
        ),
        (
            "aud is the gateway, on /me",
            &me,
            token(&json!(fx.gw.base), &keep),
            true,
        ),
        (
            "expired 20 s ago (within the 60 s leeway)",
            &echo,
            token(&endpoint_aud, &|c| {
                c["iat"] = json!(now - 620);
                c["exp"] = json!(now - 20);
            }),
            true,
        ),
        (
            "nbf 20 s ahead (within the 60 s leeway)",
            &echo,
            token(&endpoint_aud, &|c| c["nbf"] = json!(now + 20)),
            true,
        ),
        (
            "iat 20 s ahead (within the 60 s leeway)",
            &echo,
            token(&endpoint_aud, &|c| c["iat"] = json!(now + 20)),
            true,
        ),
        // refused
        (
            "another issuer (signed with the real key)",
            &echo,
            token(&endpoint_aud, &|c| {
                c["iss"] = json!(format!("{}/other-tenant", idp.issuer))
            }),
            false,
        ),
        (
            "aud is another resource",
            &echo,
            token(&json!("https://elsewhere.example/mcp/echo"), &keep),
            false,
        ),
        (
            "no aud",
            &echo,
            token(&endpoint_aud, &|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("aud");
                }
            }),
            false,
        ),
        (
            "expired an hour ago",
            &echo,
            token(&endpoint_aud, &|c| {
                c["iat"] = json!(now - 4200);
                c["exp"] = json!(now - 3600);
            }),
            false,
        ),
        (
            "nbf an hour ahead",
            &echo,
            token(&endpoint_aud, &|c| c["nbf"] = json!(now + 3600)),
            false,
        ),
        (
            "iat an hour ahead",
            &echo,
            token(&endpoint_aud, &|c| {
                c["iat"] = json!(now + 3600);
                c["exp"] = json!(now + 4200);
            }),
            false,
        ),
        (
            "signed by a rogue key under the real kid",
            &echo,
            idp.mint_with(
                &idp.claims(endpoint_aud.clone(), "alice"),
                Algorithm::RS256,
                &idp.rogue,
            ),
            false,
        ),
        (
            "alg none, no signature",
            &echo,
            unsigned_token(&idp.kid, &idp.claims(endpoint_aud.clone(), "alice")),
            false,
        ),
        (
            "HS256 keyed with the IdP's public key PEM",
            &echo,
            idp.mint_with(
                &idp.claims(endpoint_aud.clone(), "alice"),
                Algorithm::HS256,
                &EncodingKey::from_secret(&idp.public_pem),
            ),
            false,
        ),
        (
            "token for /mcp/echo on /mcp/echo2",
            &echo2,
            token(&endpoint_aud, &keep),
            false,
        ),
        (
            "token for /mcp/echo on /me",
            &me,
            token(&endpoint_aud, &keep),
            false,
        ),
        (
            "no email claim",
            &echo,
            token(&endpoint_aud, &|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("email");
                }
            }),
            false,
        ),
    ];

    let mut wrong = Vec::new();
    for (label, target, token, accept) in &cases {
        let answer = target.call(token).await?;
        let verdict = if *accept {
            initialized_or_me(target, &answer)
        } else {
            refused(&answer)
        };
        let expected = if *accept { "accepted" } else { "refused" };
        println!(
            "{:<45} {expected:<9} {} {}",
            label,
            answer.status,
            if verdict.is_ok() { "ok" } else { "WRONG" }
        );
        if let Err(e) = verdict {
            wrong.push(format!("{label} (should be {expected}): {e:#}"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of {} cases answered wrongly:\n  {}",
        wrong.len(),
        cases.len(),
        wrong.join("\n  ")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_client_ids_admit_only_tokens_of_the_listed_clients() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    let idp = &fx.idp;
    let url = fx.gw.mcp_url(ENDPOINT);
    // GIVEN a token from a real login, issued to the IdP's client
    let token = fx.login(&url, "alice").await?;
    let claims = claims_of(&token)?;
    let issued_to = claims
        .get("azp")
        .or(claims.get("client_id"))
        .and_then(Value::as_str)
        .with_context(|| format!("the IdP's token names no client: {claims}"))?;
    ensure!(issued_to == idp.client_id, "{claims}");
    let provider = |allowed: Value| json!({"issuer": idp.issuer, "admin_groups": [ADMIN_GROUP], "allowed_client_ids": allowed});
    let set = |allowed: Value| {
        let body = provider(allowed);
        let gw = &fx.gw;
        async move {
            let path = format!("/admin/identity-providers/{PROVIDER}");
            let (status, b) = gw.admin(Method::PUT, &path, Some(body)).await?;
            ensure!(status == 200, "{status} {b}");
            let (status, shown) = gw.admin(Method::GET, &path, None).await?;
            ensure!(status == 200, "{status} {shown}");
            anyhow::Ok(shown)
        }
    };

    // WHEN the provider admits only that client THEN its token works (and the list shows)
    let shown = set(json!([idp.client_id, "another-app"])).await?;
    ensure!(
        shown["allowed_client_ids"] == json!([idp.client_id, "another-app"]),
        "{shown}"
    );
    initialized(&mcp_initialize(&url, Some(&token)).await?).context("the listed client")?;

    // AND a token the IdP minted for another client of the same audience is refused,
    // whether the client is named by azp or by client_id
    let now = unix_now();
    let mut other = idp.claims(json!(url), "alice");
    other["client_id"] = json!("rogue-app");
    refused(&mcp_initialize(&url, Some(&idp.mint(&other))).await?).context("client_id rogue")?;
    let mut azp = idp.claims(json!(url), "alice");
    azp["azp"] = json!("rogue-app");
    refused(&mcp_initialize(&url, Some(&idp.mint(&azp))).await?).context("azp rogue")?;
    let mut none = idp.claims(json!(url), "alice");
    none.as_object_mut().unwrap().remove("client_id");
    none["iat"] = json!(now);
    refused(&mcp_initialize(&url, Some(&idp.mint(&none))).await?).context("no client")?;

    // WHEN the list no longer names the IdP's client THEN the real token is refused too
    set(json!(["another-app"])).await?;
    refused(&mcp_initialize(&url, Some(&token)).await?).context("client delisted")?;

    // AND without a list any client's token is accepted again
    set(json!([])).await?;
    initialized(&mcp_initialize(&url, Some(&idp.mint(&other))).await?).context("no list")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_authorization_header_is_refused_not_ignored() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    let url = fx.gw.mcp_url(ENDPOINT);
    let alice = fx.login(&url, "alice").await?;
    let bob = fx.login(&url, "bob").await?;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "mcpgw-identity-test", "version": "1"}}});
    let client = reqwest::Client::new();
    let post = |tokens: Vec<String>| {
        let mut req = client
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .json(&init);
        for t in tokens {
            // `header` appends: both go out as separate header lines.
            req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        req.send()
    };
    // Baseline: each token alone is good.
    for t in [&alice, &bob] {
        let r = post(vec![t.clone()]).await?;
        ensure!(r.status() == 200, "one header: {}", r.status());
    }
    // Two valid tokens of two users, either order, and a valid one next to junk: refused.
    for pair in [
        vec![alice.clone(), bob.clone()],
        vec![bob.clone(), alice.clone()],
        vec![alice.clone(), "eyJhbGciOiJub25lIn0.e30.".to_owned()],
    ] {
        let r = post(pair).await?;
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body: Value = r.json().await.unwrap_or_default();
        ensure!(
            status == 400
                && challenge.contains("error=\"invalid_request\"")
                && challenge.contains("resource_metadata=")
                && body["error"]["code"] == "invalid_request",
            "two headers: {status} ({challenge}) {body}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_key_ids_do_not_flood_the_jwks_endpoint() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    // GIVEN a second identity provider whose JWKS is served through a counting relay (the
    // relay is its issuer too, with a discovery document pointing at the relay's JWKS)
    let relay = JwksRelay::start(&fx.idp.jwks_uri).await?;
    fx.register_provider(json!({
        "name": "flood",
        "issuer": relay.base,
        "jwks_uri": format!("{}/jwks", relay.base),
    }))
    .await?;
    let url = fx.gw.mcp_url(ENDPOINT);
    let claims = {
        let mut c = fx.idp.claims(json!(url), "alice");
        c["iss"] = json!(relay.base);
        c
    };
    // AND a good token of that provider, whose key the relay's JWKS holds
    let good = fx.idp.mint(&claims);
    initialized(&mcp_initialize(&url, Some(&good)).await?)
        .context("a good token of the relayed provider")?;
    let after_good = relay.fetches();
    ensure!(
        after_good >= 1,
        "the token was accepted without the JWKS being fetched through the relay"
    );

    // WHEN 20 tokens with random key ids arrive at once
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("unknown-{}", mcpgw::crypto::random_token(8)));
        let token = jsonwebtoken::encode(&header, &claims, &fx.idp.signing)?;
        let url = url.clone();
        calls.spawn(async move {
            let started = Instant::now();
            let answer = mcp_initialize(&url, Some(&token)).await;
            (answer, started.elapsed())
        });
    }
    // THEN every one is refused...
    let mut wrong = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (answer, took) = joined?;
        if let Err(e) = refused(&answer?) {
            wrong.push(format!("{e:#}"));
        } else if took > QUICK {
            wrong.push(format!("refused after {took:?}"));
        }
    }
    ensure!(wrong.is_empty(), "unknown kids: {}", wrong.join("; "));
    // ...AND the JWKS was fetched at most once more (one refetch per minute at most)
    let total = relay.fetches();
    ensure!(
        total <= 2,
        "{total} JWKS fetches in all ({after_good} before the unknown kids): at most one \
         refetch per minute is allowed"
    );
    // AND the good token still works, from the cache
    initialized(&mcp_initialize(&url, Some(&good)).await?)
        .context("the good token after the flood")?;
    ensure!(
        relay.fetches() <= 2,
        "the JWKS was fetched again for a known kid ({} fetches)",
        relay.fetches()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_identity_provider_fails_closed_and_fast() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    // GIVEN two providers on a port nothing listens on: one with a jwks_uri, one that must
    // be discovered
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let down_jwks = format!("http://127.0.0.1:{closed}/with-jwks-uri");
    let down_discovery = format!("http://127.0.0.1:{closed}/discovered");
    fx.register_provider(json!({
        "name": "down-jwks",
        "issuer": down_jwks,
        "jwks_uri": format!("http://127.0.0.1:{closed}/jwks"),
    }))
    .await?;
    fx.register_provider(json!({"name": "down-discovery", "issuer": down_discovery}))
        .await?;
    let url = fx.gw.mcp_url(ENDPOINT);
    let good = fx.idp.mint(&fx.idp.claims(json!(url), "alice"));
    initialized(&mcp_initialize(&url, Some(&good)).await?).context("control before")?;

    // WHEN their tokens arrive (twice: a cached failure must hold too)
    for issuer in [&down_jwks, &down_discovery] {
        let mut claims = fx.idp.claims(json!(url), "alice");
        claims["iss"] = json!(issuer);
        let token = fx.idp.mint(&claims);
        for attempt in 1..=2 {
            let started = Instant::now();
            let answer = mcp_initialize(&url, Some(&token)).await?;
            let took = started.elapsed();
            // THEN they are refused as invalid, not answered with a 5xx, and quickly
            refused(&answer).with_context(|| format!("issuer {issuer}, attempt {attempt}"))?;
            ensure!(
                took < QUICK,
                "issuer {issuer}, attempt {attempt}: refused after {took:?}"
            );
        }
    }
    // AND the reachable provider's tokens still work
    initialized(&mcp_initialize(&url, Some(&good)).await?).context("control after")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_metadata_names_the_provider_and_401s_point_at_it() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    let url = fx.gw.mcp_url(ENDPOINT);
    let metadata_url = format!(
        "{}/.well-known/oauth-protected-resource/mcp/{ENDPOINT}",
        fx.gw.base
    );
    // WHEN a client reads the endpoint's protected-resource metadata (RFC 9728)
    let (status, meta) = call_json(Method::GET, &metadata_url, None, None).await?;
    // THEN it names the endpoint's URL and the identity provider's issuer
    ensure!(status == 200, "{metadata_url}: {status} {meta}");
    ensure!(meta["resource"] == url.as_str(), "{meta}");
    let servers = meta["authorization_servers"]
        .as_array()
        .context("no authorization_servers")?;
    ensure!(
        servers.iter().any(|s| s == fx.idp.issuer.as_str()),
        "issuer {} not listed: {meta}",
        fx.idp.issuer
    );

    // AND a 401 without a credential, or with a bad token, points at that metadata
    let pointer = format!("resource_metadata=\"{metadata_url}\"");
    let bare = mcp_initialize(&url, None).await?;
    ensure!(bare.status == 401, "no credential: {}", bare.describe());
    ensure!(
        bare.challenge
            .as_deref()
            .is_some_and(|c| c.contains(&pointer)),
        "no credential: the challenge lacks {pointer}: {}",
        bare.describe()
    );
    let forged = fx.idp.mint_with(
        &fx.idp.claims(json!(url), "alice"),
        Algorithm::RS256,
        &fx.idp.rogue,
    );
    let bad = mcp_initialize(&url, Some(&forged)).await?;
    refused(&bad).context("a forged token")?;
    ensure!(
        bad.challenge
            .as_deref()
            .is_some_and(|c| c.contains(&pointer)),
        "forged token: the challenge lacks {pointer}: {}",
        bad.describe()
    );

    // AND once the provider is deleted, it is no longer listed and its tokens are refused
    let good = fx.idp.mint(&fx.idp.claims(json!(url), "alice"));
    initialized(&mcp_initialize(&url, Some(&good)).await?).context("before the deletion")?;
    let (status, body) = fx
        .gw
        .admin(
            Method::DELETE,
            &format!("/admin/identity-providers/{PROVIDER}"),
            None,
        )
        .await?;
    ensure!(
        status == 200 || status == 204,
        "deleting the provider: {status} {body}"
    );
    let (_, meta) = call_json(Method::GET, &metadata_url, None, None).await?;
    ensure!(
        !meta["authorization_servers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == fx.idp.issuer.as_str())),
        "the deleted provider is still listed: {meta}"
    );
    refused(&mcp_initialize(&url, Some(&good)).await?).context("after the deletion")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_and_challenges_advertise_the_scopes_to_log_in_with() -> Result<()> {
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    let url = fx.gw.mcp_url(ENDPOINT);
    let metadata_url = fx.gw.base.clone() + "/.well-known/oauth-protected-resource/mcp/" + ENDPOINT;
    // GIVEN the provider registered without scopes, as the README shows; the provider's
    // discovery lists more scopes than the identity ones (offline_access, mcp:read, ...)
    let (_, discovery) = call_json(
        Method::GET,
        &format!("{}/.well-known/openid-configuration", fx.idp.issuer),
        None,
        None,
    )
    .await?;
    let listed = json_strings(&discovery["scopes_supported"]);
    ensure!(
        listed.iter().any(|s| s == "offline_access"),
        "the peer lists other scopes too: {discovery}"
    );
    let identity: Vec<String> = ["email", "groups", "openid", "profile"]
        .iter()
        .filter(|s| listed.iter().any(|l| l == *s))
        .map(|s| (*s).to_owned())
        .collect();
    ensure!(!identity.is_empty(), "{discovery}");

    // WHEN a client reads the metadata and meets a 401
    let (_, meta) = call_json(Method::GET, &metadata_url, None, None).await?;
    let bare = mcp_initialize(&url, None).await?;
    // THEN both name the identity scopes the provider lists, and only those
    ensure!(
        json_strings(&meta["scopes_supported"]) == identity,
        "scopes_supported: {meta}"
    );
    let scope = format!("scope=\"{}\"", identity.join(" "));
    ensure!(
        bare.challenge
            .as_deref()
            .is_some_and(|c| c.contains(&scope)),
        "the challenge lacks {scope}: {}",
        bare.describe()
    );

    // AND a client registering with exactly them, as the MCP Inspector does, is accepted
    // by the provider, where the empty scope the Inspector sent before is refused
    let registration = discovery["registration_endpoint"]
        .as_str()
        .context("registration_endpoint")?;
    let register = |scope: String| async move {
        call_json(
            Method::POST,
            registration,
            None,
            Some(
                json!({"redirect_uris": ["http://127.0.0.1:6276/oauth/callback"],
                "token_endpoint_auth_method": "none", "scope": scope,
                "grant_types": ["authorization_code", "refresh_token"]}),
            ),
        )
        .await
    };
    let (status, body) = register(identity.join(" ")).await?;
    ensure!(
        status == 201,
        "registering with the advertised scopes: {status} {body}"
    );
    let (status, body) = register(String::new()).await?;
    ensure!(
        status == 400,
        "the baseline: an empty scope is refused: {status} {body}"
    );

    // WHEN the admin configures the scopes to advertise (and a required one)
    let (status, body) = fx
        .gw
        .admin(
            Method::PUT,
            &format!("/admin/identity-providers/{PROVIDER}"),
            Some(
                json!({"issuer": fx.idp.issuer, "admin_groups": [ADMIN_GROUP],
                "scopes": ["openid", "mcp:read"], "required_scopes": ["mcp:write"]}),
            ),
        )
        .await?;
    ensure!(status == 200, "updating the provider: {status} {body}");
    // THEN those are advertised instead, the required one included
    let (_, meta) = call_json(Method::GET, &metadata_url, None, None).await?;
    ensure!(
        json_strings(&meta["scopes_supported"]) == ["mcp:read", "mcp:write", "openid"],
        "configured scopes: {meta}"
    );
    // AND a scope that could break out of the challenge's quoted string is refused
    let (status, body) = fx
        .gw
        .admin(
            Method::PUT,
            &format!("/admin/identity-providers/{PROVIDER}"),
            Some(json!({"issuer": fx.idp.issuer, "scopes": ["openid\", error=\"x"]})),
        )
        .await?;
    ensure!(
        status == 400 || status == 422,
        "a quote in a scope: {status} {body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_remote_logs_in_by_itself_and_calls_a_tool() -> Result<()> {
    let Some(node_modules) = peer_url("MCPGW_TEST_NODE_MODULES") else {
        return Ok(());
    };
    let Some(fx) = Fixture::start().await? else {
        return Ok(());
    };
    let url = fx.gw.mcp_url(ENDPOINT);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("mcp-remote");
    let browser_log = dir.path().join("browser.log");
    let stderr_log = dir.path().join("mcp-remote.log");
    let proxy = Path::new(&node_modules).join("mcp-remote/dist/proxy.js");
    let browser = manifest_dir().join("peers/fake-browser.sh");

    // GIVEN mcp-remote with nothing but the endpoint's URL, and a browser that approves
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&proxy)
        .arg(&url)
        .current_dir(dir.path())
        .env("BROWSER", &browser)
        .env("FAKE_BROWSER_LOG", &browser_log)
        .env("MCP_REMOTE_CONFIG_DIR", &config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log)?)
        .kill_on_drop(true);
    // No desktop: xdg-open falls back to $BROWSER.
    for var in [
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "XDG_CURRENT_DESKTOP",
        "DESKTOP_SESSION",
        "KDE_FULL_SESSION",
        "GNOME_DESKTOP_SESSION_ID",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().context("starting mcp-remote")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
    let diagnostics = || {
        format!(
            "\n--- mcp-remote stderr (last 60 lines):\n{}\n--- browser log:\n{}",
            tail(
                &std::fs::read_to_string(&stderr_log).unwrap_or_default(),
                60
            ),
            std::fs::read_to_string(&browser_log).unwrap_or_default()
        )
    };

    // WHEN an MCP host speaks to it over stdio: initialize (mcp-remote first discovers the
    // IdP from the gateway, registers itself, logs in and redeems the code), then a tool call
    let message = format!("hello from mcp-remote {}", mcpgw::crypto::random_token(6));
    let exchange = async {
        send_line(
            &mut stdin,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "mcpgw-identity-test", "version": "1"}}}),
        )
        .await?;
        let init = read_response(&mut stdout, 1).await.context("initialize")?;
        send_line(
            &mut stdin,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await?;
        send_line(
            &mut stdin,
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": message}}}),
        )
        .await?;
        let call = read_response(&mut stdout, 2).await.context("tools/call")?;
        anyhow::Ok((init, call))
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), exchange).await;
    let _ = child.kill().await;
    let (init, call) = match outcome {
        Ok(Ok(answers)) => answers,
        Ok(Err(e)) => bail!("mcp-remote: {e:#}{}", diagnostics()),
        Err(_) => bail!("mcp-remote did not finish in 120 s{}", diagnostics()),
    };

    // THEN the handshake and the call went through the gateway
    ensure!(
        init["result"]["protocolVersion"].is_string(),
        "initialize answered {init}{}",
        diagnostics()
    );
    ensure!(
        call["result"]["isError"] != true && call["result"]["content"][0]["text"] == message,
        "tools/call answered {call}{}",
        diagnostics()
    );
    // AND with a token it got from the IdP by itself, for this endpoint
    let tokens = find_file(&config, "_tokens.json")
        .with_context(|| format!("mcp-remote saved no tokens{}", diagnostics()))?;
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&tokens)?)?;
    let claims = claims_of(saved["access_token"].as_str().context("no access_token")?)?;
    ensure!(claims["iss"] == fx.idp.issuer.as_str(), "{claims}");
    ensure!(
        audiences(&claims).contains(&url.as_str()),
        "the token's audience is not {url}: {claims}"
    );
    let visits = std::fs::read_to_string(&browser_log).unwrap_or_default();
    ensure!(
        visits.contains("/oauth/callback?code="),
        "the browser never reached mcp-remote's callback:\n{visits}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The identity provider

/// The OIDC provider peer and the keys it wrote (`tests/peers/oidc_provider.mjs`).
struct Idp {
    issuer: String,
    jwks_uri: String,
    client_id: String,
    /// Real logins at it.
    peer: OidcPeer,
    kid: String,
    /// The IdP's own signing key.
    signing: EncodingKey,
    /// Another RSA key, used under the real kid.
    rogue: EncodingKey,
    /// The real public key as SPKI PEM (the HMAC secret of the key-confusion attack).
    public_pem: Vec<u8>,
}

impl Idp {
    /// `None` (after saying so) when the peer is not running and peers are optional.
    async fn from_env() -> Result<Option<Self>> {
        let (Some(peer), Some(keys)) = (OidcPeer::from_env(), peer_url("MCPGW_TEST_OIDC_KEYS"))
        else {
            return Ok(None);
        };
        let issuer = peer.issuer.clone();
        let keys = PathBuf::from(keys);
        let read = |name: &str| {
            std::fs::read(keys.join(name)).with_context(|| format!("reading {name} in {keys:?}"))
        };
        let jwk: Value = serde_json::from_slice(&read("signing-key.jwk.json")?)?;
        let kid = jwk["kid"]
            .as_str()
            .context("the JWK has no kid")?
            .to_owned();
        let signing = rsa_key_from_pkcs8_pem(&read("signing-key.pem")?)?;
        let rogue = rsa_key_from_pkcs8_pem(&read("rogue-key.pem")?)?;
        let public_pem = read("signing-key.pub.pem")?;
        let (status, discovery) = call_json(
            Method::GET,
            &format!("{issuer}/.well-known/openid-configuration"),
            None,
            None,
        )
        .await?;
        ensure!(status == 200, "IdP discovery: {status} {discovery}");
        ensure!(discovery["issuer"] == issuer.as_str(), "{discovery}");
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .context("no jwks_uri")?
            .to_owned();
        Ok(Some(Self {
            issuer,
            jwks_uri,
            client_id: peer.client_id.clone(),
            peer,
            kid,
            signing,
            rogue,
            public_pem,
        }))
    }

    /// The claims the IdP itself puts in `user`'s access token, valid for ten minutes.
    fn claims(&self, aud: Value, user: &str) -> Value {
        let now = unix_now();
        let groups = match user {
            "alice" => json!(["eng", ADMIN_GROUP]),
            "bob" => json!(["sales"]),
            _ => json!([]),
        };
        json!({
            "iss": self.issuer,
            "sub": user,
            "aud": aud,
            "iat": now,
            "exp": now + 600,
            "jti": mcpgw::crypto::random_token(12),
            "client_id": self.client_id,
            "scope": "mcp:read",
            "email": format!("{user}@example.com"),
            "groups": groups,
        })
    }

    /// `claims` signed with the IdP's key under its kid, as the IdP would.
    fn mint(&self, claims: &Value) -> String {
        self.mint_with(claims, Algorithm::RS256, &self.signing)
    }

    /// `claims` signed with `key` and `alg`, under the IdP's kid.
    fn mint_with(&self, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, key).expect("signing a test token")
    }
}

/// An RSA signing key from a PKCS#8 PEM file. The workspace builds jsonwebtoken without its
/// PEM parser, and its DER constructor takes PKCS#1: the PKCS#1 key is the octet string that
/// ends PKCS#8's `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }`.
fn rsa_key_from_pkcs8_pem(pem: &[u8]) -> Result<EncodingKey> {
    let pem = std::str::from_utf8(pem)?;
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    ensure!(
        pem.contains("-----BEGIN PRIVATE KEY-----"),
        "not a PKCS#8 PEM"
    );
    let der = base64::engine::general_purpose::STANDARD.decode(b64.trim())?;
    let (tag, info, _) = der_element(&der)?;
    ensure!(tag == 0x30, "PKCS#8: not a SEQUENCE");
    let (tag, _, rest) = der_element(info)?;
    ensure!(tag == 0x02, "PKCS#8: no version");
    let (tag, _, rest) = der_element(rest)?;
    ensure!(tag == 0x30, "PKCS#8: no algorithm");
    let (tag, pkcs1, _) = der_element(rest)?;
    ensure!(tag == 0x04, "PKCS#8: no private key");
    Ok(EncodingKey::from_rsa_der(pkcs1))
}

/// One DER element of `der`: (tag, contents, what follows).
fn der_element(der: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first().context("DER: empty")?;
    let (&first, rest) = rest.split_first().context("DER: no length")?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        ensure!((1..=4).contains(&n) && rest.len() >= n, "DER: bad length");
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, &rest[n..])
    };
    ensure!(rest.len() >= len, "DER: truncated");
    Ok((tag, &rest[..len], &rest[len..]))
}

/// A token with `alg: none` and an empty signature.
fn unsigned_token(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// The gateway under test

/// A gateway with the echo server registered as two endpoints and the IdP as provider `corp`
/// (admin group `mcp-admins`).
struct Fixture {
    gw: TestGateway,
    idp: Idp,
}

impl Fixture {
    async fn start() -> Result<Option<Self>> {
        mcpgw::crypto::install_tls_provider();
        let Some(echo) = peer_url("MCPGW_TEST_ECHO_URL") else {
            return Ok(None);
        };
        let Some(idp) = Idp::from_env().await? else {
            return Ok(None);
        };
        let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
        for name in [ENDPOINT, OTHER_ENDPOINT] {
            let (status, body) = gw
                .admin(
                    Method::POST,
                    "/admin/servers",
                    Some(json!({"name": name, "url": echo, "auth": {"type": "none"}})),
                )
                .await?;
            ensure!(status == 201, "registering {name}: {status} {body}");
        }
        gw.admit_everyone("everyone", &[ENDPOINT, OTHER_ENDPOINT])
            .await?;
        let fx = Self { gw, idp };
        fx.register_provider(json!({
            "name": PROVIDER,
            "issuer": fx.idp.issuer,
            "audiences": [],
            "admin_groups": [ADMIN_GROUP],
        }))
        .await?;
        Ok(Some(fx))
    }

    async fn register_provider(&self, provider: Value) -> Result<()> {
        let (status, body) = self
            .gw
            .admin(
                Method::POST,
                "/admin/identity-providers",
                Some(provider.clone()),
            )
            .await?;
        ensure!(
            status == 201,
            "registering identity provider {provider}: {status} {body}"
        );
        Ok(())
    }

    /// A real login of `user` at the IdP (authorization code + PKCE, resource indicator
    /// `resource`); returns the access token, after checking it is what the IdP should issue.
    async fn login(&self, resource: &str, user: &str) -> Result<String> {
        self.idp.peer.login(resource, user).await
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

/// What the gateway answered.
struct Answer {
    status: u16,
    challenge: Option<String>,
    content_type: String,
    body: String,
}

impl Answer {
    fn describe(&self) -> String {
        let mut body = self.body.clone();
        if body.len() > 300 {
            body.truncate(body.floor_char_boundary(300));
            body.push_str("...");
        }
        format!(
            "HTTP {} (WWW-Authenticate: {}) {body}",
            self.status,
            self.challenge.as_deref().unwrap_or("-")
        )
    }

    /// The JSON-RPC message of a JSON or SSE answer.
    fn jsonrpc(&self) -> Option<Value> {
        if self.content_type.starts_with("text/event-stream") {
            self.body
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|m| m.get("id").is_some())
        } else {
            serde_json::from_str(&self.body).ok()
        }
    }
}

async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut req = client
        .request(method, url)
        .header("Accept", "application/json, text/event-stream");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let challenge = header(reqwest::header::WWW_AUTHENTICATE);
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let status = resp.status().as_u16();
    // An SSE answer to initialize ends after the result; the timeout bounds one that would not.
    let body = resp.text().await.unwrap_or_default();
    Ok(Answer {
        status,
        challenge,
        content_type,
        body,
    })
}

async fn get(url: &str, token: Option<&str>) -> Result<Answer> {
    send(Method::GET, url, token, None).await
}

/// An MCP `initialize` on an endpoint.
async fn mcp_initialize(url: &str, token: Option<&str>) -> Result<Answer> {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "mcpgw-identity-test", "version": "1"}}});
    send(Method::POST, url, token, Some(&init)).await
}

/// Where a minted token is presented.
enum Target {
    /// `initialize` on this MCP endpoint URL.
    Mcp(String),
    /// `GET` on this `/me` URL.
    Me(String),
}

impl Target {
    async fn call(&self, token: &str) -> Result<Answer> {
        match self {
            Target::Mcp(url) => mcp_initialize(url, Some(token)).await,
            Target::Me(url) => get(url, Some(token)).await,
        }
    }
}

/// A 401 with an `invalid_token` challenge.
fn refused(answer: &Answer) -> Result<()> {
    ensure!(
        answer.status == 401
            && answer
                .challenge
                .as_deref()
                .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "expected 401 with error=\"invalid_token\", got {}",
        answer.describe()
    );
    Ok(())
}

/// A successful `initialize`.
fn initialized(answer: &Answer) -> Result<()> {
    ensure!(
        answer.status == 200
            && answer
                .jsonrpc()
                .is_some_and(|m| m["result"]["protocolVersion"].is_string()),
        "expected an initialize result, got {}",
        answer.describe()
    );
    Ok(())
}

fn initialized_or_me(target: &Target, answer: &Answer) -> Result<()> {
    match target {
        Target::Mcp(_) => initialized(answer),
        Target::Me(_) => {
            let me: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
            ensure!(
                answer.status == 200 && me["user"] == "alice@example.com",
                "expected alice on /me, got {}",
                answer.describe()
            );
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A counting JWKS relay

/// Serves `/jwks` (forwarded to the real IdP's JWKS, counted) and a discovery document naming
/// itself as issuer, until dropped.
struct JwksRelay {
    base: String,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct RelayState {
    base: String,
    upstream: String,
    fetches: Arc<AtomicUsize>,
}

impl JwksRelay {
    async fn start(upstream_jwks: &str) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let fetches = Arc::new(AtomicUsize::new(0));
        let state = RelayState {
            base: base.clone(),
            upstream: upstream_jwks.to_owned(),
            fetches: fetches.clone(),
        };
        let app = axum::Router::new()
            .route("/jwks", axum::routing::get(relay_jwks))
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(relay_discovery),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                axum::routing::get(relay_discovery),
            )
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base,
            fetches,
            task,
        })
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn relay_jwks(State(state): State<RelayState>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    match reqwest::get(&state.upstream).await {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = resp.bytes().await.unwrap_or_default();
            (status, [(CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("relay: {e}")).into_response(),
    }
}

async fn relay_discovery(State(state): State<RelayState>) -> Response {
    axum::Json(json!({
        "issuer": state.base,
        "jwks_uri": format!("{}/jwks", state.base),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// mcp-remote over stdio

async fn send_line(stdin: &mut ChildStdin, message: &Value) -> Result<()> {
    stdin.write_all(format!("{message}\n").as_bytes()).await?;
    stdin.flush().await?;
    Ok(())
}

/// Reads stdout lines until the response with `id` (notifications and other lines skipped).
async fn read_response(stdout: &mut BufReader<ChildStdout>, id: i64) -> Result<Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).await? == 0 {
            bail!("mcp-remote closed its stdout before answering request {id}");
        }
        if let Ok(msg) = serde_json::from_str::<Value>(line.trim())
            && msg["id"] == id
            && (msg.get("result").is_some() || msg.get("error").is_some())
        {
            return Ok(msg);
        }
    }
}

/// The first file anywhere under `dir` whose name ends with `suffix`.
fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, suffix) {
                return Some(found);
            }
        } else if path.to_string_lossy().ends_with(suffix) {
            return Some(path);
        }
    }
    None
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
