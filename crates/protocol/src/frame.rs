//! The typed messages of the node-to-node protocol.
//!
//! A connection starts with one [`Hello`] each way (see `codec`), then carries
//! [`Frame`]s. Requests and their streamed [`Event`]s are tagged with an id chosen by
//! the side that sent the request, so many run at once on one connection.

use serde::{Deserialize, Serialize};

use crate::receipt::SignedReceipt;
use crate::sealed::SealedRequest;
use crate::worker_key::WorkerKey;

/// Version of this protocol. A peer speaking another version is refused at hello.
pub const PROTOCOL_VERSION: u16 = 16;

/// What a node is, announced in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Client,
    Proxy,
    Worker,
}

/// First message on every connection (after the magic bytes and version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub role: Role,
    /// Software version of the sender, for logs.
    pub software: String,
}

/// Everything sent after the hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A new request; `id` is unique among the sender's open requests.
    Request {
        id: u64,
        body: RequestBody,
    },
    /// One event of the answer to the receiver's request `id`.
    Event {
        id: u64,
        event: Event,
    },
    /// The sender of request `id` no longer wants the answer: stop working on it.
    Cancel {
        id: u64,
    },
    /// A worker's offer of models and capacity (worker -> proxy, any time).
    Announce(Announce),
    Ping(u64),
    Pong(u64),
    /// Orderly close, with a reason for the peer's log.
    Goodbye {
        reason: String,
    },
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Generate text, sealed to the candidate workers; answered by `Sealed`
    /// chunks then `Done`, or `Error`.
    Generate(SealedRequest),
    /// List the models reachable through the receiver; answered by `Models`.
    ListModels,
    /// The attested keys of live workers serving `model` that fit `prefs`,
    /// best first by `prefs.sort` (a short list); answered by `WorkerKeys`.
    WorkerKeys { model: String, prefs: RoutingPrefs },
    /// Client node -> proxy: pay from this client contract (a TON address;
    /// `None` only asks for the proxy's terms, to deploy one). Answered by
    /// `Account` once the proxy has checked the contract on chain.
    OpenAccount { contract: Option<String> },
    /// Client node -> proxy: close the account; answered by `Voucher`, the
    /// proxy's signature over the final amount for a cooperative close. The
    /// proxy serves this client no more requests on that contract.
    CloseAccount,
    /// Worker -> proxy: the signed cumulative amount this worker is owed;
    /// answered by `Voucher`.
    Voucher,
}

/// One generation request, engine-neutral: what a client node seals and what
/// the worker's engine runs. It never crosses a proxy in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    pub input: Input,
    pub params: SamplingParams,
}

impl GenerateRequest {
    /// What a worker must serve, beyond plain chat, to answer this.
    pub fn needs(&self) -> Features {
        Features {
            structured_outputs: self.params.format.is_some(),
            tools: self.params.tools.is_some(),
            logprobs: self.params.logprobs.is_some(),
            reasoning: self
                .params
                .thinking
                .as_ref()
                .is_some_and(Thinking::needs_reasoning),
            choices: self.params.choices() > 1,
        }
    }

    /// `Ok` when `served` (what `by` serves for this model) covers what this
    /// request needs, and its stop sequences are within
    /// [`crate::receipt::MAX_STOP_BYTES`]; else the refusal naming the
    /// first field it lacks.
    pub fn check_served(&self, served: &Features, by: &str) -> Result<(), WireError> {
        let max = crate::receipt::MAX_STOP_BYTES;
        if let Some(long) = self.params.stop.iter().find(|s| s.len() > max) {
            return Err(WireError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "a stop sequence of {} bytes; at most {max} are served",
                    long.len()
                ),
            ));
        }
        match self.needs().first_missing(served) {
            None => Ok(()),
            Some(field) => Err(WireError::new(
                ErrorKind::FeatureNotServed,
                format!("'{field}' is not served by {by}"),
            )),
        }
    }
}

