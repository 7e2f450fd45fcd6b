//! The access-control documents admins write: teams, MCP server groups (with per-server tool
//! rules) and virtual MCP servers. Plain types with the checks the value alone allows; checks
//! against other documents (does the server exist?) are the admin API's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::pattern::Pattern;
use crate::clock::UnixTime;
use crate::domain::validate_name;

/// Bounds that keep every document far below DynamoDB's 400 KB item limit.
pub const MAX_MEMBERS: usize = 1000;
pub const MAX_LIST: usize = 200;
const MAX_DESCRIPTION: usize = 1024;
const MAX_ENTRY: usize = 320;

/// An admin-managed team: explicit members plus the IdP groups that map onto it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Users by principal name (lowercase email, or `service:<name>`).
    #[serde(default)]
    pub members: Vec<String>,
    /// IdP groups (from the groups claim) whose members belong to the team.
    #[serde(default)]
    pub idp_groups: Vec<String>,
    #[serde(default)]
    pub created_at: UnixTime,
    #[serde(default)]
    pub updated_at: UnixTime,
}

/// Who may use a server group or a virtual server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    /// Every authenticated caller (service accounts included).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
}

/// Which tools of one server a group allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolRule {
    /// Only tools matching one of these.
    Allow(Vec<String>),
    /// Every tool except those matching one of these.
    Deny(Vec<String>),
}

impl ToolRule {
    pub fn patterns(&self) -> &[String] {
        match self {
            ToolRule::Allow(p) | ToolRule::Deny(p) => p,
        }
    }

    /// Whether the rule lets `tool` through. Evaluated on the name seen at call time.
    /// Allow rules match the name exactly as written; deny rules also match its folded
    /// spelling (`policy::spelling`), so `Delete_Repo` or a full-width `ｄｅｌｅｔｅ_ｒｅｐｏ`
    /// is denied with `delete_repo`: an upstream that normalizes names would run it.
    pub fn permits(&self, tool: &str) -> bool {
        match self {
            ToolRule::Allow(p) => p.iter().any(|p| Pattern::new(p).matches(tool)),
            ToolRule::Deny(p) => !p.iter().any(|p| Pattern::new(p).matches_any_spelling(tool)),
        }
    }
}

/// A named set of servers plus who may use them, with optional per-server tool rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Servers or virtual servers (one namespace).
    pub servers: Vec<String>,
    #[serde(default)]
    pub members: Members,
    /// Per server: allow or deny list. A server without one: all its tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_rules: BTreeMap<String, ToolRule>,
    #[serde(default)]
    pub created_at: UnixTime,
    #[serde(default)]
    pub updated_at: UnixTime,
}

/// One tool of a virtual server, picked from a registered server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualTool {
    pub server: String,
    /// The upstream's own name for it.
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl VirtualTool {
    /// The name clients see: the alias, else `{server}__{tool}` (stable across upstream
    /// order changes, and unambiguous because server names cannot contain `__`).
    pub fn exposed_name(&self) -> String {
        match &self.alias {
            Some(a) => a.clone(),
            None => format!("{}__{}", self.server, self.tool),
        }
    }
}

/// An endpoint composed of tools from several servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub tools: Vec<VirtualTool>,
    /// Servers whose resources are exposed whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources_from: Vec<String>,
    /// Servers whose prompts are exposed whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts_from: Vec<String>,
    #[serde(default)]
    pub members: Members,
    #[serde(default)]
    pub created_at: UnixTime,
    #[serde(default)]
    pub updated_at: UnixTime,
}

impl VirtualServer {
    /// Every upstream server this endpoint needs, each once, in first-use order.
    pub fn upstreams(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.tools
            .iter()
            .map(|t| t.server.as_str())
            .chain(self.resources_from.iter().map(String::as_str))
            .chain(self.prompts_from.iter().map(String::as_str))
            .filter(|s| seen.insert(*s))
            .collect()
    }

    /// The tool a client's name refers to.
    pub fn tool(&self, exposed: &str) -> Option<&VirtualTool> {
        self.tools.iter().find(|t| t.exposed_name() == exposed)
    }

