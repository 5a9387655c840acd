//! Which engine a worker runs, as its config file's `[engine]` table says
//! (`kind = "embedded"`, `"openai-http"` or `"instant"`): parsed and checked
//! with the key named in every error ([`EngineConfigError`] while parsing,
//! [`ConfigError`] while checking and building), and built.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::ConfigError;
use serde::Deserialize;

#[cfg(feature = "llama")]
use crate::embedded::Prompter;
use crate::store::ModelStore;
#[cfg(feature = "llama")]
use crate::EmbeddedEngine;
use crate::{EmbeddedConfig, Engine, InstantEngine, OpenAiHttpConfig, OpenAiHttpEngine};

/// Which engine serves requests (`kind = "embedded"`, `"openai-http"` or `"instant"`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(try_from = "toml::Table", into = "toml::Table")]
pub enum EngineConfig {
    /// Run a GGUF model in-process with llama.cpp (CPU), continuous batching.
    Embedded {
        /// Model name on the Cocoon network.
        model: String,
        /// Where the GGUF file is: a path, or a model in the local store.
        weights: WeightsLocation,
        max_sequences: u32,
        context_tokens: u32,
        batch_tokens: u32,
        threads: u32,
        default_max_tokens: u32,
    },
    /// Forward to a local OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama).
    OpenaiHttp {
        /// Base URL including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
        base_url: String,
        /// Model name on the Cocoon network.
        model: String,
        /// Model name the upstream server uses, if different.
        upstream_model: Option<String>,
        /// Environment variable holding the upstream's API key, if it wants one.
        api_key_env: Option<String>,
        /// A GGUF file of the same model: its tokenizer and chat template count
        /// (and bill) prompt tokens instead of the upstream's count.
        tokenizer_gguf: Option<PathBuf>,
        /// The directory the upstream server loads the model from: hashed
        /// at start (every file; see `model_hash::sha256_dir_manifest`)
        /// into the weights hash this worker announces, binds in its
        /// evidence and signs into receipts. Without it the model is
        /// announced with no hash, which a network listing its models
        /// refuses.
        weights_dir: Option<PathBuf>,
        max_concurrent: u32,
        connect_timeout_secs: u64,
        read_timeout_secs: u64,
    },
    /// TEST ENGINE: echoes words instantly, no model. Development profile only.
    Instant {
        model: String,
        max_concurrent: u32,
        token_delay_ms: u64,
    },
}

/// The engines `kind` may name.
const KINDS: &str = "\"embedded\", \"openai-http\" or \"instant\"";

/// Why an `[engine]` table does not parse; every message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineConfigError {
    #[error("engine.kind is missing: expected {KINDS}")]
    MissingKind,
    #[error("engine.kind: expected {KINDS}, got {got}")]
    UnknownKind { got: toml::Value },
    /// A key of the wrong type, unknown, or missing.
    #[error("engine.{key}: {message}")]
    Key { key: String, message: String },
    #[error("engine: give either path or store_model, not both")]
    PathAndStoreModel,
    #[error("engine.path is missing: give the GGUF file's path, or store_model = NAME from `cocoon model list`")]
    NoWeights,
}

impl EngineConfigError {
    /// A serde error, with the path of the key it concerns.
    fn key(e: serde_path_to_error::Error<toml::de::Error>) -> Self {
        EngineConfigError::Key {
            key: e.path().to_string(),
            message: e.inner().message().to_string(),
        }
    }
}

/// The same variants as [`EngineConfig`], read after `kind` is known so that type
/// errors name the field (serde's internally tagged enums lose it).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum EngineKind {
    Embedded,
    OpenaiHttp,
    Instant,
}

/// The embedded engine's weights: `path = "FILE.gguf"` or `store_model = "NAME"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsLocation {
    Path(PathBuf),
    /// A model in the local store (see `cocoon model list`), by name.
    Store {
        root: PathBuf,
        name: String,
    },
}

impl WeightsLocation {
    pub fn resolve(&self) -> Result<PathBuf, ConfigError> {
        match self {
            WeightsLocation::Path(p) => {
                if !p.is_file() {
                    return Err(ConfigError::new(
                        "engine.path",
                        format!("{} is not a readable file", p.display()),
                    ));
                }
                Ok(p.clone())
            }
            WeightsLocation::Store { root, name } => ModelStore::open(root)
                .get(name)
                .map(|m| m.path)
                .ok_or_else(|| {
                    ConfigError::new(
                        "engine.store_model",
                        format!(
                            "{name:?} is not in the model store at {} (see `cocoon model list`, `cocoon model pull`)",
                            root.display()
                        ),
                    )
                }),
        }
    }
}

