//! The gateway as a client of upstream MCP servers, for its callers and for itself.
//!
//! - [`Upstreams`]: the service, built once per process (the upstream HTTP client, the grant
//!   service, what the process learned about upstreams): [`Upstreams::open`] makes an
//!   [`Upstream`], a server ready to call for one caller;
//! - [`credentials`]: which credential goes with the call (one `match` over the server's
//!   auth type) and the typed [`CredentialError`] when the caller lacks it;
//! - [`headers`](forwarded_request_headers): which inbound headers may travel upstream and
//!   which come back;
//! - [`handshakes`]: `initialize` and the `server/discover` probe;
//! - [`client`]: one request, one answer, whatever era the upstream speaks (virtual servers,
//!   the catalog, tool checks);
//! - [`catalog`]: the tools one caller sees on one endpoint;
//! - [`snapshots`]: the tools a caller who has not connected yet is shown.
//!
//! Every call goes through [`Upstream`]: the gateway's credential is added last (nothing from
//! the client replaces it), and an upstream 401 renews an OAuth2 token once and retries.

pub mod catalog;
pub mod client;
pub mod credentials;
pub mod handshakes;
mod headers;
pub mod snapshots;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use serde_json::{Value, json};

pub use credentials::{CredentialError, Credentials, SecretError, Unavailable};
pub use headers::{forwarded_request_headers, is_reserved_header, returned_response_headers};

use crate::config::Config;
use crate::domain::McpServer;
use crate::grants::Grants;
use crate::http::error_chain;
use crate::mcp::handshake::{self, CallError, Reply};
use crate::mcp::jsonrpc::Message;
use crate::mcp::memory::Memory;
use crate::servers::ServerCache;

/// Bound on detached calls (cancellations, answers to upstream requests, closing sessions) in
/// flight per process.
const MAX_PENDING_CANCELS: usize = 64;
/// Of those, how many may be for one server: an upstream that stalls them (or provokes
/// them, with a flood of requests the gateway refuses at once) cannot take every slot and
/// so have every other server's cancellations, answers to its requests (a user's
/// elicitation answer: its call would stall) and session ends dropped.
const MAX_PENDING_PER_SERVER: usize = 16;
/// How long one may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// The upstream service of one process.
pub struct Upstreams {
    /// Client for upstream MCP servers: built by the egress policy (every connection judged
    /// on its resolved address, redirects off: a redirect could carry the injected
    /// credential to another host), pooled, built once.
    http: reqwest::Client,
    grants: Arc<Grants>,
    servers: Arc<ServerCache>,
    /// What this process has learned about upstreams (eras, bridged sessions).
    memory: Arc<Memory>,
    /// Tool lists for callers not connected yet.
    snapshots: Arc<snapshots::Snapshots>,
    header_timeout: Duration,
    call_timeout: Duration,
    /// Detached cancellations in flight: a flood of abandoned calls to a slow upstream
    /// cannot pile up tasks.
    pending_cancels: Arc<tokio::sync::Semaphore>,
    /// The same, per server name ([`MAX_PENDING_PER_SERVER`]).
    pending_by_server: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Upstreams {
    pub fn new(
        config: &Config,
        http: reqwest::Client,
        grants: Arc<Grants>,
        servers: Arc<ServerCache>,
        memory: Arc<Memory>,
    ) -> Self {
        let snapshots = Arc::new(snapshots::Snapshots::new(
            grants.store.clone(),
            grants.clock.clone(),
        ));
        Self {
            http,
            grants,
            servers,
            memory,
            snapshots,
            header_timeout: config.upstream_header_timeout,
            call_timeout: config.upstream_call_timeout,
            pending_cancels: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_CANCELS)),
            pending_by_server: std::sync::Mutex::default(),
        }
    }

    /// `server` ready to call for `user`: its credential resolved now, and the deadline of
    /// the whole call set now (every wait of the request fits inside it, so in Lambda the
    /// client gets a JSON-RPC error rather than a function killed mid-request).
    pub async fn open(
        self: &Arc<Self>,
        server: Arc<McpServer>,
        user: &str,
    ) -> Result<Upstream, CredentialError> {
        let credentials = Credentials::resolve(&self.grants, &server, user).await?;
        Ok(Upstream {
            server,
            service: self.clone(),
            credentials,
            deadline: tokio::time::Instant::now() + self.call_timeout,
        })
    }

    /// The registered server `name` ready to call for `user`, or why not (for lists that
    /// report per server).
    pub async fn open_named(
        self: &Arc<Self>,
        name: &str,
        user: &str,
    ) -> Result<Upstream, OpenError> {
        let server = self
            .servers
            .get(name)
            .await
            .map_err(|e| OpenError::Store(error_chain(&e)))?
            .ok_or_else(|| OpenError::NotRegistered(name.to_owned()))?;
        self.open(server, user)
            .await
            .map_err(|e| OpenError::Credential(name.to_owned(), e))
    }

    /// What this process has learned about upstreams.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Tool lists for callers not connected yet.
    pub fn snapshots(&self) -> &Arc<snapshots::Snapshots> {
        &self.snapshots
    }

    /// The grant service (whose announcements say when a caller connected).
    pub fn grants(&self) -> &Arc<Grants> {
        &self.grants
    }

    /// How long one call may take in all.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }
}

