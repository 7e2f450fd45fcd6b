//! The store contract suite: one set of test bodies (module `cases`) run against every
//! adapter, so SQLite (local mode) and DynamoDB (production) cannot drift apart.
//!
//! Adapters, one generated test module each:
//! - `sqlite`: a fresh database file in a temp folder per test;
//! - `dynamo`: a fresh table in moto per test (`MCPGW_TEST_AWS_ENDPOINT`, started by
//!   `scripts/test-all.sh`); without it the test returns early after saying so, unless peers
//!   are required (`MCPGW_REQUIRE_PEERS=1` or CI), in which case it fails;
//! - `dynamo_paged`: the same with 2-item query pages, so every list and query goes through
//!   `LastEvaluatedKey` pagination.
//!
//! The audit cases are in `store_contract/cases/audit.rs`.
//!
//! `dynamo_layout` pins the DynamoDB item and table layout the SAM template relies on.
//!
//! Concurrency cases line 16 tasks up on a barrier before the racing call; tests run on the
//! multi-threaded runtime so the calls really overlap. The DynamoDB client hands moto one
//! HTTP request at a time (`mcpgw::testing::one_request_at_a_time`), because moto, unlike DynamoDB, does
//! not apply a conditional write atomically under concurrent requests.

use std::sync::Arc;

use mcpgw::clock::{Clock, SystemClock};
use mcpgw::domain::{
    ApiKey, Grant, GrantStatus, McpServer, OAuthState, PinSource, PinnedAuthServer,
};
use mcpgw::store::{
    ApiKeyStore, ConfigKind, ConfigStore, ConfigStoreExt, GrantStore, OAuthStateStore,
    SessionStore, Store, StoreError, to_doc,
};

/// A store under test plus whatever must live as long as it.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = mcpgw::store::sqlite::SqliteStore::open(&dir.path().join("data/store.sqlite3"))
        .expect("open sqlite");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn dynamo_client() -> Option<aws_sdk_dynamodb::Client> {
    let endpoint = mcpgw::testing::moto_endpoint()?;
    let conf = aws_sdk_dynamodb::config::Builder::from(&mcpgw::aws::emulator_sdk_config(&endpoint))
        .http_client(mcpgw::testing::one_request_at_a_time(Default::default()))
        .build();
    Some(aws_sdk_dynamodb::Client::from_conf(conf))
}

async fn dynamo(page_size: Option<i32>) -> Option<Fixture> {
    let client = dynamo_client().await?;
    let table = mcpgw::testing::unique_name("mcpgw-store");
    mcpgw::store::dynamo::create_table(&client, &table)
        .await
        .expect("create table");
    let mut store = mcpgw::store::dynamo::DynamoStore::new(client, table);
    if let Some(items) = page_size {
        store = store.with_page_size(items);
    }
    Some(Fixture {
        store: Arc::new(store),
        _dir: None,
    })
}

/// Generates one `#[tokio::test]` per (case, adapter).
macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let f = super::sqlite();
                    super::cases::$case(f.store.clone()).await;
                }
            )+
        }
        mod dynamo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(f) = super::dynamo(None).await else { return };
                    super::cases::$case(f.store.clone()).await;
                }
            )+
        }
        mod dynamo_paged {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(f) = super::dynamo(Some(2)).await else { return };
                    super::cases::$case(f.store.clone()).await;
                }
            )+
        }
    };
}

contract!(
    config_create_get_and_duplicate,
    config_list_is_ordered_by_name_and_scoped_by_kind,
    config_replace_requires_existing,
    config_delete,
    config_replace_if_unchanged_is_a_compare_and_swap,
    config_concurrent_pinners_exactly_one_wins,
    server_pinned_authorization_server_round_trips,
    api_key_create_and_duplicate_id,
    api_key_find_by_hash_ignores_expired,
    api_key_list_and_delete,
    api_key_found_by_hash_right_after_create,
    api_key_delete_frees_hash_and_id,
    api_key_touch_moves_last_used_forward_only,
    api_key_touch_of_a_missing_key_changes_nothing,
    api_key_list_for_owner,
    grant_create_then_second_create_conflicts,
    grant_save_if_version_right_and_stale,
    grant_save_without_version_bump_is_refused,
    grant_concurrent_savers_exactly_one_wins,
    grant_concurrent_creators_exactly_one_wins,
    grants_due_order_limit_and_sparse,
    grants_due_follows_refresh_at_changes,
    list_grants_for_user_ordered_and_scoped,
    list_grants_everyone_ordered_and_limited,
    state_consumed_once,
    state_expired_reads_absent_and_is_removed,
    state_concurrent_consume_exactly_one_wins,
    session_ended_until_its_expiry,
    session_end_is_idempotent_and_keeps_the_later_expiry,
    session_concurrent_enders_all_succeed,
    tool_snapshot_is_replaced_whole_per_server,
    rate_bucket_follows_gcra_whatever_the_hint,
    rate_bucket_concurrent_takers_never_exceed_the_burst,
    quota_counter_stops_at_count_per_key,
    audit_query_is_newest_first_filtered_and_paged,
    audit_put_is_idempotent_and_keeps_a_second_claim,
    audit_dump_round_trips_records_and_seals_for_verify,
);

const RACERS: usize = 16;

fn api_key(id: &str, hash: &str, expires_at: Option<i64>) -> ApiKey {
    ApiKey {
        id: id.into(),
        owner: format!("{id}@example.com"),
        name: format!("label of {id}"),
        key_hash: hash.into(),
        admin: id.ends_with("admin"),
        created_at: 100,
        expires_at,
        last_used_at: None,
    }
}

fn grant(user: &str, server: &str, version: u64, refresh_at: Option<i64>) -> Grant {
    Grant {
        user: user.into(),
        server: server.into(),
        version,
        sealed_tokens: format!("sealed {user} {server} v{version}").into_bytes(),
        status: GrantStatus::Active,
        scopes: vec!["read".into(), "write".into()],
        access_expires_at: Some(5_000 + version as i64),
        refresh_at,
        updated_at: 1_000 + version as i64,
        // Optional fields set on some versions, so round trips cover both forms.
        last_refresh_at: (version > 1).then(|| 900 + version as i64),
        last_error: (version == 2).then(|| "network_error".to_owned()),
        refresh_lease_until: (version == 3).then(|| 1_200 + version as i64),
    }
}

fn state(id: &str, expires_at: i64) -> OAuthState {
    OAuthState {
        id: id.into(),
        user: "alice@example.com".into(),
        server: "github".into(),
        sealed_payload: format!("pkce for {id}").into_bytes(),
        created_at: expires_at - 600,
        expires_at,
    }
}

mod cases {
    use super::*;
    use serde_json::json;
    use tokio::sync::Barrier;

    use mcpgw::store::Take;

    /// 5 per minute: T = 12 s, tau = 48 s; rates count in microseconds.
    const T: i64 = 12_000_000;
    const TAU: i64 = 48_000_000;
    const NOW: i64 = 1_700_000_000_000_000;
    /// The same instant in milliseconds: quotas' and `peek_bucket`'s clock.
    const NOW_MS: i64 = NOW / 1000;

