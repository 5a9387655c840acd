//! `[attestation]`, the same in every role's configuration: which TEE vouches
//! for this node (none, TDX through configfs-tsm, or the development-only
//! simulated one), and what peers' evidence must satisfy (a policy file, and
//! DCAP collateral for TDX peers). Contradictions stop the node at start, naming
//! the key: a simulated TEE or a policy allowing simulated peers under the
//! production profile, `tee = "tdx"` on a machine without configfs-tsm.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::tdx::{self, ConfigfsTsm};
use cocoon_attestation::{Attester, PeerRole, Policy};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::ra_tls::{AttestationCheck, CollateralSource};
use crate::tls::Identity;

/// Whether test-only parts are allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Real deployments: every test-only or simulated part is refused.
    #[default]
    Production,
    /// Local development and tests (the devnet uses this).
    Development,
}

/// This node's TEE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeChoice {
    /// No evidence in the certificate: plain TLS with pinned keys.
    #[default]
    None,
    /// Intel TDX: quotes from configfs-tsm.
    Tdx,
    /// SIMULATED: fake evidence, development profile only.
    Simulated,
}

/// Where a worker's GPU evidence comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuChoice {
    /// No GPU evidence (a CPU-only worker, or one whose peers do not ask).
    #[default]
    None,
    /// NVIDIA's driver (NVML): every GPU in confidential-computing mode.
    Nvml,
    /// SIMULATED: fake GPU evidence, development profile and simulated TEE only.
    Simulated,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    #[serde(default)]
    pub tee: TeeChoice,
    /// The network's root configuration (TOML: worker_images, proxy_images,
    /// models, accepted_tcb_statuses, allow_simulated; see
    /// `config/root.example.toml`) that peers' evidence must satisfy.
    /// Required under the production profile; without one (development
    /// only) peers' evidence is not checked (key pins only).
    pub policy: Option<PathBuf>,
    /// DCAP collateral (dcap-qvl JSON) for verifying TDX peers of one
    /// platform; see `pccs_url` for collateral per platform, kept fresh.
    pub collateral: Option<PathBuf>,
    /// PCCS (API v4) base URL: collateral for each peer platform is
    /// fetched from it in the background, cached in `collateral_cache`, and
    /// refreshed before its `nextUpdate`.
    pub pccs_url: Option<String>,
    /// Folder for cached collateral (default: `collateral` beside the identity key).
    pub collateral_cache: Option<PathBuf>,
    /// configfs-tsm reports folder (default `/sys/kernel/config/tsm/report`).
    pub configfs: Option<PathBuf>,
    /// TON HTTP API (`testnet`, `mainnet` or a URL) whose masterchain
    /// blocks anchor evidence in time: this node binds the newest into its
    /// own evidence and looks up those its peers bind (the policy refuses
    /// evidence older than `max_evidence_age_secs`). Default: this role's
    /// own chain API (`payout.ton_api`, `settlement.ton_api`,
    /// `billing.ton_api`).
    pub ton_api: Option<String>,
    /// Other TON HTTP APIs (`testnet`, `mainnet` or URLs, best run by other
    /// parties) that must report every block alike before it dates any
    /// evidence: one endpoint that lies is outvoted.
    #[serde(default)]
    pub ton_api_agree: Vec<String>,
    /// The network's root contract (`0:<hex>` or user-friendly): the worker
    /// and proxy images and the models it publishes decide what this node
    /// trusts, read from `ton_api` (and every `ton_api_agree` endpoint,
    /// which must agree) before the node serves and every
    /// `root_refresh_secs`. The policy file then only narrows them (its
    /// image lists, when not empty, and models) and sets the rest (TCB
    /// statuses, freshness, GPUs). Needs `policy`.
    pub root: Option<String>,
    /// Seconds between reads of the root contract's lists (default 60): a
    /// withdrawn image or model stops being served within this.
    pub root_refresh_secs: Option<u64>,
    /// A key manager (`host:port`, docs/key-manager.md) that gives this
    /// node (a worker or a proxy with a TEE) its lasting key: the same at
    /// every start, never in a file. Its evidence must pass the policy's
    /// `key_manager_images`.
    pub key_manager: Option<String>,
    /// The owner's authorization naming this node's key (JSON, written by
    /// `cocoon key-manager authorize`); required with `key_manager`.
    pub key_authorization: Option<PathBuf>,
    /// A worker's GPUs: `nvml` (NVIDIA's driver; confidential computing
    /// must be on) puts each GPU's evidence, bound to the sealing key's TDX
    /// evidence, beside it; `simulated` fakes it (development only).
    #[serde(default)]
    pub gpu: GpuChoice,
    /// Folder of NVIDIA RIMs (`*.swidtag`) that workers' GPU evidence is
    /// checked against; RIMs fetched from `rim_service` are kept here.
    pub gpu_rims: Option<PathBuf>,
    /// NVIDIA's RIM service (`nvidia` or a base URL, the RIM's id
    /// appended): RIMs not in `gpu_rims` are fetched in the background.
    pub rim_service: Option<String>,
    /// An OCSP responder (`nvidia` or a URL) asked whether the certificates
    /// of workers' GPUs and of the RIMs were revoked (answers cached until
    /// their nextUpdate, asked in the background); unset: not checked.
    pub gpu_ocsp: Option<String>,
}

