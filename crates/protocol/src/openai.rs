//! OpenAI-compatible JSON: the requests apps send to a client node (and that the
//! `openai-http` engine sends upstream), and the responses, stream chunks and error
//! bodies that come back. Request fields that need range checks are kept loosely
//! typed here (`i64`, `f64`) so the client node can name the field and the bad
//! value in its error instead of a generic type error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<RequestMessage>>,
    #[serde(flatten)]
    pub params: RequestParams,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    #[serde(flatten)]
    pub params: RequestParams,
}

/// Sampling and streaming fields shared by both endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// `true` (chat) or a count (legacy completions); refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`, checked by
    /// the client node into [`crate::OutputFormat`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
    /// Functions the model may call, `tool_choice` and
    /// `parallel_tool_calls`; checked by the client node into
    /// [`crate::Tools`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `none` .. `xhigh`; checked by the client node into [`crate::Thinking`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<serde_json::Value>,
    /// vLLM's extra arguments to the chat template; `enable_thinking` served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_kwargs: Option<serde_json::Value>,
    /// Cocoon extension: routing preferences for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cocoon: Option<CocoonOptions>,
}

/// `"cocoon": {"max_coefficient": 1200, "sort": "price"}` in a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CocoonOptions {
    /// The most expensive worker price coefficient accepted (1000 = base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_coefficient: Option<i64>,
    /// `price`, `throughput` or `latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list of strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `prompt`: a string, or a list holding strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// One chat message as sent by an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestMessage {
    pub role: String,
    /// A string, an array of content parts, or null; checked by the client node.
    #[serde(default)]
    pub content: Value,
    /// An assistant message's calls; checked by the client node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    /// A `tool` message's call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<Value>,
    /// An assistant message's reasoning (vLLM's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Value>,
}

/// A chat message in a response: text, or (with `content: null`) calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: String,
    pub content: Option<String>,
    /// What a reasoning model thought before its answer (vLLM's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ApiToolCall>,
}

/// A function call in OpenAI's shape (answers, and assistant messages of
/// requests to an upstream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: ApiFunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiFunctionCall {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

impl From<&crate::ToolCall> for ApiToolCall {
    fn from(c: &crate::ToolCall) -> Self {
        Self {
            id: c.id.clone(),
            kind: "function".into(),
            function: ApiFunctionCall {
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            },
        }
    }
}

/// A piece of a streamed call (`delta.tool_calls[i]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaToolCall {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub function: DeltaFunction,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaFunction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl From<&crate::ToolCallChunk> for DeltaToolCall {
    fn from(c: &crate::ToolCallChunk) -> Self {
        Self {
            index: c.index,
            id: c.id.clone(),
            kind: c.id.as_ref().map(|_| "function".to_string()),
            function: DeltaFunction {
                name: c.name.clone(),
                arguments: Some(c.arguments.clone()),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl From<crate::Usage> for Usage {
    fn from(u: crate::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens(),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: u.cached_prompt_tokens,
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: u.reasoning_tokens,
            }),
        }
    }
}

/// Cocoon's extension field on answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoonExtension {
    pub receipt: ReceiptJson,
    /// What the answer costs, nano-TON (decimal string), at the network's
    /// prices and the worker's coefficient; absent when the node does not pay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nano: Option<String>,
}

/// A usage receipt as JSON: what the worker signed (hex bytes), and whether the
/// client node verified the signature against the worker's attested key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptJson {
    pub request_id: String,
    /// The worker's identity (`sha256:` of its key).
    pub worker: String,
    pub model: String,
    #[serde(default)]
    pub model_sha256: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub reasoning_tokens: u64,
    pub finish_reason: String,
    /// The price the worker charged at (1000 = the network's base price).
    #[serde(default)]
    pub price_coefficient: u32,
    pub issued_at_ms: u64,
    /// Ed25519 signature (hex) over the receipt in its wire form.
    pub signature: String,
    pub verified: bool,
}

impl ReceiptJson {
    /// `receipt` as JSON; `verified` says whether its signature was checked.
    pub fn new(receipt: &crate::SignedReceipt, verified: bool) -> Self {
        let r = &receipt.receipt;
        Self {
            request_id: crate::to_hex(&r.request_id),
            worker: r.worker.to_string(),
            model: r.model.clone(),
            model_sha256: r.model_sha256.clone(),
            prompt_tokens: r.usage.prompt_tokens,
            completion_tokens: r.usage.completion_tokens,
            cached_prompt_tokens: r.usage.cached_prompt_tokens,
            reasoning_tokens: r.usage.reasoning_tokens,
            finish_reason: r.finish_reason.as_str().to_string(),
            price_coefficient: r.price_coefficient,
            issued_at_ms: r.issued_at_ms,
            signature: crate::to_hex(&receipt.signature),
            verified,
        }
    }
}

