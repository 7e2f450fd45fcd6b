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

/// A store that records every id, name and owner it is asked about, then hands the call to
/// SQLite: lets a test prove that a path parameter never reached the store.
pub struct RecordingStore {
    inner: mcpgw::store::sqlite::SqliteStore,
    pub seen: std::sync::Mutex<Vec<String>>,
}

impl RecordingStore {
    fn saw(&self, what: &str) {
        self.seen.lock().unwrap().push(what.to_owned());
    }

    /// Whether any recorded argument contains `needle`.
    pub fn was_asked_about(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|s| s.contains(needle))
    }
}

mod recording {
    use async_trait::async_trait;
    use mcpgw::clock::UnixTime;
    use mcpgw::domain::{ApiKey, Grant, OAuthState};
    use mcpgw::store::{
        ApiKeyStore, ConfigKind, ConfigStore, GrantStore, OAuthStateStore, SessionStore,
        StoreResult,
    };

    use super::RecordingStore;

    #[async_trait]
    impl ConfigStore for RecordingStore {
        async fn create_config(
            &self,
            kind: ConfigKind,
            name: &str,
            doc: &serde_json::Value,
        ) -> StoreResult<()> {
            self.saw(name);
            self.inner.create_config(kind, name, doc).await
        }
        async fn replace_config(
            &self,
            kind: ConfigKind,
            name: &str,
            doc: &serde_json::Value,
        ) -> StoreResult<()> {
            self.saw(name);
            self.inner.replace_config(kind, name, doc).await
        }
        async fn get_config(
            &self,
            kind: ConfigKind,
            name: &str,
        ) -> StoreResult<Option<serde_json::Value>> {
            self.saw(name);
            self.inner.get_config(kind, name).await
        }
        async fn list_configs(&self, kind: ConfigKind) -> StoreResult<Vec<serde_json::Value>> {
            self.inner.list_configs(kind).await
        }
        async fn delete_config(&self, kind: ConfigKind, name: &str) -> StoreResult<bool> {
            self.saw(name);
            self.inner.delete_config(kind, name).await
        }
    }

    #[async_trait]
    impl ApiKeyStore for RecordingStore {
        async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
            self.saw(&key.id);
            self.inner.create_api_key(key).await
        }
        async fn find_api_key_by_hash(
            &self,
            key_hash: &str,
            now: UnixTime,
        ) -> StoreResult<Option<ApiKey>> {
            self.inner.find_api_key_by_hash(key_hash, now).await
        }
        async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
            self.saw(id);
            self.inner.get_api_key(id).await
        }
        async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
            self.inner.list_api_keys().await
        }
        async fn list_api_keys_for_owner(&self, owner: &str) -> StoreResult<Vec<ApiKey>> {
            self.saw(owner);
            self.inner.list_api_keys_for_owner(owner).await
        }
        async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
            self.saw(id);
            self.inner.delete_api_key(id).await
        }
        async fn touch_api_key(&self, id: &str, at: UnixTime) -> StoreResult<()> {
            self.inner.touch_api_key(id, at).await
        }
    }

    #[async_trait]
    impl GrantStore for RecordingStore {
        async fn get_grant(&self, user: &str, server: &str) -> StoreResult<Option<Grant>> {
            self.inner.get_grant(user, server).await
        }
        async fn save_grant_if_version(
            &self,
            grant: &Grant,
            expected: Option<u64>,
        ) -> StoreResult<()> {
            self.inner.save_grant_if_version(grant, expected).await
        }
        async fn delete_grant(&self, user: &str, server: &str) -> StoreResult<bool> {
            self.inner.delete_grant(user, server).await
        }
        async fn list_grants_for_user(&self, user: &str) -> StoreResult<Vec<Grant>> {
            self.inner.list_grants_for_user(user).await
        }
        async fn grants_due(&self, before: UnixTime, limit: usize) -> StoreResult<Vec<Grant>> {
            self.inner.grants_due(before, limit).await
        }
    }

    #[async_trait]
    impl OAuthStateStore for RecordingStore {
        async fn put_state(&self, state: &OAuthState) -> StoreResult<()> {
            self.inner.put_state(state).await
        }
        async fn consume_state(&self, id: &str, now: UnixTime) -> StoreResult<Option<OAuthState>> {
            self.inner.consume_state(id, now).await
        }
    }

    #[async_trait]
    impl SessionStore for RecordingStore {
        async fn end_session(&self, fingerprint: &str, expires_at: UnixTime) -> StoreResult<()> {
            self.inner.end_session(fingerprint, expires_at).await
        }
        async fn session_ended(&self, fingerprint: &str, now: UnixTime) -> StoreResult<bool> {
            self.inner.session_ended(fingerprint, now).await
        }
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
    let store = Arc::new(RecordingStore {
        inner: mcpgw::store::sqlite::SqliteStore::open(&guard.path().join("test.sqlite3")).unwrap(),
        seen: Default::default(),
    });
    let state = mcpgw::state::AppState::from_parts(
        config,
        store.clone(),
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
        store,
    )
}
