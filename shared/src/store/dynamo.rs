//! DynamoDB adapter of the store port: everything in one table (single-table design).
//!
//! The layout is fixed: the SAM template declares the same table, so names here must not
//! change without changing it too.
//!
//! | what          | `pk`                | `sk`     | other attributes                                    |
//! |---------------|---------------------|----------|-----------------------------------------------------|
//! | config doc    | `CONFIG#{tag}`      | name     | `doc` (S, JSON)                                     |
//! | API key       | `APIKEY`            | id       | `key_hash` (S), `doc` (S, JSON), `expires_at` (N)?, `last_used_at` (N)? |
//! | key by hash   | `KEYHASH#{key_hash}`| `APIKEY` | `id` (S), `doc` (S, JSON), `expires_at` (N)?        |
//! | key by owner  | `KEYOWNER#{owner}`  | id       | none                                                |
//! | grant         | `GRANT#{user}`      | server   | `user`, `server`, `version` (N), `sealed_tokens` (B), `status`, `scopes` (L of S), `access_expires_at`?, `updated_at`, `refresh_lease_until`?, and when due for refresh `refresh_at` (N) + `refresh_shard` |
//! | OAuth state   | `STATE#{id}`        | `STATE`  | `id`, `user`, `server`, `sealed_payload` (B), `created_at`, `expires_at`, `ttl` (N) |
//! | ended session | `SESSION#{fingerprint}` | `ENDED` | `expires_at` (N), `ttl` (N, the same)         |
//! | tool snapshot | `TOOLS#{server}`    | `TOOLS`  | `doc` (S, JSON: url, tools, taken_at)               |
//! | rate bucket   | `RATE#{key}`        | `RATE`   | `tat` (N, ms; a rate) or `n` (N; a quota window), `ttl` (N) |
//! | audit record, seal | `AUDIT#{day}`, `AUDITSEAL#{day}` | time, writer, seq | see [`audit`] |
//!
//! An API key is three items written and deleted together in one `TransactWriteItems`: the
//! item by id (listing, admin reads), a pointer by hash, which authentication reads with
//! a strongly consistent `GetItem`, so a key works the moment its create returns (a GSI
//! lookup would 401 for up to about a second), and a pointer by owner, so one owner's keys
//! (`GET /me/api-keys`, the per-owner cap on every issue) are a strongly consistent `Query`
//! of that owner's partition (ids only) and a `BatchGetItem` of their items by id, never a
//! read of every key. The items by id stay the one record of a key (`last_used_at` lives
//! there), so the owner pointers carry nothing but the id. Keys stored before the owner
//! pointers existed have none: they are listed by `list_api_keys` but not by owner.
//! A pointer by hash belongs to one key (`id`); a new key may take over the pointer of an
//! expired key with the same hash, and deleting a key deletes that pointer only while it
//! still names that key. A key's use is recorded on the item by id only (`last_used_at`, one
//! conditional `UpdateItem` that never moves it back and never recreates a deleted key);
//! `doc` keeps the key as created and reads merge the attribute in.
//!
//! One index: `gsi_refresh` (`refresh_shard`, `refresh_at`, projecting ALL) is sparse and
//! lists grants due for refresh. `refresh_shard` spreads due grants over [`REFRESH_SHARDS`]
//! partitions so no single index partition gets hot; the shard is FNV-1a of `user\0server`,
//! a hash that must never change (std's hasher is randomized per process). `gsi_key_hash`
//! and `gsi_member` were dropped (issue 23): nothing queried them (keys are found through
//! their pointer items; teams are config documents). A table that still has them works as
//! it is. TTL on `ttl` removes expired states and ended-session records eventually (days
//! late), so reads check expiry themselves.
//!
//! Items are encoded and decoded by `serde_dynamo` ([`items`]).
//!
//! Every contract write is one conditional request (for API keys, one transaction), so
//! DynamoDB itself enforces create-if-absent, replace-if-present, replace-if-unchanged (a
//! config `PutItem` conditional on the `doc` text just read), optimistic locking on `version` and consume-once
//! (`DeleteItem` + `ReturnValues=ALL_OLD`); ending a session is a `PutItem` that only
//! replaces a record with an earlier expiry. A grant write must carry the next version; that
//! is checked before any request is sent. Base-table reads (key lookup by hash included) are
//! strongly consistent; GSI reads (due grants) are eventually consistent by nature.
//!
//! A counted call is one conditional `UpdateItem` on its bucket in the common case, never a
//! read first: the write to try is guessed from the tat this process last saw, and a failed
//! condition returns the old item (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), which
//! either refuses the call with its wait or names the write that will succeed (see
//! [`DynamoStore::rate_limit_writes`]).
//!
//! Errors never carry item contents: service errors keep only their code, because service
//! messages can echo request values.
//!
//! Tested by the contract suite (`shared/tests/it/store_contract.rs`) against moto, with the
//! default page size and with a page size of 2 that forces every list through pagination.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex, IndexStatus,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValue,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem,
};

mod audit;
mod items;

use items::{
    ApiKeyItem, ConfigItem, EndedSession, EndedSessionItem, GrantItem, Item, JsonText, Key,
    KeyHash, OwnerPointer, SnapshotItem, StateItem, StoredApiKey, StoredDoc, StoredSnapshot,
    decode, encode,
};

