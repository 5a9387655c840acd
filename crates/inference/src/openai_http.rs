//! The `openai-http` engine: a worker in front of a local OpenAI-compatible server
//! (vLLM, SGLang, llama.cpp's `llama-server`, Ollama). Each request is sent upstream
//! with `stream: true` and `stream_options.include_usage`, the SSE answer is turned
//! into `Delta`s, and the upstream's `usage` becomes the worker's token counts.
//! Dropping the generation drops the HTTP response, which the upstream server sees
//! as a disconnect and stops generating.
//!
//! With the model's tokenizer configured (a GGUF file of the same model), the
//! worker counts prompt tokens itself, bills its own count, and logs when the
//! upstream's count disagrees: the worker signs for what it counted.

#[cfg(feature = "llama")]
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::openai::{
    ApiToolCall, ChatCompletionRequest, CompletionRequest, ErrorBody, Prompt, RequestMessage,
    RequestParams, Stop, StreamOptions,
};
use cocoon_protocol::{Done, ErrorKind, FinishReason, Input, Usage, WireError};
use eventsource_stream::Eventsource;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;

#[cfg(feature = "llama")]
use crate::embedded::Prompter;
use crate::{Engine, EngineError, EngineLoad, Event, GenerateRequest, Generation, ModelOffer};

mod metrics;
mod stream_chunk;

use stream_chunk::StreamChunk;

/// Why an [`OpenAiHttpEngine`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiHttpError {
    #[error("cannot build HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("engine base_url {base_url:?} is not a URL: {source}")]
    BaseUrl {
        base_url: String,
        #[source]
        source: UrlError,
    },
}

/// Why a URL does not parse (`url::ParseError`, which reqwest does not re-export).
pub type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// Where the upstream server is and what it serves.
#[derive(Debug, Clone)]
pub struct OpenAiHttpConfig {
    /// Base URL including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Model name on the Cocoon network.
    pub model: String,
    /// Model name the upstream server knows (defaults to `model`).
    pub upstream_model: Option<String>,
    /// Bearer token for the upstream server, if it wants one.
    pub api_key: Option<String>,
    pub max_concurrent: u32,
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer.
    pub read_timeout: Duration,
    /// The hash of the model directory the upstream serves (announced,
    /// bound in the worker's evidence, signed into receipts).
    pub weights_sha256: Option<String>,
}

pub struct OpenAiHttpEngine {
    config: OpenAiHttpConfig,
    http: reqwest::Client,
    /// `chat/completions` and `completions` under the base URL, parsed once.
    chat_url: reqwest::Url,
    completions_url: reqwest::Url,
    #[cfg(feature = "llama")]
    counter: Option<Arc<Prompter>>,
}

