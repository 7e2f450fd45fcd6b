//! The API Gateway side of the template: which API flavour, how each function is invoked
//! (buffered or streamed), and the route table ([`match_route`]).

use super::emulator::Emulator;

/// Which API Gateway flavour the fake speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKind {
    /// REST API, Lambda proxy integration (payload 1.0), URLs prefixed with the stage.
    Rest { stage: String },
    /// HTTP API, payload format 2.0, `$default` stage (no prefix). Cannot stream.
    Http,
}

/// How API Gateway invokes a function: Invoke (buffered JSON result) or
/// InvokeWithResponseStream (metadata prelude, then the body as it is produced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    Buffered,
    Stream,
}

/// Where one function's integration points.
#[derive(Debug, Clone)]
pub struct Integration {
    /// Base URL of the emulator serving the function (`http://127.0.0.1:PORT`).
    pub emulator: String,
    pub transfer: Transfer,
}

impl Integration {
    pub fn new(emulator: &Emulator, transfer: Transfer) -> Self {
        Self {
            emulator: format!("http://127.0.0.1:{}", emulator.port),
            transfer,
        }
    }
}

/// One route of `infra/template.yaml`: methods (empty = ANY), path pattern, function.
pub(super) struct Route {
    pub(super) methods: &'static [&'static str],
    pub(super) pattern: &'static str,
    pub(super) function: &'static str,
}

pub(super) const ROUTES: &[Route] = &[
    Route {
        methods: &["POST", "GET", "DELETE"],
        pattern: "/mcp/{endpoint}",
        function: "mcp-proxy",
    },
    Route {
        methods: &["GET"],
        pattern: "/.well-known/oauth-protected-resource/mcp/{endpoint}",
        function: "mcp-proxy",
    },
    Route {
        methods: &["GET"],
        pattern: "/oauth/connect/{server}",
        function: "oauth-callback",
    },
    Route {
        methods: &["GET"],
        pattern: "/oauth/callback/{server}",
        function: "oauth-callback",
    },
    Route {
        methods: &[],
        pattern: "/admin/{proxy+}",
        function: "admin-api",
    },
    // `{proxy+}` needs at least one segment: the bare `/me` is a route of its own.
    Route {
        methods: &[],
        pattern: "/me",
        function: "admin-api",
    },
    Route {
        methods: &[],
        pattern: "/me/{proxy+}",
        function: "admin-api",
    },
    // The web console, like `/me`: the bare path and everything under it.
    Route {
        methods: &[],
        pattern: "/console",
        function: "admin-api",
    },
    Route {
        methods: &[],
        pattern: "/console/{proxy+}",
        function: "admin-api",
    },
    Route {
        methods: &["GET"],
        pattern: "/healthz",
        function: "admin-api",
    },
];

/// A request matched to a route.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub function: &'static str,
    /// The resource (REST) or route key path (HTTP API), e.g. `/mcp/{endpoint}`.
    pub pattern: &'static str,
    /// Whether the route accepts any method (`ANY`).
    pub any_method: bool,
    /// The request path without the stage.
    pub path: String,
    pub params: Vec<(String, String)>,
}

/// Matches `path` (stage-less) and `method` against the template's routes.
pub fn match_route(method: &str, path: &str) -> Option<RouteMatch> {
    ROUTES.iter().find_map(|r| {
        if !r.methods.is_empty() && !r.methods.contains(&method) {
            return None;
        }
        let params = match_pattern(r.pattern, path)?;
        Some(RouteMatch {
            function: r.function,
            pattern: r.pattern,
            any_method: r.methods.is_empty(),
            path: path.to_owned(),
            params,
        })
    })
}

fn match_pattern(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let pat: Vec<&str> = pattern.split('/').skip(1).collect();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut params = Vec::new();
    for (i, p) in pat.iter().enumerate() {
        if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
            let rest = segs
                .get(i..)
                .filter(|r| !r.is_empty() && !r[0].is_empty())?;
            params.push((name.to_owned(), rest.join("/")));
            return Some(params);
        }
        let seg = segs.get(i)?;
        if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if seg.is_empty() {
                return None;
            }
            params.push((name.to_owned(), (*seg).to_owned()));
        } else if p != seg {
            return None;
        }
    }
    (segs.len() == pat.len()).then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_template() {
        let m = match_route("POST", "/mcp/everything").unwrap();
        assert_eq!(
            (m.function, m.pattern, m.params.clone()),
            (
                "mcp-proxy",
                "/mcp/{endpoint}",
                vec![("endpoint".into(), "everything".into())]
            )
        );
        let m = match_route("PATCH", "/admin/servers/echo").unwrap();
        assert_eq!(
            (m.function, m.any_method, m.params[0].1.as_str()),
            ("admin-api", true, "servers/echo")
        );
        assert_eq!(
            match_route("GET", "/healthz").unwrap().function,
            "admin-api"
        );
        assert_eq!(
            match_route("GET", "/.well-known/oauth-protected-resource/mcp/x")
                .unwrap()
                .function,
            "mcp-proxy"
        );
        assert_eq!(
            match_route("GET", "/oauth/callback/x").unwrap().function,
            "oauth-callback"
        );
        // The console's pages and forms reach the admin function.
        for (method, path) in [
            ("GET", "/console"),
            ("GET", "/console/login"),
            ("POST", "/console/admin/server-groups"),
        ] {
            assert_eq!(match_route(method, path).unwrap().function, "admin-api");
        }
        // GET /me (who am I) and its sub-resources both reach the admin API.
        let m = match_route("GET", "/me").unwrap();
        assert_eq!((m.function, m.pattern), ("admin-api", "/me"));
        assert!(m.params.is_empty());
        let m = match_route("GET", "/me/api-keys").unwrap();
        assert_eq!(
            (m.function, m.pattern, m.params[0].1.as_str()),
            ("admin-api", "/me/{proxy+}", "api-keys")
        );
        for (method, path) in [
            ("PUT", "/mcp/x"),
            ("POST", "/mcp/x/y"),
            ("GET", "/mcp/"),
            ("GET", "/admin"),
            ("GET", "/admin/"),
            ("GET", "/nope"),
        ] {
            assert!(match_route(method, path).is_none(), "{method} {path}");
        }
    }
}
