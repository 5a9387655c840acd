//! Request bodies checked field by field. Each failure names the field and the
//! bad value, in OpenAI's wording where OpenAI has one.

use cocoon_protocol::openai::{Prompt, RequestMessage, RequestParams};
use cocoon_protocol::{
    ChatMessage, GenerateRequest, Input, OutputFormat, SamplingParams, Sort, MAX_CHOICES,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use fields::Endpoint;

mod fields;
mod nested;
mod reasoning;
mod tools;

/// A request ready for the backend, with how to answer it.
#[derive(Debug, Clone)]
pub struct Validated {
    pub request: GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
    /// The request's own routing preferences (`cocoon` extension), over the
    /// node's defaults.
    pub max_coefficient: Option<u32>,
    pub sort: Option<Sort>,
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
const MAX_STOP: usize = 4;

pub fn chat(body: &[u8]) -> Result<Validated, ApiError> {
    let (raw, params): (ChatHead, _) = parse(body, Endpoint::Chat)?;
    let model = model(raw.model)?;
    let messages = raw.messages.ok_or_else(|| missing("messages"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "Invalid 'messages': empty array. Expected an array with at least one message.",
            Some("messages"),
            "empty_array",
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(ApiError::invalid(
                format!(
                    "Invalid value for 'messages[{i}].role': {:?}. Supported values are: {}.",
                    m.role,
                    ROLES.join(", ")
                ),
                Some(&format!("messages[{i}].role")),
                "invalid_value",
            ));
        }
        let tool_calls = tools::message_calls(m.tool_calls.as_ref(), i)?;
        if !tool_calls.is_empty() && m.role != "assistant" {
            return Err(ApiError::invalid(
                format!(
                    "Invalid 'messages[{i}].tool_calls': only an assistant message makes calls."
                ),
                Some(&format!("messages[{i}].tool_calls")),
                "invalid_value",
            ));
        }
        let tool_call_id = tools::call_id(m.tool_call_id.as_ref(), i, &m.role)?;
        let content = if tool_calls.is_empty() {
            content(&m.content, i, &m.role)?
        } else {
            match &m.content {
                Value::Null => String::new(),
                other => content(other, i, &m.role)?,
            }
        };
        let reasoning_content =
            reasoning::message_reasoning(m.reasoning_content.as_ref(), i, &m.role)?;
        out.push(ChatMessage {
            role: m.role,
            content,
            tool_calls,
            tool_call_id,
            reasoning_content,
        });
    }
    let offered = tools::tools(
        params.tools.as_ref(),
        params.tool_choice.as_ref(),
        params.parallel_tool_calls,
    )?;
    let mut validated = finish(model, Input::Chat(out), params)?;
    validated.request.params.tools = offered;
    Ok(validated)
}

pub fn completion(body: &[u8]) -> Result<Validated, ApiError> {
    let (raw, params): (CompletionHead, _) = parse(body, Endpoint::Completion)?;
    let model = model(raw.model)?;
    let prompt = match raw.prompt.ok_or_else(|| missing("prompt"))? {
        Prompt::One(p) => p,
        Prompt::Many(mut many) if many.len() == 1 => many.remove(0),
        Prompt::Many(many) => {
            return Err(ApiError::invalid(
                format!(
                    "'prompt' holds {} prompts; send one prompt per request.",
                    many.len()
                ),
                Some("prompt"),
                "unsupported_value",
            ))
        }
    };
    finish(model, Input::Prompt(prompt), params)
}

/// The chat endpoint's own fields; the sampling fields are read separately.
#[derive(Deserialize)]
struct ChatHead {
    model: Option<String>,
    messages: Option<Vec<RequestMessage>>,
}

/// The completion endpoint's own fields.
#[derive(Deserialize)]
struct CompletionHead {
    model: Option<String>,
    prompt: Option<Prompt>,
}

/// Parse the body: UTF-8, then JSON, then an object whose every field is
/// served or harmless (see [`fields`]); then the sampling fields and the
/// endpoint's own fields from that one value, each with its path in errors.
/// (Two plain structs rather than one with `#[serde(flatten)]`, which loses paths.)
fn parse<T: DeserializeOwned>(
    body: &[u8],
    endpoint: Endpoint,
) -> Result<(T, RequestParams), ApiError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ApiError::invalid(
            format!(
                "The request body is not valid UTF-8 (invalid byte at offset {}).",
                e.valid_up_to()
            ),
            None,
            "invalid_encoding",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "The request body is empty; expected a JSON object.",
            None,
            "invalid_json",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}."),
            None,
            "invalid_json",
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::invalid(
            "The request body must be a JSON object.",
            None,
            "invalid_type",
        ));
    };
    fields::check(object, endpoint)?;
    let params = typed(&value)?;
    Ok((typed(&value)?, params))
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::invalid(
            format!("Invalid type for '{path}': {inner}."),
            Some(&path),
            "invalid_type",
        )
    })
}