use super::{
    ApiKeyStore, ConfigKind, ConfigStore, GrantStore, OAuthStateStore, SessionStore, StoreError,
    StoreResult, Take, ToolSnapshot, ToolSnapshotStore,
};
use crate::clock::{Clock, SystemClock, UnixTime};
use crate::domain::{ApiKey, Grant, OAuthState};

/// Number of `refresh_shard` partitions of `gsi_refresh`. Changing it orphans grants in the
/// dropped shards, so it is fixed.
pub const REFRESH_SHARDS: u64 = 8;

/// The one index's name (shared with the SAM template).
pub const GSI_REFRESH: &str = "gsi_refresh";

const PK: &str = "pk";
const SK: &str = "sk";
const TTL: &str = "ttl";
const APIKEY_PK: &str = "APIKEY";
/// `sk` of the pointer item `KEYHASH#{key_hash}`.
const KEYHASH_SK: &str = "APIKEY";
/// Most keys one `BatchGetItem` may ask for.
const BATCH_GET_MAX: usize = 100;
const STATE_SK: &str = "STATE";
/// `sk` of the ended-session record `SESSION#{fingerprint}`.
const SESSION_ENDED_SK: &str = "ENDED";
/// `sk` of a server's tool snapshot `TOOLS#{server}`.
const TOOLS_SK: &str = "TOOLS";
/// Attribute of the API key item by id that records its last use.
const LAST_USED: &str = "last_used_at";

/// The DynamoDB store. Cheap to clone (the SDK client is shared).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    page_size: Option<i32>,
    /// `UpdateItem`s sent for rate-limit buckets (the cost the README's table reports).
    rate_writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl DynamoStore {
    /// A store over `table`, which must already exist with the layout above (see
    /// [`create_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            page_size: None,
            rate_writes: Default::default(),
        }
    }

    /// How many bucket writes (`UpdateItem`s) this store has sent, retries included: divided
    /// by the counted calls, the DynamoDB writes per call.
    pub fn rate_limit_writes(&self) -> u64 {
        self.rate_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Caps every query page at `items` items (DynamoDB's `Limit`). Production leaves pages
    /// at DynamoDB's 1 MB; tests set a tiny size so the pagination paths actually run.
    pub fn with_page_size(mut self, items: i32) -> Self {
        self.page_size = Some(items.max(1));
        self
    }

    /// Runs `query` to the end (following `LastEvaluatedKey`), stopping early once `max`
    /// items are collected.
    async fn query_all(
        &self,
        query: QueryFluentBuilder,
        max: Option<usize>,
    ) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let remaining = max.map(|m| i32::try_from(m - items.len()).unwrap_or(i32::MAX));
            let limit = match (self.page_size, remaining) {
                (Some(p), Some(r)) => Some(p.min(r)),
                (p, r) => p.or(r),
            };
            let page = query
                .clone()
                .set_exclusive_start_key(start.take())
                .set_limit(limit)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            items.extend(page.items.unwrap_or_default());
            if max.is_some_and(|m| items.len() >= m) {
                break;
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        if let Some(m) = max {
            items.truncate(m);
        }
        Ok(items)
    }

    /// All items of one partition of the base table, in `sk` order.
    async fn partition(&self, pk: String) -> StoreResult<Vec<Item>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(pk));
        self.query_all(query, None).await
    }

    /// The API key items by id for `ids` (strongly consistent `BatchGetItem`s of at most 100
    /// keys, or the page size), in no particular order; ids without an item are left out.
    async fn api_key_items(&self, ids: &[String]) -> StoreResult<Vec<Item>> {
        let chunk = self
            .page_size
            .map_or(BATCH_GET_MAX, |p| (p as usize).clamp(1, BATCH_GET_MAX));
        let mut items = Vec::with_capacity(ids.len());
        for ids in ids.chunks(chunk) {
            let keys: Vec<Item> = ids
                .iter()
                .map(|id| Item::from([(PK.to_owned(), s(APIKEY_PK)), (SK.to_owned(), s(id))]))
                .collect();
            let got = until_processed("BatchGetItem", keys, |keys| async move {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(StoreError::backend)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem", e))?;
                let got = out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default();
                let left = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                Ok((got, left))
            })
            .await?;
            items.extend(got);
        }
        Ok(items)
    }

    async fn get_item(&self, pk: String, sk: String) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item.filter(|i| !i.is_empty()))
    }

    /// Deletes an item unconditionally; returns whether one was there.
    async fn delete_item(&self, pk: String, sk: String) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Puts `item` under `condition` (on `#pk`); `Ok(false)` when the condition failed.
    async fn put_if(&self, item: Item, condition: &str) -> StoreResult<bool> {
        send_put_if(
            self.put(item)
                .condition_expression(condition)
                .expression_attribute_names("#pk", PK),
        )
        .await
    }

    /// A put of `item` into the table, to send as it is or with a condition.
    fn put(&self, item: Item) -> PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
    }

    /// A create or replace of a config document: the put under `condition`, which fails when
    /// the name is taken (create) or absent (replace), a failure `refused` then names.
    async fn put_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
        condition: &str,
        refused: fn(&'static str, String) -> StoreError,
    ) -> StoreResult<()> {
        let item = config_item(kind, name, doc)?;
        if !self.put_if(item, condition).await? {
            return Err(refused(kind.label(), name.to_owned()));
        }
        Ok(())
    }
}

