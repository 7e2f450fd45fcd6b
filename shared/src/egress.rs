//! One egress policy for every outbound request the gateway makes on someone else's say-so:
//! upstream MCP servers, OAuth metadata, token, revocation and registration endpoints, OIDC
//! discovery and JWKS. Every one of those URLs comes from an admin, an upstream or its
//! metadata, so none of them may make the gateway reach what only the gateway can reach (the
//! cloud metadata service, the Lambda Runtime API on loopback, link-local services).
//!
//! The rules, in order (the first that matches decides):
//!
//! 1. **Always denied**, whatever `MCPGW_EGRESS_ALLOW` says: the unspecified addresses
//!    (0.0.0.0/8, `::`), link-local (169.254.0.0/16, fe80::/10), the cloud metadata
//!    addresses in [`CLOUD_METADATA`], multicast (224.0.0.0/4, ff00::/8), the broadcast
//!    address 255.255.255.255 and the rest of the reserved 240.0.0.0/4.
//! 2. **`MCPGW_EGRESS_DENY`** (comma-separated CIDRs): denied. DENY wins over ALLOW.
//! 3. **Loopback** (127.0.0.0/8, `::1`): denied by default in Lambda (the Runtime API and
//!    extensions listen there), allowed by default in local mode (upstreams on the same
//!    machine are the normal case there). `MCPGW_EGRESS_ALLOW` re-admits loopback addresses
//!    it contains in Lambda.
//! 4. Everything else, the private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)
//!    included (VPC upstreams are normal): allowed.
//!
//! An IPv6 address that embeds an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//! `::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`) is judged as that
//! IPv4 address, so `[::ffff:169.254.169.254]` is link-local like its IPv4 spelling.
//!
//! Enforcement: [`EgressPolicy::client_builder`] is the one way the gateway builds an outbound
//! HTTP client. Its DNS resolver judges every address a name resolves to (a name is refused
//! when ANY of its addresses is denied: the answer is then either a mistake or hostile, and
//! which address a connection would use is not up to the gateway; refusing makes the outcome
//! the same on every connection), and a connector layer judges IP-literal destinations before
//! connecting (they bypass the resolver) and the connected peer address after every new
//! connection (a backstop for any path that bypasses the resolver). Every new connection is
//! judged on its own resolution, so DNS rebinding cannot turn an allowed name into a denied
//! address, and redirects are never followed. [`EgressPolicy::check_url`] is the same
//! judgement on a URL's literal host, for registration-time answers (422 naming the rule).
//!
//! Tests: the unit tests below (every class, non-canonical spellings as the `url` crate parses
//! them, CIDR parsing, precedence, Lambda and local defaults, proptest properties, the
//! resolver with a rebinding inner resolver, literals never contacted);
//! `functions/admin-api/tests/it/egress.rs` and `functions/mcp-proxy/tests/it/egress.rs` through the
//! gateway.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connection, HttpInfo};
pub use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The cloud metadata addresses, always denied (named in the denial, so an operator sees
/// why): AWS, GCP, Azure, OpenStack and DigitalOcean instance metadata (169.254.169.254),
/// the ECS task metadata and credentials endpoint (169.254.170.2), the EKS Pod Identity agent
/// (169.254.170.23, fd00:ec2::23), AWS instance metadata over IPv6 (fd00:ec2::254), Alibaba
/// Cloud (100.100.100.200, inside the otherwise allowed 100.64.0.0/10) and Oracle Cloud
/// (192.0.0.192). The link-local ones are denied as link-local anyway.
pub const CLOUD_METADATA: [IpAddr; 7] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
];

/// Which addresses the gateway may contact, and whether OAuth endpoints may be plain http.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressPolicy {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
    /// Loopback allowed without `allow` naming it (local mode).
    loopback_by_default: bool,
    plain_http: bool,
}

/// The rule that denied a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    /// Only `http` and `https` are ever fetched.
    Scheme(String),
    /// A URL without a host.
    NoHost,
    Unspecified,
    LinkLocal,
    CloudMetadata,
    Multicast,
    Broadcast,
    /// 240.0.0.0/4 apart from the broadcast address: not routable, never a real upstream.
    Reserved,
    /// Loopback in Lambda, not re-admitted by `MCPGW_EGRESS_ALLOW`.
    Loopback,
    /// In `MCPGW_EGRESS_DENY`.
    DenyList(IpNet),
    /// The connection's destination could not be read, so it is not made (fail closed).
    Unverifiable,
}

