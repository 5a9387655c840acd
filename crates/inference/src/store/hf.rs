//! `hf:OWNER/REPO --file NAME.gguf`: a plain HTTPS download from a Hugging Face
//! hub (`$HF_ENDPOINT`, default the public hub) that survives interruptions: the
//! partial file is kept and the next attempt asks only for the missing bytes.
//! The result must match a pinned SHA-256 or the hub's LFS hash
//! (`X-Linked-Etag`), else it is deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use super::{ModelStore, Progress, StoreError, StoredModel};
use crate::model_hash::sha256_file;

const ATTEMPTS: u32 = 5;

/// Why one download attempt stopped (the next attempt resumes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The request could not be sent or answered.
    #[error("{0}")]
    Request(#[source] reqwest::Error),
    /// The hub answered with an unexpected status.
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// The body broke off while being read.
    #[error("{0}")]
    Read(#[source] io::Error),
    /// The partial file could not be opened or written.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The connection ended before the announced length.
    #[error("connection closed at {done} of {total} bytes")]
    Truncated { done: u64, total: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSource {
    pub repo: String,
    pub file: String,
    pub revision: String,
    pub sha256: Option<String>,
    /// The hub's base URL.
    pub endpoint: String,
}

impl HfSource {
    pub fn new(repo: &str, file: Option<&str>, sha256: Option<&str>) -> Result<Self, StoreError> {
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(StoreError::Source(format!(
                "hf:{repo}: expected hf:OWNER/REPO"
            )));
        }
        let file = file.ok_or_else(|| {
            StoreError::Source(format!(
                "hf:{repo}: name the file to fetch with --file NAME.gguf"
            ))
        })?;
        if !file.ends_with(".gguf") || file.contains("..") {
            return Err(StoreError::Source(format!(
                "--file {file:?}: expected a .gguf file in the repository"
            )));
        }
        if let Some(h) = sha256 {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(StoreError::Source(format!(
                    "--sha256 {h:?}: expected 64 hex digits"
                )));
            }
        }
        Ok(Self {
            repo: repo.to_string(),
            file: file.to_string(),
            revision: "main".into(),
            sha256: sha256.map(str::to_ascii_lowercase),
            endpoint: std::env::var("HF_ENDPOINT")
                .unwrap_or_else(|_| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint, self.repo, self.revision, self.file
        )
    }
}

pub(super) fn pull(
    store: &ModelStore,
    source: &HfSource,
    progress: Progress,
) -> Result<StoredModel, StoreError> {
    let file_name = source.file.rsplit('/').next().unwrap_or(&source.file);
    let scratch = store.scratch(file_name);
    let client = Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(None)
        .build()
        .map_err(StoreError::Http)?;
    let mut expected = source.sha256.clone();
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        match download(&client, source, &scratch, progress) {
            Ok(hub_hash) => {
                expected = expected.or(hub_hash);
                last_error = None;
                break;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "download interrupted; resuming");
                last_error = Some(e);
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            }
        }
    }
    if let Some(e) = last_error {
        return Err(StoreError::Download {
            url: source.url(),
            attempts: ATTEMPTS,
            source: e,
        });
    }
    let expected = expected.ok_or_else(|| {
        StoreError::Layout(format!(
            "{}: the hub gave no SHA-256 for this file; pass --sha256 to pin one",
            source.url()
        ))
    })?;
    let actual = sha256_file(&scratch, |done, total| progress("verifying", done, total))
        .map_err(StoreError::io(&scratch))?;
    if actual != expected {
        let _ = fs::remove_file(&scratch);
        return Err(StoreError::Integrity {
            what: format!(
                "{}: SHA-256 mismatch, the download was deleted",
                source.url()
            ),
            expected,
            got: actual,
        });
    }
    store.install(
        file_name,
        &scratch,
        actual,
        format!("hf:{}/{}", source.repo, source.file),
    )
}

/// One attempt: continue `scratch` from its length. Returns the hub's hash.
fn download(
    client: &Client,
    source: &HfSource,
    scratch: &Path,
    progress: Progress,
) -> Result<Option<String>, DownloadError> {
    let file_error = |source| DownloadError::File {
        path: scratch.to_path_buf(),
        source,
    };
    let have = fs::metadata(scratch).map_or(0, |m| m.len());
    let mut request = client.get(source.url());
    if have > 0 {
        request = request.header(RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().map_err(DownloadError::Request)?;
    let hub_hash = lfs_hash(response.headers());
    let (mut out, mut done, total) = match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            let total = content_range_total(response.headers()).unwrap_or(0);
            let out = OpenOptions::new()
                .append(true)
                .open(scratch)
                .map_err(file_error)?;
            (out, have, total)
        }
        StatusCode::OK => {
            let total = header_u64(response.headers(), CONTENT_LENGTH.as_str()).unwrap_or(0);
            (File::create(scratch).map_err(file_error)?, 0, total)
        }
        // The partial file is already whole.
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => return Ok(hub_hash),
        status => return Err(DownloadError::Status(status)),
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = response.read(&mut buf).map_err(DownloadError::Read)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(file_error)?;
        done += n as u64;
        progress("downloading", done, total);
    }
    out.sync_all().map_err(file_error)?;
    if total > 0 && done != total {
        return Err(DownloadError::Truncated { done, total });
    }
    Ok(hub_hash)
}

/// The hub puts the LFS object's SHA-256 in `X-Linked-Etag` (quoted).
fn lfs_hash(headers: &HeaderMap) -> Option<String> {
    let etag = headers.get("x-linked-etag")?.to_str().ok()?;
    let etag = etag.trim_start_matches("W/").trim_matches('"');
    (etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())).then(|| etag.to_lowercase())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// `Content-Range: bytes 100-199/200` -> 200.
fn content_range_total(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_RANGE)?
        .to_str()
        .ok()?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}