/// The `[engine]` table of a config file, as [`EngineConfig::try_from`] reads it.
impl From<EngineConfig> for toml::Table {
    fn from(config: EngineConfig) -> toml::Table {
        use toml::Value;
        let mut t = toml::Table::new();
        let mut set = |key: &str, value: Value| {
            t.insert(key.to_string(), value);
        };
        let path = |p: PathBuf| Value::String(p.display().to_string());
        let int = |n: u64| Value::Integer(n.min(i64::MAX as u64) as i64);
        match config {
            EngineConfig::Embedded {
                model,
                weights,
                max_sequences,
                context_tokens,
                batch_tokens,
                threads,
                default_max_tokens,
            } => {
                set("kind", Value::String("embedded".into()));
                set("model", Value::String(model));
                match weights {
                    WeightsLocation::Path(p) => set("path", path(p)),
                    WeightsLocation::Store { root, name } => {
                        set("store_model", Value::String(name));
                        set("store_dir", path(root));
                    }
                }
                set("max_sequences", int(max_sequences.into()));
                set("context_tokens", int(context_tokens.into()));
                set("batch_tokens", int(batch_tokens.into()));
                set("threads", int(threads.into()));
                set("default_max_tokens", int(default_max_tokens.into()));
            }
            EngineConfig::OpenaiHttp {
                base_url,
                model,
                upstream_model,
                api_key_env,
                tokenizer_gguf,
                weights_dir,
                max_concurrent,
                connect_timeout_secs,
                read_timeout_secs,
            } => {
                set("kind", Value::String("openai-http".into()));
                if let Some(p) = weights_dir {
                    set("weights_dir", path(p));
                }
                set("base_url", Value::String(base_url));
                set("model", Value::String(model));
                if let Some(m) = upstream_model {
                    set("upstream_model", Value::String(m));
                }
                if let Some(v) = api_key_env {
                    set("api_key_env", Value::String(v));
                }
                if let Some(p) = tokenizer_gguf {
                    set("tokenizer_gguf", path(p));
                }
                set("max_concurrent", int(max_concurrent.into()));
                set("connect_timeout_secs", int(connect_timeout_secs));
                set("read_timeout_secs", int(read_timeout_secs));
            }
            EngineConfig::Instant {
                model,
                max_concurrent,
                token_delay_ms,
            } => {
                set("kind", Value::String("instant".into()));
                set("model", Value::String(model));
                set("max_concurrent", int(max_concurrent.into()));
                set("token_delay_ms", int(token_delay_ms));
            }
        }
        t
    }
}

impl TryFrom<toml::Table> for EngineConfig {
    type Error = EngineConfigError;