/// Creates `table` with the layout this adapter expects (on-demand billing, `gsi_refresh`,
/// TTL on `ttl`) and waits until it and its index are ACTIVE. If the table already exists
/// it is checked for the index (others it may still have are left alone) and TTL is enabled
/// if needed, so local mode can call this on every start.
pub async fn create_table(client: &Client, table: &str) -> StoreResult<()> {
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(vec![
            attr_def(PK, ScalarAttributeType::S)?,
            attr_def(SK, ScalarAttributeType::S)?,
            attr_def("refresh_shard", ScalarAttributeType::S)?,
            attr_def("refresh_at", ScalarAttributeType::N)?,
        ]))
        .set_key_schema(Some(vec![
            key_elem(PK, KeyType::Hash)?,
            key_elem(SK, KeyType::Range)?,
        ]))
        .set_global_secondary_indexes(Some(vec![gsi(
            GSI_REFRESH,
            vec![
                key_elem("refresh_shard", KeyType::Hash)?,
                key_elem("refresh_at", KeyType::Range)?,
            ],
        )?]))
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(table, "created DynamoDB table"),
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) =>
        {
            tracing::debug!(table, "DynamoDB table already exists");
        }
        Err(e) => return Err(sdk_error("CreateTable", e)),
    }
    wait_until_active(client, table).await?;
    ensure_ttl(client, table).await
}

/// Polls DescribeTable until the table and every GSI are ACTIVE (a fresh table with GSIs
/// takes tens of seconds on AWS), and checks that the GSIs this adapter queries exist.
async fn wait_until_active(client: &Client, table: &str) -> StoreResult<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pause = Duration::from_millis(50);
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTable", e))?;
        if let Some(desc) = out.table {
            let gsis = desc.global_secondary_indexes();
            let missing: Vec<&str> = [GSI_REFRESH]
                .into_iter()
                .filter(|name| !gsis.iter().any(|g| g.index_name() == Some(*name)))
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::backend(DynamoError {
                    op: "CreateTable",
                    detail: format!("table exists without the indexes {missing:?}"),
                    source: None,
                }));
            }
            let active = desc.table_status() == Some(&TableStatus::Active)
                && gsis
                    .iter()
                    .all(|g| g.index_status() == Some(&IndexStatus::Active));
            if active {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(StoreError::backend(DynamoError {
                op: "DescribeTable",
                detail: "table did not become ACTIVE within 300 s".into(),
                source: None,
            }));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Enables TTL on `ttl` unless it already is (UpdateTimeToLive fails when nothing changes).
async fn ensure_ttl(client: &Client, table: &str) -> StoreResult<()> {
    let out = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_error("DescribeTimeToLive", e))?;
    let status = out
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder()
        .attribute_name(TTL)
        .enabled(true)
        .build()
        .map_err(StoreError::backend)?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| sdk_error("UpdateTimeToLive", e))?;
    Ok(())
}

fn attr_def(name: &str, ty: ScalarAttributeType) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ty)
        .build()
        .map_err(StoreError::backend)
}

fn key_elem(name: &str, ty: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(ty)
        .build()
        .map_err(StoreError::backend)
}

fn gsi(name: &str, keys: Vec<KeySchemaElement>) -> StoreResult<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .set_key_schema(Some(keys))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(StoreError::backend)
}

