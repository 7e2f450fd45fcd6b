//! What this harness copies from `infra/template.yaml` (routes, function parameters) is
//! checked against the template itself, so the emulation cannot drift from what deploys.

use std::collections::HashMap;
use std::path::Path;

use super::aws::IdpParameters;
use super::routes::ROUTES;

/// The API resources of `infra/template.yaml`, read line by line (the template is
/// regular: two-space logical ids, `Key: value` properties, `DependsOn` lists): logical id,
/// first value of each property key, and the `DependsOn` entries.
struct TemplateResource {
    id: String,
    props: HashMap<String, String>,
    depends_on: Vec<String>,
}

fn template_resources() -> Vec<TemplateResource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
    let mut out: Vec<TemplateResource> = Vec::new();
    let mut in_resources = false;
    let mut in_depends = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            in_resources = line == "Resources:";
            continue;
        }
        if !in_resources {
            continue;
        }
        if line.starts_with("  ") && !line.starts_with("   ") {
            let id = trimmed.strip_suffix(':').expect("a logical id");
            out.push(TemplateResource {
                id: id.to_owned(),
                props: HashMap::new(),
                depends_on: Vec::new(),
            });
            in_depends = false;
            continue;
        }
        let res = out.last_mut().expect("a resource");
        if let Some(item) = trimmed.strip_prefix("- ") {
            if in_depends {
                res.depends_on.push(item.to_owned());
            }
            continue;
        }
        in_depends = trimmed == "DependsOn:";
        if let Some((k, v)) = trimmed.split_once(": ") {
            res.props
                .entry(k.to_owned())
                .or_insert_with(|| v.trim_matches('"').to_owned());
        }
    }
    out
}

/// The function an integration URI or target names.
fn function_named(value: &str) -> &'static str {
    [
        ("McpProxyFunction", "mcp-proxy"),
        ("OAuthCallbackFunction", "oauth-callback"),
        ("AdminApiFunction", "admin-api"),
    ]
    .into_iter()
    .find(|(id, _)| value.contains(&format!("{id}.Arn")))
    .unwrap_or_else(|| panic!("no function in {value}"))
    .1
}

/// `ROUTES` is the template's route table, for the REST API (resource tree + methods) and
/// the HTTP API (route keys) alike, and each API's deployment waits for all of its routes.
#[test]
fn routes_are_exactly_the_template_routes() {
    use std::collections::BTreeSet;
    let resources = template_resources();
    let of_type = |ty: &str| {
        resources
            .iter()
            .filter(|r| r.props.get("Type").map(String::as_str) == Some(ty))
            .collect::<Vec<_>>()
    };
    let expected: BTreeSet<(String, String, &str)> = ROUTES
        .iter()
        .flat_map(|r| {
            let methods = if r.methods.is_empty() {
                vec!["ANY"]
            } else {
                r.methods.to_vec()
            };
            methods
                .into_iter()
                .map(|m| (m.to_owned(), r.pattern.to_owned(), r.function))
        })
        .collect();

    // REST: each method's path is its resource's PathParts from the root.
    let parents: HashMap<&str, (&str, &str)> = of_type("AWS::ApiGateway::Resource")
        .iter()
        .map(|r| {
            let parent = r.props["ParentId"].as_str();
            let parent = parent.strip_prefix("!Ref ").unwrap_or("");
            (r.id.as_str(), (parent, r.props["PathPart"].as_str()))
        })
        .collect();
    let path_of = |resource: &str| {
        let mut parts = Vec::new();
        let mut id = resource.to_owned();
        while let Some((parent, part)) = parents.get(id.as_str()) {
            parts.push(*part);
            id = (*parent).to_owned();
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    };
    let methods = of_type("AWS::ApiGateway::Method");
    let rest: BTreeSet<(String, String, &str)> = methods
        .iter()
        .map(|m| {
            let resource = m.props["ResourceId"].trim_start_matches("!Ref ");
            (
                m.props["HttpMethod"].clone(),
                path_of(resource),
                function_named(&m.props["Uri"]),
            )
        })
        .collect();
    assert_eq!(rest, expected, "REST API methods");
    let deployments = of_type("AWS::ApiGateway::Deployment");
    assert_eq!(deployments.len(), 1);
    let waits: BTreeSet<&str> = deployments[0]
        .depends_on
        .iter()
        .map(String::as_str)
        .collect();
    let all: BTreeSet<&str> = methods.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        waits, all,
        "the REST deployment must depend on every method"
    );

    // HTTP API: route keys, targets through the integrations.
    let integrations: HashMap<&str, &str> = of_type("AWS::ApiGatewayV2::Integration")
        .iter()
        .map(|i| (i.id.as_str(), function_named(&i.props["IntegrationUri"])))
        .collect();
    let routes = of_type("AWS::ApiGatewayV2::Route");
    let http: BTreeSet<(String, String, &str)> = routes
        .iter()
        .map(|r| {
            let (method, path) = r.props["RouteKey"].split_once(' ').unwrap();
            let target = r.props["Target"]
                .trim_start_matches("!Sub ")
                .trim_matches('"')
                .trim_start_matches("integrations/${")
                .trim_end_matches('}');
            (method.to_owned(), path.to_owned(), integrations[target])
        })
        .collect();
    assert_eq!(http, expected, "HTTP API routes");
    let stages = of_type("AWS::ApiGatewayV2::Stage");
    assert_eq!(stages.len(), 1);
    let waits: BTreeSet<&str> = stages[0].depends_on.iter().map(String::as_str).collect();
    let all: BTreeSet<&str> = routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(waits, all, "the HTTP stage must depend on every route");
}