/// Why a named upstream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("server '{0}' is not registered")]
    NotRegistered(String),
    #[error("{0}")]
    Store(String),
    #[error("server '{0}': {1}")]
    Credential(String, #[source] CredentialError),
}

impl OpenError {
    /// Whether the caller can fix this themselves (see [`CredentialError::needs_user`]).
    pub fn needs_user(&self) -> bool {
        match self {
            Self::Credential(_, e) => e.needs_user(),
            Self::NotRegistered(_) | Self::Store(_) => false,
        }
    }
}

/// Which credential `user`'s calls at `server` use, for the audit record: its kind and, for
/// a grant, its id (`user/server`, or `machine/server` for the gateway's own), never a value.
pub fn credential_use(server: &McpServer, user: &str) -> crate::audit::CredentialUse {
    use crate::domain::UpstreamAuth;
    let name = &server.name;
    let (kind, grant) = match &server.auth {
        UpstreamAuth::None => ("none", None),
        UpstreamAuth::Header { .. } => ("header", None),
        UpstreamAuth::PerUserToken { .. } => ("per_user_token", Some(format!("{user}/{name}"))),
        UpstreamAuth::OAuth2 { .. } => ("oauth2", Some(format!("{user}/{name}"))),
        UpstreamAuth::OAuth2ClientCredentials { .. } => {
            ("oauth2_client_credentials", Some(format!("machine/{name}")))
        }
    };
    crate::audit::CredentialUse {
        kind: kind.into(),
        grant,
    }
}

/// A server whose credential is ready: everything needed to call it for one caller.
#[derive(Clone)]
pub struct Upstream {
    pub server: Arc<McpServer>,
    service: Arc<Upstreams>,
    credentials: Credentials,
    /// When the whole call must be over, set when the upstream is opened.
    deadline: tokio::time::Instant,
}

impl Upstream {
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Which credential `user`'s calls here use, for the audit record: its kind and, for an
    /// OAuth grant, the grant's id (`user/server`, or `machine/server` for the gateway's
    /// own), never a value.
    pub fn credential_use(&self, user: &str) -> crate::audit::CredentialUse {
        credential_use(&self.server, user)
    }

    /// What this process has learned about upstreams.
    pub fn memory(&self) -> &Memory {
        &self.service.memory
    }

    /// When the whole call must be over.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// How long the whole call may take (the deadline's length).
    pub fn call_timeout(&self) -> Duration {
        self.service.call_timeout
    }

    /// Request headers: `extra` (transport headers the gateway chose or let through), the
    /// request's W3C trace context (the gateway's span as the parent; see `trace`), then the
    /// gateway's credential, which nothing from the client can replace.
    pub fn headers(&self, extra: HeaderMap) -> HeaderMap {
        let mut h = extra;
        crate::trace::current_upstream_headers(&mut h);
        h.extend(self.credentials.headers());
        h
    }

