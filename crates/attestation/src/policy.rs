//! What a verifier accepts: the trust part of the network's root configuration
//! (a file for now; on chain with the payments work). Verification says what is
//! true of the evidence; the policy says whether that is good enough for the
//! peer's role, and a refusal names the reason.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::configuration::{is_loopback_url, Configuration, ConfigurationRefusal};
use crate::evidence::{TeeKind, Verdict};

/// Which role a verified peer plays: each has its own allowed images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    Worker,
    Proxy,
    /// A key manager (docs/key-manager.md): releases keys to attested nodes.
    #[serde(rename = "key-manager")]
    KeyManager,
}

impl std::fmt::Display for PeerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerRole::Worker => "worker",
            PeerRole::Proxy => "proxy",
            PeerRole::KeyManager => "key-manager",
        })
    }
}

/// A model the network allows, by name and the SHA-256 of its weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedModel {
    pub name: String,
    /// Hex SHA-256 of the weights file (what workers announce).
    pub sha256: String,
}

/// A verifier's rules (from the network's root configuration; a file for now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Image hashes (see `Measurements::image_hash`) allowed to run workers.
    #[serde(default)]
    pub worker_images: BTreeSet<String>,
    /// Image hashes allowed to run proxies.
    #[serde(default)]
    pub proxy_images: BTreeSet<String>,
    /// Image hashes allowed to run key managers (which hold the master
    /// secret every released key derives from).
    #[serde(default)]
    pub key_manager_images: BTreeSet<String>,
    /// Models workers may serve; empty allows any model (development only: a
    /// production network lists its models).
    #[serde(default)]
    pub models: Vec<AllowedModel>,
    /// Accept SIMULATED evidence (development networks only; never in production).
    #[serde(default)]
    pub allow_simulated: bool,
    /// TCB statuses accepted; default `["UpToDate"]`. Adding `OutOfDate` or
    /// `SWHardeningNeeded` is an explicit decision to trust a platform with
    /// known advisories.
    #[serde(default = "default_statuses")]
    pub accepted_tcb_statuses: BTreeSet<String>,
    /// Workers' and proxies' evidence must bind their effective
    /// configuration (see [`Configuration`]); default true. False accepts
    /// evidence made before configurations were bound (an audit of old
    /// quotes), and trusts a node's image without knowing what it was told.
    #[serde(default = "yes")]
    pub require_configuration: bool,
    /// Engine kinds workers may run (`embedded`, `openai-http`); empty: any.
    #[serde(default)]
    pub worker_engines: BTreeSet<String>,
    /// A worker's `openai-http` engine must forward prompts to a loopback
    /// address (a server inside the same measured VM); default true. A
    /// network that trusts a remote inference server with prompts sets it
    /// false, and its users should know.
    #[serde(default = "yes")]
    pub engine_upstream_loopback_only: bool,
    /// Evidence must bind a recent TON masterchain block (see
    /// [`crate::freshness`]) no older than `max_evidence_age_secs`; default
    /// true. False accepts evidence whenever it was made (audits of
    /// recorded quotes): a quote once seen could then be replayed in a new
    /// certificate for ever.
    #[serde(default = "yes")]
    pub require_fresh_evidence: bool,
    /// The oldest evidence accepted, in seconds since the block it binds;
    /// default 86400 (24 h). Nodes re-quote every 12 h.
    #[serde(default = "default_max_age")]
    pub max_evidence_age_secs: u64,
    /// Workers must present NVIDIA confidential-computing evidence for
    /// their GPUs (see [`crate::gpu`]), bound to their TDX evidence; default
    /// false (a network of CPU-only workers). A network whose models run
    /// on GPUs sets it: without it a GPU owner may serve from a GPU outside
    /// confidential computing, where the host can read its memory.
    #[serde(default)]
    pub require_gpu: bool,
    /// Driver versions GPUs may run (as they report them, `550.90.07`);
    /// empty: any whose RIM verifies.
    #[serde(default)]
    pub gpu_driver_versions: BTreeSet<String>,
    /// VBIOS versions GPUs may run (`96.00.9f.00.01`); empty: any whose RIM
    /// verifies.
    #[serde(default)]
    pub gpu_vbios_versions: BTreeSet<String>,
}

fn default_max_age() -> u64 {
    24 * 3600
}

fn yes() -> bool {
    true
}