/// The text to continue: a chat, or a raw prompt (legacy completions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    Chat(Vec<ChatMessage>),
    Prompt(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// The calls an assistant message made (earlier turns of a tool chat).
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the call whose result this is.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// On an assistant message: the reasoning that came before its content
    /// (vLLM's `reasoning_content`), for templates that show it.
    #[serde(default)]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    /// A plain message: `role` says `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// A function call made by the model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Chosen by the engine (`call_...`); a `tool` message answers it.
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (an object).
    pub arguments: String,
}

/// The functions a request lets the model call (OpenAI's `tools`,
/// `tool_choice` and `parallel_tool_calls`; `tool_choice: "none"` sends
/// none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tools {
    pub functions: Vec<Function>,
    pub choice: ToolChoice,
    /// More than one call in one answer.
    pub parallel: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON Schema as JSON text.
    pub parameters: String,
}

/// Whether and which function the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolChoice {
    /// The model decides: an answer or calls.
    Auto,
    /// At least one call, of any of the functions.
    Required,
    /// A call of this function.
    Function(String),
}

/// A piece of a tool call as it streams (OpenAI's `delta.tool_calls[i]`):
/// the first piece of call `index` carries its id and name, the rest
/// carry argument text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallChunk {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
    /// Tokens generated for this piece.
    pub tokens: u32,
}

/// OpenAI sampling parameters, already validated by the client node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Upper bound on completion tokens; `None` lets the engine choose.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Generate exactly `max_tokens`, past end-of-turn tokens (vLLM's extension
    /// of the same name; used by benchmarks). Engines that cannot, ignore it.
    #[serde(default)]
    pub ignore_eos: bool,
    /// The shape the answer must take (OpenAI's `response_format`); `None`:
    /// free text. An engine that cannot enforce it refuses the request.
    #[serde(default)]
    pub format: Option<OutputFormat>,
    /// Functions the model may call; `None`: plain chat.
    #[serde(default)]
    pub tools: Option<Tools>,
    /// Report each generated token's log probability and this many most
    /// likely alternatives (0..=20; OpenAI's `logprobs` / `top_logprobs`).
    #[serde(default)]
    pub logprobs: Option<u8>,
    /// How a reasoning model thinks; `None`: as its template does by default.
    #[serde(default)]
    pub thinking: Option<Thinking>,
    /// How many answers to the same prompt (OpenAI's `n`); `None`: one.
    #[serde(default)]
    pub n: Option<u32>,
}

/// The most answers one request may ask for (OpenAI's limit).
pub const MAX_CHOICES: u32 = 128;

impl SamplingParams {
    /// How many answers are asked for (at least one).
    pub fn choices(&self) -> u32 {
        self.n.unwrap_or(1).max(1)
    }

    /// The completion tokens all answers together may take: `max_tokens`
    /// for each of them (what the proxy sees in the clear and holds the
    /// receipt to). `None` when `max_tokens` is.
    pub fn completion_budget(&self) -> Option<u32> {
        self.max_tokens.map(|m| m.saturating_mul(self.choices()))
    }
}

/// What a request asks of a reasoning model: OpenAI's `reasoning_effort`
/// and vLLM's `chat_template_kwargs.enable_thinking`, both handed to the
/// model's chat template (or to the backend) as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thinking {
    /// `false`: answer without reasoning; `true`: reason first.
    pub enabled: Option<bool>,
    /// One of [`REASONING_EFFORTS`].
    pub effort: Option<String>,
}

/// The values `reasoning_effort` takes (OpenAI's).
pub const REASONING_EFFORTS: [&str; 6] = ["none", "minimal", "low", "medium", "high", "xhigh"];

impl Thinking {
    /// Whether serving this takes a reasoning model: asking a model that
    /// does not reason to leave reasoning out is already served.
    pub fn needs_reasoning(&self) -> bool {
        self.effort.is_some() || self.enabled == Some(true)
    }
}

