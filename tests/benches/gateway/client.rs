//! The MCP client of the bench: one connection per peer, both eras, checked answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::settings::{
    Era, META_CAPABILITIES, META_CLIENT, META_VERSION, MODERN_VERSION, SESSION_VERSION,
};

pub(crate) struct Upstream {
    pub(crate) name: &'static str,
    pub(crate) url: String,
    /// Where its CPU time is read: the process id (`/proc/{pid}`), and the name of its
    /// threads when it shares this process.
    pub(crate) cpu: Option<(String, Option<&'static str>)>,
}

/// The credential each upstream expects: the gateway injects it, a direct call sends it.
pub(crate) fn credential(upstream: &str) -> String {
    format!("Bearer bench-credential-for-{upstream}")
}

/// One MCP client of one endpoint: the upstream itself, or the gateway's `/mcp/{name}`.
#[derive(Clone)]
pub(crate) struct Peer {
    /// "direct" or the gateway's label, for messages.
    pub(crate) path: &'static str,
    pub(crate) url: String,
    /// The whole `Authorization` value: the upstream's credential when direct, the caller's
    /// gateway key when proxied.
    pub(crate) authorization: String,
    pub(crate) era: Era,
    pub(crate) session: Option<String>,
}

pub(crate) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Peer {
    pub(crate) fn body(&self, id: u64, method: &str, mut params: Value) -> Value {
        if self.era == Era::Modern {
            params["_meta"] = json!({
                META_VERSION: MODERN_VERSION,
                META_CAPABILITIES: {},
                META_CLIENT: {"name": "mcpgw-bench", "version": "1.0"},
            });
        }
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    pub(crate) fn post(&self, client: &reqwest::Client, body: &Value) -> reqwest::RequestBuilder {
        let mut req = client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", &self.authorization);
        match self.era {
            Era::Session => {
                if let Some(s) = &self.session {
                    req = req
                        .header("mcp-session-id", s)
                        .header("mcp-protocol-version", SESSION_VERSION);
                }
            }
            Era::Modern => {
                let method = body["method"].as_str().unwrap_or_default();
                req = req
                    .header("mcp-protocol-version", MODERN_VERSION)
                    .header("mcp-method", method);
                if method == "tools/call"
                    && let Some(name) = body["params"]["name"].as_str()
                {
                    req = req.header("mcp-name", name);
                }
            }
        }
        req.body(body.to_string())
    }

    /// One request; returns its result and the response headers.
    pub(crate) async fn rpc(
        &self,
        client: &reqwest::Client,
        method: &str,
        params: Value,
    ) -> Result<(Value, HeaderMap)> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .post(client, &self.body(id, method, params))
            .send()
            .await;
        let resp = resp.with_context(|| format!("{} {method}: {}", self.path, self.url))?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        let text = resp.text().await?;
        let answer = jsonrpc_answer(&text, id);
        ensure!(
            status.is_success() && answer.as_ref().is_some_and(|a| a.get("result").is_some()),
            "{} {method}: HTTP {status}: {text}",
            self.path
        );
        Ok((answer.expect("checked")["result"].take(), headers))
    }

    /// The handshake: `initialize` + `notifications/initialized` (session era) or
    /// `server/discover` (2026-07-28), then `tools/list`. Returns the number of requests.
    pub(crate) async fn open(&mut self, client: &reqwest::Client) -> Result<usize> {
        match self.era {
            Era::Session => {
                let params = json!({"protocolVersion": SESSION_VERSION, "capabilities": {},
                    "clientInfo": {"name": "mcpgw-bench", "version": "1.0"}});
                let (result, headers) = self.rpc(client, "initialize", params).await?;
                ensure!(
                    result["protocolVersion"] == json!(SESSION_VERSION),
                    "{}: initialize negotiated {}",
                    self.path,
                    result["protocolVersion"]
                );
                let session = headers
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .with_context(|| format!("{}: initialize without Mcp-Session-Id", self.path))?;
                self.session = Some(session.to_owned());
                let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                let resp = self.post(client, &note).send().await?;
                let status = resp.status();
                ensure!(
                    status.is_success(),
                    "{}: notifications/initialized: HTTP {status}: {}",
                    self.path,
                    resp.text().await.unwrap_or_default()
                );
            }
            Era::Modern => {
                let (result, headers) = self.rpc(client, "server/discover", json!({})).await?;
                ensure!(
                    !headers.contains_key("mcp-session-id"),
                    "{}: a 2026-07-28 answer carried an Mcp-Session-Id",
                    self.path
                );
                ensure!(
                    result["supportedVersions"]
                        .as_array()
                        .is_some_and(|v| v.contains(&json!(MODERN_VERSION))),
                    "{}: server/discover does not list {MODERN_VERSION}: {result}",
                    self.path
                );
            }
        }
        let (result, _) = self.rpc(client, "tools/list", json!({})).await?;
        let tools = result["tools"].as_array().cloned().unwrap_or_default();
        ensure!(
            tools.iter().any(|t| t["name"] == "echo"),
            "{}: tools/list has no echo tool: {result}",
            self.path
        );
        Ok(match self.era {
            Era::Session => 3,
            Era::Modern => 2,
        })
    }

    /// Ends a session (DELETE with its id); nothing to do in the 2026-07-28 era.
    pub(crate) async fn close(&self, client: &reqwest::Client) -> Result<()> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let resp = client
            .delete(&self.url)
            .header("authorization", &self.authorization)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", SESSION_VERSION)
            .send()
            .await?;
        let status = resp.status();
        ensure!(status.is_success(), "{}: DELETE: HTTP {status}", self.path);
        Ok(())
    }

    /// One `tools/call` of `echo`; returns its latency (request sent until the whole body is
    /// read) after checking the answer echoes this call's own message.
    pub(crate) async fn call(&self, client: &reqwest::Client) -> Result<Duration> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let message = format!("bench call {id}");
        let body = self.body(
            id,
            "tools/call",
            json!({"name": "echo", "arguments": {"message": message}}),
        );
        let req = self.post(client, &body);
        let started = Instant::now();
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let elapsed = started.elapsed();
        ensure!(status.is_success(), "{}: HTTP {status}: {text}", self.path);
        let answer = jsonrpc_answer(&text, id)
            .with_context(|| format!("{}: no answer to id {id} in {text}", self.path))?;
        let result = &answer["result"];
        ensure!(
            answer["id"] == json!(id)
                && result["isError"] != json!(true)
                && result["content"][0]["text"] == json!(message)
                && (result["resultType"].is_null() || result["resultType"] == "complete"),
            "{}: unexpected answer {answer}",
            self.path
        );
        Ok(elapsed)
    }
}

/// The JSON-RPC message answering `id`, from a JSON body or an SSE stream.
pub(crate) fn jsonrpc_answer(body: &str, id: u64) -> Option<Value> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).ok();
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v["id"] == json!(id))
}
