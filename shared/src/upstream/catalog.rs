//! The tools one caller sees on one endpoint, computed by the policy's decision function
//! ([`Access::tool`]) over the upstreams' live lists. A virtual server's `tools/list`, the
//! effective catalog (`/me/catalog`) and the admin's "what would this user see" all come from
//! here; a registered server's relayed `tools/list` is filtered by the same function.

use std::collections::HashMap;

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::Value;

use super::client;
use super::{OpenError, Upstream, Upstreams};
use crate::http::error_chain;
use crate::policy::Access;

/// One visible tool: as the client sees it, and where a call of it goes.
#[derive(Debug, Clone)]
pub struct VisibleTool {
    /// The tool object as listed to the client (exposed name, description override).
    pub tool: Value,
    pub server: String,
    pub upstream_tool: String,
}

/// The tools of an endpoint, and why some upstream could not be listed (the tools of a
/// failed upstream are absent: a partial list beats none for a virtual server).
#[derive(Debug, Default)]
pub struct EndpointTools {
    pub tools: Vec<VisibleTool>,
    pub errors: Vec<String>,
}

/// Keeps the tools `access` lets through, from a registered server's own list.
pub fn filter_listed(access: &Access, tools: &mut Vec<Value>) {
    tools.retain(|t| {
        t.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| access.tool(n).is_some())
    });
}

/// An upstream ready to call for `user`, or why not.
pub async fn upstream_for(
    upstreams: &Arc<Upstreams>,
    server: &str,
    user: &str,
) -> Result<Upstream, String> {
    upstreams
        .open_named(server, user)
        .await
        .map_err(|e| e.to_string())
}

/// Why an upstream's list is missing.
struct Failure {
    message: String,
    /// The caller lacks a credential of their own for it (not connected, no stored token).
    needs_credential: bool,
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Self {
        Self {
            needs_credential: e.needs_user(),
            message: e.to_string(),
        }
    }
}

/// The upstreams' tool lists, fetched concurrently.
async fn lists(
    upstreams: &Arc<Upstreams>,
    user: &str,
    servers: &[&str],
) -> HashMap<String, Result<Vec<Value>, Failure>> {
    let fetches = servers.iter().map(|s| async move {
        let r = match upstreams.open_named(s, user).await {
            Ok(up) => client::list_tools(&up, user).await.map_err(|e| Failure {
                message: format!("server '{s}': {}", error_chain(&e)),
                needs_credential: false,
            }),
            Err(e) => Err(e.into()),
        };
        (s.to_string(), r)
    });
    join_all(fetches).await.into_iter().collect()
}

/// What a tool of a server the caller has not connected says first in its description.
pub fn needs_connection(server: &str) -> String {
    format!("Needs your own account at '{server}': call this tool to get the link to connect it.")
}

/// What a virtual server lists for a tool of a member the caller has not connected: the
/// tool by name, so clients find it, saying how to make it work (calling it answers the
/// connect prompt). The member's own description and schema come once it can be listed.
fn placeholder(name: &str, server: &str) -> Value {
    serde_json::json!({
        "name": name,
        "description": needs_connection(server),
        "inputSchema": {"type": "object"},
    })
}

/// The tools of `server` shown to a caller who has not connected it (see
/// [`super::snapshots`]): only those `access` lets through, by the same decision as a
/// relayed list, each description led by [`needs_connection`] (calling one answers the
/// connect prompt).
pub fn marked_for_unconnected(access: &Access, server: &str, mut tools: Vec<Value>) -> Vec<Value> {
    filter_listed(access, &mut tools);
    let note = needs_connection(server);
    for tool in &mut tools {
        let description = match tool.get("description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{note} {d}"),
            _ => note.clone(),
        };
        tool["description"] = Value::from(description);
    }
    tools
}

/// What `user` sees on the endpoint `access` describes.
pub async fn endpoint_tools(
    upstreams: &Arc<Upstreams>,
    user: &str,
    access: &Access,
) -> EndpointTools {
    let mut out = EndpointTools::default();
    match &access.virtual_server {
        None => {
            let mut listed = lists(upstreams, user, &[access.endpoint.as_str()]).await;
            match listed.remove(&access.endpoint) {
                Some(Ok(mut tools)) => {
                    filter_listed(access, &mut tools);
                    out.tools = tools
                        .into_iter()
                        .map(|tool| {
                            let name = tool["name"].as_str().unwrap_or_default().to_owned();
                            VisibleTool {
                                tool,
                                server: access.endpoint.clone(),
                                upstream_tool: name,
                            }
                        })
                        .collect();
                }
                Some(Err(e)) => out.errors.push(e.message),
                None => {}
            }
        }
        Some(vs) => {
            let servers: Vec<&str> = {
                let mut seen = std::collections::BTreeSet::new();
                vs.tools
                    .iter()
                    .map(|t| t.server.as_str())
                    .filter(|s| seen.insert(*s))
                    .collect()
            };
            let listed = lists(upstreams, user, &servers).await;
            for (_, r) in listed.iter() {
                if let Err(e) = r {
                    out.errors.push(e.message.clone());
                }
            }
            out.errors.sort();
            // Configured order, each tool only if the caller may use it and its upstream
            // lists it now (a tool removed upstream disappears instead of failing calls).
            for t in &vs.tools {
                let exposed = t.exposed_name();
                if access.tool(&exposed).is_none() {
                    continue;
                }
                let tools = match listed.get(&t.server) {
                    Some(Ok(tools)) => tools,
                    Some(Err(f)) if f.needs_credential => {
                        out.tools.push(VisibleTool {
                            tool: placeholder(&exposed, &t.server),
                            server: t.server.clone(),
                            upstream_tool: t.tool.clone(),
                        });
                        continue;
                    }
                    _ => continue,
                };
                let Some(found) = tools
                    .iter()
                    .find(|u| u.get("name").and_then(Value::as_str) == Some(&t.tool))
                else {
                    continue;
                };
                let mut tool = found.clone();
                tool["name"] = Value::from(exposed);
                if let Some(d) = &t.description {
                    tool["description"] = Value::from(d.as_str());
                }
                out.tools.push(VisibleTool {
                    tool,
                    server: t.server.clone(),
                    upstream_tool: t.tool.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Snapshot, Subject};
    use serde_json::json;

    #[test]
    fn unconnected_tools_are_marked_and_filtered_like_a_relayed_list() {
        let groups = serde_json::from_value(json!([{"name": "g", "servers": ["notes"],
            "members": {"everyone": true}, "tool_rules": {"notes": {"deny": ["secret_*"]}}}]))
        .unwrap();
        let access = Snapshot::new(vec![], groups, vec![])
            .access(
                &Subject {
                    user: "eve@x.io".into(),
                    groups: vec![],
                },
                "notes",
            )
            .unwrap();
        let listed = vec![
            json!({"name": "read", "description": "Reads a note.", "inputSchema": {"type": "object"}}),
            json!({"name": "secret_dump", "description": "Hidden.", "inputSchema": {"type": "object"}}),
            json!({"name": "bare", "inputSchema": {"type": "object"}}),
            json!({"name": "bad\u{202e}name", "inputSchema": {"type": "object"}}),
        ];
        let shown = marked_for_unconnected(&access, "notes", listed);
        assert_eq!(client::tool_names(&shown), ["read", "bare"]);
        let note = needs_connection("notes");
        assert_eq!(shown[0]["description"], format!("{note} Reads a note."));
        assert_eq!(shown[1]["description"], note);
        assert_eq!(shown[0]["inputSchema"], json!({"type": "object"}));
    }
}