impl EgressRule {
    /// A stable name for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Scheme(_) => "scheme",
            Self::NoHost => "no_host",
            Self::Unspecified => "unspecified",
            Self::LinkLocal => "link_local",
            Self::CloudMetadata => "cloud_metadata",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::Loopback => "loopback",
            Self::DenyList(_) => "deny_list",
            Self::Unverifiable => "unverifiable",
        }
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scheme(s) => write!(f, "scheme '{s}' is not http or https"),
            Self::NoHost => f.write_str("the URL names no host"),
            Self::Unspecified => {
                f.write_str("unspecified addresses (0.0.0.0/8, ::) are always denied")
            }
            Self::LinkLocal => {
                f.write_str("link-local addresses (169.254.0.0/16, fe80::/10) are always denied")
            }
            Self::CloudMetadata => f.write_str("cloud metadata addresses are always denied"),
            Self::Multicast => {
                f.write_str("multicast addresses (224.0.0.0/4, ff00::/8) are always denied")
            }
            Self::Broadcast => f.write_str("the broadcast address is always denied"),
            Self::Reserved => f.write_str("reserved addresses (240.0.0.0/4) are always denied"),
            Self::Loopback => f.write_str(
                "loopback addresses are denied in Lambda unless MCPGW_EGRESS_ALLOW admits them",
            ),
            Self::DenyList(net) => write!(f, "{net} is in MCPGW_EGRESS_DENY"),
            Self::Unverifiable => f.write_str("the destination address could not be verified"),
        }
    }
}

/// A destination the policy refuses. `Display` names the destination (a host or address,
/// never a whole URL: a query string may carry a key) and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct EgressDenied {
    /// The host, address, or `name (address)` for a resolved name.
    pub target: String,
    /// The IPv4 address an IPv6 address embeds, when it was judged as that.
    pub judged_as: Option<Ipv4Addr>,
    pub rule: EgressRule,
}

impl fmt::Display for EgressDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "egress to {}", self.target)?;
        if let Some(v4) = self.judged_as {
            write!(f, " (judged as {v4})")?;
        }
        write!(f, " denied: {}", self.rule)
    }
}

impl EgressDenied {
    /// The first `EgressDenied` in `e`'s source chain: how a failed request tells a policy
    /// denial apart from an unreachable host.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressDenied> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(d) = err.downcast_ref::<EgressDenied>() {
                return Some(d);
            }
            cur = err.source();
        }
        None
    }
}

/// A comma-separated CIDR list that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("'{0}' is not a CIDR (expected e.g. 10.0.0.0/8, 192.168.1.5 or fd00::/8)")]
pub struct CidrError(pub String);

/// Parses `10.0.0.0/8, 192.168.1.5, fd00::/8`: CIDRs or single addresses, separated by
/// commas, blanks ignored. Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, CidrError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let net = if s.contains('/') {
                s.parse::<IpNet>().ok()
            } else {
                s.parse::<IpAddr>().ok().map(IpNet::from)
            };
            net.map(|n| n.trunc())
                .ok_or_else(|| CidrError(s.to_owned()))
        })
        .collect()
}

/// What an address is, for the rules above (loopback and ordinary are decided by the policy).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Always(EgressRule),
    Loopback,
    Ordinary,
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    if CLOUD_METADATA.contains(&IpAddr::V4(ip)) {
        Class::Always(EgressRule::CloudMetadata)
    } else if ip.octets()[0] == 0 {
        // 0.0.0.0/8: "this network"; 0.0.0.0 itself reaches the local host on Linux.
        Class::Always(EgressRule::Unspecified)
    } else if ip.is_link_local() {
        Class::Always(EgressRule::LinkLocal)
    } else if ip.is_broadcast() {
        Class::Always(EgressRule::Broadcast)
    } else if ip.is_multicast() {
        Class::Always(EgressRule::Multicast)
    } else if ip.octets()[0] >= 240 {
        Class::Always(EgressRule::Reserved)
    } else if ip.is_loopback() {
        Class::Loopback
    } else {
        Class::Ordinary
    }
}