    /// Session-era transport headers for an upstream session.
    pub fn session_headers(&self, session_id: Option<&str>, version: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(s).ok()) {
            h.insert("mcp-session-id", sid);
        }
        if let Ok(v) = HeaderValue::from_str(version) {
            h.insert("mcp-protocol-version", v);
        }
        h
    }

    /// The wait allowed for the next answer: the header timeout, within the call deadline.
    fn timeout(&self) -> Duration {
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        self.service.header_timeout.min(left)
    }

    /// Sends with `send` (given the request headers: `extra`, then the gateway's credential,
    /// and the wait allowed); when the upstream refused the gateway's token (401), once more
    /// after one renewal. Every call the gateway makes to an upstream goes through this.
    async fn call<T, Fut>(
        &self,
        extra: &HeaderMap,
        send: impl Fn(HeaderMap, Duration) -> Fut,
    ) -> Result<T, CallError>
    where
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let once = || send(self.headers(extra.clone()), self.timeout());
        match once().await {
            Err(CallError::Auth(401))
                if self
                    .credentials
                    .renew(&self.service.grants, &self.server)
                    .await =>
            {
                once().await
            }
            other => other,
        }
    }

    /// A call the gateway makes on its own account (handshakes).
    pub async fn exchange(&self, extra: HeaderMap, message: &Value) -> Result<Reply, CallError> {
        let http = &self.service.http;
        self.call(&extra, |headers, wait| {
            handshake::exchange(http, self.url(), headers, message, wait)
        })
        .await
    }

    /// A call the gateway makes with a client's message (its `initialize`, a virtual
    /// server's routed call): the message as parsed and authorized, re-serialized.
    pub async fn exchange_message(
        &self,
        extra: HeaderMap,
        message: &Message,
    ) -> Result<Reply, CallError> {
        let http = &self.service.http;
        self.call(&extra, |headers, wait| {
            handshake::exchange_message(http, self.url(), headers, message, wait)
        })
        .await
    }

    /// Sends a client's message (or a GET/DELETE) and returns the upstream's response with
    /// its body unread.
    pub async fn send(
        &self,
        method: Method,
        extra: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, CallError> {
        let accept = if method == Method::GET {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        };
        self.call(&extra, |mut headers, wait| {
            headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
            let mut request = self
                .service
                .http
                .request(method.clone(), self.url())
                .headers(headers);
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            handshake::send(request, wait)
        })
        .await
    }

    /// Tells a session-era upstream that a request was abandoned (best effort, detached).
    pub fn cancel_later(&self, headers: HeaderMap, request_id: Value, reason: &'static str) {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": reason}});
        self.post_later(headers, note, "could not cancel an upstream request");
    }

    /// Posts a message into an upstream session (a notification, or the answer to a request
    /// the upstream made), best effort, detached; `failure` is logged when it fails.
    pub fn post_later(&self, headers: HeaderMap, message: Value, failure: &'static str) {
        let (http, url) = (self.service.http.clone(), self.server.url.clone());
        self.detached(headers, failure, move |headers| async move {
            handshake::exchange(&http, &url, headers, &message, CANCEL_TIMEOUT)
                .await
                .map(drop)
        });
    }

    /// Ends an upstream session with `DELETE` (best effort, detached).
    pub fn close_later(&self, headers: HeaderMap) {
        let (http, url) = (self.service.http.clone(), self.server.url.clone());
        self.detached(
            headers,
            "could not close an upstream session",
            move |headers| async move {
                http.delete(&url)
                    .headers(headers)
                    .timeout(CANCEL_TIMEOUT)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| CallError::Transport(e.without_url()))
            },
        );
    }

    /// Runs `send` (given the headers with the gateway's credential) detached. At most
    /// [`MAX_PENDING_CANCELS`] run at once per process, [`MAX_PENDING_PER_SERVER`] of them
    /// for this server, each for at most [`CANCEL_TIMEOUT`].
    fn detached<F, Fut>(&self, headers: HeaderMap, failure: &'static str, send: F)
    where
        F: FnOnce(HeaderMap) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), CallError>> + Send + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let for_server = self
            .service
            .pending_by_server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.server.name.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_PER_SERVER)))
            .clone();
        let (Ok(server_permit), Ok(permit)) = (
            for_server.try_acquire_owned(),
            self.service.pending_cancels.clone().try_acquire_owned(),
        ) else {
            tracing::debug!(server = %self.server.name,
                "too many detached upstream messages; one dropped: {failure}");
            return;
        };
        let headers = self.headers(headers);
        rt.spawn(async move {
            let _permits = (server_permit, permit);
            if let Err(e) = send(headers).await {
                tracing::debug!(error = %error_chain(&e), "{failure}");
            }
        });
    }
}