/// A DynamoDB failure described by operation and error code only.
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {op} failed: {detail}")]
struct DynamoError {
    op: &'static str,
    detail: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Sends `pending` with `send` (a batch request answering what it got and what DynamoDB
/// left unprocessed: throttling, 16 MB per answer) and asks again for what is left, backing
/// off, a bounded number of times; everything got, in no particular order.
async fn until_processed<K, R, F, Fut>(
    op: &'static str,
    mut pending: Vec<K>,
    mut send: F,
) -> StoreResult<Vec<R>>
where
    F: FnMut(Vec<K>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<(Vec<R>, Vec<K>)>>,
{
    const TRIES: u32 = 8;
    let mut out = Vec::new();
    let mut pause = Duration::from_millis(25);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (got, left) = send(pending).await?;
        out.extend(got);
        pending = left;
        if pending.is_empty() {
            return Ok(out);
        }
        if attempt == TRIES {
            return Err(StoreError::backend(DynamoError {
                op,
                detail: format!("{} still unprocessed after {attempt} tries", pending.len()),
                source: None,
            }));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

fn sdk_error<E, R>(op: &'static str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (detail, keep_source) = match &e {
        // The service message can quote request values (keys, condition operands), and the
        // raw response of an unparseable reply could hold an item: keep neither.
        SdkError::ServiceError(ctx) => (
            format!("service error {}", ctx.err().code().unwrap_or("(no code)")),
            false,
        ),
        SdkError::ResponseError(_) => ("unreadable response".to_owned(), false),
        // Transport and request-building failures carry no item data and say what went wrong.
        SdkError::TimeoutError(_) => ("timeout".to_owned(), true),
        SdkError::DispatchFailure(_) => ("could not send the request".to_owned(), true),
        SdkError::ConstructionFailure(_) => ("could not build the request".to_owned(), true),
        _ => ("unknown SDK error".to_owned(), false),
    };
    let source = if keep_source {
        e.into_source().ok()
    } else {
        None
    };
    StoreError::backend(DynamoError { op, detail, source })
}

/// Sends a conditional put: `Ok(false)` when its condition failed and nothing was written.
async fn send_put_if(put: PutItemFluentBuilder) -> StoreResult<bool> {
    match put.send().await {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => Ok(false),
        Err(e) => Err(sdk_error("PutItem", e)),
    }
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .is_some_and(|se| se.code() == Some("ConditionalCheckFailedException"))
}

/// The per-item cancellation reason codes of a cancelled transaction (`"None"` for items
/// that were fine); `None` for any other error.
fn cancellation_codes<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(c) => Some(
            c.cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_owned())
                .collect(),
        ),
        _ => None,
    }
}

/// A cancelled transaction whose cancellation is not part of the contract: keeps only the
/// reason codes (their messages can echo request values).
fn cancelled(codes: &[String]) -> StoreError {
    StoreError::backend(DynamoError {
        op: "TransactWriteItems",
        detail: format!("transaction cancelled: [{}]", codes.join(", ")),
        source: None,
    })
}

const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// `gsi_refresh` partition of a grant: FNV-1a (64-bit) of `user\0server`, mod
/// [`REFRESH_SHARDS`]. Stable across processes, platforms and releases.
fn refresh_shard(user: &str, server: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = user
        .bytes()
        .chain(std::iter::once(0))
        .chain(server.bytes())
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("REFRESH#{}", hash % REFRESH_SHARDS)
}

fn config_pk(kind: ConfigKind) -> String {
    format!("CONFIG#{}", kind.tag())
}

fn grant_pk(user: &str) -> String {
    format!("GRANT#{user}")
}

fn state_pk(id: &str) -> String {
    format!("STATE#{id}")
}

/// Partition of an ended-session record; the template's IAM for mcp-proxy names this prefix.
fn session_pk(fingerprint: &str) -> String {
    format!("SESSION#{fingerprint}")
}

/// Partition of a server's tool snapshot; the template's IAM for mcp-proxy names this prefix.
fn tools_pk(server: &str) -> String {
    format!("TOOLS#{server}")
}

/// Partition of a rate-limit bucket; the template's IAM for mcp-proxy names this prefix.
fn rate_pk(key: &str) -> String {
    format!("RATE#{key}")
}
const RATE_SK: &str = "RATE";
const TAT: &str = "tat";
const COUNT: &str = "n";
/// Conditional writes one GCRA call may take when other processes move the bucket between
/// them; each failure names the next write, so more than two means heavy contention.
const RATE_ATTEMPTS: usize = 4;

fn number_attr(item: Option<&Item>, name: &str) -> StoreResult<Option<i64>> {
    match item.and_then(|i| i.get(name)) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("rate bucket: attribute '{name}'"))),
        Some(_) => Err(StoreError::Corrupt(format!(
            "rate bucket: attribute '{name}' is not a number"
        ))),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn config_item(kind: ConfigKind, name: &str, doc: &serde_json::Value) -> StoreResult<Item> {
    let key = Key::new(config_pk(kind), name);
    encode(
        kind.label(),
        &ConfigItem {
            key,
            doc: JsonText(doc),
        },
    )
}

/// A config item's `doc` text, and the document it holds.
fn config_doc(kind: ConfigKind, item: Item) -> StoreResult<(String, serde_json::Value)> {
    let text = decode::<StoredDoc>(kind.label(), item)?.doc;
    let doc = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("{} item: attribute 'doc': {e}", kind.label())))?;
    Ok((text, doc))
}

fn key_hash_pk(key_hash: &str) -> String {
    format!("KEYHASH#{key_hash}")
}

fn key_owner_pk(owner: &str) -> String {
    format!("KEYOWNER#{owner}")
}

/// The item by id: the record of a key.
fn api_key_item(key: &ApiKey) -> StoreResult<Item> {
    let item = ApiKeyItem {
        key: Key::new(APIKEY_PK, &key.id),
        key_hash: Some(&key.key_hash),
        id: None,
        doc: JsonText(key),
        expires_at: key.expires_at,
        last_used_at: key.last_used_at,
    };
    encode("API key", &item)
}

/// The pointer item by hash: the key's `doc` and `expires_at`, and the `id` that owns it.
fn api_key_pointer_item(key: &ApiKey) -> StoreResult<Item> {
    let item = ApiKeyItem {
        key: Key::new(key_hash_pk(&key.key_hash), KEYHASH_SK),
        key_hash: None,
        id: Some(&key.id),
        doc: JsonText(key),
        expires_at: key.expires_at,
        last_used_at: None,
    };
    encode("API key", &item)
}

/// The pointer item by owner: its key is all it holds.
fn api_key_owner_item(key: &ApiKey) -> StoreResult<Item> {
    encode(
        "API key owner pointer",
        &Key::new(key_owner_pk(&key.owner), &key.id),
    )
}

/// A key from its item by id (or pointer): `doc`, with `last_used_at` merged in (the later).
fn api_key_from(item: Item) -> StoreResult<ApiKey> {
    decode::<StoredApiKey>("API key", item).map(StoredApiKey::into_key)
}

fn grant_item(g: &Grant) -> StoreResult<Item> {
    let item = GrantItem {
        key: Key::new(grant_pk(&g.user), &g.server),
        grant: g,
        refresh_shard: g.refresh_at.map(|_| refresh_shard(&g.user, &g.server)),
    };
    encode("grant", &item)
}

