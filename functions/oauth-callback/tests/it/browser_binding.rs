//! The connect flow is bound to the browser that saw the page naming the gateway user:
//! through the router over a real SQLite store, with a small token endpoint in the test
//! (the real provider is walked in `tests/tests/it/oauth_connect.rs`).
//!
//! A "browser" here is the cookies a request carries. Mallory's continue link or provider
//! callback in Alice's browser (no cookie, another flow's cookie, another server's) is
//! refused with a page saying to start again, used up, and stores nothing; so is any step in
//! a browser signed in to the console as another gateway user. The same steps in the
//! browser that saw the page connect, and the callback clears the cookie.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use mcpgw::browser::session::{self, Who};
use mcpgw::grants::link;
use mcpgw::state::AppState;
use mcpgw::store::ConfigKind;
use mcpgw::testing::local_state;
use serde_json::json;
use tower::ServiceExt;

const ALICE: &str = "alice@example.com";
const MALLORY: &str = "mallory@example.com";

struct Gw {
    app: axum::Router,
    state: AppState,
    /// How often the token endpoint was asked to redeem a code.
    redeemed: Arc<AtomicUsize>,
    /// Each user's API key: (owner, key).
    keys: Vec<(String, String)>,
    _dir: mcpgw::testing::tempfile_guard::TempDir,
}

/// A token endpoint that answers every code with tokens, counting redemptions.
async fn token_endpoint() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(
                    json!({"access_token": format!("AT{n}"), "token_type": "Bearer",
                    "expires_in": 3600, "refresh_token": format!("RT{n}")}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/token"), count)
}

async fn gateway_at(public_url: Option<&str>) -> Gw {
    let vars: Vec<(&str, &str)> = public_url
        .map(|u| vec![("MCPGW_PUBLIC_URL", u)])
        .unwrap_or_default();
    let (state, dir) = local_state(&[], &vars);
    let (token_url, redeemed) = token_endpoint().await;
    for name in ["notes", "other"] {
        let server = json!({
            "name": name, "url": "http://127.0.0.1:9/mcp", "created_at": 0, "updated_at": 0,
            "auth": {"type": "oauth2", "client_id": "gw", "scopes": ["read"],
                     "authorization_url": "https://idp.example.com/authorize",
                     "token_url": token_url}
        });
        state
            .store
            .create_config(ConfigKind::Server, name, &server)
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    for owner in [ALICE, MALLORY] {
        let k = mcpgw::identity::issue_api_key(owner, "test", false, 0, None);
        state.store.create_api_key(&k.record).await.unwrap();
        keys.push((owner.to_owned(), k.plaintext));
    }
    Gw {
        app: oauth_callback::app(state.clone()),
        state,
        redeemed,
        keys,
        _dir: dir,
    }
}

async fn gateway() -> Gw {
    gateway_at(None).await
}

struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Every `Set-Cookie` of the answer.
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The `name=value` of the connect cookie the answer set.
    fn connect_cookie(&self) -> String {
        let all = self.set_cookies();
        assert_eq!(all.len(), 1, "one cookie: {all:?}");
        all[0].split(';').next().unwrap().to_owned()
    }

    /// The continue link's path and query.
    fn continue_link(&self) -> String {
        self.body
            .split("id=\"continue\" href=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a continue link")
            .replace("&amp;", "&")
    }
}

async fn get(gw: &Gw, path: &str, cookies: &[&str]) -> Seen {
    let mut req = Request::get(path);
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies.join("; "));
    }
    let resp = gw
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Seen {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The path and query of a fresh connect link of `user` for `server`.
async fn connect_link(gw: &Gw, user: &str, server: &str) -> String {
    let url = link::make(&gw.state.grants, user, server).await.unwrap();
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .unwrap()
}

/// A console session cookie (`name=value`) of `user`, signed in with their API key.
async fn console_of(gw: &Gw, user: &str) -> String {
    let key = gw
        .keys
        .iter()
        .find(|(o, _)| o == user)
        .map(|(_, k)| k.clone())
        .unwrap();
    let value = session::seal(&gw.state, Who::Key { credential: key })
        .await
        .unwrap();
    format!("{}={value}", session::COOKIE)
}

/// A flow whose connect page `user` opened in a browser: the cookie it set and the
/// continue link.
struct Opened {
    cookie: String,
    go: String,
}

async fn open_page(gw: &Gw, user: &str, server: &str, cookies: &[&str]) -> Opened {
    let path = connect_link(gw, user, server).await;
    let page = get(gw, &path, cookies).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("id=\"user\">{user}<")));
    Opened {
        cookie: page.connect_cookie(),
        go: page.continue_link(),
    }
}

