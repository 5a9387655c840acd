//! What a verifier checks GPU evidence against: NVIDIA's device and RIM
//! roots (built in), the RIMs of the driver and VBIOS versions GPUs report
//! (a folder, filled from NVIDIA's RIM service where one is configured),
//! and, only where the policy allows simulated evidence, the SIMULATED
//! GPU's roots and RIMs. A RIM not held yet is fetched in the background
//! and the evidence refused as "being fetched" meanwhile (as DCAP
//! collateral is), so verification never waits on the network; async
//! callers fetch first ([`GpuReferences::fetch_missing`]). The service is
//! not trusted: every RIM's signature is checked at every verification.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::evidence::GpuEvidence;
use super::ocsp::Revocation;
use super::{certs, simulated, GpuReference, GpuRefusal, GpuVerdict, Rim, RimKind, SpdmReport};
use crate::sync::LockRecover;

const NVIDIA_DEVICE_ROOT: &str = include_str!("roots/nvidia_device_identity_ca.pem");
const NVIDIA_RIM_ROOT: &str = include_str!("roots/nvidia_rim_root.pem");
/// NVIDIA's RIM service (`rim_service = "nvidia"`).
pub const NVIDIA_RIM_SERVICE: &str = "https://rim.attestation.nvidia.com/v1/rim/";

fn root(pem: &str) -> Vec<u8> {
    certs::from_pem(pem, "a built-in root").expect("built-in roots parse")[0].clone()
}

/// The simulated GPU's roots and RIMs, made once per process.
fn simulated_reference() -> &'static GpuReference {
    static REFERENCE: OnceLock<GpuReference> = OnceLock::new();
    REFERENCE.get_or_init(|| GpuReference {
        device_root: simulated::device_root(),
        rim_root: simulated::rim_root(),
        rims: simulated::rims(),
    })
}

/// RIMs held, by (kind, lowercase version).
type Held = BTreeMap<(RimKind, String), Rim>;

struct Inner {
    device_root: Vec<u8>,
    rim_root: Vec<u8>,
    held: Mutex<Held>,
    /// Where fetched RIMs are kept (and read from at start).
    dir: Option<PathBuf>,
    service: Option<String>,
    http: reqwest::Client,
    /// RIM ids being fetched now.
    fetching: Mutex<BTreeSet<String>>,
    /// RIM ids whose last fetch failed: why, and when.
    failed: Mutex<BTreeMap<String, (String, Instant)>>,
}

/// How long a failed fetch is not retried (evidence needing it is refused
/// with the reason meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// A verifier's GPU reference material; cheap to clone.
#[derive(Clone)]
pub struct GpuReferences {
    inner: Arc<Inner>,
    /// Revocation of the device's and the RIMs' certificates, where a
    /// responder is configured.
    revocation: Option<Revocation>,
}

impl std::fmt::Debug for GpuReferences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuReferences")
            .field("dir", &self.inner.dir)
            .field("service", &self.inner.service)
            .field("revocation", &self.revocation)
            .finish_non_exhaustive()
    }
}

