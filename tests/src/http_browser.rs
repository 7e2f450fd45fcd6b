//! A browser without a renderer, for tests that need several browsers at once (two people's,
//! side by side): a reqwest client that follows no redirects by itself and keeps its own
//! cookie jar, so each step of a flow is a request the test makes and sees.
//!
//! The jar follows RFC 6265 as far as these tests need: host-only cookies (a `Domain`
//! attribute is not honoured; ports are no part of a cookie's scope, as in browsers), `Path`
//! matching, `Max-Age` and `Expires` (deletion included), and `Secure` cookies sent over
//! https only. Headless Chromium ([`crate::browser`]) is the browser of record; this is the
//! one whose every request a test can script.

use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use url::Url;

/// One stored cookie.
#[derive(Debug, Clone)]
pub struct Cookie {
    pub host: String,
    pub name: String,
    pub value: String,
    pub path: String,
    pub secure: bool,
    pub http_only: bool,
    /// `SameSite` as sent (`Lax`, `Strict`, `None`), if at all.
    pub same_site: Option<String>,
    /// Unix seconds; `None` for a session cookie.
    pub expires_at: Option<i64>,
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub status: u16,
    /// The redirect target, resolved against `url`.
    pub location: Option<String>,
    /// Every `Set-Cookie` header, as sent.
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Page {
    /// The text of the first element with `id="{id}"` (its direct text, unescaped `&amp;`).
    pub fn text_of(&self, id: &str) -> Option<String> {
        let after = self.body.split(&format!("id=\"{id}\"")).nth(1)?;
        let text = after.split_once('>')?.1.split('<').next()?;
        Some(text.replace("&amp;", "&"))
    }

    /// The `href` of the element with `id="{id}"`, resolved against the page's URL.
    pub fn link(&self, id: &str) -> Option<String> {
        let after = self.body.split(&format!("id=\"{id}\" href=\"")).nth(1)?;
        let href = after.split('"').next()?.replace("&amp;", "&");
        Url::parse(&self.url)
            .ok()?
            .join(&href)
            .ok()
            .map(|u| u.to_string())
    }
}

pub struct Browser {
    http: reqwest::Client,
    jar: Mutex<Vec<Cookie>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// RFC 6265 §5.1.4.
fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

/// RFC 6265 §5.1.4's default path: the request path up to its last `/`.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => request_path[..i].to_owned(),
    }
}

/// An HTTP date (`Thu, 01 Jan 1970 00:00:00 GMT`) as Unix seconds.
fn http_date(s: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s.trim(), &format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Parses one `Set-Cookie` received from `url`; `None` when it is malformed.
pub fn parse_set_cookie(url: &Url, header: &str) -> Option<Cookie> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.trim().split_once('=')?;
    if name.is_empty() {
        return None;
    }
    let mut c = Cookie {
        host: url.host_str()?.to_owned(),
        name: name.to_owned(),
        value: value.to_owned(),
        path: default_path(url.path()),
        secure: false,
        http_only: false,
        same_site: None,
        expires_at: None,
    };
    let mut max_age = None;
    for attr in parts {
        let (k, v) = attr
            .trim()
            .split_once('=')
            .map_or((attr.trim(), ""), |(k, v)| (k, v));
        match k.to_ascii_lowercase().as_str() {
            "path" if v.starts_with('/') => c.path = v.to_owned(),
            "secure" => c.secure = true,
            "httponly" => c.http_only = true,
            "samesite" => c.same_site = Some(v.to_owned()),
            "max-age" => max_age = v.parse::<i64>().ok(),
            "expires" => c.expires_at = http_date(v),
            _ => {}
        }
    }
    // Max-Age wins over Expires (RFC 6265 §5.3 step 3).
    if let Some(m) = max_age {
        c.expires_at = Some(now() + m);
    }
    Some(c)
}