fn grant_from(item: Item) -> StoreResult<Grant> {
    decode("grant", item)
}

fn state_item(st: &OAuthState) -> StoreResult<Item> {
    let item = StateItem {
        key: Key::new(state_pk(&st.id), STATE_SK),
        state: st,
        ttl: st.expires_at,
    };
    encode("OAuth state", &item)
}

#[async_trait]
impl ConfigStore for DynamoStore {
    async fn create_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
    ) -> StoreResult<()> {
        self.put_config(
            kind,
            name,
            doc,
            "attribute_not_exists(#pk)",
            |kind, name| StoreError::AlreadyExists { kind, name },
        )
        .await
    }

    async fn replace_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
    ) -> StoreResult<()> {
        self.put_config(kind, name, doc, "attribute_exists(#pk)", |kind, name| {
            StoreError::NotFound { kind, name }
        })
        .await
    }

    async fn replace_config_if_unchanged(
        &self,
        kind: ConfigKind,
        name: &str,
        expected: &serde_json::Value,
        doc: &serde_json::Value,
    ) -> StoreResult<bool> {
        let Some(item) = self.get_item(config_pk(kind), name.to_owned()).await? else {
            return Ok(false);
        };
        let (stored, current) = config_doc(kind, item)?;
        if current != *expected {
            return Ok(false);
        }
        // The put is conditional on the exact stored text just read, so a write in between
        // (another process, an admin) makes it fail instead of being overwritten.
        let new = config_item(kind, name, doc)?;
        send_put_if(
            self.put(new)
                .condition_expression("#doc = :stored")
                .expression_attribute_names("#doc", "doc")
                .expression_attribute_values(":stored", s(stored)),
        )
        .await
    }

    async fn get_config(
        &self,
        kind: ConfigKind,
        name: &str,
    ) -> StoreResult<Option<serde_json::Value>> {
        let item = self.get_item(config_pk(kind), name.to_owned()).await?;
        item.map(|i| config_doc(kind, i).map(|(_, doc)| doc))
            .transpose()
    }

    async fn list_configs(&self, kind: ConfigKind) -> StoreResult<Vec<serde_json::Value>> {
        // The partition is sorted by sk (the name) in byte order, the order SQLite uses too.
        let items = self.partition(config_pk(kind)).await?;
        items
            .into_iter()
            .map(|i| config_doc(kind, i).map(|(_, doc)| doc))
            .collect()
    }

    async fn delete_config(&self, kind: ConfigKind, name: &str) -> StoreResult<bool> {
        self.delete_item(config_pk(kind), name.to_owned()).await
    }
}

#[async_trait]
impl ApiKeyStore for DynamoStore {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let by_id = Put::builder()
            .table_name(&self.table)
            .set_item(Some(api_key_item(key)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(StoreError::backend)?;
        // The pointer of an expired key with the same hash may be taken over (the SQLite
        // adapter allows such duplicates too); a live one may not.
        let by_hash = Put::builder()
            .table_name(&self.table)
            .set_item(Some(api_key_pointer_item(key)?))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_values(":now", n(SystemClock.now()))
            .build()
            .map_err(StoreError::backend)?;
        // Unconditional: the id is new (the first put checks that), so is this item.
        let by_owner = Put::builder()
            .table_name(&self.table)
            .set_item(Some(api_key_owner_item(key)?))
            .build()
            .map_err(StoreError::backend)?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(by_id).build())
            .transact_items(TransactWriteItem::builder().put(by_hash).build())
            .transact_items(TransactWriteItem::builder().put(by_owner).build())
            .send()
            .await;
        let Err(e) = res else { return Ok(()) };
        match cancellation_codes(&e) {
            Some(codes) if codes.first().map(String::as_str) == Some(CONDITION_FAILED) => {
                Err(StoreError::AlreadyExists {
                    kind: "API key",
                    name: key.id.clone(),
                })
            }
            // A live key with the same hash: cannot happen with random keys, and must not
            // read as "this id exists" (callers treat that as a lost create race).
            Some(codes) if codes.get(1).map(String::as_str) == Some(CONDITION_FAILED) => {
                Err(StoreError::backend(DynamoError {
                    op: "TransactWriteItems",
                    detail: "another unexpired API key has the same hash".to_owned(),
                    source: None,
                }))
            }
            Some(codes) => Err(cancelled(&codes)),
            None => Err(sdk_error("TransactWriteItems", e)),
        }
    }