fn default_statuses() -> BTreeSet<String> {
    BTreeSet::from(["UpToDate".to_string()])
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            worker_images: BTreeSet::new(),
            proxy_images: BTreeSet::new(),
            key_manager_images: BTreeSet::new(),
            models: Vec::new(),
            allow_simulated: false,
            accepted_tcb_statuses: default_statuses(),
            require_configuration: true,
            worker_engines: BTreeSet::new(),
            engine_upstream_loopback_only: true,
            require_fresh_evidence: true,
            max_evidence_age_secs: default_max_age(),
            require_gpu: false,
            gpu_driver_versions: BTreeSet::new(),
            gpu_vbios_versions: BTreeSet::new(),
        }
    }
}

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Refusal {
    #[error("simulated TEE evidence is not allowed by this policy (allow_simulated = false)")]
    Simulated,
    #[error(
        "TCB status {status} is not accepted (accepted: {accepted}); advisories: {advisories}"
    )]
    TcbStatus {
        status: String,
        accepted: String,
        advisories: String,
    },
    #[error("image hash {image_hash} is not in the allowed {role} images")]
    ImageNotAllowed { image_hash: String, role: PeerRole },
    #[error("model '{name}' with weights {sha256} is not allowed by the network")]
    ModelNotAllowed { name: String, sha256: String },
    #[error("the root contract {root}{} does not publish {what}", version.map(|v| format!(" (version {v})")).unwrap_or_default())]
    NotPublished {
        what: String,
        root: String,
        version: Option<u32>,
    },
    #[error("the quote does not bind the presented key and configuration: report data {got} != expected {expected}")]
    KeyNotBound { expected: String, got: String },
    #[error("{0}")]
    Configuration(#[from] ConfigurationRefusal),
    #[error("{0}")]
    Stale(#[from] crate::freshness::Staleness),
    #[error("the worker presents no GPU evidence, and the policy requires it (require_gpu)")]
    GpuRequired,
    #[error("GPU {index}: {refusal}")]
    Gpu {
        index: usize,
        refusal: crate::gpu::GpuRefusal,
    },
    #[error("GPU {index} runs {what} version {version}, not one the policy allows ({allowed})")]
    GpuVersion {
        index: usize,
        what: crate::gpu::RimKind,
        version: String,
        allowed: String,
    },
}

impl Policy {
    /// The allowed images for `role`.
    pub fn images(&self, role: PeerRole) -> &BTreeSet<String> {
        match role {
            PeerRole::Worker => &self.worker_images,
            PeerRole::Proxy => &self.proxy_images,
            PeerRole::KeyManager => &self.key_manager_images,
        }
    }

    /// Whether workers may serve `name` with weights `sha256` (hex, when known).
    pub fn check_model(&self, name: &str, sha256: Option<&str>) -> Result<(), Refusal> {
        if self.models.is_empty() {
            return Ok(());
        }
        let allowed = sha256.is_some_and(|h| {
            self.models
                .iter()
                .any(|m| m.name == name && m.sha256.eq_ignore_ascii_case(h))
        });
        if allowed {
            Ok(())
        } else {
            Err(Refusal::ModelNotAllowed {
                name: name.to_string(),
                sha256: sha256.unwrap_or("unknown").to_string(),
            })
        }
    }

    /// Decide on GPUs whose evidence verified (`verdicts`, in the order
    /// presented): some where required, and versions the policy allows.
    pub fn check_gpus(&self, verdicts: &[crate::gpu::GpuVerdict]) -> Result<(), Refusal> {
        if verdicts.is_empty() && self.require_gpu {
            return Err(Refusal::GpuRequired);
        }
        for (index, verdict) in verdicts.iter().enumerate() {
            for (what, version, allowed) in [
                (
                    crate::gpu::RimKind::Driver,
                    &verdict.driver_version,
                    &self.gpu_driver_versions,
                ),
                (
                    crate::gpu::RimKind::Vbios,
                    &verdict.vbios_version,
                    &self.gpu_vbios_versions,
                ),
            ] {
                let ok =
                    allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(version));
                if !ok {
                    return Err(Refusal::GpuVersion {
                        index,
                        what,
                        version: version.clone(),
                        allowed: allowed.iter().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        Ok(())
    }

    /// Hex SHA-256 of this policy's canonical JSON: what a node's
    /// [`Configuration`] names as the policy it enforces.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("a policy serializes");
        hex::encode(sha2::Sha256::digest(json))
    }

    /// Decide on the configuration document a peer in `role` sent beside
    /// its evidence (whose report data the caller checked binds it): present
    /// when required, for that role, and within the rules. Returns it parsed.
    pub fn check_configuration(
        &self,
        document: Option<&[u8]>,
        role: PeerRole,
    ) -> Result<Option<Configuration>, ConfigurationRefusal> {
        self.check_configuration_under(document, role, None)
    }

    /// [`Policy::check_configuration`] for a node that follows the root
    /// contract: the configuration must follow the contract's `rules` and
    /// this policy's alike (each can only add to the other).
    pub fn check_configuration_under(
        &self,
        document: Option<&[u8]>,
        role: PeerRole,
        rules: Option<&crate::ConfigurationRules>,
    ) -> Result<Option<Configuration>, ConfigurationRefusal> {
        const POLICY: &str = "the policy";
        const CHAIN: &str = "the root contract's rules";
        let chain = rules.cloned().unwrap_or_default();
        let Some(document) = document else {
            let by = if self.require_configuration {
                Some("the policy (require_configuration)")
            } else if chain.require_configuration {
                Some(CHAIN)
            } else {
                None
            };
            return match by {
                Some(by) => Err(ConfigurationRefusal::Missing { by: by.into() }),
                None => Ok(None),
            };
        };
        let config = Configuration::from_bytes(document)?;
        if config.role != role {
            return Err(ConfigurationRefusal::WrongRole {
                expected: role,
                got: config.role,
            });
        }
        // A worker's configuration that names no engine cannot be held to
        // a list of engines. (Loopback rules alone do not ask for one: a
        // configuration without an engine names no upstream either.)
        if config.role == PeerRole::Worker && config.engine.is_none() {
            let by = if !self.worker_engines.is_empty() {
                Some("the policy's worker_engines")
            } else if !chain.worker_engines.is_empty() {
                Some("the root contract's worker engines")
            } else {
                None
            };
            if let Some(by) = by {
                return Err(ConfigurationRefusal::NoEngine { by: by.into() });
            }
        }
        if let Some(engine) = &config.engine {
            for (allowed, by) in [
                (&self.worker_engines, "the policy's worker_engines"),
                (&chain.worker_engines, "the root contract's worker engines"),
            ] {
                if !allowed.is_empty() && !allowed.contains(&engine.kind) {
                    return Err(ConfigurationRefusal::EngineNotAllowed {
                        kind: engine.kind.clone(),
                        allowed: allowed.iter().cloned().collect::<Vec<_>>().join(", "),
                        by: by.into(),
                    });
                }
            }
            let loopback_by = if self.engine_upstream_loopback_only {
                Some(format!("{POLICY} (engine_upstream_loopback_only)"))
            } else if chain.upstream_loopback_only {
                Some(CHAIN.to_string())
            } else {
                None
            };
            if let (Some(upstream), Some(by)) = (&engine.upstream, loopback_by) {
                if !is_loopback_url(upstream) {
                    return Err(ConfigurationRefusal::UpstreamNotLoopback {
                        upstream: upstream.clone(),
                        by,
                    });
                }
            }
        }
        Ok(Some(config))
    }

    /// Decide on `verdict` for a peer in `role`; `expected_report_data` is the
    /// binding of the key the peer presented (see `report_data`), when there is
    /// one to check.
    pub fn check(
        &self,
        verdict: &Verdict,
        role: PeerRole,
        expected_report_data: Option<&[u8; 64]>,
    ) -> Result<(), Refusal> {
        self.check_under(verdict, role, expected_report_data, false)
    }

    /// [`Policy::check`] for a node that follows the root contract
    /// (`images_on_chain`): the chain's lists decide on images (see
    /// [`crate::Published`]), and this policy's list for `role`, when it has
    /// one, only narrows them; an empty one adds no restriction.
    pub fn check_under(
        &self,
        verdict: &Verdict,
        role: PeerRole,
        expected_report_data: Option<&[u8; 64]>,
        images_on_chain: bool,
    ) -> Result<(), Refusal> {
        if verdict.tee == TeeKind::Simulated && !self.allow_simulated {
            return Err(Refusal::Simulated);
        }
        if verdict.tee == TeeKind::Tdx && !self.accepted_tcb_statuses.contains(&verdict.tcb_status)
        {
            return Err(Refusal::TcbStatus {
                status: verdict.tcb_status.clone(),
                accepted: self
                    .accepted_tcb_statuses
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                advisories: if verdict.advisories.is_empty() {
                    "none".into()
                } else {
                    verdict.advisories.join(", ")
                },
            });
        }
        let images = self.images(role);
        let narrowed = !(images_on_chain && images.is_empty());
        if narrowed && !images.contains(&verdict.image_hash) {
            return Err(Refusal::ImageNotAllowed {
                image_hash: verdict.image_hash.clone(),
                role,
            });
        }
        if let Some(expected) = expected_report_data {
            if expected != &verdict.report_data {
                return Err(Refusal::KeyNotBound {
                    expected: hex::encode(expected),
                    got: hex::encode(verdict.report_data),
                });
            }
        }
        Ok(())
    }
}