fn missing(field: &str) -> ApiError {
    ApiError::invalid(
        format!("Missing required parameter: '{field}'."),
        Some(field),
        "missing_required_parameter",
    )
}

fn model(model: Option<String>) -> Result<String, ApiError> {
    match model {
        Some(m) if !m.trim().is_empty() => Ok(m),
        Some(_) => Err(ApiError::invalid(
            "Invalid 'model': empty string.",
            Some("model"),
            "invalid_value",
        )),
        None => Err(missing("model")),
    }
}

/// A message's content: a string, an array of text parts, or null (assistant only).
fn content(value: &Value, i: usize, role: &str) -> Result<String, ApiError> {
    let field = format!("messages[{i}].content");
    let bad_type = |got: &str| {
        ApiError::invalid(
            format!("Invalid type for '{field}': expected a string or an array of text parts, got {got}."),
            Some(&field),
            "invalid_type",
        )
    };
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null if role == "assistant" => Ok(String::new()),
        Value::Null => Err(missing(&field)),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some("text"), None) => return Err(missing(&format!("{field}[{j}].text"))),
                    (Some(other), _) => {
                        return Err(ApiError::invalid(
                            format!("Content part type '{other}' in '{field}[{j}]' is not supported; only 'text' parts are."),
                            Some(&format!("{field}[{j}].type")),
                            "unsupported_value",
                        ))
                    }
                    (None, _) => return Err(missing(&format!("{field}[{j}].type"))),
                }
            }
            Ok(texts.join("\n"))
        }
        Value::Bool(_) => Err(bad_type("a boolean")),
        Value::Number(_) => Err(bad_type("a number")),
        Value::Object(_) => Err(bad_type("an object")),
    }
}

fn int_in(field: &str, value: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    if value < min {
        return Err(ApiError::invalid(
            format!("Invalid '{field}': integer below minimum value. Expected a value >= {min}, but got {value} instead."),
            Some(field),
            "integer_below_min_value",
        ));
    }
    if value > max {
        return Err(ApiError::invalid(
            format!("Invalid '{field}': integer above maximum value. Expected a value <= {max}, but got {value} instead."),
            Some(field),
            "integer_above_max_value",
        ));
    }
    Ok(value)
}

fn float_in(field: &str, value: Option<f64>, min: f64, max: f64) -> Result<Option<f32>, ApiError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(ApiError::invalid(
            format!(
                "Invalid '{field}': {v} is out of range. Expected a value between {min} and {max}."
            ),
            Some(field),
            "decimal_out_of_range",
        )),
        other => Ok(other.map(|v| v as f32)),
    }
}

fn finish(model: String, input: Input, p: RequestParams) -> Result<Validated, ApiError> {
    let max_tokens = match (p.max_completion_tokens, p.max_tokens) {
        (Some(v), _) => Some(int_in("max_completion_tokens", v, 1, u32::MAX as i64)? as u32),
        (None, Some(v)) => Some(int_in("max_tokens", v, 1, u32::MAX as i64)? as u32),
        (None, None) => None,
    };
    let n = match p.n {
        None => None,
        Some(n) => {
            let n = int_in("n", n, 1, i64::from(MAX_CHOICES))? as u32;
            if n > 1 && !matches!(input, Input::Chat(_)) {
                return Err(ApiError::invalid(
                    format!("Invalid 'n': {n}. Several answers are served on /v1/chat/completions only; send n = 1 here."),
                    Some("n"),
                    "unsupported_value",
                ));
            }
            Some(n)
        }
    };
    let logprobs = logprobs(&p, matches!(input, Input::Chat(_)))?;
    let stream = p.stream.unwrap_or(false);
    if p.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
            "invalid_value",
        ));
    }
    let stop = p.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid(
            format!(
                "Invalid 'stop': {} sequences given, at most {MAX_STOP} are allowed.",
                stop.len()
            ),
            Some("stop"),
            "array_above_max_length",
        ));
    }
    let max_stop = cocoon_protocol::receipt::MAX_STOP_BYTES;
    if let Some(long) = stop.iter().find(|s| s.len() > max_stop) {
        return Err(ApiError::invalid(
            format!(
                "Invalid 'stop': a sequence of {} bytes; at most {max_stop} bytes each are allowed.",
                long.len()
            ),
            Some("stop"),
            "string_above_max_length",
        ));
    }
    let params = SamplingParams {
        max_tokens,
        temperature: float_in("temperature", p.temperature, 0.0, 2.0)?,
        top_p: float_in("top_p", p.top_p, 0.0, 1.0)?,
        stop,
        seed: p.seed.map(|s| s as u64),
        presence_penalty: float_in("presence_penalty", p.presence_penalty, -2.0, 2.0)?,
        frequency_penalty: float_in("frequency_penalty", p.frequency_penalty, -2.0, 2.0)?,
        ignore_eos: false,
        format: response_format(p.response_format.as_ref())?,
        tools: None,
        logprobs,
        n,
        thinking: reasoning::thinking(
            p.reasoning_effort.as_ref(),
            p.chat_template_kwargs.as_ref(),
        )?,
    };
    let cocoon = p.cocoon.unwrap_or_default();
    let max_coefficient = cocoon
        .max_coefficient
        .map(|v| int_in("cocoon.max_coefficient", v, 1, 1_000_000).map(|v| v as u32))
        .transpose()?;
    let sort = cocoon.sort.as_deref().map(parse_sort).transpose()?;
    Ok(Validated {
        request: GenerateRequest {
            model,
            input,
            params,
        },
        stream,
        include_usage: p.stream_options.map(|o| o.include_usage).unwrap_or(false),
        max_coefficient,
        sort,
    })
}

