//! Page rendering: one layout, the page parts every console page shares, and the headers
//! every console page carries.
//!
//! Pages are `maud` templates: text put into a page is escaped by the template itself (there
//! is no way to insert unescaped text short of `PreEscaped`, which no page uses), so markup
//! in a server's description, a user's email or a query is shown as text. On top of that the
//! Content-Security-Policy allows no scripts at all (`default-src 'none'`), so even a missed
//! escape could not run code. The one stylesheet is served by the gateway itself.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// The signed-in user as the header shows them.
pub struct Nav<'a> {
    pub base: &'a str,
    pub user: &'a str,
    pub is_admin: bool,
    pub csrf: &'a str,
}

/// A console page.
pub struct Page<'a> {
    pub status: StatusCode,
    pub title: &'a str,
    pub body: Markup,
    pub nav: Option<Nav<'a>>,
    /// Origins forms on this page may submit to besides the gateway (the sign-in page's
    /// identity providers, reached through the gateway's redirect).
    pub form_targets: Vec<String>,
    /// Cookies to set with the page.
    pub cookies: Vec<String>,
}

impl<'a> Page<'a> {
    pub fn new(status: StatusCode, title: &'a str, body: Markup) -> Self {
        Self {
            status,
            title,
            body,
            nav: None,
            form_targets: Vec::new(),
            cookies: Vec::new(),
        }
    }

    pub fn with_nav(mut self, nav: Nav<'a>) -> Self {
        self.nav = Some(nav);
        self
    }

    fn html(&self, base: &str) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · MCP Gateway" }
                    link rel="stylesheet" href={ (base) "/console/assets/console.css" };
                }
                body {
                    header {
                        span class="brand" { "MCP Gateway" }
                        @if let Some(n) = &self.nav {
                            nav {
                                a id="nav-connections" href={ (n.base) "/console" } { "My connections" }
                                a id="nav-activity" href={ (n.base) "/console/activity" } { "My activity" }
                                @if n.is_admin {
                                    a id="nav-admin" href={ (n.base) "/console/admin" } { "Admin" }
                                }
                            }
                            div class="who" {
                                "Signed in as "
                                strong id="whoami" { (n.user) }
                                form id="logout" method="post" action={ (n.base) "/console/logout" } {
                                    (csrf_field(n.csrf))
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                    main {
                        h1 { (self.title) }
                        (self.body)
                    }
                }
            }
        }
    }

    pub fn render(self, base: &str) -> Response {
        let form_action = std::iter::once("'self'".to_owned())
            .chain(self.form_targets.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let csp = format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        let mut resp = (self.status, self.html(base).into_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        secure_headers(h);
        for c in &self.cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        resp
    }
}

/// Headers for every console answer, pages and redirects alike.
pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A 303 to `location` (after a form, the browser GETs the next page), setting `cookies`.
pub fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    secure_headers(h);
    resp
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A one-button form posting to `action`.
pub fn button_form(id: &str, action: &str, csrf: &str, label: &str, class: &str) -> Markup {
    html! {
        form id=(id) class="inline" method="post" action=(action) {
            (csrf_field(csrf))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A message box: `kind` is `error` or `notice`.
pub fn message(kind: &str, text: &str) -> Markup {
    let id = if kind == "error" { "error" } else { "flash" };
    html! { p id=(id) class=(kind) role="status" { (text) } }
}

/// The console's stylesheet, served from the gateway (no outside assets).
pub const STYLESHEET: &str = include_str!("console.css");

pub async fn stylesheet() -> Response {
    let mut resp = STYLESHEET.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Markup in any text a page shows is inert: the template escapes it.
    #[test]
    fn markup_in_text_is_inert() {
        let attack = r#"<img src=x onerror="a('b')">&"#;
        let page = Page::new(StatusCode::OK, attack, message("error", attack)).with_nav(Nav {
            base: "/prod",
            user: attack,
            is_admin: true,
            csrf: attack,
        });
        let out = page.html("/prod").into_string();
        let escaped = "&lt;img src=x onerror=&quot;a('b')&quot;&gt;&amp;";
        assert!(!out.contains("<img"), "{out}");
        assert_eq!(out.matches(escaped).count(), 5, "{out}");
        assert!(
            out.contains(&format!("name=\"csrf\" value=\"{escaped}\"")),
            "{out}"
        );
    }
}