    /// The first exposed name used twice, if any.
    pub fn collision(&self) -> Option<String> {
        let mut seen = BTreeSet::new();
        self.tools
            .iter()
            .map(VirtualTool::exposed_name)
            .find(|n| !seen.insert(n.clone()))
    }
}

/// A document that fails a check of its own: the message says which field and why.
pub type Invalid = String;

pub(crate) fn check_description(d: &Option<String>) -> Result<(), Invalid> {
    if d.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION) {
        return Err(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        ));
    }
    Ok(())
}

/// Non-empty, bounded, printable entries without duplicates.
pub(crate) fn check_list(what: &str, list: &[String], max: usize) -> Result<(), Invalid> {
    if list.len() > max {
        return Err(format!("{what} takes at most {max} entries"));
    }
    let mut seen = BTreeSet::new();
    for e in list {
        if e.is_empty() || e.len() > MAX_ENTRY || e.chars().any(char::is_control) {
            return Err(format!(
                "{what}: entries must be 1 to {MAX_ENTRY} printable characters"
            ));
        }
        if !seen.insert(e) {
            return Err(format!("{what}: '{e}' is listed twice"));
        }
    }
    Ok(())
}

fn check_names(what: &str, list: &[String], max: usize) -> Result<(), Invalid> {
    check_list(what, list, max)?;
    for n in list {
        validate_name(n).map_err(|m| format!("{what}: '{n}': {m}"))?;
    }
    Ok(())
}

/// Users are principal names: a lowercase email or `service:<name>`, so a rule can never
/// name someone in a spelling the gateway will not produce.
fn check_users(list: &[String]) -> Result<(), Invalid> {
    check_list("members.users", list, MAX_MEMBERS)?;
    for u in list {
        let service = u
            .strip_prefix(crate::identity::SERVICE_PREFIX)
            .is_some_and(|n| validate_name(n).is_ok());
        let email = u.contains('@') && !u.starts_with('@') && !u.ends_with('@');
        if (!service && !email) || *u != u.to_lowercase() || u.contains(char::is_whitespace) {
            return Err(format!(
                "members.users: '{u}' must be a lowercase email or service:<name>"
            ));
        }
    }
    Ok(())
}

impl Members {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_users(&self.users)?;
        check_names("members.teams", &self.teams, MAX_LIST)
    }
}

impl Team {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name).map_err(|m| format!("name: {m}"))?;
        check_description(&self.description)?;
        check_users(&self.members).map_err(|m| m.replacen("members.users", "members", 1))?;
        check_list("idp_groups", &self.idp_groups, MAX_LIST)
    }
}

impl ServerGroup {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name).map_err(|m| format!("name: {m}"))?;
        check_description(&self.description)?;
        if self.servers.is_empty() {
            return Err("servers must name at least one server".into());
        }
        check_names("servers", &self.servers, MAX_LIST)?;
        self.members.validate()?;
        for (server, rule) in &self.tool_rules {
            if !self.servers.contains(server) {
                return Err(format!(
                    "tool_rules: '{server}' is not one of this group's servers"
                ));
            }
            let what = format!("tool_rules.{server}");
            if rule.patterns().is_empty() {
                return Err(format!("{what}: the list must not be empty"));
            }
            check_list(&what, rule.patterns(), MAX_LIST)?;
            for p in rule.patterns() {
                Pattern::validate(p).map_err(|m| format!("{what}: '{p}': {m}"))?;
            }
        }
        Ok(())
    }
}

/// A tool name as an MCP server may give one (the 2025-11-25 spec's recommended charset,
/// plus `/` and `:` seen in the wild), bounded.
pub fn validate_tool_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("tool names are 1 to 128 of A-Z a-z 0-9 _ - . / :".into())
    }
}

