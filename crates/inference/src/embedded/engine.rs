//! [`EmbeddedEngine`]: a GGUF model loaded by llama.cpp, its requests run
//! by the batch loop; built with the `llama` feature.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};

use cocoon_protocol::{
    ErrorKind, Event, GenerateRequest, Input, ModelOffer, SamplingParams, ToolChoice, WireError,
};
use futures::StreamExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LlamaContextLoadError, LlamaCppError, LlamaModelLoadError};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::batch_loop::{BatchLoop, LoadGauge, LoopLimits};
use super::constraint::{Constraint, ShapeError, Shapes};
use super::sequence::{CallMode, Job, Reasoning, ReasoningMarkers};
use super::template::TemplateError;
use super::{EmbeddedConfig, ModelFacts, Prompter};
use crate::model_hash::sha256_file_logged;
use crate::{Engine, EngineLoad, Generation};

/// Why a model (or its vocabulary) could not be loaded and started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// llama.cpp's backend did not initialise.
    #[error("llama.cpp backend: {0}")]
    Backend(#[source] &'static LlamaCppError),
    #[error("max_sequences must be 1..=256, got {0}")]
    MaxSequences(u32),
    #[error("batch_tokens ({batch_tokens}) must be at least max_sequences ({max_sequences})")]
    BatchTokens {
        batch_tokens: u32,
        max_sequences: u32,
    },
    #[error("context_tokens = {requested} exceeds the model's trained context of {trained}")]
    ContextTokens { requested: u32, trained: u32 },
    /// The model file could not be read.
    #[error("model file {}: {source}", path.display())]
    ModelFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// llama.cpp refused the model file.
    #[error("model file {}: llama.cpp could not load it: {source}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: LlamaModelLoadError,
    },
    /// llama.cpp refused the file's vocabulary.
    #[error("{}: could not load the vocabulary: {source}", path.display())]
    Vocab {
        path: PathBuf,
        #[source]
        source: LlamaModelLoadError,
    },
    /// The chat template in the GGUF metadata.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The chat template in a `tokenizer_config.json` beside the model.
    #[error("{}: {source}", path.display())]
    TemplateFile {
        path: PathBuf,
        #[source]
        source: TemplateError,
    },
    /// The KV cache for these limits could not be allocated.
    #[error("llama.cpp could not create a context for {max_sequences} sequences of {context_tokens} tokens: {source}")]
    Context {
        max_sequences: usize,
        context_tokens: usize,
        #[source]
        source: LlamaContextLoadError,
    },
    #[error("could not start the engine thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the engine thread exited during start")]
    ThreadExited,
}

pub struct EmbeddedEngine {
    name: String,
    facts: ModelFacts,
    prompter: Prompter,
    max_sequences: u32,
    default_max_tokens: u32,
    jobs: Sender<Job>,
    gauge: Arc<LoadGauge>,
    /// `<think>` / `</think>`, when the model reasons.
    markers: ReasoningMarkers,
    /// The grammar engine for structured outputs; `None` if it could not
    /// be built for this vocabulary (then the model is offered without).
    shapes: Option<Shapes>,
}

/// llama.cpp's process-wide backend, initialised once; its logs go to tracing.
pub(crate) fn backend() -> Result<&'static LlamaBackend, EmbeddedError> {
    static BACKEND: OnceLock<Result<LlamaBackend, LlamaCppError>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init()
        })
        .as_ref()
        .map_err(EmbeddedError::Backend)
}

