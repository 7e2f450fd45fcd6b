//! Access control: what a caller may see and call. One decision function,
//! [`Snapshot::access`] then [`Access::tool`], serves `tools/list` filtering, `tools/call`
//! enforcement, virtual-server routing and the effective catalog, so listing and calling can
//! never decide differently.
//!
//! Semantics (docs/access-control.md): default deny; a caller may use an endpoint when a
//! server group listing it admits them (users, teams, everyone) or, for a virtual server, its
//! own member list does; the tools they see are the union of what each admitting grant allows.
//! Rules are evaluated on the name seen at call time, never resolved at configuration time.
//! Allow rules match names exactly; deny rules also match a name's folded spelling
//! ([`spelling`]); names with control or format characters are refused outright. Tool rules
//! govern tools only: prompts and resources follow endpoint access (and a virtual server's
//! `prompts_from` / `resources_from`).

pub mod cache;
pub mod model;
pub mod pattern;
pub mod spelling;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use model::{Members, ServerGroup, Team, ToolRule, VirtualServer, VirtualTool};

use crate::identity::Principal;

/// The facts about a caller that decisions read: its principal name and IdP groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user: String,
    pub groups: Vec<String>,
}

impl From<&Principal> for Subject {
    fn from(p: &Principal) -> Self {
        Self {
            user: p.user.clone(),
            groups: p.groups.clone(),
        }
    }
}

/// Every access-control document at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub teams: Vec<Team>,
    pub groups: Vec<ServerGroup>,
    pub virtual_servers: BTreeMap<String, Arc<VirtualServer>>,
    /// Digest of all documents, to tell a changed policy from a re-read of the same one.
    pub digest: String,
}

/// Where a permitted tool call goes: the upstream server and its own name for the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRoute<'a> {
    pub server: &'a str,
    pub tool: &'a str,
}

/// What one caller may do on one endpoint (the caller may use it at all: otherwise there is
/// no `Access`).
#[derive(Debug, Clone)]
pub struct Access {
    pub endpoint: String,
    /// One entry per admitting grant: `None` allows every tool, `Some(rule)` what it permits.
    grants: Vec<Option<ToolRule>>,
    /// Set when the endpoint is a virtual server.
    pub virtual_server: Option<Arc<VirtualServer>>,
}

impl Access {
    /// Whether no tool rule restricts this caller. Lists are filtered all the same: names
    /// with control or format characters are refused for everyone ([`Access::tool`]).
    pub fn unrestricted(&self) -> bool {
        self.virtual_server.is_none() && self.grants.iter().any(Option::is_none)
    }

    fn permits(&self, exposed: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.as_ref().is_none_or(|r| r.permits(exposed)))
    }

    /// THE decision: the tool a caller's name refers to on this endpoint, if the caller may
    /// use it. `None` must be answered exactly like an unknown tool. A name with a control
    /// or format character is refused whatever the rules say ([`spelling::has_forbidden`]):
    /// no tool needs one, and an upstream that strips them would run another tool.
    pub fn tool<'a>(&'a self, exposed: &'a str) -> Option<ToolRoute<'a>> {
        if spelling::has_forbidden(exposed) || !self.permits(exposed) {
            return None;
        }
        match &self.virtual_server {
            None => Some(ToolRoute {
                server: &self.endpoint,
                tool: exposed,
            }),
            Some(vs) => vs.tool(exposed).map(|t| ToolRoute {
                server: &t.server,
                tool: &t.tool,
            }),
        }
    }
}

impl Members {
    fn admits(&self, subject: &Subject, teams: &BTreeSet<&str>) -> bool {
        self.everyone
            || self.users.contains(&subject.user)
            || self.teams.iter().any(|t| teams.contains(t.as_str()))
    }
}

impl Snapshot {
    /// Builds a snapshot (and its digest) from the documents.
    pub fn new(teams: Vec<Team>, groups: Vec<ServerGroup>, virtuals: Vec<VirtualServer>) -> Self {
        // Timestamps are not policy: a re-save of the same rules is no change.
        let canonical = serde_json::json!({
            "t": teams.iter().map(|t| (&t.name, &t.members, &t.idp_groups)).collect::<Vec<_>>(),
            "g": groups.iter().map(|g| (&g.name, &g.servers, &g.members, &g.tool_rules)).collect::<Vec<_>>(),
            "v": virtuals.iter().map(|v| (&v.name, &v.tools, &v.resources_from, &v.prompts_from, &v.members)).collect::<Vec<_>>(),
        });
        let digest = crate::crypto::sha256_hex(canonical.to_string().as_bytes());
        Self {
            teams,
            groups,
            virtual_servers: virtuals
                .into_iter()
                .map(|v| (v.name.clone(), Arc::new(v)))
                .collect(),
            digest,
        }
    }