/// [`IdpParameters`] are the template's: each parameter sets its `MCPGW_IDP_*` variable on
/// every function (Globals), with the template's default, and nothing else does.
#[test]
fn idp_parameters_are_the_templates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let default_of = |param: &str| -> Option<String> {
        let at = lines.iter().position(|l| *l == format!("  {param}:"))?;
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("    "))
            .find_map(|l| l.trim().strip_prefix("Default: "))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let defaults = IdpParameters::default();
    let set: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("MCPGW_IDP_"))
        .collect();
    let expected: Vec<String> = defaults
        .parameters()
        .iter()
        .map(|(param, var, _)| format!("{var}: !Ref {param}"))
        .collect();
    assert_eq!(set, expected);
    for (param, _, default) in defaults.parameters() {
        assert_eq!(default_of(param).as_deref(), Some(default), "{param}");
    }
}

/// The egress parameters reach every function (Globals) as `MCPGW_EGRESS_*`, empty by
/// default (the policy's own defaults: loopback denied in Lambda).
#[test]
fn egress_parameters_are_the_templates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
    let set: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("MCPGW_EGRESS_"))
        .collect();
    assert_eq!(
        set,
        [
            "MCPGW_EGRESS_DENY: !Ref EgressDeny",
            "MCPGW_EGRESS_ALLOW: !Ref EgressAllow"
        ]
    );
    for param in ["EgressDeny", "EgressAllow"] {
        let at = text
            .find(&format!("\n  {param}:\n"))
            .unwrap_or_else(|| panic!("{param} is a parameter"));
        let block: String = text[at + 1..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .collect();
        assert!(block.contains("Default: \"\""), "{param}: {block}");
    }
}

/// The alarms and the dashboard name metrics the functions write: every metric of the EMF
/// namespace with exactly a dimension set an EMF line carries (CloudWatch finds a metric only
/// by its exact dimensions, so a typo would leave an alarm without data forever), the
/// namespace is the one the functions are given, and each alarm notifies the optional topic.
#[test]
fn alarms_and_dashboard_watch_metrics_the_gateway_writes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
    let emitted = mcpgw::metrics::emf::metric_dimensions();
    let known = |metric: &str, dims: &[String]| {
        emitted.iter().any(|(m, d)| {
            *m == metric && d.len() == dims.len() && d.iter().all(|x| dims.iter().any(|y| y == x))
        })
    };
    const NS: &str = "Namespace: !Sub \"MCPGateway/${AWS::StackName}\"";
    assert!(
        text.contains("MCPGW_METRICS_NAMESPACE: !Sub \"MCPGateway/${AWS::StackName}\""),
        "the functions write to the namespace the alarms read"
    );
    // Alarms, block by block.
    let lines: Vec<&str> = text.lines().collect();
    let mut alarms = 0;
    let mut watched = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() != "Type: AWS::CloudWatch::Alarm" {
            continue;
        }
        alarms += 1;
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.starts_with("   "))
            .map(|l| l.trim())
            .collect();
        assert!(
            block
                .iter()
                .any(|l| l.starts_with("AlarmActions: !If [HasAlarmTopic")),
            "alarm at line {i} notifies no topic"
        );
        if !block.contains(&NS) {
            continue;
        }
        let metric = block
            .iter()
            .find_map(|l| l.strip_prefix("MetricName: "))
            .expect("a metric");
        let dims: Vec<String> = block
            .iter()
            .filter_map(|l| l.strip_prefix("- Name: "))
            .map(str::to_owned)
            .collect();
        assert!(
            known(metric, &dims),
            "alarm on {metric} {dims:?}: no EMF line carries it"
        );
        watched.push(metric.to_owned());
    }
    assert!(alarms >= 6, "{alarms} alarms");
    for m in ["Refreshes", "AuditWriteFailures", "RateLimited"] {
        assert!(watched.iter().any(|w| w == m), "no alarm on {m}");
    }
    for m in ["5XXError", "5xx", "Throttles"] {
        assert!(
            text.contains(&format!("MetricName: {m}\n")),
            "no alarm on {m}"
        );
    }
    // The dashboard body: valid JSON once substituted, naming known metrics only.
    let start = text.find("DashboardBody: !Sub").expect("a dashboard");
    let body: String = text[start..]
        .lines()
        .skip(2)
        .take_while(|l| !l.trim_start().starts_with("- Ns:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("${Ns}", "NS")
        .replace("${AWS::Region}", "us-east-1")
        .replace("${McpProxyFunction}", "fn");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("the dashboard is JSON");
    let mut checked = 0;
    for w in doc["widgets"].as_array().expect("widgets") {
        let mut previous: Option<(String, Vec<String>)> = None;
        for row in w["properties"]["metrics"].as_array().expect("metrics") {
            let row: Vec<&serde_json::Value> = row.as_array().unwrap().iter().collect();
            let strings: Vec<&str> = row.iter().filter_map(|v| v.as_str()).collect();
            let (ns, metric, dims) = match strings.first() {
                Some(&"...") => {
                    let (m, d) = previous.clone().expect("... follows a metric");
                    ("NS".to_owned(), m, d)
                }
                Some(ns) if strings.len() >= 2 => {
                    let dims = strings[2..]
                        .iter()
                        .step_by(2)
                        .map(|s| s.to_string())
                        .collect();
                    (ns.to_string(), strings[1].to_owned(), dims)
                }
                // A search expression.
                _ => continue,
            };
            if ns == "NS" {
                assert!(
                    known(&metric, &dims),
                    "dashboard {metric} {dims:?}: no EMF line carries it"
                );
                checked += 1;
            }
            previous = Some((metric, dims));
        }
    }
    assert!(checked >= 15, "{checked}");
    let search = body.find("SEARCH(").expect("the errors search");
    assert!(body[search..].contains("reason} MetricName=\\\"Errors\\\""));
    assert!(known("Errors", &["reason".to_owned()]));
}
