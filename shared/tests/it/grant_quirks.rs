//! Provider quirks, each against a configurable fake authorization server (in process, over
//! real HTTP): what the refresh path sends and how it stores what comes back. The real
//! provider (oidc-provider) is exercised end to end in `tests/tests/it/oauth_connect.rs`; these
//! are the behaviours it does not show (Salesforce, GitHub, Entra, Google, outages).

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use mcpgw::domain::{Grant, GrantStatus, McpServer};
use mcpgw::grants::{GrantError, TokenSet, flow, tokens};
use mcpgw::state::AppState;
use mcpgw::testing::local_state;
use serde_json::{Value, json};

/// How the fake token endpoint answers.
#[derive(Clone, Default)]
struct Behaviour {
    /// The refresh answer leaves out `refresh_token` (no rotation).
    omit_refresh_token: bool,
    /// The answer leaves out `expires_in` (Salesforce; GitHub OAuth apps never expire).
    omit_expires_in: bool,
    /// Answer this instead of tokens.
    error: Option<(u16, Value)>,
}

/// One posted form, as (name, value) pairs.
type Form = Vec<(String, String)>;

struct Fake {
    url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Every form posted to the token endpoint.
    forms: Arc<Mutex<Vec<Form>>>,
}

async fn fake_provider() -> Fake {
    let behaviour = Arc::new(Mutex::new(Behaviour::default()));
    let forms: Arc<Mutex<Vec<Form>>> = Arc::default();
    let (b, f) = (behaviour.clone(), forms.clone());
    let counter = Arc::new(Mutex::new(0u32));
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let (b, f, counter) = (b.clone(), f.clone(), counter.clone());
            async move {
                let form: Form = url::form_urlencoded::parse(body.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                f.lock().unwrap().push(form);
                let b = b.lock().unwrap().clone();
                if let Some((code, v)) = b.error {
                    return (StatusCode::from_u16(code).unwrap(), axum::Json(v));
                }
                let n = {
                    let mut c = counter.lock().unwrap();
                    *c += 1;
                    *c
                };
                let mut answer = json!({"access_token": format!("AT{n}"), "token_type": "Bearer",
                    "expires_in": 3600, "refresh_token": format!("RT{n}"), "scope": "read offline_access"});
                if b.omit_refresh_token {
                    answer.as_object_mut().unwrap().remove("refresh_token");
                }
                if b.omit_expires_in {
                    answer.as_object_mut().unwrap().remove("expires_in");
                }
                (StatusCode::OK, axum::Json(answer))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fake {
        url: format!("http://{addr}"),
        behaviour,
        forms,
    }
}

const USER: &str = "alice@example.com";

fn server(token_url: &str) -> McpServer {
    serde_json::from_value(json!({
        "name": "crm", "url": "http://127.0.0.1:9/mcp", "created_at": 0, "updated_at": 0,
        "auth": {"type": "oauth2", "client_id": "gw", "scopes": ["read", "offline_access"],
                 "authorization_url": "http://127.0.0.1:9/authorize", "token_url": token_url,
                 "resource": "https://crm.example.com/mcp",
                 "extra_params": {"access_type": "offline", "prompt": "consent"}}
    }))
    .unwrap()
}

/// A grant whose access token `expires_at` (None: never), with refresh token `refresh`.
async fn stored_grant(state: &AppState, expires_at: Option<i64>, refresh: Option<&str>) -> Grant {
    let ring = state.keyring.get().await.unwrap();
    let t = TokenSet {
        access_token: "AT0".into(),
        refresh_token: refresh.map(str::to_owned),
        expires_at,
    };
    let g = flow::grant_record(
        &ring,
        USER,
        "crm",
        &t,
        vec!["read".into()],
        None,
        state.clock.now() - 3600,
    )
    .unwrap();
    state.store.save_grant_if_version(&g, None).await.unwrap();
    g
}

async fn now_stored(state: &AppState) -> (Grant, TokenSet) {
    let g = state.store.get_grant(USER, "crm").await.unwrap().unwrap();
    let ring = state.keyring.get().await.unwrap();
    let t = TokenSet::open(&ring, &g.sealed_tokens, USER, "crm").unwrap();
    (g, t)
}

fn field<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_refresh_without_refresh_token_keeps_the_stored_one_and_sends_scope_and_resource() {
    let fake = fake_provider().await;
    fake.behaviour.lock().unwrap().omit_refresh_token = true;
    let (state, _dir) = local_state(&[], &[]);
    let s = server(&format!("{}/token", fake.url));
    stored_grant(&state, Some(state.clock.now() - 10), Some("RT-original")).await;

    let token = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap();
    assert_eq!(token, "AT1");
    let (g, t) = now_stored(&state).await;
    assert_eq!(t.refresh_token.as_deref(), Some("RT-original"));
    assert_eq!(g.version, 3, "the claim, then the refreshed tokens");
    assert_eq!(g.refresh_lease_until, None, "the claim released");
    assert!(g.last_refresh_at.is_some() && g.last_error.is_none());
    assert!(g.refresh_at.is_some(), "still refreshable");
    // Entra refuses refreshes without scope; RFC 8707 resource on refresh too
    let forms = fake.forms.lock().unwrap();
    let f = &forms[0];
    assert_eq!(field(f, "grant_type"), Some("refresh_token"));
    assert_eq!(field(f, "refresh_token"), Some("RT-original"));
    assert_eq!(field(f, "scope"), Some("read offline_access"));
    assert_eq!(field(f, "resource"), Some("https://crm.example.com/mcp"));
    assert_eq!(field(f, "client_id"), Some("gw"));
}

#[tokio::test]
async fn a_token_without_expiry_is_used_until_the_upstream_refuses_it() {
    let fake = fake_provider().await;
    fake.behaviour.lock().unwrap().omit_expires_in = true;
    let (state, _dir) = local_state(&[], &[]);
    let s = server(&format!("{}/token", fake.url));
    stored_grant(&state, None, Some("RT0")).await;
    let g = state.store.get_grant(USER, "crm").await.unwrap().unwrap();
    assert_eq!(g.refresh_at, None, "nothing for the sweeper to do");

    // Used as is, however often, without a refresh
    for _ in 0..3 {
        assert_eq!(
            tokens::access_token(&state.grants, USER, &s, None)
                .await
                .unwrap(),
            "AT0"
        );
    }
    assert!(fake.forms.lock().unwrap().is_empty());
    // After a 401 to it: one refresh; the new token has no expiry either
    let t = tokens::access_token(&state.grants, USER, &s, Some("AT0"))
        .await
        .unwrap();
    assert_eq!(t, "AT1");
    let (g, stored) = now_stored(&state).await;
    assert_eq!(
        (stored.expires_at, g.access_expires_at, g.refresh_at),
        (None, None, None)
    );
    // A second caller that saw the same 401 uses the new token: no second refresh
    assert_eq!(
        tokens::access_token(&state.grants, USER, &s, Some("AT0"))
            .await
            .unwrap(),
        "AT1"
    );
    assert_eq!(fake.forms.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_grant_asks_for_reconsent() {
    let fake = fake_provider().await;
    fake.behaviour.lock().unwrap().error = Some((400, json!({"error": "invalid_grant"})));
    let (state, _dir) = local_state(&[], &[]);
    let s = server(&format!("{}/token", fake.url));
    stored_grant(&state, Some(state.clock.now() - 10), Some("RT0")).await;
    let e = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::NeedsReconsent), "{e:?}");
    let (g, _) = now_stored(&state).await;
    assert_eq!(g.status, GrantStatus::NeedsReconsent);
    assert_eq!(g.last_error.as_deref(), Some("invalid_grant"));
    assert_eq!(g.refresh_at, None, "the sweeper leaves it alone");
    // and the next call does not hit the provider again
    let e = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::NeedsReconsent), "{e:?}");
    assert_eq!(fake.forms.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn provider_outages_keep_the_grant_for_a_later_retry() {
    let fake = fake_provider().await;
    fake.behaviour.lock().unwrap().error = Some((503, json!({"error": "temporarily_unavailable"})));
    let (state, _dir) = local_state(&[], &[]);
    let s = server(&format!("{}/token", fake.url));
    let before = stored_grant(&state, Some(state.clock.now() - 10), Some("RT0")).await;
    let e = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "upstream_error", "{e:?}");
    let (g, t) = now_stored(&state).await;
    assert_eq!(g.status, GrantStatus::Active);
    assert_eq!(g.last_error.as_deref(), Some("upstream_error"));
    assert_eq!(g.refresh_at, before.refresh_at, "still due: retried later");
    assert_eq!(
        t.refresh_token.as_deref(),
        Some("RT0"),
        "the refresh token kept"
    );
    // A repeated failure is recorded the same, and its claim on the grant released
    tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap_err();
    let (again, _) = now_stored(&state).await;
    assert_eq!(again.last_error.as_deref(), Some("upstream_error"));
    assert_eq!(again.refresh_lease_until, None);
    assert_eq!(again.status, GrantStatus::Active);
    // The provider recovers: the retry succeeds and clears the error
    fake.behaviour.lock().unwrap().error = None;
    assert_eq!(
        tokens::access_token(&state.grants, USER, &s, None)
            .await
            .unwrap(),
        "AT1"
    );
    let (g, _) = now_stored(&state).await;
    assert_eq!(g.last_error, None);

    // Unreachable provider: network_error, grant kept
    let (state, _dir) = local_state(&[], &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let s = server(&format!("http://127.0.0.1:{port}/token"));
    stored_grant(&state, Some(state.clock.now() - 10), Some("RT0")).await;
    let e = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "network_error", "{e:?}");
    let (g, _) = now_stored(&state).await;
    assert_eq!(
        (g.status, g.last_error.as_deref()),
        (GrantStatus::Active, Some("network_error"))
    );
}

#[tokio::test]
async fn extra_authorization_parameters_and_scopes_reach_the_provider() {
    let fake = fake_provider().await;
    let (state, _dir) = local_state(&[], &[]);
    let s = server(&format!("{}/token", fake.url));
    let url = flow::start(&state.grants, USER, &s, "browser-hash")
        .await
        .unwrap();
    let url = url::Url::parse(&url).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert_eq!(q["scope"], "read offline_access");
    assert_eq!(q["resource"], "https://crm.example.com/mcp");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_type"], "code");
}

/// Another process's claim on the grant (its lease until `until`), as its first write does.
async fn claim_as_another_process(state: &AppState, until: i64) -> Grant {
    let (mut g, _) = now_stored(state).await;
    let seen = g.version;
    g.version += 1;
    g.refresh_lease_until = Some(until);
    state
        .store
        .save_grant_if_version(&g, Some(seen))
        .await
        .unwrap();
    g
}

#[tokio::test]
async fn a_grant_another_process_is_refreshing_is_waited_for_not_redeemed_again() {
    let fake = fake_provider().await;
    let (state, _dir) = local_state(&[], &[]);
    let s = server(&format!("{}/token", fake.url));
    stored_grant(&state, Some(state.clock.now() - 10), Some("RT0")).await;
    let now = state.clock.now();
    let claimed = claim_as_another_process(&state, now + tokens::LEASE_SECS).await;

    // The sweep leaves a claimed grant alone.
    assert!(
        !tokens::refresh_due(&state.grants, &s, &claimed)
            .await
            .unwrap()
    );
    // A call waits for the holder and uses what it writes.
    let call = tokio::spawn({
        let (state, s) = (state.clone(), s.clone());
        async move { tokens::access_token(&state.grants, USER, &s, None).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert!(
        !call.is_finished(),
        "the call waits while the grant is claimed"
    );
    let ring = state.keyring.get().await.unwrap();
    let holders = TokenSet {
        access_token: "AT-holder".into(),
        refresh_token: Some("RT-holder".into()),
        expires_at: Some(now + 3600),
    };
    let written = flow::grant_record(
        &ring,
        USER,
        "crm",
        &holders,
        vec![],
        Some(claimed.version),
        now,
    )
    .unwrap();
    state
        .store
        .save_grant_if_version(&written, Some(claimed.version))
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), "AT-holder");
    assert!(
        fake.forms.lock().unwrap().is_empty(),
        "nothing redeemed here"
    );
}

#[tokio::test]
async fn a_claim_whose_holder_died_runs_out_and_the_grant_is_refreshed() {
    let fake = fake_provider().await;
    let (state, _dir) = local_state(&[], &[]);
    let s = server(&format!("{}/token", fake.url));
    stored_grant(&state, Some(state.clock.now() - 10), Some("RT0")).await;
    // A holder that never writes its result: its lease ends a second from now.
    claim_as_another_process(&state, state.clock.now() + 1).await;

    let token = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap();
    assert_eq!(token, "AT1");
    let forms = fake.forms.lock().unwrap().clone();
    assert_eq!(forms.len(), 1, "redeemed once, after the lease ran out");
    assert_eq!(field(&forms[0], "refresh_token"), Some("RT0"));
    let (g, t) = now_stored(&state).await;
    assert_eq!(g.refresh_lease_until, None);
    assert_eq!(t.refresh_token.as_deref(), Some("RT1"));
}

#[tokio::test]
async fn an_outage_in_a_tokens_last_minute_keeps_using_it_until_it_expires() {
    let fake = fake_provider().await;
    fake.behaviour.lock().unwrap().error = Some((503, json!({"error": "temporarily_unavailable"})));
    let clock = Arc::new(mcpgw::clock::FixedClock::at(mcpgw::clock::Clock::now(
        &mcpgw::clock::SystemClock,
    )));
    let (state, _dir) = mcpgw::testing::local_state_at(clock.clone(), &[], &[]);
    let s = server(&format!("{}/token", fake.url));
    // Due for refresh (inside the margin) but not expired.
    stored_grant(&state, Some(state.clock.now() + 30), Some("RT0")).await;
    let token = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap();
    assert_eq!(token, "AT0", "the call goes on with the still-valid token");
    assert_eq!(fake.forms.lock().unwrap().len(), 1, "a refresh was tried");
    let (g, _) = now_stored(&state).await;
    assert_eq!(g.last_error.as_deref(), Some("upstream_error"));
    assert_eq!(g.refresh_lease_until, None);
    // Right after, the provider is not asked again while the token still works.
    let token = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap();
    assert_eq!(token, "AT0");
    assert_eq!(fake.forms.lock().unwrap().len(), 1, "no second try yet");
    // A token the upstream refused is not handed out again.
    let e = tokens::access_token(&state.grants, USER, &s, Some("AT0"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "upstream_error", "{e:?}");
    // invalid_grant, once the provider is asked again: the user revoked the grant at the
    // provider, so the old token is not used.
    clock.advance(tokens::RETRY_AFTER_ERROR_SECS);
    fake.behaviour.lock().unwrap().error = Some((400, json!({"error": "invalid_grant"})));
    let e = tokens::access_token(&state.grants, USER, &s, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::NeedsReconsent), "{e:?}");
}

/// `state`'s grants writing their records to a recording auditor.
fn recording_grants(
    state: &AppState,
) -> (
    mcpgw::grants::Grants,
    Arc<Mutex<Vec<mcpgw::audit::AuditRecord>>>,
) {
    let (auditor, kept) = mcpgw::audit::Auditor::recording();
    let grants = mcpgw::grants::Grants::new(
        &state.config,
        state.store.clone(),
        state.secrets.clone(),
        state.keyring.clone(),
        state.clock.clone(),
        state.servers.clone(),
        Arc::new(auditor),
    )
    .unwrap();
    (grants, kept)
}

#[tokio::test]
async fn a_failed_refresh_is_recorded_with_its_reason_and_the_grant_never_its_tokens() {
    let fake = fake_provider().await;
    let (state, _dir) = local_state(&[], &[]);
    let (grants, kept) = recording_grants(&state);
    let s = server(&format!("{}/token", fake.url));
    // The provider is down: retried later, not a re-consent.
    fake.behaviour.lock().unwrap().error = Some((503, json!({"error": "temporarily_unavailable"})));
    stored_grant(&state, Some(state.clock.now() - 10), Some("RT-secret-0")).await;
    tokens::access_token(&grants, USER, &s, None)
        .await
        .unwrap_err();
    // The provider refuses the refresh token: the user must connect again.
    fake.behaviour.lock().unwrap().error = Some((400, json!({"error": "invalid_grant"})));
    state.store.delete_grant(USER, &s.name).await.unwrap();
    stored_grant(&state, Some(state.clock.now() - 10), Some("RT-secret-1")).await;
    tokens::access_token(&grants, USER, &s, None)
        .await
        .unwrap_err();

    let recs = std::mem::take(&mut *kept.lock().unwrap());
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for r in &recs {
        assert_eq!(r.event, mcpgw::audit::Event::RefreshFailed);
        let c = r.credential.as_ref().unwrap();
        assert_eq!(
            c.grant.as_deref(),
            Some(format!("{USER}/{}", s.name).as_str())
        );
        assert_eq!(r.principal.as_ref().unwrap().user, USER);
    }
    assert_eq!(recs[0].detail.as_ref().unwrap()["needs_reconsent"], false);
    assert_eq!(recs[1].detail.as_ref().unwrap()["needs_reconsent"], true);
    assert_eq!(recs[1].rule.as_deref(), Some("invalid_grant"));
    let all = serde_json::to_string(&recs).unwrap();
    assert!(!all.contains("RT-secret") && !all.contains("AT"), "{all}");
}
