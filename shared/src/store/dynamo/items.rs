//! The table's items as typed records, encoded and decoded by `serde_dynamo` (issue 23,
//! item 4: in place of hand-written attribute mapping). Field names are attribute names and
//! field types their DynamoDB types (`String` S, integers N, `serde_bytes` B, `Vec<String>`
//! L of S); the layout table in [`super`] is the contract, pinned by the tests below and by
//! the contract suite's layout test against moto.
//!
//! Grants and OAuth states are stored as their domain types serialize (flattened beside the
//! key), so a field added to those types is stored without a line here; optional fields are
//! left out when `None` (`skip_serializing_if`), which is what keeps `gsi_refresh` sparse.
//! API keys and config documents keep their JSON text in `doc`, as they always have.
//!
//! Reads decode the domain type straight from the item (the key and the index attributes
//! are ignored). A malformed item is [`StoreError::Corrupt`] naming the attribute, never its
//! value (serde's messages quote values).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::UnixTime;
use crate::domain::{ApiKey, Grant, OAuthState};
use crate::store::{StoreError, StoreResult};

pub(super) type Item = HashMap<String, AttributeValue>;

/// Every item's primary key.
#[derive(Serialize)]
pub(super) struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
}

/// A value stored as its JSON text in a string attribute (`doc`).
pub(super) struct JsonText<T>(pub T);

impl<T: Serialize> Serialize for JsonText<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for JsonText<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text)
            .map(JsonText)
            .map_err(D::Error::custom)
    }
}

/// A config document: its JSON text as written.
#[derive(Serialize)]
pub(super) struct ConfigItem<'a> {
    #[serde(flatten)]
    pub key: Key,
    pub doc: JsonText<&'a serde_json::Value>,
}

/// A config document as read: the text itself (a conditional replace compares it).
#[derive(Deserialize)]
pub(super) struct StoredDoc {
    pub doc: String,
}

/// An API key's item by id (`APIKEY`) or its pointer by hash (`KEYHASH#...`): the key's JSON
/// in `doc`, with what conditions and reads need beside it. Only the item by id has
/// `key_hash` (so no pointer enters an index on it) and `last_used_at` (a use is recorded on
/// the item by id only); only the pointer has `id` (the key that owns it).
#[derive(Serialize)]
pub(super) struct ApiKeyItem<'a> {
    #[serde(flatten)]
    pub key: Key,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub doc: JsonText<&'a ApiKey>,
    /// Not `ttl`: expired keys stay listed until an admin deletes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<UnixTime>,
}

/// What a read of either API key item needs.
#[derive(Deserialize)]
pub(super) struct StoredApiKey {
    doc: JsonText<ApiKey>,
    last_used_at: Option<UnixTime>,
}

impl StoredApiKey {
    /// The key as created, with the use recorded beside it merged in (the later).
    pub fn into_key(self) -> ApiKey {
        let mut key = self.doc.0;
        key.last_used_at = key.last_used_at.max(self.last_used_at);
        key
    }
}

/// An API key's pointer by owner as listed (only `sk`, the key's id, is projected).
#[derive(Deserialize)]
pub(super) struct OwnerPointer {
    pub sk: String,
}

/// What deleting an API key reads of its item by id.
#[derive(Deserialize)]
pub(super) struct KeyHash {
    pub key_hash: String,
}

/// A grant, under its domain fields' names.
#[derive(Serialize)]
pub(super) struct GrantItem<'a> {
    #[serde(flatten)]
    pub key: Key,
    #[serde(flatten)]
    pub grant: &'a Grant,
    /// `gsi_refresh`'s partition: set with `refresh_at` only, so a grant with nothing to
    /// refresh stays out of the index (a whole-item put without them takes it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_shard: Option<String>,
}

/// An OAuth state, under its domain fields' names, with the TTL attribute.
#[derive(Serialize)]
pub(super) struct StateItem<'a> {
    #[serde(flatten)]
    pub key: Key,
    #[serde(flatten)]
    pub state: &'a OAuthState,
    pub ttl: UnixTime,
}

