//! Page rendering: one layout, escaping, and the headers every console page carries.
//!
//! Nothing is rendered from input without [`escape`]; the only script-capable sources the
//! Content-Security-Policy allows are none at all (`default-src 'none'`), so even a missed
//! escape could not run code. The one stylesheet is served by the gateway itself.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
    pub body: String,
    pub nav: Option<Nav<'a>>,
    /// Origins forms on this page may submit to besides the gateway (the sign-in page's
    /// identity providers, reached through the gateway's redirect).
    pub form_targets: Vec<String>,
    /// Cookies to set with the page.
    pub cookies: Vec<String>,
}

impl<'a> Page<'a> {
    pub fn new(status: StatusCode, title: &'a str, body: String) -> Self {
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

    fn html(&self, base: &str) -> String {
        let nav = match &self.nav {
            None => String::new(),
            Some(n) => {
                let admin = if n.is_admin {
                    format!(
                        "<a id=\"nav-admin\" href=\"{b}/console/admin\">Admin</a>",
                        b = n.base
                    )
                } else {
                    String::new()
                };
                format!(
                    "<nav><a id=\"nav-connections\" href=\"{b}/console\">My connections</a>{admin}</nav>\
                     <div class=\"who\">Signed in as <strong id=\"whoami\">{user}</strong>\
                     <form id=\"logout\" method=\"post\" action=\"{b}/console/logout\">{csrf}\
                     <button type=\"submit\">Sign out</button></form></div>",
                    b = n.base,
                    user = escape(n.user),
                    csrf = csrf_field(n.csrf),
                )
            }
        };
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{t} · MCP Gateway</title>\
             <link rel=\"stylesheet\" href=\"{base}/console/assets/console.css\"></head>\
             <body><header><span class=\"brand\">MCP Gateway</span>{nav}</header>\
             <main><h1>{t}</h1>{body}</main></body></html>",
            t = escape(self.title),
            body = self.body,
        )
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
        let mut resp = (self.status, self.html(base)).into_response();
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
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(token)
    )
}

/// A one-button form posting to `action` (already escaped where it holds names).
pub fn button_form(id: &str, action: &str, csrf: &str, label: &str, class: &str) -> String {
    format!(
        "<form id=\"{id}\" class=\"inline\" method=\"post\" action=\"{action}\">{}\
         <button type=\"submit\" class=\"{class}\">{}</button></form>",
        csrf_field(csrf),
        escape(label),
        id = escape(id),
    )
}

/// A message box: `kind` is `error` or `notice`.
pub fn message(kind: &str, text: &str) -> String {
    let id = if kind == "error" { "error" } else { "flash" };
    format!(
        "<p id=\"{id}\" class=\"{kind}\" role=\"status\">{}</p>",
        escape(text)
    )
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

    #[test]
    fn markup_in_text_is_inert() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
    }
}
