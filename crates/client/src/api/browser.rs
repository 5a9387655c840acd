//! What a web page open on the same machine cannot do with the client
//! node's API: spend its TON with a cross-site request (CSRF), or read its
//! answers by pointing a name of its own at the node's address (DNS
//! rebinding). Apps and SDKs send no `Origin`, and the playground this node
//! serves is same-origin, so neither is affected.
//!
//! * `Host` must be an IP literal, `localhost`, or a name in
//!   `allowed_hosts`: a rebound name (`evil.example` resolving to 127.0.0.1)
//!   is refused.
//! * A request with an `Origin` (every browser sends one on a cross-origin
//!   request and on any POST) must come from the node's own origin or from
//!   one in `allowed_origins`; `Sec-Fetch-Site: cross-site` without an
//!   allowed origin is refused too.
//! * API keys are compared in constant time.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// The hosts and origins a browser may reach this node from.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Names (without port) besides IP literals and `localhost` that may
    /// appear in `Host`, e.g. `cocoon.internal`.
    pub allowed_hosts: Vec<String>,
    /// Origins besides the node's own whose pages may call the API, e.g.
    /// `https://app.example`.
    pub allowed_origins: Vec<String>,
}

impl BrowserPolicy {
    /// Why a request with these headers is refused, if it is.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = host_name(host);
        let host_ok = name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name));
        if !host_ok {
            return Some(format!(
                "Host '{name}' is not this node's address (a name pointed at it by another site?); add it to allowed_hosts to serve it"
            ));
        }
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
        match origin {
            Some(origin) if self.origin_allowed(origin, host) => None,
            Some(origin) => Some(format!(
                "requests from pages at {origin} are refused (cross-origin); add it to allowed_origins to serve it"
            )),
            None if cross_site => Some("cross-site browser requests are refused".into()),
            None => None,
        }
    }

    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let own = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
        own || self
            .allowed_origins
            .iter()
            .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// `host[:port]` or `[v6]:port` without the port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether `presented` is one of `keys`, comparing every key in constant
/// time (the time taken does not tell how much of a key was right).
pub fn key_matches(keys: &[String], presented: &str) -> bool {
    keys.iter().fold(false, |found, key| {
        found | bool::from(key.as_bytes().ct_eq(presented.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn apps_and_the_playground_pass_other_sites_do_not() {
        let policy = BrowserPolicy {
            allowed_hosts: vec!["cocoon.internal".into()],
            allowed_origins: vec!["https://app.example/".into()],
        };
        // An SDK: no Origin.
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "10.0.0.5",
            "cocoon.internal:80",
        ] {
            assert_eq!(policy.refusal(&headers(&[("host", host)])), None, "{host}");
        }
        // The playground, same origin; an allowed app.
        for origin in ["http://127.0.0.1:8080", "https://app.example"] {
            let h = headers(&[("host", "127.0.0.1:8080"), ("origin", origin)]);
            assert_eq!(policy.refusal(&h), None, "{origin}");
        }
        // CSRF from another page, DNS rebinding, a cross-site fetch.
        let csrf = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(policy.refusal(&csrf).unwrap().contains("evil.example"));
        let rebound = headers(&[
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ]);
        assert!(policy
            .refusal(&rebound)
            .unwrap()
            .contains("Host 'evil.example'"));
        let null_origin = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(policy.refusal(&null_origin).is_some());
        let cross = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(policy.refusal(&cross).is_some());
        assert!(policy.refusal(&headers(&[])).is_some());
    }

    #[test]
    fn keys_match_exactly() {
        let keys = vec!["sk-one".to_string(), "sk-two".to_string()];
        assert!(key_matches(&keys, "sk-two"));
        assert!(!key_matches(&keys, "sk-tw"));
        assert!(!key_matches(&keys, "sk-two "));
        assert!(!key_matches(&[], "sk-one"));
    }
}