    pub async fn rate_bucket_follows_gcra_whatever_the_hint(store: Arc<dyn Store>) {
        assert_eq!(store.peek_bucket("r#a", NOW_MS).await.unwrap(), None);
        // The hint is only a guess: wrong ones (busy for an absent bucket, idle for a busy
        // one) give the same answers as right ones.
        let hints = [Some(NOW + 99_000), None, Some(0), Some(NOW + 2 * T), None];
        let mut tat = None;
        for (i, hint) in hints.into_iter().enumerate() {
            let got = store.take_rate("r#a", NOW, T, TAU, hint).await.unwrap();
            assert_eq!(got, Take::Taken(NOW + (i as i64 + 1) * T), "call {i}");
            tat = Some(NOW + (i as i64 + 1) * T);
        }
        for hint in [tat, None, Some(0)] {
            assert_eq!(
                store.take_rate("r#a", NOW, T, TAU, hint).await.unwrap(),
                Take::Refused(NOW + 5 * T),
                "refused with the old tat, nothing written"
            );
        }
        assert_eq!(store.peek_bucket("r#a", NOW_MS).await.unwrap(), tat);
        // One interval later exactly one more passes.
        let later = NOW + T;
        assert_eq!(
            store.take_rate("r#a", later, T, TAU, tat).await.unwrap(),
            Take::Taken(NOW + 6 * T)
        );
        assert!(matches!(
            store.take_rate("r#a", later, T, TAU, None).await.unwrap(),
            Take::Refused(_)
        ));
        // Idle long enough, the bucket starts over from now.
        let idle = NOW + 100 * T;
        assert_eq!(
            store
                .take_rate("r#a", idle, T, TAU, Some(NOW + 6 * T))
                .await
                .unwrap(),
            Take::Taken(idle + T)
        );
        // Buckets are independent.
        assert_eq!(
            store.take_rate("r#b", NOW, T, TAU, None).await.unwrap(),
            Take::Taken(NOW + T)
        );
    }