/// The most alternatives a request may ask for per token.
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// One generated token's log probability under the model (before
/// sampling's temperature and penalties), and its most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's bytes (a token may end inside a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// A shape the answer is held to by constrained decoding: every answer
/// parses (and validates against the schema), unless cut short by
/// `max_tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputFormat {
    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    JsonObject,
    /// JSON valid against a JSON Schema (OpenAI's `json_schema`).
    JsonSchema {
        name: String,
        /// The schema as JSON text (the wire format cannot carry a free
        /// JSON value).
        schema: String,
        strict: bool,
    },
}

/// What a worker serves for a model beyond plain chat, announced with its
/// offer; a client node's request is routed only to workers that serve
/// everything it asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Features {
    /// `response_format` `json_object` and `json_schema`, enforced.
    pub structured_outputs: bool,
    /// `tools`: function calls, with `tool_choice` enforced.
    pub tools: bool,
    /// `logprobs` and `top_logprobs`.
    pub logprobs: bool,
    /// Reasoning kept apart from the answer (`reasoning_content`), and
    /// `reasoning_effort` / `enable_thinking` honoured.
    #[serde(default)]
    pub reasoning: bool,
    /// `n` > 1: several answers to one prompt, its cache shared.
    #[serde(default)]
    pub choices: bool,
}

impl Features {
    /// Whether these features include every one of `needs`.
    pub fn covers(&self, needs: &Features) -> bool {
        needs.first_missing(self).is_none()
    }

    /// The OpenAI request field of the first feature of `self` that
    /// `served` lacks, for error messages.
    pub fn first_missing(&self, served: &Features) -> Option<&'static str> {
        if self.structured_outputs && !served.structured_outputs {
            Some("response_format")
        } else if self.tools && !served.tools {
            Some("tools")
        } else if self.logprobs && !served.logprobs {
            Some("logprobs")
        } else if self.reasoning && !served.reasoning {
            Some("reasoning_effort")
        } else if self.choices && !served.choices {
            Some("n")
        } else {
            None
        }
    }

    /// What either serves.
    pub fn union(self, other: Features) -> Features {
        Features {
            structured_outputs: self.structured_outputs || other.structured_outputs,
            tools: self.tools || other.tools,
            logprobs: self.logprobs || other.logprobs,
            reasoning: self.reasoning || other.reasoning,
            choices: self.choices || other.choices,
        }
    }

    /// The OpenAI request fields these make servable, beyond those every
    /// model serves (OpenRouter's `supported_parameters` vocabulary).
    pub fn parameters(&self) -> Vec<&'static str> {
        let mut out = vec![
            "max_tokens",
            "temperature",
            "top_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
        ];
        if self.structured_outputs {
            out.extend(["response_format", "structured_outputs"]);
        }
        if self.tools {
            out.extend(["tools", "tool_choice", "parallel_tool_calls"]);
        }
        if self.logprobs {
            out.extend(["logprobs", "top_logprobs"]);
        }
        if self.reasoning {
            out.extend(["reasoning", "include_reasoning"]);
        }
        if self.choices {
            out.push("n");
        }
        out
    }
}

/// Where a stream carrying several answers' events stands: the answer of
/// its last event (answer 0 before any marker). Whoever writes such a
/// stream asks it for the [`Event::Choice`] marker each event needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerCursor {
    current: u32,
}

impl AnswerCursor {
    /// The marker to send before an event of answer `index`: `Choice`
    /// when the last event was another answer's, else none.
    pub fn to(&mut self, index: u32) -> Option<Event> {
        (self.current != index).then(|| {
            self.current = index;
            Event::Choice(index)
        })
    }
}

