//! The 2026-07-28 per-request envelope: `params._meta` carries the protocol version and the
//! client's capabilities (and optionally its info), and the HTTP headers `MCP-Protocol-Version`,
//! `Mcp-Method` and `Mcp-Name` repeat what the body says so intermediaries can route without
//! parsing. The checks follow the spec's order: envelope shape, then header agreement, then
//! the version.

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::jsonrpc::{self, Message};
use super::versions;

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const ENVELOPE_KEYS: [&str; 3] = [
    META_PROTOCOL_VERSION,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
];

pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";

/// The params field a method's `Mcp-Name` header mirrors.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// What a stateless-era request says about its client.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub version: String,
    pub capabilities: Value,
    pub client_info: Option<Value>,
}

/// Why a request fails the envelope checks, as the JSON-RPC error the client gets (HTTP 400).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

fn meta(msg: &Message) -> Option<&Map<String, Value>> {
    msg.params()?.get("_meta")?.as_object()
}

/// Whether a message that carries no session is meant for the stateless era: it says so in
/// its envelope or its version header, or it is the era's discovery call.
pub fn looks_modern(msg: &Message, headers: &HeaderMap) -> bool {
    msg.method() == Some("server/discover")
        || meta(msg).is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION))
        || header(headers, HEADER_PROTOCOL_VERSION).is_some_and(|v| !versions::is_handshake(v))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `=?base64?...?=` values carry text a header cannot; anything else is literal. A malformed
/// or non-canonical encoding decodes to nothing, so it never matches a body by accident.
pub fn decode_header_value(raw: &str) -> Option<String> {
    let Some(payload) = raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Some(raw.to_owned());
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(payload).ok()?;
    if engine.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Runs the stateless-era checks on a request.
pub fn check(msg: &Message, headers: &HeaderMap) -> Result<Envelope, Rejection> {
    let reject = |code, message: String| Rejection {
        code,
        message,
        data: None,
    };
    let Some(meta) = meta(msg) else {
        return Err(reject(
            jsonrpc::INVALID_PARAMS,
            format!(
                "params._meta must be an object carrying {META_PROTOCOL_VERSION} and {META_CLIENT_CAPABILITIES}"
            ),
        ));
    };
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(reject(
            jsonrpc::INVALID_PARAMS,
            format!("params._meta is missing {}", missing.join(", ")),
        ));
    }
    let version = &meta[META_PROTOCOL_VERSION];
    if header(headers, HEADER_PROTOCOL_VERSION)
        .map(Value::from)
        .as_ref()
        != Some(version)
    {
        return Err(reject(
            jsonrpc::HEADER_MISMATCH,
            "MCP-Protocol-Version header does not match params._meta".into(),
        ));
    }
    let method = msg.method().unwrap_or_default();
    if header(headers, HEADER_METHOD) != Some(method) {
        return Err(reject(
            jsonrpc::HEADER_MISMATCH,
            "Mcp-Method header does not match the request's method".into(),
        ));
    }
    if let Some(key) = name_param(method)
        && let Some(body_value) = msg.params().and_then(|p| p.get(key))
    {
        let header_value = header(headers, HEADER_NAME).and_then(decode_header_value);
        if header_value.map(Value::from).as_ref() != Some(body_value) {
            return Err(reject(
                jsonrpc::HEADER_MISMATCH,
                format!("Mcp-Name header does not match params.{key}"),
            ));
        }
    }
    let Some(version) = version.as_str() else {
        return Err(reject(
            jsonrpc::INVALID_PARAMS,
            "the protocol version must be a string".into(),
        ));
    };
    if !versions::is_modern(version) {
        return Err(Rejection {
            code: jsonrpc::UNSUPPORTED_VERSION,
            message: "Unsupported protocol version".into(),
            data: Some(json!({"supported": versions::MODERN, "requested": version})),
        });
    }
    Ok(Envelope {
        version: version.to_owned(),
        capabilities: meta[META_CLIENT_CAPABILITIES].clone(),
        client_info: meta.get(META_CLIENT_INFO).cloned(),
    })
}

/// Removes the envelope from a request bound for a session-era upstream (which negotiated
/// all of it in `initialize`); other `_meta` entries (progress tokens, ...) stay.
pub fn strip(msg: &mut Message) {
    let Some(params) = msg.value.get_mut("params").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        for k in ENVELOPE_KEYS {
            meta.remove(k);
        }
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
}

/// Adds the envelope to a request bound for a stateless-era upstream.
pub fn apply(msg: &mut Message, capabilities: &Value, client_info: Option<&Value>) {
    let Some(params) = msg.params_mut() else {
        return;
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(META_PROTOCOL_VERSION.into(), versions::LATEST_MODERN.into());
        meta.insert(META_CLIENT_CAPABILITIES.into(), capabilities.clone());
        if let Some(info) = client_info {
            meta.insert(META_CLIENT_INFO.into(), info.clone());
        }
    }
}

/// The routing headers for a request bound for a stateless-era upstream.
pub fn routing_headers(msg: &Message) -> Vec<(&'static str, String)> {
    let mut out = vec![(HEADER_PROTOCOL_VERSION, versions::LATEST_MODERN.to_owned())];
    if let Some(method) = msg.method() {
        out.push((HEADER_METHOD, method.to_owned()));
        if let Some(value) = name_param(method)
            .and_then(|k| msg.params()?.get(k))
            .and_then(Value::as_str)
        {
            out.push((HEADER_NAME, encode_header_value(value)));
        }
    }
    out
}

