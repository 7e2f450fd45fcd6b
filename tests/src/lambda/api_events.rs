//! HTTP requests into API Gateway events (REST payload 1.0, HTTP API payload 2.0) and Lambda
//! proxy responses back into HTTP, with API Gateway's header rules.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::ACCOUNT_ID;
use super::events::proxy_body;
use super::routes::{ApiKind, RouteMatch};

/// An HTTP request as the client sent it: header names keep their case.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub source_ip: String,
    /// The gateway's own `host:port` (for `X-Forwarded-Port` and the domain name).
    pub local: SocketAddr,
}

impl IncomingRequest {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn path_and_query(&self) -> (&str, &str) {
        self.target.split_once('?').unwrap_or((&self.target, ""))
    }
}

/// `%XX` decoding (API Gateway decodes query parameters; `+` stays `+`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters in order, decoded.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Groups values by name, keeping the first-seen spelling of the name and the order.
fn group<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    case_insensitive: bool,
) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in pairs {
        let found = out.iter_mut().find(|(n, _)| {
            if case_insensitive {
                n.eq_ignore_ascii_case(k)
            } else {
                n == k
            }
        });
        match found {
            Some((_, vals)) => vals.push(v.to_owned()),
            None => out.push((k.to_owned(), vec![v.to_owned()])),
        }
    }
    out
}

fn random_hex(bytes: usize) -> String {
    let raw = URL_SAFE_NO_PAD
        .decode(mcpgw::crypto::random_token(bytes))
        .expect("random_token is base64url");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn request_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The headers API Gateway adds to what the client sent (REST spelling).
fn with_forwarding_headers(req: &IncomingRequest) -> Vec<(String, String)> {
    let mut headers = req.headers.clone();
    let xff = match req.header("x-forwarded-for") {
        Some(prev) => format!("{prev}, {}", req.source_ip),
        None => req.source_ip.clone(),
    };
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("x-forwarded-for"));
    headers.push(("X-Forwarded-For".into(), xff));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (name, value) in [
        ("X-Forwarded-Port", req.local.port().to_string()),
        ("X-Forwarded-Proto", "http".to_owned()),
        (
            "X-Amzn-Trace-Id",
            format!("Root=1-{now:08x}-{}", random_hex(12)),
        ),
    ] {
        if req.header(name).is_none() {
            headers.push((name.to_owned(), value));
        }
    }
    headers
}

fn request_time(now: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    now.format(&fmt).unwrap_or_default()
}

fn body_fields(body: &[u8]) -> (Value, bool) {
    if body.is_empty() {
        (Value::Null, false)
    } else {
        (Value::String(B64.encode(body)), true)
    }
}