/// One event of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Newly generated text and how many tokens it is (engine to worker, and
    /// client node to its API; never on the wire of a sealed request).
    Delta { text: String, tokens: u32 },
    /// A piece of a function call the model is making (like `Delta`, never
    /// on the wire of a sealed request: sealed as a [`crate::sealed::Piece`]).
    ToolCall(ToolCallChunk),
    /// Newly generated reasoning (a reasoning model's thinking, before its
    /// answer; OpenAI-compatible servers' `reasoning_content`), like `Delta`.
    Reasoning { text: String, tokens: u32 },
    /// The worker's signed running total of an answer still streaming (in
    /// clear, like `Done`'s receipt): what the proxy bills if the answer
    /// ends without `Done` (the client hung up, the worker failed or went
    /// away). It follows the chunks it counts.
    Progress(SignedReceipt),
    /// Usage known so far (engine to worker, never on the wire): the
    /// prompt's tokens once read, for the worker's running totals.
    Usage(Usage),
    /// The events that follow (until the next `Choice`) belong to answer
    /// `index` of a request for several (`n` > 1); before the first, to
    /// answer 0. Sealed on the wire like `Delta`.
    Choice(u32),
    /// The log probabilities of tokens generated since the last (like
    /// `Delta`, sealed on the wire); their text follows in `Delta`s.
    Logprobs(Vec<TokenLogprob>),
    /// Newly generated text sealed to the client node (a padded
    /// [`crate::sealed::Piece`]: its token count is inside).
    Sealed { ciphertext: Vec<u8> },
    /// The request failed: its kind in clear, its message sealed to the
    /// client node (an engine's error text may echo the prompt). Terminal.
    SealedError {
        kind: ErrorKind,
        ciphertext: Vec<u8>,
    },
    /// Generation ended normally. Terminal.
    Done(Done),
    /// Answer to `ListModels`. Terminal.
    Models(Vec<ModelInfo>),
    /// Answer to `WorkerKeys`. Terminal.
    WorkerKeys(Vec<ListedWorker>),
    /// Answer to `OpenAccount`. Terminal.
    Account(AccountTerms),
    /// Answer to `Voucher` and `CloseAccount`. Terminal.
    Voucher(Voucher),
    /// The request failed. Terminal.
    Error(WireError),
}

impl Event {
    /// Whether this event ends its stream.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Event::Delta { .. }
                | Event::ToolCall(_)
                | Event::Reasoning { .. }
                | Event::Choice(_)
                | Event::Progress(_)
                | Event::Usage(_)
                | Event::Logprobs(_)
                | Event::Sealed { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The worker's signed statement of `usage` (added by the worker).
    pub receipt: Option<SignedReceipt>,
    /// The receipt and its signature authenticated under the answer's key
    /// ([`crate::sealed::ReplySealer::stamp`]): how the client node knows
    /// the receipt is the enclave's without checking the signature.
    pub stamp: Option<[u8; 16]>,
    /// For several answers (`n` > 1): why each ended, in order (`usage`
    /// and the receipt count them all; `finish_reason` is answer 0's).
    /// Empty for one answer.
    #[serde(default)]
    pub finishes: Vec<FinishReason>,
}

/// Why generation stopped, exactly as OpenAI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// The model ended its answer or hit a stop sequence.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
    /// The model called functions (the answer's `tool_calls`).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts of one request, counted by the worker with the model's own
/// tokenizer. `cached_prompt_tokens` and `reasoning_tokens` are parts of
/// `prompt_tokens` and `completion_tokens`, priced differently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens whose attention state was reused from an earlier request.
    pub cached_prompt_tokens: u64,
    /// Completion tokens inside the model's reasoning section (e.g. `<think>`).
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A proxy's payment terms and, once registered, a client's account with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTerms {
    /// The proxy's contract on TON (receives client payments, pays workers).
    pub proxy_contract: String,
    /// The Ed25519 key the proxy signs charges and vouchers with (in the
    /// client and worker contracts' terms).
    pub proxy_key: [u8; 32],
    /// The network's root contract (prices).
    pub root: String,
    /// The client contract now registered for this connection's key.
    pub contract: Option<String>,
    /// What this client owes in all and what has been charged on chain,
    /// nano-TON.
    pub owed_nano: u128,
    pub charged_nano: u128,
}

/// A cumulative amount for a contract, signed by the proxy's key: what a
/// worker may claim, or the final charge of a closing client contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voucher {
    /// The contract it is for (TON address).
    pub contract: String,
    pub amount_nano: u128,
    /// Ed25519, over the payload the contract checks.
    pub signature: Vec<u8>,
}