/// Non-streaming chat answer (`object: "chat.completion"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The worker's signed usage receipt, verified by the client node (on the
    /// whole answer, and on the last streamed chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cocoon: Option<CocoonExtension>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// A choice's `logprobs`: one entry per generated token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChoiceLogprobs {
    pub content: Vec<ApiTokenLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    #[serde(default)]
    pub top_logprobs: Vec<ApiTopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

impl From<&crate::TokenLogprob> for ApiTokenLogprob {
    fn from(t: &crate::TokenLogprob) -> Self {
        Self {
            token: String::from_utf8_lossy(&t.bytes).into_owned(),
            logprob: t.logprob,
            bytes: t.bytes.clone(),
            top_logprobs: t
                .top
                .iter()
                .map(|a| ApiTopLogprob {
                    token: String::from_utf8_lossy(&a.bytes).into_owned(),
                    logprob: a.logprob,
                    bytes: a.bytes.clone(),
                })
                .collect(),
        }
    }
}

impl From<&ApiTokenLogprob> for crate::TokenLogprob {
    fn from(t: &ApiTokenLogprob) -> Self {
        Self {
            bytes: t.bytes.clone(),
            logprob: t.logprob,
            top: t
                .top_logprobs
                .iter()
                .map(|a| crate::TopLogprob {
                    bytes: a.bytes.clone(),
                    logprob: a.logprob,
                })
                .collect(),
        }
    }
}

/// One streamed chat chunk (`object: "chat.completion.chunk"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The worker's signed usage receipt, verified by the client node (on the
    /// whole answer, and on the last streamed chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cocoon: Option<CocoonExtension>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<DeltaToolCall>>,
}

/// Legacy completion answer or chunk (`object: "text_completion"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The worker's signed usage receipt, verified by the client node (on the
    /// whole answer, and on the last streamed chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cocoon: Option<CocoonExtension>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<String>,
}

/// `GET /v1/models` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// Cocoon extension: live workers serving this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// Cocoon extension: the cheapest live worker's price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<ModelPricing>,
    /// Cocoon extension (as OpenRouter): the longest context (prompt and
    /// completion tokens) a live worker offers, when workers say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// Cocoon extension (as OpenRouter): the request fields a live worker
    /// serves for this model (`tools`, `response_format`, `logprobs`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_parameters: Vec<String>,
}

/// What the cheapest live worker of a model charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPricing {
    /// 1000 = the network's base price.
    pub price_coefficient: u32,
    /// nano-TON per million prompt / completion tokens (strings: exact integers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_per_million_nano: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_per_million_nano: Option<String>,
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl crate::OutputFormat {
    /// OpenAI's `response_format` value for this format (what an
    /// OpenAI-compatible upstream is sent).
    pub fn to_openai(&self) -> Value {
        match self {
            crate::OutputFormat::JsonObject => serde_json::json!({"type": "json_object"}),
            crate::OutputFormat::JsonSchema {
                name,
                schema,
                strict,
            } => {
                let schema: Value = serde_json::from_str(schema).unwrap_or(Value::Null);
                serde_json::json!({
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": strict},
                })
            }
        }
    }
}

impl crate::Function {
    /// The parameters' JSON Schema as a value (an object schema without
    /// properties when the text is not a JSON object).
    pub fn parameters_value(&self) -> Value {
        match serde_json::from_str::<Value>(&self.parameters) {
            Ok(v @ Value::Object(_)) => v,
            _ => serde_json::json!({"type": "object", "properties": {}}),
        }
    }

    /// This function as an entry of OpenAI's `tools` list (what upstreams
    /// and Hugging Face chat templates read).
    pub fn to_openai(&self) -> Value {
        let mut function =
            serde_json::json!({"name": self.name, "parameters": self.parameters_value()});
        if let Some(d) = &self.description {
            function["description"] = Value::from(d.as_str());
        }
        serde_json::json!({"type": "function", "function": function})
    }
}

impl crate::Tools {
    /// OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` for these
    /// (what an OpenAI-compatible upstream is sent).
    pub fn to_openai(&self) -> (Value, Value, bool) {
        let tools = self
            .functions
            .iter()
            .map(crate::Function::to_openai)
            .collect();
        let choice = match &self.choice {
            crate::ToolChoice::Auto => Value::from("auto"),
            crate::ToolChoice::Required => Value::from("required"),
            crate::ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        };
        (Value::Array(tools), choice, self.parallel)
    }
}
