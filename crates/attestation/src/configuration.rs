//! What a node was told to do, as its evidence vouches for it: the effective
//! configuration that bears on confidentiality and billing (its role and
//! software version, the engine and where it reaches it, the models and their
//! weights, the policy it enforces, its proxies, its contracts). The node
//! sends the document's exact bytes beside its evidence, and the quote's
//! report data carries their SHA-256 in its second half ([`bind`]), so a
//! verifier knows the configuration as surely as the image. The report data,
//! not RTMR3: it binds the document to the very key (and certificate) it
//! travels with, verifies with one quote on TDX and on the simulated TEE
//! alike, and needs no kernel support for extending RTMRs at run time
//! (dstack's compose hash in RTMR3 fits a VM configured once at boot; a
//! worker's configuration is read by the image after boot).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::PeerRole;

/// Domain separation for [`Configuration::digest`].
const LABEL: &[u8] = b"cocoon/configuration/v1";

/// A node's effective configuration, as bound into its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Configuration {
    pub role: PeerRole,
    /// The node's software version (`cocoon` crate version).
    pub version: String,
    /// A worker's engine; `None` for a proxy.
    pub engine: Option<EngineIdentity>,
    /// The models a worker serves, sorted by name.
    pub models: Vec<ModelIdentity>,
    /// Hex SHA-256 of the policy (root configuration) it enforces on its
    /// peers, canonical JSON; `None` when it checks none (development).
    pub policy_sha256: Option<String>,
    /// The root contract whose published images and models it trusts
    /// beside that policy (`attestation.root`); `None`: the policy alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root: Option<String>,
    /// The proxies a worker dials, `fingerprint@host:port`, sorted.
    pub proxies: Vec<String>,
    /// A billing proxy's contract and root contract; a worker's payout wallet.
    pub contracts: Vec<String>,
}

/// Which engine a worker runs and what it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineIdentity {
    /// `embedded`, `openai-http` or `instant`.
    pub kind: String,
    /// The server an `openai-http` engine forwards prompts to (its base URL).
    pub upstream: Option<String>,
}

/// A model a worker serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    pub name: String,
    /// Hex SHA-256 of the weights, when the engine knows them.
    pub weights_sha256: Option<String>,
}

/// Why a configuration document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum ConfigurationRefusal {
    #[error("the peer's evidence binds no configuration, and {by} requires one")]
    Missing { by: String },
    #[error("the peer's configuration document is malformed: {0}")]
    Malformed(String),
    #[error("the peer's configuration is for a {got}, it is connected as a {expected}")]
    WrongRole { expected: PeerRole, got: PeerRole },
    #[error("the worker's engine {kind:?} is not among {by} ({allowed})")]
    EngineNotAllowed {
        kind: String,
        allowed: String,
        by: String,
    },
    #[error("the worker's engine forwards prompts to {upstream}, outside its measured VM ({by} allows only loopback upstreams)")]
    UpstreamNotLoopback { upstream: String, by: String },
    #[error("the worker's configuration names no engine, and {by} restricts engines")]
    NoEngine { by: String },
}

impl Configuration {
    /// A configuration of `role` at `version` naming nothing else (a node
    /// fills in what it has).
    pub fn new(role: PeerRole, version: &str) -> Self {
        Self {
            role,
            version: version.into(),
            engine: None,
            models: Vec::new(),
            policy_sha256: None,
            trust_root: None,
            proxies: Vec::new(),
            contracts: Vec::new(),
        }
    }

    /// The exact bytes a node sends and binds (JSON, fields in declaration
    /// order, lists sorted).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.models.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.proxies.sort();
        sorted.contracts.sort();
        serde_json::to_vec(&sorted).expect("a configuration serializes")
    }

    /// Parse a document a peer sent.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigurationRefusal> {
        serde_json::from_slice(bytes).map_err(|e| ConfigurationRefusal::Malformed(e.to_string()))
    }
}

/// SHA-256 over the label and the document's bytes, as received.
pub fn digest(document: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(document);
    h.finalize().into()
}

/// `report_data` (a key binding, see [`crate::report_data`]) with the
/// digest of `document` in its second half; unchanged (zeros there) when
/// there is no document.
pub fn bind(mut report_data: [u8; 64], document: Option<&[u8]>) -> [u8; 64] {
    if let Some(document) = document {
        report_data[32..].copy_from_slice(&digest(document));
    }
    report_data
}