/// The provider's `state` in the authorization URL a continue answered with.
fn state_param(location: &str) -> String {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("a state")
}

/// Opens the page and follows the continue link in the same browser (`cookies` besides the
/// connect cookie): the flow's cookie and the provider's `state`.
async fn at_the_provider(gw: &Gw, user: &str, cookies: &[&str]) -> (String, String) {
    let f = open_page(gw, user, "notes", cookies).await;
    let mut with = vec![f.cookie.as_str()];
    with.extend_from_slice(cookies);
    let go = get(gw, &f.go, &with).await;
    assert_eq!(go.status, 302, "{}", go.body);
    assert!(
        go.location()
            .starts_with("https://idp.example.com/authorize?")
    );
    (f.cookie.clone(), state_param(go.location()))
}

fn callback(state: &str) -> String {
    format!("/oauth/callback/notes?code=the-code&state={state}")
}

async fn grant_of(gw: &Gw, user: &str) -> Option<mcpgw::domain::Grant> {
    gw.state.store.get_grant(user, "notes").await.unwrap()
}

fn assert_start_again(seen: &Seen) {
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(
        seen.body.contains("Start again from the connect link"),
        "{}",
        seen.body
    );
    assert!(seen.location().is_empty(), "no redirect");
}

fn clears_connect_cookie(seen: &Seen) -> bool {
    seen.set_cookies()
        .iter()
        .any(|c| c.starts_with("mcpgw_connect_notes=;") && c.contains("Max-Age=0"))
}