impl EmbeddedEngine {
    /// Hash and load the model, compile its chat template, start its batch loop.
    /// Blocking (seconds for large files): call from `spawn_blocking` in async code.
    pub fn load(config: EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let path = &config.model_path;
        if config.max_sequences == 0 || config.max_sequences > 256 {
            return Err(EmbeddedError::MaxSequences(config.max_sequences));
        }
        if config.batch_tokens < config.max_sequences {
            return Err(EmbeddedError::BatchTokens {
                batch_tokens: config.batch_tokens,
                max_sequences: config.max_sequences,
            });
        }
        let backend = backend()?;
        let file_error = |source| EmbeddedError::ModelFile {
            path: path.clone(),
            source,
        };
        let file_bytes = std::fs::metadata(path).map_err(file_error)?.len();
        let sha256 = sha256_file_logged(path).map_err(file_error)?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|source| EmbeddedError::Load {
                path: path.clone(),
                source,
            })?;
        let model = Arc::new(model);
        let trained = model.n_ctx_train();
        let context_tokens = match config.context_tokens {
            0 => trained.min(4096),
            n if n > trained => {
                return Err(EmbeddedError::ContextTokens {
                    requested: n,
                    trained,
                })
            }
            n => n,
        };
        let head_dim = (model.n_embd() as u64) / (model.n_head().max(1) as u64);
        let kv_cache_bytes = u64::from(model.n_layer())
            * u64::from(model.n_head_kv())
            * head_dim
            * 2 // keys and values
            * 2 // f16
            * u64::from(context_tokens)
            * u64::from(config.max_sequences);
        let prompter = Prompter::new(model.clone(), path, &config.name)?;
        let markers = reasoning_markers(&model);
        let shapes = match Shapes::new(&model) {
            Ok(shapes) => Some(shapes),
            Err(e) => {
                tracing::warn!(model = %config.name, error = %e, "serving without structured outputs");
                None
            }
        };
        let facts = ModelFacts {
            sha256,
            architecture: model
                .meta_val_str("general.architecture")
                .unwrap_or_else(|_| "unknown".into()),
            quantization: quantization(&model),
            parameters: model.n_params(),
            file_bytes,
            context_tokens,
            kv_cache_bytes,
            has_chat_template: prompter.has_template(),
        };
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        };
        let limits = LoopLimits {
            max_sequences: config.max_sequences as usize,
            context_tokens: context_tokens as usize,
            batch_tokens: config.batch_tokens as usize,
        };
        let gauge = Arc::new(LoadGauge::default());
        let jobs = start_loop(
            &model,
            &config.name,
            limits,
            threads,
            markers,
            gauge.clone(),
        )?;
        tracing::info!(
            model = %config.name,
            architecture = %facts.architecture,
            quantization = %facts.quantization,
            sha256 = %facts.sha256,
            context_tokens,
            kv_cache_mib = kv_cache_bytes >> 20,
            max_sequences = config.max_sequences,
            threads,
            "embedded engine ready"
        );
        Ok(Self {
            name: config.name,
            facts,
            prompter,
            max_sequences: config.max_sequences,
            default_max_tokens: config.default_max_tokens,
            jobs,
            gauge,
            markers,
            shapes,
        })
    }

    pub fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    /// Tokenize a request's input exactly as generation will.
    pub fn prompt_tokens(&self, input: &Input) -> Result<Vec<LlamaToken>, WireError> {
        self.prompter.tokens(input)
    }

    /// The grammar a request's answer is held to (its response format, or
    /// the calls its tools allow) and how it may call functions.
    fn constraint(
        &self,
        params: &SamplingParams,
    ) -> Result<(Option<Constraint>, CallMode), WireError> {
        let not_served = |field: &str| {
            WireError::new(
                ErrorKind::FeatureNotServed,
                format!("'{field}' is not served by this model on this worker"),
            )
        };
        let invalid = |e: ShapeError| WireError::new(ErrorKind::InvalidRequest, e.to_string());
        match (&params.format, &params.tools) {
            // Forced calls have no text for a format to hold.
            (Some(_), Some(tools)) if tools.choice != ToolChoice::Auto => {
                let shapes = self.shapes.as_ref().ok_or_else(|| not_served("tools"))?;
                let constraint = shapes
                    .compile_calls(tools, self.prompter.tool_format())
                    .map_err(invalid)?;
                Ok((Some(constraint), CallMode::Forced))
            }
            (Some(format), Some(tools)) => {
                let shapes = self.shapes.as_ref().ok_or_else(|| not_served("tools"))?;
                let constraint = shapes
                    .compile_calls_or(tools, self.prompter.tool_format(), format)
                    .map_err(invalid)?;
                Ok((Some(constraint), CallMode::AutoShaped))
            }
            (Some(format), None) => {
                let shapes = self
                    .shapes
                    .as_ref()
                    .ok_or_else(|| not_served("response_format"))?;
                Ok((
                    Some(shapes.compile(format).map_err(invalid)?),
                    CallMode::None,
                ))
            }
            (None, Some(tools)) => {
                let shapes = self.shapes.as_ref().ok_or_else(|| not_served("tools"))?;
                let constraint = shapes
                    .compile_calls(tools, self.prompter.tool_format())
                    .map_err(invalid)?;
                let mode = match tools.choice {
                    ToolChoice::Auto => CallMode::Auto,
                    ToolChoice::Required | ToolChoice::Function(_) => CallMode::Forced,
                };
                Ok((Some(constraint), mode))
            }
            (None, None) => Ok((None, CallMode::None)),
        }
    }

    fn prepare(
        &self,
        request: &GenerateRequest,
    ) -> Result<(Vec<LlamaToken>, u32, Reasoning), WireError> {
        let mut prompt = self.prompter.tokens_for(&request.input, &request.params)?;
        let reasoning = self.reasoning(request, &mut prompt);
        let context = self.facts.context_tokens as usize;
        let too_long = |completion: String| {
            WireError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "This model's maximum context length is {context} tokens. However, you requested {} tokens ({} in the messages, {completion} in the completion). Please reduce the length of the messages or completion.",
                    prompt.len() + completion.parse::<usize>().unwrap_or(0),
                    prompt.len()
                ),
            )
        };
        if prompt.len() >= context {
            return Err(too_long("1".into()));
        }
        let room = (context - prompt.len()) as u32;
        let max_tokens = match request.params.max_tokens {
            Some(m) if m > room => return Err(too_long(m.to_string())),
            Some(m) => m,
            None => self.default_max_tokens.min(room),
        };
        Ok((prompt, max_tokens, reasoning))
    }

    /// How the answer's reasoning is told apart: in chats on a model with
    /// reasoning markers, thinking from the start when the prompt ends
    /// inside a reasoning section (its last marker opens one). Asked not to
    /// think by a template that opened one anyway, the section is closed
    /// at the end of `prompt`.
    fn reasoning(&self, request: &GenerateRequest, prompt: &mut Vec<LlamaToken>) -> Reasoning {
        let (Input::Chat(_), Some(open), Some(close)) =
            (&request.input, self.markers.open, self.markers.close)
        else {
            return Reasoning::Inline;
        };
        let last = prompt.iter().rev().find(|t| **t == open || **t == close);
        let mut thinking = last == Some(&open);
        let off = request.params.thinking.as_ref().and_then(|t| t.enabled) == Some(false);
        if thinking && off {
            prompt.extend(self.prompter.special_tokens("</think>\n\n"));
            thinking = false;
        }
        Reasoning::Apart { thinking }
    }
}