    pub async fn rate_bucket_concurrent_takers_never_exceed_the_burst(store: Arc<dyn Store>) {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.take_rate("race", NOW, T, TAU, None).await.unwrap()
                })
            })
            .collect();
        let mut taken = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Take::Taken(tat) => taken.push(tat),
                Take::Refused(tat) => assert_eq!(tat, NOW + 5 * T),
            }
        }
        taken.sort();
        assert_eq!(taken, (1..=5).map(|i| NOW + i * T).collect::<Vec<_>>());
    }

    pub async fn quota_counter_stops_at_count_per_key(store: Arc<dyn Store>) {
        let end = NOW_MS + 3_600_000;
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(store.take_quota("q#1", NOW_MS, 3, end).await.unwrap());
        }
        assert_eq!(
            got,
            [
                Take::Taken(1),
                Take::Taken(2),
                Take::Taken(3),
                Take::Refused(3),
                Take::Refused(3)
            ]
        );
        assert_eq!(store.peek_bucket("q#1", NOW_MS).await.unwrap(), Some(3));
        assert_eq!(
            store.take_quota("q#2", NOW_MS, 3, end).await.unwrap(),
            Take::Taken(1)
        );
        // Past its window's end the counter reads as absent (expired).
        assert_eq!(store.peek_bucket("q#1", end + 2_000).await.unwrap(), None);
    }
    mod audit;
    pub use audit::*;

    pub async fn config_create_get_and_duplicate(store: Arc<dyn Store>) {
        let first = json!({"name": "alpha", "url": "https://a.example/mcp", "n": 1});
        assert_eq!(
            store.get_config(ConfigKind::Server, "alpha").await.unwrap(),
            None
        );
        store
            .create_config(ConfigKind::Server, "alpha", &first)
            .await
            .unwrap();
        assert_eq!(
            store.get_config(ConfigKind::Server, "alpha").await.unwrap(),
            Some(first.clone())
        );

        let err = store
            .create_config(
                ConfigKind::Server,
                "alpha",
                &json!({"name": "alpha", "n": 2}),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyExists { kind: "server", name } if name == "alpha"),
            "{err:?}"
        );
        // The failed create wrote nothing.
        assert_eq!(
            store.get_config(ConfigKind::Server, "alpha").await.unwrap(),
            Some(first.clone())
        );

        // Kinds are separate namespaces.
        let team = json!({"name": "alpha", "members": ["a@example.com"]});
        store
            .create_config(ConfigKind::Team, "alpha", &team)
            .await
            .unwrap();
        assert_eq!(
            store.get_config(ConfigKind::Team, "alpha").await.unwrap(),
            Some(team)
        );
        assert_eq!(
            store.get_config(ConfigKind::Server, "alpha").await.unwrap(),
            Some(first)
        );
    }

    pub async fn config_list_is_ordered_by_name_and_scoped_by_kind(store: Arc<dyn Store>) {
        // Byte order: "a" < "a-1" < "a_2" < "b" < "m" < "z".
        for name in ["m", "b", "z", "a_2", "a", "a-1"] {
            store
                .create_config(ConfigKind::Server, name, &json!({"name": name}))
                .await
                .unwrap();
        }
        store
            .create_config(ConfigKind::ServerGroup, "g", &json!({"name": "g"}))
            .await
            .unwrap();
        let names: Vec<String> = store
            .list_configs(ConfigKind::Server)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a", "a-1", "a_2", "b", "m", "z"]);
        assert_eq!(
            store.list_configs(ConfigKind::ServerGroup).await.unwrap(),
            vec![json!({"name": "g"})]
        );
        assert!(
            store
                .list_configs(ConfigKind::VirtualServer)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn config_replace_requires_existing(store: Arc<dyn Store>) {
        let err = store
            .replace_config(ConfigKind::IdentityProvider, "okta", &json!({"v": 1}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { kind: "identity provider", name } if name == "okta"),
            "{err:?}"
        );
        // The failed replace did not create it.
        assert_eq!(
            store
                .get_config(ConfigKind::IdentityProvider, "okta")
                .await
                .unwrap(),
            None
        );

        store
            .create_config(ConfigKind::IdentityProvider, "okta", &json!({"v": 1}))
            .await
            .unwrap();
        store
            .replace_config(ConfigKind::IdentityProvider, "okta", &json!({"v": 2}))
            .await
            .unwrap();
        assert_eq!(
            store
                .get_config(ConfigKind::IdentityProvider, "okta")
                .await
                .unwrap(),
            Some(json!({"v": 2}))
        );
        assert_eq!(
            store
                .list_configs(ConfigKind::IdentityProvider)
                .await
                .unwrap(),
            vec![json!({"v": 2})]
        );
    }

    pub async fn config_delete(store: Arc<dyn Store>) {
        assert!(
            !store
                .delete_config(ConfigKind::VirtualServer, "v")
                .await
                .unwrap()
        );
        store
            .create_config(ConfigKind::VirtualServer, "v", &json!({"v": 1}))
            .await
            .unwrap();
        store
            .create_config(ConfigKind::VirtualServer, "w", &json!({"w": 1}))
            .await
            .unwrap();
        assert!(
            store
                .delete_config(ConfigKind::VirtualServer, "v")
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .get_config(ConfigKind::VirtualServer, "v")
                .await
                .unwrap(),
            None
        );
        assert!(
            !store
                .delete_config(ConfigKind::VirtualServer, "v")
                .await
                .unwrap()
        );
        assert_eq!(
            store.list_configs(ConfigKind::VirtualServer).await.unwrap(),
            vec![json!({"w": 1})]
        );
        // The name is free again.
        store
            .create_config(ConfigKind::VirtualServer, "v", &json!({"v": 2}))
            .await
            .unwrap();
        assert_eq!(
            store
                .get_config(ConfigKind::VirtualServer, "v")
                .await
                .unwrap(),
            Some(json!({"v": 2}))
        );
    }

    pub async fn config_replace_if_unchanged_is_a_compare_and_swap(store: Arc<dyn Store>) {
        let v1 = json!({"name": "s", "url": "https://a.example/mcp", "n": 1});
        let v2 = json!({"name": "s", "url": "https://a.example/mcp", "n": 2});
        let v3 = json!({"name": "s", "url": "https://a.example/mcp", "n": 3});
        // Nothing stored: nothing written, nothing created.
        assert!(
            !store
                .replace_config_if_unchanged(ConfigKind::Server, "s", &v1, &v2)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_config(ConfigKind::Server, "s").await.unwrap(),
            None
        );
        store
            .create_config(ConfigKind::Server, "s", &v1)
            .await
            .unwrap();
        // The document read (compared as JSON, whatever its key order): written.
        let read = store
            .get_config(ConfigKind::Server, "s")
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .replace_config_if_unchanged(ConfigKind::Server, "s", &read, &v2)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_config(ConfigKind::Server, "s").await.unwrap(),
            Some(v2.clone())
        );
        // A stale read: refused, nothing written.
        assert!(
            !store
                .replace_config_if_unchanged(ConfigKind::Server, "s", &read, &v3)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_config(ConfigKind::Server, "s").await.unwrap(),
            Some(v2.clone())
        );
        // Same name in another kind is another document.
        assert!(
            !store
                .replace_config_if_unchanged(ConfigKind::Team, "s", &v2, &v3)
                .await
                .unwrap()
        );
        // Deleted since it was read: refused, not recreated.
        assert!(store.delete_config(ConfigKind::Server, "s").await.unwrap());
        assert!(
            !store
                .replace_config_if_unchanged(ConfigKind::Server, "s", &v2, &v3)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_config(ConfigKind::Server, "s").await.unwrap(),
            None
        );
    }

    /// Processes pinning a server's endpoints at first use at once: each read the record,
    /// each writes it back with its own pin; exactly one write lands per round.
    pub async fn config_concurrent_pinners_exactly_one_wins(store: Arc<dyn Store>) {
        store
            .create_config(
                ConfigKind::Server,
                "race",
                &json!({"name": "race", "pin": 0}),
            )
            .await
            .unwrap();
        for round in 1..=3 {
            let barrier = Arc::new(Barrier::new(RACERS));
            let tasks: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (store, barrier) = (store.clone(), barrier.clone());
                    tokio::spawn(async move {
                        let read = store
                            .get_config(ConfigKind::Server, "race")
                            .await
                            .unwrap()
                            .expect("exists");
                        let mine =
                            json!({"name": "race", "pin": format!("round {round} writer {i}")});
                        barrier.wait().await;
                        let won = store
                            .replace_config_if_unchanged(ConfigKind::Server, "race", &read, &mine)
                            .await
                            .unwrap();
                        (mine, won)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                let (mine, won) = t.await.unwrap();
                if won {
                    winners.push(mine);
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert_eq!(
                store.get_config(ConfigKind::Server, "race").await.unwrap(),
                Some(winners.remove(0))
            );
        }
    }

    /// The pinned authorization server is part of the server record: written, read and
    /// listed whole; a record written before pinning existed reads as unpinned.
    pub async fn server_pinned_authorization_server_round_trips(store: Arc<dyn Store>) {
        let legacy = json!({"name": "old", "url": "https://old.example/mcp", "created_at": 1,
            "updated_at": 1, "auth": {"type": "oauth2", "client_id": "c"}});
        store
            .create_config(ConfigKind::Server, "old", &legacy)
            .await
            .unwrap();
        let old = store.get_server("old").await.unwrap().unwrap();
        assert_eq!(old.authorization_server, None);

        let mut server: McpServer = serde_json::from_value(json!({"name": "new",
            "url": "https://new.example/mcp", "created_at": 1, "updated_at": 2,
            "auth": {"type": "oauth2"}}))
        .unwrap();
        let pin = PinnedAuthServer {
            issuer: Some("https://as.example".into()),
            authorization_endpoint: Some("https://as.example/authorize".into()),
            token_endpoint: "https://as.example/token".into(),
            revocation_endpoint: Some("https://as.example/revoke".into()),
            registration_endpoint: Some("https://as.example/register".into()),
            token_endpoint_auth_methods_supported: vec![
                "client_secret_basic".into(),
                "none".into(),
            ],
            authorization_response_iss_parameter_supported: true,
            resource_metadata_url: Some(
                "https://new.example/.well-known/oauth-protected-resource/mcp".into(),
            ),
            metadata_url: Some("https://as.example/.well-known/oauth-authorization-server".into()),
            discovered_at: 1_700_000_000,
            source: PinSource::DiscoveredAtFirstUse,
        };
        let unpinned = to_doc(&server);
        store
            .create_config(ConfigKind::Server, "new", &unpinned)
            .await
            .unwrap();
        server.authorization_server = Some(pin.clone());
        assert!(
            store
                .replace_config_if_unchanged(ConfigKind::Server, "new", &unpinned, &to_doc(&server))
                .await
                .unwrap()
        );
        assert_eq!(store.get_server("new").await.unwrap(), Some(server.clone()));
        let listed: Vec<McpServer> = store.list_typed(ConfigKind::Server).await.unwrap();
        assert_eq!(listed, vec![server.clone(), old]);
        // A second pinner holding the unpinned read loses and changes nothing.
        let mut other = server.clone();
        other.authorization_server = Some(PinnedAuthServer {
            token_endpoint: "https://attacker.example/token".into(),
            ..pin
        });
        assert!(
            !store
                .replace_config_if_unchanged(ConfigKind::Server, "new", &unpinned, &to_doc(&other))
                .await
                .unwrap()
        );
        assert_eq!(store.get_server("new").await.unwrap(), Some(server));
    }

    pub async fn api_key_create_and_duplicate_id(store: Arc<dyn Store>) {
        let key = api_key("k-admin", "hash-1", Some(9_999));
        assert_eq!(store.get_api_key("k-admin").await.unwrap(), None);
        store.create_api_key(&key).await.unwrap();
        assert_eq!(
            store.get_api_key("k-admin").await.unwrap(),
            Some(key.clone())
        );

        let err = store
            .create_api_key(&api_key("k-admin", "hash-2", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyExists { kind: "API key", name } if name == "k-admin"),
            "{err:?}"
        );
        // The failed create wrote nothing: the old key stands and the new hash finds nothing.
        assert_eq!(
            store.get_api_key("k-admin").await.unwrap(),
            Some(key.clone())
        );
        assert_eq!(store.find_api_key_by_hash("hash-2", 0).await.unwrap(), None);
        assert_eq!(
            store.find_api_key_by_hash("hash-1", 0).await.unwrap(),
            Some(key)
        );
    }

    pub async fn api_key_find_by_hash_ignores_expired(store: Arc<dyn Store>) {
        let forever = api_key("forever", "h-forever", None);
        let until = api_key("until-1000", "h-until", Some(1_000));
        store.create_api_key(&forever).await.unwrap();
        store.create_api_key(&until).await.unwrap();

        assert_eq!(
            store
                .find_api_key_by_hash("h-forever", 1_000_000)
                .await
                .unwrap(),
            Some(forever)
        );
        assert_eq!(
            store.find_api_key_by_hash("h-until", 999).await.unwrap(),
            Some(until.clone())
        );
        // Dead from its expires_at second on.
        assert_eq!(
            store.find_api_key_by_hash("h-until", 1_000).await.unwrap(),
            None
        );
        assert_eq!(
            store.find_api_key_by_hash("h-until", 5_000).await.unwrap(),
            None
        );
        assert_eq!(
            store.find_api_key_by_hash("h-unknown", 0).await.unwrap(),
            None
        );
        // Expired keys stay visible to admins.
        assert_eq!(
            store.get_api_key("until-1000").await.unwrap(),
            Some(until.clone())
        );
        assert!(store.list_api_keys().await.unwrap().contains(&until));

        // An expired key must not hide a live one with the same hash (whatever the order).
        let dead = api_key("a-dead", "h-shared", Some(10));
        let live = api_key("b-live", "h-shared", None);
        store.create_api_key(&dead).await.unwrap();
        store.create_api_key(&live).await.unwrap();
        assert_eq!(
            store.find_api_key_by_hash("h-shared", 500).await.unwrap(),
            Some(live)
        );
    }

    pub async fn api_key_list_and_delete(store: Arc<dyn Store>) {
        assert!(store.list_api_keys().await.unwrap().is_empty());
        let keys: Vec<ApiKey> = ["k3", "k1", "k2", "k0"]
            .iter()
            .map(|id| api_key(id, &format!("hash-{id}"), None))
            .collect();
        for k in &keys {
            store.create_api_key(k).await.unwrap();
        }
        let ids = |v: Vec<ApiKey>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_api_keys().await.unwrap()),
            ["k0", "k1", "k2", "k3"]
        );
        assert_eq!(store.list_api_keys().await.unwrap()[1], keys[1]);

        assert!(store.delete_api_key("k2").await.unwrap());
        assert!(!store.delete_api_key("k2").await.unwrap());
        assert!(!store.delete_api_key("never").await.unwrap());
        assert_eq!(
            ids(store.list_api_keys().await.unwrap()),
            ["k0", "k1", "k3"]
        );
        assert_eq!(store.get_api_key("k2").await.unwrap(), None);
        assert_eq!(
            store.find_api_key_by_hash("hash-k2", 0).await.unwrap(),
            None
        );
        assert!(
            store
                .find_api_key_by_hash("hash-k3", 0)
                .await
                .unwrap()
                .is_some()
        );
    }

    /// Read-after-write: automation creates a key and uses it at once, so the lookup by hash
    /// must see a key as soon as its create returned (no eventually consistent index).
    pub async fn api_key_found_by_hash_right_after_create(store: Arc<dyn Store>) {
        for i in 0..5 {
            let key = api_key(&format!("fresh-{i}"), &format!("h-fresh-{i}"), None);
            store.create_api_key(&key).await.unwrap();
            assert_eq!(
                store.find_api_key_by_hash(&key.key_hash, 0).await.unwrap(),
                Some(key)
            );
        }
    }

    /// Delete removes the key from the lookup by hash at once, and frees its id (and hash)
    /// for a new key.
    pub async fn api_key_delete_frees_hash_and_id(store: Arc<dyn Store>) {
        let first = api_key("k-reused", "h-reused", None);
        store.create_api_key(&first).await.unwrap();
        assert!(store.delete_api_key("k-reused").await.unwrap());
        assert_eq!(
            store.find_api_key_by_hash("h-reused", 0).await.unwrap(),
            None
        );
        assert_eq!(store.get_api_key("k-reused").await.unwrap(), None);

        // Same id, same hash.
        let second = api_key("k-reused", "h-reused", Some(9_999));
        store.create_api_key(&second).await.unwrap();
        assert_eq!(
            store.find_api_key_by_hash("h-reused", 0).await.unwrap(),
            Some(second.clone())
        );
        assert_eq!(store.get_api_key("k-reused").await.unwrap(), Some(second));

        // Same id, another hash: the old hash finds nothing.
        assert!(store.delete_api_key("k-reused").await.unwrap());
        let third = api_key("k-reused", "h-other", None);
        store.create_api_key(&third).await.unwrap();
        assert_eq!(
            store.find_api_key_by_hash("h-reused", 0).await.unwrap(),
            None
        );
        assert_eq!(
            store.find_api_key_by_hash("h-other", 0).await.unwrap(),
            Some(third)
        );
    }

    /// `touch_api_key` records a use: reads by id and lists see it, it never moves back, and
    /// the key otherwise stays as it was (and still authenticates).
    pub async fn api_key_touch_moves_last_used_forward_only(store: Arc<dyn Store>) {
        let key = api_key("k-used", "h-used", Some(9_999));
        let other = api_key("k-idle", "h-idle", None);
        store.create_api_key(&key).await.unwrap();
        store.create_api_key(&other).await.unwrap();
        assert_eq!(
            store
                .get_api_key("k-used")
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            None
        );

        store.touch_api_key("k-used", 500).await.unwrap();
        let used = ApiKey {
            last_used_at: Some(500),
            ..key.clone()
        };
        assert_eq!(
            store.get_api_key("k-used").await.unwrap(),
            Some(used.clone())
        );
        assert_eq!(
            store.list_api_keys().await.unwrap(),
            vec![other.clone(), used.clone()],
            "listed with its use; the other key untouched"
        );

        // Earlier or equal times do not move it back.
        for earlier in [499, 500, 1] {
            store.touch_api_key("k-used", earlier).await.unwrap();
            assert_eq!(
                store
                    .get_api_key("k-used")
                    .await
                    .unwrap()
                    .unwrap()
                    .last_used_at,
                Some(500),
                "touch at {earlier}"
            );
        }
        store.touch_api_key("k-used", 700).await.unwrap();
        assert_eq!(
            store
                .get_api_key("k-used")
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            Some(700)
        );

        // Still found by hash, with everything but the use time as created.
        let found = store
            .find_api_key_by_hash("h-used", 600)
            .await
            .unwrap()
            .expect("a touched key still authenticates");
        assert_eq!(
            ApiKey {
                last_used_at: None,
                ..found
            },
            key
        );
        // Expiry still applies.
        assert_eq!(
            store.find_api_key_by_hash("h-used", 9_999).await.unwrap(),
            None
        );

        // A key created with a use time keeps it, and later touches still only move forward.
        let imported = ApiKey {
            last_used_at: Some(50),
            ..api_key("k-imported", "h-imported", None)
        };
        store.create_api_key(&imported).await.unwrap();
        store.touch_api_key("k-imported", 40).await.unwrap();
        assert_eq!(
            store.get_api_key("k-imported").await.unwrap(),
            Some(imported.clone())
        );
        store.touch_api_key("k-imported", 60).await.unwrap();
        assert_eq!(
            store
                .get_api_key("k-imported")
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            Some(60)
        );
    }

    /// A use recorded after the key was deleted (the write is asynchronous) is no error and
    /// does not bring the key back; a new key with the same id starts unused.
    pub async fn api_key_touch_of_a_missing_key_changes_nothing(store: Arc<dyn Store>) {
        store.touch_api_key("never-existed", 10).await.unwrap();
        assert_eq!(store.get_api_key("never-existed").await.unwrap(), None);

        let key = api_key("k-gone", "h-gone", None);
        store.create_api_key(&key).await.unwrap();
        store.touch_api_key("k-gone", 10).await.unwrap();
        assert!(store.delete_api_key("k-gone").await.unwrap());
        store.touch_api_key("k-gone", 20).await.unwrap();
        assert_eq!(store.get_api_key("k-gone").await.unwrap(), None);
        assert!(store.list_api_keys().await.unwrap().is_empty());
        assert_eq!(store.find_api_key_by_hash("h-gone", 0).await.unwrap(), None);
        assert!(
            !store.delete_api_key("k-gone").await.unwrap(),
            "nothing to delete: the touch recreated nothing"
        );

        store.create_api_key(&key).await.unwrap();
        assert_eq!(store.get_api_key("k-gone").await.unwrap(), Some(key));
    }

    /// Listing by owner: exact owner, ordered by id, expired keys included, deleted keys gone.
    pub async fn api_key_list_for_owner(store: Arc<dyn Store>) {
        let owned = |id: &str, owner: &str, expires_at| ApiKey {
            owner: owner.into(),
            ..api_key(id, &format!("h-{id}"), expires_at)
        };
        let keys = [
            owned("k3", "ann@example.com", None),
            owned("k1", "ann@example.com", Some(5)),
            owned("k2", "bob@example.com", None),
            owned("k4", "service:ann", None),
            owned("k5", "ann@example.com.evil", None),
            owned("k6", "ann@example.com", None),
            owned("k0", "ann@example.com", None),
        ];
        for k in &keys {
            store.create_api_key(k).await.unwrap();
        }
        store.touch_api_key("k3", 77).await.unwrap();
        let ids = |keys: &[ApiKey]| keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>();
        let anns = store
            .list_api_keys_for_owner("ann@example.com")
            .await
            .unwrap();
        assert_eq!(ids(&anns), ["k0", "k1", "k3", "k6"]);
        assert_eq!(anns[2].last_used_at, Some(77));
        assert_eq!(anns[1], keys[1]);
        // A deleted key leaves its owner's list, and only it.
        assert!(store.delete_api_key("k1").await.unwrap());
        assert!(store.delete_api_key("k2").await.unwrap());
        let anns = store
            .list_api_keys_for_owner("ann@example.com")
            .await
            .unwrap();
        assert_eq!(ids(&anns), ["k0", "k3", "k6"]);
        assert!(
            store
                .list_api_keys_for_owner("bob@example.com")
                .await
                .unwrap()
                .is_empty()
        );
        // Recreating the same id for another owner moves it.
        store
            .create_api_key(&owned("k1", "bob@example.com", None))
            .await
            .unwrap();
        assert_eq!(
            ids(&store
                .list_api_keys_for_owner("bob@example.com")
                .await
                .unwrap()),
            ["k1"]
        );
        assert_eq!(
            ids(&store
                .list_api_keys_for_owner("ann@example.com")
                .await
                .unwrap()),
            ["k0", "k3", "k6"]
        );
        assert_eq!(
            store.list_api_keys_for_owner("service:ann").await.unwrap(),
            vec![keys[3].clone()]
        );
        assert!(
            store
                .list_api_keys_for_owner("nobody@example.com")
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn grant_create_then_second_create_conflicts(store: Arc<dyn Store>) {
        let user = "alice@example.com";
        assert_eq!(store.get_grant(user, "github").await.unwrap(), None);
        let first = grant(user, "github", 1, Some(4_000));
        store.save_grant_if_version(&first, None).await.unwrap();
        assert_eq!(
            store.get_grant(user, "github").await.unwrap(),
            Some(first.clone())
        );

        let mut second = grant(user, "github", 1, None);
        second.sealed_tokens = b"someone else's tokens".to_vec();
        let err = store
            .save_grant_if_version(&second, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::VersionConflict { user: u, server: s } if u == user && s == "github"),
            "{err:?}"
        );
        assert_eq!(store.get_grant(user, "github").await.unwrap(), Some(first));

        // Expecting a version of a grant that does not exist conflicts and creates nothing.
        let err = store
            .save_grant_if_version(&grant(user, "jira", 2, None), Some(1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::VersionConflict { .. }), "{err:?}");
        assert_eq!(store.get_grant(user, "jira").await.unwrap(), None);
    }

    pub async fn grant_save_if_version_right_and_stale(store: Arc<dyn Store>) {
        let user = "bob@example.com";
        let v1 = grant(user, "drive", 1, Some(100));
        store.save_grant_if_version(&v1, None).await.unwrap();

        let mut v2 = grant(user, "drive", 2, Some(200));
        v2.status = GrantStatus::NeedsReconsent;
        v2.scopes = vec!["only-read".into()];
        v2.access_expires_at = None;
        store.save_grant_if_version(&v2, Some(1)).await.unwrap();
        assert_eq!(
            store.get_grant(user, "drive").await.unwrap(),
            Some(v2.clone())
        );

        // A writer that read v1 is too late.
        let stale = grant(user, "drive", 2, Some(999));
        let err = store
            .save_grant_if_version(&stale, Some(1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::VersionConflict { .. }), "{err:?}");
        // Expecting a future version is wrong too.
        let err = store
            .save_grant_if_version(&grant(user, "drive", 4, None), Some(3))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::VersionConflict { .. }), "{err:?}");
        assert_eq!(store.get_grant(user, "drive").await.unwrap(), Some(v2));

        let v3 = grant(user, "drive", 3, None);
        store.save_grant_if_version(&v3, Some(2)).await.unwrap();
        assert_eq!(store.get_grant(user, "drive").await.unwrap(), Some(v3));
    }

    pub async fn grant_save_without_version_bump_is_refused(store: Arc<dyn Store>) {
        let (user, server) = ("ivan@example.com", "asana");
        let invalid = |err: StoreError, next: u64, got: u64| {
            assert!(
                matches!(err, StoreError::InvalidVersion { expected_next, got: g }
                    if expected_next == next && g == got),
                "{err:?}"
            );
        };

        // A new grant starts at version 1: any other version is refused and creates nothing
        // (not even an entry in the due list).
        for version in [0, 2, 7] {
            let err = store
                .save_grant_if_version(&grant(user, server, version, Some(100)), None)
                .await
                .unwrap_err();
            invalid(err, 1, version);
        }
        assert_eq!(store.get_grant(user, server).await.unwrap(), None);
        assert!(store.grants_due(1_000, 10).await.unwrap().is_empty());
        assert!(store.list_grants_for_user(user).await.unwrap().is_empty());

        let v1 = grant(user, server, 1, Some(100));
        store.save_grant_if_version(&v1, None).await.unwrap();

        // Two refreshers read v1. The first forgets to bump the version: refused, and the
        // stored grant (tokens, refresh time, version) is untouched...
        let mut unbumped = v1.clone();
        unbumped.sealed_tokens = b"rotated by a buggy writer".to_vec();
        unbumped.refresh_at = Some(500);
        let err = store
            .save_grant_if_version(&unbumped, Some(1))
            .await
            .unwrap_err();
        invalid(err, 2, 1);
        // ...and so is a writer that skips a version.
        let err = store
            .save_grant_if_version(&grant(user, server, 3, None), Some(1))
            .await
            .unwrap_err();
        invalid(err, 2, 3);
        assert_eq!(
            store.get_grant(user, server).await.unwrap(),
            Some(v1.clone())
        );
        assert_eq!(store.grants_due(1_000, 10).await.unwrap(), vec![v1]);

        // So the version still moves on every write: the second refresher wins with v2,
        // and the first, retrying correctly from its stale read, now conflicts.
        let v2 = grant(user, server, 2, Some(200));
        store.save_grant_if_version(&v2, Some(1)).await.unwrap();
        let mut retry = unbumped.clone();
        retry.version = 2;
        let err = store
            .save_grant_if_version(&retry, Some(1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::VersionConflict { .. }), "{err:?}");
        assert_eq!(
            store.get_grant(user, server).await.unwrap(),
            Some(v2.clone())
        );

        // The check comes before the store is consulted: an unbumped write of a grant that
        // does not exist is a bug too, reported as such rather than as a conflict.
        let err = store
            .save_grant_if_version(&grant(user, "missing", 1, None), Some(1))
            .await
            .unwrap_err();
        invalid(err, 2, 1);
        // A version that cannot be incremented cannot have been read from the store.
        let err = store
            .save_grant_if_version(&grant(user, server, u64::MAX, None), Some(u64::MAX))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert_eq!(store.get_grant(user, "missing").await.unwrap(), None);
        assert_eq!(store.list_grants_for_user(user).await.unwrap(), vec![v2]);
    }

    pub async fn grant_concurrent_savers_exactly_one_wins(store: Arc<dyn Store>) {
        let (user, server) = ("carol@example.com", "slack");
        store
            .save_grant_if_version(&grant(user, server, 1, Some(10)), None)
            .await
            .unwrap();
        // Several rounds: a lucky interleaving in one round must not hide a race.
        for round in 1..=3u64 {
            let barrier = Arc::new(Barrier::new(RACERS));
            let tasks: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (store, barrier) = (store.clone(), barrier.clone());
                    tokio::spawn(async move {
                        let read = store
                            .get_grant(user, server)
                            .await
                            .unwrap()
                            .expect("grant exists");
                        let mut next = read.clone();
                        next.version = read.version + 1;
                        next.sealed_tokens = format!("round {round} writer {i}").into_bytes();
                        barrier.wait().await;
                        let result = store.save_grant_if_version(&next, Some(read.version)).await;
                        (next, result)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                let (attempt, result) = t.await.unwrap();
                match result {
                    Ok(()) => winners.push(attempt),
                    Err(StoreError::VersionConflict { .. }) => {}
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "round {round}: exactly one writer wins, got {}",
                winners.len()
            );
            assert_eq!(winners[0].version, round + 1);
            assert_eq!(
                store.get_grant(user, server).await.unwrap(),
                Some(winners.remove(0))
            );
        }
    }

    pub async fn grant_concurrent_creators_exactly_one_wins(store: Arc<dyn Store>) {
        let (user, server) = ("dave@example.com", "linear");
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut g = grant(user, server, 1, None);
                    g.sealed_tokens = format!("creator {i}").into_bytes();
                    barrier.wait().await;
                    let result = store.save_grant_if_version(&g, None).await;
                    (g, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (attempt, result) = t.await.unwrap();
            match result {
                Ok(()) => winners.push(attempt),
                Err(StoreError::VersionConflict { .. }) => {}
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one creator wins, got {}",
            winners.len()
        );
        assert_eq!(
            store.get_grant(user, server).await.unwrap(),
            Some(winners.remove(0))
        );
    }

    fn keys(grants: &[Grant]) -> Vec<(Option<i64>, &str, &str)> {
        grants
            .iter()
            .map(|g| (g.refresh_at, g.user.as_str(), g.server.as_str()))
            .collect()
    }

    pub async fn grants_due_order_limit_and_sparse(store: Arc<dyn Store>) {
        // 24 grants over 12 users, distinct refresh times in scrambled order, every fourth
        // without a refresh time. The 12 due ones land in all 8 DynamoDB refresh shards.
        let mut all = Vec::new();
        for i in 0..24i64 {
            let refresh_at = (i % 4 != 3).then_some(1_000 + ((i * 7) % 24) * 10);
            let g = grant(
                &format!("user{}@example.com", i / 2),
                &format!("srv{}", i % 2),
                1,
                refresh_at,
            );
            store.save_grant_if_version(&g, None).await.unwrap();
            all.push(g);
        }
        let before = 1_150;
        let mut expected: Vec<Grant> = all
            .iter()
            .filter(|g| g.refresh_at.is_some_and(|t| t <= before))
            .cloned()
            .collect();
        expected.sort_by_key(|g| g.refresh_at);
        assert!(
            expected.len() >= 8,
            "the fixture has enough due grants ({})",
            expected.len()
        );
        assert!(
            expected.iter().any(|g| g.refresh_at == Some(before)),
            "fixture covers the boundary"
        );

        // Keys first, for a readable failure; then whole grants.
        let due = store.grants_due(before, 100).await.unwrap();
        assert_eq!(keys(&due), keys(&expected));
        assert_eq!(due, expected);
        let due = store.grants_due(before, 5).await.unwrap();
        assert_eq!(keys(&due), keys(&expected[..5]));
        let due = store.grants_due(before, 1).await.unwrap();
        assert_eq!(keys(&due), keys(&expected[..1]));
        assert!(store.grants_due(before, 0).await.unwrap().is_empty());
        assert!(store.grants_due(999, 100).await.unwrap().is_empty());
        // Far in the future: every grant with a refresh time, none without.
        let with_refresh = all.iter().filter(|g| g.refresh_at.is_some()).count();
        let due = store.grants_due(i64::MAX / 2, 1_000).await.unwrap();
        assert_eq!(due.len(), with_refresh);
        assert!(due.windows(2).all(|w| w[0].refresh_at < w[1].refresh_at));
    }

    pub async fn grants_due_follows_refresh_at_changes(store: Arc<dyn Store>) {
        let (user, server) = ("erin@example.com", "notion");
        let v1 = grant(user, server, 1, Some(100));
        store.save_grant_if_version(&v1, None).await.unwrap();
        assert_eq!(store.grants_due(200, 10).await.unwrap(), vec![v1]);

        // Nothing to refresh any more: the grant leaves the due list.
        let v2 = grant(user, server, 2, None);
        store.save_grant_if_version(&v2, Some(1)).await.unwrap();
        assert!(store.grants_due(200, 10).await.unwrap().is_empty());

        let v3 = grant(user, server, 3, Some(300));
        store.save_grant_if_version(&v3, Some(2)).await.unwrap();
        assert!(store.grants_due(299, 10).await.unwrap().is_empty());
        assert_eq!(store.grants_due(300, 10).await.unwrap(), vec![v3]);

        assert!(store.delete_grant(user, server).await.unwrap());
        assert!(store.grants_due(300, 10).await.unwrap().is_empty());
    }

    pub async fn list_grants_everyone_ordered_and_limited(store: Arc<dyn Store>) {
        assert!(store.list_grants(10).await.unwrap().is_empty());
        let wanted = [
            ("amy@example.com", "b", 2),
            ("amy@example.com", "z", 1),
            ("bo@example.com", "a", 1),
            ("cy@example.com", "m", 1),
        ];
        for (u, srv, v) in wanted.iter().rev() {
            store
                .save_grant_if_version(&grant(u, srv, 1, Some(7)), None)
                .await
                .unwrap();
            if *v == 2 {
                store
                    .save_grant_if_version(&grant(u, srv, 2, None), Some(1))
                    .await
                    .unwrap();
            }
        }
        // Items of other kinds in the table are not grants.
        store.put_state(&state("s1", 9_999_999_999)).await.unwrap();
        let all: Vec<Grant> = wanted
            .iter()
            .map(|(u, srv, v)| grant(u, srv, *v, if *v == 2 { None } else { Some(7) }))
            .collect();
        assert_eq!(store.list_grants(10).await.unwrap(), all);
        assert_eq!(store.list_grants(2).await.unwrap(), all[..2].to_vec());
        assert!(store.list_grants(0).await.unwrap().is_empty());
    }

    pub async fn list_grants_for_user_ordered_and_scoped(store: Arc<dyn Store>) {
        let u1 = "frank@example.com";
        for server in ["zeta", "alpha", "mid"] {
            store
                .save_grant_if_version(&grant(u1, server, 1, None), None)
                .await
                .unwrap();
        }
        store
            .save_grant_if_version(&grant("gina@example.com", "alpha", 1, None), None)
            .await
            .unwrap();
        // A user whose name extends u1's must not leak into u1's list.
        store
            .save_grant_if_version(&grant("frank@example.com.evil", "beta", 1, None), None)
            .await
            .unwrap();

        let listed = store.list_grants_for_user(u1).await.unwrap();
        assert_eq!(
            listed,
            vec![
                grant(u1, "alpha", 1, None),
                grant(u1, "mid", 1, None),
                grant(u1, "zeta", 1, None)
            ]
        );
        assert_eq!(
            store
                .list_grants_for_user("gina@example.com")
                .await
                .unwrap(),
            vec![grant("gina@example.com", "alpha", 1, None)]
        );
        assert!(
            store
                .list_grants_for_user("nobody@example.com")
                .await
                .unwrap()
                .is_empty()
        );

        assert!(store.delete_grant(u1, "mid").await.unwrap());
        assert!(!store.delete_grant(u1, "mid").await.unwrap());
        assert_eq!(store.get_grant(u1, "mid").await.unwrap(), None);
        let servers: Vec<String> = store
            .list_grants_for_user(u1)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.server)
            .collect();
        assert_eq!(servers, ["alpha", "zeta"]);
    }

    pub async fn state_consumed_once(store: Arc<dyn Store>) {
        let s = state("st-once", 1_600);
        store.put_state(&s).await.unwrap();
        store.put_state(&state("st-other", 1_600)).await.unwrap();
        assert_eq!(
            store.consume_state("st-unknown", 1_000).await.unwrap(),
            None
        );
        assert_eq!(
            store.consume_state("st-once", 1_000).await.unwrap(),
            Some(s)
        );
        assert_eq!(store.consume_state("st-once", 1_000).await.unwrap(), None);
        // Consuming one state leaves the others.
        assert_eq!(
            store.consume_state("st-other", 1_001).await.unwrap(),
            Some(state("st-other", 1_600))
        );
    }

    pub async fn state_expired_reads_absent_and_is_removed(store: Arc<dyn Store>) {
        store.put_state(&state("st-late", 1_600)).await.unwrap();
        // Expired from its expires_at second on.
        assert_eq!(store.consume_state("st-late", 1_600).await.unwrap(), None);
        // And gone: even a caller whose clock says it is still valid finds nothing.
        assert_eq!(store.consume_state("st-late", 1_000).await.unwrap(), None);

        store.put_state(&state("st-edge", 1_600)).await.unwrap();
        assert_eq!(
            store.consume_state("st-edge", 1_599).await.unwrap(),
            Some(state("st-edge", 1_600))
        );
    }

    pub async fn state_concurrent_consume_exactly_one_wins(store: Arc<dyn Store>) {
        for round in 0..3 {
            let id = format!("st-race-{round}");
            let s = state(&id, 10_000);
            store.put_state(&s).await.unwrap();
            let barrier = Arc::new(Barrier::new(RACERS));
            let tasks: Vec<_> = (0..RACERS)
                .map(|_| {
                    let (store, barrier, id) = (store.clone(), barrier.clone(), id.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.consume_state(&id, 5_000).await.unwrap()
                    })
                })
                .collect();
            let mut got = Vec::new();
            for t in tasks {
                if let Some(st) = t.await.unwrap() {
                    got.push(st);
                }
            }
            assert_eq!(
                got,
                vec![s],
                "round {round}: exactly one consumer gets the state"
            );
        }
    }

    // Ended sessions: times are near the wall clock's, since records past it may be swept.

    pub async fn session_ended_until_its_expiry(store: Arc<dyn Store>) {
        let now = SystemClock.now();
        let exp = now + 600;
        assert!(!store.session_ended("f-one", now).await.unwrap());
        store.end_session("f-one", exp).await.unwrap();
        assert!(store.session_ended("f-one", now).await.unwrap());
        assert!(store.session_ended("f-one", exp - 1).await.unwrap());
        // Not from its expires_at second on (the session's id is refused by then anyway).
        assert!(!store.session_ended("f-one", exp).await.unwrap());
        assert!(!store.session_ended("f-one", exp + 1_000).await.unwrap());
        // Only that session: a fingerprint extending it, or sharing its prefix, is not ended.
        for other in ["f-on", "f-one0", "f-two"] {
            assert!(!store.session_ended(other, now).await.unwrap(), "{other}");
        }
        store.end_session("f-two", exp).await.unwrap();
        assert!(store.session_ended("f-two", now).await.unwrap());
        assert!(
            store.session_ended("f-one", now).await.unwrap(),
            "ending another session keeps this one"
        );
    }

    pub async fn session_end_is_idempotent_and_keeps_the_later_expiry(store: Arc<dyn Store>) {
        let now = SystemClock.now();
        store.end_session("f-again", now + 100).await.unwrap();
        store.end_session("f-again", now + 100).await.unwrap();
        assert!(store.session_ended("f-again", now + 99).await.unwrap());
        assert!(!store.session_ended("f-again", now + 100).await.unwrap());
        // An earlier expiry never shortens the record.
        store.end_session("f-again", now + 50).await.unwrap();
        assert!(store.session_ended("f-again", now + 99).await.unwrap());
        // A later one extends it.
        store.end_session("f-again", now + 200).await.unwrap();
        assert!(store.session_ended("f-again", now + 199).await.unwrap());
        assert!(!store.session_ended("f-again", now + 200).await.unwrap());
    }

    pub async fn tool_snapshot_is_replaced_whole_per_server(store: Arc<dyn Store>) {
        use mcpgw::store::ToolSnapshot;
        assert_eq!(store.get_tool_snapshot("notes").await.unwrap(), None);
        let first = ToolSnapshot {
            url: "http://up/mcp".into(),
            tools: vec![
                json!({"name": "read", "description": "Reads.", "inputSchema": {"type": "object"}}),
                json!({"name": "write", "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}}),
            ],
            taken_at: 1_000,
        };
        store.put_tool_snapshot("notes", &first).await.unwrap();
        assert_eq!(
            store.get_tool_snapshot("notes").await.unwrap().as_ref(),
            Some(&first)
        );
        // Only that server: another name, or one extending it, has none.
        for other in ["note", "notes2", "NOTES"] {
            assert_eq!(
                store.get_tool_snapshot(other).await.unwrap(),
                None,
                "{other}"
            );
        }
        // Replaced whole: a shorter list leaves nothing of the longer one.
        let second = ToolSnapshot {
            url: "http://up2/mcp".into(),
            tools: vec![json!({"name": "only", "inputSchema": {"type": "object"}})],
            taken_at: 2_000,
        };
        store.put_tool_snapshot("notes", &second).await.unwrap();
        assert_eq!(
            store.get_tool_snapshot("notes").await.unwrap(),
            Some(second.clone())
        );
        let empty = ToolSnapshot {
            tools: vec![],
            ..second
        };
        store.put_tool_snapshot("notes", &empty).await.unwrap();
        assert_eq!(store.get_tool_snapshot("notes").await.unwrap(), Some(empty));
    }

    pub async fn session_concurrent_enders_all_succeed(store: Arc<dyn Store>) {
        let now = SystemClock.now();
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.end_session("f-race", now + 300 + i as i64).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let last = now + 300 + RACERS as i64 - 1;
        assert!(store.session_ended("f-race", last - 1).await.unwrap());
        assert!(
            !store.session_ended("f-race", last).await.unwrap(),
            "the latest expiry wins, whatever the order"
        );
    }
}

/// The DynamoDB layout the SAM template is written against.
/// DynamoDB writes per counted call: with this process's memory of the bucket, every call
/// (allowed or refused) is one conditional `UpdateItem`; a cold process pays one more on
/// its first call to a busy bucket.
#[tokio::test]
async fn dynamo_rate_limit_is_one_write_per_counted_call() {
    use mcpgw::store::{RateLimitStore, Take};
    let Some(client) = dynamo_client().await else {
        return;
    };
    let table = mcpgw::testing::unique_name("mcpgw-store");
    mcpgw::store::dynamo::create_table(&client, &table)
        .await
        .expect("create table");
    let store = mcpgw::store::dynamo::DynamoStore::new(client.clone(), table.clone());
    // Rates count in microseconds, quotas in milliseconds.
    let (t, tau, now) = (12_000_000, 48_000_000, 1_700_000_000_000_000);
    let mut hint = None;
    let mut taken = 0;
    for _ in 0..20 {
        let r = store.take_rate("w", now, t, tau, hint).await.unwrap();
        let (Take::Taken(v) | Take::Refused(v)) = r;
        taken += usize::from(matches!(r, Take::Taken(_)));
        hint = Some(v);
    }
    assert_eq!(taken, 5);
    assert_eq!(store.rate_limit_writes(), 20, "one write per call");
    // A second process (no memory) on the same bucket: its first call costs two writes.
    let other = mcpgw::store::dynamo::DynamoStore::new(client, table);
    other.take_rate("w", now + t, t, tau, None).await.unwrap();
    assert_eq!(other.rate_limit_writes(), 2);
    for i in 0..3 {
        other
            .take_quota("q", now / 1000, 2, now / 1000 + 3_600_000)
            .await
            .unwrap();
        assert_eq!(other.rate_limit_writes(), 3 + i);
    }
    println!(
        "dynamodb writes per counted call: {} over 20 warm calls",
        store.rate_limit_writes() as f64 / 20.0
    );
}

mod dynamo_layout {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ProjectionType, TimeToLiveStatus};
    use mcpgw::store::dynamo::{DynamoStore, create_table};

    use super::*;

    async fn raw_item(
        c: &aws_sdk_dynamodb::Client,
        table: &str,
        pk: &str,
        sk: &str,
    ) -> HashMap<String, AttributeValue> {
        c.get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap_or_else(|| panic!("no item {pk} / {sk}"))
    }

    #[tokio::test]
    async fn table_has_the_fixed_keys_indexes_and_ttl_and_create_is_idempotent() {
        let Some(c) = dynamo_client().await else {
            return;
        };
        let table = mcpgw::testing::unique_name("mcpgw-layout");
        create_table(&c, &table).await.unwrap();
        // Local mode calls it on every start.
        create_table(&c, &table).await.unwrap();

        let desc = c
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| {
            schema
                .iter()
                .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(desc.key_schema()),
            [("pk".into(), KeyType::Hash), ("sk".into(), KeyType::Range)]
        );
        let mut gsis: Vec<_> = desc
            .global_secondary_indexes()
            .iter()
            .map(|g| {
                assert_eq!(
                    g.projection().and_then(|p| p.projection_type()),
                    Some(&ProjectionType::All),
                    "{:?}",
                    g.index_name()
                );
                (g.index_name().unwrap().to_owned(), keys(g.key_schema()))
            })
            .collect();
        gsis.sort();
        assert_eq!(
            gsis,
            // gsi_key_hash and gsi_member were dropped (issue 23): nothing queried them.
            [(
                "gsi_refresh".to_owned(),
                vec![
                    ("refresh_shard".to_owned(), KeyType::Hash),
                    ("refresh_at".to_owned(), KeyType::Range)
                ]
            ),]
        );
        let ttl = c
            .describe_time_to_live()
            .table_name(&table)
            .send()
            .await
            .unwrap();
        let ttl = ttl.time_to_live_description().unwrap();
        assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
        assert_eq!(ttl.attribute_name(), Some("ttl"));
    }

    /// The pointer by hash is owned by one key: a live key's hash cannot be reused (an error,
    /// but not `AlreadyExists`, which callers read as a lost create race on the id), while an
    /// expired key's pointer is taken over, and deleting the expired key leaves it alone.
    #[tokio::test]
    async fn key_hash_pointer_ownership() {
        let Some(c) = dynamo_client().await else {
            return;
        };
        let table = mcpgw::testing::unique_name("mcpgw-layout");
        create_table(&c, &table).await.unwrap();
        let store = DynamoStore::new(c.clone(), &table);

        store
            .create_api_key(&api_key("live", "h-1", None))
            .await
            .unwrap();
        let err = store
            .create_api_key(&api_key("other", "h-1", None))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        assert_eq!(store.get_api_key("other").await.unwrap(), None);

        let dead = api_key("dead", "h-2", Some(10));
        store.create_api_key(&dead).await.unwrap();
        let heir = api_key("heir", "h-2", None);
        store.create_api_key(&heir).await.unwrap();
        assert!(store.delete_api_key("dead").await.unwrap());
        assert_eq!(
            store.find_api_key_by_hash("h-2", 500).await.unwrap(),
            Some(heir)
        );
    }

    /// Listing one owner's keys reads only that owner's items: an unreadable item of
    /// someone else in the APIKEY partition does not matter to it (listing every key, which
    /// does read it, fails).
    #[tokio::test]
    async fn keys_by_owner_read_only_the_owners_items() {
        let Some(c) = dynamo_client().await else {
            return;
        };
        let table = mcpgw::testing::unique_name("mcpgw-layout");
        create_table(&c, &table).await.unwrap();
        let store = DynamoStore::new(c.clone(), &table).with_page_size(2);
        let mine = ApiKey {
            owner: "ann@example.com".into(),
            ..api_key("k-ann", "h-ann", None)
        };
        store.create_api_key(&mine).await.unwrap();
        c.put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("APIKEY".into()))
            .item("sk", AttributeValue::S("k-broken".into()))
            .item("key_hash", AttributeValue::S("h-broken".into()))
            .item("doc", AttributeValue::S("not json".into()))
            .send()
            .await
            .unwrap();
        assert!(matches!(
            store.list_api_keys().await,
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            store
                .list_api_keys_for_owner("ann@example.com")
                .await
                .unwrap(),
            vec![mine]
        );
    }

    #[tokio::test]
    async fn items_use_the_fixed_keys_and_attributes() {
        let Some(c) = dynamo_client().await else {
            return;
        };
        let table = mcpgw::testing::unique_name("mcpgw-layout");
        create_table(&c, &table).await.unwrap();
        let store = DynamoStore::new(c.clone(), &table);

        store
            .create_config(
                ConfigKind::VirtualServer,
                "vs",
                &serde_json::json!({"a": 1}),
            )
            .await
            .unwrap();
        let item = raw_item(&c, &table, "CONFIG#VSERVER", "vs").await;
        assert_eq!(item["doc"], AttributeValue::S(r#"{"a":1}"#.into()));

        store
            .create_api_key(&api_key("kid", "khash", Some(77)))
            .await
            .unwrap();
        let item = raw_item(&c, &table, "APIKEY", "kid").await;
        assert_eq!(item["key_hash"], AttributeValue::S("khash".into()));
        assert_eq!(item["expires_at"], AttributeValue::N("77".into()));
        assert!(
            !item.contains_key("ttl"),
            "expired keys stay listed, so no TTL"
        );
        // The pointer by hash (read by find_api_key_by_hash), without the key_hash attribute.
        let pointer = raw_item(&c, &table, "KEYHASH#khash", "APIKEY").await;
        assert_eq!(pointer["id"], AttributeValue::S("kid".into()));
        assert_eq!(pointer["doc"], item["doc"]);
        assert_eq!(pointer["expires_at"], AttributeValue::N("77".into()));
        assert!(!pointer.contains_key("key_hash"));
        assert!(!pointer.contains_key("ttl"));
        // A use is recorded on the item by id only; `doc` stays as created.
        store.touch_api_key("kid", 42).await.unwrap();
        let touched = raw_item(&c, &table, "APIKEY", "kid").await;
        assert_eq!(touched["last_used_at"], AttributeValue::N("42".into()));
        assert_eq!(touched["doc"], item["doc"]);
        let pointer = raw_item(&c, &table, "KEYHASH#khash", "APIKEY").await;
        assert!(!pointer.contains_key("last_used_at"));
        // The pointer by owner: the key only, outside every index.
        let by_owner = raw_item(&c, &table, "KEYOWNER#kid@example.com", "kid").await;
        assert_eq!(
            by_owner
                .keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["pk", "sk"].into()
        );
        // Deleting the key deletes both pointers.
        assert!(store.delete_api_key("kid").await.unwrap());
        for (pk, sk) in [
            ("KEYHASH#khash", "APIKEY"),
            ("KEYOWNER#kid@example.com", "kid"),
        ] {
            let left = c
                .get_item()
                .table_name(&table)
                .key("pk", AttributeValue::S(pk.into()))
                .key("sk", AttributeValue::S(sk.into()))
                .send()
                .await
                .unwrap()
                .item;
            assert!(left.is_none_or(|i| i.is_empty()), "{pk} / {sk} left behind");
        }

        store
            .save_grant_if_version(&grant("u@example.com", "srv", 1, Some(99)), None)
            .await
            .unwrap();
        store
            .save_grant_if_version(&grant("u@example.com", "srv", 2, Some(123)), Some(1))
            .await
            .unwrap();
        let item = raw_item(&c, &table, "GRANT#u@example.com", "srv").await;
        assert_eq!(item["version"], AttributeValue::N("2".into()));
        assert_eq!(item["refresh_at"], AttributeValue::N("123".into()));
        assert!(matches!(&item["sealed_tokens"], AttributeValue::B(_)));
        let AttributeValue::S(shard) = &item["refresh_shard"] else {
            panic!("{:?}", item["refresh_shard"])
        };
        let n: u32 = shard.strip_prefix("REFRESH#").unwrap().parse().unwrap();
        assert!(n < 8, "{shard}");

        store.put_state(&state("sid", 1_600)).await.unwrap();
        let item = raw_item(&c, &table, "STATE#sid", "STATE").await;
        assert_eq!(item["ttl"], AttributeValue::N("1600".into()));

        // An ended session: under the SESSION# prefix the template's IAM for mcp-proxy names,
        // removed by TTL at the session's expiry.
        let exp = SystemClock.now() + 600;
        store.end_session("0123abcd", exp).await.unwrap();
        let item = raw_item(&c, &table, "SESSION#0123abcd", "ENDED").await;
        assert_eq!(item["expires_at"], AttributeValue::N(exp.to_string()));
        assert_eq!(item["ttl"], AttributeValue::N(exp.to_string()));
        assert_eq!(
            item.keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["expires_at", "pk", "sk", "ttl"].into()
        );

        // A tool snapshot: under the TOOLS# prefix the template's IAM for mcp-proxy names,
        // its JSON text in `doc`, no TTL (it lasts until the list changes).
        use mcpgw::store::ToolSnapshotStore;
        use serde_json::json;
        let snapshot = mcpgw::store::ToolSnapshot {
            url: "http://up/mcp".into(),
            tools: vec![json!({"name": "read"})],
            taken_at: 5,
        };
        store.put_tool_snapshot("notes", &snapshot).await.unwrap();
        let item = raw_item(&c, &table, "TOOLS#notes", "TOOLS").await;
        let AttributeValue::S(doc) = &item["doc"] else {
            panic!("doc is text: {item:?}")
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(doc).unwrap(),
            json!({"url": "http://up/mcp", "tools": [{"name": "read"}], "taken_at": 5})
        );
        assert_eq!(
            item.keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["doc", "pk", "sk"].into()
        );
    }
}