fn params_value(params: &[(String, String)]) -> Value {
    if params.is_empty() {
        Value::Null
    } else {
        Value::Object(
            params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

/// The REST API (v1) proxy event API Gateway sends for `req` on `route` in `stage`.
pub fn rest_event(
    req: &IncomingRequest,
    stage: &str,
    route: &RouteMatch,
    request_id: &str,
) -> Value {
    let headers = group(
        with_forwarding_headers(req)
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        true,
    );
    let single: Map<String, Value> = headers
        .iter()
        .map(|(k, vs)| {
            (
                k.clone(),
                Value::String(vs.last().cloned().unwrap_or_default()),
            )
        })
        .collect();
    let multi: Map<String, Value> = headers
        .iter()
        .map(|(k, vs)| (k.clone(), json!(vs)))
        .collect();
    let query = parse_query(req.path_and_query().1);
    let query = group(query.iter().map(|(k, v)| (k.as_str(), v.as_str())), false);
    let (qs, mvqs) = if query.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (
            Value::Object(
                query
                    .iter()
                    .map(|(k, vs)| (k.clone(), json!(vs.last())))
                    .collect(),
            ),
            Value::Object(query.iter().map(|(k, vs)| (k.clone(), json!(vs))).collect()),
        )
    };
    let (body, is_base64) = body_fields(&req.body);
    let now = time::OffsetDateTime::now_utc();
    let host = req
        .header("host")
        .map(str::to_owned)
        .unwrap_or_else(|| req.local.to_string());
    let user_agent = req.header("user-agent");
    json!({
        "resource": route.pattern,
        "path": route.path,
        "httpMethod": req.method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": qs,
        "multiValueQueryStringParameters": mvqs,
        "pathParameters": params_value(&route.params),
        "stageVariables": null,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "fakeapi001",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "extendedRequestId": request_id,
            "httpMethod": req.method,
            "identity": {
                "accessKey": null, "accountId": null, "caller": null,
                "cognitoAuthenticationProvider": null, "cognitoAuthenticationType": null,
                "cognitoIdentityId": null, "cognitoIdentityPoolId": null, "principalOrgId": null,
                "sourceIp": req.source_ip, "user": null, "userAgent": user_agent, "userArn": null
            },
            "path": format!("/{stage}{}", route.path),
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": request_time(now),
            "requestTimeEpoch": (now.unix_timestamp_nanos() / 1_000_000) as i64,
            "resourceId": "fake01",
            "resourcePath": route.pattern,
            "stage": stage
        },
        "body": body,
        "isBase64Encoded": is_base64
    })
}

/// The HTTP API payload 2.0 event API Gateway sends for `req` on `route` (`$default` stage).
pub fn http_event(req: &IncomingRequest, route: &RouteMatch, request_id: &str) -> Value {
    // HTTP APIs lowercase header names, join repeated headers with commas, and move cookies
    // out of the headers into `cookies`.
    let forwarded = with_forwarding_headers(req);
    let mut cookies: Vec<String> = Vec::new();
    let mut headers = Map::new();
    let lowered: Vec<(String, &str)> = forwarded
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    for (name, values) in group(lowered.iter().map(|(k, v)| (k.as_str(), *v)), false) {
        if name == "cookie" {
            cookies.extend(
                values
                    .iter()
                    .flat_map(|v| v.split(';'))
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty()),
            );
        } else {
            headers.insert(name, Value::String(values.join(",")));
        }
    }
    let (path, raw_query) = req.path_and_query();
    let query = parse_query(raw_query);
    let query = group(query.iter().map(|(k, v)| (k.as_str(), v.as_str())), false);
    let (body, is_base64) = body_fields(&req.body);
    let now = time::OffsetDateTime::now_utc();
    let host = req
        .header("host")
        .map(str::to_owned)
        .unwrap_or_else(|| req.local.to_string());
    let route_key = format!(
        "{} {}",
        if route.any_method {
            "ANY"
        } else {
            req.method.as_str()
        },
        route.pattern
    );
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "fakeapi002",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "http": {
                "method": req.method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": req.source_ip,
                "userAgent": req.header("user-agent").unwrap_or_default()
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": request_time(now),
            "timeEpoch": (now.unix_timestamp_nanos() / 1_000_000) as i64
        },
        "isBase64Encoded": is_base64
    });
    if !body.is_null() {
        event["body"] = body;
    }
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(
            query
                .iter()
                .map(|(k, vs)| (k.clone(), Value::String(vs.join(","))))
                .collect(),
        );
    }
    if !route.params.is_empty() {
        event["pathParameters"] = params_value(&route.params);
    }
    event
}

/// An HTTP response the gateway writes back.
pub struct OutgoingResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: OutgoingBody,
}

pub enum OutgoingBody {
    Full(Bytes),
    /// A streaming integration: the body is relayed as the function produces it.
    Stream(reqwest::Response),
}

pub(super) fn gateway_json(status: u16, message: &str) -> OutgoingResponse {
    OutgoingResponse {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: OutgoingBody::Full(Bytes::from(json!({"message": message}).to_string())),
    }
}