    /// The caller's teams: explicit membership or a mapped IdP group.
    pub fn teams_of(&self, subject: &Subject) -> BTreeSet<&str> {
        self.teams
            .iter()
            .filter(|t| {
                t.members.contains(&subject.user)
                    || t.idp_groups.iter().any(|g| subject.groups.contains(g))
            })
            .map(|t| t.name.as_str())
            .collect()
    }

    /// What `subject` may do on `endpoint`; `None` when it may not use it (answer as if the
    /// endpoint did not exist).
    pub fn access(&self, subject: &Subject, endpoint: &str) -> Option<Access> {
        let teams = self.teams_of(subject);
        self.access_with(subject, &teams, endpoint)
    }

    fn access_with(
        &self,
        subject: &Subject,
        teams: &BTreeSet<&str>,
        endpoint: &str,
    ) -> Option<Access> {
        let virtual_server = self.virtual_servers.get(endpoint).cloned();
        let mut grants: Vec<Option<ToolRule>> = self
            .groups
            .iter()
            .filter(|g| g.servers.iter().any(|s| s == endpoint) && g.members.admits(subject, teams))
            .map(|g| g.tool_rules.get(endpoint).cloned())
            .collect();
        if let Some(vs) = &virtual_server
            && vs.members.admits(subject, teams)
        {
            grants.push(None);
        }
        if grants.is_empty() {
            return None;
        }
        Some(Access {
            endpoint: endpoint.to_owned(),
            grants,
            virtual_server,
        })
    }

    /// Whether `endpoint` is one the policy grants to anyone (a server in a group, or a
    /// virtual server): the names worth telling apart in sampled denial records (any other
    /// name is the caller's invention).
    pub fn names_endpoint(&self, endpoint: &str) -> bool {
        self.virtual_servers.contains_key(endpoint)
            || self
                .groups
                .iter()
                .any(|g| g.servers.iter().any(|s| s == endpoint))
    }

    /// Every endpoint `subject` may use, by name. Names of servers that no longer exist are
    /// the caller's to drop (the snapshot holds no servers).
    pub fn endpoints(&self, subject: &Subject) -> Vec<Access> {
        let teams = self.teams_of(subject);
        let names: BTreeSet<&str> = self
            .groups
            .iter()
            .flat_map(|g| g.servers.iter().map(String::as_str))
            .chain(self.virtual_servers.keys().map(String::as_str))
            .collect();
        names
            .into_iter()
            .filter_map(|n| self.access_with(subject, &teams, n))
            .collect()
    }

    /// Every upstream server `subject` reaches: endpoints it may use directly, and the
    /// servers behind the virtual servers it may use (whose credentials, such as a per-user
    /// grant, it therefore needs). Names of deleted servers are the caller's to drop.
    pub fn reachable_servers(&self, subject: &Subject) -> BTreeSet<String> {
        self.endpoints(subject)
            .into_iter()
            .flat_map(|a| match &a.virtual_server {
                Some(vs) => vs.upstreams().into_iter().map(str::to_owned).collect(),
                None => vec![a.endpoint],
            })
            .collect()
    }

    /// Groups and virtual servers that name `server` (for refusing its deletion).
    pub fn referrers_of_server(&self, server: &str) -> Vec<String> {
        let groups = self
            .groups
            .iter()
            .filter(|g| g.servers.iter().any(|s| s == server))
            .map(|g| format!("server group '{}'", g.name));
        let virtuals = self
            .virtual_servers
            .values()
            .filter(|v| v.upstreams().contains(&server))
            .map(|v| format!("virtual server '{}'", v.name));
        groups.chain(virtuals).collect()
    }