/// The record of a session ended by `DELETE`, kept until the session would have expired
/// (then TTL removes it, days late: reads check `expires_at`).
#[derive(Serialize)]
pub(super) struct EndedSessionItem {
    #[serde(flatten)]
    pub key: Key,
    pub expires_at: UnixTime,
    pub ttl: UnixTime,
}

/// What a read of an ended-session record needs.
#[derive(Deserialize)]
pub(super) struct EndedSession {
    pub expires_at: UnixTime,
}

/// A server's tool snapshot: its JSON text in `doc`.
#[derive(Serialize)]
pub(super) struct SnapshotItem<'a> {
    #[serde(flatten)]
    pub key: Key,
    pub doc: JsonText<&'a crate::store::ToolSnapshot>,
}

/// A tool snapshot as read.
#[derive(Deserialize)]
pub(super) struct StoredSnapshot {
    pub doc: JsonText<crate::store::ToolSnapshot>,
}

/// `value` as an item.
pub(super) fn encode(what: &str, value: &impl Serialize) -> StoreResult<Item> {
    serde_dynamo::to_item(value)
        .map_err(|e| StoreError::Corrupt(format!("{what} does not serialize: {e}")))
}

/// `item` as a `T`; a malformed item names the attribute, never its value.
pub(super) fn decode<T: DeserializeOwned>(what: &str, item: Item) -> StoreResult<T> {
    let item = serde_dynamo::AttributeValue::M(serde_dynamo::Item::from(item).into());
    serde_path_to_error::deserialize(serde_dynamo::Deserializer::from_attribute_value(item))
        .map_err(|e| {
            let path = e.path().to_string();
            StoreError::Corrupt(if path == "." {
                // The item itself: an attribute is missing (serde names only the field).
                format!("{what} item: {}", e.into_inner())
            } else {
                format!("{what} item: attribute '{path}' is missing or malformed")
            })
        })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::domain::GrantStatus;
    use aws_sdk_dynamodb::primitives::Blob;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn n(v: i64) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    /// A grant with every field set (shared with the adapter's own tests).
    pub(in crate::store) fn grant() -> Grant {
        Grant {
            user: "u@example.com".into(),
            server: "s".into(),
            version: 3,
            sealed_tokens: vec![1, 2, 3],
            status: GrantStatus::Active,
            scopes: vec!["read".into()],
            access_expires_at: Some(100),
            refresh_at: Some(90),
            updated_at: 50,
            last_refresh_at: Some(40),
            last_error: Some("upstream_error".into()),
            refresh_lease_until: Some(70),
        }
    }

    /// The stored layout of a grant, attribute by attribute and type by type: what items
    /// already in tables hold, so a change to the domain type's serde shows up here.
    #[test]
    fn a_grant_item_has_the_fixed_attributes_and_types() {
        let g = grant();
        let item = encode(
            "grant",
            &GrantItem {
                key: Key::new("GRANT#u@example.com", "s"),
                grant: &g,
                refresh_shard: Some("REFRESH#1".into()),
            },
        )
        .unwrap();
        let expected = Item::from([
            ("pk".into(), s("GRANT#u@example.com")),
            ("sk".into(), s("s")),
            ("user".into(), s("u@example.com")),
            ("server".into(), s("s")),
            ("version".into(), n(3)),
            (
                "sealed_tokens".into(),
                AttributeValue::B(Blob::new(vec![1, 2, 3])),
            ),
            ("status".into(), s("active")),
            ("scopes".into(), AttributeValue::L(vec![s("read")])),
            ("access_expires_at".into(), n(100)),
            ("refresh_at".into(), n(90)),
            ("updated_at".into(), n(50)),
            ("last_refresh_at".into(), n(40)),
            ("last_error".into(), s("upstream_error")),
            ("refresh_lease_until".into(), n(70)),
            ("refresh_shard".into(), s("REFRESH#1")),
        ]);
        assert_eq!(item, expected);
        assert_eq!(decode::<Grant>("grant", item).unwrap(), g);
    }

    /// Items written before this codec, by the hand mapping: optional attributes absent or
    /// NULL, no `scopes`, still read.
    #[test]
    fn items_of_the_old_mapping_still_read() {
        let item = Item::from([
            ("pk".into(), s("GRANT#u")),
            ("sk".into(), s("s")),
            ("user".into(), s("u")),
            ("server".into(), s("s")),
            ("version".into(), n(1)),
            (
                "sealed_tokens".into(),
                AttributeValue::B(Blob::new(vec![9])),
            ),
            ("status".into(), s("needs_reconsent")),
            ("updated_at".into(), n(5)),
            ("last_error".into(), AttributeValue::Null(true)),
        ]);
        let g = decode::<Grant>("grant", item).unwrap();
        assert_eq!(g.status, GrantStatus::NeedsReconsent);
        assert_eq!(
            (g.scopes.len(), g.last_error, g.refresh_at),
            (0, None, None)
        );
        let key = ApiKey {
            id: "k".into(),
            owner: "o@example.com".into(),
            name: "n".into(),
            key_hash: "h".into(),
            admin: false,
            created_at: 1,
            expires_at: None,
            last_used_at: Some(3),
        };
        let item = Item::from([
            ("pk".into(), s("APIKEY")),
            ("sk".into(), s("k")),
            ("key_hash".into(), s("h")),
            ("doc".into(), s(&serde_json::to_string(&key).unwrap())),
            ("last_used_at".into(), n(9)),
        ]);
        let read = decode::<StoredApiKey>("API key", item).unwrap().into_key();
        assert_eq!(read.last_used_at, Some(9), "the later use wins");
    }

    #[test]
    fn a_state_item_carries_its_ttl_and_a_sparse_grant_item_leaves_out_what_is_none() {
        let st = OAuthState {
            id: "x".into(),
            user: "u".into(),
            server: "s".into(),
            sealed_payload: vec![7],
            created_at: 1,
            expires_at: 601,
        };
        let item = encode(
            "OAuth state",
            &StateItem {
                key: Key::new("STATE#x", "STATE"),
                state: &st,
                ttl: st.expires_at,
            },
        )
        .unwrap();
        assert_eq!(item["ttl"], n(601));
        assert_eq!(
            item["sealed_payload"],
            AttributeValue::B(Blob::new(vec![7]))
        );
        assert_eq!(decode::<OAuthState>("OAuth state", item).unwrap(), st);

        let mut g = grant();
        g.refresh_at = None;
        g.last_error = None;
        let item = encode(
            "grant",
            &GrantItem {
                key: Key::new("GRANT#u", "s"),
                grant: &g,
                refresh_shard: None,
            },
        )
        .unwrap();
        for absent in ["refresh_at", "refresh_shard", "last_error"] {
            assert!(!item.contains_key(absent), "{absent}");
        }
    }

    /// A malformed attribute is named; its value is not in the message.
    #[test]
    fn a_malformed_item_names_the_attribute_not_its_value() {
        let mut item = encode(
            "grant",
            &GrantItem {
                key: Key::new("GRANT#u", "s"),
                grant: &grant(),
                refresh_shard: None,
            },
        )
        .unwrap();
        item.insert("version".into(), s("secret-looking-value"));
        let err = decode::<Grant>("grant", item.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'version'"), "{err}");
        assert!(!err.contains("secret-looking-value"), "{err}");
        item.insert("status".into(), s("hacked"));
        item.insert("version".into(), n(1));
        let err = decode::<Grant>("grant", item.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'status'") && !err.contains("hacked"), "{err}");
        item.remove("status");
        let err = decode::<Grant>("grant", item).unwrap_err().to_string();
        assert!(err.contains("missing field `status`"), "{err}");
        let doc = Item::from([("doc".into(), s("{\"id\": \"sk-live-123\""))]);
        let err = decode::<StoredApiKey>("API key", doc)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'doc'") && !err.contains("sk-live"), "{err}");
    }
}
