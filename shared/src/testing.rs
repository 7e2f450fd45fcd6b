//! Helpers for tests that need real peers (moto, MCP servers). The test command
//! (`scripts/test-all.sh`) starts the peers and exports their addresses; with
//! `MCPGW_REQUIRE_PEERS=1` (set by that script and in CI) a missing peer fails the test
//! instead of skipping it, so CI can never pass by silently skipping.

pub mod module_graph;

/// The address of an external peer from `var`, or `None` (after saying so) when the peer is
/// not running and peers are optional.
pub fn peer_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("MCPGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
                || std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !required,
                "{var} is not set but peers are required: run scripts/test-all.sh"
            );
            eprintln!("skipping: {var} not set (run scripts/test-all.sh to start the peers)");
            None
        }
    }
}

/// moto's endpoint (`MCPGW_TEST_AWS_ENDPOINT`).
pub fn moto_endpoint() -> Option<String> {
    peer_url("MCPGW_TEST_AWS_ENDPOINT")
}

/// A name unique to this process and call, so tests sharing one moto never collide.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Admin key of states made by `local_state`.
pub const TEST_ADMIN_KEY: &str = "test-admin-key-0123456789";

#[cfg(feature = "sqlite")]
/// A complete in-process state for router tests: SQLite in a temp folder (kept alive by the
/// returned guard), secrets from `secrets` (`MCPGW_SECRET_*` names), the bootstrap admin key
/// [`TEST_ADMIN_KEY`], and extra settings from `vars`.
pub fn local_state(
    secrets: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> (crate::state::AppState, tempfile_guard::TempDir) {
    local_state_at(
        std::sync::Arc::new(crate::clock::SystemClock),
        secrets,
        vars,
    )
}

#[cfg(feature = "sqlite")]
/// [`local_state`] on `clock` (a [`crate::clock::FixedClock`] the test moves): every service
/// of the state reads this one clock.
pub fn local_state_at(
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    secrets: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> (crate::state::AppState, tempfile_guard::TempDir) {
    use std::collections::HashMap;
    use std::sync::Arc;
    let dir = tempfile_guard::TempDir::new();
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.entry("MCPGW_DATA_DIR".into())
        .or_insert_with(|| dir.path().display().to_string());
    env.entry("MCPGW_BOOTSTRAP_ADMIN_KEY".into())
        .or_insert_with(|| TEST_ADMIN_KEY.into());
    let config = crate::config::Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
    let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("test.sqlite3"))
        .expect("sqlite store");
    let secrets = crate::secrets::env::EnvSecrets::from_map(
        secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let state =
        crate::state::AppState::from_parts(config, Arc::new(store), Arc::new(secrets), clock)
            .expect("test state");
    (state, dir)
}

/// A temporary folder removed on drop (kept tiny so the library needs no tempfile dependency).
pub mod tempfile_guard {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(super::unique_name("mcpgw-test"));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Default for TempDir {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One store call as an [`ObservedStore`] hook sees it: the method, and the main key it was
/// asked about (a name, id, hash, owner, user or session fingerprint) when it has one.
#[derive(Debug, Clone, Copy)]
pub struct StoreCall<'a> {
    pub method: &'static str,
    pub key: Option<&'a str>,
}

type StoreHook = dyn Fn(StoreCall<'_>) -> crate::store::StoreResult<()> + Send + Sync;

/// A store that shows every call to a hook before handing it on: tests count, record or fail
/// calls with it, benchmarks count them. One decorator for every test, so a new store method
/// is added here once.
pub struct ObservedStore {
    inner: std::sync::Arc<dyn crate::store::Store>,
    hook: Box<StoreHook>,
}

impl ObservedStore {
    /// `hook` runs before each call; an error it returns is the call's answer (the inner
    /// store is not asked).
    pub fn new(
        inner: std::sync::Arc<dyn crate::store::Store>,
        hook: impl Fn(StoreCall<'_>) -> crate::store::StoreResult<()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            hook: Box::new(hook),
        }
    }
}

mod observed {
    use super::{ObservedStore, StoreCall};
    use crate::audit::record::AuditRecord;
    use crate::clock::UnixTime;
    use crate::domain::{ApiKey, Grant, OAuthState};
    use crate::store::{
        ApiKeyStore, AuditDump, AuditPage, AuditQuery, AuditSeal, AuditStore, ConfigKind,
        ConfigStore, GrantStore, OAuthStateStore, RateLimitStore, SessionStore, StoreResult, Take,
        ToolSnapshot, ToolSnapshotStore,
    };
    use serde_json::Value;

    /// Implements a store trait on `ObservedStore`: the hook sees the call, then the inner
    /// store answers it.
    macro_rules! observed {
        ($trait:ident { $(fn $m:ident($($a:ident: $t:ty),*) -> $r:ty, key $key:expr;)* }) => {
            #[async_trait::async_trait]
            impl $trait for ObservedStore {
                $(async fn $m(&self, $($a: $t),*) -> StoreResult<$r> {
                    (self.hook)(StoreCall { method: stringify!($m), key: $key })?;
                    self.inner.$m($($a),*).await
                })*
            }
        };
    }

    observed!(ConfigStore {
        fn create_config(kind: ConfigKind, name: &str, doc: &Value) -> (), key Some(name);
        fn replace_config(kind: ConfigKind, name: &str, doc: &Value) -> (), key Some(name);
        fn replace_config_if_unchanged(kind: ConfigKind, name: &str, expected: &Value, doc: &Value) -> bool, key Some(name);
        fn get_config(kind: ConfigKind, name: &str) -> Option<Value>, key Some(name);
        fn list_configs(kind: ConfigKind) -> Vec<Value>, key None;
        fn delete_config(kind: ConfigKind, name: &str) -> bool, key Some(name);
    });
    observed!(ApiKeyStore {
        fn create_api_key(key: &ApiKey) -> (), key Some(key.id.as_str());
        fn find_api_key_by_hash(key_hash: &str, now: UnixTime) -> Option<ApiKey>, key Some(key_hash);
        fn get_api_key(id: &str) -> Option<ApiKey>, key Some(id);
        fn list_api_keys() -> Vec<ApiKey>, key None;
        fn list_api_keys_for_owner(owner: &str) -> Vec<ApiKey>, key Some(owner);
        fn delete_api_key(id: &str) -> bool, key Some(id);
        fn touch_api_key(id: &str, at: UnixTime) -> (), key Some(id);
    });
    observed!(AuditStore {
        fn put_audit(records: &[AuditRecord], seals: &[AuditSeal], retention: std::time::Duration) -> (), key None;
        fn query_audit(query: &AuditQuery) -> AuditPage, key query.user.as_deref();
        fn dump_audit(since_ms: i64, until_ms: i64) -> AuditDump, key None;
    });
    observed!(ToolSnapshotStore {
        fn put_tool_snapshot(server: &str, snapshot: &ToolSnapshot) -> (), key Some(server);
        fn get_tool_snapshot(server: &str) -> Option<ToolSnapshot>, key Some(server);
    });
    observed!(GrantStore {
        fn get_grant(user: &str, server: &str) -> Option<Grant>, key Some(user);
        fn save_grant_if_version(grant: &Grant, expected: Option<u64>) -> (), key Some(grant.user.as_str());
        fn delete_grant(user: &str, server: &str) -> bool, key Some(user);
        fn list_grants_for_user(user: &str) -> Vec<Grant>, key Some(user);
        fn list_grants(limit: usize) -> Vec<Grant>, key None;
        fn grants_due(before: UnixTime, limit: usize) -> Vec<Grant>, key None;
    });
    observed!(OAuthStateStore {
        fn put_state(state: &OAuthState) -> (), key Some(state.id.as_str());
        fn consume_state(id: &str, now: UnixTime) -> Option<OAuthState>, key Some(id);
    });
    observed!(SessionStore {
        fn end_session(fingerprint: &str, expires_at: UnixTime) -> (), key Some(fingerprint);
        fn session_ended(fingerprint: &str, now: UnixTime) -> bool, key Some(fingerprint);
    });
    observed!(RateLimitStore {
        fn take_rate(key: &str, now_us: i64, t_us: i64, tau_us: i64, last_tat: Option<i64>) -> Take, key Some(key);
        fn take_quota(key: &str, now_ms: i64, count: u64, window_end_ms: i64) -> Take, key Some(key);
        fn peek_bucket(key: &str, now_ms: i64) -> Option<i64>, key Some(key);
    });
}

/// An SDK HTTP client that lets one request at a time through to moto: one of the requests
/// of every client built with the same `turn`.
///
/// moto serves requests on concurrent threads and evaluates a condition expression, then
/// writes, with no lock in between: under load two `attribute_not_exists` puts of the same
/// item both succeed (seen: 2 winners of 16 racing creators, about once in 25 runs on a busy
/// 2-core machine), and two rate-limit updates can both pass one bucket's last slot. Real
/// DynamoDB applies each request atomically. Serializing requests gives moto that same
/// per-request atomicity and nothing more: callers still race, so code that read and then
/// wrote in two requests would still be caught.
pub fn one_request_at_a_time(
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_sdk_dynamodb::config::http::HttpRequest;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
    };

    #[derive(Debug)]
    struct Serial {
        inner: SharedHttpConnector,
        turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    }

    impl HttpConnector for Serial {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let (inner, turn) = (self.inner.clone(), self.turn.clone());
            // moto answers only once it has handled the request, so holding the turn until
            // the response head arrives covers the whole server-side operation.
            HttpConnectorFuture::new(async move {
                let _turn = turn.lock().await;
                inner.call(request).await
            })
        }
    }

    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https();
    http_client_fn(move |settings, components| {
        SharedHttpConnector::new(Serial {
            inner: inner.http_connector(settings, components),
            turn: turn.clone(),
        })
    })
}