/// Headers that describe one hop's framing, not the response.
pub(super) fn is_hop_header(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "lambda-runtime-function-response-mode",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn json_str_headers(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Turns a buffered Lambda proxy result into HTTP, as API Gateway does; `None` when it is not a
/// valid proxy response (API Gateway answers 502 then).
pub fn proxy_response(kind: &ApiKind, result: &Value) -> Option<OutgoingResponse> {
    let status = u16::try_from(result.get("statusCode")?.as_u64()?).ok()?;
    let mut headers: Vec<(String, String)> = Vec::new();
    match kind {
        ApiKind::Rest { .. } => {
            // multiValueHeaders win; `headers` adds the names they lack.
            if let Some(m) = result.get("multiValueHeaders").and_then(Value::as_object) {
                for (k, vs) in m {
                    for v in vs.as_array()? {
                        headers.push((k.clone(), v.as_str()?.to_owned()));
                    }
                }
            }
            for (k, v) in json_str_headers(&result["headers"]) {
                if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&k)) {
                    headers.push((k, v));
                }
            }
        }
        ApiKind::Http => {
            headers = json_str_headers(&result["headers"]);
            if let Some(cookies) = result.get("cookies").and_then(Value::as_array) {
                headers.extend(
                    cookies
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|c| ("Set-Cookie".to_owned(), c.to_owned())),
                );
            }
        }
    }
    headers.retain(|(k, _)| !is_hop_header(k));
    let body = proxy_body(result).ok()?;
    Some(OutgoingResponse {
        status,
        headers,
        body: OutgoingBody::Full(Bytes::from(body)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::routes::match_route;

    fn request(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> IncomingRequest {
        IncomingRequest {
            method: method.into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            source_ip: "127.0.0.1".into(),
            local: "127.0.0.1:4000".parse().unwrap(),
        }
    }

    #[test]
    fn rest_events_keep_case_stage_and_repeats() {
        let req = request(
            "POST",
            "/prod/mcp/echo?a=1&a=2&b=x%20y",
            &[
                ("Host", "gw.test"),
                ("Authorization", "Bearer k"),
                ("X-Dup", "1"),
                ("x-dup", "2"),
            ],
            b"{}",
        );
        let route = match_route("POST", "/mcp/echo").unwrap();
        let e = rest_event(&req, "prod", &route, "rid");
        assert_eq!(e["path"], "/mcp/echo");
        assert_eq!(e["resource"], "/mcp/{endpoint}");
        assert_eq!(e["requestContext"]["path"], "/prod/mcp/echo");
        assert_eq!(e["requestContext"]["stage"], "prod");
        assert_eq!(e["headers"]["Authorization"], "Bearer k");
        assert_eq!(e["headers"]["X-Dup"], "2");
        assert_eq!(e["multiValueHeaders"]["X-Dup"], json!(["1", "2"]));
        assert_eq!(e["queryStringParameters"], json!({"a": "2", "b": "x y"}));
        assert_eq!(e["multiValueQueryStringParameters"]["a"], json!(["1", "2"]));
        assert_eq!(e["pathParameters"], json!({"endpoint": "echo"}));
        assert_eq!(
            (e["body"].as_str(), &e["isBase64Encoded"]),
            (Some("e30="), &json!(true))
        );
        assert_eq!(e["headers"]["X-Forwarded-Port"], "4000");
    }

    #[test]
    fn http_events_lowercase_headers_and_split_cookies() {
        let req = request(
            "GET",
            "/admin/servers?x=1&x=2",
            &[("Cookie", "a=1; b=2"), ("Accept", "a"), ("accept", "b")],
            b"",
        );
        let route = match_route("GET", "/admin/servers").unwrap();
        let e = http_event(&req, &route, "rid");
        assert_eq!(e["routeKey"], "ANY /admin/{proxy+}");
        assert_eq!(e["rawPath"], "/admin/servers");
        assert_eq!(e["rawQueryString"], "x=1&x=2");
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["headers"]["accept"], "a,b");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["queryStringParameters"]["x"], "1,2");
        assert!(e.get("body").is_none());
        assert_eq!(e["requestContext"]["http"]["method"], "GET");
    }

    #[test]
    fn proxy_responses_merge_headers_like_api_gateway() {
        let v1 = json!({"statusCode": 201, "headers": {"x-a": "h", "x-b": "h"}, "multiValueHeaders": {"x-a": ["m1", "m2"], "content-length": ["9"]}, "body": "aGk=", "isBase64Encoded": true});
        let r = proxy_response(
            &ApiKind::Rest {
                stage: "prod".into(),
            },
            &v1,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(
            r.headers,
            vec![
                ("x-a".into(), "m1".into()),
                ("x-a".into(), "m2".into()),
                ("x-b".into(), "h".into())
            ]
        );
        assert!(matches!(r.body, OutgoingBody::Full(ref b) if b.as_ref() == b"hi"));
        let v2 = json!({"statusCode": 200, "headers": {"content-type": "text/plain"}, "cookies": ["c=1"], "body": "ok"});
        let r = proxy_response(&ApiKind::Http, &v2).unwrap();
        assert_eq!(r.headers[1], ("Set-Cookie".into(), "c=1".into()));
        assert!(proxy_response(&ApiKind::Http, &json!({"body": "no status"})).is_none());
    }
}
