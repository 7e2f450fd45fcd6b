//! Lambda for real: the four function binaries under the Lambda runtime API emulator
//! (`cargo lambda watch`), on DynamoDB and Secrets Manager in moto, with the real MCP peers,
//! driven the way API Gateway drives them (see `e2e::lambda`).
//!
//! One test with several steps, so the emulators (and their compiled, warm functions) are
//! shared and stopped at the end, and the last step can prove no process is left behind.
//! Needs the peers of `scripts/test-all.sh` and `cargo-lambda`; skips without them unless
//! `MCPGW_REQUIRE_PEERS=1`. With the oidc-provider peer the functions get it as the template's
//! identity provider (`IdpIssuer`, so `MCPGW_IDP_ISSUER`) and its JWTs are tried through both
//! APIs; without it (and peers optional) only that step is skipped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::lambda::{
    ApiKind, BoundGateway, Emulator, FUNCTIONS, IdpParameters, Integration, LambdaStack, STAGE,
    Transfer, load_event, mcp_message, process_alive, process_name, proxy_body, set_body,
};
use e2e::{OidcPeer, Walkthrough, call_json, python_mcp_call, walkthrough};
use mcpgw::clock::Clock;
use mcpgw::store::GrantStore;
use reqwest::Method;
use serde_json::{Value, json};

const UPSTREAM_SECRET: &str = "Bearer upstream-secret-for-lambda-echo";

/// How soon every function instance answers by a changed access policy: twice the policy
/// cache's TTL (`MCPGW_POLICY_CACHE_SECONDS`, 2 s), and a second of slack.
const POLICY_REACHES_ALL: Duration = Duration::from_secs(5);