impl OpenAiHttpEngine {
    pub fn new(config: OpenAiHttpConfig) -> Result<Self, OpenAiHttpError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(OpenAiHttpError::Client)?;
        let parse = |path: &str| {
            reqwest::Url::parse(&join(&config.base_url, path)).map_err(|source| {
                OpenAiHttpError::BaseUrl {
                    base_url: config.base_url.clone(),
                    source,
                }
            })
        };
        let (chat_url, completions_url) = (parse("chat/completions")?, parse("completions")?);
        Ok(Self {
            config,
            http,
            chat_url,
            completions_url,
            #[cfg(feature = "llama")]
            counter: None,
        })
    }

    /// Count prompt tokens with this tokenizer and chat template (and bill that
    /// count) instead of trusting the upstream's.
    #[cfg(feature = "llama")]
    pub fn with_prompt_counter(mut self, counter: Prompter) -> Self {
        self.counter = Some(Arc::new(counter));
        self
    }

    fn upstream_model(&self) -> String {
        self.config
            .upstream_model
            .clone()
            .unwrap_or_else(|| self.config.model.clone())
    }

    fn url(&self, path: &str) -> String {
        join(&self.config.base_url, path)
    }

    fn build(&self, request: &GenerateRequest) -> reqwest::RequestBuilder {
        let p = &request.params;
        let tools = p.tools.as_ref().map(|t| t.to_openai());
        let params = RequestParams {
            max_tokens: p.max_tokens.map(i64::from),
            temperature: p.temperature.map(f64::from),
            top_p: p.top_p.map(f64::from),
            stream: Some(true),
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            stop: (!p.stop.is_empty()).then(|| Stop::Many(p.stop.clone())),
            seed: p.seed.map(|s| s as i64),
            presence_penalty: p.presence_penalty.map(f64::from),
            frequency_penalty: p.frequency_penalty.map(f64::from),
            response_format: p.format.as_ref().map(|f| f.to_openai()),
            tools: tools.as_ref().map(|t| t.0.clone()),
            tool_choice: tools.as_ref().map(|t| t.1.clone()),
            parallel_tool_calls: tools.as_ref().map(|t| t.2),
            logprobs: p.logprobs.map(|_| serde_json::Value::Bool(true)),
            top_logprobs: p.logprobs.map(i64::from),
            n: p.n.filter(|n| *n > 1).map(i64::from),
            reasoning_effort: p
                .thinking
                .as_ref()
                .and_then(|t| t.effort.clone())
                .map(Into::into),
            chat_template_kwargs: p
                .thinking
                .as_ref()
                .and_then(|t| t.enabled)
                .map(|on| serde_json::json!({ "enable_thinking": on })),
            ..Default::default()
        };
        let builder = match &request.input {
            Input::Chat(messages) => {
                self.http
                    .post(self.chat_url.clone())
                    .json(&ChatCompletionRequest {
                        model: Some(self.upstream_model()),
                        messages: Some(
                            messages
                                .iter()
                                .map(|m| RequestMessage {
                                    role: m.role.clone(),
                                    content: if m.content.is_empty() && !m.tool_calls.is_empty() {
                                        serde_json::Value::Null
                                    } else {
                                        m.content.clone().into()
                                    },
                                    tool_calls: (!m.tool_calls.is_empty()).then(|| {
                                        m.tool_calls
                                            .iter()
                                            .map(|c| serde_json::json!(ApiToolCall::from(c)))
                                            .collect()
                                    }),
                                    tool_call_id: m.tool_call_id.clone().map(Into::into),
                                    reasoning_content: m.reasoning_content.clone().map(Into::into),
                                })
                                .collect(),
                        ),
                        params,
                    })
            }
            Input::Prompt(prompt) => {
                self.http
                    .post(self.completions_url.clone())
                    .json(&CompletionRequest {
                        model: Some(self.upstream_model()),
                        prompt: Some(Prompt::One(prompt.clone())),
                        params,
                    })
            }
        };
        match &self.config.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }
}

impl Engine for OpenAiHttpEngine {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            price_coefficient: cocoon_protocol::BASE_PRICE_COEFFICIENT,
            name: self.config.model.clone(),
            max_concurrent: self.config.max_concurrent,
            weights_sha256: self.config.weights_sha256.clone(),
            context_length: None,
            quantization: None,
            // vLLM, SGLang, llama-server and Ollama enforce response_format.
            features: cocoon_protocol::Features {
                structured_outputs: true,
                tools: true,
                logprobs: true,
                // Passed on; the upstream's reasoning parser separates it.
                reasoning: true,
                // `n` goes upstream; its answers come back by index.
                choices: true,
            },
        }]
    }

    fn kind(&self) -> &'static str {
        "openai-http"
    }

    fn upstream(&self) -> Option<String> {
        Some(self.config.base_url.clone())
    }

    fn describe(&self) -> String {
        format!(
            "openai-http at {} serving {:?} as {:?}",
            self.config.base_url,
            self.config.model,
            self.upstream_model()
        )
    }

    fn check(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let mut req = self
                .http
                .get(self.url("models"))
                .timeout(Duration::from_secs(5));
            if let Some(key) = &self.config.api_key {
                req = req.bearer_auth(key);
            }
            let resp = req
                .send()
                .await
                .map_err(|source| EngineError::Unreachable {
                    base_url: self.config.base_url.clone(),
                    source,
                })?;
            if !resp.status().is_success() {
                return Err(EngineError::Status {
                    base_url: self.config.base_url.clone(),
                    status: resp.status(),
                });
            }
            Ok(())
        })
    }

    /// vLLM's or SGLang's gauges from `/metrics` beside `/v1`.
    fn load(&self) -> BoxFuture<'_, Option<EngineLoad>> {
        Box::pin(async move {
            let base = self.config.base_url.trim_end_matches('/');
            let root = base.strip_suffix("/v1").unwrap_or(base);
            let response = self
                .http
                .get(format!("{root}/metrics"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            if !response.status().is_success() {
                return None;
            }
            metrics::parse(&response.text().await.ok()?)
        })
    }

    fn generate(&self, request: GenerateRequest) -> Generation {
        #[cfg(feature = "llama")]
        let own_count = self.counter.as_ref().and_then(|c| match c.tokens_for(&request.input, &request.params) {
            Ok(tokens) => Some(tokens.len() as u64),
            Err(e) => {
                tracing::debug!(error = %e, "own prompt count unavailable; using the upstream's");
                None
            }
        });
        #[cfg(not(feature = "llama"))]
        let own_count = None;
        let send = self.build(&request).send();
        let state = State::Start(Starting {
            send: Box::pin(send),
            base: self.config.base_url.clone(),
            own_prompt_tokens: own_count,
            answers: request.params.choices(),
        });
        futures::stream::unfold(state, |state| async move { state.step().await }).boxed()
    }
}