impl AttestationConfig {
    /// How often the root contract's lists are read again.
    pub fn root_refresh(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.root_refresh_secs.unwrap_or(60))
    }

    /// Load the node key with its TEE, and the check for peers. A node in
    /// `role` (workers and proxies) with both a TEE and a policy checks its own
    /// evidence against the policy first, and refuses to start, naming the
    /// measurement or setting, if its peers would refuse it. `anchors` is
    /// the chain whose blocks date evidence (from `ton_api`, or the role's
    /// own chain): required where the policy requires fresh evidence.
    /// The node calls [`anchors_ready`] before it makes evidence.
    pub fn load(
        &self,
        identity_key: &Path,
        profile: Profile,
        role: Option<PeerRole>,
        anchors: Option<Arc<cocoon_attestation::BlockAnchors>>,
    ) -> Result<(Arc<Identity>, Option<Arc<AttestationCheck>>), ConfigError> {
        let attester = self.attester(profile)?;
        self.require_verification(profile, role)?;
        let identity = self.identity(identity_key)?;
        self.finish(identity, attester, identity_key, profile, role, anchors)
    }

    /// [`AttestationConfig::load`] for a node whose key is always made in
    /// memory and never kept (a key manager); its collateral cache, when
    /// not set, is `./collateral`.
    pub fn load_in_memory(
        &self,
        profile: Profile,
        role: PeerRole,
        anchors: Option<Arc<cocoon_attestation::BlockAnchors>>,
    ) -> Result<(Arc<Identity>, Option<Arc<AttestationCheck>>), ConfigError> {
        let attester = self.attester(profile)?;
        self.require_verification(profile, Some(role))?;
        let identity =
            Identity::generate().map_err(|e| ConfigError::new("attestation", e.to_string()))?;
        let defaults = Path::new("key-manager.pem");
        self.finish(identity, attester, defaults, profile, Some(role), anchors)
    }

    fn finish(
        &self,
        identity: Identity,
        attester: Option<Arc<dyn Attester>>,
        identity_key: &Path,
        profile: Profile,
        role: Option<PeerRole>,
        anchors: Option<Arc<cocoon_attestation::BlockAnchors>>,
    ) -> Result<(Arc<Identity>, Option<Arc<AttestationCheck>>), ConfigError> {
        let identity = match attester {
            Some(attester) => identity.with_attester(attester),
            None => identity,
        };
        let check = self.check(profile, identity_key, anchors.clone())?;
        if let Some(anchors) = anchors {
            identity.anchor_to(anchors);
        }
        if let (Some(role), Some(check)) = (role, &check) {
            self_check(&identity, check, role)?;
        }
        Ok((Arc::new(identity), check))
    }

    /// This node's key. In a TDX guest it is made in TEE memory at start and
    /// never read from or written to disk (a file could be one the host
    /// made, or keeps a copy of): an existing `identity_key` file is
    /// refused. Elsewhere it is the file, created on first start.
    fn identity(&self, identity_key: &Path) -> Result<Identity, ConfigError> {
        if self.key_manager.is_some() {
            return self.key_manager_checks();
        }
        if self.tee != TeeChoice::Tdx {
            return Identity::load_or_create(identity_key)
                .map_err(|e| ConfigError::new("identity_key", e.to_string()));
        }
        if identity_key.exists() {
            return Err(ConfigError::new(
                "identity_key",
                format!(
                    "{}: under tee = \"tdx\" this node's key is made in TEE memory at every start; a key file is refused (the host could have made it or kept a copy). Remove the file; a key that outlives restarts will come from a key manager (docs/key-manager.md)",
                    identity_key.display()
                ),
            ));
        }
        let identity =
            Identity::generate().map_err(|e| ConfigError::new("identity_key", e.to_string()))?;
        tracing::info!(fingerprint = %identity.fingerprint(), "identity made in TEE memory for this run (not written to disk)");
        Ok(identity)
    }

    /// A node whose key comes from a key manager: a TEE to show it, a
    /// policy to judge the key manager by, the owner's authorization. Its
    /// key until then (for asking) is made in memory.
    fn key_manager_checks(&self) -> Result<Identity, ConfigError> {
        if self.tee == TeeChoice::None {
            return Err(ConfigError::new(
                "attestation.key_manager",
                "a key manager releases keys only to nodes with TEE evidence: set attestation.tee",
            ));
        }
        if self.policy.is_none() {
            return Err(ConfigError::new(
                "attestation.key_manager",
                "needs attestation.policy, whose key_manager_images the key manager's evidence must pass",
            ));
        }
        if self.key_authorization.is_none() {
            return Err(ConfigError::new(
                "attestation.key_authorization",
                "required with attestation.key_manager: the owner's authorization naming this node's key (cocoon key-manager authorize)",
            ));
        }
        Identity::generate().map_err(|e| ConfigError::new("identity_key", e.to_string()))
    }

    /// Under the production profile verification is never optional: every
    /// role checks its peers' evidence against a policy, and proxies and
    /// workers (which see sealed traffic and sign receipts) run in a TDX
    /// guest. Without a policy a node trusts whatever keys its peers present,
    /// so a proxy could list its own key as a worker's and read every prompt;
    /// that mode is for development and is announced loudly.
    fn require_verification(
        &self,
        profile: Profile,
        role: Option<PeerRole>,
    ) -> Result<(), ConfigError> {
        if profile == Profile::Development {
            if self.policy.is_none() {
                tracing::warn!("NO ATTESTATION POLICY: peers are trusted on their pinned keys alone and their TEE evidence is NOT checked; a proxy could substitute its own key for a worker's and read prompts (development profile only)");
            }
            return Ok(());
        }
        if self.policy.is_none() {
            return Err(ConfigError::new(
                "attestation.policy",
                "required under profile = \"production\": the network's root configuration (allowed worker and proxy images, models; see config/root.example.toml) that peers' TEE evidence must satisfy. Without it this node would seal prompts to whatever keys a proxy lists",
            ));
        }
        if let Some(role) = role {
            if self.tee != TeeChoice::Tdx {
                return Err(ConfigError::new(
                    "attestation.tee",
                    format!("a {role} must run in a TDX guest under profile = \"production\" (tee = \"tdx\"): it handles sealed traffic, and its peers refuse it without evidence"),
                ));
            }
        }
        Ok(())
    }

    fn attester(&self, profile: Profile) -> Result<Option<Arc<dyn Attester>>, ConfigError> {
        Ok(match self.tee {
            TeeChoice::None => None,
            TeeChoice::Simulated if profile == Profile::Production => {
                return Err(ConfigError::new(
                    "attestation.tee",
                    "\"simulated\" is a fake TEE for development; it is refused unless profile = \"development\"",
                ))
            }
            TeeChoice::Simulated => Some(Arc::new(SimulatedTee::new())),
            TeeChoice::Tdx => {
                let tsm = match &self.configfs {
                    Some(root) => ConfigfsTsm::new(root),
                    None => ConfigfsTsm::default(),
                };
                if !tsm.available() {
                    return Err(ConfigError::new(
                        "attestation.tee",
                        "\"tdx\": configfs-tsm reports are not available here (not a TDX guest, or configfs not mounted; see attestation.configfs)",
                    ));
                }
                Some(Arc::new(tsm))
            }
        })
    }

    fn check(
        &self,
        profile: Profile,
        identity_key: &Path,
        anchors: Option<Arc<cocoon_attestation::BlockAnchors>>,
    ) -> Result<Option<Arc<AttestationCheck>>, ConfigError> {
        let Some(path) = &self.policy else {
            if self.root.is_some() {
                return Err(ConfigError::new(
                    "attestation.root",
                    "following the root contract's lists needs attestation.policy (the rules they do not carry: TCB statuses, freshness, GPUs)",
                ));
            }
            return Ok(None);
        };
        if let Some(secs) = self.root_refresh_secs {
            ConfigError::check_range("attestation.root_refresh_secs", secs, 1, 86_400)?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("attestation.policy", format!("{}: {e}", path.display()))
        })?;
        let policy: Policy = toml::from_str(&text).map_err(|e| {
            ConfigError::new("attestation.policy", format!("{}: {e}", path.display()))
        })?;
        if policy.allow_simulated && profile == Profile::Production {
            return Err(ConfigError::new(
                "attestation.policy",
                format!(
                    "{}: allow_simulated = true is refused unless profile = \"development\"",
                    path.display()
                ),
            ));
        }
        if policy.allow_simulated {
            tracing::warn!("this node ACCEPTS SIMULATED TEE evidence from peers: development only");
        }
        if policy.models.is_empty() && profile == Profile::Production {
            tracing::warn!(policy = %path.display(), "the root configuration lists no [[models]]: workers may serve any weights");
        }
        if policy.require_fresh_evidence && anchors.is_none() {
            return Err(ConfigError::new(
                "attestation.ton_api",
                format!("{}: the policy requires fresh evidence (require_fresh_evidence, max_evidence_age_secs), dated by TON masterchain blocks: set attestation.ton_api (testnet, mainnet or a TON HTTP API URL), or this role's chain API, so this node can look blocks up", path.display()),
            ));
        }
        let collateral = self.collateral_source(identity_key)?;
        let gpu = cocoon_attestation::gpu::GpuReferences::new(
            self.gpu_rims.as_deref(),
            self.rim_service.as_deref(),
        )
        .map_err(|e| ConfigError::new("attestation.gpu_rims", e))?;
        let gpu = match &self.gpu_ocsp {
            None => gpu,
            Some(url) => gpu.with_revocation(
                cocoon_attestation::gpu::ocsp::Revocation::new(url)
                    .map_err(|e| ConfigError::new("attestation.gpu_ocsp", e))?,
            ),
        };
        if let Some(service) = &self.rim_service {
            if service != "nvidia"
                && !service.starts_with("https://")
                && !service.starts_with("http://")
            {
                return Err(ConfigError::new(
                    "attestation.rim_service",
                    format!("\"nvidia\" or an http(s) URL, got {service:?}"),
                ));
            }
        }
        Ok(Some(Arc::new(AttestationCheck {
            policy,
            collateral,
            verify_at: None,
            anchors,
            gpu: Some(gpu),
            published: self
                .root
                .as_ref()
                .map(|root| Arc::new(cocoon_attestation::Published::new(root.clone()))),
        })))
    }
}