#[tokio::test]
async fn the_connect_page_sets_a_short_lived_http_only_lax_cookie_for_the_oauth_routes() {
    // GIVEN a local gateway on plain http
    let gw = gateway().await;
    let path = connect_link(&gw, ALICE, "notes").await;
    let page = get(&gw, &path, &[]).await;
    assert_eq!(page.status, 200);
    let set = page.set_cookies();
    let attrs: Vec<&str> = set[0].split("; ").collect();
    let (name, value) = attrs[0].split_once('=').unwrap();
    assert_eq!(name, "mcpgw_connect_notes");
    // 256 random bits, base64url
    assert_eq!(value.len(), 43, "{value}");
    assert_eq!(
        attrs[1..],
        ["Path=/oauth/", "Max-Age=600", "HttpOnly", "SameSite=Lax"]
    );
    // the value is the browser's alone: not in the page, nor in the provider URL
    assert!(!page.body.contains(value));
    let go = get(&gw, &page.continue_link(), &[attrs[0]]).await;
    assert_eq!(go.status, 302);
    assert!(!go.location().contains(value));

    // GIVEN a gateway behind https with a stage path: Secure, the stage in the path, and
    // the __Secure- prefix (__Host- needs Path=/)
    let gw = gateway_at(Some("https://api.example.com/prod")).await;
    let path = connect_link(&gw, ALICE, "notes").await;
    let path = path.trim_start_matches("/prod");
    let page = get(&gw, path, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let set = page.set_cookies();
    let attrs: Vec<&str> = set[0].split("; ").collect();
    assert!(
        attrs[0].starts_with("__Secure-mcpgw_connect_notes="),
        "{set:?}"
    );
    assert_eq!(
        attrs[1..],
        [
            "Path=/prod/oauth/",
            "Max-Age=600",
            "HttpOnly",
            "SameSite=Lax",
            "Secure"
        ]
    );
    assert!(
        page.continue_link()
            .starts_with("/prod/oauth/connect/notes?go="),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn the_browser_that_saw_the_page_connects_and_the_cookie_is_cleared() {
    let gw = gateway().await;
    // GIVEN alice opened her page and continued in her browser
    let (cookie, state) = at_the_provider(&gw, ALICE, &[]).await;
    // WHEN the provider sends her browser back
    let done = get(&gw, &callback(&state), &[&cookie]).await;
    // THEN her grant is stored and the cookie cleared
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("id=\"connected\""));
    assert!(grant_of(&gw, ALICE).await.is_some());
    assert_eq!(gw.redeemed.load(Ordering::SeqCst), 1);
    let cleared = done.set_cookies();
    assert_eq!(
        cleared,
        ["mcpgw_connect_notes=; Path=/oauth/; Max-Age=0; HttpOnly; SameSite=Lax"]
    );
}

#[tokio::test]
async fn a_continue_link_in_another_browser_is_refused_and_used_up() {
    let gw = gateway().await;
    // GIVEN mallory opened her connect page in her browser
    let mallory = open_page(&gw, MALLORY, "notes", &[]).await;
    // WHEN alice's browser (no cookie) follows mallory's continue link
    let seen = get(&gw, &mallory.go, &[]).await;
    // THEN it is refused with a page saying to start again
    assert_start_again(&seen);
    assert!(seen.set_cookies().is_empty());
    // AND the link is used up, even for the browser that saw the page
    let again = get(&gw, &mallory.go, &[&mallory.cookie]).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.body.contains("already used"), "{}", again.body);
    assert!(grant_of(&gw, MALLORY).await.is_none());

    // baseline, and single use: the owner's browser follows its own link once
    let own = open_page(&gw, MALLORY, "notes", &[]).await;
    let first = get(&gw, &own.go, &[&own.cookie]).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let second = get(&gw, &own.go, &[&own.cookie]).await;
    assert_eq!(second.status, 400, "{}", second.body);
    assert!(second.location().is_empty());
}

#[tokio::test]
async fn a_continue_link_with_another_flows_cookie_is_refused() {
    let gw = gateway().await;
    // GIVEN two pages for notes in one browser: the second replaced the first's cookie
    let first = open_page(&gw, ALICE, "notes", &[]).await;
    let second = open_page(&gw, ALICE, "notes", &[]).await;
    assert_ne!(first.cookie, second.cookie);
    // WHEN the first tab continues THEN it is refused (start again)
    assert_start_again(&get(&gw, &first.go, &[&second.cookie]).await);
    // AND the second tab still works
    let ok = get(&gw, &second.go, &[&second.cookie]).await;
    assert_eq!(ok.status, 302, "{}", ok.body);

    // GIVEN a page for another server: its cookie has its own name, so both tabs work...
    let notes = open_page(&gw, ALICE, "notes", &[]).await;
    let other = open_page(&gw, ALICE, "other", &[]).await;
    assert!(
        other.cookie.starts_with("mcpgw_connect_other="),
        "{}",
        other.cookie
    );
    let both = [notes.cookie.as_str(), other.cookie.as_str()];
    // ...but neither cookie opens the other's flow
    let renamed = other
        .cookie
        .replace("mcpgw_connect_other=", "mcpgw_connect_notes=");
    assert_start_again(&get(&gw, &notes.go, &[&other.cookie]).await);
    let notes2 = open_page(&gw, ALICE, "notes", &[]).await;
    assert_start_again(&get(&gw, &notes2.go, &[&renamed]).await);
    let ok = get(&gw, &other.go, &both).await;
    assert_eq!(ok.status, 302, "{}", ok.body);

    // a path that is no server name never reaches the cookie's name
    for path in [
        "/oauth/connect/x%3B%20Domain%3Devil?go=abc",
        "/oauth/callback/x%3B%20Domain%3Devil?code=c&state=s",
    ] {
        let seen = get(&gw, path, &[]).await;
        assert_eq!(seen.status, 404, "{path}");
        assert!(seen.set_cookies().is_empty(), "{path}");
    }

    // a made-up or altered continue link: refused (and no open redirect)
    for bad in ["aHR0cHM6Ly9ldmlsLmV4YW1wbGU", "x", &"A".repeat(43)] {
        let seen = get(&gw, &format!("/oauth/connect/notes?go={bad}"), &[]).await;
        assert_eq!(seen.status, 400, "{bad}");
        assert!(seen.location().is_empty());
    }
}

#[tokio::test]
async fn a_callback_in_another_browser_is_refused_used_up_and_stores_nothing() {
    let gw = gateway().await;
    // GIVEN mallory took her flow to the provider, and handed the provider URL to alice,
    // who signed in there: the provider sends ALICE's browser back with alice's code
    let (mallory_cookie, state) = at_the_provider(&gw, MALLORY, &[]).await;
    // WHEN alice's browser (no cookie) arrives at the callback
    let seen = get(&gw, &callback(&state), &[]).await;
    // THEN it is refused, nothing is stored, and the code was never redeemed
    assert_start_again(&seen);
    assert!(seen.set_cookies().is_empty(), "no cookie to clear");
    assert!(grant_of(&gw, MALLORY).await.is_none());
    assert_eq!(gw.redeemed.load(Ordering::SeqCst), 0);
    // AND mallory replaying that callback (alice's code) in her own browser gets nothing:
    // the state is used up
    let replay = get(&gw, &callback(&state), &[&mallory_cookie]).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    assert!(grant_of(&gw, MALLORY).await.is_none());
    assert_eq!(gw.redeemed.load(Ordering::SeqCst), 0);

    // a cookie of another flow (alice's own flow of the same server) does not do either
    let (_alice_cookie, mallory_state) = at_the_provider(&gw, MALLORY, &[]).await;
    let alice_page = open_page(&gw, ALICE, "notes", &[]).await;
    let seen = get(&gw, &callback(&mallory_state), &[&alice_page.cookie]).await;
    assert_start_again(&seen);
    // ...and alice's own flow, whose cookie that was, is not disturbed
    assert!(!clears_connect_cookie(&seen));
    let go = get(&gw, &alice_page.go, &[&alice_page.cookie]).await;
    assert_eq!(go.status, 302);
    let done = get(
        &gw,
        &callback(&state_param(go.location())),
        &[&alice_page.cookie],
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(grant_of(&gw, ALICE).await.is_some());
    assert!(grant_of(&gw, MALLORY).await.is_none());
    assert_eq!(gw.redeemed.load(Ordering::SeqCst), 1);

    // a provider error in another browser: refused too, and the state is used up
    let (cookie, state) = at_the_provider(&gw, MALLORY, &[]).await;
    let seen = get(
        &gw,
        &format!("/oauth/callback/notes?error=access_denied&state={state}"),
        &[],
    )
    .await;
    assert_start_again(&seen);
    let late = get(&gw, &callback(&state), &[&cookie]).await;
    assert_eq!(late.status, 400, "{}", late.body);
    assert!(grant_of(&gw, MALLORY).await.is_none());
}

#[tokio::test]
async fn a_browser_signed_in_to_the_console_as_another_user_is_refused_at_every_step() {
    let gw = gateway().await;
    let alice_console = console_of(&gw, ALICE).await;

    // the connect page: mallory's link in alice's signed-in browser
    let path = connect_link(&gw, MALLORY, "notes").await;
    let seen = get(&gw, &path, &[&alice_console]).await;
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(
        seen.body
            .contains(&format!("signed in to the gateway console as {ALICE}")),
        "{}",
        seen.body
    );
    assert!(
        !seen.body.contains("id=\"continue\""),
        "nothing to continue"
    );
    assert!(seen.set_cookies().is_empty(), "no flow started");
    // nothing of the console cookie or key in the page
    let console_value = alice_console.split_once('=').unwrap().1;
    assert!(!seen.body.contains(console_value));
    assert!(!seen.body.contains("mcpgw_"), "{}", seen.body);

    // continue: the page was seen in this browser before it signed in to the console
    let f = open_page(&gw, MALLORY, "notes", &[]).await;
    let seen = get(&gw, &f.go, &[&f.cookie, &alice_console]).await;
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(seen.body.contains("signed in to the gateway console as"));
    assert!(seen.location().is_empty());
    assert!(clears_connect_cookie(&seen), "{:?}", seen.set_cookies());

    // callback: the console session appeared while at the provider
    let (cookie, state) = at_the_provider(&gw, MALLORY, &[]).await;
    let seen = get(&gw, &callback(&state), &[&cookie, &alice_console]).await;
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(seen.body.contains("signed in to the gateway console as"));
    assert!(clears_connect_cookie(&seen));
    assert!(grant_of(&gw, MALLORY).await.is_none());
    assert!(grant_of(&gw, ALICE).await.is_none());
    assert_eq!(gw.redeemed.load(Ordering::SeqCst), 0);
    // and the state is used up
    let replay = get(&gw, &callback(&state), &[&cookie]).await;
    assert_eq!(replay.status, 400);
    assert!(grant_of(&gw, MALLORY).await.is_none());
}

#[tokio::test]
async fn the_same_users_console_session_or_a_broken_one_does_not_stand_in_the_way() {
    let gw = gateway().await;
    // GIVEN alice signed in to the console, connecting her own account
    let alice_console = console_of(&gw, ALICE).await;
    let (cookie, state) = at_the_provider(&gw, ALICE, &[&alice_console]).await;
    let done = get(&gw, &callback(&state), &[&cookie, &alice_console]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(grant_of(&gw, ALICE).await.is_some());

    // GIVEN an altered console cookie: it names nobody, the cookie binding alone decides
    let broken = format!("{}=AAAA{}", session::COOKIE, "B".repeat(60));
    let (cookie, state) = at_the_provider(&gw, MALLORY, &[&broken]).await;
    let done = get(&gw, &callback(&state), &[&cookie, &broken]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(grant_of(&gw, MALLORY).await.is_some());
}
