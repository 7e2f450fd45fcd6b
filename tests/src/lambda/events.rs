//! Lambda event fixtures (`tests/events/*.json`) with placeholders, and reading what a
//! function answered: the proxy response body and the MCP message in it.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// Reads `tests/events/NAME.json` and replaces each placeholder (`__ADMIN_KEY__`, ...) in every
/// string, the body included (decoded first when base64), fixing `Content-Length` to match.
pub fn load_event(name: &str, vars: &[(&str, &str)]) -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut event: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let body = event.get("body").cloned();
    substitute(&mut event, vars);
    if let Some(Value::String(body)) = body {
        let base64 = event["isBase64Encoded"] == true;
        let raw = if base64 {
            B64.decode(&body).context("fixture body is not base64")?
        } else {
            body.into_bytes()
        };
        let raw = substitute_str(
            &String::from_utf8(raw).context("fixture body is not UTF-8")?,
            vars,
        )
        .into_bytes();
        set_body(&mut event, Some(&raw), base64);
    }
    Ok(event)
}

fn substitute_str(s: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(s.to_owned(), |s, (k, v)| s.replace(k, v))
}

fn substitute(v: &mut Value, vars: &[(&str, &str)]) {
    match v {
        Value::String(s) => *s = substitute_str(s, vars),
        Value::Array(a) => a.iter_mut().for_each(|v| substitute(v, vars)),
        Value::Object(o) => o
            .iter_mut()
            .filter(|(k, _)| *k != "body")
            .for_each(|(_, v)| substitute(v, vars)),
        _ => {}
    }
}

/// Sets an event's body (base64 or text) and its `Content-Length` header(s), in whichever
/// case the event spells them; `None` removes the body and the header.
pub fn set_body(event: &mut Value, body: Option<&[u8]>, base64: bool) {
    let (body_value, len) = match body {
        Some(b) if base64 => (Value::String(B64.encode(b)), Some(b.len())),
        Some(b) => (
            Value::String(String::from_utf8_lossy(b).into_owned()),
            Some(b.len()),
        ),
        None => (Value::Null, None),
    };
    event["body"] = body_value;
    event["isBase64Encoded"] = Value::Bool(base64 && body.is_some());
    for (field, multi) in [("headers", false), ("multiValueHeaders", true)] {
        let Some(map) = event.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        let names: Vec<String> = map
            .keys()
            .filter(|k| k.eq_ignore_ascii_case("content-length"))
            .cloned()
            .collect();
        for name in names {
            match len {
                Some(n) if multi => map[&name] = json!([n.to_string()]),
                Some(n) => map[&name] = json!(n.to_string()),
                None => {
                    map.remove(&name);
                }
            }
        }
    }
}

/// The body of a Lambda proxy response (v1 or v2), decoded.
pub fn proxy_body(resp: &Value) -> Result<Vec<u8>> {
    let body = resp["body"].as_str().unwrap_or_default();
    if resp["isBase64Encoded"] == true {
        Ok(B64.decode(body)?)
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// The first JSON-RPC message of an MCP response body: plain JSON, or the first SSE `data:`.
pub fn mcp_message(body: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(body)?;
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str(d.trim()).ok())
        .with_context(|| format!("no JSON-RPC message in: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_substitute_placeholders_inside_base64_bodies() {
        let e = load_event(
            "rest-admin-create-server",
            &[
                ("__ADMIN_KEY__", "adm"),
                ("__EVERYTHING_URL__", "http://h:1/mcp"),
            ],
        )
        .unwrap();
        assert_eq!(e["headers"]["authorization"], "Bearer adm");
        let body = proxy_body(&e).unwrap();
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["url"], "http://h:1/mcp");
        assert_eq!(e["headers"]["content-length"], body.len().to_string());
        assert_eq!(
            e["multiValueHeaders"]["content-length"],
            json!([body.len().to_string()])
        );
    }

    #[test]
    fn mcp_messages_come_from_json_or_sse() {
        assert_eq!(mcp_message(br#"{"id":1}"#).unwrap()["id"], 1);
        assert_eq!(
            mcp_message(b"event: message\ndata: {\"id\":2}\n\n").unwrap()["id"],
            2
        );
        assert!(mcp_message(b"nothing").is_err());
    }
}