impl AttestationConfig {
    /// Where this worker's GPU evidence comes from: NVML needs TEE evidence
    /// to bind it to; the simulated GPU only beside the simulated TEE,
    /// under the development profile.
    pub fn gpu_attester(
        &self,
        profile: Profile,
    ) -> Result<Option<Arc<dyn cocoon_attestation::gpu::GpuAttester>>, ConfigError> {
        let field = "attestation.gpu";
        Ok(match self.gpu {
            GpuChoice::None => None,
            _ if self.tee == TeeChoice::None => {
                return Err(ConfigError::new(
                    field,
                    "GPU evidence is bound to this node's TEE evidence: set attestation.tee",
                ))
            }
            GpuChoice::Simulated if profile == Profile::Production => {
                return Err(ConfigError::new(
                    field,
                    "\"simulated\" is a fake GPU for development; it is refused unless profile = \"development\"",
                ))
            }
            GpuChoice::Simulated if self.tee != TeeChoice::Simulated => {
                return Err(ConfigError::new(
                    field,
                    "\"simulated\" goes only with tee = \"simulated\": a real TEE's evidence must not vouch for a fake GPU",
                ))
            }
            GpuChoice::Simulated => Some(Arc::new(cocoon_attestation::gpu::simulated::SimulatedGpu::new())),
            GpuChoice::Nvml => Some(Arc::new(cocoon_nvml::NvmlGpus)),
        })
    }

