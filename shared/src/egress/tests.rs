//! The egress policy's rules on addresses and URLs, and the client it builds on real loopback
//! connections: attack and baseline side by side.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn local() -> EgressPolicy {
    EgressPolicy::defaults(false)
}

fn lambda() -> EgressPolicy {
    EgressPolicy::defaults(true)
}

fn nets(s: &str) -> Vec<IpNet> {
    parse_cidrs(s).unwrap()
}

/// The rule name `policy` denies `url` with, or "allowed".
fn verdict(policy: &EgressPolicy, url: &str) -> String {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    match policy.check_url(&u) {
        Ok(()) => "allowed".into(),
        Err(e) => e.rule.name().into(),
    }
}

// ------------------------------------------------------------------------------- the rules

#[test]
fn every_always_denied_class_is_denied_in_both_modes_and_allow_cannot_readmit_it() {
    let everything = nets("0.0.0.0/0, ::/0");
    let cases = [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("169.254.0.1", "link_local"),
        ("169.254.255.255", "link_local"),
        ("fe80::1", "link_local"),
        ("febf::1", "link_local"),
        ("169.254.169.254", "cloud_metadata"),
        ("169.254.170.2", "cloud_metadata"),
        ("169.254.170.23", "cloud_metadata"),
        ("fd00:ec2::254", "cloud_metadata"),
        ("fd00:ec2::23", "cloud_metadata"),
        ("100.100.100.200", "cloud_metadata"),
        ("192.0.0.192", "cloud_metadata"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        // Embedded IPv4 is judged as that IPv4.
        ("::ffff:169.254.169.254", "cloud_metadata"),
        ("::ffff:a9fe:1", "link_local"),
        ("64:ff9b::a9fe:a9fe", "cloud_metadata"),
        ("::ffff:0:e000:1", "multicast"),
        ("::169.254.1.1", "link_local"),
        ("::ffff:0.0.0.0", "unspecified"),
    ];
    for policy in [
        local(),
        lambda(),
        lambda().allow(everything.clone()),
        local().allow(everything.clone()),
    ] {
        for (addr, rule) in cases {
            let e = policy.check_ip(ip(addr)).expect_err(addr);
            assert_eq!(e.rule.name(), rule, "{addr}: {e}");
        }
    }
    // Baseline: public and private unicast addresses pass in both modes.
    for policy in [local(), lambda()] {
        for addr in [
            "93.184.215.14",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.201",
            "169.253.255.255",
            "169.255.0.1",
            "fd12:3456::1",
            "fd00:ec2::253",
            "2606:4700::1111",
            "::ffff:10.0.0.1",
            "64:ff9b::808:808",
        ] {
            assert!(policy.check_ip(ip(addr)).is_ok(), "{addr}");
        }
    }
}

#[test]
fn loopback_is_denied_in_lambda_and_allowed_locally_and_allow_readmits_it_in_lambda() {
    for addr in [
        "127.0.0.1",
        "127.255.0.9",
        "::1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
    ] {
        assert!(local().check_ip(ip(addr)).is_ok(), "{addr}");
        let e = lambda().check_ip(ip(addr)).expect_err(addr);
        assert_eq!(e.rule, EgressRule::Loopback, "{addr}");
    }
    let admitted = lambda().allow(nets("127.0.0.0/8"));
    assert!(admitted.check_ip(ip("127.0.0.1")).is_ok());
    assert!(
        admitted.check_ip(ip("::ffff:127.0.0.1")).is_ok(),
        "judged as its IPv4"
    );
    assert_eq!(
        admitted.check_ip(ip("::1")).unwrap_err().rule,
        EgressRule::Loopback,
        "::1 is not in 127.0.0.0/8"
    );
    let narrow = lambda().allow(nets("127.0.0.1"));
    assert!(narrow.check_ip(ip("127.0.0.1")).is_ok());
    assert!(narrow.check_ip(ip("127.0.0.2")).is_err());
}

#[test]
fn deny_wins_over_allow_and_private_ranges_are_deniable() {
    let p = lambda()
        .deny(nets("10.0.0.0/8, 127.0.0.2, fd00::/8"))
        .allow(nets("10.1.0.0/16, 127.0.0.0/8"));
    assert_eq!(
        p.check_ip(ip("10.1.2.3")).unwrap_err().rule,
        EgressRule::DenyList("10.0.0.0/8".parse().unwrap()),
        "DENY wins over ALLOW"
    );
    assert_eq!(
        p.check_ip(ip("::ffff:10.9.9.9")).unwrap_err().rule.name(),
        "deny_list",
        "the IPv4 rule matches the mapped spelling"
    );
    assert_eq!(
        p.check_ip(ip("127.0.0.2")).unwrap_err().rule.name(),
        "deny_list",
        "DENY wins over ALLOW for loopback too"
    );
    assert!(
        p.check_ip(ip("127.0.0.1")).is_ok(),
        "ALLOW re-admits loopback"
    );
    assert_eq!(
        p.check_ip(ip("fd12::1")).unwrap_err().rule.name(),
        "deny_list"
    );
    // Baseline: what no list names keeps its default.
    assert!(p.check_ip(ip("192.168.0.1")).is_ok());
    assert!(p.check_ip(ip("8.8.8.8")).is_ok());
    // DENY denies loopback locally too.
    assert!(
        local()
            .deny(nets("127.0.0.0/8"))
            .check_ip(ip("127.0.0.1"))
            .is_err()
    );
}

#[test]
fn non_canonical_spellings_are_judged_as_the_address_the_url_crate_makes_of_them() {
    // (URL, host the url crate canonicalizes it to, rule in Lambda, rule locally)
    let cases = [
        ("http://127.1/", "127.0.0.1", "loopback", "allowed"),
        ("http://2130706433/", "127.0.0.1", "loopback", "allowed"),
        ("http://0x7f000001/", "127.0.0.1", "loopback", "allowed"),
        ("http://017700000001/", "127.0.0.1", "loopback", "allowed"),
        ("http://0x7f.0.0.1/", "127.0.0.1", "loopback", "allowed"),
        ("http://127.0.0.1./", "127.0.0.1", "loopback", "allowed"),
        (
            "http://[::ffff:127.0.0.1]/",
            "[::ffff:7f00:1]",
            "loopback",
            "allowed",
        ),
        (
            "http://[::ffff:7f00:1]/",
            "[::ffff:7f00:1]",
            "loopback",
            "allowed",
        ),
        ("http://[::1]/", "[::1]", "loopback", "allowed"),
        ("http://[::]/", "[::]", "unspecified", "unspecified"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified", "unspecified"),
        ("http://0/", "0.0.0.0", "unspecified", "unspecified"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            "cloud_metadata",
            "cloud_metadata",
        ),
        (
            "http://2852039166/",
            "169.254.169.254",
            "cloud_metadata",
            "cloud_metadata",
        ),
        (
            "http://0xa9fea9fe/",
            "169.254.169.254",
            "cloud_metadata",
            "cloud_metadata",
        ),
        (
            "http://0251.0376.0251.0376/",
            "169.254.169.254",
            "cloud_metadata",
            "cloud_metadata",
        ),
        (
            "http://[::ffff:a9fe:a9fe]/",
            "[::ffff:a9fe:a9fe]",
            "cloud_metadata",
            "cloud_metadata",
        ),
        (
            "http://[fd00:ec2::254]/",
            "[fd00:ec2::254]",
            "cloud_metadata",
            "cloud_metadata",
        ),
        ("http://[fe80::1]/", "[fe80::1]", "link_local", "link_local"),
        ("https://LOCALHOST./x", "localhost.", "loopback", "allowed"),
        (
            "https://api.localhost/x",
            "api.localhost",
            "loopback",
            "allowed",
        ),
        // Baseline: DNS names are judged when resolved, not here.
        (
            "https://mcp.example.com/mcp",
            "mcp.example.com",
            "allowed",
            "allowed",
        ),
        ("http://10.0.0.7:8080/mcp", "10.0.0.7", "allowed", "allowed"),
    ];
    for (url, host, in_lambda, locally) in cases {
        let u = url::Url::parse(url).unwrap();
        assert_eq!(u.host_str(), Some(host), "{url}");
        assert_eq!(verdict(&lambda(), url), in_lambda, "{url} in Lambda");
        assert_eq!(verdict(&local(), url), locally, "{url} locally");
    }
}

#[test]
fn only_http_and_https_with_a_host_are_fetched() {
    for (url, rule) in [
        ("ftp://example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:25/", "scheme"),
        ("javascript:alert(1)", "scheme"),
    ] {
        assert_eq!(verdict(&local(), url), rule, "{url}");
    }
    assert_eq!(verdict(&local(), "https://example.com"), "allowed");
}

#[test]
fn a_denial_names_the_host_and_the_rule_never_the_url_path_or_query() {
    let u = url::Url::parse("http://[::ffff:169.254.169.254]/latest?key=s3cr3t").unwrap();
    let e = lambda().check_url(&u).unwrap_err();
    let shown = e.to_string();
    assert_eq!(
        shown,
        "egress to [::ffff:a9fe:a9fe] (judged as 169.254.169.254) denied: cloud metadata addresses are always denied"
    );
    assert!(!shown.contains("s3cr3t") && !shown.contains("latest"));
    let e = lambda()
        .deny(nets("10.0.0.0/8"))
        .check_ip(ip("10.2.3.4"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "egress to 10.2.3.4 denied: 10.0.0.0/8 is in MCPGW_EGRESS_DENY"
    );
}

#[test]
fn cidr_lists_parse_blanks_and_single_addresses_and_refuse_the_rest() {
    assert_eq!(
        parse_cidrs(" 10.1.2.3/8 ,, 192.168.1.5, fd00::/8 ,::1").unwrap(),
        vec![
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "192.168.1.5/32".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]
    );
    assert!(parse_cidrs("").unwrap().is_empty());
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "example.com",
        "10.0.0.0/8/8",
        "10.0.0",
        "10.0.0.0/",
        "/8",
        "127.1",
    ] {
        assert_eq!(
            parse_cidrs(&format!("10.0.0.0/8,{bad}")).unwrap_err(),
            CidrError(bad.into()),
            "{bad}"
        );
    }
}

#[test]
fn plain_http_follows_the_mode_and_the_setting() {
    assert!(local().allow_plain_http());
    assert!(!lambda().allow_plain_http());
    assert!(lambda().plain_http(true).allow_plain_http());
    assert!(!local().plain_http(false).allow_plain_http());
}

#[test]
fn the_connector_reads_its_destination_and_fails_closed_when_it_cannot() {
    #[derive(Debug)]
    #[allow(dead_code)]
    struct Unnameable(http::Uri);
    let p = lambda();
    let dest = |s: &str| Unnameable(s.parse().unwrap());
    assert_eq!(
        check_destination(&p, &dest("http://127.0.0.1:9/"))
            .unwrap_err()
            .rule,
        EgressRule::Loopback
    );
    assert_eq!(
        check_destination(&p, &dest("http://[::ffff:a9fe:a9fe]:80/"))
            .unwrap_err()
            .rule,
        EgressRule::CloudMetadata
    );
    assert!(check_destination(&p, &dest("https://example.com/")).is_ok());
    #[derive(Debug)]
    #[allow(dead_code)]
    struct Other(http::Uri);
    assert_eq!(
        check_destination(&p, &Other("https://example.com/".parse().unwrap()))
            .unwrap_err()
            .rule,
        EgressRule::Unverifiable
    );
}

// ------------------------------------------------------------------------------ properties

/// Every spelling of one IPv4 address a URL can carry.
fn spellings(v4: Ipv4Addr) -> Vec<String> {
    let n = u32::from(v4);
    let [a, b, c, d] = v4.octets();
    let mapped = v4.to_ipv6_mapped();
    vec![
        format!("http://{v4}/"),
        format!("http://{n}/"),
        format!("http://{n:#x}/"),
        format!("http://0{n:o}/"),
        format!("http://{a:#x}.{b}.0{c:o}.{d}/"),
        format!("http://{a}.{b}.{}/", (u32::from(c) << 8) | u32::from(d)),
        format!("http://[{mapped}]/"),
        format!("http://[::ffff:{v4}]/"),
        format!("http://[64:ff9b::{v4}]/"),
    ]
}

proptest! {
    #[test]
    fn any_link_local_ipv4_in_any_spelling_is_denied_even_when_allowed(
        c in any::<u8>(), d in any::<u8>()
    ) {
        let v4 = Ipv4Addr::new(169, 254, c, d);
        let p = local().allow(nets("0.0.0.0/0, ::/0"));
        for url in spellings(v4) {
            let v = verdict(&p, &url);
            prop_assert!(v == "link_local" || v == "cloud_metadata", "{url}: {v}");
        }
    }

    #[test]
    fn any_loopback_ipv4_in_any_spelling_is_denied_in_lambda(b in any::<u8>(), c in any::<u8>(), d in any::<u8>()) {
        let v4 = Ipv4Addr::new(127, b, c, d);
        for url in spellings(v4) {
            prop_assert_eq!(verdict(&lambda(), &url), "loopback", "{}", url);
            prop_assert_eq!(verdict(&local(), &url), "allowed", "{}", url);
        }
    }

    #[test]
    fn an_embedded_ipv4_is_judged_exactly_as_the_ipv4(n in any::<u32>()) {
        let v4 = Ipv4Addr::from(n);
        let p = lambda().deny(nets("10.0.0.0/8, 192.168.7.0/24"));
        let want = p.check_ip(IpAddr::V4(v4)).map_err(|e| e.rule);
        for v6 in [
            v4.to_ipv6_mapped(),
            format!("64:ff9b::{v4}").parse().unwrap(),
            format!("::ffff:0:{v4}").parse().unwrap(),
        ] {
            prop_assert_eq!(p.check_ip(IpAddr::V6(v6)).map_err(|e| e.rule), want.clone(), "{}", v6);
        }
    }

    #[test]
    fn check_url_never_panics_on_anything_that_parses_as_a_url(s in "\\PC{0,80}") {
        for candidate in [s.clone(), format!("http://{s}"), format!("https://[{s}]/")] {
            if let Ok(u) = url::Url::parse(&candidate) {
                let _ = lambda().check_url(&u);
                let _ = local().check_url(&u);
            }
        }
    }

    #[test]
    fn a_parsed_cidr_contains_the_address_it_was_written_with(n in any::<u128>(), len in 0u8..=128, v4 in any::<bool>()) {
        let (addr, len): (IpAddr, u8) = if v4 {
            (IpAddr::V4(Ipv4Addr::from(n as u32)), len % 33)
        } else {
            (IpAddr::V6(Ipv6Addr::from(n)), len)
        };
        let parsed = parse_cidrs(&format!("{addr}/{len}")).unwrap();
        prop_assert!(parsed[0].contains(&addr));
        prop_assert_eq!(parsed[0].prefix_len(), len);
    }
}

// ------------------------------------------------------------- the client, on real sockets

/// A loopback listener that counts connections and requests (bytes received) and answers
/// each request with `answer`.
struct Listener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Listener {
    async fn on(addr: SocketAddr, answer: &'static str) -> std::io::Result<Self> {
        let l = tokio::net::TcpListener::bind(addr).await?;
        let addr = l.local_addr()?;
        let (accepted, requests) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
        let (a, r) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    if matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {
                        r.fetch_add(1, Ordering::SeqCst);
                        let _ = sock.write_all(answer.as_bytes()).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            accepted,
            requests,
        })
    }

    async fn start() -> Self {
        Self::on("127.0.0.1:0".parse().unwrap(), OK).await.unwrap()
    }

    /// Connections accepted so far. Read after [`settle`], so that a connection the client
    /// made has been counted before the test says there was none.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Lets the listeners' accept loops catch up with connections already made.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/// Two listeners on one port: 127.0.0.1 and 127.0.0.2 (a URL's port applies to every address
/// its name resolves to).
async fn listener_pair() -> (Listener, Listener) {
    for _ in 0..20 {
        let a = Listener::start().await;
        let other = SocketAddr::new(ip("127.0.0.2"), a.addr.port());
        if let Ok(b) = Listener::on(other, OK).await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn client(policy: &EgressPolicy) -> reqwest::Client {
    policy
        .client_builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The rule that refused `result`, or "allowed" for a response.
fn refused_by(result: Result<reqwest::Response, reqwest::Error>) -> String {
    match result {
        Ok(r) => {
            assert_eq!(r.status(), 200);
            "allowed".into()
        }
        Err(e) => EgressDenied::find(&e)
            .unwrap_or_else(|| panic!("not an egress denial: {}", crate::http::error_chain(&e)))
            .rule
            .name()
            .into(),
    }
}

#[tokio::test]
async fn a_denied_literal_is_never_contacted_in_any_spelling() {
    let l = Listener::start().await;
    let port = l.addr.port();
    // Baseline: allowed locally.
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(
        refused_by(client(&local()).get(&url).send().await),
        "allowed"
    );
    assert_eq!((l.accepted(), l.requests()), (1, 1));
    // Attack: the same listener under Lambda's defaults and under a DENY, in every spelling.
    let denying = local().deny(nets("127.0.0.1"));
    for spelled in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let lambda_rule = refused_by(client(&lambda()).get(&spelled).send().await);
        assert_eq!(lambda_rule, "loopback", "{spelled}");
        let deny_rule = refused_by(client(&denying).get(&spelled).send().await);
        assert_eq!(deny_rule, "deny_list", "{spelled}");
    }
    settle().await;
    assert_eq!(
        (l.accepted(), l.requests()),
        (1, 1),
        "no connection was even opened"
    );
}

#[tokio::test]
async fn a_name_that_resolves_to_a_denied_address_is_refused_before_connecting() {
    let l = Listener::start().await;
    let url = format!("http://localhost:{}/", l.addr.port());
    assert_eq!(
        refused_by(client(&lambda()).get(&url).send().await),
        "loopback"
    );
    settle().await;
    assert_eq!(l.accepted(), 0);
    // Baseline: the same name locally.
    assert_eq!(
        refused_by(client(&local()).get(&url).send().await),
        "allowed"
    );
    assert_eq!(l.requests(), 1);
}

/// A resolver that answers from a script, one answer per lookup (the last one repeats), and
/// counts lookups.
struct Scripted {
    answers: Vec<Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl Resolve for Scripted {
    fn resolve(&self, _: Name) -> Resolving {
        let i = self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers[i.min(self.answers.len() - 1)].clone();
        let addrs: Vec<SocketAddr> = answer
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 0))
            .collect();
        Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
    }
}

#[tokio::test]
async fn a_rebinding_name_is_judged_on_every_connection() {
    let (good, evil) = listener_pair().await;
    let policy = local().deny(nets("127.0.0.2"));
    let resolver = Arc::new(Scripted {
        answers: vec![
            vec![ip("127.0.0.1")],
            vec![ip("127.0.0.2")],
            vec![ip("127.0.0.1"), ip("127.0.0.2")],
        ],
        lookups: AtomicUsize::new(0),
    });
    // No pooling: every request is a new connection, so a new resolution.
    let c = policy
        .client_builder_with_resolver(resolver.clone())
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://rebind.test:{}/", good.addr.port());
    // First lookup: an allowed address, and the request gets through (baseline).
    assert_eq!(refused_by(c.get(&url).send().await), "allowed");
    // Second: the name now points at a denied address; third: at both (any denied address
    // refuses the name).
    assert_eq!(refused_by(c.get(&url).send().await), "deny_list");
    assert_eq!(refused_by(c.get(&url).send().await), "deny_list");
    assert_eq!(
        resolver.lookups.load(Ordering::SeqCst),
        3,
        "one per connection"
    );
    settle().await;
    assert_eq!(good.requests(), 1);
    assert_eq!(evil.accepted(), 0, "the rebound address is never contacted");
}

#[tokio::test]
async fn the_connected_peer_is_judged_when_the_resolver_is_bypassed() {
    let (_, evil) = listener_pair().await;
    // A resolver override (reqwest's `resolve`) skips the policy's resolver; the connector
    // still judges the peer it connected to, before a byte is sent.
    let c = local()
        .deny(nets("127.0.0.2"))
        .client_builder()
        .resolve("bypass.test", evil.addr)
        .build()
        .unwrap();
    let url = format!("http://bypass.test:{}/", evil.addr.port());
    assert_eq!(refused_by(c.get(&url).send().await), "deny_list");
    settle().await;
    assert_eq!(evil.requests(), 0, "no request reached the denied peer");
    // Baseline: without the DENY the same path works.
    let c = local()
        .client_builder()
        .resolve("bypass.test", evil.addr)
        .build()
        .unwrap();
    assert_eq!(refused_by(c.get(&url).send().await), "allowed");
    assert_eq!(evil.requests(), 1);
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let target = Listener::start().await;
    let location: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: http://{}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            target.addr
        )
        .into_boxed_str(),
    );
    let redirector = Listener::on("127.0.0.1:0".parse().unwrap(), location)
        .await
        .unwrap();
    let resp = client(&local())
        .get(format!("http://{}/", redirector.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    settle().await;
    assert_eq!(redirector.requests(), 1);
    assert_eq!(target.accepted(), 0, "the redirect was not followed");
}
