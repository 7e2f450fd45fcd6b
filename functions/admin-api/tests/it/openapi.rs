//! `/admin/openapi.json` describes exactly the router: every documented operation is routed,
//! every other method on a documented path is 405, every route in the sources is documented,
//! and only admins may read the document.

use crate::common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::*;
use serde_json::Value;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn document() -> Value {
    serde_json::from_str(admin_api::OPENAPI_DOCUMENT).expect("the document is JSON")
}

/// A concrete path for a templated one (`{name}` -> a name no document has).
fn concrete(path: &str) -> String {
    path.replace("{name}", "zz-none")
        .replace("{id}", "key_none")
        .replace("{user}", "nobody@example.com")
        .replace("{server}", "zz-none")
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_on_its_path() {
    let api = api();
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        let documented: BTreeSet<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        for method in METHODS {
            let (status, body) = api.admin(method, &concrete(path), None).await;
            if documented.contains(method) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                // a 404 here must be the handler's (an unknown document), not a missing route
                if status == StatusCode::NOT_FOUND {
                    assert_ne!(
                        body["error"]["message"], "no such route",
                        "{method} {path} is not routed"
                    );
                    assert!(path.contains('{'), "{method} {path}: {body}");
                }
                let documented_statuses =
                    ops[method.to_lowercase()]["responses"].as_object().unwrap();
                assert!(
                    documented_statuses.contains_key(status.as_str()),
                    "{method} {path} answered {status}, which the document does not list"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented: {body}"
                );
            }
        }
    }
}

#[test]
fn every_route_in_the_sources_is_documented() {
    let doc = document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut routed = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        // `console/` serves the web console's HTML pages, which are not part of the JSON API
        // this document describes (they call that API in-process).
        if path.is_dir() {
            assert_eq!(
                path.file_name().unwrap(),
                "console",
                "a new module folder: scan it"
            );
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // `.route("/path", ...)` literals, and the policy documents' `const PATH` (routed as
        // the collection and `{PATH}/{name}`)
        for (marker, item) in [
            (".route(\n            \"", false),
            (".route(\"", false),
            ("const PATH: &'static str = \"", true),
        ] {
            for piece in text.split(marker).skip(1) {
                let path = piece.split('"').next().unwrap().to_owned();
                if item {
                    routed.insert(format!("{path}/{{name}}"));
                }
                routed.insert(path);
            }
        }
    }
    assert!(routed.len() > 15, "the scan found routes: {routed:?}");
    let undocumented: Vec<_> = routed
        .iter()
        .filter(|p| !documented.contains(*p) && *p != "/healthz")
        .collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    let stale: Vec<_> = documented
        .iter()
        .filter(|p| !routed.contains(*p) && *p != "/healthz")
        .collect();
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");
}

#[tokio::test]
async fn only_admins_read_the_document() {
    let api = api();
    let (status, body) = api.admin("GET", "/admin/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, document());
    let (status, body) = api.call("GET", "/admin/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (_, key) = api
        .admin(
            "POST",
            "/admin/api-keys",
            Some(serde_json::json!({"owner": "u@example.com", "name": "k"})),
        )
        .await;
    let key = key["key"].as_str().unwrap();
    let (status, body) = api
        .call("GET", "/admin/openapi.json", Some(key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}