    /// A fixed collateral file, or a PCCS cache (started here), or none.
    fn collateral_source(
        &self,
        identity_key: &Path,
    ) -> Result<Option<CollateralSource>, ConfigError> {
        match (&self.collateral, &self.pccs_url) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "attestation.pccs_url",
                "set either a fixed collateral file or a PCCS URL, not both",
            )),
            (Some(path), None) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    ConfigError::new("attestation.collateral", format!("{}: {e}", path.display()))
                })?;
                let collateral = tdx::collateral_from_json(&bytes).map_err(|e| {
                    ConfigError::new("attestation.collateral", format!("{}: {e}", path.display()))
                })?;
                Ok(Some(CollateralSource::Fixed(Arc::new(collateral))))
            }
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigError::new(
                        "attestation.pccs_url",
                        format!("must be an http(s) URL, got {url:?}"),
                    ));
                }
                let dir = match &self.collateral_cache {
                    Some(dir) => dir.clone(),
                    None => identity_key
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join("collateral"),
                };
                let cache = tdx::CollateralCache::open(url, &dir)
                    .map_err(|e| ConfigError::new("attestation.collateral_cache", e))?;
                cache.start();
                Ok(Some(CollateralSource::Pccs(cache)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Read the newest block of the chains that date this node's evidence and
/// its peers' (`identity`'s and `check`'s, usually the same), and keep them
/// fresh: a node calls it at start, before it makes evidence. Fails naming
/// `attestation.ton_api` when the chain cannot be read.
pub async fn anchors_ready(
    identity: &Identity,
    check: Option<&AttestationCheck>,
) -> Result<(), ConfigError> {
    let mut seen: Vec<Arc<cocoon_attestation::BlockAnchors>> = Vec::new();
    for anchors in [identity.anchors(), check.and_then(|c| c.anchors.clone())]
        .into_iter()
        .flatten()
    {
        if seen.iter().any(|s| Arc::ptr_eq(s, &anchors)) {
            continue;
        }
        anchors.ready().await.map_err(|e| {
            ConfigError::new(
                "attestation.ton_api",
                format!("cannot read the newest TON masterchain block, which dates this node's evidence and its peers': {e}"),
            )
        })?;
        seen.push(anchors);
    }
    // What the network trusts, from its root contract: read before the
    // node serves (it trusts nobody until then), then followed.
    if let Some(published) = check.and_then(|c| c.published.as_ref()) {
        published.refresh().await.map_err(|e| {
            ConfigError::new(
                "attestation.root",
                format!(
                    "cannot read the images and models the root contract {} publishes: {e}",
                    published.root()
                ),
            )
        })?;
        published.follow();
    }
    Ok(())
}

/// Would this node's own evidence pass its policy as `role`? (Only when the
/// node has a TEE and its evidence can be verified here.)
fn self_check(
    identity: &Identity,
    check: &AttestationCheck,
    role: PeerRole,
) -> Result<(), ConfigError> {
    let binding =
        cocoon_attestation::report_data(identity.spki(), cocoon_attestation::Purpose::Tls, None);
    let Some(evidence) = identity.evidence(&binding) else {
        return Ok(());
    };
    let evidence =
        evidence.map_err(|e| ConfigError::new("attestation.tee", format!("no evidence: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let collateral = match (&evidence, &check.collateral) {
        (cocoon_attestation::Evidence::Tdx(quote), Some(source)) => source.for_quote(quote),
        _ => None,
    };
    let verdict = match evidence.verify(collateral.as_deref(), now) {
        Ok(verdict) => verdict,
        Err(cocoon_attestation::VerifyError::NoCollateral) => {
            tracing::warn!("no DCAP collateral for this node's platform yet: it cannot check its own quote against its policy at start");
            return Ok(());
        }
        Err(e) => {
            return Err(ConfigError::new(
                "attestation.tee",
                format!("this node's own evidence does not verify: {e}"),
            ))
        }
    };
    // The root contract's lists are read once the node runs; its own
    // policy's narrowing is checked here.
    let on_chain = check.published.is_some() && cocoon_attestation::Published::governs(role);
    check.policy.check_under(&verdict, role, Some(&binding), on_chain).map_err(|refusal| {
        let m = &verdict.measurements;
        ConfigError::new(
            "attestation.policy",
            format!(
                "peers would refuse this {role}: {refusal} (this node: mrtd {}, rtmr0 {}, rtmr1 {}, rtmr2 {}, rtmr3 {}, TCB {})",
                hex::encode(m.mrtd),
                hex::encode(m.rtmr[0]),
                hex::encode(m.rtmr[1]),
                hex::encode(m.rtmr[2]),
                hex::encode(m.rtmr[3]),
                verdict.tcb_status
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("policy.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn simulated_parts_are_refused_in_production_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        let simulated = AttestationConfig {
            tee: TeeChoice::Simulated,
            ..Default::default()
        };
        let err = simulated
            .load(&key, Profile::Production, None, None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.tee");
        simulated
            .load(&key, Profile::Development, None, None)
            .unwrap();

        let lenient = AttestationConfig {
            policy: Some(policy_file(
                dir.path(),
                "allow_simulated = true\nrequire_fresh_evidence = false\n",
            )),
            ..Default::default()
        };
        let err = lenient
            .load(&key, Profile::Production, None, None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.policy");
        let (_, check) = lenient
            .load(&key, Profile::Development, None, None)
            .unwrap();
        assert!(check.unwrap().policy.allow_simulated);
    }

    #[test]
    fn production_never_runs_without_verifying_peers() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        // A client node (no TEE) without a policy would seal to whatever keys
        // a proxy lists: refused, naming the key and what it is for.
        let unverified = AttestationConfig::default();
        for role in [None, Some(PeerRole::Proxy), Some(PeerRole::Worker)] {
            let err = unverified
                .load(&key, Profile::Production, role, None)
                .unwrap_err();
            assert_eq!(err.field, "attestation.policy", "{role:?}");
            assert!(err.message.contains("root configuration"), "{err}");
        }
        // With a policy, a client node without a TEE starts; a proxy or a
        // worker without TDX does not.
        let client = AttestationConfig {
            policy: Some(policy_file(dir.path(), "require_fresh_evidence = false\n")),
            ..Default::default()
        };
        let (_, check) = client.load(&key, Profile::Production, None, None).unwrap();
        assert!(check.is_some());
        for role in [PeerRole::Proxy, PeerRole::Worker] {
            let err = client
                .load(&key, Profile::Production, Some(role), None)
                .unwrap_err();
            assert_eq!(err.field, "attestation.tee", "{role}");
            assert!(
                err.message
                    .contains(&format!("a {role} must run in a TDX guest")),
                "{err}"
            );
        }
        // Development keeps the pinned-keys-only mode.
        let (_, check) = unverified
            .load(&key, Profile::Development, Some(PeerRole::Worker), None)
            .unwrap();
        assert!(check.is_none());
    }

    #[test]
    fn a_node_its_own_policy_would_refuse_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        let image = SimulatedTee::measurements().image_hash();
        let config = |policy: &str| AttestationConfig {
            tee: TeeChoice::Simulated,
            policy: Some(policy_file(dir.path(), policy)),
            ..Default::default()
        };
        let proxies_only = config(&format!(
            "allow_simulated = true\nrequire_fresh_evidence = false\nproxy_images = [\"{image}\"]\n"
        ));
        let err = proxies_only
            .load(&key, Profile::Development, Some(PeerRole::Worker), None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.policy");
        assert!(
            err.message.contains("not in the allowed worker images")
                && err.message.contains("mrtd"),
            "{err}"
        );
        // The same node as a proxy, or as a client node (never checked), starts.
        proxies_only
            .load(&key, Profile::Development, Some(PeerRole::Proxy), None)
            .unwrap();
        proxies_only
            .load(&key, Profile::Development, None, None)
            .unwrap();
    }

    #[test]
    fn tdx_without_configfs_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        let tdx = AttestationConfig {
            tee: TeeChoice::Tdx,
            configfs: Some("/nonexistent/tsm".into()),
            ..Default::default()
        };
        let err = tdx.load(&key, Profile::Production, None, None).unwrap_err();
        assert!(
            err.field == "attestation.tee" && err.message.contains("configfs"),
            "{err}"
        );

        let typo = AttestationConfig {
            policy: Some(policy_file(dir.path(), "allowed_imagez = []\n")),
            ..Default::default()
        };
        let err = typo
            .load(&key, Profile::Production, None, None)
            .unwrap_err();
        assert!(err.to_string().contains("allowed_imagez"), "{err}");

        let collateral = dir.path().join("collateral.json");
        std::fs::write(&collateral, "not json").unwrap();
        let bad_collateral = AttestationConfig {
            policy: Some(policy_file(dir.path(), "require_fresh_evidence = false\n")),
            collateral: Some(collateral),
            ..Default::default()
        };
        let err = bad_collateral
            .load(&key, Profile::Production, None, None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.collateral");
    }

    /// A policy requiring fresh evidence (the default) needs a chain to
    /// date evidence by: without one the node does not start, naming the
    /// key to set.
    /// The simulated GPU only in development and only beside the simulated
    /// TEE (a real TDX quote must not vouch for fake GPU evidence); GPU
    /// evidence needs TEE evidence to be bound to; bad RIM settings named.
    #[test]
    fn gpu_choices_are_checked_naming_the_key() {
        let refused = |config: AttestationConfig, profile| {
            config.gpu_attester(profile).err().expect("refused")
        };
        let simulated = AttestationConfig {
            tee: TeeChoice::Simulated,
            gpu: GpuChoice::Simulated,
            ..Default::default()
        };
        let err = refused(simulated.clone(), Profile::Production);
        assert_eq!(err.field, "attestation.gpu");
        assert!(simulated
            .gpu_attester(Profile::Development)
            .unwrap()
            .is_some());
        let beside_tdx = AttestationConfig {
            tee: TeeChoice::Tdx,
            ..simulated.clone()
        };
        let err = refused(beside_tdx, Profile::Development);
        assert!(err.message.contains("tee = \"simulated\""), "{err}");
        let unbound = AttestationConfig {
            gpu: GpuChoice::Nvml,
            ..Default::default()
        };
        let err = refused(unbound, Profile::Development);
        assert!(err.message.contains("set attestation.tee"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        let bad_service = AttestationConfig {
            policy: Some(policy_file(dir.path(), "require_fresh_evidence = false\n")),
            rim_service: Some("ftp://rims".into()),
            ..Default::default()
        };
        let err = bad_service
            .load(&key, Profile::Development, None, None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.rim_service");
        let file = dir.path().join("rims.txt");
        std::fs::write(&file, "not a folder").unwrap();
        let not_a_folder = AttestationConfig {
            gpu_rims: Some(file),
            rim_service: None,
            ..bad_service
        };
        let err = not_a_folder
            .load(&key, Profile::Development, None, None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.gpu_rims");
        let bad_ocsp = AttestationConfig {
            policy: Some(policy_file(dir.path(), "require_fresh_evidence = false\n")),
            gpu_ocsp: Some("ocsp.example".into()),
            ..Default::default()
        };
        let err = bad_ocsp
            .load(&key, Profile::Development, None, None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.gpu_ocsp");
    }

    #[test]
    fn fresh_evidence_needs_a_chain_to_date_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        let config = AttestationConfig {
            policy: Some(policy_file(dir.path(), "")),
            ..Default::default()
        };
        let err = config
            .load(&key, Profile::Production, None, None)
            .unwrap_err();
        assert_eq!(err.field, "attestation.ton_api");
        assert!(err.message.contains("fresh evidence"), "{err}");
    }

    /// In a TDX guest the host must not choose or keep the node's key: a
    /// key file (one the host could have written) is refused, and the key
    /// made in memory is never written where the host can read it. Before,
    /// the node loaded whatever PEM file it was given.
    #[test]
    fn a_tdx_node_makes_its_key_in_memory_and_refuses_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let configfs = dir.path().join("tsm");
        std::fs::create_dir(&configfs).unwrap();
        let tdx = AttestationConfig {
            tee: TeeChoice::Tdx,
            configfs: Some(configfs),
            ..Default::default()
        };
        let key = dir.path().join("node.pem");
        let (a, _) = tdx.load(&key, Profile::Development, None, None).unwrap();
        let (b, _) = tdx.load(&key, Profile::Development, None, None).unwrap();
        assert!(!key.exists(), "a TDX node's key is never written");
        assert_ne!(a.fingerprint(), b.fingerprint(), "a new key every start");

        // The host supplies a key of its own.
        Identity::load_or_create(&key).unwrap();
        let err = tdx
            .load(&key, Profile::Development, None, None)
            .unwrap_err();
        assert_eq!(err.field, "identity_key");
        assert!(err.message.contains("a key file is refused"), "{err}");
    }
}