/// A model as seen from a client node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    /// Live workers serving it.
    pub workers: u32,
    /// The lowest price coefficient among them (1000 = base price).
    pub min_price_coefficient: Option<u32>,
    /// The longest context any of them offers, when they say.
    #[serde(default)]
    pub context_length: Option<u32>,
    /// What at least one of them serves beyond plain chat.
    #[serde(default)]
    pub features: Features,
}

/// How a client node wants its request routed (OpenRouter-style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RoutingPrefs {
    /// Never a worker whose price coefficient is above this (1000 = base).
    pub max_coefficient: Option<u32>,
    pub sort: Sort,
    /// Only workers serving all of these.
    #[serde(default)]
    pub needs: Features,
}

/// What to prefer among eligible workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Sort {
    /// The cheapest first, then the least loaded.
    #[default]
    Price,
    /// The least loaded first (the most room to go fast), then the cheapest.
    Throughput,
    /// The least loaded first, then the cheapest (latency is measured as
    /// load until per-worker timings exist).
    Latency,
}

/// A worker offered to a client node: its attested keys, its price, and how
/// loaded it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedWorker {
    pub key: WorkerKey,
    pub price_coefficient: u32,
    /// Requests in flight per 1000 of its capacity.
    pub load_permille: u32,
}

/// The price coefficient of the network's base price.
pub const BASE_PRICE_COEFFICIENT: u32 = 1000;

/// The highest price coefficient a worker may ask (1000× the base price):
/// a proxy refuses an announcement above it, a worker a setting above it.
pub const MAX_PRICE_COEFFICIENT: u32 = 1_000_000;

/// A worker's offer, replacing any earlier one from the same connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    pub models: Vec<ModelOffer>,
    /// The worker's attested keys, which client nodes seal requests to.
    pub key: Option<WorkerKey>,
    /// The GPU owner's TON wallet: the proxy owes this worker's earnings to
    /// the worker contract of this owner.
    #[serde(default)]
    pub payout: Option<String>,
    /// The highest voucher this worker holds from this proxy (signed by the
    /// proxy's key, for the worker contract of `payout`): a proxy whose
    /// books owe that contract less was restored from old books and must
    /// not serve (protocol 11).
    #[serde(default)]
    pub vouched: Option<Voucher>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOffer {
    pub name: String,
    /// Requests this worker runs at once for this model.
    pub max_concurrent: u32,
    /// SHA-256 (hex) of the weights the worker actually loaded, when it loads
    /// them itself; the network's allow-list of models refers to this hash.
    pub weights_sha256: Option<String>,
    /// Its price (1000 = the network's base price); clients are charged at it.
    pub price_coefficient: u32,
    /// Tokens of prompt and completion one request may hold, when known.
    #[serde(default)]
    pub context_length: Option<u32>,
    /// How the weights are quantised (e.g. `Q4_K_M`, `BF16`), when known.
    #[serde(default)]
    pub quantization: Option<String>,
    /// What it serves beyond plain chat.
    #[serde(default)]
    pub features: Features,
}

/// A failure, carried to the client node which maps `kind` to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request is invalid for this model or engine (HTTP 400).
    InvalidRequest,
    /// No such model on the network (HTTP 404).
    ModelNotFound,
    /// The model is known but no worker serving it is connected (HTTP 503).
    NoWorker,
    /// Every worker for the model is at capacity (HTTP 429).
    Overloaded,
    /// The client's contract cannot pay for the request, or none is
    /// registered with the proxy (HTTP 402).
    PaymentRequired,
    /// A hop did not answer in time (HTTP 504).
    Timeout,
    /// The engine or a connection failed (HTTP 502).
    Upstream,
    /// None of the workers a request was sealed to is available any more: the
    /// client node fetches fresh keys and seals again (HTTP 503 if it persists).
    KeysChanged,
    /// A bug or unexpected state (HTTP 500).
    Internal,
    /// Workers serve the model, but none serves a feature the request asks
    /// for (HTTP 400, naming the request's field).
    FeatureNotServed,
    /// The TON chain (its HTTP API) cannot be read, so what a request
    /// costs cannot be checked against the contract (HTTP 503).
    ChainUnavailable,
}