fn start_loop(
    model: &Arc<LlamaModel>,
    name: &str,
    limits: LoopLimits,
    threads: u32,
    markers: ReasoningMarkers,
    gauge: Arc<LoadGauge>,
) -> Result<Sender<Job>, EmbeddedError> {
    let (jobs, receiver) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
    let model = model.clone();
    std::thread::Builder::new()
        .name(format!("llama:{name}"))
        .spawn(move || {
            let params = LlamaContextParams::default()
                .with_n_ctx(std::num::NonZeroU32::new(
                    (limits.context_tokens * limits.max_sequences) as u32,
                ))
                .with_n_batch(limits.batch_tokens as u32)
                .with_n_ubatch(limits.batch_tokens as u32)
                .with_n_seq_max(limits.max_sequences as u32)
                // One KV stream per sequence: batched == serial, bit for bit.
                .with_kv_unified(false)
                .with_n_threads(threads as i32)
                .with_n_threads_batch(threads as i32);
            let backend = match backend() {
                Ok(b) => b,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            match model.new_context(backend, params) {
                Ok(ctx) => {
                    let _ = ready_tx.send(Ok(()));
                    BatchLoop::new(&model, ctx, receiver, limits, markers, gauge).run();
                }
                Err(source) => {
                    let _ = ready_tx.send(Err(EmbeddedError::Context {
                        max_sequences: limits.max_sequences,
                        context_tokens: limits.context_tokens,
                        source,
                    }));
                }
            }
        })
        .map_err(EmbeddedError::Thread)?;
    ready.recv().map_err(|_| EmbeddedError::ThreadExited)??;
    Ok(jobs)
}

/// `<think>` / `</think>` when the vocabulary has them as single tokens.
fn reasoning_markers(model: &LlamaModel) -> ReasoningMarkers {
    let single = |text: &str| {
        let tokens = model.vocab().tokenize(text.as_bytes(), false, true);
        (tokens.len() == 1).then(|| tokens[0])
    };
    match (single("<think>"), single("</think>")) {
        (Some(open), Some(close)) => ReasoningMarkers {
            open: Some(open),
            close: Some(close),
        },
        _ => ReasoningMarkers::default(),
    }
}

/// The weights' quantisation from `general.file_type` (llama.cpp's numbering).
fn quantization(model: &LlamaModel) -> String {
    let Ok(t) = model.meta_val_str("general.file_type") else {
        return "mixed".into();
    };
    let name = match t.as_str() {
        "0" => "F32",
        "1" => "F16",
        "2" => "Q4_0",
        "3" => "Q4_1",
        "7" => "Q8_0",
        "8" => "Q5_0",
        "9" => "Q5_1",
        "10" => "Q2_K",
        "11" => "Q3_K_S",
        "12" => "Q3_K_M",
        "13" => "Q3_K_L",
        "14" => "Q4_K_S",
        "15" => "Q4_K_M",
        "16" => "Q5_K_S",
        "17" => "Q5_K_M",
        "18" => "Q6_K",
        "32" => "BF16",
        other => return format!("file_type {other}"),
    };
    name.into()
}

impl Engine for EmbeddedEngine {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            price_coefficient: cocoon_protocol::BASE_PRICE_COEFFICIENT,
            name: self.name.clone(),
            max_concurrent: self.max_sequences,
            weights_sha256: Some(self.facts.sha256.clone()),
            context_length: Some(self.facts.context_tokens),
            quantization: Some(self.facts.quantization.clone()),
            features: cocoon_protocol::Features {
                structured_outputs: self.shapes.is_some(),
                tools: self.shapes.is_some() && self.prompter.has_template(),
                logprobs: true,
                reasoning: self.markers.open.is_some() && self.prompter.has_template(),
                choices: self.max_sequences > 1,
            },
        }]
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn describe(&self) -> String {
        let f = &self.facts;
        format!(
            "embedded llama.cpp serving {:?}: {}, {:.0}M parameters, {}, {} MiB, sha256 {}",
            self.name,
            f.architecture,
            f.parameters as f64 / 1e6,
            f.quantization,
            f.file_bytes >> 20,
            &f.sha256[..16]
        )
    }

    fn load(&self) -> futures::future::BoxFuture<'_, Option<EngineLoad>> {
        let load = EngineLoad {
            running: self
                .gauge
                .running
                .load(std::sync::atomic::Ordering::Relaxed),
            waiting: self
                .gauge
                .waiting
                .load(std::sync::atomic::Ordering::Relaxed),
        };
        Box::pin(async move { Some(load) })
    }

    fn generate(&self, request: GenerateRequest) -> Generation {
        let fail = |e: WireError| futures::stream::iter([Event::Error(e)]).boxed();
        if request.model != self.name {
            return fail(WireError::new(
                ErrorKind::ModelNotFound,
                format!(
                    "this engine serves '{}', not '{}'",
                    self.name, request.model
                ),
            ));
        }
        let n = request.params.choices();
        if n > self.max_sequences {
            return fail(WireError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "Invalid 'n': {n} answers at once; this model's workers run at most {} (one sequence each).",
                    self.max_sequences
                ),
            ));
        }
        // Compiled once; each answer is held to its own fork of it.
        let (constraint, calls) = match self.constraint(&request.params) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let mut constraints: Vec<Option<Constraint>> = (1..n)
            .map(|_| constraint.as_ref().map(Constraint::fork))
            .collect();
        constraints.insert(0, constraint);
        let (prompt, max_tokens, reasoning) = match self.prepare(&request) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        let job = Job {
            prompt,
            max_tokens,
            params: request.params,
            constraints,
            calls,
            tool_format: self.prompter.tool_format(),
            reasoning,
            events,
        };
        if self.jobs.send(job).is_err() {
            return fail(WireError::new(
                ErrorKind::Internal,
                "the engine's batch loop has stopped",
            ));
        }
        UnboundedReceiverStream::new(receiver).boxed()
    }
}