/// Calls `attempt` until it succeeds (`Ok`), the policy having `changed` at that instant.
/// An attempt that *started* [`POLICY_REACHES_ALL`] or more after the change and still got
/// the old policy's answer (`Err`, which says what it got) fails the test. Judged by when
/// each attempt started, not when it ended, so slow invocations on a loaded machine cannot
/// fail it, while a cache that outlives its TTL still does.
async fn once_the_policy_is_seen<T, F, Fut>(changed: Instant, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    loop {
        let started = changed.elapsed();
        match attempt().await {
            Ok(seen) => return seen,
            Err(old) => assert!(
                started < POLICY_REACHES_ALL,
                "{what}: a request started {started:?} after the change still got {old}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"lambda-mode","version":"1.0.0"}}}"#;

/// The IdP group whose members hold the admin role (`IdpAdminGroups`); alice is in it.
const ADMIN_GROUP: &str = "mcp-admins";

struct Peers {
    moto: String,
    everything: String,
    echo: String,
    cargo_lambda: PathBuf,
    /// The identity provider, when its peer runs.
    oidc: Option<OidcPeer>,
}

fn peers() -> Option<Peers> {
    let moto = mcpgw::testing::moto_endpoint()?;
    let everything = mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL")?;
    let echo = mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL")?;
    mcpgw::testing::peer_url("MCPGW_TEST_PYTHON")?;
    let cargo_lambda = e2e::lambda::cargo_lambda()?;
    Some(Peers {
        moto,
        everything,
        echo,
        cargo_lambda,
        oidc: OidcPeer::from_env(),
    })
}

/// Logs how long a step took (visible with `--nocapture`).
struct Step(&'static str, Instant);

impl Step {
    fn start(name: &'static str) -> Self {
        Self(name, Instant::now())
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        eprintln!(
            "[lambda_mode] {}: {:.1}s",
            self.0,
            self.1.elapsed().as_secs_f64()
        );
    }
}

/// One HTTP call; returns (status, headers, JSON body or Null).
async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    call_with(method, url, token, &[], body).await
}

/// [`call`] with extra request headers.
async fn call_with(
    method: Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some((content_type, b)) = body {
        req = req
            .header("Content-Type", content_type)
            .header("Accept", "application/json, text/event-stream")
            .body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .or_else(|_| mcp_message(text.as_bytes()))
        .unwrap_or(Value::Null);
    (status, headers, body)
}

/// An admin-api REST event derived from the committed create-server fixture: another method,
/// `/admin/{proxy}` path and body, everything else as API Gateway sent it.
fn admin_event(base: &Value, method: &str, proxy: &str, body: Option<Value>) -> Value {
    let mut e = base.clone();
    e["httpMethod"] = json!(method);
    e["requestContext"]["httpMethod"] = json!(method);
    e["path"] = json!(format!("/admin/{proxy}"));
    e["requestContext"]["path"] = json!(format!("/{STAGE}/admin/{proxy}"));
    e["pathParameters"] = json!({"proxy": proxy});
    let bytes = body.map(|b| b.to_string().into_bytes());
    set_body(&mut e, bytes.as_deref(), true);
    e
}

fn result_body(result: &Value) -> Value {
    let body = proxy_body(result).unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|_| mcp_message(&body).unwrap_or(Value::Null))
}

/// The committed fixtures, placeholders substituted, invoked raw on the buffered emulator.
/// Leaves `everything` unregistered again for the walk-through.
async fn raw_fixtures(stack: &LambdaStack, p: &Peers) {
    let _t = Step::start("raw fixtures");
    let emu = &stack.buffered;
    let admin = stack.aws.admin_key.as_str();
    let vars = [
        ("__ADMIN_KEY__", admin),
        ("__EVERYTHING_URL__", p.everything.as_str()),
    ];

    // healthz, with the stage in requestContext: 200 only because the stage is ignored
    let out = emu
        .invoke_json("admin-api", &load_event("rest-healthz", &vars).unwrap())
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    assert_eq!(result_body(&out), json!({"status": "ok"}));
    assert_eq!(
        out["multiValueHeaders"]["content-type"],
        json!(["application/json"]),
        "REST answers use multiValueHeaders: {out}"
    );

    // create a server (base64 body, mixed-case headers) with the bootstrap key from Secrets Manager
    let create = load_event("rest-admin-create-server", &vars).unwrap();
    let out = emu.invoke_json("admin-api", &create).await.unwrap();
    assert_eq!(out["statusCode"], 201, "{out}");
    assert_eq!(result_body(&out)["url"], p.everything.as_str());
    // then GET lists it
    let out = emu
        .invoke_json("admin-api", &admin_event(&create, "GET", "servers", None))
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    let listed = result_body(&out);
    assert!(
        listed["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "everything"),
        "{listed}"
    );
    // and an API key for the MCP fixtures
    let key_body = json!({"owner": "fixture@example.com", "name": "fixtures"});
    let out = emu
        .invoke_json(
            "admin-api",
            &admin_event(&create, "POST", "api-keys", Some(key_body)),
        )
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 201, "{out}");
    let api_key = result_body(&out)["key"].as_str().unwrap().to_owned();
    // and a group that admits that key's owner (access is denied by default)
    let group = json!({"name": "fixtures", "servers": ["everything"],
        "members": {"users": ["fixture@example.com"]}});
    let out = emu
        .invoke_json(
            "admin-api",
            &admin_event(&create, "POST", "server-groups", Some(group)),
        )
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 201, "{out}");

    // MCP initialize over REST (v1) and HTTP API (v2) events, answered by server-everything
    for (fixture, version) in [
        ("rest-mcp-initialize", "1.0"),
        ("http-v2-mcp-initialize", "2.0"),
    ] {
        let event = load_event(fixture, &[("__API_KEY__", &api_key)]).unwrap();
        let out = emu.invoke_json("mcp-proxy", &event).await.unwrap();
        assert_eq!(out["statusCode"], 200, "{fixture}: {out}");
        let msg = mcp_message(&proxy_body(&out).unwrap()).unwrap();
        assert_eq!(msg["id"], 1, "{fixture}: {msg}");
        assert!(
            msg["result"]["serverInfo"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{fixture}: {msg}"
        );
        assert!(
            msg["result"]["capabilities"]["tools"].is_object(),
            "{fixture}: {msg}"
        );
        if version == "2.0" {
            assert!(
                out.get("multiValueHeaders")
                    .is_none_or(|m| m.as_object().is_none_or(|m| m.is_empty())),
                "v2 answers use headers: {out}"
            );
        }
    }

    // the EventBridge schedule: token-refresh answers a sweep report
    let out = emu
        .invoke_json(
            "token-refresh",
            &load_event("schedule-token-refresh", &[]).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"due": 0, "refreshed": 0, "failed": 0, "skipped": 0})
    );

    // clean up for the walk-through, which registers `everything` itself (the group first:
    // a server some group names cannot be deleted)
    let out = emu
        .invoke_json(
            "admin-api",
            &admin_event(&create, "DELETE", "server-groups/fixtures", None),
        )
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 204, "{out}");
    let out = emu
        .invoke_json(
            "admin-api",
            &admin_event(&create, "DELETE", "servers/everything", None),
        )
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 204, "{out}");
}