/// The IPv4 address an IPv6 address stands for, when it embeds one: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`, except `::` and `::1`), IPv4-translated
/// (`::ffff:0:0:0/96`) and the NAT64 well-known prefix (`64:ff9b::/96`). A connection to any
/// of them can end at the IPv4 address (dual-stack sockets, SIIT, a NAT64 gateway in the VPC).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] => Some(v4),
        [0, 0, 0, 0, 0xffff, 0] => Some(v4),
        [0x64, 0xff9b, 0, 0, 0, 0] => Some(v4),
        [0, 0, 0, 0, 0, 0] if !ip.is_unspecified() && !ip.is_loopback() => Some(v4),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if CLOUD_METADATA.contains(&IpAddr::V6(ip)) {
        Class::Always(EgressRule::CloudMetadata)
    } else if ip.is_unspecified() {
        Class::Always(EgressRule::Unspecified)
    } else if ip.is_loopback() {
        Class::Loopback
    } else if let Some(v4) = embedded_ipv4(ip) {
        classify_v4(v4)
    } else if ip.is_unicast_link_local() {
        Class::Always(EgressRule::LinkLocal)
    } else if ip.is_multicast() {
        Class::Always(EgressRule::Multicast)
    } else {
        Class::Ordinary
    }
}

impl EgressPolicy {
    /// The defaults: loopback and plain http allowed locally, denied in Lambda; no DENY or
    /// ALLOW list.
    pub fn defaults(in_lambda: bool) -> Self {
        Self {
            deny: Vec::new(),
            allow: Vec::new(),
            loopback_by_default: !in_lambda,
            plain_http: !in_lambda,
        }
    }

    /// Adds `MCPGW_EGRESS_DENY` networks.
    pub fn deny(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.deny.extend(nets);
        self
    }

    /// Adds `MCPGW_EGRESS_ALLOW` networks.
    pub fn allow(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.allow.extend(nets);
        self
    }

    /// Sets `MCPGW_EGRESS_ALLOW_HTTP`.
    pub fn plain_http(mut self, allowed: bool) -> Self {
        self.plain_http = allowed;
        self
    }

    /// Whether plain http:// is acceptable for OAuth/OIDC endpoints (which carry secrets).
    pub fn allow_plain_http(&self) -> bool {
        self.plain_http
    }

    /// Judges one address (see the module doc for the rules).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => None,
        };
        let judged = embedded.map(IpAddr::V4).unwrap_or(ip);
        let denied = |rule| EgressDenied {
            target: ip.to_string(),
            judged_as: embedded,
            rule,
        };
        let class = match judged {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => classify_v6(v6),
        };
        let loopback = match class {
            Class::Always(rule) => return Err(denied(rule)),
            Class::Loopback => true,
            Class::Ordinary => false,
        };
        // Both spellings are matched, so a list may name either family.
        let listed = |nets: &[IpNet]| {
            nets.iter()
                .find(|n| n.contains(&ip) || n.contains(&judged))
                .copied()
        };
        if let Some(net) = listed(&self.deny) {
            return Err(denied(EgressRule::DenyList(net)));
        }
        if loopback && !self.loopback_by_default && listed(&self.allow).is_none() {
            return Err(denied(EgressRule::Loopback));
        }
        Ok(())
    }

    /// Host literal (IPv4 in any spelling the url crate canonicalizes, IPv6, v4-mapped) and
    /// scheme check; DNS names pass here and are checked on the resolved addresses at connect.
    /// `localhost` and `*.localhost` are judged as 127.0.0.1 (RFC 6761: they are loopback).
    pub fn check_url(&self, url: &url::Url) -> Result<(), EgressDenied> {
        let host_str = url.host_str().unwrap_or_default().to_owned();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressDenied {
                target: host_str,
                judged_as: None,
                rule: EgressRule::Scheme(url.scheme().to_owned()),
            });
        }
        let with_target = |mut e: EgressDenied| {
            e.target = host_str.clone();
            e
        };
        match url.host() {
            None => Err(EgressDenied {
                target: String::new(),
                judged_as: None,
                rule: EgressRule::NoHost,
            }),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)).map_err(with_target),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)).map_err(with_target),
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                        .map_err(with_target)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// [`check_url`](Self::check_url) on a string (an unparsable URL is the caller's own
    /// validation error, not an egress one: `Ok`).
    pub fn check_url_str(&self, raw: &str) -> Result<(), EgressDenied> {
        match url::Url::parse(raw) {
            Ok(u) => self.check_url(&u),
            Err(_) => Ok(()),
        }
    }

    /// The one way to start an outbound HTTP client: the policy on every connection (a
    /// resolver that judges every resolved address, a connector layer that judges IP
    /// literals before connecting and the peer after), redirects off (a redirect could carry
    /// a credential to another host, or point at a denied one), no proxy from the environment
    /// (a proxy would resolve and connect for the gateway, out of the policy's sight). Callers
    /// add timeouts and the like; they must not replace the resolver (the connector layer
    /// would still refuse a denied peer, but only after the TCP handshake).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        self.client_builder_with_resolver(Arc::new(SystemResolver))
    }

    /// [`client_builder`](Self::client_builder) with another resolver underneath the policy
    /// (tests inject a rebinding one); every address it answers is judged all the same.
    pub fn client_builder_with_resolver(&self, inner: Arc<dyn Resolve>) -> reqwest::ClientBuilder {
        crate::crypto::install_tls_provider();
        let policy = Arc::new(self.clone());
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
                inner,
            }))
            .connector_layer(GuardLayer { policy })
    }
}

