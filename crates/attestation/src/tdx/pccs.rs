//! DCAP collateral from a PCCS (Intel's Provisioning Certificate Caching
//! Service, API v4), cached on disk and in memory per platform (FMSPC and PCK
//! CA), and refreshed in the background before its `nextUpdate`.
//!
//! Verification never waits for the network: [`CollateralCache::for_quote`]
//! answers from memory. A quote from a platform not seen before is refused
//! ("collateral not cached yet") and its collateral is fetched at once in the
//! background, so the peer's next attempt (nodes redial with backoff) passes.
//! A failed refresh keeps the collateral already held until it expires.

use crate::sync::{LockRecover, RwLockRecover};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{collateral_from_json, Collateral};

/// Refresh collateral this long before its `nextUpdate`.
const REFRESH_MARGIN_SECS: u64 = 6 * 3600;
/// How often the refresher looks for collateral due for refresh.
const TICK: Duration = Duration::from_secs(60);
/// Wait between failed fetches of the same platform's collateral.
const RETRY_SECS: u64 = 60;

/// One platform: its FMSPC (hex, upper case) and PCK CA (`processor` or `platform`).
pub type Platform = (String, String);

/// Why collateral could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("PCCS {url}: {message}")]
pub struct FetchError {
    pub url: String,
    pub message: String,
}

/// Collateral that cannot be used, or a quote that names no platform.
#[derive(Debug, thiserror::Error)]
pub enum CollateralError {
    #[error("{0}")]
    Read(String),
    #[error("nextUpdate: {0}")]
    NextUpdate(String),
    #[error("the quote's platform: {0}")]
    Platform(String),
    #[error("{}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Http(String),
}

struct Entry {
    collateral: Arc<Collateral>,
    next_update: u64,
}

/// Collateral per platform, kept fresh from a PCCS.
pub struct CollateralCache {
    pccs_url: String,
    dir: PathBuf,
    entries: RwLock<HashMap<Platform, Entry>>,
    /// Platforms seen in quotes whose collateral is not held yet.
    wanted: Mutex<HashSet<Platform>>,
    /// When each platform's last fetch failed (Unix seconds).
    failed: Mutex<HashMap<Platform, u64>>,
    wake: tokio::sync::Notify,
    http: reqwest::Client,
}

