//! A small raw MCP client for end-to-end tests that need exact answers (every tool name of a
//! paginated `tools/list`, the error object of a refused call byte for byte) in either
//! protocol era. Independent of the gateway's own client code on purpose: a test that used the
//! gateway's client to check the gateway would share its bugs.

use anyhow::{Context, Result, bail, ensure};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// The stateless protocol revision (no session, a per-request envelope).
pub const STATELESS: &str = "2026-07-28";
/// The session-era revision the tests speak.
pub const SESSION: &str = "2025-11-25";

/// What one request got back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The JSON-RPC response to the request (`Null` when none was found).
    pub message: Value,
    /// The body as received.
    pub raw: String,
}

impl Answer {
    pub fn result(&self) -> Result<&Value> {
        self.message
            .get("result")
            .with_context(|| format!("no result: HTTP {} {}", self.status, self.raw))
    }

    pub fn error(&self) -> Option<&Value> {
        self.message.get("error")
    }
}

/// One client of one MCP endpoint, with one bearer token.
pub struct McpClient {
    url: String,
    token: String,
    version: &'static str,
    session: Option<String>,
    http: reqwest::Client,
    next_id: i64,
    capabilities: Value,
    /// The answer to this client's `initialize` (session era).
    init: Option<Answer>,
}

impl McpClient {
    /// Connects in `version`'s way: `initialize` (and `notifications/initialized`) for the
    /// session era, nothing for the stateless era (every request carries its envelope).
    pub async fn connect(url: &str, token: &str, version: &'static str) -> Result<Self> {
        Self::connect_with(url, token, version, json!({})).await
    }

    /// [`McpClient::connect`] declaring `capabilities` (in `initialize`, or in every
    /// stateless request's envelope).
    pub async fn connect_with(
        url: &str,
        token: &str,
        version: &'static str,
        capabilities: Value,
    ) -> Result<Self> {
        mcpgw::crypto::install_tls_provider();
        let mut client = Self {
            url: url.to_owned(),
            token: token.to_owned(),
            version,
            session: None,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            next_id: 0,
            capabilities,
            init: None,
        };
        if version != STATELESS {
            let answer = client
                .request(
                    "initialize",
                    json!({"protocolVersion": version, "capabilities": client.capabilities.clone(),
                        "clientInfo": {"name": "mcpgw-e2e", "version": "1.0.0"}}),
                )
                .await?;
            ensure!(
                answer.status == 200 && answer.result().is_ok(),
                "initialize at {url}: HTTP {} {}",
                answer.status,
                answer.raw
            );
            client.init = Some(answer);
            client
                .notify("notifications/initialized", json!({}))
                .await?;
        }
        Ok(client)
    }

    /// The answer to this client's `initialize` (session era; `None` in the stateless era).
    pub fn init_answer(&self) -> Option<&Answer> {
        self.init.as_ref()
    }

    /// The protocol version this client speaks.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// The gateway session id (session era), if one was issued.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    fn headers(&self, method: &str, params: &Value) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "accept",
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        h.insert("content-type", HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", self.token)) {
            h.insert("authorization", v);
        }
        if let Some(s) = self
            .session
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            h.insert("mcp-session-id", s);
        }
        if self.version == STATELESS || method != "initialize" {
            h.insert(
                "mcp-protocol-version",
                HeaderValue::from_static(self.version),
            );
        }
        if self.version == STATELESS {
            if let Ok(v) = HeaderValue::from_str(method) {
                h.insert("mcp-method", v);
            }
            let name = params
                .get("name")
                .or_else(|| params.get("uri"))
                .and_then(Value::as_str);
            if let Some(v) = name.and_then(|n| HeaderValue::from_str(n).ok()) {
                h.insert("mcp-name", v);
            }
        }
        h
    }

    fn with_envelope(&self, mut params: Value) -> Value {
        if self.version == STATELESS {
            // Added to what the caller put in `_meta` (a progress token, say).
            let mut meta = params["_meta"].as_object().cloned().unwrap_or_default();
            meta.extend([
                (
                    "io.modelcontextprotocol/protocolVersion".to_owned(),
                    json!(STATELESS),
                ),
                (
                    "io.modelcontextprotocol/clientCapabilities".to_owned(),
                    self.capabilities.clone(),
                ),
                (
                    "io.modelcontextprotocol/clientInfo".to_owned(),
                    json!({"name": "mcpgw-e2e", "version": "1.0.0"}),
                ),
            ]);
            params["_meta"] = Value::Object(meta);
        }
        params
    }

    /// POSTs one message (a request when `id` is set, else a notification).
    async fn post(
        &self,
        id: Option<i64>,
        method: &str,
        params: Value,
    ) -> Result<reqwest::Response> {
        let params = self.with_envelope(params);
        let mut body = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        self.http
            .post(&self.url)
            .headers(self.headers(method, &params))
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("{method} at {}", self.url))
    }

    /// Sends one request and hands back the HTTP response as it came (status and headers
    /// such as `Retry-After` included), unread.
    pub async fn request_raw(&mut self, method: &str, params: Value) -> Result<reqwest::Response> {
        self.next_id += 1;
        self.post(Some(self.next_id), method, params).await
    }

    /// Sends one request and waits for its response (from a JSON body or an SSE stream).
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Answer> {
        self.next_id += 1;
        let id = self.next_id;
        let resp = self.post(Some(id), method, params).await?;
        let status = resp.status().as_u16();
        if method == "initialize"
            && let Some(s) = resp.headers().get("mcp-session-id")
        {
            self.session = Some(s.to_str()?.to_owned());
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let raw = resp.text().await?;
        let messages = if sse {
            sse_messages(&raw)
        } else {
            match serde_json::from_str::<Value>(&raw) {
                Ok(Value::Array(items)) => items,
                Ok(v) => vec![v],
                Err(_) => Vec::new(),
            }
        };
        let message = messages
            .into_iter()
            .find(|m| {
                m["id"] == json!(id) && (m.get("result").is_some() || m.get("error").is_some())
            })
            .unwrap_or(Value::Null);
        Ok(Answer {
            status,
            message,
            raw,
        })
    }

    /// Sends a notification (no answer expected beyond 202).
    pub async fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        let resp = self.post(None, method, params).await?;
        ensure!(
            resp.status().is_success(),
            "{method}: HTTP {}",
            resp.status()
        );
        Ok(())
    }

    /// Every tool of a `tools/list`, following `nextCursor`, in the order listed.
    pub async fn tools(&mut self) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let answer = self.request("tools/list", params).await?;
            let result = answer.result()?;
            all.extend(result["tools"].as_array().cloned().unwrap_or_default());
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(all),
            }
        }
        bail!("tools/list at {} never ended", self.url)
    }

    /// The names of [`McpClient::tools`].
    pub async fn tool_names(&mut self) -> Result<Vec<String>> {
        Ok(self
            .tools()
            .await?
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// `tools/call` of `name` with `arguments`.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Answer> {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }
}

/// The JSON payloads of an SSE stream's events (events without data are skipped).
pub fn sse_messages(text: &str) -> Vec<Value> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            let data = data.join("\n");
            (!data.trim().is_empty()).then(|| serde_json::from_str(&data).ok())?
        })
        .collect()
}