/// Whether `url`'s host is this machine (a loopback address or `localhost`),
/// so an engine reached there runs inside the same measured VM.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    // user:password@host:port
    let authority = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(upstream: &str) -> Configuration {
        Configuration {
            role: PeerRole::Worker,
            version: "0.1.0".into(),
            engine: Some(EngineIdentity {
                kind: "openai-http".into(),
                upstream: Some(upstream.into()),
            }),
            models: vec![
                ModelIdentity {
                    name: "b".into(),
                    weights_sha256: None,
                },
                ModelIdentity {
                    name: "a".into(),
                    weights_sha256: Some("00".repeat(32)),
                },
            ],
            policy_sha256: None,
            trust_root: None,
            proxies: vec!["z@h:1".into(), "a@h:2".into()],
            contracts: vec![],
        }
    }

    #[test]
    fn the_document_round_trips_and_its_digest_moves_with_any_change() {
        let c = worker("http://127.0.0.1:8000/v1");
        let bytes = c.to_bytes();
        let back = Configuration::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes, "canonical");
        assert_eq!(back.models[0].name, "a", "sorted");
        let other = worker("http://10.0.0.7:8000/v1").to_bytes();
        assert_ne!(digest(&bytes), digest(&other));
        let base = [7u8; 64];
        let bound = bind(base, Some(&bytes));
        assert_eq!(bound[..32], base[..32]);
        assert_eq!(bound[32..], digest(&bytes));
        assert_eq!(bind(base, None), base);
        assert!(matches!(
            Configuration::from_bytes(b"{\"role\":\"worker\",\"extra\":1}"),
            Err(ConfigurationRefusal::Malformed(_))
        ));
    }

    /// The root contract's rules and the local policy each only add to
    /// the other: a configuration must pass both, and the refusal names
    /// which one refused it.
    #[test]
    fn the_chains_rules_and_the_policy_both_hold() {
        use crate::{ConfigurationRules, Policy};
        let forwarding = worker("http://10.0.0.7:8000/v1").to_bytes();
        let local = worker("http://127.0.0.1:8000/v1").to_bytes();
        let mut no_engine = worker("http://127.0.0.1:8000/v1");
        no_engine.engine = None;
        let no_engine = no_engine.to_bytes();
        let check = |policy: &Policy, rules: &ConfigurationRules, doc: Option<&[u8]>| {
            policy
                .check_configuration_under(doc, PeerRole::Worker, Some(rules))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let open = Policy {
            engine_upstream_loopback_only: false,
            require_configuration: false,
            ..Policy::default()
        };
        let none = ConfigurationRules::default();
        assert_eq!(check(&open, &none, Some(&forwarding)), Ok(()));
        assert_eq!(check(&open, &none, None), Ok(()));

        let loopback = ConfigurationRules {
            upstream_loopback_only: true,
            ..Default::default()
        };
        let refused = check(&open, &loopback, Some(&forwarding)).unwrap_err();
        assert!(refused.contains("the root contract's rules"), "{refused}");
        assert_eq!(check(&open, &loopback, Some(&local)), Ok(()));

        let embedded_only = ConfigurationRules {
            worker_engines: ["embedded".to_string()].into(),
            ..Default::default()
        };
        let refused = check(&open, &embedded_only, Some(&local)).unwrap_err();
        assert!(
            refused.contains("not among the root contract's worker engines (embedded)"),
            "{refused}"
        );
        let refused = check(&open, &embedded_only, Some(&no_engine)).unwrap_err();
        assert!(
            refused.contains("names no engine, and the root contract's worker engines"),
            "{refused}"
        );
        // The policy allows it, the chain does not: refused. The chain
        // allows it, the policy does not: refused, naming the policy.
        let policy_http = Policy {
            worker_engines: ["openai-http".to_string()].into(),
            ..open.clone()
        };
        assert!(check(&policy_http, &embedded_only, Some(&local)).is_err());
        let http_only = ConfigurationRules {
            worker_engines: ["openai-http".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(check(&policy_http, &http_only, Some(&local)), Ok(()));
        let policy_embedded = Policy {
            worker_engines: ["embedded".to_string()].into(),
            ..open.clone()
        };
        let refused = check(&policy_embedded, &http_only, Some(&local)).unwrap_err();
        assert!(refused.contains("the policy's worker_engines"), "{refused}");

        let required = ConfigurationRules {
            require_configuration: true,
            ..Default::default()
        };
        let refused = check(&open, &required, None).unwrap_err();
        assert!(
            refused.contains("the root contract's rules requires one"),
            "{refused}"
        );
    }

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for inside in [
            "http://127.0.0.1:8000/v1",
            "http://127.8.9.10/v1",
            "http://localhost:11434/v1",
            "https://LOCALHOST/v1",
            "http://[::1]:8000/v1",
            "http://user:pw@127.0.0.1:8000/v1",
        ] {
            assert!(is_loopback_url(inside), "{inside}");
        }
        for outside in [
            "http://10.0.0.7:8000/v1",
            "http://192.168.1.2/v1",
            "http://vllm.internal:8000/v1",
            "http://127.0.0.1.evil.example/v1",
            "http://localhost.evil.example/v1",
            "http://[::2]:8000/v1",
            "http://127.0.0.1@10.0.0.7:8000/v1",
            "http://0.0.0.0:8000/v1",
            "",
        ] {
            assert!(!is_loopback_url(outside), "{outside}");
        }
    }
}