impl std::fmt::Debug for CollateralCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollateralCache")
            .field("pccs_url", &self.pccs_url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CollateralCache {
    /// A cache backed by `dir` (created if missing; collateral saved there is
    /// loaded now) fetching from `pccs_url`. Call [`start`](Self::start) to
    /// keep it fresh.
    pub fn open(pccs_url: &str, dir: &Path) -> Result<Arc<Self>, CollateralError> {
        let dir_error = |source| CollateralError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        let mut entries = HashMap::new();
        let listing = std::fs::read_dir(dir).map_err(dir_error)?;
        for file in listing.flatten() {
            let path = file.path();
            let Some(platform) = platform_of_file(&path) else {
                continue;
            };
            let read = std::fs::read(&path).map_err(|e| CollateralError::Read(e.to_string()));
            match read
                .and_then(|b| {
                    collateral_from_json(&b).map_err(|e| CollateralError::Read(e.to_string()))
                })
                .and_then(entry)
            {
                Ok(entry) => {
                    entries.insert(platform, entry);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable cached collateral")
                }
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CollateralError::Http(e.to_string()))?;
        Ok(Arc::new(Self {
            pccs_url: pccs_url.trim_end_matches('/').to_string(),
            dir: dir.to_path_buf(),
            entries: RwLock::new(entries),
            wanted: Mutex::default(),
            failed: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            http,
        }))
    }

    /// Keep the cache fresh from a background thread of its own (never on
    /// the request path), until the process exits.
    pub fn start(self: &Arc<Self>) {
        let cache = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cocoon-collateral".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(cache.refresh_forever()),
                    Err(e) => tracing::error!(error = %e, "collateral refresher could not start"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "collateral refresher could not start");
        }
    }

    /// The collateral for the platform that produced `quote`, if held. When it
    /// is not, the platform is queued for fetching.
    pub fn for_quote(&self, quote: &[u8]) -> Option<Arc<Collateral>> {
        let platform = platform_of_quote(quote).ok()?;
        if let Some(entry) = self.entries.reading().get(&platform) {
            return Some(entry.collateral.clone());
        }
        {
            let mut wanted = self.wanted.locked();
            wanted.insert(platform);
        }
        self.wake.notify_one();
        None
    }

    /// Platforms whose collateral is held, with their `nextUpdate`.
    pub fn held(&self) -> Vec<(Platform, u64)> {
        self.entries
            .reading()
            .iter()
            .map(|(p, e)| (p.clone(), e.next_update))
            .collect()
    }

    /// Fetch, check and store the collateral of `platform` now.
    pub async fn fetch(&self, platform: &Platform) -> Result<(), FetchError> {
        let collateral = self.download(platform).await?;
        let entry = entry(collateral.clone()).map_err(|e| FetchError {
            url: self.pccs_url.clone(),
            message: e.to_string(),
        })?;
        let path = self.dir.join(format!("{}-{}.json", platform.0, platform.1));
        let json = serde_json::to_vec_pretty(&collateral).expect("collateral serializes");
        let tmp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "could not save collateral to the cache");
        }
        tracing::info!(fmspc = %platform.0, ca = %platform.1, next_update = entry.next_update, "DCAP collateral fetched");
        {
            let mut entries = self.entries.writing();
            entries.insert(platform.clone(), entry);
        }
        Ok(())
    }

    /// Fetch what is wanted or due, forever.
    async fn refresh_forever(self: Arc<Self>) {
        loop {
            self.refresh_due(unix_now()).await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Fetch the collateral of platforms wanted, or held but within the
    /// refresh margin of their `nextUpdate` at `now`; not those that failed
    /// less than a minute ago.
    pub async fn refresh_due(&self, now: u64) {
        let mut due: Vec<Platform> = self.wanted.locked().drain().collect();
        {
            let entries = self.entries.reading();
            due.extend(
                entries
                    .iter()
                    .filter(|(_, e)| now + REFRESH_MARGIN_SECS >= e.next_update)
                    .map(|(p, _)| p.clone()),
            );
        }
        for platform in due {
            let recently_failed = self
                .failed
                .locked()
                .get(&platform)
                .is_some_and(|at| now < at + RETRY_SECS);
            if recently_failed {
                {
                    let mut wanted = self.wanted.locked();
                    wanted.insert(platform);
                }
                continue;
            }
            match self.fetch(&platform).await {
                Ok(()) => {
                    let mut failed = self.failed.locked();
                    failed.remove(&platform);
                }
                Err(e) => {
                    tracing::warn!(fmspc = %platform.0, error = %e, "DCAP collateral fetch failed; keeping what is held");
                    {
                        let mut failed = self.failed.locked();
                        failed.insert(platform, now);
                    }
                }
            }
        }
    }

    async fn download(&self, (fmspc, ca): &Platform) -> Result<Collateral, FetchError> {
        let base = &self.pccs_url;
        let pck_crl = self
            .get(&format!(
                "{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
            ))
            .await?;
        let tcb = self
            .get(&format!("{base}/tdx/certification/v4/tcb?fmspc={fmspc}"))
            .await?;
        let qe = self
            .get(&format!("{base}/tdx/certification/v4/qe/identity"))
            .await?;
        let root = self
            .get(&format!("{base}/sgx/certification/v4/rootcacrl"))
            .await?;
        let tcb_body: TcbInfoResponse = parse_json(&tcb)?;
        let qe_body: QeIdentityResponse = parse_json(&qe)?;
        Ok(Collateral {
            pck_crl_issuer_chain: issuer_chain(&pck_crl, &["SGX-PCK-CRL-Issuer-Chain"])?,
            root_ca_crl: hex_or_der(&root.body),
            pck_crl: pck_crl.body.clone(),
            tcb_info_issuer_chain: issuer_chain(
                &tcb,
                &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
            )?,
            tcb_info: tcb_body.tcb_info.get().to_string(),
            tcb_info_signature: hex::decode(&tcb_body.signature)
                .map_err(|_| tcb.error("tcbInfo signature is not hex"))?,
            qe_identity_issuer_chain: issuer_chain(&qe, &["SGX-Enclave-Identity-Issuer-Chain"])?,
            qe_identity: qe_body.enclave_identity.get().to_string(),
            qe_identity_signature: hex::decode(&qe_body.signature)
                .map_err(|_| qe.error("enclaveIdentity signature is not hex"))?,
            pck_certificate_chain: None,
        })
    }

    async fn get(&self, url: &str) -> Result<Response, FetchError> {
        let fail = |message: String| FetchError {
            url: url.to_string(),
            message,
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_vec();
        Ok(Response {
            url: url.to_string(),
            headers,
            body,
        })
    }
}

struct Response {
    url: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Response {
    fn error(&self, message: &str) -> FetchError {
        FetchError {
            url: self.url.clone(),
            message: message.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfoResponse {
    tcb_info: Box<RawValue>,
    signature: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentityResponse {
    enclave_identity: Box<RawValue>,
    signature: String,
}

fn parse_json<T: serde::de::DeserializeOwned>(response: &Response) -> Result<T, FetchError> {
    serde_json::from_slice(&response.body).map_err(|e| response.error(&format!("bad JSON: {e}")))
}

/// An issuer-chain header (URL-encoded PEM), under the first of `names` present.
fn issuer_chain(response: &Response, names: &[&str]) -> Result<String, FetchError> {
    let value = names
        .iter()
        .find_map(|n| response.headers.get(*n))
        .ok_or_else(|| response.error(&format!("missing header {}", names[0])))?;
    let value = value
        .to_str()
        .map_err(|_| response.error("issuer chain header is not ASCII"))?;
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| response.error("issuer chain header is not UTF-8"))
}

/// A PCCS returns the root CA CRL hex-encoded; Intel's PCS as DER.
fn hex_or_der(body: &[u8]) -> Vec<u8> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| hex::decode(s.trim()).ok())
        .unwrap_or_else(|| body.to_vec())
}

fn entry(collateral: Collateral) -> Result<Entry, CollateralError> {
    let next_update = next_update(&collateral.tcb_info)?.min(next_update(&collateral.qe_identity)?);
    Ok(Entry {
        collateral: Arc::new(collateral),
        next_update,
    })
}

/// The `nextUpdate` (Unix seconds) of a TCB info or QE identity JSON document.
fn next_update(json: &str) -> Result<u64, CollateralError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Dated {
        next_update: String,
    }
    let dated: Dated =
        serde_json::from_str(json).map_err(|e| CollateralError::NextUpdate(e.to_string()))?;
    let at = time::OffsetDateTime::parse(
        &dated.next_update,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| CollateralError::NextUpdate(format!("{:?}: {e}", dated.next_update)))?;
    Ok(at.unix_timestamp().max(0) as u64)
}

/// The platform (FMSPC, PCK CA) of a quote, from its PCK certificate.
pub fn platform_of_quote(quote: &[u8]) -> Result<Platform, CollateralError> {
    let quote = dcap_qvl::quote::Quote::parse(quote).map_err(platform_error)?;
    let fmspc = dcap_qvl::intel::quote_fmspc(&quote).map_err(platform_error)?;
    let ca = dcap_qvl::intel::quote_ca(&quote).map_err(platform_error)?;
    Ok((hex::encode_upper(fmspc), ca.as_id_str().to_string()))
}

fn platform_error(e: impl std::fmt::Display) -> CollateralError {
    CollateralError::Platform(format!("{e:#}"))
}

fn platform_of_file(path: &Path) -> Option<Platform> {
    let name = path.file_name()?.to_str()?.strip_suffix(".json")?;
    let (fmspc, ca) = name.split_once('-')?;
    (fmspc.len() == 12 && matches!(ca, "processor" | "platform"))
        .then(|| (fmspc.to_string(), ca.to_string()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