/// `path` under the base URL `base` (with or without a trailing slash).
fn join(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

/// Why the upstream's event stream broke: its bytes, or the connection.
type SseError = eventsource_stream::EventStreamError<reqwest::Error>;

type SseStream = BoxStream<'static, Result<eventsource_stream::Event, SseError>>;

/// Progress of one upstream call.
enum State {
    Start(Starting),
    Reading(Box<Reading>),
    Finished,
}

/// An upstream call sent, its answer not read yet.
struct Starting {
    send: BoxFuture<'static, reqwest::Result<reqwest::Response>>,
    base: String,
    own_prompt_tokens: Option<u64>,
    /// How many answers the request asked for (`n`).
    answers: u32,
}

struct Reading {
    events: SseStream,
    usage: Option<Usage>,
    /// Why each answer ended, once it has (`n` of them).
    finishes: Vec<Option<FinishReason>>,
    /// The answer of the last event passed on.
    cursor: cocoon_protocol::AnswerCursor,
    chunks: u64,
    own_prompt_tokens: Option<u64>,
    /// Events read but not yet passed on (a chunk may hold several).
    pending: std::collections::VecDeque<Event>,
}

impl State {
    async fn step(self) -> Option<(Event, State)> {
        match self {
            State::Finished => None,
            State::Start(Starting {
                send,
                base,
                own_prompt_tokens,
                answers,
            }) => {
                let response = match send.await {
                    Ok(r) => r,
                    Err(e) => {
                        return Some((Event::Error(transport_error(&base, &e)), State::Finished))
                    }
                };
                if !response.status().is_success() {
                    return Some((Event::Error(status_error(response).await), State::Finished));
                }
                let events = response.bytes_stream().eventsource().boxed();
                // Counted with the model's own tokenizer: known at once,
                // for the worker's running totals (the upstream's own count
                // comes with its last chunk).
                let pending = own_prompt_tokens
                    .map(|prompt_tokens| {
                        Event::Usage(Usage {
                            prompt_tokens,
                            ..Usage::default()
                        })
                    })
                    .into_iter()
                    .collect();
                let reading = Reading {
                    events,
                    usage: None,
                    finishes: vec![None; answers as usize],
                    cursor: Default::default(),
                    chunks: 0,
                    own_prompt_tokens,
                    pending,
                };
                Box::pin(State::Reading(Box::new(reading)).step()).await
            }
            State::Reading(mut r) => loop {
                if let Some(event) = r.pending.pop_front() {
                    return Some((event, State::Reading(r)));
                }
                let Some(next) = r.events.next().await else {
                    return Some((r.done(), State::Finished));
                };
                let data = match next {
                    Ok(event) => event.data,
                    Err(e) => {
                        let error = WireError::new(
                            ErrorKind::Upstream,
                            format!("engine stream broke: {e}"),
                        );
                        return Some((Event::Error(error), State::Finished));
                    }
                };
                if data.trim() == "[DONE]" {
                    return Some((r.done(), State::Finished));
                }
                if let Err(error) = r.parse(&data) {
                    return Some((Event::Error(error), State::Finished));
                }
            },
        }
    }
}

impl Reading {
    /// Read one SSE data payload; its text and call pieces go to `pending`.
    fn parse(&mut self, data: &str) -> Result<(), WireError> {
        let chunk = StreamChunk::parse(data)?;
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                cached_prompt_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
                reasoning_tokens: u
                    .completion_tokens_details
                    .map_or(0, |d| d.reasoning_tokens),
            });
        }
        for choice in chunk.choices {
            self.take(choice)?;
        }
        Ok(())
    }

    /// One answer's part of a chunk, after a `Choice` marker when it is
    /// another answer's than the last.
    fn take(&mut self, mut choice: stream_chunk::StreamChoice<'_>) -> Result<(), WireError> {
        let index = choice.index;
        let Some(finish) = self.finishes.get_mut(index as usize) else {
            return Err(WireError::new(
                ErrorKind::Upstream,
                format!(
                    "engine sent answer {index} of a request for {}",
                    self.finishes.len()
                ),
            ));
        };
        if let Some(reason) = &choice.finish_reason {
            *finish = Some(match reason.as_ref() {
                "length" => FinishReason::Length,
                "tool_calls" => FinishReason::ToolCalls,
                _ => FinishReason::Stop,
            });
        }
        self.pending.extend(self.cursor.to(index));
        let logprobs = choice.logprobs();
        if !logprobs.is_empty() {
            self.pending.push_back(Event::Logprobs(logprobs));
        }
        if let Some(t) = choice.reasoning().filter(|t| !t.is_empty()) {
            self.chunks += 1;
            self.pending.push_back(Event::Reasoning {
                text: t.into_owned(),
                tokens: 1,
            });
        }
        if let Some(t) = choice.text().filter(|t| !t.is_empty()) {
            self.chunks += 1;
            self.pending.push_back(Event::Delta {
                text: t.into_owned(),
                tokens: 1,
            });
        }
        for piece in choice.tool_calls() {
            self.chunks += 1;
            self.pending.push_back(Event::ToolCall(piece));
        }
        Ok(())
    }

    fn done(&self) -> Event {
        let mut usage = self.usage.unwrap_or_else(|| {
            tracing::warn!("engine sent no usage; counting one token per streamed chunk");
            Usage {
                completion_tokens: self.chunks,
                ..Usage::default()
            }
        });
        if let Some(own) = self.own_prompt_tokens {
            let upstream = usage.prompt_tokens;
            if upstream.abs_diff(own) > 2.max(own / 50) {
                tracing::warn!(
                    upstream,
                    counted = own,
                    "the engine's prompt token count differs from the model tokenizer's; billing the tokenizer's"
                );
            }
            usage.prompt_tokens = own;
            usage.cached_prompt_tokens = usage.cached_prompt_tokens.min(own);
        }
        let finishes: Vec<FinishReason> = self
            .finishes
            .iter()
            .map(|f| f.unwrap_or(FinishReason::Stop))
            .collect();
        Event::Done(Done {
            finish_reason: finishes[0],
            usage,
            receipt: None,
            stamp: None,
            finishes: if finishes.len() > 1 {
                finishes
            } else {
                Vec::new()
            },
        })
    }
}

fn transport_error(base: &str, e: &reqwest::Error) -> WireError {
    if e.is_timeout() {
        WireError::new(
            ErrorKind::Timeout,
            format!("engine at {base} did not answer in time"),
        )
    } else {
        WireError::new(
            ErrorKind::Upstream,
            format!("engine at {base} unreachable: {e}"),
        )
    }
}

async fn status_error(response: reqwest::Response) -> WireError {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let detail = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let kind = match status.as_u16() {
        400 | 422 => ErrorKind::InvalidRequest,
        429 => ErrorKind::Overloaded,
        408 | 504 => ErrorKind::Timeout,
        _ => ErrorKind::Upstream,
    };
    WireError::new(
        kind,
        format!("engine answered HTTP {}: {detail}", status.as_u16()),
    )
}