/// Header-safe form of `value`: literal when it is visible ASCII without surrounding
/// whitespace, else the base64 sentinel form.
pub fn encode_header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value.trim() == value
        && !value.starts_with("=?base64?");
    if plain {
        value.to_owned()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        format!("=?base64?{b64}?=")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn req(method: &str, params: Value) -> Message {
        Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}))
            .unwrap()
    }

    fn env(version: &str) -> Value {
        json!({"_meta": {META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {}}})
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_ladder_in_order() {
        let good = headers(&[
            (HEADER_PROTOCOL_VERSION, "2026-07-28"),
            (HEADER_METHOD, "tools/list"),
        ]);
        let ok = check(&req("tools/list", env("2026-07-28")), &good).unwrap();
        assert_eq!(ok.version, "2026-07-28");
        assert!(ok.client_info.is_none());

        let no_meta = check(&req("tools/list", json!({})), &good).unwrap_err();
        assert_eq!(no_meta.code, jsonrpc::INVALID_PARAMS);
        let partial = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}});
        assert_eq!(
            check(&req("tools/list", partial), &good).unwrap_err().code,
            jsonrpc::INVALID_PARAMS
        );

        let wrong_method = headers(&[
            (HEADER_PROTOCOL_VERSION, "2026-07-28"),
            (HEADER_METHOD, "tools/call"),
        ]);
        assert_eq!(
            check(&req("tools/list", env("2026-07-28")), &wrong_method)
                .unwrap_err()
                .code,
            jsonrpc::HEADER_MISMATCH
        );
        let no_version_header = headers(&[(HEADER_METHOD, "tools/list")]);
        assert_eq!(
            check(&req("tools/list", env("2026-07-28")), &no_version_header)
                .unwrap_err()
                .code,
            jsonrpc::HEADER_MISMATCH
        );

        // Header agreement is checked before support, so a consistent unknown version is -32022.
        let future = headers(&[
            (HEADER_PROTOCOL_VERSION, "2099-01-01"),
            (HEADER_METHOD, "tools/list"),
        ]);
        let unsupported = check(&req("tools/list", env("2099-01-01")), &future).unwrap_err();
        assert_eq!(unsupported.code, jsonrpc::UNSUPPORTED_VERSION);
        assert_eq!(
            unsupported.data.unwrap()["supported"],
            json!(["2026-07-28"])
        );
    }

    #[test]
    fn mcp_name_must_match_including_encoded_values() {
        let mut params = env("2026-07-28");
        params["name"] = json!("echo");
        let h = |name: &str| {
            headers(&[
                (HEADER_PROTOCOL_VERSION, "2026-07-28"),
                (HEADER_METHOD, "tools/call"),
                (HEADER_NAME, name),
            ])
        };
        assert!(check(&req("tools/call", params.clone()), &h("echo")).is_ok());
        assert_eq!(
            check(&req("tools/call", params.clone()), &h("other"))
                .unwrap_err()
                .code,
            jsonrpc::HEADER_MISMATCH
        );
        assert!(
            check(
                &req("tools/call", params.clone()),
                &h(&encode_header_value(" echo"))
            )
            .is_err()
        );
        params["name"] = json!("héllo");
        let encoded = encode_header_value("héllo");
        assert!(encoded.starts_with("=?base64?"));
        assert!(check(&req("tools/call", params.clone()), &h(&encoded)).is_ok());
        assert_eq!(decode_header_value("=?base64?aGk=?="), Some("hi".into()));
        assert_eq!(
            decode_header_value("=?base64?aGl=?="),
            None,
            "non-canonical"
        );
        assert_eq!(decode_header_value("=?base64?***?="), None);
    }

    #[test]
    fn strip_and_apply_touch_only_the_envelope() {
        let mut m = req(
            "tools/call",
            json!({"name":"x","_meta":{META_PROTOCOL_VERSION:"2026-07-28",META_CLIENT_CAPABILITIES:{},"progressToken":5}}),
        );
        strip(&mut m);
        assert_eq!(m.value["params"]["_meta"], json!({"progressToken":5}));
        let mut bare = req(
            "tools/list",
            json!({"_meta":{META_PROTOCOL_VERSION:"2026-07-28",META_CLIENT_CAPABILITIES:{}}}),
        );
        strip(&mut bare);
        assert!(bare.value["params"].get("_meta").is_none());

        let mut n =
            Message::from_value(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"})).unwrap();
        apply(
            &mut n,
            &json!({"elicitation":{}}),
            Some(&json!({"name":"c"})),
        );
        assert_eq!(
            n.value["params"]["_meta"][META_PROTOCOL_VERSION],
            "2026-07-28"
        );
        assert_eq!(n.value["params"]["_meta"][META_CLIENT_INFO]["name"], "c");
        let hs = routing_headers(&req("tools/call", json!({"name":"echo"})));
        assert!(hs.contains(&(HEADER_NAME, "echo".into())));
    }

    #[test]
    fn era_detection() {
        let none = HeaderMap::new();
        assert!(looks_modern(&req("server/discover", json!({})), &none));
        assert!(looks_modern(&req("tools/list", env("2026-07-28")), &none));
        assert!(!looks_modern(&req("tools/list", json!({})), &none));
        assert!(looks_modern(
            &req("tools/list", json!({})),
            &headers(&[(HEADER_PROTOCOL_VERSION, "2099-01-01")])
        ));
        assert!(!looks_modern(
            &req("tools/list", json!({})),
            &headers(&[(HEADER_PROTOCOL_VERSION, "2025-06-18")])
        ));
    }
}