    fn try_from(mut table: toml::Table) -> Result<Self, EngineConfigError> {
        let kind = table.remove("kind").ok_or(EngineConfigError::MissingKind)?;
        let kind: EngineKind = kind
            .clone()
            .try_into()
            .map_err(|_| EngineConfigError::UnknownKind { got: kind })?;
        let fields = toml::Value::Table(table);
        if let EngineKind::Embedded = kind {
            let f = serde_path_to_error::deserialize::<_, EmbeddedFields>(fields)
                .map_err(EngineConfigError::key)?;
            return EngineConfig::try_from(f);
        }
        let parsed = match kind {
            EngineKind::Embedded => unreachable!("handled above"),
            EngineKind::OpenaiHttp => {
                serde_path_to_error::deserialize::<_, OpenaiHttpFields>(fields)
                    .map(EngineConfig::from)
            }
            EngineKind::Instant => {
                serde_path_to_error::deserialize::<_, InstantFields>(fields).map(EngineConfig::from)
            }
        };
        parsed.map_err(EngineConfigError::key)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddedFields {
    model: String,
    path: Option<PathBuf>,
    store_model: Option<String>,
    store_dir: Option<PathBuf>,
    #[serde(default = "default_sequences")]
    max_sequences: u32,
    #[serde(default)]
    context_tokens: u32,
    #[serde(default = "default_batch_tokens")]
    batch_tokens: u32,
    #[serde(default)]
    threads: u32,
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u32,
}

impl TryFrom<EmbeddedFields> for EngineConfig {
    type Error = EngineConfigError;

    fn try_from(f: EmbeddedFields) -> Result<Self, EngineConfigError> {
        let weights = match (f.path, f.store_model) {
            (Some(path), None) => WeightsLocation::Path(path),
            (None, Some(name)) => WeightsLocation::Store {
                root: f.store_dir.unwrap_or_else(ModelStore::default_root),
                name,
            },
            (Some(_), Some(_)) => return Err(EngineConfigError::PathAndStoreModel),
            (None, None) => return Err(EngineConfigError::NoWeights),
        };
        Ok(EngineConfig::Embedded {
            model: f.model,
            weights,
            max_sequences: f.max_sequences,
            context_tokens: f.context_tokens,
            batch_tokens: f.batch_tokens,
            threads: f.threads,
            default_max_tokens: f.default_max_tokens,
        })
    }
}

fn default_sequences() -> u32 {
    8
}
fn default_batch_tokens() -> u32 {
    512
}
fn default_max_tokens() -> u32 {
    1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenaiHttpFields {
    base_url: String,
    model: String,
    upstream_model: Option<String>,
    api_key_env: Option<String>,
    tokenizer_gguf: Option<PathBuf>,
    weights_dir: Option<PathBuf>,
    #[serde(default = "default_concurrency")]
    max_concurrent: u32,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_read_timeout")]
    read_timeout_secs: u64,
}

impl From<OpenaiHttpFields> for EngineConfig {
    fn from(f: OpenaiHttpFields) -> Self {
        EngineConfig::OpenaiHttp {
            base_url: f.base_url,
            model: f.model,
            upstream_model: f.upstream_model,
            api_key_env: f.api_key_env,
            tokenizer_gguf: f.tokenizer_gguf,
            weights_dir: f.weights_dir,
            max_concurrent: f.max_concurrent,
            connect_timeout_secs: f.connect_timeout_secs,
            read_timeout_secs: f.read_timeout_secs,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstantFields {
    model: String,
    #[serde(default = "default_concurrency")]
    max_concurrent: u32,
    #[serde(default)]
    token_delay_ms: u64,
}

impl From<InstantFields> for EngineConfig {
    fn from(f: InstantFields) -> Self {
        EngineConfig::Instant {
            model: f.model,
            max_concurrent: f.max_concurrent,
            token_delay_ms: f.token_delay_ms,
        }
    }
}

fn default_concurrency() -> u32 {
    16
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_read_timeout() -> u64 {
    120
}

impl EngineConfig {
    /// Check every key's value (the weights must be there).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            EngineConfig::Embedded {
                model,
                weights,
                max_sequences,
                context_tokens,
                batch_tokens,
                threads,
                default_max_tokens,
            } => {
                check_model_and_concurrency(model, 1)?;
                ConfigError::check_range("engine.max_sequences", *max_sequences as u64, 1, 256)?;
                ConfigError::check_range(
                    "engine.batch_tokens",
                    *batch_tokens as u64,
                    *max_sequences as u64,
                    65_536,
                )?;
                ConfigError::check_range(
                    "engine.context_tokens",
                    *context_tokens as u64,
                    0,
                    1 << 20,
                )?;
                ConfigError::check_range("engine.threads", *threads as u64, 0, 1024)?;
                ConfigError::check_range(
                    "engine.default_max_tokens",
                    *default_max_tokens as u64,
                    1,
                    1 << 20,
                )?;
                weights.resolve()?;
            }
            EngineConfig::OpenaiHttp {
                base_url,
                model,
                max_concurrent,
                api_key_env,
                tokenizer_gguf,
                weights_dir,
                ..
            } => {
                if let Some(dir) = weights_dir {
                    if !dir.is_dir() {
                        return Err(ConfigError::new(
                            "engine.weights_dir",
                            format!("{} is not a readable directory", dir.display()),
                        ));
                    }
                }
                if let Some(path) = tokenizer_gguf {
                    if !path.is_file() {
                        return Err(ConfigError::new(
                            "engine.tokenizer_gguf",
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(ConfigError::new(
                        "engine.base_url",
                        format!("expected an http:// or https:// URL, got {base_url:?}"),
                    ));
                }
                check_model_and_concurrency(model, *max_concurrent)?;
                if let Some(var) = api_key_env {
                    if std::env::var(var).is_err() {
                        return Err(ConfigError::new(
                            "engine.api_key_env",
                            format!("environment variable {var} is not set"),
                        ));
                    }
                }
            }
            EngineConfig::Instant {
                model,
                max_concurrent,
                ..
            } => check_model_and_concurrency(model, *max_concurrent)?,
        }
        Ok(())
    }
}

fn check_model_and_concurrency(model: &str, max_concurrent: u32) -> Result<(), ConfigError> {
    if model.trim().is_empty() {
        return Err(ConfigError::new("engine.model", "must not be empty"));
    }
    if max_concurrent == 0 {
        return Err(ConfigError::new(
            "engine.max_concurrent",
            "must be > 0, got 0",
        ));
    }
    Ok(())
}

impl EngineConfig {
    /// Build the engine. Blocking (the embedded engine hashes and loads its
    /// weights): call it from `spawn_blocking` in async code.
    pub fn build(&self) -> Result<Arc<dyn Engine>, ConfigError> {
        Ok(match self.clone() {
            EngineConfig::Embedded {
                model,
                weights,
                max_sequences,
                context_tokens,
                batch_tokens,
                threads,
                default_max_tokens,
            } => {
                let mut config = EmbeddedConfig::new(weights.resolve()?, model);
                config.max_sequences = max_sequences;
                config.context_tokens = context_tokens;
                config.batch_tokens = batch_tokens;
                config.threads = threads;
                config.default_max_tokens = default_max_tokens;
                embedded_engine(config)?
            }
            EngineConfig::OpenaiHttp {
                base_url,
                model,
                upstream_model,
                api_key_env,
                tokenizer_gguf,
                weights_dir,
                max_concurrent,
                connect_timeout_secs,
                read_timeout_secs,
            } => {
                let weights_sha256 = weights_dir
                    .map(|dir| {
                        crate::model_hash::sha256_dir_manifest(&dir).map_err(|e| {
                            ConfigError::new(
                                "engine.weights_dir",
                                format!("{}: {e}", dir.display()),
                            )
                        })
                    })
                    .transpose()?;
                let mut engine = OpenAiHttpEngine::new(OpenAiHttpConfig {
                    base_url,
                    model: model.clone(),
                    upstream_model,
                    api_key: api_key_env.and_then(|v| std::env::var(v).ok()),
                    max_concurrent,
                    connect_timeout: Duration::from_secs(connect_timeout_secs),
                    read_timeout: Duration::from_secs(read_timeout_secs),
                    weights_sha256,
                })
                .map_err(|e| ConfigError::new("engine", e.to_string()))?;
                if let Some(path) = tokenizer_gguf {
                    engine = with_prompt_counter(engine, &path, &model)?;
                }
                Arc::new(engine)
            }
            EngineConfig::Instant {
                model,
                max_concurrent,
                token_delay_ms,
            } => Arc::new(
                InstantEngine::new(model, max_concurrent)
                    .with_token_delay(Duration::from_millis(token_delay_ms)),
            ),
        })
    }
}

#[cfg(feature = "llama")]
fn embedded_engine(config: EmbeddedConfig) -> Result<Arc<dyn Engine>, ConfigError> {
    Ok(Arc::new(
        EmbeddedEngine::load(config).map_err(|e| ConfigError::new("engine", e.to_string()))?,
    ))
}

#[cfg(not(feature = "llama"))]
fn embedded_engine(_: EmbeddedConfig) -> Result<Arc<dyn Engine>, ConfigError> {
    Err(ConfigError::new(
        "engine.kind",
        "this build has no embedded engine (the cocoon-inference crate's `llama` feature is off (cocoon-worker's `embedded`))",
    ))
}

#[cfg(feature = "llama")]
fn with_prompt_counter(
    engine: OpenAiHttpEngine,
    path: &std::path::Path,
    model: &str,
) -> Result<OpenAiHttpEngine, ConfigError> {
    let counter = Prompter::load_vocab(path, model)
        .map_err(|e| ConfigError::new("engine.tokenizer_gguf", e.to_string()))?;
    Ok(engine.with_prompt_counter(counter))
}

#[cfg(not(feature = "llama"))]
fn with_prompt_counter(
    _: OpenAiHttpEngine,
    _: &std::path::Path,
    _: &str,
) -> Result<OpenAiHttpEngine, ConfigError> {
    Err(ConfigError::new(
        "engine.tokenizer_gguf",
        "this build cannot read GGUF tokenizers (the cocoon-inference crate's `llama` feature is off (cocoon-worker's `embedded`))",
    ))
}
