//! The egress URL check on any string, under the Lambda defaults: never panics, and a URL it
//! admits never names a denied address in any spelling the URL parser understands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw::egress::EgressPolicy;

fuzz_target!(|raw: &str| {
    let policy = EgressPolicy::defaults(true);
    let verdict = policy.check_url_str(raw);
    if let Ok(url) = url::Url::parse(raw) {
        assert_eq!(verdict.is_ok(), policy.check_url(&url).is_ok());
        if verdict.is_ok() {
            match url.host() {
                Some(url::Host::Ipv4(ip)) => assert!(policy.check_ip(ip.into()).is_ok()),
                Some(url::Host::Ipv6(ip)) => assert!(policy.check_ip(ip.into()).is_ok()),
                _ => {}
            }
        }
    }
});
