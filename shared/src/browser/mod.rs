//! What the gateway learns from a browser: its cookies ([`cookie_values`]) and the console
//! session it may hold ([`session`]). The console (admin-api) issues sessions; the connect
//! flow (oauth-callback) reads them to refuse connecting an account for a gateway user other
//! than the one this browser is signed in as.

pub mod session;

use axum::http::{HeaderMap, header};

/// Every value of cookie `name` in the request, in the order sent. A browser can hold two
/// cookies of one name (a host-only one and one a sibling domain set with `Domain=`, or two
/// paths), and sends both; callers decide whether any or a specific one counts.
pub fn cookie_values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The first value of cookie `name` in the request, if any.
pub fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    cookie_values(headers, name).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name_across_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; ab=2;b=3".parse().unwrap());
        h.append(header::COOKIE, "a=4".parse().unwrap());
        assert_eq!(cookie_values(&h, "a").collect::<Vec<_>>(), ["1", "4"]);
        assert_eq!(read_cookie(&h, "b"), Some("3"));
        assert_eq!(read_cookie(&h, "A"), None);
        assert_eq!(read_cookie(&HeaderMap::new(), "a"), None);
    }

    proptest::proptest! {
        /// Any header text: no panic, and every value found was sent as `name=value`.
        #[test]
        fn any_cookie_header_reads_without_panic_and_only_named_values(
            header_text in "[ -~]{0,200}",
            name in "[a-z_]{1,8}",
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = header_text.parse() {
                h.insert(header::COOKIE, v);
            }
            for v in cookie_values(&h, &name) {
                let sent = format!("{name}={v}");
                proptest::prop_assert!(
                    header_text.split(';').any(|kv| kv.trim() == sent),
                    "{v} not sent as {name}"
                );
            }
        }

        /// A cookie among others is found, whatever surrounds it.
        #[test]
        fn a_cookie_among_others_is_found(
            before in proptest::collection::vec(("[a-y]{1,6}", "[A-Za-z0-9_-]{0,12}"), 0..4),
            after in proptest::collection::vec(("[a-y]{1,6}", "[A-Za-z0-9_-]{0,12}"), 0..4),
            value in "[A-Za-z0-9_-]{1,43}",
        ) {
            let pairs: Vec<String> = before
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(std::iter::once(format!("z_connect={value}")))
                .chain(after.iter().map(|(k, v)| format!("{k}={v}")))
                .collect();
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, pairs.join("; ").parse().unwrap());
            proptest::prop_assert_eq!(read_cookie(&h, "z_connect"), Some(value.as_str()));
        }
    }
}
