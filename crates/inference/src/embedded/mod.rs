//! The embedded engine: GGUF models (Llama, Qwen2/Qwen3 and the other families
//! llama.cpp knows; quantised Q4_0/Q4_1/Q4_K_M/Q8_0 and more) run in-process by
//! llama.cpp through the `llama-cpp-2` crate, with continuous batching of
//! concurrent requests.
//!
//! # Layout
//! * `batch_loop` - the thread that owns the model's context and runs all live
//!   requests in shared forward passes (continuous batching, KV-cache budget,
//!   prompt-prefix reuse).
//! * `sequence`   - one request's state: sampler, UTF-8 and stop handling, counts.
//! * `constraint` - structured outputs: a JSON Schema compiled by llguidance
//!   into a per-token mask of what may come next.
//! * `prompt`     - a request's input as the model's tokens (chat template, BOS);
//!   also loadable without weights, to count tokens outside the engine.
//! * `template`   - the model's own chat template, rendered by minijinja.
//! * `tool_calls` - tool calls in the model's own format (Hermes, Llama 3,
//!   Mistral, or a generic JSON one, told from its chat template): tools
//!   shown to the model, the grammar of valid calls, generated calls read
//!   back.
//! * `engine`     - [`EmbeddedEngine`]: loading a model and serving requests;
//!   [`EmbeddedError`] says why a model could not be loaded.
//!
//! Everything that links llama.cpp is behind the `llama` feature (on by
//! default); without it only the configuration types remain, so a build
//! that parses configs (the fuzz targets) never compiles llama.cpp.

#[cfg(feature = "llama")]
mod batch_loop;
#[cfg(feature = "llama")]
mod choices;
#[cfg(feature = "llama")]
mod constraint;
#[cfg(feature = "llama")]
mod engine;
#[cfg(feature = "llama")]
mod prompt;
#[cfg(feature = "llama")]
mod sequence;
mod template;
mod tool_calls;

use std::path::PathBuf;

#[cfg(feature = "llama")]
pub(crate) use engine::backend;
#[cfg(feature = "llama")]
pub use engine::{EmbeddedEngine, EmbeddedError};
#[cfg(feature = "llama")]
pub use prompt::Prompter;
pub use template::{ChatTemplate, TemplateError};

/// How to run one model. `0` means "choose" where noted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    pub model_path: PathBuf,
    /// The model's name on the network.
    pub name: String,
    /// Requests run at once (sequences sharing each forward pass).
    pub max_sequences: u32,
    /// Longest prompt + completion of one request; 0 = min(model's, 4096). The
    /// KV cache holds `max_sequences x context_tokens` tokens' attention state.
    pub context_tokens: u32,
    /// Most tokens in one forward pass (prompt chunks + one per generating
    /// sequence).
    pub batch_tokens: u32,
    /// CPU threads; 0 = every core.
    pub threads: u32,
    /// `max_tokens` for requests that give none (capped by the context).
    pub default_max_tokens: u32,
}

impl EmbeddedConfig {
    pub fn new(model_path: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            model_path: model_path.into(),
            name: name.into(),
            max_sequences: 8,
            context_tokens: 0,
            batch_tokens: 512,
            threads: 0,
            default_max_tokens: 1024,
        }
    }
}

/// What the engine knows about the model it loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    pub sha256: String,
    pub architecture: String,
    pub quantization: String,
    pub parameters: u64,
    pub file_bytes: u64,
    pub context_tokens: u32,
    /// Size of the KV cache for all sequences (f16 keys and values).
    pub kv_cache_bytes: u64,
    pub has_chat_template: bool,
}

#[cfg(all(test, feature = "llama"))]
mod tests;