    async fn find_api_key_by_hash(
        &self,
        key_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<ApiKey>> {
        // Strongly consistent GetItem on the pointer: a key finds itself right after create.
        let Some(item) = self
            .get_item(key_hash_pk(key_hash), KEYHASH_SK.to_owned())
            .await?
        else {
            return Ok(None);
        };
        let key = api_key_from(item)?;
        // TTL is not used for keys, and even if it were, deletion lags: check expiry here.
        Ok(Some(key).filter(|k| !k.is_expired(now)))
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let item = self.get_item(APIKEY_PK.to_owned(), id.to_owned()).await?;
        item.map(api_key_from).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.partition(APIKEY_PK.to_owned())
            .await?
            .into_iter()
            .map(api_key_from)
            .collect()
    }

    async fn list_api_keys_for_owner(&self, owner: &str) -> StoreResult<Vec<ApiKey>> {
        // The owner's pointers (ids only), then their items by id: only this owner's items
        // are read, however many keys others hold.
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk")
            .projection_expression("#sk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(key_owner_pk(owner)));
        let ids = self
            .query_all(query, None)
            .await?
            .into_iter()
            .map(|i| decode::<OwnerPointer>("API key owner pointer", i).map(|p| p.sk))
            .collect::<StoreResult<Vec<String>>>()?;
        let mut keys = self
            .api_key_items(&ids)
            .await?
            .into_iter()
            .map(api_key_from)
            .collect::<StoreResult<Vec<ApiKey>>>()?;
        keys.retain(|k| k.owner == owner);
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
        // A concurrent change between the reads and the transaction cancels it; re-read and
        // try again a few times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(item) = self.get_item(APIKEY_PK.to_owned(), id.to_owned()).await? else {
                return Ok(false);
            };
            let key_hash = decode::<KeyHash>("API key", item.clone())?.key_hash;
            let pointer = self
                .get_item(key_hash_pk(&key_hash), KEYHASH_SK.to_owned())
                .await?;
            // The pointer may have been taken over by a newer key with the same hash.
            let owns_pointer = pointer
                .as_ref()
                .is_some_and(|p| p.get("id") == Some(&s(id)));

            // The owner pointer goes with the key (a key too corrupt to name its owner has
            // none to find; one missing, from before owner pointers, deletes as a no-op).
            let owner = api_key_from(item).ok().map(|k| k.owner);

            let by_id = Delete::builder()
                .table_name(&self.table)
                .key(PK, s(APIKEY_PK))
                .key(SK, s(id))
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .build()
                .map_err(StoreError::backend)?;
            let mut tx = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().delete(by_id).build());
            if let Some(owner) = owner {
                let by_owner = Delete::builder()
                    .table_name(&self.table)
                    .key(PK, s(key_owner_pk(&owner)))
                    .key(SK, s(id))
                    .build()
                    .map_err(StoreError::backend)?;
                tx = tx.transact_items(TransactWriteItem::builder().delete(by_owner).build());
            }
            if owns_pointer {
                let by_hash = Delete::builder()
                    .table_name(&self.table)
                    .key(PK, s(key_hash_pk(&key_hash)))
                    .key(SK, s(KEYHASH_SK))
                    .condition_expression("#id = :id")
                    .expression_attribute_names("#id", "id")
                    .expression_attribute_values(":id", s(id))
                    .build()
                    .map_err(StoreError::backend)?;
                tx = tx.transact_items(TransactWriteItem::builder().delete(by_hash).build());
            }
            let Err(e) = tx.send().await else {
                return Ok(true);
            };
            match cancellation_codes(&e) {
                // Deleted concurrently.
                Some(codes) if codes.first().map(String::as_str) == Some(CONDITION_FAILED) => {
                    return Ok(false);
                }
                Some(codes)
                    if attempts < 3
                        && codes
                            .iter()
                            .any(|c| c == CONDITION_FAILED || c == "TransactionConflict") =>
                {
                    continue;
                }
                Some(codes) => return Err(cancelled(&codes)),
                None => return Err(sdk_error("TransactWriteItems", e)),
            }
        }
    }

    async fn touch_api_key(&self, id: &str, at: UnixTime) -> StoreResult<()> {
        // Only the item by id: the pointer by hash serves authentication, which does not
        // need the time. `attribute_exists` keeps an update from recreating a deleted key
        // as a bare item; the comparison keeps the time from moving back.
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(APIKEY_PK))
            .key(SK, s(id))
            .update_expression("SET #used = :at")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#used) OR #used < :at)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#used", LAST_USED)
            .expression_attribute_values(":at", n(at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // Deleted, or a later use is already recorded.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}

impl DynamoStore {
    /// One conditional bucket update: `Ok(Ok(new item))` when written, `Ok(Err(old item))`
    /// when the condition failed.
    async fn update_bucket(
        &self,
        key: &str,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<Result<Option<Item>, Option<Item>>> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
        self.rate_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(rate_pk(key)))
            .key(SK, s(RATE_SK))
            .update_expression(update)
            .condition_expression(condition)
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(out) => Ok(Ok(out.attributes)),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Err(c.item().cloned()))
                }
                _ => Err(sdk_error("UpdateItem", e)),
            },
        }
    }
}

