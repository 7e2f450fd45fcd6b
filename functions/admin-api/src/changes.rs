//! Admin change records, in one place for every document route: each successful create,
//! replace or delete of a configuration document, API key, identity provider or access
//! document (from the API or the console, which calls these same routes) is recorded as an
//! `AdminChange` with who made it and the SHA-256 of the document's canonical JSON before and
//! after (`mcpgw::audit::events::admin_change`).
//!
//! The documents are read as the API shows them (`GET` on the same path, with the caller's
//! own identity), before and after the change: the hash is of what an admin can see and
//! compare, never of a secret (the API shows none, and an API key's creation answer, the one
//! place a key is shown, is never read for the record beyond its `id`).

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use mcpgw::audit::Actor;
use mcpgw::audit::events::{Action, admin_change};
use mcpgw::state::AppState;
use serde_json::Value;
use tower::ServiceExt;

use crate::ConsoleIdentity;

/// The collections whose documents are recorded, under `/admin` (and `/me` for API keys).
const DOCUMENTS: [&str; 7] = [
    "servers",
    "api-keys",
    "identity-providers",
    "teams",
    "server-groups",
    "virtual-servers",
    "rate-limits",
];

/// Largest creation answer read for the new document's name.
const MAX_CREATED_ANSWER: usize = 1024 * 1024;

/// What a request changes: the collection's path, the document's name (absent for a create:
/// read from the answer) and the action.
struct Change {
    collection: String,
    kind: String,
    name: Option<String>,
    action: Action,
}

/// The change `method` on `path` makes, if it is a document change.
fn change_of(method: &Method, path: &str) -> Option<Change> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (scope, kind, rest) = match segs.as_slice() {
        [scope @ ("admin" | "me"), kind, rest @ ..] if DOCUMENTS.contains(kind) => {
            (*scope, *kind, rest)
        }
        _ => return None,
    };
    if scope == "me" && kind != "api-keys" {
        return None;
    }
    let collection = format!("/{scope}/{kind}");
    let (name, action) = match (method, rest) {
        (&Method::POST, []) => (None, Action::Create),
        (&Method::PUT, [name]) => (Some(*name), Action::Replace),
        (&Method::DELETE, [name]) => (Some(*name), Action::Delete),
        // Re-discovery rewrites the server's pinned authorization server.
        (&Method::POST, [name, "discover"]) if kind == "servers" => (Some(*name), Action::Replace),
        _ => return None,
    };
    Some(Change {
        collection,
        kind: kind.trim_end_matches('s').replace('-', "_"),
        name: name.map(str::to_owned),
        action,
    })
}

/// `inner` with every document change recorded.
pub fn audited(inner: Router, state: AppState) -> Router {
    let reader = inner.clone();
    inner.layer(axum::middleware::from_fn(
        move |req: Request, next: axum::middleware::Next| {
            let (reader, state) = (reader.clone(), state.clone());
            async move {
                let Some(change) = change_of(req.method(), req.uri().path()) else {
                    return next.run(req).await;
                };
                let who = CallerOf::of(&req);
                // Who is asking is settled before the change runs: the change can remove the
                // very credential (a user deleting the key they call with), after which it
                // would no longer authenticate, and the change would go unrecorded.
                let actor = who.actor(&state).await;
                let before = match &change.name {
                    Some(name) => {
                        read(&reader, &who, &format!("{}/{name}", change.collection)).await
                    }
                    None => None,
                };
                let resp = next.run(req).await;
                if !resp.status().is_success() {
                    return resp;
                }
                let (resp, name) = match change.name.clone() {
                    Some(n) => (resp, Some(n)),
                    // API keys are addressed by id (their name is only a label).
                    None => {
                        created_name(
                            resp,
                            if change.kind == "api_key" {
                                "id"
                            } else {
                                "name"
                            },
                        )
                        .await
                    }
                };
                let Some(name) = name else {
                    return resp;
                };
                let after = match change.action {
                    Action::Delete => None,
                    Action::Create | Action::Replace => {
                        read(&reader, &who, &format!("{}/{name}", change.collection)).await
                    }
                };
                // A change that succeeded was made by an authenticated caller; should the
                // actor still be unknown (the key cache and store disagreeing), the change is
                // recorded all the same, by an unnamed actor.
                let actor = actor.unwrap_or_else(|| {
                    mcpgw::audit::events::actor_without_request("unknown", "unknown")
                });
                state.audit.emit(admin_change(
                    actor,
                    &change.kind,
                    &name,
                    change.action,
                    before.as_ref(),
                    after.as_ref(),
                ));
                resp
            }
        },
    ))
}

/// Who made a request: the console's in-process identity, or the request's credential.
#[derive(Clone)]
struct CallerOf {
    console: Option<ConsoleIdentity>,
    authorization: Option<axum::http::HeaderValue>,
}

impl CallerOf {
    fn of(req: &Request) -> Self {
        Self {
            console: req.extensions().get::<ConsoleIdentity>().cloned(),
            authorization: req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .cloned(),
        }
    }

    /// The actor, before the change runs (`None`: the credential is not accepted, and the
    /// change will be refused too).
    async fn actor(&self, state: &AppState) -> Option<Actor> {
        if let Some(ConsoleIdentity(p)) = &self.console {
            let mut a = Actor::of(p);
            a.auth = "console".into();
            return Some(a);
        }
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            self.authorization.clone()?,
        );
        state
            .auth
            .authenticate(&headers)
            .await
            .ok()
            .map(|p| Actor::of(&p))
    }
}

/// The document at `path` as `who` sees it, if it exists.
async fn read(reader: &Router, who: &CallerOf, path: &str) -> Option<Value> {
    let mut req = Request::get(path).body(Body::empty()).ok()?;
    if let Some(c) = &who.console {
        req.extensions_mut().insert(c.clone());
    }
    if let Some(a) = &who.authorization {
        req.headers_mut()
            .insert(axum::http::header::AUTHORIZATION, a.clone());
    }
    let resp = reader.clone().oneshot(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), MAX_CREATED_ANSWER)
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The member `key` (its name or id) of the document a create answered with, and the answer
/// rebuilt.
async fn created_name(resp: Response, key: &str) -> (Response, Option<String>) {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_CREATED_ANSWER).await else {
        return (Response::from_parts(parts, Body::empty()), None);
    };
    let name = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get(key).and_then(Value::as_str).map(str::to_owned));
    (Response::from_parts(parts, Body::from(bytes)), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_changes_are_told_apart_from_other_requests() {
        let c = change_of(&Method::PUT, "/admin/servers/s1").unwrap();
        assert_eq!((c.kind.as_str(), c.name.as_deref()), ("server", Some("s1")));
        assert_eq!(c.action, Action::Replace);
        let c = change_of(&Method::POST, "/me/api-keys").unwrap();
        assert_eq!((c.kind.as_str(), c.action), ("api_key", Action::Create));
        assert_eq!(c.collection, "/me/api-keys");
        let c = change_of(&Method::POST, "/admin/servers/s1/discover").unwrap();
        assert_eq!(c.action, Action::Replace);
        for (m, p) in [
            (Method::GET, "/admin/servers/s1"),
            (Method::POST, "/admin/servers/s1/other"),
            (Method::POST, "/me/servers"),
            (Method::DELETE, "/me/connections/s1"),
            (Method::POST, "/admin/audit"),
        ] {
            assert!(change_of(&m, p).is_none(), "{m} {p}");
        }
    }
}