impl VirtualServer {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name).map_err(|m| format!("name: {m}"))?;
        check_description(&self.description)?;
        if self.tools.is_empty() && self.resources_from.is_empty() && self.prompts_from.is_empty() {
            return Err("tools must pick at least one tool (or resources_from / prompts_from name a server)".into());
        }
        if self.tools.len() > MAX_LIST {
            return Err(format!("tools takes at most {MAX_LIST} entries"));
        }
        for (i, t) in self.tools.iter().enumerate() {
            validate_name(&t.server).map_err(|m| format!("tools[{i}].server: {m}"))?;
            validate_tool_name(&t.tool).map_err(|m| format!("tools[{i}].tool: {m}"))?;
            if let Some(a) = &t.alias {
                validate_tool_name(a).map_err(|m| format!("tools[{i}].alias: {m}"))?;
            }
            if t.description
                .as_ref()
                .is_some_and(|d| d.len() > MAX_DESCRIPTION)
            {
                return Err(format!(
                    "tools[{i}].description must be at most {MAX_DESCRIPTION} characters"
                ));
            }
        }
        let mut picked = BTreeSet::new();
        for t in &self.tools {
            if !picked.insert((&t.server, &t.tool)) {
                return Err(format!(
                    "tools: '{}' of '{}' is picked twice",
                    t.tool, t.server
                ));
            }
        }
        check_names("resources_from", &self.resources_from, MAX_LIST)?;
        check_names("prompts_from", &self.prompts_from, MAX_LIST)?;
        self.members.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(v: serde_json::Value) -> ServerGroup {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn interface_shapes_parse() {
        let g = group(json!({"name":"g","servers":["s1","s2"],
            "members":{"users":["a@x.io"],"teams":["eng"]},
            "tool_rules":{"s1":{"allow":["echo","get-*"]},"s2":{"deny":["delete_*"]}}}));
        assert!(g.validate().is_ok());
        assert!(g.tool_rules["s1"].permits("get-sum"));
        assert!(!g.tool_rules["s1"].permits("add"));
        assert!(g.tool_rules["s2"].permits("read"));
        assert!(!g.tool_rules["s2"].permits("delete_repo"));
        assert!(
            serde_json::from_value::<ServerGroup>(
                json!({"name":"g","servers":["s"],"tool_rules":{"s":{"allow":["a"],"deny":["b"]}}})
            )
            .is_err(),
            "allow and deny together"
        );
    }

    #[test]
    fn group_checks_name_each_problem() {
        let cases = [
            (json!({"name":"g","servers":[]}), "at least one"),
            (json!({"name":"g","servers":["s","s"]}), "twice"),
            (
                json!({"name":"g","servers":["s"],"tool_rules":{"t":{"allow":["a"]}}}),
                "not one of",
            ),
            (
                json!({"name":"g","servers":["s"],"tool_rules":{"s":{"allow":[]}}}),
                "empty",
            ),
            (
                json!({"name":"g","servers":["s"],"tool_rules":{"s":{"allow":["a b"]}}}),
                "'a b'",
            ),
            (
                json!({"name":"g","servers":["s"],"members":{"users":["Bob@x.io"]}}),
                "lowercase",
            ),
            (
                json!({"name":"g","servers":["s"],"members":{"users":["bob"]}}),
                "lowercase email",
            ),
            (json!({"name":"G","servers":["s"]}), "name:"),
        ];
        for (doc, want) in cases {
            let err = group(doc.clone()).validate().unwrap_err();
            assert!(err.contains(want), "{doc}: {err}");
        }
        assert!(
            group(json!({"name":"g","servers":["s"],"members":{"users":["service:ci"],"everyone":true}}))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn virtual_tool_names_are_stable_and_collisions_found() {
        let v: VirtualServer = serde_json::from_value(json!({"name":"combo","tools":[
            {"server":"everything","tool":"echo"},
            {"server":"py","tool":"whoami","alias":"who"},
            {"server":"py","tool":"echo","alias":"everything__echo"}]}))
        .unwrap();
        assert!(v.validate().is_ok());
        assert_eq!(v.tools[0].exposed_name(), "everything__echo");
        assert_eq!(v.tool("who").unwrap().tool, "whoami");
        assert_eq!(v.collision().as_deref(), Some("everything__echo"));
        assert_eq!(v.upstreams(), ["everything", "py"]);
    }
}