    /// Groups and virtual servers whose members name `team`.
    pub fn referrers_of_team(&self, team: &str) -> Vec<String> {
        let groups = self
            .groups
            .iter()
            .filter(|g| g.members.teams.iter().any(|t| t == team))
            .map(|g| format!("server group '{}'", g.name));
        let virtuals = self
            .virtual_servers
            .values()
            .filter(|v| v.members.teams.iter().any(|t| t == team))
            .map(|v| format!("virtual server '{}'", v.name));
        groups.chain(virtuals).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot() -> Snapshot {
        let teams: Vec<Team> = serde_json::from_value(json!([
            {"name":"eng","members":["bob@x.io"],"idp_groups":["engineering"]},
            {"name":"ops","members":["carol@x.io"]},
        ]))
        .unwrap();
        let groups: Vec<ServerGroup> = serde_json::from_value(json!([
            {"name":"g1","servers":["everything"],"members":{"teams":["eng"]},
             "tool_rules":{"everything":{"allow":["echo","get-*"]}}},
            {"name":"g2","servers":["everything","py"],"members":{"users":["carol@x.io"]},
             "tool_rules":{"everything":{"deny":["get-*"]}}},
            {"name":"g3","servers":["combo"],"members":{"teams":["ops"]},
             "tool_rules":{"combo":{"allow":["say"]}}},
        ]))
        .unwrap();
        let virtuals: Vec<VirtualServer> = serde_json::from_value(json!([
            {"name":"combo","tools":[{"server":"everything","tool":"echo","alias":"say"},
                                     {"server":"py","tool":"whoami"}],
             "members":{"users":["dave@x.io"]}},
        ]))
        .unwrap();
        Snapshot::new(teams, groups, virtuals)
    }

    fn subject(user: &str, groups: &[&str]) -> Subject {
        Subject {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn reachable_servers_include_those_behind_virtual_servers() {
        let s = snapshot();
        let names = |u: &str| {
            s.reachable_servers(&subject(u, &[]))
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(names("bob@x.io"), ["everything"]);
        assert_eq!(names("dave@x.io"), ["everything", "py"]);
        // ops reaches combo through a group: its upstreams, not the name "combo".
        assert_eq!(names("carol@x.io"), ["everything", "py"]);
        assert!(names("eve@x.io").is_empty());
    }

    #[test]
    fn default_deny_and_teams_from_members_or_idp_groups() {
        let s = snapshot();
        assert!(s.access(&subject("eve@x.io", &[]), "everything").is_none());
        assert!(s.access(&subject("eve@x.io", &[]), "nowhere").is_none());
        let alice = subject("alice@x.io", &["engineering"]);
        assert_eq!(s.teams_of(&alice).into_iter().collect::<Vec<_>>(), ["eng"]);
        let a = s.access(&alice, "everything").unwrap();
        assert!(a.tool("echo").is_some() && a.tool("get-sum").is_some());
        assert!(a.tool("add").is_none());
        assert!(s.access(&alice, "py").is_none());
    }

    #[test]
    fn tools_are_the_union_of_admitting_groups() {
        let s = snapshot();
        // carol: g2 (deny get-*) on everything; bob+carol would union allow and deny.
        let carol = subject("carol@x.io", &["engineering"]);
        let a = s.access(&carol, "everything").unwrap();
        assert!(a.tool("add").is_some(), "g2 allows all but get-*");
        assert!(
            a.tool("get-sum").is_some(),
            "g1 (via engineering) allows get-*"
        );
        assert!(!a.unrestricted());
        let only_g2 = s.access(&subject("carol@x.io", &[]), "everything").unwrap();
        assert!(only_g2.tool("get-sum").is_none());
        assert!(
            s.access(&subject("carol@x.io", &[]), "py")
                .unwrap()
                .unrestricted()
        );
    }

    #[test]
    fn virtual_servers_route_and_hide() {
        let s = snapshot();
        let dave = s.access(&subject("dave@x.io", &[]), "combo").unwrap();
        assert_eq!(
            dave.tool("say"),
            Some(ToolRoute {
                server: "everything",
                tool: "echo"
            })
        );
        assert_eq!(
            dave.tool("py__whoami"),
            Some(ToolRoute {
                server: "py",
                tool: "whoami"
            })
        );
        assert!(
            dave.tool("echo").is_none(),
            "upstream names are not exposed names"
        );
        assert!(
            dave.tool("everything__echo").is_none(),
            "an alias replaces the default name"
        );
        // carol reaches combo through g3, whose rule allows only `say`.
        let carol = s.access(&subject("carol@x.io", &[]), "combo").unwrap();
        assert!(carol.tool("say").is_some());
        assert!(carol.tool("py__whoami").is_none());
        let names: Vec<_> = s
            .endpoints(&subject("carol@x.io", &[]))
            .into_iter()
            .map(|a| a.endpoint)
            .collect();
        assert_eq!(names, ["combo", "everything", "py"]);
    }

    /// One server, `gh`, whose tools are ruled by `rule` for everyone.
    fn ruled(rule: serde_json::Value) -> Access {
        let groups: Vec<ServerGroup> = serde_json::from_value(json!([
            {"name":"g","servers":["gh"],"members":{"everyone":true},"tool_rules":{"gh":rule}},
        ]))
        .unwrap();
        let s = Snapshot::new(vec![], groups, vec![]);
        s.access(&subject("eve@x.io", &[]), "gh").unwrap()
    }

    /// Spellings of `delete_repo` an upstream that lowercases, NFKC-normalizes and trims
    /// would run as `delete_repo`, one per class.
    const VARIANTS: &[(&str, &str)] = &[
        ("case", "Delete_Repo"),
        ("all caps", "DELETE_REPO"),
        ("trailing space", "delete_repo "),
        ("leading tab", "\tdelete_repo"),
        ("inner space", "delete _repo"),
        ("no-break space", "delete\u{a0}_repo"),
        ("ideographic space", "delete_repo\u{3000}"),
        ("full-width", "ｄｅｌｅｔｅ_ｒｅｐｏ"),
        ("full-width, mixed case", "Ｄｅｌｅｔｅ＿Ｒｅｐｏ"),
        ("mathematical bold", "𝐝𝐞𝐥𝐞𝐭𝐞_𝐫𝐞𝐩𝐨"),
        ("combining accent", "de\u{301}lete_repo"),
        ("zero-width space", "delete\u{200b}_repo"),
        ("zero-width joiner", "del\u{200d}ete_repo"),
        ("byte order mark", "\u{feff}delete_repo"),
        ("right-to-left override", "delete_repo\u{202e}"),
        ("soft hyphen", "delete\u{ad}_repo"),
        ("NUL", "delete_repo\u{0}"),
        ("newline", "delete_repo\n"),
        ("escape", "delete\u{1b}_repo"),
        ("C1 control", "delete\u{85}_repo"),
    ];

    #[test]
    fn deny_rules_refuse_every_spelling_of_a_denied_tool() {
        for rule in [
            json!({"deny":["delete_repo"]}),
            json!({"deny":["delete_*"]}),
        ] {
            let a = ruled(rule.clone());
            assert!(a.tool("delete_repo").is_none(), "{rule}");
            for (class, name) in VARIANTS {
                assert!(
                    a.tool(name).is_none(),
                    "{rule}: {class} {name:?} was allowed"
                );
            }
            // Baseline: other tools, and names that merely resemble the denied one, pass.
            for ok in [
                "echo",
                "get-sum",
                "delete-repo",
                "undelete_repo",
                "Echo",
                "résumé",
            ] {
                assert_eq!(a.tool(ok).map(|r| r.tool), Some(ok), "{rule}: {ok}");
            }
        }
        assert!(
            ruled(json!({"deny":["delete_repo"]}))
                .tool("delete_repos")
                .is_some()
        );
        assert!(
            ruled(json!({"deny":["delete_*"]}))
                .tool("delete_repos")
                .is_none()
        );
    }

    #[test]
    fn allow_rules_stay_exact() {
        let a = ruled(json!({"allow":["echo", "get-*"]}));
        assert!(a.tool("echo").is_some() && a.tool("get-sum").is_some());
        for other in [
            "Echo",
            "ECHO",
            "echo ",
            "ｅｃｈｏ",
            "Get-sum",
            "get\u{200b}-sum",
        ] {
            assert!(
                a.tool(other).is_none(),
                "{other:?} is not a name the rule lists"
            );
        }
    }

    #[test]
    fn names_with_control_or_format_characters_are_refused_for_everyone() {
        // carol's g2 access to `py` has no tool rule at all.
        let s = snapshot();
        let open = s.access(&subject("carol@x.io", &[]), "py").unwrap();
        assert!(open.unrestricted());
        assert!(open.tool("whoami").is_some() && open.tool("who ami").is_some());
        for bad in [
            "who\u{0}ami",
            "whoami\n",
            "who\u{7f}ami",
            "\u{85}whoami",
            "who\u{200b}ami",
            "whoami\u{202e}",
            "\u{feff}whoami",
            "who\u{2066}ami",
        ] {
            assert!(open.tool(bad).is_none(), "{bad:?}");
        }
        let vs = s.access(&subject("dave@x.io", &[]), "combo").unwrap();
        assert!(vs.tool("say").is_some() && vs.tool("say\u{200b}").is_none());
    }

    #[test]
    fn digest_ignores_timestamps_and_sees_rules() {
        let a = snapshot();
        let mut teams = a.teams.clone();
        teams[0].updated_at = 99;
        let b = Snapshot::new(teams.clone(), a.groups.clone(), vec![]);
        let c = Snapshot::new(a.teams.clone(), a.groups.clone(), vec![]);
        assert_eq!(b.digest, c.digest);
        teams[0].members.push("zed@x.io".into());
        assert_ne!(
            Snapshot::new(teams, a.groups.clone(), vec![]).digest,
            c.digest
        );
    }

    #[test]
    fn referrers() {
        let s = snapshot();
        assert_eq!(
            s.referrers_of_server("py"),
            ["server group 'g2'", "virtual server 'combo'"]
        );
        assert_eq!(s.referrers_of_team("ops"), ["server group 'g3'"]);
        assert!(s.referrers_of_team("nobody").is_empty());
    }
}