/// `GET /me` (a route of its own: API Gateway's `{proxy+}` needs a segment) and
/// `GET /me/api-keys` reach the admin API through `gw` and answer for the key's owner.
async fn me_routes(gw: &e2e::lambda::FakeApiGateway, api_key: &str) {
    let (s, me) = call_json(Method::GET, &gw.url("/me"), Some(api_key), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{:?} GET /me: {me}", gw.kind);
    assert_eq!(me["user"], "alice@example.com", "{me}");
    assert_eq!(me["roles"], json!(["user"]), "{me}");
    let (s, keys) = call_json(Method::GET, &gw.url("/me/api-keys"), Some(api_key), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{:?} GET /me/api-keys: {keys}", gw.kind);
    let owners: Vec<&Value> = keys["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["owner"])
        .collect();
    assert!(
        !owners.is_empty() && owners.iter().all(|o| *o == "alice@example.com"),
        "{keys}"
    );
}

/// The README walk-through through the REST API (mcp-proxy streaming, as deployed); returns a
/// user's API key.
async fn rest_walkthrough(stack: &LambdaStack, p: &Peers) -> String {
    let _t = Step::start("REST walk-through");
    let gw = &stack.rest;
    let secret_ref = stack.aws.upstream_secret_ref.as_str();

    let api_key = walkthrough(&Walkthrough {
        base: &gw.base,
        admin_key: &stack.aws.admin_key,
        everything_url: &p.everything,
        echo_url: &p.echo,
        secret_ref,
        secret_value: UPSTREAM_SECRET,
    })
    .await;

    // AND the REST /mcp answer really was streamed (chunked by the fake gateway, which
    // relays a streamed body as it comes), with the initialize result inside
    let (s, headers, msg) = call(
        Method::POST,
        &gw.mcp_url("everything"),
        Some(&api_key),
        Some(("application/json", INITIALIZE)),
    )
    .await;
    assert_eq!(s, 200, "{msg}");
    assert_eq!(
        headers
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("chunked"),
        "{headers:?}"
    );
    assert!(msg["result"]["serverInfo"].is_object(), "{msg}");
    me_routes(gw, &api_key).await;
    api_key
}

/// The web console through the REST API (stage prefix, cookies in multi-value headers) in
/// headless Chromium: the admin signs in with the admin key and edits a server through the
/// admin pages; the walk-through's user signs in with their key and sees their endpoints.
async fn console(stack: &LambdaStack, api_key: &str) {
    let _t = Step::start("console in a browser through the REST API");
    let base = &stack.rest.base;
    let sign_in = |key: &str| {
        vec![
            json!({"goto": format!("{base}/console")}),
            json!({"url": true, "as": "login_url"}),
            json!({"fill": "#key", "value": key}),
            json!({"click": "#key-submit", "navigates": true}),
            json!({"url": true, "as": "home"}),
            json!({"text": "#whoami", "as": "whoami"}),
            json!({"count": "#nav-admin", "as": "admin_links"}),
        ]
    };
    let mut steps = sign_in(&stack.aws.admin_key);
    steps.extend([
        json!({"screenshot": "01-admin-home"}),
        json!({"click": "#nav-admin", "navigates": true}),
        json!({"click": "#admin-servers", "navigates": true}),
        json!({"count": "#item-everything", "as": "everything"}),
        json!({"screenshot": "02-servers"}),
        json!({"click": "#item-echo a.edit", "navigates": true}),
        json!({"click": "#save", "navigates": true}),
        json!({"text": "#flash", "as": "saved"}),
        json!({"screenshot": "03-server-saved"}),
    ]);
    let seen = e2e::browser::run("lambda-console", json!(steps))
        .await
        .unwrap();
    let v = &seen["values"];
    assert_eq!(v["login_url"], format!("{base}/console/login"), "{v}");
    assert_eq!(v["home"], format!("{base}/console"), "{v}");
    assert_eq!(v["admin_links"], 1, "{v}");
    assert_eq!(v["everything"], 1, "{v}");
    assert_eq!(v["saved"], "Saved.", "{v}");

    let mut steps = sign_in(api_key);
    steps.extend([
        json!({"count": "#endpoints tbody tr", "as": "endpoints"}),
        json!({"count": "#row-everything", "as": "everything"}),
        json!({"screenshot": "04-user-home"}),
    ]);
    let seen = e2e::browser::run("lambda-console", json!(steps))
        .await
        .unwrap();
    let v = &seen["values"];
    assert_eq!(v["admin_links"], 0, "{v}");
    assert_eq!(v["everything"], 1, "{v}");
}

/// Per-user OAuth2 through the Lambdas behind the REST API: mcp-proxy answers an
/// unconnected user with a connect link at the stage URL; oauth-callback shows the connect
/// page, registers the gateway's client at the provider (RFC 7591, its secret sealed in
/// DynamoDB), redirects, takes the callback and stores the grant; mcp-proxy then calls the
/// upstream with the user's own token; admin-api's disconnect revokes it at the provider.
/// Its own oidc-provider and JWT-protected Python MCP server (`e2e::oauth_peers`).
async fn oauth_connect(stack: &LambdaStack, api_key: &str) {
    let Some(peers) = e2e::oauth_peers::start("600", &[]).await.unwrap() else {
        return;
    };
    let _t = Step::start("per-user OAuth2 connect through the REST API");
    let gw = &stack.rest;
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let url = gw.url(path);
        async move { call_json(method, &url, Some(&stack.aws.admin_key), body).await }
    };
    // GIVEN an oauth2 server without a client id, and a group that admits everyone to it
    let (s, b) = admin(
        Method::POST,
        "/admin/servers",
        Some(json!({"name": "notes-dcr", "url": peers.upstream,
            "auth": {"type": "oauth2", "scopes": ["mcp:read"]}})),
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{b}");
    let (s, b) = admin(
        Method::POST,
        "/admin/server-groups",
        Some(
            json!({"name": "oauth-users", "servers": ["notes-dcr"], "members": {"everyone": true}}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{b}");

    // WHEN alice, not connected, initializes THEN the gateway answers with a connect link at
    // the stage URL (once mcp-proxy's policy cache has seen the group)
    let changed = Instant::now();
    let link = once_the_policy_is_seen(changed, "the oauth-users group", || async {
        let (s, _, msg) = call(
            Method::POST,
            &gw.mcp_url("notes-dcr"),
            Some(api_key),
            Some(("application/json", INITIALIZE)),
        )
        .await;
        let instructions = msg["result"]["instructions"].as_str().unwrap_or_default();
        match instructions.split("open ").nth(1) {
            Some(rest) if s == 200 => Ok(rest.split_whitespace().next().unwrap().to_owned()),
            _ => Err(format!("{s} {msg}")),
        }
    })
    .await;
    assert!(
        link.starts_with(&format!("{}/oauth/connect/notes-dcr?link=", gw.base)),
        "{link}"
    );
    // AND following it in a browser (the connect page, the provider's login and consent, the
    // callback) connects her account
    let seen = e2e::oauth_peers::browse(&link, "", "alice").await.unwrap();
    assert_eq!(
        seen["status"],
        200,
        "{seen}\n{}",
        stack.buffered.log_tail(40)
    );
    assert!(
        seen["body"]
            .as_str()
            .unwrap_or_default()
            .contains("notes-dcr"),
        "{seen}"
    );
    let store = stack.aws.store();
    let grant = store
        .get_grant("alice@example.com", "notes-dcr")
        .await
        .unwrap()
        .expect("a grant in DynamoDB");
    assert_eq!(grant.status, mcpgw::domain::GrantStatus::Active);
    // AND the flow is bound to one browser behind the stage too: the connect page's cookie
    // is kept to the stage's OAuth routes, and its continue link in another browser is
    // refused, used up, storing nothing
    let (s, _, fresh) = call(
        Method::POST,
        &gw.url("/me/connections/notes-dcr/link"),
        Some(api_key),
        None,
    )
    .await;
    assert_eq!(s, 201, "{fresh}");
    let (hers, other) = (
        e2e::http_browser::Browser::new().unwrap(),
        e2e::http_browser::Browser::new().unwrap(),
    );
    let page = hers.get(fresh["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let c = hers
        .cookie("mcpgw_connect_notes-dcr")
        .expect("the connect cookie");
    assert_eq!(
        (c.path.clone(), c.http_only, c.same_site.as_deref()),
        (format!("/{STAGE}/oauth/"), true, Some("Lax")),
        "{c:?}"
    );
    let go = page.link("continue").unwrap();
    assert!(
        go.starts_with(&format!("{}/oauth/connect/notes-dcr?go=", gw.base)),
        "{go}"
    );
    let refused = other.get(&go).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(hers.get(&go).await.unwrap().status, 400, "used up");
    // THEN her calls reach the upstream with her own account's token
    let who = e2e::oauth_peers::whoami(&gw.mcp_url("notes-dcr"), api_key)
        .await
        .unwrap();
    assert_eq!(who["sub"], "alice", "{who}");
    // AND disconnecting revokes it at the provider
    let (s, _, body) = call(
        Method::DELETE,
        &gw.url("/me/connections/notes-dcr"),
        Some(api_key),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["provider_revocation"]["status"], "revoked", "{body}");
    assert!(
        store
            .get_grant("alice@example.com", "notes-dcr")
            .await
            .unwrap()
            .is_none()
    );
    // clean up: the steps that follow do not expect this server
    for path in [
        "/admin/server-groups/oauth-users",
        "/admin/servers/notes-dcr",
    ] {
        let (s, b) = admin(Method::DELETE, path, None).await.unwrap();
        assert_eq!(s, 204, "{path}: {b}");
    }
}

/// The same through the HTTP API (payload 2.0, buffered).
async fn http_walkthrough(stack: &LambdaStack, api_key: &str) {
    let _t = Step::start("HTTP API walk-through");
    let gw = &stack.http;
    // The buffered mcp-proxy instance behind the HTTP API last read the policy during the raw
    // fixtures, before the walk-through's group existed; admin-api (another instance) cannot
    // tell it. It must see the group within twice the policy TTL, and until then answer as
    // for an unknown endpoint. (The group was created before this point: counting from here
    // only gives it longer.)
    let changed = Instant::now();
    once_the_policy_is_seen(changed, "the walk-through's group", || async {
        let (s, _, msg) = call(
            Method::POST,
            &gw.mcp_url("echo"),
            Some(api_key),
            Some(("application/json", INITIALIZE)),
        )
        .await;
        match s {
            200 => Ok(()),
            404 => Err(format!("{s} {msg}")),
            _ => panic!("neither the old nor the new policy's answer: {s} {msg}"),
        }
    })
    .await;
    let out = python_mcp_call(&gw.mcp_url("echo"), api_key, "whoami", json!({}), "auto")
        .await
        .unwrap();
    let seen: Value = serde_json::from_str(out["content"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        seen["authorization"], UPSTREAM_SECRET,
        "upstream saw: {seen}"
    );
    assert!(!out.to_string().contains(api_key), "{out}");
    let out = python_mcp_call(
        &gw.mcp_url("everything"),
        api_key,
        "get-sum",
        json!({"a": 20, "b": 22}),
        "auto",
    )
    .await
    .unwrap();
    assert!(out["content"][0].as_str().unwrap().contains("42"), "{out}");

    // buffered: a Content-Length, no chunking
    let (s, headers, msg) = call(
        Method::POST,
        &gw.mcp_url("everything"),
        Some(api_key),
        Some(("application/json", INITIALIZE)),
    )
    .await;
    assert_eq!(s, 200, "{msg}");
    assert!(headers.get("content-length").is_some(), "{headers:?}");
    let (s, body) = call_json(
        Method::GET,
        &gw.url("/admin/servers"),
        Some(&stack.aws.admin_key),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["servers"].as_array().unwrap().len(), 2, "{body}");
    me_routes(gw, api_key).await;
}

/// Identity-provider JWTs, the provider configured only by the template's parameters
/// (`MCPGW_IDP_*`, nothing registered through the admin API): real logins at oidc-provider
/// give alice a token for the REST echo endpoint, which calls a tool through the REST API
/// (streaming mcp-proxy), and one for the gateway, which `GET /me` through the HTTP API
/// (admin-api) knows her by; the endpoint's token is refused elsewhere.
/// The token-refresh function on its schedule, with a real due grant in the moto table: it
/// redeems the refresh token at the real provider (oidc-provider), writes the new tokens
/// with the version check and reports it; a second run right after refreshes nothing.
async fn scheduled_refresh(stack: &LambdaStack, oidc: &OidcPeer) {
    let _t = Step::start("scheduled token refresh");
    let resource = "https://notes.example.com/mcp";
    // GIVEN an oauth2 server registered through the admin API, its client secret in Secrets
    // Manager
    let secret = stack
        .aws
        .operator_secret(&oidc.client_secret)
        .await
        .unwrap();
    let server = json!({"name": "notes-oauth", "url": "http://127.0.0.1:9/mcp", "auth": {
        "type": "oauth2", "client_id": oidc.client_id, "client_secret": secret,
        "authorization_url": format!("{}/auth", oidc.issuer),
        "token_url": format!("{}/token", oidc.issuer), "resource": resource}});
    let (s, _, body) = call(
        Method::POST,
        &stack.rest.url("/admin/servers"),
        Some(&stack.aws.admin_key),
        Some(("application/json", &server.to_string())),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    // AND alice's grant from a real login, due for refresh, sealed with the stack's keyring
    let tokens = oidc.login_tokens(resource, "alice").await.unwrap();
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token");
    let ring = mcpgw::crypto::Keyring::from_json(&stack.aws.keyring_document).unwrap();
    let now = mcpgw::clock::SystemClock.now();
    let set = mcpgw::grants::TokenSet {
        access_token: tokens["access_token"].as_str().unwrap().to_owned(),
        refresh_token: Some(refresh.to_owned()),
        expires_at: Some(now + 120),
    };
    let user = "alice@example.com";
    let mut grant = mcpgw::grants::flow::grant_record(
        &ring,
        user,
        "notes-oauth",
        &set,
        vec![],
        None,
        now - 3600,
    )
    .unwrap();
    grant.refresh_at = Some(now - 10);
    let store = stack.aws.store();
    store.save_grant_if_version(&grant, None).await.unwrap();

    // WHEN the schedule fires THEN the grant is refreshed at the provider
    let event = load_event("schedule-token-refresh", &[]).unwrap();
    let out = stack
        .buffered
        .invoke_json("token-refresh", &event)
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"due": 1, "refreshed": 1, "failed": 0, "skipped": 0}),
        "{}",
        stack.buffered.log_tail(40)
    );
    let after = store.get_grant(user, "notes-oauth").await.unwrap().unwrap();
    assert_eq!(after.version, 3, "the refresher's claim, then its result");
    assert_eq!(after.refresh_lease_until, None);
    assert!(after.last_refresh_at.is_some() && after.last_error.is_none());
    let new =
        mcpgw::grants::TokenSet::open(&ring, &after.sealed_tokens, user, "notes-oauth").unwrap();
    assert_ne!(new.access_token, set.access_token, "a new access token");
    let claims = e2e::jwt_claims(&new.access_token).unwrap();
    assert_eq!(claims["sub"], "alice", "{claims}");
    // AND a second run right after refreshes nothing
    let again = stack
        .buffered
        .invoke_json("token-refresh", &event)
        .await
        .unwrap();
    assert_eq!(again["refreshed"], 0, "{again}");
    assert_eq!(again["failed"], 0, "{again}");
    assert_eq!(
        store
            .get_grant(user, "notes-oauth")
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
    // clean up: the walk-throughs that follow do not expect this server
    store.delete_grant(user, "notes-oauth").await.unwrap();
    let (s, _, body) = call(
        Method::DELETE,
        &stack.rest.url("/admin/servers/notes-oauth"),
        Some(&stack.aws.admin_key),
        None,
    )
    .await;
    assert_eq!(s, 204, "{body}");
}

async fn idp_tokens(stack: &LambdaStack, oidc: &OidcPeer) {
    let _t = Step::start("IdP JWTs");
    let rest = &stack.rest;
    let endpoint = rest.mcp_url("echo");
    // GIVEN alice's tokens from real logins: `aud` the endpoint, and `aud` the gateway's base
    // URL (its MCPGW_PUBLIC_URL, the REST API's; the HTTP API's functions share it)
    let (for_endpoint, for_gateway) = tokio::try_join!(
        oidc.login(&endpoint, "alice"),
        oidc.login(&rest.base, "alice")
    )
    .unwrap();

    // THEN the endpoint's protected-resource metadata names the issuer, and only it
    let metadata = rest.url("/.well-known/oauth-protected-resource/mcp/echo");
    let (s, _, doc) = call(Method::GET, &metadata, None, None).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["resource"], endpoint.as_str(), "{doc}");
    assert_eq!(doc["authorization_servers"], json!([oidc.issuer]), "{doc}");

    // AND the endpoint's token initializes a session and calls a tool through the REST API
    let (s, headers, msg) = call(
        Method::POST,
        &endpoint,
        Some(&for_endpoint),
        Some(("application/json", INITIALIZE)),
    )
    .await;
    assert_eq!(s, 200, "{msg}");
    assert!(msg["result"]["serverInfo"].is_object(), "{msg}");
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a gateway session id")
        .to_owned();
    let whoami = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
    let (s, _, msg) = call_with(
        Method::POST,
        &endpoint,
        Some(&for_endpoint),
        &[("Mcp-Session-Id", &session)],
        Some(("application/json", whoami)),
    )
    .await;
    assert_eq!(s, 200, "{msg}");
    assert_eq!(msg["id"], 2, "{msg}");
    assert_ne!(msg["result"]["isError"], true, "{msg}");
    let seen: Value =
        serde_json::from_str(msg["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    // the upstream saw the gateway's header secret, never the caller's JWT
    assert_eq!(
        seen["authorization"], UPSTREAM_SECRET,
        "upstream saw: {seen}"
    );
    assert!(!msg.to_string().contains(&for_endpoint), "{msg}");

    // AND the gateway's token shows alice on /me through the HTTP API, admin by her group
    let me_url = stack.http.url("/me");
    let (s, me) = call_json(Method::GET, &me_url, Some(&for_gateway), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{me}");
    assert_eq!(
        (&me["user"], &me["subject"], &me["service_account"]),
        (&json!("alice@example.com"), &json!("alice"), &json!(false)),
        "{me}"
    );
    assert_eq!(
        me["auth"],
        json!({"type": "jwt", "issuer": oidc.issuer, "provider": "default"}),
        "{me}"
    );
    assert_eq!(me["groups"], json!(["eng", ADMIN_GROUP]), "{me}");
    assert!(
        me["roles"].as_array().unwrap().iter().any(|r| r == "admin"),
        "{ADMIN_GROUP} is IdpAdminGroups: {me}"
    );

    // AND the endpoint's token is refused for another endpoint (REST, streaming mcp-proxy)
    // with a challenge pointing at that endpoint's metadata, and on /me (HTTP API, admin-api)
    let (s, headers, body) = call(
        Method::POST,
        &rest.mcp_url("everything"),
        Some(&for_endpoint),
        Some(("application/json", INITIALIZE)),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthenticated")),
        "echo's token on everything: {body}"
    );
    let challenge = headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let pointer = format!(
        "resource_metadata=\"{}\"",
        rest.url("/.well-known/oauth-protected-resource/mcp/everything")
    );
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(&pointer)
            && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
    let (s, body) = call_json(Method::GET, &me_url, Some(&for_endpoint), None)
        .await
        .unwrap();
    assert_eq!(s, 401, "echo's token on /me: {body}");
}

/// Bad input through the gateways: JSON errors from the functions, API Gateway's own answers
/// for what matches no route.
async fn bad_input(stack: &LambdaStack) {
    let _t = Step::start("bad input");
    let rest = &stack.rest;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    // no key on /mcp: 401 JSON with a challenge naming the metadata URL under the public URL
    // (stage included), through the streaming integration and the HTTP API alike
    for url in [rest.mcp_url("x"), stack.http.mcp_url("x")] {
        let (s, headers, body) =
            call(Method::POST, &url, None, Some(("application/json", ping))).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "{url}: {body}"
        );
        let challenge = headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let metadata = rest.url("/.well-known/oauth-protected-resource/mcp/x");
        // (and the scopes to log in with: the identity scopes the template's provider lists,
        // issue 24)
        assert_eq!(
            challenge,
            format!(
                "Bearer resource_metadata=\"{metadata}\", scope=\"email groups openid profile\""
            ),
            "{url}"
        );
        // the metadata document itself is reachable there
        let (s, _, doc) = call(Method::GET, &metadata, None, None).await;
        assert_eq!(
            (s, doc["resource"].as_str()),
            (200, Some(rest.mcp_url("x").as_str())),
            "{doc}"
        );
        assert_eq!(
            doc["scopes_supported"],
            serde_json::json!(["email", "groups", "openid", "profile"]),
            "{doc}"
        );
    }
    // an unknown route under a function: the function's 404 JSON
    let admin = Some(stack.aws.admin_key.as_str());
    let (s, _, body) = call(Method::GET, &rest.url("/admin/nope"), admin, None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    // oauth-callback's pages, through both APIs: connecting a server that is not an OAuth2
    // server is a 404 page, a callback without state a 400 page
    for (url, status) in [
        (rest.url("/oauth/connect/echo"), 404),
        (stack.http.url("/oauth/callback/echo"), 400),
    ] {
        let (s, headers, _) = call(Method::GET, &url, admin, None).await;
        assert_eq!(s, status, "{url}");
        assert!(
            headers
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html")),
            "{url}: {headers:?}"
        );
    }
    // no route at all: API Gateway answers by itself
    let (s, _, body) = call(Method::GET, &rest.url("/nope"), None, None).await;
    assert_eq!(
        (s, body),
        (403, json!({"message": "Missing Authentication Token"}))
    );
    let (s, _, body) = call(Method::GET, &stack.http.url("/nope"), None, None).await;
    assert_eq!((s, body), (404, json!({"message": "Not Found"})));
    // malformed admin JSON: 400 JSON
    let (s, _, body) = call(
        Method::POST,
        &rest.url("/admin/servers"),
        admin,
        Some(("application/json", r#"{"name": "#)),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    // an upstream at the instance metadata address (in a decimal spelling): 422 naming the
    // rule, in Lambda as locally; nothing is stored
    let metadata = json!({"name": "imds", "url": "http://2852039166/latest/meta-data/",
        "auth": {"type": "none"}})
    .to_string();
    let (s, _, body) = call(
        Method::POST,
        &rest.url("/admin/servers"),
        admin,
        Some(("application/json", &metadata)),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("egress_denied")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("169.254.169.254") && m.contains("cloud metadata")),
        "{body}"
    );
    let (s, _, _) = call(Method::GET, &rest.url("/admin/servers/imds"), admin, None).await;
    assert_eq!(s, 404);
}

/// Response streaming beyond the REST API: the emulator's function URL, and what a REST
/// streaming integration makes of a buffered binary.
async fn streaming(stack: &LambdaStack, api_key: &str) {
    let _t = Step::start("streaming");
    // the function URL of the streaming mcp-proxy (the emulator builds a 2.0 event)
    let url = stack.streaming.function_url("mcp-proxy", "/mcp/everything");
    // the gateway answers initialize itself (JSON, with its sealed session id) ...
    let (s, headers, msg) = call(
        Method::POST,
        &url,
        Some(api_key),
        Some(("application/json", INITIALIZE)),
    )
    .await;
    assert_eq!(s, 200, "{msg}");
    assert!(msg["result"]["serverInfo"].is_object(), "{msg}");
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a gateway session id")
        .to_owned();
    // ... and a call in that session streams server-everything's SSE answer through
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(&url)
        .bearer_auth(api_key)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("Mcp-Session-Id", &session)
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_eq!(
        headers
            .get("lambda-runtime-function-response-mode")
            .map(|v| v.to_str().unwrap()),
        Some("streaming")
    );
    assert!(
        headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream")),
        "{headers:?}"
    );
    let msg = mcp_message(&resp.bytes().await.unwrap()).unwrap();
    assert!(msg["result"]["tools"].is_array(), "{msg}");

    // a REST STREAM integration in front of a buffered mcp-proxy (MCPGW_LAMBDA_STREAMING unset)
    // cannot work: API Gateway never sees a metadata prelude
    let gw = BoundGateway::bind(ApiKind::Rest {
        stage: STAGE.into(),
    })
    .await
    .unwrap();
    let gw = gw
        .serve(
            FUNCTIONS
                .iter()
                .map(|&f| (f, Integration::new(&stack.buffered, Transfer::Stream)))
                .collect(),
        )
        .unwrap();
    let (s, _, body) = call(
        Method::POST,
        &gw.mcp_url("everything"),
        Some(api_key),
        Some(("application/json", INITIALIZE)),
    )
    .await;
    assert_eq!(
        (s, body),
        (502, json!({"message": "Internal server error"}))
    );
}

/// Without AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH, lambda_http prefixes REST paths with the
/// stage and the routers answer 404: the variable is required for a REST deployment.
async fn stage_prefix(stack: &LambdaStack, p: &Peers) -> Vec<u32> {
    let _t = Step::start("stage prefix");
    let env: Vec<(String, String)> = stack
        .function_env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH")
        .collect();
    let emu = Emulator::start(&p.cargo_lambda, &env).await.unwrap();
    let healthz = load_event("rest-healthz", &[]).unwrap();
    let out = emu.invoke_json("admin-api", &healthz).await.unwrap();
    assert_eq!(
        out["statusCode"], 404,
        "the router saw /{STAGE}/healthz: {out}"
    );
    // HTTP API events ($default stage) are not affected
    let mut v2 = load_event("http-v2-mcp-initialize", &[("__API_KEY__", "x")]).unwrap();
    v2["rawPath"] = json!("/healthz");
    v2["requestContext"]["http"]["method"] = json!("GET");
    v2["requestContext"]["http"]["path"] = json!("/healthz");
    set_body(&mut v2, None, false);
    let out = emu.invoke_json("admin-api", &v2).await.unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    emu.process_ids()
}

/// Rate limits under the Lambda functions, on DynamoDB: a per-user limit of 3 a minute, written
/// through the admin function, is enforced by the mcp-proxy functions of both emulators (two
/// processes, one table): of 10 concurrent `tools/call`s spread over the REST and HTTP APIs
/// exactly 3 pass, the rest answer `isError` with a retry time; the catalog shows none left.
/// (moto applies conditional writes without a lock; the functions run one request at a time
/// per instance, so at most two of its writes race, rarely enough for this check.)
async fn rate_limits(stack: &LambdaStack, api_key: &str) {
    let _t = Step::start("rate limits");
    let (s, body) = call_json(
        Method::POST,
        &stack.rest.url("/admin/rate-limits"),
        Some(&stack.aws.admin_key),
        Some(
            json!({"name": "lambda-echo", "mode": "enforce", "per": "user",
            "match": {"endpoints": ["everything"], "tools": ["echo"]},
            "limits": [{"count": 3, "window": "1m"}]}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{body}");
    // The proxies read rules through their policy-TTL cache.
    tokio::time::sleep(POLICY_REACHES_ALL).await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let gw = if i % 2 == 0 { &stack.rest } else { &stack.http };
        clients.push(
            e2e::mcp::McpClient::connect(&gw.mcp_url("everything"), api_key, e2e::mcp::SESSION)
                .await
                .unwrap(),
        );
    }
    let calls = clients.into_iter().map(|mut c| async move {
        let a = c.call_tool("echo", json!({"message": "hi"})).await.unwrap();
        a.result().unwrap().clone()
    });
    let results = futures_util::future::join_all(calls).await;
    let limited: Vec<&Value> = results.iter().filter(|r| r["isError"] == true).collect();
    assert_eq!(results.len() - limited.len(), 3, "{results:?}");
    for r in limited {
        let text = r["content"][0]["text"].as_str().unwrap_or_default();
        let secs: u64 = text
            .split("retry in ")
            .nth(1)
            .and_then(|t| t.strip_suffix(" s"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no retry time in {r}"));
        assert!((1..=20).contains(&secs), "{text}");
    }
    let (s, cat) = call_json(
        Method::GET,
        &stack.http.url("/me/catalog"),
        Some(api_key),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{cat}");
    let echo = cat["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "everything")
        .flat_map(|e| e["tools"].as_array().unwrap())
        .find(|t| t["name"] == "echo")
        .cloned()
        .unwrap_or_default();
    assert_eq!(echo["rate_limits"][0]["remaining"], 0, "{echo}");
    // The steps after this one call tools as the same user: the rule goes, and every proxy
    // instance has dropped it before they run.
    let (s, body) = call_json(
        Method::DELETE,
        &stack.rest.url("/admin/rate-limits/lambda-echo"),
        Some(&stack.aws.admin_key),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 204, "{body}");
    tokio::time::sleep(POLICY_REACHES_ALL).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_mode_end_to_end() {
    let Some(p) = peers() else { return };
    let total = Step::start("total");

    let built = e2e::lambda::build_functions().await.unwrap();
    eprintln!(
        "[lambda_mode] cargo build of the functions: {:.1}s",
        built.as_secs_f64()
    );
    let stack = {
        let _t = Step::start("start moto resources, two emulators, two gateways");
        // The oidc-provider peer as the template's identity provider; else the template's
        // defaults (no provider).
        let idp = match &p.oidc {
            Some(oidc) => IdpParameters {
                issuer: oidc.issuer.clone(),
                admin_groups: ADMIN_GROUP.into(),
                ..IdpParameters::default()
            },
            None => IdpParameters::default(),
        };
        LambdaStack::start(&p.cargo_lambda, &p.moto, UPSTREAM_SECRET, idp)
            .await
            .unwrap()
    };

    raw_fixtures(&stack, &p).await;
    let api_key = rest_walkthrough(&stack, &p).await;
    rate_limits(&stack, &api_key).await;
    http_walkthrough(&stack, &api_key).await;
    if e2e::browser::available() {
        console(&stack, &api_key).await;
    }
    oauth_connect(&stack, &api_key).await;
    if let Some(oidc) = &p.oidc {
        idp_tokens(&stack, oidc).await;
        scheduled_refresh(&stack, oidc).await;
    }
    bad_input(&stack).await;
    streaming(&stack, &api_key).await;
    let mut pids = stage_prefix(&stack, &p).await;

    // every function ran as its own process under the emulator...
    let names: Vec<String> = stack
        .buffered
        .process_ids()
        .into_iter()
        .filter_map(process_name)
        .collect();
    for f in FUNCTIONS {
        assert!(
            names.iter().any(|n| n == f),
            "{f} is not running under the emulator: {names:?}"
        );
    }
    pids.extend(stack.process_ids());
    // ...and none of them outlives the stack
    drop(stack);
    let left: Vec<u32> = pids.into_iter().filter(|p| process_alive(*p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    drop(total);
}