impl Browser {
    pub fn new() -> Result<Self> {
        mcpgw::crypto::install_tls_provider();
        Ok(Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // Every peer of the tests is on loopback.
                .no_proxy()
                .timeout(std::time::Duration::from_secs(20))
                .build()?,
            jar: Mutex::new(Vec::new()),
        })
    }

    /// The cookies this browser holds now (expired ones dropped).
    pub fn cookies(&self) -> Vec<Cookie> {
        let t = now();
        let mut jar = self.jar.lock().unwrap();
        jar.retain(|c| c.expires_at.is_none_or(|e| e > t));
        jar.clone()
    }

    /// The cookie named `name`, if this browser holds it.
    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name == name)
    }

    fn cookie_header(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?;
        let https = url.scheme() == "https";
        let mut matching: Vec<Cookie> = self
            .cookies()
            .into_iter()
            .filter(|c| c.host == host && path_matches(&c.path, url.path()) && (https || !c.secure))
            .collect();
        // Longer paths first (RFC 6265 §5.4).
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        (!matching.is_empty()).then(|| {
            matching
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn store(&self, url: &Url, headers: &[String]) {
        let t = now();
        let mut jar = self.jar.lock().unwrap();
        for h in headers {
            let Some(c) = parse_set_cookie(url, h) else {
                continue;
            };
            jar.retain(|o| !(o.host == c.host && o.name == c.name && o.path == c.path));
            if c.expires_at.is_none_or(|e| e > t) {
                jar.push(c);
            }
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<Page> {
        let req = match self.cookie_header(url) {
            Some(c) => req.header(reqwest::header::COOKIE, c),
            None => req,
        };
        let r = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = r.status().as_u16();
        let set_cookies: Vec<String> = r
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        self.store(url, &set_cookies);
        let location = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .map(|u| u.to_string());
        Ok(Page {
            url: url.to_string(),
            status,
            location,
            set_cookies,
            body: r.text().await?,
        })
    }

    /// One GET, redirects not followed.
    pub async fn get(&self, url: &str) -> Result<Page> {
        self.get_with(url, None).await
    }

    /// One GET with `Authorization: Bearer {bearer}` (a CLI user's credential).
    pub async fn get_with(&self, url: &str, bearer: Option<&str>) -> Result<Page> {
        let u = Url::parse(url)?;
        let mut req = self.http.get(u.clone());
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        self.send(req, &u).await
    }

    /// One form POST (`application/x-www-form-urlencoded`), redirects not followed.
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<Page> {
        let u = Url::parse(url)?;
        self.send(self.http.post(u.clone()).form(form), &u).await
    }

    /// GETs `url` and follows every redirect as a browser does; at an OAuth authorization
    /// endpoint (`/auth` of the test provider) the user "types" `login` (added as
    /// `login_hint`, which `tests/peers/oidc_provider.mjs` logs in). The last page, and
    /// every URL requested in order.
    pub async fn follow(&self, url: &str, login: &str) -> Result<(Page, Vec<String>)> {
        let mut next = url.to_owned();
        let mut visited = Vec::new();
        for _ in 0..20 {
            let mut u = Url::parse(&next)?;
            if u.path().ends_with("/auth") && !u.query_pairs().any(|(k, _)| k == "login_hint") {
                u.query_pairs_mut().append_pair("login_hint", login);
            }
            visited.push(u.to_string());
            let page = self.get(u.as_str()).await?;
            match (&page.location, page.status) {
                (Some(l), 301 | 302 | 303 | 307 | 308) => next = l.clone(),
                _ => return Ok((page, visited)),
            }
        }
        bail!("too many redirects from {url}")
    }

    /// Signs this browser in to the gateway's console with an API key (the sign-in form,
    /// its login cookie and token, as a person pasting the key does).
    pub async fn sign_in_to_console(&self, base: &str, key: &str) -> Result<()> {
        let login = self.get(&format!("{base}/console/login")).await?;
        if login.status != 200 {
            bail!("console sign-in page: {}", login.status);
        }
        let token = self
            .cookie("mcpgw_console_login")
            .context("the sign-in page set its login cookie")?
            .value;
        let done = self
            .post_form(
                &format!("{base}/console/login"),
                &[("login_csrf", &token), ("key", key)],
            )
            .await?;
        if done.status != 303 || self.cookie("mcpgw_console").is_none() {
            bail!("console sign-in: {} {}", done.status, done.body);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_scoped_by_path_and_expire() {
        let u = Url::parse("http://127.0.0.1:1/prod/oauth/connect/x?link=1").unwrap();
        let c = parse_set_cookie(
            &u,
            "a=1; Path=/prod/oauth/; Max-Age=600; HttpOnly; SameSite=Lax",
        )
        .unwrap();
        assert_eq!(
            (c.path.as_str(), c.http_only, c.same_site.as_deref()),
            ("/prod/oauth/", true, Some("Lax"))
        );
        assert!(path_matches("/prod/oauth/", "/prod/oauth/callback/x"));
        assert!(!path_matches("/prod/oauth/", "/prod/mcp/x"));
        assert!(path_matches("/interaction/ab", "/interaction/ab"));
        assert!(!path_matches("/interaction/ab", "/interaction/abc"));
        assert_eq!(default_path("/a/b/c"), "/a/b");
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));

        let b = Browser::new().unwrap();
        b.store(&u, &["a=1; Path=/prod/oauth/; Max-Age=600".into()]);
        let cb = Url::parse("http://127.0.0.1:2/prod/oauth/callback/x").unwrap();
        assert_eq!(b.cookie_header(&cb).as_deref(), Some("a=1"));
        assert_eq!(
            b.cookie_header(&Url::parse("http://127.0.0.1:2/prod/mcp/x").unwrap()),
            None
        );
        // deleted by Max-Age=0, and by an Expires in the past
        b.store(&u, &["a=; Path=/prod/oauth/; Max-Age=0".into()]);
        assert_eq!(b.cookie_header(&cb), None);
        b.store(&u, &["b=2; Path=/".into()]);
        b.store(
            &u,
            &["b=; Path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT".into()],
        );
        assert!(b.cookies().is_empty());
        // Secure cookies only over https
        b.store(&u, &["s=1; Path=/; Secure".into()]);
        assert_eq!(b.cookie_header(&cb), None);
    }
}