/// The system resolver (getaddrinfo, through tokio's blocking pool), as reqwest's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Judges every address `inner` resolves a name to: any denied address refuses the name.
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    inner: Arc<dyn Resolve>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (policy, inner) = (self.policy.clone(), self.inner.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = inner.resolve(name).await?.collect();
            for a in &addrs {
                policy.check_ip(a.ip()).map_err(|mut e| {
                    e.target = format!("{host} ({})", a.ip());
                    e
                })?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The connector layer of [`EgressPolicy::client_builder`].
#[derive(Clone)]
struct GuardLayer {
    policy: Arc<EgressPolicy>,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardConnect<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GuardConnect {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
struct GuardConnect<S> {
    inner: S,
    policy: Arc<EgressPolicy>,
}

/// The destination URI of a connection. reqwest 0.12 hands connector layers its destination
/// as an opaque `Unnameable(Uri)` whose only public view is `Debug`, so it is read back from
/// that; if a reqwest upgrade changes the format, nothing connects (fail closed, and every
/// test of an allowed connection fails loudly) instead of IP literals going unchecked.
fn destination(req: &impl fmt::Debug) -> Option<http::Uri> {
    let shown = format!("{req:?}");
    let inner = shown.strip_prefix("Unnameable(")?.strip_suffix(')')?;
    inner.parse().ok()
}

/// The pre-connect judgement: IP-literal hosts (names are judged by the resolver).
fn check_destination(policy: &EgressPolicy, req: &impl fmt::Debug) -> Result<(), EgressDenied> {
    let unverifiable = || EgressDenied {
        target: "?".into(),
        judged_as: None,
        rule: EgressRule::Unverifiable,
    };
    let uri = destination(req).ok_or_else(unverifiable)?;
    let host = uri.host().ok_or_else(unverifiable)?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(ip) => policy.check_ip(ip),
        Err(_) => Ok(()),
    }
}

impl<S, R> tower::Service<R> for GuardConnect<S>
where
    S: tower::Service<R> + Clone + Send + 'static,
    S::Response: Connection + Send,
    S::Error: Into<BoxError>,
    S::Future: Send,
    R: fmt::Debug + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        if let Err(e) = check_destination(&self.policy, &req) {
            return Box::pin(std::future::ready(Err(Box::new(e) as BoxError)));
        }
        // The ready service answers this call; a clone waits for the next (tower's idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        Box::pin(async move {
            let conn = inner.call(req).await.map_err(Into::into)?;
            // The peer actually connected to, whatever path led there.
            let mut extras = http::Extensions::new();
            conn.connected().get_extras(&mut extras);
            let peer = extras.get::<HttpInfo>().map(|i| i.remote_addr().ip());
            match peer {
                Some(ip) => policy.check_ip(ip)?,
                None => {
                    return Err(Box::new(EgressDenied {
                        target: "?".into(),
                        judged_as: None,
                        rule: EgressRule::Unverifiable,
                    }) as BoxError);
                }
            }
            Ok(conn)
        })
    }
}

#[cfg(test)]
mod tests;
