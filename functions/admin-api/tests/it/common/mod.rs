//! What every admin-api test file shares: the router over a real SQLite store, a way to call
//! it, and error assertions.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mcpgw::clock::{Clock, FixedClock};
use mcpgw::testing::{TEST_ADMIN_KEY, local_state};
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct Api {
    pub app: axum::Router,
    pub _guard: mcpgw::testing::tempfile_guard::TempDir,
    pub state: mcpgw::state::AppState,
}

/// Body limit of every test router: small, so "oversized" is cheap to send.
pub const BODY_LIMIT: &str = "2048";

pub fn api() -> Api {
    api_with(&[])
}

pub fn api_with(extra: &[(&str, &str)]) -> Api {
    let mut vars = vec![("MCPGW_MAX_BODY_BYTES", BODY_LIMIT)];
    vars.extend_from_slice(extra);
    let (state, guard) = local_state(&[("MCPGW_SECRET_UPSTREAM_KEY", "s3cr3t-value")], &vars);
    Api {
        app: admin_api::app(state.clone()),
        _guard: guard,
        state,
    }
}

/// Like [`api`], on a clock the test moves (expiry, `last_used_at`).
pub fn api_at(clock: Arc<FixedClock>) -> Api {
    let guard = mcpgw::testing::tempfile_guard::TempDir::new();
    let env: HashMap<String, String> = [
        ("MCPGW_MAX_BODY_BYTES", BODY_LIMIT.to_owned()),
        ("MCPGW_DATA_DIR", guard.path().display().to_string()),
        ("MCPGW_BOOTSTRAP_ADMIN_KEY", TEST_ADMIN_KEY.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = mcpgw::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let store =
        mcpgw::store::sqlite::SqliteStore::open(&guard.path().join("test.sqlite3")).unwrap();
    let state = mcpgw::state::AppState::from_parts(
        config,
        Arc::new(store),
        Arc::new(mcpgw::secrets::env::EnvSecrets::from_map(HashMap::new())),
        clock as Arc<dyn Clock>,
    )
    .unwrap();
    Api {
        app: admin_api::app(state.clone()),
        _guard: guard,
        state,
    }
}

impl Api {
    /// Sends a request with `Authorization: <authorization>` as given (or none).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        let req = req
            .body(body.map(|b| Body::from(b.to_owned())).unwrap_or_default())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("every body is JSON")
        };
        (status, v)
    }

    /// Sends a request with `Bearer <token>` (if any) and a JSON body (if any).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let ct = body.map(|_| "application/json");
        self.raw(method, path, auth.as_deref(), ct, body).await
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.as_key(TEST_ADMIN_KEY, method, path, body).await
    }

    pub async fn as_key(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let b = body.map(|v| v.to_string());
        self.call(method, path, Some(key), b.as_deref()).await
    }

    /// Issues a key through the admin API; returns (id, key).
    pub async fn issue(&self, body: Value) -> (String, String) {
        let (s, k) = self.admin("POST", "/admin/api-keys", Some(body)).await;
        assert_eq!(s, 201, "{k}");
        (
            k["id"].as_str().unwrap().to_owned(),
            k["key"].as_str().unwrap().to_owned(),
        )
    }

    /// A user key for `owner`; returns (id, key).
    pub async fn user_key(&self, owner: &str) -> (String, String) {
        self.issue(json!({"owner": owner, "name": "test"})).await
    }

    pub async fn server_count(&self) -> usize {
        self.admin("GET", "/admin/servers", None).await.1["servers"]
            .as_array()
            .unwrap()
            .len()
    }

    /// Every stored key, straight from the store.
    pub async fn stored_key_count(&self) -> usize {
        self.state.store.list_api_keys().await.unwrap().len()
    }

    /// Polls `GET path` as `key` until `pick(body)` equals `want` (the key-use recorder
    /// writes asynchronously); panics after about two seconds.
    pub async fn eventually(
        &self,
        key: &str,
        path: &str,
        pick: impl Fn(&Value) -> Value,
        want: Value,
    ) {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (s, body) = self.as_key(key, "GET", path, None).await;
            assert_eq!(s, 200, "{body}");
            last = pick(&body);
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("GET {path}: still {last}, want {want}");
    }
}

pub fn assert_error(status: StatusCode, body: &Value, want: u16, code: &str) {
    assert_eq!(status.as_u16(), want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// RFC 3339 of a Unix time, as the API writes it.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// What the store was asked about: every id, name, owner (or other key) of every call, seen
/// through [`mcpgw::testing::ObservedStore`]. Lets a test prove that a path parameter never
/// reached the store.
#[derive(Default)]
pub struct RecordingStore {
    pub seen: std::sync::Mutex<Vec<String>>,
}

impl RecordingStore {
    /// Whether any recorded argument contains `needle`.
    pub fn was_asked_about(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|s| s.contains(needle))
    }
}

/// Like [`api`], over a [`RecordingStore`].
pub fn api_recording() -> (Api, Arc<RecordingStore>) {
    let guard = mcpgw::testing::tempfile_guard::TempDir::new();
    let env: HashMap<String, String> = [
        ("MCPGW_MAX_BODY_BYTES", BODY_LIMIT.to_owned()),
        ("MCPGW_DATA_DIR", guard.path().display().to_string()),
        ("MCPGW_BOOTSTRAP_ADMIN_KEY", TEST_ADMIN_KEY.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = mcpgw::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let recording = Arc::new(RecordingStore::default());
    let seen = recording.clone();
    let sqlite =
        mcpgw::store::sqlite::SqliteStore::open(&guard.path().join("test.sqlite3")).unwrap();
    let store = mcpgw::testing::ObservedStore::new(Arc::new(sqlite), move |call| {
        if let Some(key) = call.key {
            seen.seen.lock().unwrap().push(key.to_owned());
        }
        Ok(())
    });
    let state = mcpgw::state::AppState::from_parts(
        config,
        Arc::new(store),
        Arc::new(mcpgw::secrets::env::EnvSecrets::from_map(HashMap::new())),
        Arc::new(mcpgw::clock::SystemClock),
    )
    .unwrap();
    (
        Api {
            app: admin_api::app(state.clone()),
            _guard: guard,
            state,
        },
        recording,
    )
}

/// Stores a grant for (user, server) with real sealed tokens.
pub async fn grant(
    api: &Api,
    user: &str,
    server: &str,
    edit: impl FnOnce(&mut mcpgw::domain::Grant),
) {
    let ring = api.state.keyring.get().await.unwrap();
    let tokens = mcpgw::grants::TokenSet {
        access_token: format!("AT-{user}"),
        refresh_token: Some(format!("RT-{user}")),
        expires_at: Some(4_000_000_000),
    };
    let mut g = mcpgw::domain::Grant {
        user: user.into(),
        server: server.into(),
        version: 1,
        sealed_tokens: tokens.seal(&ring, user, server).unwrap(),
        status: mcpgw::domain::GrantStatus::Active,
        scopes: vec!["read".into()],
        access_expires_at: tokens.expires_at,
        refresh_at: Some(3_999_999_700),
        updated_at: 1_700_000_000,
        last_refresh_at: None,
        last_error: None,
        refresh_lease_until: None,
    };
    edit(&mut g);
    api.state
        .store
        .save_grant_if_version(&g, None)
        .await
        .unwrap();
}