impl GpuReferences {
    /// NVIDIA's roots, the RIMs in `dir` (`*.swidtag` or `*.xml`; the
    /// folder is made if missing, and fetched RIMs are kept there), and
    /// `service` (a RIM service base URL, the RIM's id appended) for those
    /// it lacks.
    pub fn new(dir: Option<&Path>, service: Option<&str>) -> Result<Self, String> {
        let mut held = Held::new();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries {
                let path = entry.map_err(|e| e.to_string())?.path();
                let ext = path.extension().and_then(|e| e.to_str());
                if !matches!(ext, Some("swidtag" | "xml")) {
                    continue;
                }
                let xml = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let rim = Rim::parse_any(&xml).map_err(|e| format!("{}: {e}", path.display()))?;
                held.insert((rim.kind, rim.version.clone()), rim);
            }
        }
        let service = service.map(|s| {
            let base = if s == "nvidia" { NVIDIA_RIM_SERVICE } else { s };
            if base.ends_with('/') {
                base.to_string()
            } else {
                format!("{base}/")
            }
        });
        Ok(Self {
            inner: Arc::new(Inner {
                device_root: root(NVIDIA_DEVICE_ROOT),
                rim_root: root(NVIDIA_RIM_ROOT),
                held: Mutex::new(held),
                dir: dir.map(Path::to_path_buf),
                service,
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(30))
                    .build()
                    .map_err(|e| e.to_string())?,
                fetching: Mutex::new(BTreeSet::new()),
                failed: Mutex::new(BTreeMap::new()),
            }),
            revocation: None,
        })
    }

    /// Check every certificate's revocation with `revocation` too.
    pub fn with_revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = Some(revocation);
        self
    }

    /// Hold `rim` (tests, audits).
    pub fn add(&self, rim: Rim) {
        self.held().insert((rim.kind, rim.version.clone()), rim);
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.held.locked()
    }

    /// Verify one GPU's `evidence` answering `nonce` at Unix time `at`: a
    /// chain to NVIDIA's root (or, with `allow_simulated`, the simulated
    /// GPU's), then every step of [`super::verify`] against the RIMs of the
    /// versions it reports.
    pub fn verify(
        &self,
        evidence: &GpuEvidence,
        nonce: &[u8; 32],
        allow_simulated: bool,
        at: u64,
    ) -> Result<GpuVerdict, GpuRefusal> {
        // Chain, signature and nonce first, once: RIMs are looked up (and
        // fetched) only for evidence a genuine GPU made for this nonce.
        let signed = |root: &[u8], nonce| {
            super::verify_signed(&evidence.report, &evidence.chain, root, nonce, at)
        };
        let simulated_report = allow_simulated
            .then(|| signed(&simulated_reference().device_root, None).ok())
            .flatten();
        let simulated = simulated_report.is_some();
        let (report, reference) = match simulated_report {
            Some(report) => (
                super::answers(report, nonce)?,
                simulated_reference().clone(),
            ),
            None => {
                let report = signed(&self.inner.device_root, Some(nonce))?;
                let reference = GpuReference {
                    device_root: self.inner.device_root.clone(),
                    rim_root: self.inner.rim_root.clone(),
                    rims: vec![
                        self.rim_for(&report, RimKind::Driver)?,
                        self.rim_for(&report, RimKind::Vbios)?,
                    ],
                };
                (report, reference)
            }
        };
        let mut verdict = super::verify_against_rims(&report, &evidence.chain, &reference, at)?;
        if let Some(revocation) = &self.revocation {
            revocation.check(&evidence.chain, &reference.device_root, at, "device chain")?;
            for rim in &reference.rims {
                let what = format!("{} RIM's signing chain", rim.kind);
                revocation.check(&rim.chain, &reference.rim_root, at, &what)?;
            }
        }
        verdict.simulated = simulated;
        Ok(verdict)
    }

    /// The held RIM of `kind` for the version `report` names; missing, it is
    /// fetched in the background where a service is configured.
    fn rim_for(&self, report: &SpdmReport, kind: RimKind) -> Result<Rim, GpuRefusal> {
        if let Some(rim) = self.held_rim(report, kind)? {
            return Ok(rim);
        }
        let (version, id) = wanted(report, kind)?;
        if let Some((reason, when)) = self.failure(&id) {
            if when.elapsed() < RETRY_AFTER {
                return Err(GpuRefusal::RimUnavailable { id, reason });
            }
        }
        if self.inner.service.is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let this = self.clone();
                let fetch_id = id.clone();
                runtime.spawn(async move {
                    if let Err(e) = this.fetch(kind, &version, &fetch_id).await {
                        tracing::warn!(rim = %fetch_id, error = %e, "could not fetch a GPU RIM");
                    }
                });
                return Err(GpuRefusal::RimPending(id));
            }
        }
        Err(GpuRefusal::NoRim { what: kind, id })
    }

    fn failure(&self, id: &str) -> Option<(String, Instant)> {
        let failed = self.inner.failed.locked();
        failed.get(id).cloned()
    }

    /// Fetch what verifying `evidence` will need and this store lacks
    /// (async callers, before [`GpuReferences::verify`]): the RIMs, and the
    /// revocation status of every certificate, only for reports a genuine
    /// (or simulated) GPU signed, valid at Unix time `at`. Failures are left
    /// for verification to refuse.
    pub async fn fetch_missing(&self, evidence: &[GpuEvidence], at: u64) {
        let sim = simulated_reference();
        for gpu in evidence {
            let signed =
                |root: &[u8]| super::verify_signed(&gpu.report, &gpu.chain, root, None, at).ok();
            let (device_root, rim_root, rims) =
                if let Some(report) = signed(&self.inner.device_root) {
                    self.fetch_rims(&report).await;
                    let rims: Vec<Rim> = [RimKind::Driver, RimKind::Vbios]
                        .into_iter()
                        .filter_map(|kind| self.held_rim(&report, kind).ok().flatten())
                        .collect();
                    (&self.inner.device_root, &self.inner.rim_root, rims)
                } else if signed(&sim.device_root).is_some() {
                    (&sim.device_root, &sim.rim_root, sim.rims.clone())
                } else {
                    continue;
                };
            if let Some(revocation) = &self.revocation {
                revocation.fetch_chain(&gpu.chain, device_root, at).await;
                for rim in rims {
                    revocation.fetch_chain(&rim.chain, rim_root, at).await;
                }
            }
        }
    }

    /// Fetch the RIMs `report` names that are neither held nor failed lately.
    async fn fetch_rims(&self, report: &SpdmReport) {
        if self.inner.service.is_none() {
            return;
        }
        for kind in [RimKind::Driver, RimKind::Vbios] {
            let Ok((version, id)) = wanted(report, kind) else {
                continue;
            };
            let recent_failure = self
                .failure(&id)
                .is_some_and(|(_, when)| when.elapsed() < RETRY_AFTER);
            if recent_failure || self.held_rim(report, kind).is_ok_and(|r| r.is_some()) {
                continue;
            }
            if let Err(e) = self.fetch(kind, &version, &id).await {
                tracing::warn!(rim = %id, error = %e, "could not fetch a GPU RIM");
            }
        }
    }

    /// The held RIM of `kind` for the version `report` names, if held.
    fn held_rim(&self, report: &SpdmReport, kind: RimKind) -> Result<Option<Rim>, GpuRefusal> {
        let (version, _) = wanted(report, kind)?;
        Ok(self.held().get(&(kind, version.to_lowercase())).cloned())
    }

    /// One RIM from the service (NVIDIA's answer: JSON with the RIM in
    /// base64 under `rim` and its SHA-256 under `sha256`): it must be the
    /// RIM of `kind` for `version`; kept in memory and in the folder.
    async fn fetch(&self, kind: RimKind, version: &str, id: &str) -> Result<(), String> {
        let Some(base) = &self.inner.service else {
            return Ok(());
        };
        if !self.inner.fetching.locked().insert(id.to_string()) {
            return Ok(());
        }
        let result = self.fetch_once(base, kind, version, id).await;
        let mut failed = self.inner.failed.locked();
        match &result {
            Ok(()) => failed.remove(id),
            Err(e) => failed.insert(id.to_string(), (e.clone(), Instant::now())),
        };
        drop(failed);
        self.inner.fetching.locked().remove(id);
        result
    }

    async fn fetch_once(
        &self,
        base: &str,
        kind: RimKind,
        version: &str,
        id: &str,
    ) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Answer {
            rim: String,
            sha256: Option<String>,
        }
        let url = format!("{base}{id}");
        let response = self
            .inner
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()));
        }
        let answer: Answer = response
            .json()
            .await
            .map_err(|e| format!("{url}: not a RIM service answer: {e}"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(answer.rim.trim())
            .map_err(|e| format!("{url}: rim is not base64: {e}"))?;
        if let Some(sha) = &answer.sha256 {
            if !hex::encode(Sha256::digest(&bytes)).eq_ignore_ascii_case(sha) {
                return Err(format!(
                    "{url}: the RIM does not match the sha256 sent with it"
                ));
            }
        }
        let xml = String::from_utf8(bytes).map_err(|e| format!("{url}: {e}"))?;
        let rim = Rim::parse(kind, &xml).map_err(|e| format!("{url}: {e}"))?;
        if rim.version != version.to_lowercase() {
            return Err(format!(
                "{url}: the service answered the {kind} RIM of version {}, not {version}",
                rim.version
            ));
        }
        if let Some(dir) = &self.inner.dir {
            let path = dir.join(format!("{id}.swidtag"));
            if let Err(e) = std::fs::write(&path, &xml) {
                tracing::warn!(path = %path.display(), error = %e, "could not keep a fetched RIM");
            }
        }
        tracing::info!(rim = %id, "GPU RIM fetched");
        self.add(rim);
        Ok(())
    }
}

/// The version `report` names for `kind`, and the RIM service's id for it.
fn wanted(report: &SpdmReport, kind: RimKind) -> Result<(String, String), GpuRefusal> {
    let missing = |what: &str| GpuRefusal::Malformed(format!("the report names no {what}"));
    Ok(match kind {
        RimKind::Driver => (
            report
                .driver_version()
                .ok_or_else(|| missing("driver version"))?,
            report
                .driver_rim_id()
                .ok_or_else(|| missing("driver version"))?,
        ),
        RimKind::Vbios => (
            report
                .vbios_version()
                .ok_or_else(|| missing("VBIOS version"))?,
            report
                .vbios_rim_id()
                .ok_or_else(|| missing("VBIOS version or board (project, SKU, chip SKU)"))?,
        ),
    })
}

#[cfg(test)]
mod tests;