#[async_trait]
impl super::RateLimitStore for DynamoStore {
    async fn take_rate(
        &self,
        key: &str,
        now_us: i64,
        t_us: i64,
        tau_us: i64,
        last_tat: Option<i64>,
    ) -> StoreResult<Take> {
        let ttl = n(super::rate_bucket_expiry(now_us, t_us, tau_us));
        let names = [("#tat", TAT), ("#ttl", TTL)];
        // An idle bucket (absent, or its tat passed) restarts at now + T; a busy one moves
        // by T if it has room. Which one applies is guessed from this process's last view.
        let mut idle = last_tat.is_none_or(|t| t <= now_us);
        for _ in 0..RATE_ATTEMPTS {
            let res = if idle {
                self.update_bucket(
                    key,
                    "SET #tat = :next, #ttl = :ttl",
                    "attribute_not_exists(#tat) OR #tat <= :now",
                    &names,
                    vec![
                        (":next", n(now_us + t_us)),
                        (":now", n(now_us)),
                        (":ttl", ttl.clone()),
                    ],
                )
                .await?
            } else {
                self.update_bucket(
                    key,
                    "SET #tat = #tat + :t, #ttl = :ttl",
                    "#tat > :now AND #tat <= :lim",
                    &names,
                    vec![
                        (":t", n(t_us)),
                        (":now", n(now_us)),
                        (":lim", n(now_us + tau_us)),
                        (":ttl", ttl.clone()),
                    ],
                )
                .await?
            };
            match res {
                Ok(new) => {
                    let tat = number_attr(new.as_ref(), TAT)?
                        .ok_or_else(|| StoreError::Corrupt("rate bucket: no tat".into()))?;
                    return Ok(Take::Taken(tat));
                }
                Err(old) => match number_attr(old.as_ref(), TAT)? {
                    Some(tat) if tat > now_us + tau_us => return Ok(Take::Refused(tat)),
                    Some(tat) => idle = tat <= now_us,
                    None => idle = true,
                },
            }
        }
        Err(StoreError::backend(DynamoError {
            op: "UpdateItem",
            detail: format!("rate bucket still contended after {RATE_ATTEMPTS} writes"),
            source: None,
        }))
    }

    async fn take_quota(
        &self,
        key: &str,
        _now_ms: i64,
        count: u64,
        window_end_ms: i64,
    ) -> StoreResult<Take> {
        let res = self
            .update_bucket(
                key,
                "SET #n = if_not_exists(#n, :zero) + :one, #ttl = :ttl",
                "attribute_not_exists(#n) OR #n < :count",
                &[("#n", COUNT), ("#ttl", TTL)],
                vec![
                    (":zero", n(0)),
                    (":one", n(1)),
                    (":count", n(count)),
                    (":ttl", n(window_end_ms.div_euclid(1000) + 1)),
                ],
            )
            .await?;
        match res {
            Ok(new) => Ok(Take::Taken(number_attr(new.as_ref(), COUNT)?.unwrap_or(1))),
            Err(old) => Ok(Take::Refused(
                number_attr(old.as_ref(), COUNT)?.unwrap_or(count as i64),
            )),
        }
    }

    async fn peek_bucket(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>> {
        let item = self.get_item(rate_pk(key), RATE_SK.to_owned()).await?;
        // TTL deletes lazily: an item past its `ttl` reads as absent, as on SQLite.
        if number_attr(item.as_ref(), TTL)?.is_some_and(|t| t <= now_ms.div_euclid(1000)) {
            return Ok(None);
        }
        match number_attr(item.as_ref(), TAT)? {
            Some(v) => Ok(Some(v)),
            None => number_attr(item.as_ref(), COUNT),
        }
    }
}

#[async_trait]
impl GrantStore for DynamoStore {
    async fn get_grant(&self, user: &str, server: &str) -> StoreResult<Option<Grant>> {
        let item = self.get_item(grant_pk(user), server.to_owned()).await?;
        item.map(grant_from).transpose()
    }

    async fn save_grant_if_version(&self, grant: &Grant, expected: Option<u64>) -> StoreResult<()> {
        super::check_next_version(grant, expected)?;
        let put = self.put(grant_item(grant)?);
        // Each branch names only what its expression uses: DynamoDB rejects unused names.
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            // A missing item has no `version`, so this also fails when the grant is gone.
            Some(v) => put
                .condition_expression("#v = :expected")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":expected", n(v)),
        };
        if !send_put_if(put).await? {
            return Err(StoreError::VersionConflict {
                user: grant.user.clone(),
                server: grant.server.clone(),
            });
        }
        Ok(())
    }

    async fn delete_grant(&self, user: &str, server: &str) -> StoreResult<bool> {
        self.delete_item(grant_pk(user), server.to_owned()).await
    }

    async fn list_grants_for_user(&self, user: &str) -> StoreResult<Vec<Grant>> {
        self.partition(grant_pk(user))
            .await?
            .into_iter()
            .map(grant_from)
            .collect()
    }

    async fn list_grants(&self, limit: usize) -> StoreResult<Vec<Grant>> {
        // Grants are partitioned by user, so "everyone's" is a filtered scan: paged, and
        // stopped once every grant is read (the order is the scan's, so all are read before
        // sorting and truncating to `limit`).
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("begins_with(#pk, :prefix)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":prefix", s("GRANT#"))
                .set_exclusive_start_key(start.take())
                .set_limit(self.page_size)
                .send()
                .await
                .map_err(|e| sdk_error("Scan", e))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let mut grants = items
            .into_iter()
            .map(grant_from)
            .collect::<StoreResult<Vec<_>>>()?;
        grants.sort_by(|a, b| (&a.user, &a.server).cmp(&(&b.user, &b.server)));
        grants.truncate(limit);
        Ok(grants)
    }

    async fn grants_due(&self, before: UnixTime, limit: usize) -> StoreResult<Vec<Grant>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Each shard is sorted by refresh_at, so the soonest `limit` overall are among the
        // soonest `limit` of each shard.
        let shards = (0..REFRESH_SHARDS).map(|shard| {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI_REFRESH)
                .key_condition_expression("#shard = :shard AND #at <= :before")
                .expression_attribute_names("#shard", "refresh_shard")
                .expression_attribute_names("#at", "refresh_at")
                .expression_attribute_values(":shard", s(format!("REFRESH#{shard}")))
                .expression_attribute_values(":before", n(before))
                .scan_index_forward(true);
            self.query_all(query, Some(limit))
        });
        let mut grants = futures_util::future::try_join_all(shards)
            .await?
            .into_iter()
            .flatten()
            .map(grant_from)
            .collect::<StoreResult<Vec<_>>>()?;
        // Ties broken by key so both adapters return the same order.
        grants.sort_by(|a, b| {
            (a.refresh_at, &a.user, &a.server).cmp(&(b.refresh_at, &b.user, &b.server))
        });
        grants.truncate(limit);
        Ok(grants)
    }
}