/// `response_format`: `text` (free text, the default), `json_object`, or
/// `json_schema` with a name and a schema (an object). The schema itself
/// is checked by the worker's grammar engine, which names what it cannot
/// enforce.
fn response_format(value: Option<&Value>) -> Result<Option<OutputFormat>, ApiError> {
    let value = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => nested::object(v, "response_format")?,
    };
    let kind = nested::string(value, "response_format", "type")?;
    let own: &[&str] = match kind {
        "json_schema" => &["type", "json_schema"],
        "text" | "json_object" => &["type"],
        _ => {
            return Err(ApiError::invalid(
                format!("Invalid value for 'response_format.type': {kind:?}. Supported values are: 'text', 'json_object' and 'json_schema'."),
                Some("response_format.type"),
                "invalid_value",
            ))
        }
    };
    nested::only(value, "response_format", own)?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat::JsonObject)),
        _ => {
            let field = "response_format.json_schema";
            let Some(Value::Object(spec)) = value.get("json_schema") else {
                return Err(missing(field));
            };
            nested::only(spec, field, &["name", "schema", "strict", "description"])?;
            let name = match spec.get("name") {
                Some(Value::String(n)) if is_schema_name(n) => n.clone(),
                Some(_) => {
                    return Err(ApiError::invalid(
                        format!(
                            "Invalid '{field}.name': expected 1 to 64 letters, digits, '_' or '-'."
                        ),
                        Some(&format!("{field}.name")),
                        "invalid_value",
                    ))
                }
                None => return Err(missing(&format!("{field}.name"))),
            };
            let schema = match spec.get("schema") {
                Some(s @ Value::Object(_)) => s.to_string(),
                Some(_) => {
                    return Err(ApiError::invalid(
                        format!(
                            "Invalid type for '{field}.schema': expected a JSON Schema object."
                        ),
                        Some(&format!("{field}.schema")),
                        "invalid_type",
                    ))
                }
                None => return Err(missing(&format!("{field}.schema"))),
            };
            Ok(Some(OutputFormat::JsonSchema {
                name,
                schema,
                strict: nested::flag(spec, field, "strict")?.unwrap_or(false),
            }))
        }
    }
}

/// `logprobs: true` with `top_logprobs` alternatives (0 to 20) on chats;
/// the legacy completions' integer `logprobs` (another answer shape) is
/// refused.
fn logprobs(p: &RequestParams, chat: bool) -> Result<Option<u8>, ApiError> {
    let wanted = match &p.logprobs {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) if chat => true,
        Some(Value::Number(n)) if !chat && n.as_i64() == Some(0) => false,
        Some(_) if !chat => {
            return Err(ApiError::invalid(
                "'logprobs' is served on /v1/chat/completions only; leave it out here.",
                Some("logprobs"),
                "unsupported_parameter",
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid type for 'logprobs': expected a boolean.",
                Some("logprobs"),
                "invalid_type",
            ))
        }
    };
    let top = match p.top_logprobs {
        None => 0,
        Some(n) => int_in(
            "top_logprobs",
            n,
            0,
            i64::from(cocoon_protocol::MAX_TOP_LOGPROBS),
        )? as u8,
    };
    if top > 0 && !wanted {
        return Err(ApiError::invalid(
            "'top_logprobs' requires 'logprobs' to be true.",
            Some("top_logprobs"),
            "invalid_value",
        ));
    }
    Ok(wanted.then_some(top))
}

/// OpenAI's rule for a schema's name: 1 to 64 of `a-zA-Z0-9_-`.
fn is_schema_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `price`, `throughput` or `latency`.
pub fn parse_sort(text: &str) -> Result<Sort, ApiError> {
    match text {
        "price" => Ok(Sort::Price),
        "throughput" => Ok(Sort::Throughput),
        "latency" => Ok(Sort::Latency),
        other => Err(ApiError::invalid(
            format!("Invalid 'cocoon.sort': {other:?}. Supported values are: price, throughput, latency."),
            Some("cocoon.sort"),
            "invalid_value",
        )),
    }
}

#[cfg(test)]
mod tests;