#[async_trait]
impl OAuthStateStore for DynamoStore {
    /// Stores the state, replacing any state with the same id (ids are random, so a clash
    /// is a retry of the same flow).
    async fn put_state(&self, state: &OAuthState) -> StoreResult<()> {
        self.put(state_item(state)?)
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    async fn consume_state(&self, id: &str, now: UnixTime) -> StoreResult<Option<OAuthState>> {
        // DynamoDB serializes writes to one item: exactly one conditional delete finds it.
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(state_pk(id)))
            .key(SK, s(STATE_SK))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let old = match res {
            Ok(out) => out.attributes,
            Err(e) if is_condition_failed(&e) => return Ok(None),
            Err(e) => return Err(sdk_error("DeleteItem", e)),
        };
        // TTL deletes days late, so an expired state can still be here; it is gone now.
        match old.filter(|i| !i.is_empty()) {
            Some(item) => {
                let st: OAuthState = decode("OAuth state", item)?;
                Ok(Some(st).filter(|st| !st.is_expired(now)))
            }
            None => Ok(None),
        }
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn end_session(&self, fingerprint: &str, expires_at: UnixTime) -> StoreResult<()> {
        let item = encode(
            "ended session",
            &EndedSessionItem {
                key: Key::new(session_pk(fingerprint), SESSION_ENDED_SK),
                expires_at,
                ttl: expires_at,
            },
        )?;
        // One conditional put: a record with a later expiry stays as it is.
        // Not written (`false`): already ended, until at least as late.
        send_put_if(
            self.put(item)
                .condition_expression("attribute_not_exists(#pk) OR #exp < :exp")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#exp", "expires_at")
                .expression_attribute_values(":exp", n(expires_at)),
        )
        .await?;
        Ok(())
    }

    async fn session_ended(&self, fingerprint: &str, now: UnixTime) -> StoreResult<bool> {
        let Some(item) = self
            .get_item(session_pk(fingerprint), SESSION_ENDED_SK.to_owned())
            .await?
        else {
            return Ok(false);
        };
        // TTL deletes days late: an expired record can still be here.
        let ended: EndedSession = decode("ended session", item)?;
        Ok(now < ended.expires_at)
    }
}

#[async_trait]
impl ToolSnapshotStore for DynamoStore {
    async fn put_tool_snapshot(&self, server: &str, snapshot: &ToolSnapshot) -> StoreResult<()> {
        let item = encode(
            "tool snapshot",
            &SnapshotItem {
                key: Key::new(tools_pk(server), TOOLS_SK),
                doc: JsonText(snapshot),
            },
        )?;
        self.put(item)
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    async fn get_tool_snapshot(&self, server: &str) -> StoreResult<Option<ToolSnapshot>> {
        let Some(item) = self.get_item(tools_pk(server), TOOLS_SK.to_owned()).await? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode("tool snapshot", item)?;
        Ok(Some(stored.doc.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_shard_is_fnv1a_and_stable() {
        // Expected values computed outside Rust (FNV-1a 64: "a" -> 0xaf63dc4c8601ec8c,
        // "a\0b" -> 0xe5d29919042666b2): pins the function so a refactor cannot silently
        // move every grant to another shard.
        assert_eq!(
            refresh_shard("a", "b"),
            format!("REFRESH#{}", 0xe5d2_9919_0426_66b2_u64 % 8)
        );
        assert_eq!(refresh_shard("a", "b"), "REFRESH#2");
        assert_eq!(refresh_shard("alice@example.com", "github"), "REFRESH#1");
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_eq!(refresh_shard("ab", "c"), "REFRESH#7");
        assert_eq!(refresh_shard("a", "bc"), "REFRESH#3");
        let spread: std::collections::HashSet<String> = (0..64)
            .map(|i| refresh_shard(&format!("user{i}@example.com"), "server"))
            .collect();
        assert_eq!(
            spread.len(),
            REFRESH_SHARDS as usize,
            "64 users should cover all shards"
        );
    }

    #[test]
    fn grant_item_round_trips_and_is_sparse() {
        let mut g = items::tests::grant();
        let item = grant_item(&g).unwrap();
        assert!(item.contains_key("refresh_shard"));
        assert_eq!(grant_from(item.clone()).unwrap(), g);
        g.refresh_at = None;
        g.last_refresh_at = None;
        g.last_error = None;
        g.refresh_lease_until = None;
        let item = grant_item(&g).unwrap();
        assert!(!item.contains_key("refresh_shard") && !item.contains_key("refresh_at"));
        assert!(!item.contains_key("last_error") && !item.contains_key("last_refresh_at"));
        assert_eq!(grant_from(item).unwrap(), g);
    }
}
